# SPDX-License-Identifier: GPL-2.0-or-later
"""A scripted IMAP4rev1 server for tests of what imapfs does with bad input.

It is not a mail server: it speaks just enough IMAP4rev1 for imapfs to
mount and read (CAPABILITY, LOGIN, AUTHENTICATE PLAIN, LIST, STATUS,
EXAMINE/SELECT, UID FETCH of UID RFC822.SIZE INTERNALDATE FLAGS ENVELOPE
BODYSTRUCTURE and BODY.PEEK[section]<partial>, UID SEARCH, NOOP, IDLE,
LOGOUT) over plain TCP on 127.0.0.1, and every answer can be replaced by
a script, so that one request gets a hostile reply while the rest of the
account is served correctly.

    srv = FakeImap().start()
    srv.mailbox('INBOX', [Msg(text_message('hello'))])
    srv.mailbox('Evil', [Msg(text_message('x'))])
    srv.on(r'UID FETCH .*BODY\\.PEEK', raw(b'* 1 FETCH (UID 1 ...'),
           mailbox='Evil')
    ... mount imap://alice@127.0.0.1:PORT with allow_plaintext ...
    srv.stop()

A script (`on`) matches a command line, tag stripped, by regular
expression, optionally only while a given mailbox is selected; its action
gets the connection and the tag and may send anything, serve the command
normally (Conn.serve), or close the connection (raise Hangup). Actions
for the common hostile replies: raw(), stream(), before(), reply().

Threads: socketserver's accept loop and one thread per connection;
everything is owned by the FakeImap object and ended by stop(), nothing
by name.
"""

import base64
import re
import socket
import socketserver
import threading

CRLF = b'\r\n'
CAPABILITIES = 'IMAP4rev1 AUTH=PLAIN SASL-IR IDLE'


class Hangup(Exception):
    """Raised by an action (or the peer going away): close the
    connection."""


# ---------------------------------------------------------------------------
# Messages

def text_message(body, subject='test', extra_headers=()):
    """A small RFC 5322 text message (bytes) with CRLF line ends."""
    if isinstance(body, str):
        body = body.encode()
    head = ['From: Alice <alice@example.org>', 'To: bob@example.org',
            'Subject: ' + subject, 'Date: Fri, 01 Mar 2024 12:00:00 +0000',
            'Message-ID: <%s@fake.test>' % re.sub(r'\W', '', subject)]
    head += list(extra_headers)
    return CRLF.join(h.encode() for h in head) + CRLF + CRLF + body


def quote(s):
    """An IMAP quoted string (bytes) for text without CR, LF or NUL."""
    if isinstance(s, str):
        s = s.encode()
    return b'"' + s.replace(b'\\', b'\\\\').replace(b'"', b'\\"') + b'"'


def nstring(s):
    return b'NIL' if s is None else quote(s)


class Msg:
    """One message: its bytes, and what FETCH says of it.

    size: the RFC822.SIZE to claim (default: the real size).
    bodystructure: the BODYSTRUCTURE to send, bytes (default: text/plain
    from the bytes). sections: {section: bytes} for BODY[section]
    (default: '1' and 'TEXT' are the body, '' the whole message).
    """

    def __init__(self, data, flags='', size=None, bodystructure=None,
                 sections=None, internaldate='01-Mar-2024 12:00:00 +0000'):
        self.data = data
        self.flags = flags
        self.size = len(data) if size is None else size
        self.internaldate = internaldate
        body = data.split(CRLF + CRLF, 1)[-1]
        self.bodystructure = bodystructure or (
            b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" %d %d '
            b'NIL NIL NIL NIL)' % (len(body), body.count(b'\n')))
        self.sections = {'1': body, 'TEXT': body}
        self.sections.update(sections or {})
        self.sections[''] = data
        self.uid = None

    def envelope(self):
        def header(name):
            m = re.search(rb'(?im)^' + name + rb': ([^\r\n]*)', self.data)
            return m.group(1) if m else None
        frm = b'(("Alice" NIL "alice" "example.org"))'
        return b'(%s %s %s %s %s ((NIL NIL "bob" "example.org")) ' \
               b'NIL NIL NIL %s)' % (
                   nstring(header(b'Date')), nstring(header(b'Subject')),
                   frm, frm, frm, nstring(header(b'Message-ID')))


def mixed(text, attachments, boundary=b'fake-boundary'):
    """A multipart/mixed Msg: a text/plain part, then one part per
    (disposition parameters, body) in `attachments`. The parameters go
    into BODYSTRUCTURE as given (bytes such as b'("FILENAME" "a.pdf")',
    so they may be hostile); the message's own headers name no file."""
    parts = [(b'Content-Type: text/plain', text)]
    structure = [b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" '
                 b'%d %d NIL NIL NIL NIL)' % (len(text), text.count(b'\n'))]
    for params, body in attachments:
        parts.append((b'Content-Type: application/octet-stream\r\n'
                      b'Content-Disposition: attachment', body))
        structure.append(b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL '
                         b'"7BIT" %d NIL ("ATTACHMENT" %s) NIL NIL)'
                         % (len(body), params))
    data = text_message(b''.join(
        b'--%s\r\n%s\r\n\r\n%s\r\n' % (boundary, head, body)
        for head, body in parts) + b'--%s--\r\n' % boundary,
        extra_headers=['MIME-Version: 1.0',
                       'Content-Type: multipart/mixed; boundary="%s"'
                       % boundary.decode()])
    bs = b'(%s "MIXED" ("BOUNDARY" %s) NIL NIL NIL)' % (
        b''.join(structure), quote(boundary))
    return Msg(data, bodystructure=bs, sections={
        str(i + 1): body for i, (_, body) in enumerate(parts)})


class Mailbox:
    """name: bytes as they appear in LIST (sent quoted, or as a literal
    when literal=True); flags: LIST attributes; delim: one character,
    or None for NIL."""

    def __init__(self, name, messages=(), flags=b'\\HasNoChildren',
                 delim='.', literal=False, uidvalidity=1):
        self.name = name.encode() if isinstance(name, str) else name
        self.flags = flags
        self.delim = delim
        self.literal = literal
        self.uidvalidity = uidvalidity
        self.messages = []
        for i, m in enumerate(messages):
            if m.uid is None:
                m.uid = i + 1
            self.messages.append(m)

    def list_line(self):
        d = b'NIL' if self.delim is None else quote(self.delim)
        if self.literal:
            name = b'{%d}\r\n' % len(self.name) + self.name
        else:
            name = quote(self.name)
        return b'* LIST (%s) %s %s\r\n' % (self.flags, d, name)

    def uidnext(self):
        return max((m.uid for m in self.messages), default=0) + 1


# ---------------------------------------------------------------------------
# Actions for scripts: each is called as action(conn, tag, line).

def raw(*chunks, close=True):
    """Send the chunks as they are; then close the connection (the
    command gets no tagged reply) unless close=False."""
    def action(conn, tag, line):
        for c in chunks:
            conn.send(c)
        if close:
            raise Hangup()
    return action


class stream:
    """Send `head`, then `total` bytes of `fill` in 1 MiB pieces for as
    long as the peer reads them: an endless line or literal costs the
    server nothing once the client hangs up. Then `tail` and the tagged
    OK, or, when tail is None, close the connection. `.sent` is the most
    bytes one call got out before the peer hung up (the head
    included)."""

    def __init__(self, head, total, fill=b'x', tail=None):
        self.head, self.total, self.fill = head, total, fill
        self.tail = tail
        self.sent = 0

    def __call__(self, conn, tag, line):
        piece = self.fill * (1024 * 1024 // len(self.fill))
        sent = 0
        try:
            conn.send(self.head)
            sent = len(self.head)
            left = self.total
            while left > 0:
                conn.send(piece[:left])
                sent += min(left, len(piece))
                left -= len(piece)
        finally:
            self.sent = max(self.sent, sent)
        if self.tail is None:
            raise Hangup()
        conn.send(self.tail)
        conn.ok(tag)


def reply(data):
    """Send `data` (untagged responses) and the tagged OK."""
    def action(conn, tag, line):
        conn.send(data)
        conn.ok(tag)
    return action


def before(data):
    """Send `data`, then serve the command as usual."""
    def action(conn, tag, line):
        conn.send(data)
        conn.serve(tag, line)
    return action


class Script:
    def __init__(self, pattern, action, mailbox, times):
        self.pattern = re.compile(pattern)
        self.action = action
        self.mailbox = (mailbox.encode() if isinstance(mailbox, str)
                        else mailbox)
        self.times = times
        self.hits = 0       # protected by FakeImap.lock


# ---------------------------------------------------------------------------
# The server

class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.fake.serve_connection(self.request)


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    # server_close() joins the connection threads (stop() ends them).
    daemon_threads = False
    block_on_close = True


class FakeImap:
    def __init__(self, capabilities=CAPABILITIES):
        self.capabilities = capabilities
        self.lock = threading.Lock()
        self.mailboxes = []         # protected by lock
        self.scripts = []           # protected by lock
        self.commands = []          # (connection, line) received; by lock
        self.connections = 0        # accepted so far; by lock
        self.conns = set()          # open sockets; by lock
        self.tcp = None
        self.thread = None
        self.port = None
        self.cafile = None          # plain TCP: no certificate

    # -- set-up ----------------------------------------------------------
    def mailbox(self, name, messages=(), **kw):
        box = Mailbox(name, messages, **kw)
        with self.lock:
            self.mailboxes.append(box)
        return box

    def on(self, pattern, action, mailbox=None, times=None):
        """Run `action` instead of serving a command that matches
        `pattern` (a regex over the line without its tag), if `mailbox`
        is selected (None: any state); at most `times` times (None: every
        time). Returns the Script, whose .hits counts its uses."""
        s = Script(pattern, action, mailbox, times)
        with self.lock:
            self.scripts.append(s)
        return s

    def url(self, scheme='imap', user='alice', mailbox=None):
        assert scheme == 'imap', 'the fake server has no TLS'
        u = 'imap://%s@127.0.0.1:%d' % (user, self.port)
        return u + '/' + mailbox if mailbox else u

    # -- lifecycle -------------------------------------------------------
    def start(self):
        self.tcp = _TCPServer(('127.0.0.1', 0), _Handler)
        self.tcp.fake = self
        self.port = self.tcp.server_address[1]
        self.thread = threading.Thread(target=self.tcp.serve_forever,
                                       args=(0.05,), daemon=True,
                                       name='fake-imap')
        self.thread.start()
        return self

    def stop(self):
        """Stops accepting, cuts every connection, waits for their
        threads."""
        if self.tcp is None:
            return
        self.tcp.shutdown()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.tcp.server_close()
        self.thread.join(timeout=10)
        self.tcp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def serve_connection(self, sock):
        """Called in the connection's own thread by socketserver."""
        with self.lock:
            self.connections += 1
            number = self.connections
            self.conns.add(sock)
        try:
            Conn(self, sock, number).run()
        except (Hangup, OSError):
            pass
        finally:
            with self.lock:
                self.conns.discard(sock)

    # -- used by connections ------------------------------------------------
    def script_for(self, line, selected):
        with self.lock:
            for s in self.scripts:
                if s.times is not None and s.hits >= s.times:
                    continue
                if s.mailbox is not None and s.mailbox != selected:
                    continue
                if s.pattern.search(line):
                    s.hits += 1
                    return s
        return None

    def find(self, name):
        with self.lock:
            for b in self.mailboxes:
                if b.name == name or (name.upper() == b'INBOX' and
                                      b.name.upper() == b'INBOX'):
                    return b
        return None


# Command arguments: atom, quoted string, or a literal read in advance
# (replaced by "{#n}" in the line).
ARG_RE = re.compile(rb'\s*(?:"((?:[^"\\]|\\.)*)"|\{#(\d+)\}|([^\s()]+))')
ITEM_RE = re.compile(rb'BODY(?:\.PEEK)?\[([0-9A-Z.]*)\](?:<(\d+)\.(\d+)>)?'
                     rb'|[A-Z0-9.]+', re.I)


class Conn:
    """One client connection: reads commands, serves or scripts them."""

    def __init__(self, server, sock, number):
        self.server = server
        self.sock = sock
        self.number = number
        self.rfile = sock.makefile('rb')
        self.selected = None        # the Mailbox, when one is
        self.literals = []

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            raise Hangup()

    def readline(self):
        line = self.rfile.readline(1 << 20)
        if not line:
            raise Hangup()
        return line.rstrip(b'\r\n')

    def read_command(self):
        """One command line with its literals read and replaced by
        "{#n}" (their bytes in self.literals)."""
        self.literals = []
        out = b''
        while True:
            line = self.readline()
            m = re.search(rb'\{(\d+)(\+?)\}$', line)
            if not m:
                return out + line
            if not m.group(2):
                self.send(b'+ go on\r\n')
            self.literals.append(self.rfile.read(int(m.group(1))))
            out += line[:m.start()] + b'{#%d}' % (len(self.literals) - 1)

    def args(self, text):
        out = []
        for m in ARG_RE.finditer(text):
            if m.group(1) is not None:
                out.append(re.sub(rb'\\(.)', rb'\1', m.group(1)))
            elif m.group(2) is not None:
                out.append(self.literals[int(m.group(2))])
            else:
                out.append(m.group(3))
        return out

    def run(self):
        self.send(b'* OK [CAPABILITY %s] fake IMAP ready\r\n'
                  % self.server.capabilities.encode())
        while True:
            line = self.read_command()
            tag, _, rest = line.partition(b' ')
            text = rest.decode('latin-1')
            with self.server.lock:
                self.server.commands.append((self.number, text))
            s = self.server.script_for(
                text, self.selected.name if self.selected else None)
            if s:
                s.action(self, tag, text)
            else:
                self.serve(tag, text)

    # -- the normal answers ------------------------------------------------
    def serve(self, tag, text):
        line = text.encode('latin-1')
        verb, _, rest = line.partition(b' ')
        verb = verb.upper()
        if verb == b'UID':
            verb, _, rest = rest.partition(b' ')
            verb = b'UID ' + verb.upper()
        handler = {
            b'CAPABILITY': self.do_capability, b'LOGIN': self.do_ok,
            b'AUTHENTICATE': self.do_authenticate, b'NOOP': self.do_ok,
            b'CHECK': self.do_ok, b'ENABLE': self.do_ok,
            b'LIST': self.do_list, b'LSUB': self.do_list,
            b'STATUS': self.do_status, b'EXAMINE': self.do_select,
            b'SELECT': self.do_select, b'UNSELECT': self.do_close,
            b'CLOSE': self.do_close, b'UID FETCH': self.do_fetch,
            b'UID SEARCH': self.do_search, b'IDLE': self.do_idle,
            b'LOGOUT': self.do_logout,
        }.get(verb)
        try:
            if handler is None:
                raise ValueError(verb)
            handler(tag, rest)
        except (ValueError, IndexError):
            self.send(tag + b' BAD cannot do that\r\n')

    def ok(self, tag, what=b'done'):
        self.send(tag + b' OK ' + what + b'\r\n')

    def do_ok(self, tag, rest):
        self.ok(tag)

    def do_capability(self, tag, rest):
        self.send(b'* CAPABILITY %s\r\n' % self.server.capabilities.encode())
        self.ok(tag)

    def do_authenticate(self, tag, rest):
        a = self.args(rest)
        if not a or a[0].upper() != b'PLAIN':
            self.send(tag + b' NO [CANNOT] only PLAIN\r\n')
            return
        if len(a) < 2:
            self.send(b'+ \r\n')
            base64.b64decode(self.readline())
        self.ok(tag, b'logged in')

    def do_list(self, tag, rest):
        with self.server.lock:
            lines = [b.list_line() for b in self.server.mailboxes]
        self.send(b''.join(lines))
        self.ok(tag)

    def do_status(self, tag, rest):
        a = self.args(rest)
        box = self.server.find(a[0]) if a else None
        if box is None:
            self.send(tag + b' NO [NONEXISTENT] no such mailbox\r\n')
            return
        self.send(b'* STATUS %s (MESSAGES %d UIDNEXT %d UIDVALIDITY %d)'
                  b'\r\n' % (quote(box.name), len(box.messages),
                             box.uidnext(), box.uidvalidity))
        self.ok(tag)

    def do_select(self, tag, rest):
        a = self.args(rest)
        box = self.server.find(a[0]) if a else None
        self.selected = None
        if box is None or b'\\Noselect' in box.flags:
            self.send(tag + b' NO [NONEXISTENT] no such mailbox\r\n')
            return
        self.selected = box
        self.send(b'* FLAGS (\\Answered \\Flagged \\Deleted \\Seen '
                  b'\\Draft)\r\n* %d EXISTS\r\n* 0 RECENT\r\n'
                  b'* OK [UIDVALIDITY %d] ok\r\n* OK [UIDNEXT %d] ok\r\n'
                  % (len(box.messages), box.uidvalidity, box.uidnext()))
        self.ok(tag, b'[READ-ONLY] selected')

    def do_close(self, tag, rest):
        self.selected = None
        self.ok(tag)

    def do_idle(self, tag, rest):
        self.send(b'+ idling\r\n')
        while self.readline().upper() != b'DONE':
            pass
        self.ok(tag)

    def do_logout(self, tag, rest):
        self.send(b'* BYE bye\r\n')
        self.ok(tag)
        raise Hangup()

    def matching(self, uidset):
        """The (sequence number, Msg) pairs whose UID is in `uidset`."""
        msgs = self.selected.messages if self.selected else []
        top = max((m.uid for m in msgs), default=0)
        ranges = []
        for part in uidset.split(b','):
            lo, _, hi = part.partition(b':')
            lo = top if lo == b'*' else int(lo)
            hi = lo if not hi else top if hi == b'*' else int(hi)
            ranges.append((min(lo, hi), max(lo, hi)))
        return [(i + 1, m) for i, m in enumerate(msgs)
                if any(lo <= m.uid <= hi for lo, hi in ranges)]

    def do_search(self, tag, rest):
        m = re.search(rb'UID ([0-9:*,]+)', rest)
        hits = self.matching(m.group(1) if m else b'1:*')
        self.send(b'* SEARCH%s\r\n' % b''.join(b' %d' % msg.uid
                                               for _, msg in hits))
        self.ok(tag)

    def do_fetch(self, tag, rest):
        uidset, _, items = rest.partition(b' ')
        for seq, msg in self.matching(uidset):
            self.send(b'* %d FETCH (%s)\r\n' % (seq, b' '.join(
                fetch_item(msg, m) for m in ITEM_RE.finditer(items))))
        self.ok(tag)


def fetch_item(msg, m):
    """`KEY value` for the FETCH item matched by ITEM_RE as `m`."""
    key = m.group(0).upper()
    if m.group(1) is not None:
        return body_item(msg, m)
    value = {
        b'UID': lambda: b'%d' % msg.uid,
        b'RFC822.SIZE': lambda: b'%d' % msg.size,
        b'INTERNALDATE': lambda: quote(msg.internaldate),
        b'FLAGS': lambda: b'(%s)' % msg.flags.encode(),
        b'ENVELOPE': msg.envelope,
        b'BODYSTRUCTURE': lambda: msg.bodystructure,
        b'BODY': lambda: msg.bodystructure,
    }.get(key, lambda: b'NIL')()
    return key + b' ' + value


def body_item(msg, m):
    section = (m.group(1) or b'').decode().upper()
    data = msg.sections.get(section, b'')
    key = b'BODY[%s]' % section.encode()
    if m.group(2) is not None:
        origin, length = int(m.group(2)), int(m.group(3))
        data = data[origin:origin + length]
        key += b'<%d>' % origin
    return key + b' {%d}\r\n' % len(data) + data
