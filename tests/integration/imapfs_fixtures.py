# SPDX-License-Identifier: GPL-2.0-or-later
"""Test fixtures for imapfs: a private Dovecot, a mail corpus, and mounts.

This is a plain module (no pytest imports) so that tests/demo.sh can reuse
it.  Everything a fixture starts is a subprocess we own; it is stopped by
its pid, never by name.

  CA          a throw-away certificate authority made with the openssl CLI
  Dovecot     a private dovecot (imap + imaps on free 127.0.0.1 ports)
  Corpus      mailboxes and messages APPENDed through imaplib (the
              independent "second client"); the server's copy, fetched
              back through imaplib, is the reference
  Mount       one imapfs process and its mountpoint
"""

import base64
import datetime
import errno
import email.utils
import imaplib
import os
import pwd
import grp
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DOVECOT = '/usr/sbin/dovecot'

# What a daemon stderr must never contain.
SANITIZER_MARKERS = ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer',
                     'runtime error:', 'ERROR: UndefinedBehaviorSanitizer')


class FixtureError(Exception):
    pass


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def local_listener(backlog=64):
    """A TCP socket listening on a free 127.0.0.1 port (getsockname()),
    for accept_until()."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('127.0.0.1', 0))
    s.listen(backlog)
    s.settimeout(0.2)
    return s


def accept_until(listener, stopping):
    """Yields each connection accepted on `listener` (a blocking socket)
    until stopping() is true, at most 0.2 s later, or the listener is
    closed."""
    while not stopping():
        try:
            client, _ = listener.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        client.settimeout(None)
        yield client


def wait_for(pred, timeout, interval=0.05):
    """Poll pred() until it is true or timeout seconds pass; return it."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def port_open(port, host='127.0.0.1'):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def scratch_dir():
    """/dev/shm when usable (maildir on tmpfs is several times faster
    than on a disk mounted with discard), else /tmp."""
    if os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK):
        return '/dev/shm'
    return '/tmp'


def imapfs_bin():
    return os.environ.get('IMAPFS_BIN', os.path.join(REPO, 'build', 'imapfs'))


# ---------------------------------------------------------------------------
# Modified UTF-7 (RFC 3501 5.1.3), written here independently of the C code.

def mutf7_encode(name):
    out = []
    buf = []

    def flush():
        if buf:
            raw = ''.join(buf).encode('utf-16-be')
            out.append('&' + base64.b64encode(raw).decode('ascii')
                       .rstrip('=').replace('/', ',') + '-')
            buf.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append('&-' if ch == '&' else ch)
        else:
            buf.append(ch)
    flush()
    return ''.join(out)


def mutf7_decode(name):
    def dec(m):
        s = m.group(1)
        if s == '':
            return '&'
        s = s.replace(',', '/')
        s += '=' * (-len(s) % 4)
        return base64.b64decode(s).decode('utf-16-be')
    return re.sub(r'&([^-]*)-', dec, name)


def imap_quote(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------
# Certificates

def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       **kw)
    if r.returncode != 0:
        raise FixtureError('%s failed (%d): %s' % (
            ' '.join(cmd), r.returncode, r.stderr.decode(errors='replace')))
    return r


class CA:
    """A certificate authority in directory `path` (made with openssl)."""

    def __init__(self, path, name='imapfs test CA'):
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.cert = os.path.join(path, 'ca.pem')
        self.key = os.path.join(path, 'ca.key')
        run(['openssl', 'req', '-x509', '-newkey', 'ec',
             '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
             '-keyout', self.key, '-out', self.cert, '-days', '3',
             '-subj', '/CN=' + name,
             '-addext', 'basicConstraints=critical,CA:TRUE',
             '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
        self._serial = 1

    def issue(self, name, sans=('DNS:localhost', 'IP:127.0.0.1')):
        """Issue a server certificate; return (cert_path, key_path)."""
        cert = os.path.join(self.path, name + '.pem')
        key = os.path.join(self.path, name + '.key')
        csr = os.path.join(self.path, name + '.csr')
        ext = os.path.join(self.path, name + '.ext')
        with open(ext, 'w') as f:
            f.write('basicConstraints=CA:FALSE\n'
                    'keyUsage=critical,digitalSignature,keyEncipherment\n'
                    'extendedKeyUsage=serverAuth\n'
                    'subjectAltName=%s\n' % ','.join(sans))
        run(['openssl', 'req', '-newkey', 'ec',
             '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
             '-keyout', key, '-out', csr, '-subj', '/CN=' + name])
        self._serial += 1
        run(['openssl', 'x509', '-req', '-in', csr, '-CA', self.cert,
             '-CAkey', self.key, '-set_serial', str(self._serial),
             '-days', '3', '-out', cert, '-extfile', ext])
        return cert, key

    def context(self):
        """An ssl.SSLContext that trusts only this CA."""
        ctx = ssl.create_default_context(cafile=self.cert)
        return ctx


# ---------------------------------------------------------------------------
# Dovecot

USERS = {'alice': 'alice-Secr3t pw', 'bob': 'bob-pass'}


def fresh_dovecot(ca, corpus=None, **kw):
    """A generator for fixtures: a private Dovecot(ca, **kw) with the
    small corpus (no bulk, no big messages) or `corpus` (a Corpus not
    loaded yet), stopped when closed."""
    d = Dovecot(ca, **kw)
    try:
        d.start()
        d.corpus = (corpus or Corpus(bulk=0, big=False)).load(d)
        yield d
    finally:
        d.stop()


class TokenEndpoint:
    """A local OAuth 2.0 token introspection endpoint (RFC 7662) for
    Dovecot's oauth2 passdb: `tokens` maps each valid token to its user;
    `seen` lists the tokens asked about, in order. Runs in a thread of
    the test process on a free 127.0.0.1 port."""

    def __init__(self):
        self.tokens = {}
        self.seen = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get('Content-Length', 0))
                form = urllib.parse.parse_qs(self.rfile.read(n).decode())
                token = form.get('token', [''])[0]
                endpoint.seen.append(token)
                user = endpoint.tokens.get(token)
                body = ('{"active": true, "username": "%s"}' % user
                        if user else '{"active": false}').encode()
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = 'http://127.0.0.1:%d/introspect' % self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Dovecot:
    """A private dovecot under `root` (default: a fresh directory in
    /dev/shm or /tmp); nothing of it listens beyond 127.0.0.1.

    tls=True: imaps (implicit TLS) on self.imaps_port and imap with
    STARTTLS on self.imap_port, certificate issued by `ca`.
    tls=False: `ssl = no`, only plain imap on self.imap_port (no STARTTLS).
    cert: optional (cert, key) to use instead of a fresh one from `ca`.
    quota: True (1G), False (no quota plugin), or a storage limit such as
    '64K': an APPEND beyond it is answered NO [OVERQUOTA].
    max_mail_size: e.g. '100k': a larger APPEND is answered NO [LIMIT]
    (quota_max_mail_size; Dovecot 2.3 does not advertise it).
    trash: a mailbox "Trash" with the special use Trash (RFC 6154),
    created at login.
    imap_capability: Dovecot's `imap_capability` (the CAPABILITY list,
    before and after login); '+X' appends X to the default list. See
    capabilities_without().
    oauth_url: a token introspection URL (TokenEndpoint.url): XOAUTH2 and
    OAUTHBEARER are then offered and checked by Dovecot's oauth2 passdb,
    passwords only by PLAIN and LOGIN.
    """

    def __init__(self, ca=None, tls=True, cert=None, users=None,
                 root=None, quota=True, extra_conf='', max_mail_size=None,
                 trash=False, imap_capability=None, oauth_url=None):
        self.ca = ca
        self.oauth_url = oauth_url
        self.extra_conf = extra_conf
        self.tls = tls
        self.users = dict(users or USERS)
        self.quota = quota
        self.max_mail_size = max_mail_size
        self.trash = trash
        self.imap_capability = imap_capability
        # A short path: unix sockets live in base_dir (108-byte limit),
        # and the dovecot user must be able to traverse it.
        self.root = root or tempfile.mkdtemp(prefix='imapfs-dc-',
                                             dir=scratch_dir())
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.conf = os.path.join(self.root, 'dovecot.conf')
        self.log = os.path.join(self.root, 'dovecot.log')
        self.base_dir = os.path.join(self.root, 'run')
        self.state_dir = os.path.join(self.root, 'state')
        self.home = os.path.join(self.root, 'home')
        self.passwd = os.path.join(self.root, 'passwd')
        self.stdout_path = os.path.join(self.root, 'dovecot.stdout')
        self.pid_path = os.path.join(self.root, 'dovecot.pid')
        self.imap_port = None
        self.imaps_port = None
        self.proc = None
        if tls and cert is None:
            if ca is None:
                raise FixtureError('Dovecot(tls=True) needs a CA or a cert')
            cert = ca.issue('server-' + os.path.basename(self.root))
        self.cert = cert

    @property
    def proc_pid(self):
        return self.proc.pid if self.proc else None

    def detach(self):
        """Forget the child: it keeps running (tests/demo.sh), and is
        stopped later with stop_dovecot() and the pid in self.pid_path."""
        self.proc = None

    @property
    def cafile(self):
        return self.ca.cert if self.ca else None

    # -- configuration ----------------------------------------------------
    def _write_config(self):
        uid = pwd.getpwnam('dovecot').pw_uid
        gid = grp.getgrnam('dovecot').gr_gid
        for d in (self.base_dir, self.state_dir, self.home):
            os.makedirs(d, exist_ok=True)
        for user in self.users:
            h = os.path.join(self.home, user)
            os.makedirs(h, exist_ok=True)
            os.chown(h, uid, gid)
            os.chmod(h, 0o700)
        os.chown(self.home, uid, gid)
        with open(self.passwd, 'w') as f:
            for user, pw in self.users.items():
                f.write('%s:{PLAIN}%s::::::\n' % (user, pw))
        os.chmod(self.passwd, 0o640)
        os.chown(self.passwd, 0, gid)
        with open(self.log, 'a'):
            pass

        if self.tls:
            ssl_conf = ('ssl = yes\n'
                        'ssl_cert = <%s\nssl_key = <%s\n'
                        'ssl_min_protocol = TLSv1.2\n' % self.cert)
            listeners = ('  inet_listener imap {\n'
                         '    address = 127.0.0.1\n    port = %d\n  }\n'
                         '  inet_listener imaps {\n'
                         '    address = 127.0.0.1\n    port = %d\n'
                         '    ssl = yes\n  }\n'
                         % (self.imap_port, self.imaps_port))
        else:
            ssl_conf = 'ssl = no\n'
            listeners = ('  inet_listener imap {\n'
                         '    address = 127.0.0.1\n    port = %d\n  }\n'
                         '  inet_listener imaps {\n    port = 0\n  }\n'
                         % self.imap_port)
        quota = ''
        if self.quota or self.max_mail_size:
            storage = self.quota if isinstance(self.quota, str) else '1G'
            quota = ('mail_plugins = $mail_plugins quota\n'
                     'protocol imap {\n'
                     '  mail_plugins = $mail_plugins imap_quota\n}\n'
                     'plugin {\n  quota = count:User quota\n'
                     '  quota_vsizes = yes\n'
                     '  quota_rule = *:storage=%s\n' % storage)
            if self.max_mail_size:
                quota += '  quota_max_mail_size = %s\n' % self.max_mail_size
            quota += '}\n'
        special = ''
        if self.trash:
            special = ('  mailbox Trash {\n    special_use = \\Trash\n'
                       '    auto = create\n  }\n')
        caps = ''
        if self.imap_capability:
            caps = 'imap_capability = %s\n' % self.imap_capability
        mechanisms, password_mechs, oauth = self._oauth_conf()
        conf = f"""\
# generated by imapfs_fixtures.py; private test instance
instance_name = imapfs-test-{os.path.basename(self.root)}
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log}
info_log_path = {self.log}
debug_log_path = {self.log}
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir:LAYOUT=index
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = .
{special}}}
auth_mechanisms = {mechanisms}
disable_plaintext_auth = no
auth_verbose = yes
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd}
{password_mechs}}}
{oauth}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={self.home}/%u
}}
{ssl_conf}
service imap-login {{
{listeners}
}}
# Tests fail logins on purpose: without access to anvil's penalty socket
# the auth process turns its growing delay (2s..15s per IP) off.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
{quota}
{caps}
{self.extra_conf}"""
        with open(self.conf, 'w') as f:
            f.write(conf)

    def _oauth_conf(self):
        """auth_mechanisms, the password passdb's filter, the oauth2
        passdb: tokens are never taken for passwords, nor the reverse."""
        if not self.oauth_url:
            return 'plain login', '', ''
        args = os.path.join(self.root, 'oauth2.conf.ext')
        with open(args, 'w') as f:
            f.write('introspection_mode = post\n'
                    'introspection_url = %s\n'
                    'username_attribute = username\n'
                    'active_attribute = active\n'
                    'active_value = true\n'
                    'timeout_msecs = 10000\n' % self.oauth_url)
        os.chmod(args, 0o644)
        return ('plain login xoauth2 oauthbearer',
                '  mechanisms = plain login\n',
                'passdb {\n  driver = oauth2\n'
                '  mechanisms = xoauth2 oauthbearer\n'
                '  args = %s\n}\n' % args)

    # -- lifecycle ----------------------------------------------------------
    def start(self, timeout=20):
        """Start dovecot -F as our child; return when the ports answer.

        It runs in a session of its own, so a ^C on the terminal reaches
        only the test runner, which then stops it in order.
        """
        self.imap_port = free_port()
        self.imaps_port = free_port() if self.tls else None
        self._write_config()
        return self._launch(timeout)

    def _launch(self, timeout):
        with open(self.stdout_path, 'ab') as out:
            self.proc = subprocess.Popen(
                [DOVECOT, '-F', '-c', self.conf], stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        with open(self.pid_path, 'w') as f:
            f.write('%d\n' % self.proc.pid)
        ports = [p for p in (self.imap_port, self.imaps_port) if p]
        ok = wait_for(lambda: self.proc.poll() is not None
                      or all(port_open(p) for p in ports), timeout)
        if self.proc.poll() is not None or not ok:
            out = self._stop_and_collect()
            raise FixtureError('dovecot did not start:\n%s\n--- log:\n%s' % (
                out, self.log_text()))
        return self

    def kill(self, timeout=20):
        """SIGKILL the server as a crash would: the master we started and
        every process of its session (start() made it the group
        leader). The mail and the configuration stay for restart()."""
        if self.proc is None or self.proc.poll() is not None:
            raise FixtureError('dovecot is not running')
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        ports = [p for p in (self.imap_port, self.imaps_port) if p]
        if not wait_for(lambda: not any(port_open(p) for p in ports),
                        timeout):
            raise FixtureError('dovecot ports %s still open after SIGKILL'
                               % ports)

    def restart(self, timeout=20):
        """Start again after kill(): the same configuration, ports, mail
        and log; return when the ports answer."""
        if self.proc is not None and self.proc.poll() is None:
            raise FixtureError('dovecot is still running')
        return self._launch(timeout)

    def _stop_and_collect(self):
        if self.proc is not None:
            stop_dovecot(self.proc.pid, self.conf, proc=self.proc)
            self.proc = None
        try:
            with open(self.stdout_path, errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def stop(self, remove=True):
        self._stop_and_collect()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self):
        try:
            with open(self.log, errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- clients ------------------------------------------------------------
    def client(self, user='alice', starttls=False):
        """A logged-in imaplib client (TLS, verifying our CA)."""
        if self.tls and not starttls:
            c = imaplib.IMAP4_SSL('127.0.0.1', self.imaps_port,
                                  ssl_context=self.ca.context(), timeout=30)
        else:
            c = imaplib.IMAP4('127.0.0.1', self.imap_port, timeout=30)
            if starttls:
                c.starttls(ssl_context=self.ca.context())
        try:
            c.login(user, self.users[user])
        except Exception:
            c.shutdown()    # a lingering connection delays dovecot's exit
            raise
        return c

    def capabilities(self, user='alice'):
        """(CAPABILITY before login, after login) as sets of upper-case
        names, asked with imaplib over plain imap (no STARTTLS)."""
        c = imaplib.IMAP4('127.0.0.1', self.imap_port, timeout=30)
        try:
            pre = {x.upper() for x in c.capabilities}
            c.login(user, self.users[user])
            data = imap_check(c.capability(), 'CAPABILITY')
            post = {x.upper() for x in data[-1].decode().split()}
        finally:
            c.shutdown()
        return pre, post

    def url(self, scheme='imaps', user='alice', mailbox=None,
            host='127.0.0.1', port=None):
        if port is None:
            port = self.imaps_port if scheme == 'imaps' else self.imap_port
        u = '%s://%s@%s:%d' % (scheme, user, host, port)
        if mailbox:
            u += '/' + mailbox
        return u


# What Dovecot 2.3 advertises after login with the configuration above;
# capabilities_without() derives an `imap_capability` list from it.
DOVECOT_CAPABILITIES = (
    'IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY '
    'THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND '
    'URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED '
    'I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN '
    'CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY '
    'PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY QUOTA').split()


def capabilities_without(*names):
    """The default capability list without `names` (an `imap_capability`
    value). QRESYNC goes with CONDSTORE, which it implies."""
    drop = {n.upper() for n in names}
    if 'CONDSTORE' in drop:
        drop.add('QRESYNC')
    return ' '.join(c for c in DOVECOT_CAPABILITIES if c.upper() not in drop)


def stop_dovecot(pid, conf, proc=None, timeout=60):
    """SIGTERM the dovecot master `pid` and wait for it to end.

    Only if its command line names our `conf`: never another dovecot.
    Dovecot waits for connected clients before it exits (10 s for an imap
    process, 30 s for a login), so clients should log out first; after
    `timeout` its process group (its own session, see start()) is killed.
    """
    if proc is None:
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            return
        if conf.encode() not in argv:
            raise FixtureError('pid %d is not our dovecot (%r)' % (pid, argv))
    elif proc.poll() is not None:
        return
    os.kill(pid, signal.SIGTERM)
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    elif wait_for(lambda: not pid_alive(pid), timeout, 0.1):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if proc is not None:
        proc.wait()


# ---------------------------------------------------------------------------
# Corpus

def imap_check(resp, what):
    typ, data = resp
    if typ != 'OK':
        raise FixtureError('%s: %s %r' % (what, typ, data))
    return data


def multiappend(client, mailbox, messages):
    """APPEND many messages in one MULTIAPPEND command with LITERAL+.

    messages: iterable of (flags or None, datetime or None, bytes).
    Falls back to one APPEND each if the server lacks either extension.
    """
    messages = list(messages)
    caps = client.capabilities
    if 'MULTIAPPEND' not in caps or 'LITERAL+' not in caps:
        for flags, date, data in messages:
            imap_check(client.append(mailbox, flags, date, data), 'APPEND')
        return
    for i in range(0, len(messages), 500):
        tag = client._new_tag()
        parts = [tag + b' APPEND ' + imap_quote(mailbox).encode()]
        for flags, date, data in messages[i:i + 500]:
            if flags:
                parts.append(b' (' + flags.encode() + b')')
            if date:
                parts.append(b' ' + imaplib.Time2Internaldate(date).encode())
            parts.append(b' {%d+}\r\n' % len(data) + data)
        parts.append(b'\r\n')
        client.send(b''.join(parts))
        imap_check(client._command_complete('APPEND', tag), 'MULTIAPPEND')


def parse_internaldate(s):
    """'23-Nov-2026 11:28:25 +0000' -> seconds since the epoch."""
    return int(datetime.datetime.strptime(
        s.strip(), '%d-%b-%Y %H:%M:%S %z').timestamp())


class Message:
    __slots__ = ('uid', 'size', 'internaldate', 'flags', 'data')

    def __init__(self, uid, size, internaldate, flags, data=None):
        self.uid, self.size, self.internaldate = uid, size, internaldate
        self.flags, self.data = flags, data

    @property
    def filename(self):
        return '%d.eml' % self.uid

    def __repr__(self):
        return '<Message uid=%d size=%d>' % (self.uid, self.size)


class Mailbox:
    """One mailbox of the corpus.

    levels: the name's hierarchy levels (UTF-8); path: where imapfs should
    show it ('/'-joined, '/' inside a level as %2F and '%' as %25);
    server: the server's name (modified UTF-7, '.' separator).
    """

    def __init__(self, levels, noselect=False):
        self.levels = tuple(levels)
        self.noselect = noselect
        self.messages = {}      # uid -> Message, filled by fetch_reference

    @property
    def path(self):
        return '/'.join(escape_level(x) for x in self.levels)

    @property
    def server(self):
        return mutf7_encode(SEP.join(self.levels))

    def __repr__(self):
        return '<Mailbox %s>' % self.path


SEP = '.'       # the hierarchy separator the fixture's Dovecot uses


def escape_level(level):
    return level.replace('%', '%25').replace('/', '%2F')


def fetch_reference(client, mailbox, bodies=True):
    """{uid: Message} as the server has it (EXAMINE, so nothing changes)."""
    typ, data = client.select(imap_quote(mailbox), readonly=True)
    if typ != 'OK':
        raise FixtureError('EXAMINE %s: %r' % (mailbox, data))
    if int(data[0]) == 0:
        return {}
    msgs = {}
    meta = imap_check(client.uid('FETCH', '1:*',
                                 '(UID RFC822.SIZE INTERNALDATE FLAGS)'),
                      'FETCH')
    for line in meta:
        if isinstance(line, tuple):
            line = line[0]
        s = line.decode()
        uid = int(re.search(r'\bUID (\d+)', s).group(1))
        size = int(re.search(r'RFC822\.SIZE (\d+)', s).group(1))
        idate = parse_internaldate(re.search(r'INTERNALDATE "([^"]+)"',
                                             s).group(1))
        flags = set(re.search(r'FLAGS \(([^)]*)\)', s).group(1).split())
        msgs[uid] = Message(uid, size, idate, flags)
    if bodies:
        data = imap_check(client.uid('FETCH', '1:*', '(BODY.PEEK[])'),
                          'FETCH')
        for item in data:
            if not isinstance(item, tuple):
                continue
            uid = int(re.search(rb'\bUID (\d+)', item[0]).group(1))
            msgs[uid].data = item[1]
    client.close()
    return msgs


def list_mailboxes(client):
    """{server name: set of attributes} from LIST "" *."""
    out = {}
    for line in imap_check(client.list('""', '*'), 'LIST'):
        m = re.match(rb'\(([^)]*)\) (?:"(?:[^"\\]|\\.)"|NIL) (.*)$', line)
        name = m.group(2).decode()
        if name.startswith('"'):
            name = name[1:-1].replace('\\"', '"').replace('\\\\', '\\')
        out[name] = set(m.group(1).decode().split())
    return out


CRLF = b'\r\n'
GREP_WORD = 'zebracorn'
_WORDS = ('alpha bravo charlie delta echo foxtrot golf hotel india juliet '
          'kilo lima mike november oscar papa quebec romeo sierra tango '
          'uniform victor whiskey xray yankee zulu').split()


def _hdr(subject, frm='Alice <alice@example.org>', to='bob@example.org',
         date=None, extra=()):
    date = date or datetime.datetime(2024, 3, 1, 12, 0, 0,
                                     tzinfo=datetime.timezone.utc)
    lines = ['From: ' + frm, 'To: ' + to, 'Subject: ' + subject,
             'Date: ' + email.utils.format_datetime(date),
             'Message-ID: <%08x@imapfs.test>' % zlib.crc32(
                 ('%s|%s' % (subject, date)).encode())]
    lines += list(extra)
    return CRLF.join(x.encode() for x in lines) + CRLF


def _b64_lines(data):
    return base64.encodebytes(data).replace(b'\n', CRLF)


def _tz(hours, minutes=0):
    return datetime.timezone(datetime.timedelta(hours=hours, minutes=minutes))


def _dt(y, mo, d, h=12, mi=0, s=0, tz=None):
    return datetime.datetime(y, mo, d, h, mi, s,
                             tzinfo=tz or datetime.timezone.utc)


def _padded(subject, total):
    """A text message of exactly `total` bytes (CRLF lines)."""
    head = _hdr(subject) + CRLF
    body = bytearray()
    n = 0
    while len(head) + len(body) < total:
        line = ('%06d %s' % (n, ' '.join(_WORDS))).encode()[:70] + CRLF
        body += line
        n += 1
    body = body[:total - len(head)]
    if body.endswith(b'\r'):
        body[-1:] = b'.'
    return head + bytes(body)


def corpus_messages(rng, big=True):
    """The mixed INBOX: a list of (flags, internaldate, bytes)."""
    msgs = []
    add = lambda data, date, flags=None: msgs.append((flags, date, data))

    add(_hdr('Plain text') + CRLF +
        b'Hello Bob,\r\n\r\nthis is a plain text message.\r\n\r\n-- \r\n'
        b'Alice\r\n', _dt(2024, 1, 15, 9, 30))

    alt = b'alt-boundary-4711'
    add(_hdr('multipart/alternative', extra=[
        'MIME-Version: 1.0',
        'Content-Type: multipart/alternative; boundary="%s"' % alt.decode()])
        + CRLF + b'This is a multi-part message in MIME format.\r\n'
        b'--' + alt + CRLF +
        b'Content-Type: text/plain; charset=us-ascii\r\n\r\n'
        b'Plain version of the ' + GREP_WORD.encode() + b' letter.\r\n'
        b'--' + alt + CRLF +
        b'Content-Type: text/html; charset=us-ascii\r\n\r\n'
        b'<html><body><p>HTML version</p></body></html>\r\n'
        b'--' + alt + b'--\r\n', _dt(2024, 2, 29, 23, 59, 59, _tz(9)),
        '\\Seen')

    for mb in ((3, 6) if big else (1,)):
        mix = b'mixed-%d' % mb
        payload = rng.randbytes(mb * 1024 * 1024)
        add(_hdr('%d MB attachment' % mb, extra=[
            'MIME-Version: 1.0',
            'Content-Type: multipart/mixed; boundary="%s"' % mix.decode()])
            + CRLF + b'--' + mix + CRLF +
            b'Content-Type: text/plain; charset=utf-8\r\n\r\n'
            b'See attachment.\r\n--' + mix + CRLF +
            b'Content-Type: application/octet-stream; name="random.bin"\r\n'
            b'Content-Disposition: attachment; filename="random.bin"\r\n'
            b'Content-Transfer-Encoding: base64\r\n\r\n' +
            _b64_lines(payload) +
            b'--' + mix + CRLF +
            b'Content-Type: application/pdf; name="invoice.pdf"\r\n'
            b'Content-Transfer-Encoding: base64\r\n\r\n' +
            _b64_lines(b'%PDF-1.4\n' + rng.randbytes(5000)) +
            b'--' + mix + b'--\r\n', _dt(2023, 12, 24, 18, 0, 0, _tz(1)))

    # RFC 2047 subjects, 8-bit bodies in two charsets.
    add(_hdr('=?UTF-8?B?%s?=' % base64.b64encode(
        'Grüße aus Köln – 日本語のテスト'.encode()).decode(),
        frm='=?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.de>', extra=[
            'MIME-Version: 1.0',
            'Content-Type: text/plain; charset=utf-8',
            'Content-Transfer-Encoding: 8bit']) + CRLF +
        'Hallo Bob,\r\nschöne Grüße, ça va? Ünïcödé: 日本語 ✓ 🦓\r\n'
        .encode(), _dt(2024, 5, 1, 8, 0, 0, _tz(-5)),
        '\\Answered \\Flagged $Label1')
    add(_hdr('=?ISO-8859-1?Q?Caf=E9_cr=E8me?=', extra=[
        'MIME-Version: 1.0',
        'Content-Type: text/plain; charset=iso-8859-1',
        'Content-Transfer-Encoding: 8bit']) + CRLF +
        'Café crème, señor, naïve façade.\r\n'.encode('latin-1'),
        # Dovecot replaces a future INTERNALDATE by "now", so no 2038 here.
        _dt(1970, 1, 2, 0, 0, 1))

    # CRLF lines of varying length, nothing bare.
    body = b''.join(bytes((0x21 + (i * 7 + j) % 90) for j in range(n)) + CRLF
                    for i, n in enumerate([0, 1, 2, 75, 76, 77, 78, 79, 80,
                                           500, 997, 998, 999, 1000, 4000,
                                           0, 0, 3]))
    add(_hdr('Lines of many lengths') + CRLF + body,
        _dt(1999, 12, 31, 23, 59, 59, _tz(5, 30)))

    add(_hdr('One byte body') + CRLF + b'x', _dt(2001, 9, 9, 1, 46, 40))
    add(_hdr('Empty body') + CRLF, _dt(2010, 6, 15))

    # Sizes around likely block boundaries.
    for total in (4095, 4096, 4097, 65535, 65536, 65537, 131072, 1048577):
        add(_padded('Exactly %d bytes' % total, total), _dt(2022, 7, 1))
    return msgs


def bulk_messages(rng, n):
    """n small messages; some contain GREP_WORD (in the body, or header)."""
    out = []
    for i in range(1, n + 1):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 40))]
        subject = 'bulk %d' % i
        if i % 7 == 3:
            words.insert(rng.randint(0, len(words)), GREP_WORD)
        if i % 50 == 0:
            subject += ' ' + GREP_WORD
        body = ' '.join(words).encode() + CRLF
        out.append((None, _dt(2020, 1, 1) + datetime.timedelta(hours=i),
                    _hdr(subject) + CRLF + body))
    return out


# How many messages the Bulk mailbox (grep, cp -r) holds.
DEFAULT_BULK = int(os.environ.get('IMAPFS_TEST_BULK', '2000'))


class Corpus:
    """The test mailboxes; after load(), each holds the server's copy."""

    def __init__(self, bulk=DEFAULT_BULK, big=True, seed=4711):
        self.rng = random.Random(seed)
        self.bulk = bulk
        self.big = big
        mb = lambda *lv, **kw: Mailbox(lv, **kw)
        self.mailboxes = [
            mb('INBOX'), mb('Archive'), mb('Archive', '2024'),
            mb('Entwürfe'), mb('日本語'), mb('Empty'),
            mb('Parent', noselect=True), mb('Parent', 'Child'),
            mb('Slash/Name'), mb('Pct%Name'),
        ]
        if bulk:
            self.mailboxes.append(mb('Bulk'))

    def __getitem__(self, path):
        for m in self.mailboxes:
            if m.path == path:
                return m
        raise KeyError(path)

    def _content(self, box):
        r = self.rng
        if box.path == 'INBOX':
            return corpus_messages(r, self.big)
        if box.path == 'Bulk':
            return bulk_messages(r, self.bulk)
        if box.path in ('Empty', 'Parent'):
            return []
        n = {'Archive': 3, 'Archive/2024': 2}.get(box.path, 1)
        return [(None, _dt(2024, 1 + i, 2, 10, 0, 0, _tz(2)),
                 _hdr('In %s #%d' % (box.path, i), extra=[
                     'Content-Type: text/plain; charset=utf-8',
                     'Content-Transfer-Encoding: 8bit']) + CRLF +
                 ('Message %d in "%s".\r\n' % (i, '/'.join(box.levels)))
                 .encode()) for i in range(n)]

    def load(self, dovecot, user='alice'):
        c = dovecot.client(user)
        try:
            for box in self.mailboxes:
                if box.path != 'INBOX' and not box.noselect:
                    imap_check(c._simple_command('CREATE',
                                                 imap_quote(box.server)),
                               'CREATE ' + box.server)
                msgs = self._content(box)
                if msgs:
                    multiappend(c, box.server, msgs)
            self.check_list(c)
            self.refresh(c)
        finally:
            c.logout()
        return self

    def check_list(self, c):
        listed = list_mailboxes(c)
        for box in self.mailboxes:
            attrs = {a.lower() for a in listed.get(box.server, ())}
            if box.server not in listed:
                raise FixtureError('LIST lacks %r: %r' % (box.server, listed))
            noselect = bool(attrs & {'\\noselect', '\\nonexistent'})
            if noselect != box.noselect:
                raise FixtureError('%r: \\Noselect expected %s, LIST says %s'
                                   % (box.server, box.noselect, attrs))

    def refresh(self, c):
        for box in self.mailboxes:
            if not box.noselect:
                box.messages = fetch_reference(c, box.server)

    def all_messages(self):
        for box in self.mailboxes:
            for msg in box.messages.values():
                yield box, msg


# ---------------------------------------------------------------------------
# Mounts

def _unescape_mountinfo(field):
    return re.sub(rb'\\([0-7]{3})', lambda m: bytes([int(m.group(1), 8)]),
                  field).decode(errors='surrogateescape')


def mount_entry(path):
    """The /proc/self/mountinfo fields of the mount at `path`, or None.

    Unlike os.path.ismount() this never touches the FUSE file system, so it
    cannot hang on a stuck daemon.
    """
    path = os.path.abspath(path)
    with open('/proc/self/mountinfo', 'rb') as f:
        for line in f:
            fields = line.split()
            if _unescape_mountinfo(fields[4]) == path:
                return fields
    return None


def is_mounted(path):
    return mount_entry(path) is not None


def fusermount_u(path):
    """Unmount; fall back to a lazy unmount. Returns a message or ''."""
    if not is_mounted(path):
        return ''
    r = subprocess.run(['fusermount3', '-u', path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    if r.returncode == 0 and not is_mounted(path):
        return ''
    msg = 'fusermount3 -u %s failed: %s' % (path, r.stdout.decode().strip())
    subprocess.run(['fusermount3', '-uz', path], timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return msg


def errno_mismatches(calls, want):
    """Runs each of {name: call}; returns {name: what happened} for those
    that did not fail with errno `want` (a returned fd is closed)."""
    wrong = {}
    for name, call in calls.items():
        try:
            fd = call()
        except OSError as e:
            if e.errno != want:
                wrong[name] = errno.errorcode.get(e.errno, e.errno)
        else:
            if isinstance(fd, int):
                os.close(fd)
            wrong[name] = 'succeeded'
    return wrong


def sanitizer_reports(text):
    return [m for m in SANITIZER_MARKERS if m in text]


def daemon_env(workdir, password=None, extra=None):
    """The environment for imapfs: sanitizers on, private cache dir."""
    env = dict(os.environ)
    env.pop('IMAPFS_PASSWORD', None)
    env['ASAN_OPTIONS'] = ':'.join(filter(None, [
        'halt_on_error=1', 'print_stacktrace=1', 'detect_leaks=1',
        os.environ.get('ASAN_OPTIONS')]))
    env['UBSAN_OPTIONS'] = ':'.join(filter(None, [
        'halt_on_error=1', 'print_stacktrace=1',
        os.environ.get('UBSAN_OPTIONS')]))
    env['XDG_CACHE_HOME'] = os.path.join(workdir, 'cache')
    env['LC_ALL'] = 'C.UTF-8'
    if password is not None:
        env['IMAPFS_PASSWORD'] = password
    env.update(extra or {})
    return env


# Mounts alive in this process, for the test watchdog (conftest.py).
ACTIVE_MOUNTS = set()


class Mount:
    """One imapfs process mounted at `mountpoint`.

    foreground=True runs `imapfs -f`; debug=True runs `imapfs -d` (which
    implies the foreground); foreground=False lets imapfs daemonize: then
    start() waits for the parent to exit 0 and finds the daemon by its
    command line (it holds our unique mountpoint path).
    stop() unmounts, waits for the process and checks that it exited 0
    without a sanitizer report; it raises AssertionError otherwise.
    """

    def __init__(self, url, mountpoint, options=(), password=None,
                 foreground=True, debug=False, workdir=None, env=None,
                 args=()):
        self.url = url
        self.mountpoint = os.path.abspath(mountpoint)
        self.options = list(options)
        self.foreground = foreground
        self.debug = debug
        self.workdir = workdir or tempfile.mkdtemp(prefix='imapfs-mnt-')
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.mountpoint, exist_ok=True)
        self.stderr_path = os.path.join(self.workdir, 'imapfs.stderr')
        self.asan_log = os.path.join(self.workdir, 'asan')
        extra = dict(env or {})
        if not foreground and not debug:
            # A daemon's stderr is gone after it detaches: log to files.
            extra['ASAN_OPTIONS'] = 'log_path=' + self.asan_log
            extra['UBSAN_OPTIONS'] = 'log_path=' + self.asan_log
        self.env = daemon_env(self.workdir, password)
        for k, v in extra.items():
            if k.endswith('SAN_OPTIONS') and k in self.env:
                v = self.env[k] + ':' + v
            self.env[k] = v
        self.args = list(args)
        self.proc = None
        self.daemon_pid = None
        self.returncode = None
        self.stopped = False

    def command(self):
        cmd = [imapfs_bin()]
        if self.debug:
            cmd.append('-d')
        elif self.foreground:
            cmd.append('-f')
        if self.options:
            cmd += ['-o', ','.join(self.options)]
        return cmd + self.args + [self.url, self.mountpoint]

    def stderr(self):
        try:
            with open(self.stderr_path, 'rb') as f:
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    def sanitizer_logs(self):
        out = ''
        d = os.path.dirname(self.asan_log)
        for name in sorted(os.listdir(d)):
            if name.startswith(os.path.basename(self.asan_log) + '.'):
                with open(os.path.join(d, name), errors='replace') as f:
                    out += f.read()
        return out

    @property
    def pid(self):
        return self.daemon_pid if self.daemon_pid else (
            self.proc.pid if self.proc else None)

    def start(self, timeout=20):
        if is_mounted(self.mountpoint):
            raise FixtureError('%s is already a mount point' % self.mountpoint)
        with open(self.stderr_path, 'wb') as err:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=err,
                stderr=err, env=self.env)
        ACTIVE_MOUNTS.add(self)
        if self.foreground or self.debug:
            wait_for(lambda: is_mounted(self.mountpoint)
                     or self.proc.poll() is not None, timeout)
            if not is_mounted(self.mountpoint):
                self._abort()
                raise FixtureError('imapfs did not mount %s (exit %s):\n%s'
                                   % (self.mountpoint, self.returncode,
                                      self.stderr()))
            return self
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._abort()
            raise FixtureError('imapfs (daemon mode) did not return within '
                               '%ds:\n%s' % (timeout, self.stderr()))
        if self.returncode != 0 or not is_mounted(self.mountpoint):
            self._abort()
            raise FixtureError('imapfs (daemon mode) exited %d, mounted: %s:'
                               '\n%s' % (self.returncode,
                                         is_mounted(self.mountpoint),
                                         self.stderr()))
        self.daemon_pid = find_daemon(self.mountpoint)
        return self

    def _abort(self):
        """Emergency cleanup: unmount lazily, kill what we started."""
        subprocess.run(['fusermount3', '-uz', self.mountpoint],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.returncode = self.proc.wait()
        if self.daemon_pid and pid_alive(self.daemon_pid):
            os.kill(self.daemon_pid, signal.SIGKILL)
        ACTIVE_MOUNTS.discard(self)
        self.stopped = True

    def kill(self):
        """Watchdog: make hung file system calls fail, then clean up."""
        pid = self.pid
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        self._abort()

    def wait(self, timeout=20):
        """Wait for the imapfs process to end; its exit status or None."""
        if self.daemon_pid:
            wait_for(lambda: not pid_alive(self.daemon_pid), timeout)
            return None if pid_alive(self.daemon_pid) else 0
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout=20, check=True):
        """Unmount (unless already gone), wait, and check the exit."""
        if self.stopped:
            return
        problems = []
        msg = fusermount_u(self.mountpoint)
        if msg:
            problems.append(msg)
        self._finish(timeout, problems, check)

    def _finish(self, timeout, problems, check=True):
        status = self.wait(timeout)
        if status is None:
            problems.append('imapfs (pid %s) still running %ds after the '
                            'unmount; killed' % (self.pid, timeout))
            self.kill()
        elif not self.daemon_pid and status != 0:
            problems.append('imapfs exited with status %d' % status)
        if is_mounted(self.mountpoint):
            problems.append('%s still mounted' % self.mountpoint)
            subprocess.run(['fusermount3', '-uz', self.mountpoint])
        text = self.stderr() + self.sanitizer_logs()
        found = sanitizer_reports(text)
        if found:
            problems.append('sanitizer report (%s)' % ', '.join(found))
        ACTIVE_MOUNTS.discard(self)
        self.stopped = True
        if problems and check:
            raise AssertionError('%s\n--- imapfs stderr (tail):\n%s' % (
                '; '.join(problems), text[-6000:]))

    def signal(self, sig, timeout=20, check=True):
        """Send `sig` to imapfs and expect it to unmount and exit 0."""
        os.kill(self.pid, sig)
        problems = []
        wait_for(lambda: not is_mounted(self.mountpoint), timeout)
        if is_mounted(self.mountpoint):
            problems.append('still mounted %ds after signal %d'
                            % (timeout, sig))
        self._finish(timeout, problems, check)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(check=exc[0] is None)


def settle_watcher(m, quiet=1.5, timeout=30):
    """Waits until the watcher of mount `m` (started with debug=True)
    idles and no command went out for `quiet` seconds: its connections
    log in and examine what was just used in their own time, late on a
    loaded machine, and would count against a test's commands."""
    def sent():
        return len(re.findall(r'\bC: A\d+ ', m.stderr()))
    wait_for(lambda: re.search(r'C: A\d+ IDLE', m.stderr()), timeout)
    last = [sent(), time.monotonic()]

    def still():
        n = sent()
        if n != last[0]:
            last[:] = [n, time.monotonic()]
        return time.monotonic() - last[1] >= quiet
    wait_for(still, timeout, interval=0.2)


class HelperMount(Mount):
    """Mounted by `command` (mount(8), which runs /sbin/mount.imapfs);
    stop() unmounts with umount(8), then checks the exit as Mount does."""

    def __init__(self, command, mountpoint, **kw):
        super().__init__(None, mountpoint, foreground=False, **kw)
        self._command = list(command)

    def command(self):
        return self._command

    def stop(self, timeout=20, check=True):
        if self.stopped:
            return
        problems = []
        if is_mounted(self.mountpoint):
            r = subprocess.run(['umount', self.mountpoint], timeout=30,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
            if r.returncode != 0 or is_mounted(self.mountpoint):
                problems.append('umount %s failed: %s' % (
                    self.mountpoint, r.stdout.decode().strip()))
                fusermount_u(self.mountpoint)
        self._finish(timeout, problems, check)


class WrappedMount(Mount):
    """imapfs started through `wrapper`, a command that sets something up
    (another user, a umask, a namespace) and then execs its arguments."""

    def __init__(self, wrapper, url, mountpoint, **kw):
        super().__init__(url, mountpoint, **kw)
        self.wrapper = list(wrapper)

    def command(self):
        return self.wrapper + super().command()


def pid_alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
        return state not in ('Z', 'X')
    except (OSError, IndexError):
        return False


# The daemon's names: mount(8) runs it as its helper.
DAEMON_NAMES = (b'imapfs', b'mount.imapfs', b'mount.fuse.imapfs')


def find_daemon(mountpoint):
    """The pid of the imapfs process serving `mountpoint` (by cmdline)."""
    mine = None
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if (argv and os.path.basename(argv[0]) in DAEMON_NAMES
                and mountpoint.encode() in argv):
            if mine is not None:
                raise FixtureError('two imapfs processes serve %s'
                                   % mountpoint)
            mine = int(entry)
    if mine is None:
        raise FixtureError('no imapfs process serves %s' % mountpoint)
    return mine


def run_imapfs(args, workdir, password=None, env=None, timeout=30,
               mountpoint=None):
    """Run imapfs to completion (for failure cases).

    Returns a CompletedProcess with .stderr as text. If it is still running
    after `timeout` (it mounted when it should not have), it is unmounted
    and killed and .timed_out is True.
    """
    os.makedirs(workdir, exist_ok=True)
    e = daemon_env(workdir, password, env)
    out = os.path.join(workdir, 'run.out')
    err = os.path.join(workdir, 'run.err')
    with open(out, 'wb') as o, open(err, 'wb') as er:
        p = subprocess.Popen([imapfs_bin()] + list(args),
                             stdin=subprocess.DEVNULL, stdout=o, stderr=er,
                             env=e)
    timed_out = False
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        if mountpoint:
            subprocess.run(['fusermount3', '-uz', mountpoint])
        p.kill()
        rc = p.wait()
    r = subprocess.CompletedProcess(
        p.args, rc, open(out, 'rb').read().decode(errors='replace'),
        open(err, 'rb').read().decode(errors='replace'))
    r.timed_out = timed_out
    return r


def tool(*cmd, check=True, timeout=120, input=None, cwd=None):
    """Run a real command-line tool; CompletedProcess with bytes output.

    LC_ALL=C.UTF-8 so that error texts are the English strerror() ones.
    """
    env = dict(os.environ, LC_ALL='C.UTF-8')
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, env=env,
                       input=input, cwd=cwd)
    if check and r.returncode != 0:
        raise AssertionError('%s exited %d: %s' % (
            ' '.join(str(c) for c in cmd), r.returncode,
            r.stderr.decode(errors='replace')))
    return r
