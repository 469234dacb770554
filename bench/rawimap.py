# SPDX-License-Identifier: GPL-2.0-or-later
"""A minimal pipelined IMAP client over TLS: the "raw limit" baselines.

It sends all of its commands at once (EXAMINE, UID FETCH, EXAMINE, ...)
and then only reads: literals are skipped in place, never parsed or
copied. Each connection runs in a process of its own, so that several
connections do not share one Python interpreter lock; they log in first
and then start together on a barrier, so the timed part is only the
EXAMINEs and FETCHes (the mount has logged in before it is timed, too).
"""

import multiprocessing
import re
import socket
import ssl
import time

_LITERAL_RE = re.compile(rb'\{(\d+)\+?\}$')


class Raw:
    """One logged-in IMAP connection (implicit TLS)."""

    def __init__(self, host, port, cafile, user, password, timeout=300):
        ctx = ssl.create_default_context(cafile=cafile)
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(sock, server_hostname=host)
        self.buf = bytearray()
        self.pos = 0
        self.scratch = bytearray(1 << 20)
        self.view = memoryview(self.scratch)
        self.tag = 0
        self.literal_bytes = 0
        self.fetches = 0
        self.readline()                       # greeting
        self.run(b'LOGIN ' + _quote(user) + b' ' + _quote(password))

    def _fill(self):
        n = self.sock.recv_into(self.view)
        if n == 0:
            raise ConnectionError('server closed the connection')
        if self.pos > 65536 and self.pos * 2 > len(self.buf):
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += self.view[:n]

    def _skip(self, n):
        """Consume n bytes of literal without keeping them."""
        have = len(self.buf) - self.pos
        if have >= n:
            self.pos += n
            return
        n -= have
        del self.buf[:]
        self.pos = 0
        while n > 0:
            got = self.sock.recv_into(self.view, min(n, len(self.scratch)))
            if got == 0:
                raise ConnectionError('server closed the connection')
            n -= got
        # anything beyond the literal was not read: recv_into was capped

    def readline(self):
        """One response line, literals skipped; returns the text parts."""
        parts = []
        while True:
            i = self.buf.find(b'\r\n', self.pos)
            while i < 0:
                self._fill()
                i = self.buf.find(b'\r\n', self.pos)
            line = bytes(self.buf[self.pos:i])
            self.pos = i + 2
            parts.append(line)
            m = _LITERAL_RE.search(line) if line.endswith(b'}') else None
            if not m:
                return b''.join(parts)
            n = int(m.group(1))
            self.literal_bytes += n
            self._skip(n)

    def send(self, cmds):
        """Send commands (bytes, no tag) at once; returns their tags."""
        tags = []
        out = []
        for c in cmds:
            self.tag += 1
            t = b'b%d' % self.tag
            tags.append(t)
            out.append(t + b' ' + c + b'\r\n')
        self.sock.sendall(b''.join(out))
        return tags

    def wait(self, tags):
        """Read until every tag in `tags` is answered; raise unless OK."""
        left = set(tags)
        while left:
            line = self.readline()
            if line.startswith(b'* '):
                if b' FETCH ' in line[:24]:
                    self.fetches += 1
                continue
            tag, _, rest = line.partition(b' ')
            if tag in left:
                left.discard(tag)
                if not rest.startswith(b'OK'):
                    raise RuntimeError('%s: %s' % (tag.decode(),
                                                   rest.decode(errors='replace')))

    def run(self, cmd):
        self.wait(self.send([cmd]))

    def logout(self):
        try:
            self.run(b'LOGOUT')
        except (OSError, ConnectionError, RuntimeError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def _quote(s):
    if isinstance(s, str):
        s = s.encode()
    return b'"' + s.replace(b'\\', b'\\\\').replace(b'"', b'\\"') + b'"'


def fetch_commands(work, what=b'(BODY.PEEK[])'):
    """[(folder, lo, hi)] -> pipelined EXAMINE/UID FETCH commands."""
    cmds = []
    current = None
    for folder, lo, hi in work:
        if folder != current:
            cmds.append(b'EXAMINE ' + _quote(folder))
            current = folder
        cmds.append(b'UID FETCH %d:%d %s' % (lo, hi, what))
    return cmds


def split_work(uids, nconn, order):
    """Split the messages into nconn contiguous shares of about equal
    bytes. uids: {folder: [(uid, size)] sorted}; order: folder order.
    Returns a list of nconn work lists [(folder, lo_uid, hi_uid)]."""
    seq = [(f, u, s) for f in order for u, s in uids[f]]
    total = sum(s for _, _, s in seq)
    shares = [[] for _ in range(nconn)]
    i = 0
    acc = 0
    for k in range(nconn):
        limit = total * (k + 1) / nconn
        run = None
        while i < len(seq) and (acc < limit or k == nconn - 1):
            f, u, s = seq[i]
            if run and run[0] == f:
                run[2] = u
            else:
                if run:
                    shares[k].append(tuple(run))
                run = [f, u, u]
            acc += s
            i += 1
        if run:
            shares[k].append(tuple(run))
    return shares


def _worker(args, barrier, results, index):
    host, port, cafile, user, password, cmds = args
    try:
        c = Raw(host, port, cafile, user, password)
    except Exception as e:
        barrier.abort()
        results.put((index, None, None, 0, 0, 'login: %s' % e))
        return
    try:
        barrier.wait(60)
    except Exception as e:
        c.logout()
        results.put((index, None, None, 0, 0, 'barrier: %s' % e))
        return
    t0 = time.monotonic()
    err = None
    try:
        c.wait(c.send(cmds))
    except Exception as e:
        err = '%s: %s' % (type(e).__name__, e)
    t1 = time.monotonic()
    results.put((index, t0, t1, c.literal_bytes, c.fetches, err))
    c.logout()


def run_parallel(host, port, cafile, user, password, command_lists,
                 timeout=600):
    """Run each command list on a connection of its own, all at once.

    Returns dict(seconds, bytes, fetches, connections): seconds from the
    first connection's start to the last one's end (logins excluded)."""
    ctx = multiprocessing.get_context('fork')
    n = len(command_lists)
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, daemon=True,
                         args=((host, port, cafile, user, password, cmds),
                               barrier, results, i))
             for i, cmds in enumerate(command_lists)]
    for p in procs:
        p.start()
    got = []
    try:
        for _ in procs:
            got.append(results.get(timeout=timeout))
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [r[5] for r in got if r[5]]
    if errors:
        raise RuntimeError('raw client: ' + '; '.join(errors))
    return {'seconds': max(r[2] for r in got) - min(r[1] for r in got),
            'bytes': sum(r[3] for r in got),
            'fetches': sum(r[4] for r in got),
            'connections': n}
