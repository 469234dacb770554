# SPDX-License-Identifier: GPL-2.0-or-later
"""Changes through the mount (DESIGN.md, "What file operations do on the
server"): new messages are APPENDed at close, rename is UID MOVE, rm is
UID STORE \\Deleted + UID EXPUNGE of that UID, mkdir/rmdir/rename of
directories are CREATE/DELETE/RENAME, user.imap.flags is UID STORE FLAGS,
and a `ro` mount changes nothing.

Every test drives real tools (cp, mv, rm, rsync, setfattr, ...) or plain
system calls on a mount of a private Dovecot, then checks the server's
exact state through imaplib, the independent second client: bytes,
flags, INTERNALDATE, UIDs, the mailbox list. Commands are read from the
-d trace ("C: <tag> <command>"). No test writes to the shared corpus
server: each gets a fresh one (fixtures below).
"""

import calendar
import collections
import errno
import hashlib
import os
import random
import re
import shutil
import stat

import pytest

import imapfs_fixtures as F
import tcp_proxy
from imapfs_fixtures import tool

FLAGS = 'user.imap.flags'
CHANGES = r'^(?:UID )?(?:STORE|APPEND|EXPUNGE|MOVE|COPY|CREATE|DELETE|' \
    r'RENAME|SELECT)\b'


# -- servers ---------------------------------------------------------------

def _server(ca, corpus=True, check=None, **kw):
    d = F.Dovecot(ca, **kw)
    try:
        d.start()
        d.corpus = F.Corpus(bulk=0, big=False).load(d) if corpus else None
        if check:
            check(d)
        yield d
    finally:
        d.stop()


@pytest.fixture
def srv(fresh_server):
    """A private server with the small corpus; the tests change it."""
    return fresh_server


@pytest.fixture
def quota_server(ca):
    """64 KiB of storage: a larger APPEND gets NO [OVERQUOTA]."""
    yield from _server(ca, corpus=False, quota='64K')


APPENDLIMIT = 100000


@pytest.fixture
def appendlimit_server(ca):
    """Advertises APPENDLIMIT=100000 and refuses above 100 KiB ([LIMIT])."""
    yield from _server(ca, corpus=False, max_mail_size='100k',
                       imap_capability='+APPENDLIMIT=%d' % APPENDLIMIT)


@pytest.fixture
def limit_server(ca):
    """Refuses an APPEND above 100 KiB (NO [LIMIT]) without advertising
    APPENDLIMIT: imapfs only learns it from the answer."""
    yield from _server(ca, corpus=False, max_mail_size='100k')


@pytest.fixture
def trash_server(ca):
    """The corpus plus "Trash" with the \\Trash special use."""
    yield from _server(ca, trash=True)


HIDDEN = {
    'no-move': ('MOVE',),
    'no-move-uidplus': ('MOVE', 'UIDPLUS'),
    'no-literal-plus': ('LITERAL+',),
    'no-condstore': ('CONDSTORE', 'QRESYNC'),
}


def _check_hidden(key):
    hidden = HIDDEN[key]

    def check(d):
        d.hidden = key
        pre, post = d.capabilities()
        for caps, when in ((pre, 'before'), (post, 'after')):
            if set(hidden) & caps or 'IMAP4REV1' not in caps:
                raise F.FixtureError('CAPABILITY %s login: %s (should lack '
                                     '%s)' % (when, sorted(caps), hidden))
    return check


@pytest.fixture
def capped_server(ca, request):
    """The corpus server advertising less (request.param: a HIDDEN key).
    Dovecot still accepts the hidden commands: only what imapfs chooses
    to send tells whether it honours the capability list."""
    yield from _server(ca, check=_check_hidden(request.param),
                       imap_capability=F.capabilities_without(
                           *HIDDEN[request.param]))


@pytest.fixture
def plain_srv(ca):
    """No TLS, so a proxy in between can see the commands."""
    yield from _server(ca, tls=False)


def _proxy(server):
    p = tcp_proxy.CuttingProxy(server.imap_port).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def proxy(plain_srv):
    yield from _proxy(plain_srv)


@pytest.fixture
def plain_no_move(ca):
    """plain_srv without MOVE: moves go by COPY, STORE and UID EXPUNGE."""
    yield from _server(ca, tls=False, check=_check_hidden('no-move'),
                       imap_capability=F.capabilities_without('MOVE'))


@pytest.fixture
def no_move_proxy(plain_no_move):
    yield from _proxy(plain_no_move)


# -- helpers ---------------------------------------------------------------

def rw(mount, server, *more, debug=True, **kw):
    """Mount `server` read-write with the -d trace."""
    return mount(server=server, options=['cafile=' + server.cafile] +
                 list(more), debug=debug, **kw)


def sent(m, pattern=None):
    """The client commands (tag stripped) in mount m's -d trace."""
    out = []
    for line in m.stderr().splitlines():
        c = re.search(r'\bC: A\d+ (.*)$', line)
        if c and (pattern is None or re.search(pattern, c.group(1))):
            out.append(c.group(1))
    return out


def uid_in_set(uid, uidset):
    for part in uidset.split(','):
        lo, _, hi = part.partition(':')
        lo = 2 ** 32 if lo == '*' else int(lo)
        hi = lo if not hi else (2 ** 32 if hi == '*' else int(hi))
        if min(lo, hi) <= uid <= max(lo, hi):
            return True
    return False


def body_fetches(m, uid):
    """Traced commands that fetch the content of `uid`."""
    return [c for c in sent(m, r'^UID FETCH \S+ .*(?:BODY(?:\.PEEK)?\['
                               r'|BINARY(?:\.PEEK)?\[|RFC822(?:\.TEXT)?'
                               r'(?![.\w]))')
            if uid_in_set(uid, c.split()[2])]


def flagset(msg):
    return frozenset(msg.flags) - {'\\Recent'}


def with_client(server, fn):
    c = server.client()
    try:
        return fn(c)
    finally:
        c.logout()


def box(server, name, bodies=True):
    """{uid: Message} of mailbox `name` on the server now (EXAMINE)."""
    return with_client(server, lambda c: F.fetch_reference(c, name, bodies))


def mailboxes(server):
    return with_client(server, F.list_mailboxes)


def selectable(listed):
    return {n for n, a in listed.items()
            if not {'\\noselect', '\\nonexistent'} & {x.lower() for x in a}}


def account_full(server):
    """{mailbox: {uid: Message}} for every selectable mailbox."""
    def fetch(c):
        return {n: F.fetch_reference(c, n)
                for n in selectable(F.list_mailboxes(c))}
    return with_client(server, fetch)


def account(server):
    """{mailbox: Counter((bytes, flags))} for every selectable mailbox."""
    return {n: collections.Counter((msg.data, flagset(msg))
                                   for msg in msgs.values())
            for n, msgs in account_full(server).items()}


def state(server):
    """The whole account without bodies: LIST and (uid, size, date, flags)."""
    def fetch(c):
        listed = F.list_mailboxes(c)
        return listed, {n: {u: (m.size, m.internaldate, flagset(m))
                            for u, m in F.fetch_reference(
                                c, n, bodies=False).items()}
                        for n in selectable(listed)}
    return with_client(server, fetch)


def copies(server, data):
    """Where the server holds a message with exactly these bytes:
    [(mailbox, uid, flags)]."""
    found = []
    for name, msgs in account_full(server).items():
        for uid, msg in msgs.items():
            if msg.data == data:
                found.append((name, uid, flagset(msg)))
    return found


def uidnext(server, name):
    def fetch(c):
        data = F.imap_check(c.status(F.imap_quote(name), '(UIDNEXT)'),
                            'STATUS')
        return int(re.search(rb'UIDNEXT (\d+)', data[0]).group(1))
    return with_client(server, fetch)


def imap(server, *commands):
    """Run (command, args...) tuples as the second client, checked."""
    def run(c):
        for cmd in commands:
            F.imap_check(c._simple_command(cmd[0], *cmd[1:]), ' '.join(cmd))
    with_client(server, run)


def other_client_flags_deleted(server, mailbox, uid):
    """Another client sets \\Deleted without expunging (no CLOSE)."""
    def run(c):
        F.imap_check(c.select(F.imap_quote(mailbox)), 'SELECT')
        F.imap_check(c.uid('STORE', str(uid), '+FLAGS.SILENT', r'(\Deleted)'),
                     'STORE')
    with_client(server, run)


def append(server, mailbox, data, flags=None):
    with_client(server, lambda c: F.imap_check(
        c.append(F.imap_quote(mailbox), flags, None, data), 'APPEND'))


def emls(path):
    """The message names listed in directory `path`."""
    return {n for n in os.listdir(path) if re.fullmatch(r'\d+\.eml', n)}


def uid_of(name):
    return int(name.split('.')[0])


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def message(subject, lines=20, nl=b'\r\n'):
    """A small RFC 5322 message, unique per subject."""
    head = [b'From: Carol <carol@example.org>', b'To: alice@example.org',
            b'Subject: ' + subject.encode(),
            b'Date: Tue, 4 Jun 2024 10:00:00 +0000',
            b'Message-ID: <%s@write.imapfs.test>' %
            hashlib.sha1(subject.encode()).hexdigest()[:16].encode()]
    body = [b'%04d %s' % (i, subject.encode()) for i in range(lines)]
    return nl.join(head) + nl + nl + nl.join(body) + nl


def create_write_close(path, data, before_close=None):
    """open(O_CREAT|O_EXCL) + write + optional hook(fd) + close; the
    close's error, if any, is raised."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:1 << 20]):]
        if before_close:
            before_close(fd)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)


def crlf(data):
    return re.sub(rb'(?<!\r)\n', b'\r\n', data)


def raises_errno(call, *codes):
    """Run call(); it must fail with one of the errno `codes`."""
    try:
        call()
    except OSError as e:
        assert e.errno in codes, 'expected %s, got %s' % (
            '/'.join(errno.errorcode[c] for c in codes),
            errno.errorcode.get(e.errno, e.errno))
        return e.errno
    raise AssertionError('succeeded; expected %s'
                         % '/'.join(errno.errorcode[c] for c in codes))


def corpus_msg(server, mailbox, flags=None):
    """A corpus message of `mailbox` (the first, or the first with
    exactly `flags`)."""
    msgs = server.corpus[mailbox].messages
    for uid in sorted(msgs):
        if flags is None or flagset(msgs[uid]) == frozenset(flags):
            return msgs[uid]
    raise KeyError(flags)


# -- the fixtures this file needs ------------------------------------------

def test_fixture_quota_server_answers_overquota(quota_server):
    c = quota_server.client()
    try:
        typ, data = c.append('INBOX', None, None, message('big', 12000))
        assert typ == 'NO' and b'[OVERQUOTA]' in data[0], data
        assert c.append('INBOX', None, None, message('small'))[0] == 'OK'
    finally:
        c.logout()


def test_fixture_appendlimit_server(appendlimit_server, limit_server):
    pre, post = appendlimit_server.capabilities()
    assert 'APPENDLIMIT=%d' % APPENDLIMIT in post
    assert not [c for c in limit_server.capabilities()[1]
                if c.startswith('APPENDLIMIT')]
    for d in (appendlimit_server, limit_server):
        c = d.client()
        try:
            typ, data = c.append('INBOX', None, None, b'x' * 150000)
            assert typ == 'NO' and b'[LIMIT]' in data[0], data
            assert c.append('INBOX', None, None, b'y' * 99000)[0] == 'OK'
        finally:
            c.logout()


@pytest.mark.parametrize('capped_server', list(HIDDEN), indirect=True)
def test_fixture_hidden_capabilities(capped_server):
    """The fixture itself checks pre- and post-login CAPABILITY; here the
    rest of the list must still be there."""
    pre, post = capped_server.capabilities()
    hidden = set(HIDDEN[capped_server.hidden])
    want = {c.upper() for c in F.DOVECOT_CAPABILITIES} - hidden
    assert post == want
    assert want <= pre


def test_fixture_trash_special_use(trash_server):
    listed = mailboxes(trash_server)
    assert '\\Trash' in listed['Trash']


def test_fixture_proxy_passes_and_cuts(plain_srv, proxy):
    import imaplib

    def client():
        c = imaplib.IMAP4('127.0.0.1', proxy.port, timeout=10)
        c.login('alice', F.USERS['alice'])
        return c

    c = client()
    assert c.select('INBOX')[0] == 'OK'
    proxy.arm(rb' APPEND ', after=100)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        c.append('INBOX', None, None, message('cut mid literal', 200))
    assert proxy.fired.wait(5) and proxy.cuts == 1
    data = message('reply lost', 200)
    c = client()
    proxy.arm(rb' APPEND ', reply=True)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        c.append('INBOX', None, None, data)
    assert proxy.cuts == 2
    inbox = box(plain_srv, 'INBOX')
    assert [m.data for m in inbox.values()].count(data) == 1
    assert not [m for m in inbox.values() if b'cut mid literal' in m.data]
    assert proxy.accepted == 2


# -- new messages ----------------------------------------------------------

def test_cp_appends_at_close(srv, mount, tmp_path):
    m = rw(mount, srv)
    data = message('cp into Archive')
    (tmp_path / 'new.eml').write_bytes(data)
    before = box(srv, 'Archive')
    expect_uid = uidnext(srv, 'Archive')
    arch = os.path.join(m.mountpoint, 'Archive')
    tool('cp', tmp_path / 'new.eml', arch + '/')
    after = box(srv, 'Archive')
    new = {u: msg for u, msg in after.items() if u not in before}
    assert [msg.data for msg in new.values()] == [data]
    uid = next(iter(new))
    assert uid == expect_uid
    assert flagset(new[uid]) == frozenset()
    assert {u: msg.data for u, msg in after.items() if u != uid} == \
        {u: msg.data for u, msg in before.items()}
    listed = os.listdir(arch)
    assert '%d.eml' % uid in listed
    assert 'new.eml' not in listed
    assert read(os.path.join(arch, '%d.eml' % uid)) == data
    assert os.stat(os.path.join(arch, '%d.eml' % uid)).st_size == len(data)
    assert len(sent(m, r'^APPEND ')) == 1


def test_cp_several_files_each_once(srv, mount, tmp_path):
    m = rw(mount, srv)
    datas = [message('first of two'), message('second of two', 40)]
    for i, d in enumerate(datas):
        (tmp_path / ('%s.eml' % 'ab'[i])).write_bytes(d)
    before = emls(os.path.join(m.mountpoint, 'Archive'))
    tool('cp', tmp_path / 'a.eml', tmp_path / 'b.eml', 'Archive/',
         cwd=m.mountpoint)
    after = box(srv, 'Archive')
    assert sorted(msg.data for msg in after.values()
                  if msg.filename not in before) == sorted(datas)
    assert len(after) == len(before) + 2
    listed = emls(os.path.join(m.mountpoint, 'Archive'))
    assert listed == {msg.filename for msg in after.values()}
    assert not {'a.eml', 'b.eml'} & set(
        os.listdir(os.path.join(m.mountpoint, 'Archive')))


def test_cat_redirect_appends_once(srv, mount):
    imap(srv, ('CREATE', 'Drafts'))
    m = rw(mount, srv)
    data = message('cat > Drafts/x.eml', lines=10000)     # several writes
    assert len(data) > 3 * 65536
    tool('sh', '-c', 'cat > Drafts/x.eml', input=data, cwd=m.mountpoint)
    drafts = box(srv, 'Drafts')
    assert [msg.data for msg in drafts.values()] == [data]
    uid = next(iter(drafts))
    assert set(os.listdir(os.path.join(m.mountpoint, 'Drafts'))) == \
        {'%d.eml' % uid, '%d.parts' % uid}
    assert len(sent(m, r'^APPEND ')) == 1


def test_rsync_maildir_appends_each_once(srv, mount, tmp_path):
    cur = tmp_path / 'maildir' / 'cur'
    cur.mkdir(parents=True)
    datas = {}
    for i in range(6):
        name = '17000000%02d.M%dP4711.host:2,%s' % (i, i, 'S' if i % 2 else '')
        datas[name] = message('rsync #%d' % i, lines=5 + 50 * i)
        (cur / name).write_bytes(datas[name])
        os.chmod(cur / name, 0o644)
        os.utime(cur / name, (1600000000 + i * 3600,) * 2)
    m = rw(mount, srv)
    before = box(srv, 'Archive')
    r = tool('rsync', '-a', str(cur) + '/', 'Archive/', cwd=m.mountpoint,
             check=False)
    assert r.returncode == 0, r.stderr.decode(errors='replace')
    after = box(srv, 'Archive')
    new = [msg.data for u, msg in after.items() if u not in before]
    assert sorted(new) == sorted(datas.values())
    listed = set(os.listdir(os.path.join(m.mountpoint, 'Archive')))
    assert listed == {msg.filename for msg in after.values()} | \
        {'%d.parts' % u for u in after} | {'2024'}
    assert len(sent(m, r'^APPEND ')) == len(datas)


@pytest.mark.parametrize('data', [
    b'Subject: bare LF\n\nline 1\nline 2\n\nend\n',
    b'Subject: CRLF\r\n\r\nline 1\r\nline 2\r\n',
    b'Subject: mixed\r\nX-A: b\n\r\nCRLF\r\nLF\nCR alone\rstays\r\n\n',
], ids=['lf', 'crlf', 'mixed'])
def test_bare_lf_is_sent_as_crlf(srv, mount, data):
    m = rw(mount, srv)
    create_write_close(os.path.join(m.mountpoint, 'Archive', 'n.eml'), data)
    want = crlf(data)
    new = [msg for u, msg in box(srv, 'Archive').items()
           if u not in srv.corpus['Archive'].messages]
    assert [msg.data for msg in new] == [want]
    path = os.path.join(m.mountpoint, 'Archive', new[0].filename)
    assert os.stat(path).st_size == len(want)
    assert read(path) == want


WHEN = calendar.timegm((2021, 5, 6, 7, 8, 9))


def test_mtime_set_before_close_is_internaldate(srv, mount):
    m = rw(mount, srv)
    data = message('dated by futimens')
    create_write_close(os.path.join(m.mountpoint, 'INBOX', 'd.eml'), data,
                       lambda fd: os.utime(fd, (WHEN, WHEN)))
    new = [msg for u, msg in box(srv, 'INBOX').items()
           if u not in srv.corpus['INBOX'].messages]
    assert [msg.data for msg in new] == [data]
    assert new[0].internaldate == WHEN
    st = os.stat(os.path.join(m.mountpoint, 'INBOX', new[0].filename))
    assert int(st.st_mtime) == WHEN


def test_cp_p_keeps_mtime_as_internaldate(srv, mount, tmp_path):
    m = rw(mount, srv)
    src = tmp_path / 'old.eml'
    data = message('cp -p keeps the date')
    src.write_bytes(data)
    os.chmod(src, 0o644)
    os.utime(src, (WHEN + 86400, WHEN))
    r = tool('cp', '-p', src, 'Archive/', cwd=m.mountpoint, check=False)
    assert r.returncode == 0, r.stderr.decode(errors='replace')
    new = [msg for u, msg in box(srv, 'Archive').items()
           if u not in srv.corpus['Archive'].messages]
    assert [(msg.data, msg.internaldate) for msg in new] == [(data, WHEN)]


@pytest.mark.parametrize('how', ['fd', 'path'])
def test_flags_set_before_close(srv, mount, how):
    m = rw(mount, srv)
    path = os.path.join(m.mountpoint, 'Archive', 'f.eml')
    data = message('flagged before close (%s)' % how)
    value = b'\\Flagged $Label1 \\Seen'
    create_write_close(path, data, lambda fd: os.setxattr(
        fd if how == 'fd' else path, FLAGS, value))
    new = [msg for u, msg in box(srv, 'Archive').items()
           if u not in srv.corpus['Archive'].messages]
    assert [(msg.data, flagset(msg)) for msg in new] == \
        [(data, frozenset({'\\Flagged', '$Label1', '\\Seen'}))]
    got = os.getxattr(os.path.join(m.mountpoint, 'Archive', new[0].filename),
                      FLAGS).decode().split()
    assert sorted(got) == sorted(value.decode().split())


def test_empty_file_is_not_appended(srv, mount):
    m = rw(mount, srv)
    before = state(srv)
    nxt = uidnext(srv, 'Archive')
    fd = os.open(os.path.join(m.mountpoint, 'Archive', 'empty.eml'),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)
    assert state(srv) == before
    assert uidnext(srv, 'Archive') == nxt
    assert sent(m, r'^APPEND ') == []
    assert emls(os.path.join(m.mountpoint, 'Archive')) == \
        {msg.filename for msg in srv.corpus['Archive'].messages.values()}


def test_50_mb_message(srv, mount, tmp_path):
    m = rw(mount, srv, debug=False)
    line = b'%08d ' + b'0123456789abcdefghijklmnopqrstuvwxyz' * 2 + b'\r\n'
    head = message('fifty megabytes', lines=1)
    n = (50 * 1024 * 1024 - len(head)) // len(line % 0)
    data = head + b''.join(line % i for i in range(n))
    src = tmp_path / 'big.eml'
    src.write_bytes(data)
    tool('cp', src, 'Archive/', cwd=m.mountpoint, timeout=170)
    src.unlink()
    want = hashlib.sha256(data).hexdigest()
    size = len(data)
    del data

    def fetch(c):
        F.imap_check(c.select('Archive', readonly=True), 'EXAMINE')
        typ, d = c.uid('FETCH', '%d:*' % (max(
            srv.corpus['Archive'].messages) + 1), '(RFC822.SIZE BODY.PEEK[])')
        F.imap_check((typ, d), 'FETCH')
        return [hashlib.sha256(x[1]).hexdigest() for x in d
                if isinstance(x, tuple)], d[0][0]
    got, meta = with_client(srv, fetch)
    assert got == [want]
    assert b'RFC822.SIZE %d' % size in meta
    names = emls(os.path.join(m.mountpoint, 'Archive'))
    new = max(names, key=uid_of)
    assert os.stat(os.path.join(m.mountpoint, 'Archive', new)).st_size == size


def test_append_over_quota_is_edquot(quota_server, mount):
    m = rw(mount, quota_server)
    inbox = os.path.join(m.mountpoint, 'INBOX')
    raises_errno(lambda: create_write_close(
        os.path.join(inbox, 'big.eml'), message('over quota', 12000)),
        errno.EDQUOT)
    assert box(quota_server, 'INBOX') == {}
    assert emls(inbox) == set()
    small = message('fits')
    create_write_close(os.path.join(inbox, 'small.eml'), small)
    assert [msg.data for msg in box(quota_server, 'INBOX').values()] == \
        [small]


def test_append_above_appendlimit_is_efbig(appendlimit_server, mount):
    srv = appendlimit_server
    m = rw(mount, srv)
    inbox = os.path.join(m.mountpoint, 'INBOX')
    big = message('above the limit', lines=8000)
    assert len(big) > APPENDLIMIT
    raises_errno(lambda: create_write_close(os.path.join(inbox, 'a.eml'),
                                            big), errno.EFBIG)
    # Below the limit as written, above it once every LF is CRLF.
    lf = b'Subject: grows\n\n' + b'x\n' * 48000
    assert len(lf) < APPENDLIMIT < len(crlf(lf))
    raises_errno(lambda: create_write_close(os.path.join(inbox, 'b.eml'),
                                            lf), errno.EFBIG)
    assert sent(m, r'^APPEND ') == [], 'refused before sending'
    assert box(srv, 'INBOX') == {}
    fits = message('below the limit', lines=2000)
    assert len(fits) < APPENDLIMIT
    create_write_close(os.path.join(inbox, 'c.eml'), fits)
    assert [msg.data for msg in box(srv, 'INBOX').values()] == [fits]
    assert len(sent(m, r'^APPEND ')) == 1


def test_append_refused_by_server_is_eio(limit_server, mount):
    m = rw(mount, limit_server)
    path = os.path.join(m.mountpoint, 'INBOX', 'big.eml')
    # NO [LIMIT] is none of the answers with an errno of their own: EIO
    # (EFBIG would say the same more precisely).
    raises_errno(lambda: create_write_close(
        path, message('refused', lines=12000)), errno.EIO, errno.EFBIG)
    assert len(sent(m, r'^APPEND ')) >= 1
    assert box(limit_server, 'INBOX') == {}
    assert emls(os.path.dirname(path)) == set()


def test_append_to_vanished_mailbox_is_enoent(srv, mount):
    imap(srv, ('CREATE', 'Vanish'))
    # One connection, moved on to INBOX before the DELETE: Dovecot answers
    # an APPEND to the mailbox a session has selected, deleted meanwhile
    # by another, with [SERVERBUG] (an honest EIO), not [TRYCREATE].
    m = rw(mount, srv, 'connections=1')
    d = os.path.join(m.mountpoint, 'Vanish')
    assert os.listdir(d) == []
    data = message('into a mailbox that goes away')
    fd = os.open(os.path.join(d, 'x.eml'), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        assert emls(os.path.join(m.mountpoint, 'INBOX'))
        imap(srv, ('DELETE', 'Vanish'))
    finally:
        raises_errno(lambda: os.close(fd), errno.ENOENT)
    assert 'Vanish' not in mailboxes(srv)
    assert copies(srv, data) == []


# -- moves -----------------------------------------------------------------

def test_mv_is_uid_move(srv, mount):
    src = corpus_msg(srv, 'INBOX', {'\\Answered', '\\Flagged', '$Label1'})
    expect_uid = uidnext(srv, 'Archive')
    m = rw(mount, srv)
    root = m.mountpoint
    assert src.filename in os.listdir(os.path.join(root, 'INBOX'))
    tool('mv', 'INBOX/' + src.filename, 'Archive/', cwd=root)
    assert sent(m, r'^UID MOVE %d ' % src.uid)
    assert not sent(m, r'^APPEND |^UID COPY ')
    inbox, arch = box(srv, 'INBOX'), box(srv, 'Archive')
    assert src.uid not in inbox
    new = {u: msg for u, msg in arch.items()
           if u not in srv.corpus['Archive'].messages}
    assert list(new) == [expect_uid]
    moved = new[expect_uid]
    assert (moved.data, flagset(moved), moved.internaldate) == \
        (src.data, flagset(src), src.internaldate)
    # The caches follow at once.
    raises_errno(lambda: os.stat(os.path.join(root, 'INBOX', src.filename)),
                 errno.ENOENT)
    assert src.filename not in os.listdir(os.path.join(root, 'INBOX'))
    name = '%d.eml' % expect_uid
    assert name in os.listdir(os.path.join(root, 'Archive'))
    assert read(os.path.join(root, 'Archive', name)) == src.data


def test_mv_onto_existing_uid_keeps_both(srv, mount):
    src = srv.corpus['INBOX'].messages[1]
    there = srv.corpus['Archive'].messages[1]
    assert src.data != there.data
    expect_uid = uidnext(srv, 'Archive')
    m = rw(mount, srv)
    root = m.mountpoint
    assert read(os.path.join(root, 'Archive', '1.eml')) == there.data
    tool('mv', 'INBOX/1.eml', 'Archive/', cwd=root)
    arch = box(srv, 'Archive')
    assert arch[1].data == there.data
    assert arch[expect_uid].data == src.data
    assert set(arch) == set(srv.corpus['Archive'].messages) | {expect_uid}
    assert 1 not in box(srv, 'INBOX')
    assert read(os.path.join(root, 'Archive', '1.eml')) == there.data
    assert os.stat(os.path.join(root, 'Archive', '1.eml')).st_size == \
        len(there.data)
    assert read(os.path.join(root, 'Archive', '%d.eml' % expect_uid)) == \
        src.data
    assert '1.eml' not in os.listdir(os.path.join(root, 'INBOX'))


@pytest.mark.parametrize('target', ['renamed.eml', '2.eml'])
def test_rename_within_mailbox_is_eperm(srv, mount, target):
    m = rw(mount, srv)
    inbox = os.path.join(m.mountpoint, 'INBOX')
    before = state(srv)
    raises_errno(lambda: os.rename(os.path.join(inbox, '1.eml'),
                                   os.path.join(inbox, target)), errno.EPERM)
    assert state(srv) == before
    assert read(os.path.join(inbox, '1.eml')) == \
        srv.corpus['INBOX'].messages[1].data
    assert emls(inbox) == {msg.filename for msg in
                           srv.corpus['INBOX'].messages.values()}
    assert sent(m, CHANGES) == []


@pytest.mark.parametrize('capped_server', ['no-move'], indirect=True)
def test_mv_without_move_is_copy_store_expunge(capped_server, mount):
    srv = capped_server
    inbox = srv.corpus['INBOX'].messages
    keep, src = sorted(inbox)[:2]
    other_client_flags_deleted(srv, 'INBOX', keep)
    m = rw(mount, srv)
    tool('mv', 'INBOX/%d.eml' % src, 'Archive/', cwd=m.mountpoint)
    assert not sent(m, r'^UID MOVE ')
    cmds = sent(m, r'^UID (?:COPY|STORE|EXPUNGE) %d\b' % src)
    assert [c.split()[1] for c in cmds] == ['COPY', 'STORE', 'EXPUNGE'], cmds
    assert re.match(r'UID STORE %d \+FLAGS(?:\.SILENT)? \(\\Deleted\)$'
                    % src, cmds[1]), cmds
    assert not sent(m, r'^(?:EXPUNGE|CLOSE)\b')
    m.stop()
    after = box(srv, 'INBOX')
    assert src not in after
    assert '\\Deleted' in after[keep].flags, 'the other client\'s message'
    moved = [msg for msg in box(srv, 'Archive').values()
             if msg.data == inbox[src].data]
    assert len(moved) == 1
    assert flagset(moved[0]) == flagset(inbox[src])


@pytest.mark.parametrize('capped_server', ['no-move-uidplus'], indirect=True)
def test_mv_without_uidplus_is_exdev_so_mv_copies(capped_server, mount):
    srv = capped_server
    src = srv.corpus['INBOX'].messages[5]
    # (No Archive/5.eml: mv would replace an existing target by design.)
    assert 5 not in srv.corpus['Archive'].messages
    m = rw(mount, srv)
    root = m.mountpoint
    raises_errno(lambda: os.rename(os.path.join(root, 'INBOX', '5.eml'),
                                   os.path.join(root, 'Archive', '5.eml')),
                 errno.EXDEV)
    assert 5 in box(srv, 'INBOX')
    r = tool('mv', 'INBOX/5.eml', 'Archive/', cwd=root, check=False)
    assert r.returncode == 0, r.stderr.decode(errors='replace')
    where = copies(srv, src.data)
    assert [w[0] for w in where] == ['Archive'], where
    arch = box(srv, 'Archive')
    assert {u: msg.data for u, msg in arch.items() if u != where[0][1]} \
        == {u: msg.data for u, msg in srv.corpus['Archive'].messages.items()}
    assert '5.eml' not in os.listdir(os.path.join(root, 'INBOX'))
    assert emls(os.path.join(root, 'Archive')) == \
        {msg.filename for msg in arch.values()}


@pytest.mark.parametrize('capped_server', ['no-move-uidplus'], indirect=True)
def test_mv_without_uidplus_never_clears_the_target_name(capped_server,
                                                         mount):
    """mv's own copy after EXDEV would first unlink the target name, here
    another message: imapfs refuses the move instead (EEXIST)."""
    srv = capped_server
    uid = min(srv.corpus['Archive'].messages)
    assert uid in srv.corpus['INBOX'].messages
    m = rw(mount, srv)
    r = tool('mv', 'INBOX/%d.eml' % uid, 'Archive/', cwd=m.mountpoint,
             check=False)
    assert r.returncode != 0
    assert b'File exists' in r.stderr, r.stderr
    assert box(srv, 'Archive')[uid].data == \
        srv.corpus['Archive'].messages[uid].data
    assert box(srv, 'INBOX')[uid].data == \
        srv.corpus['INBOX'].messages[uid].data
    assert sent(m, r'^UID (COPY|STORE|EXPUNGE)') == []


def test_failed_mv_leaves_source(srv, mount):
    imap(srv, ('CREATE', 'Gone'))
    src = srv.corpus['INBOX'].messages[2]
    m = rw(mount, srv)
    root = m.mountpoint
    assert os.listdir(os.path.join(root, 'Gone')) == []
    imap(srv, ('DELETE', 'Gone'))
    r = tool('mv', 'INBOX/2.eml', 'Gone/', cwd=root, check=False)
    assert r.returncode != 0
    inbox = box(srv, 'INBOX')
    assert inbox[2].data == src.data
    assert flagset(inbox[2]) == flagset(src)      # no \Deleted left behind
    assert 'Gone' not in mailboxes(srv)
    assert copies(srv, src.data) == [('INBOX', 2, flagset(src))]
    assert read(os.path.join(root, 'INBOX', '2.eml')) == src.data


# -- deletes ---------------------------------------------------------------

def test_rm_expunges_only_that_uid(srv, mount):
    inbox = srv.corpus['INBOX'].messages
    keep, gone = sorted(inbox)[:2]
    other_client_flags_deleted(srv, 'INBOX', keep)
    m = rw(mount, srv)
    root = m.mountpoint
    tool('rm', 'INBOX/%d.eml' % gone, cwd=root)
    cmds = sent(m, r'^(?:UID (?:STORE|EXPUNGE)|EXPUNGE|CLOSE)\b')
    assert len(cmds) == 2 and \
        re.match(r'UID STORE %d \+FLAGS\.SILENT \(\\Deleted\)$' % gone,
                 cmds[0]) and cmds[1] == 'UID EXPUNGE %d' % gone, cmds
    raises_errno(lambda: os.stat(os.path.join(root, 'INBOX',
                                              '%d.eml' % gone)),
                 errno.ENOENT)
    assert '%d.eml' % gone not in os.listdir(os.path.join(root, 'INBOX'))
    m.stop()        # nothing at logout may expunge either
    after = box(srv, 'INBOX')
    assert set(after) == set(inbox) - {gone}
    assert '\\Deleted' in after[keep].flags
    assert {u: msg.data for u, msg in after.items()} == \
        {u: msg.data for u, msg in inbox.items() if u != gone}


def test_rm_with_delete_trash(trash_server, mount):
    srv = trash_server
    src = srv.corpus['INBOX'].messages[4]
    m = rw(mount, srv, 'delete=trash')
    root = m.mountpoint
    trash = os.path.join(root, 'Trash')
    assert emls(trash) == set()
    tool('rm', 'INBOX/4.eml', cwd=root)
    assert 4 not in box(srv, 'INBOX')
    where = copies(srv, src.data)
    assert [w[0] for w in where] == ['Trash'], where
    assert '4.eml' not in os.listdir(os.path.join(root, 'INBOX'))
    names = emls(trash)
    assert names == {'%d.eml' % where[0][1]}
    tool('rm', 'Trash/' + names.pop(), cwd=root)
    assert copies(srv, src.data) == []
    assert box(srv, 'Trash') == {}
    assert emls(trash) == set()
    assert sent(m, r'^UID EXPUNGE %d$' % where[0][1])


def test_modes(srv, mount):
    m = rw(mount, srv, debug=False)
    root = m.mountpoint
    assert stat.S_IMODE(os.stat(os.path.join(root, 'INBOX', '1.eml'))
                        .st_mode) == 0o644
    for d in ('INBOX', 'Archive', 'Archive/2024'):
        assert stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) == 0o755


# -- mailboxes -------------------------------------------------------------

def test_mkdir_p_creates_each_level(srv, mount):
    m = rw(mount, srv)
    tool('mkdir', '-p', 'New/Sub/Leaf', cwd=m.mountpoint)
    listed = mailboxes(srv)
    assert {'New', 'New.Sub', 'New.Sub.Leaf'} <= selectable(listed)
    assert os.listdir(os.path.join(m.mountpoint, 'New/Sub/Leaf')) == []
    assert 'New' in os.listdir(m.mountpoint)
    assert len(sent(m, r'^CREATE ')) == 3


@pytest.mark.parametrize('name', ['Ünïcødé', '日本'])
def test_mkdir_non_ascii_is_modified_utf7(srv, mount, name):
    m = rw(mount, srv)
    os.mkdir(os.path.join(m.mountpoint, name))
    listed = mailboxes(srv)
    assert F.mutf7_encode(name) in selectable(listed), sorted(listed)
    assert name in os.listdir(m.mountpoint)
    assert sent(m, r'^CREATE "?%s"?$' % re.escape(F.mutf7_encode(name)))


@pytest.mark.parametrize('name', [
    'é' * 100,          # 200 bytes of UTF-8, 269 in modified UTF-7
    'ctl\x01name',      # Dovecot: no control characters in new names
], ids=['too-long-in-utf7', 'control-char'])
def test_mkdir_name_the_server_refuses(srv, mount, name):
    m = rw(mount, srv)
    before = mailboxes(srv)
    raises_errno(lambda: os.mkdir(os.path.join(m.mountpoint, name)),
                 errno.EINVAL, errno.ENAMETOOLONG, errno.EPERM,
                 errno.EACCES, errno.EIO)
    assert mailboxes(srv) == before
    assert name not in os.listdir(m.mountpoint)
    assert not os.path.lexists(os.path.join(m.mountpoint, name))


def test_rmdir_empty_mailbox_deletes(srv, mount):
    m = rw(mount, srv)
    root = m.mountpoint
    tool('rmdir', 'Empty', cwd=root)
    os.mkdir(os.path.join(root, 'Brief'))
    assert 'Brief' in mailboxes(srv)
    os.rmdir(os.path.join(root, 'Brief'))
    listed = mailboxes(srv)
    assert 'Empty' not in listed and 'Brief' not in listed
    assert not {'Empty', 'Brief'} & set(os.listdir(root))
    assert sent(m, r'^DELETE "?Empty"?$')


def test_rmdir_nonempty_is_enotempty(srv, mount):
    imap(srv, ('CREATE', 'Par'), ('CREATE', 'Par.Kid'))
    m = rw(mount, srv)
    root = m.mountpoint
    before = state(srv)
    for d in ('Archive/2024', 'Par', 'Archive'):
        raises_errno(lambda: os.rmdir(os.path.join(root, d)),
                     errno.ENOTEMPTY)
        assert os.path.isdir(os.path.join(root, d))
    assert state(srv) == before
    assert sent(m, r'^DELETE ') == []


@pytest.mark.parametrize('pool', ['connections=1', 'connections=4'])
def test_rmdir_asks_the_server(srv, mount, pool):
    """With one connection the check runs where Fresh is still EXAMINEd:
    Dovecot answers STATUS there from that session's stale view (RFC 3501
    6.3.10: STATUS should not be used on the selected mailbox)."""
    imap(srv, ('CREATE', 'Fresh'))
    m = rw(mount, srv, pool)
    d = os.path.join(m.mountpoint, 'Fresh')
    assert os.listdir(d) == []
    data = message('arrived a moment ago')
    append(srv, 'Fresh', data)
    raises_errno(lambda: os.rmdir(d), errno.ENOTEMPTY)
    assert [msg.data for msg in box(srv, 'Fresh').values()] == [data]


def test_rename_mailbox(srv, mount):
    m = rw(mount, srv)
    root = m.mountpoint
    arch = {n: collections.Counter(msg.data for msg in
                                   srv.corpus[p].messages.values())
            for n, p in (('Old', 'Archive'), ('Old.2024', 'Archive/2024'))}
    tool('mv', 'Archive', 'Old', cwd=root)
    assert sent(m, r'^RENAME "?Archive"? "?Old"?$')
    listed = mailboxes(srv)
    assert not [n for n in listed if n.startswith('Archive')]
    for name, want in arch.items():
        assert collections.Counter(
            msg.data for msg in box(srv, name).values()) == want
    assert 'Old' in os.listdir(root) and 'Archive' not in os.listdir(root)
    assert len(emls(os.path.join(root, 'Old'))) == 3
    assert '2024' in os.listdir(os.path.join(root, 'Old'))

    # Into another parent.
    entw = srv.corpus['Entwürfe']
    tool('mv', 'Entwürfe', 'Old/', cwd=root)
    listed = mailboxes(srv)
    assert entw.server not in listed
    moved = 'Old.' + entw.server
    assert moved in selectable(listed)
    assert [msg.data for msg in box(srv, moved).values()] == \
        [msg.data for msg in entw.messages.values()]
    assert 'Entwürfe' in os.listdir(os.path.join(root, 'Old'))
    assert 'Entwürfe' not in os.listdir(root)


def test_inbox_cannot_go(srv, mount):
    m = rw(mount, srv)
    root = m.mountpoint
    before = state(srv)
    raises_errno(lambda: os.rmdir(os.path.join(root, 'INBOX')), errno.EPERM)
    raises_errno(lambda: os.rename(os.path.join(root, 'INBOX'),
                                   os.path.join(root, 'Inbox2')), errno.EPERM)
    raises_errno(lambda: os.rename(os.path.join(root, 'INBOX'),
                                   os.path.join(root, 'Archive', 'INBOX')),
                 errno.EPERM)
    assert state(srv) == before
    assert 'INBOX' in os.listdir(root)
    assert sent(m, r'^(?:DELETE|RENAME) ') == []


# -- flags -----------------------------------------------------------------

def test_getfattr_shows_flags(srv, mount):
    src = corpus_msg(srv, 'INBOX', {'\\Answered', '\\Flagged', '$Label1'})
    m = rw(mount, srv, debug=False)
    path = os.path.join(m.mountpoint, 'INBOX', src.filename)
    r = tool('getfattr', '--only-values', '-n', FLAGS, path)
    assert set(r.stdout.decode().split()) == flagset(src)
    r = tool('getfattr', '-d', path)
    assert re.search(r'^user\.imap\.flags="', r.stdout.decode(), re.M), \
        r.stdout


def test_setfattr_replaces_flags(srv, mount):
    src = corpus_msg(srv, 'INBOX', {'\\Answered', '\\Flagged', '$Label1'})
    m = rw(mount, srv)
    path = os.path.join(m.mountpoint, 'INBOX', src.filename)
    tool('getfattr', '-n', FLAGS, path)          # cache the old value
    tool('setfattr', '-n', FLAGS, '-v', r'\Seen \Flagged $Label2', path)
    want = {'\\Seen', '\\Flagged', '$Label2'}
    assert flagset(box(srv, 'INBOX')[src.uid]) == want
    assert sent(m, r'^UID STORE %d (?:\(UNCHANGEDSINCE \d+\) )?'
                r'FLAGS(?:\.SILENT)? \(' % src.uid)
    r = tool('getfattr', '--only-values', '-n', FLAGS, path)
    assert set(r.stdout.decode().split()) == want
    assert re.search(r'^user\.imap\.flags=".*\$Label2',
                     tool('getfattr', '-d', path).stdout.decode(), re.M)
    assert read(path) == src.data


def test_setfattr_x_clears_flags(srv, mount):
    src = corpus_msg(srv, 'INBOX', {'\\Answered', '\\Flagged', '$Label1'})
    m = rw(mount, srv)
    path = os.path.join(m.mountpoint, 'INBOX', src.filename)
    tool('setfattr', '-x', FLAGS, path)
    assert flagset(box(srv, 'INBOX')[src.uid]) == frozenset()
    try:
        value = os.getxattr(path, FLAGS)
    except OSError as e:
        assert e.errno == errno.ENODATA
        value = b''
    assert value.strip() == b''


@pytest.mark.parametrize('value', ['\\Bogus', 'a(b', 'Fläg', '\\Seen a"b'])
def test_invalid_flags_are_einval(srv, mount, value):
    src = corpus_msg(srv, 'INBOX', {'\\Answered', '\\Flagged', '$Label1'})
    m = rw(mount, srv)
    path = os.path.join(m.mountpoint, 'INBOX', src.filename)
    r = tool('setfattr', '-n', FLAGS, '-v', value, path, check=False)
    assert r.returncode != 0
    assert b'Invalid argument' in r.stderr, r.stderr
    raises_errno(lambda: os.setxattr(path, FLAGS, value.encode()),
                 errno.EINVAL)
    assert flagset(box(srv, 'INBOX')[src.uid]) == flagset(src)
    assert sent(m, r'^UID STORE ') == []
    assert set(os.getxattr(path, FLAGS).decode().split()) == flagset(src)


# -- read-only mounts and immutable messages -------------------------------

def test_ro_mount_refuses_every_change(srv, mount, tmp_path):
    src = tmp_path / 'n.eml'
    src.write_bytes(message('never sent'))
    m = rw(mount, srv, 'ro')
    root = m.mountpoint
    j = lambda *p: os.path.join(root, *p)
    before = state(srv)
    assert read(j('INBOX', '1.eml')) == srv.corpus['INBOX'].messages[1].data
    assert stat.S_IMODE(os.stat(j('INBOX', '1.eml')).st_mode) == 0o444
    assert stat.S_IMODE(os.stat(j('INBOX')).st_mode) == 0o555
    calls = {
        'create': lambda: os.open(j('INBOX', 'n.eml'),
                                  os.O_WRONLY | os.O_CREAT, 0o644),
        'open-write': lambda: os.open(j('INBOX', '1.eml'), os.O_WRONLY),
        'rename': lambda: os.rename(j('INBOX', '1.eml'),
                                    j('Archive', '1.eml')),
        'unlink': lambda: os.unlink(j('INBOX', '1.eml')),
        'mkdir': lambda: os.mkdir(j('New')),
        'rmdir': lambda: os.rmdir(j('Empty')),
        'rename-dir': lambda: os.rename(j('Archive'), j('Old')),
        'setxattr': lambda: os.setxattr(j('INBOX', '1.eml'), FLAGS,
                                        b'\\Seen'),
        'removexattr': lambda: os.removexattr(j('INBOX', '2.eml'), FLAGS),
        'utime': lambda: os.utime(j('INBOX', '1.eml'), (WHEN, WHEN)),
        'truncate': lambda: os.truncate(j('INBOX', '1.eml'), 0),
    }
    assert F.errno_mismatches(calls, errno.EROFS) == {}
    for cmd in (['cp', src, 'INBOX/'], ['mv', 'INBOX/1.eml', 'Archive/'],
                ['rm', '-f', 'INBOX/1.eml'], ['mkdir', 'X'],
                ['rmdir', 'Empty'], ['touch', 'INBOX/1.eml'],
                ['setfattr', '-n', FLAGS, '-v', r'\Seen', 'INBOX/1.eml']):
        r = tool(*cmd, cwd=root, check=False)
        assert r.returncode != 0 and b'Read-only file system' in r.stderr, \
            (cmd, r.stderr)
    assert state(srv) == before
    assert sent(m, CHANGES) == []
    assert sent(m, r'^EXAMINE ')


def test_existing_message_is_immutable(srv, mount):
    msg = srv.corpus['INBOX'].messages[1]
    m = rw(mount, srv)
    path = os.path.join(m.mountpoint, 'INBOX', '1.eml')
    before = state(srv)
    st = os.stat(path)
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND,
                  os.O_WRONLY | os.O_TRUNC):
        raises_errno(lambda: os.close(os.open(path, flags)), errno.EPERM)
    raises_errno(lambda: os.truncate(path, 0), errno.EPERM)
    raises_errno(lambda: os.chmod(path, 0o600), errno.EPERM)
    raises_errno(lambda: os.chown(path, 1234, 1234), errno.EPERM)
    r = tool('sh', '-c', 'echo more >> INBOX/1.eml', cwd=m.mountpoint,
             check=False)
    assert r.returncode != 0 and b'Operation not permitted' in r.stderr
    assert state(srv) == before
    assert read(path) == msg.data
    after = os.stat(path)
    assert (after.st_mode, after.st_uid, after.st_size) == \
        (st.st_mode, st.st_uid, st.st_size)
    assert sent(m, CHANGES) == []


# -- server-side copy ------------------------------------------------------

def test_cp_inside_the_mount_is_uid_copy(srv, mount, tmp_path):
    src = corpus_msg(srv, 'INBOX', {'\\Answered', '\\Flagged', '$Label1'})
    expect_uid = uidnext(srv, 'Archive')
    m = rw(mount, srv)
    cmd = ['cp', 'INBOX/' + src.filename, 'Archive/']
    log = tmp_path / 'cp.strace'
    if shutil.which('strace'):
        cmd = ['strace', '-f', '-qq', '-e', 'trace=copy_file_range',
               '-o', str(log)] + cmd
    r = tool(*cmd, cwd=m.mountpoint, check=False)
    assert r.returncode == 0, r.stderr.decode(errors='replace')
    arch = box(srv, 'Archive')
    new = {u: msg for u, msg in arch.items()
           if u not in srv.corpus['Archive'].messages}
    assert list(new) == [expect_uid]
    assert (new[expect_uid].data, flagset(new[expect_uid])) == \
        (src.data, flagset(src))
    assert box(srv, 'INBOX')[src.uid].data == src.data
    assert read(os.path.join(m.mountpoint, 'Archive',
                             '%d.eml' % expect_uid)) == src.data
    if log.exists() and 'copy_file_range(' not in log.read_text():
        pytest.skip('cp did not call copy_file_range here (strace shows '
                    'none), so the kernel had nothing to hand to imapfs')
    assert sent(m, r'^UID COPY %d ' % src.uid)
    assert sent(m, r'^APPEND ') == []
    # cp opens the source before the kernel hands the copy over, and an
    # open checks the true size: one fetch (a message this small comes
    # whole), nothing more.
    assert len(body_fetches(m, src.uid)) <= 1


def test_cp_of_a_large_message_is_not_downloaded(srv, mount):
    """Above 4 MiB the open's size check fetches only the last block, so
    of 6 MB copied on the server 256 KiB cross the network, none up."""
    data = message('large copy', lines=320000)
    assert len(data) > 5 * 1024 * 1024
    uid = uidnext(srv, 'INBOX')
    append(srv, 'INBOX', data)
    expect_uid = uidnext(srv, 'Archive')
    m = rw(mount, srv)
    r = tool('cp', 'INBOX/%d.eml' % uid, 'Archive/', cwd=m.mountpoint,
             check=False)
    assert r.returncode == 0, r.stderr.decode(errors='replace')
    assert box(srv, 'Archive')[expect_uid].data == data
    assert sent(m, r'^UID COPY %d ' % uid)
    assert sent(m, r'^APPEND ') == []
    fetches = body_fetches(m, uid)
    assert len(fetches) == 1, fetches
    window = re.search(r'<(\d+)\.(\d+)>', fetches[0])
    assert int(window.group(1)) > 0 and int(window.group(2)) <= 262144


# -- connections dropped in the middle of a change -------------------------

def through_proxy(mount, server, proxy):
    return mount(server=server, url=server.url('imap', port=proxy.port),
                 options=['allow_plaintext'], debug=True)


def arm(proxy, trigger, cut):
    """Cut a command matching `trigger`: one byte into it ('mid-...'),
    so that the server never runs it, or ('reply-lost') once the server
    has run it, before its reply reaches imapfs."""
    if cut == 'reply-lost':
        proxy.arm(trigger, reply=True)
    else:
        proxy.arm(trigger, after=1)


def cut_off(proxy, call):
    """call() with the proxy armed: it must have cut once and succeeded."""
    cuts = proxy.cuts
    r = call()
    assert proxy.cuts == cuts + 1, 'the command never went through the proxy'
    assert r.returncode == 0, r.stderr.decode(errors='replace')
    return r


@pytest.mark.parametrize('cut', ['mid-literal', 'reply-lost', 'twin',
                                 'reply-lost-big-lf'])
def test_append_cut_off(plain_srv, proxy, mount, cut):
    """Whatever became of the APPEND, close() succeeds and the message is
    there once, with its flags: looked for (the same bytes, arrived after
    it was sent) before it is sent again. 'twin': the same bytes were
    appended by another client after the mount opened INBOX; they are
    not taken for ours. 'big-lf': compared window by window, with its
    bare LFs as sent (CRLF)."""
    m = through_proxy(mount, plain_srv, proxy)
    if cut.endswith('big-lf'):
        data = message('append cut off (%s)' % cut, lines=20000, nl=b'\n')
    else:
        data = message('append cut off (%s)' % cut, lines=800)
    inbox = os.path.join(m.mountpoint, 'INBOX')
    assert emls(inbox)
    twins = 0
    if cut == 'twin':
        append(plain_srv, 'INBOX', data)
        twins = 1
    if cut.startswith('reply-lost'):
        proxy.arm(rb' APPEND ', reply=True)
    else:
        proxy.arm(rb' APPEND ', after=2000)
    create_write_close(os.path.join(inbox, 'x.eml'), data, lambda fd:
                       os.setxattr(fd, FLAGS, b'\\Flagged $Cut'))
    assert proxy.cuts == 1, 'the APPEND never went through the proxy'
    where = copies(plain_srv, crlf(data))
    assert [w[0] for w in where] == ['INBOX'] * (1 + twins), where
    assert where[-1][2] == {'\\Flagged', '$Cut'}
    assert len(sent(m, r'^APPEND ')) == \
        (1 if cut.startswith('reply-lost') else 2)
    assert '%d.eml' % where[-1][1] in emls(inbox)
    # The other messages are untouched, and the mount still works.
    corpus = plain_srv.corpus['INBOX'].messages
    assert {u: msg.data for u, msg in box(plain_srv, 'INBOX').items()
            if u in corpus} == {u: msg.data for u, msg in corpus.items()}
    assert read(os.path.join(inbox, '1.eml')) == corpus[1].data


@pytest.mark.parametrize('cut', ['mid-command', 'reply-lost'])
def test_move_cut_off(plain_srv, proxy, mount, cut):
    src = plain_srv.corpus['INBOX'].messages[2]
    m = through_proxy(mount, plain_srv, proxy)
    root = m.mountpoint
    assert '2.eml' in emls(os.path.join(root, 'INBOX'))
    assert emls(os.path.join(root, 'Archive'))
    arm(proxy, rb' UID MOVE 2 ', cut)
    cut_off(proxy, lambda: tool('mv', 'INBOX/2.eml', 'Archive/', cwd=root,
                                check=False, timeout=90))
    where = copies(plain_srv, src.data)
    assert [(w[0], w[2]) for w in where] == [('Archive', flagset(src))]
    assert len(sent(m, r'^UID MOVE ')) == (1 if cut == 'reply-lost' else 2)
    assert '2.eml' not in os.listdir(os.path.join(root, 'INBOX'))
    assert '%d.eml' % where[0][1] in emls(os.path.join(root, 'Archive'))


# The cuts of a move without MOVE (UID COPY, UID STORE \Deleted, UID
# EXPUNGE): nothing copied yet, copied but COPYUID lost, COPYUID known,
# all done but the reply lost.
FALLBACK_CUTS = [(rb' UID COPY %d ', 'mid-command'),
                 (rb' UID COPY %d ', 'reply-lost'),
                 (rb' UID STORE %d ', 'reply-lost'),
                 (rb' UID EXPUNGE %d\r', 'reply-lost')]


def test_mv_without_move_cut_off(plain_no_move, no_move_proxy, mount):
    """Never a second copy, never the source left beside its copy: a
    copy already in the target (the same size, date and start, arrived
    after the COPY was sent) only needs the source removed."""
    srv, proxy = plain_no_move, no_move_proxy
    inbox = srv.corpus['INBOX'].messages
    m = through_proxy(mount, srv, proxy)
    root = m.mountpoint
    assert emls(os.path.join(root, 'Archive'))
    for uid, (trigger, cut) in zip(sorted(inbox), FALLBACK_CUTS):
        arm(proxy, trigger % uid, cut)
        cut_off(proxy, lambda: tool('mv', 'INBOX/%d.eml' % uid, 'Archive/',
                                    cwd=root, check=False, timeout=90))
        where = copies(srv, inbox[uid].data)
        assert [(w[0], w[2]) for w in where] == \
            [('Archive', flagset(inbox[uid]))], (cut, trigger, where)
        assert '%d.eml' % uid not in os.listdir(os.path.join(root, 'INBOX'))
        assert '%d.eml' % where[0][1] in emls(os.path.join(root, 'Archive'))
    assert len(sent(m, r'^UID COPY ')) == len(FALLBACK_CUTS) + 1
    assert not sent(m, r'^(?:UID MOVE|EXPUNGE|CLOSE)\b')
    m.stop()
    rest = {u: msg.data for u, msg in box(srv, 'INBOX').items()}
    assert rest == {u: msg.data for u, msg in inbox.items()
                    if u not in sorted(inbox)[:len(FALLBACK_CUTS)]}


@pytest.mark.parametrize('cut', ['mid-command', 'reply-lost'])
def test_cp_inside_the_mount_cut_off(plain_srv, proxy, mount, cut):
    src = corpus_msg(plain_srv, 'INBOX', {'\\Answered', '\\Flagged',
                                          '$Label1'})
    m = through_proxy(mount, plain_srv, proxy)
    arm(proxy, rb' UID COPY %d ' % src.uid, cut)
    r = tool('cp', 'INBOX/' + src.filename, 'Archive/', cwd=m.mountpoint,
             check=False, timeout=90)
    assert r.returncode == 0, r.stderr.decode(errors='replace')
    if proxy.cuts == 0:
        pytest.skip('cp did not call copy_file_range here: no UID COPY')
    where = copies(plain_srv, src.data)
    assert sorted((w[0], w[2]) for w in where) == \
        [('Archive', flagset(src)), ('INBOX', flagset(src))]
    assert len(sent(m, r'^UID COPY ')) == (1 if cut == 'reply-lost' else 2)
    new = [w[1] for w in where if w[0] == 'Archive']
    assert '%d.eml' % new[0] in emls(os.path.join(m.mountpoint, 'Archive'))


@pytest.mark.parametrize('cut', ['mid-command', 'reply-lost'])
def test_rm_cut_off(plain_srv, proxy, mount, cut):
    """rm succeeds once the UID is gone; a message another client flagged
    \\Deleted stays (no bare EXPUNGE on the way)."""
    inbox = plain_srv.corpus['INBOX'].messages
    keep, gone = sorted(inbox)[:2]
    other_client_flags_deleted(plain_srv, 'INBOX', keep)
    m = through_proxy(mount, plain_srv, proxy)
    root = m.mountpoint
    assert '%d.eml' % gone in emls(os.path.join(root, 'INBOX'))
    # Mid-command: the STORE never runs; reply lost: the EXPUNGE did.
    if cut == 'reply-lost':
        arm(proxy, rb' UID EXPUNGE %d\r' % gone, cut)
    else:
        arm(proxy, rb' UID STORE %d ' % gone, cut)
    cut_off(proxy, lambda: tool('rm', 'INBOX/%d.eml' % gone, cwd=root,
                                check=False, timeout=90))
    assert '%d.eml' % gone not in os.listdir(os.path.join(root, 'INBOX'))
    assert len(sent(m, r'^UID EXPUNGE ')) == 1
    assert not sent(m, r'^(?:EXPUNGE|CLOSE)\b')
    m.stop()
    after = box(plain_srv, 'INBOX')
    assert set(after) == set(inbox) - {gone}
    assert '\\Deleted' in after[keep].flags
    assert {u: msg.data for u, msg in after.items()} == \
        {u: msg.data for u, msg in inbox.items() if u != gone}


@pytest.mark.parametrize('cut', ['mid-command', 'reply-lost'])
def test_setfattr_cut_off(plain_srv, proxy, mount, cut):
    """The flags are looked at before the STORE is sent again, and the
    STORE sent again keeps its UNCHANGEDSINCE without failing on it."""
    src = corpus_msg(plain_srv, 'INBOX', {'\\Answered', '\\Flagged',
                                          '$Label1'})
    m = through_proxy(mount, plain_srv, proxy)
    path = os.path.join(m.mountpoint, 'INBOX', src.filename)
    tool('getfattr', '-n', FLAGS, path)
    arm(proxy, rb' UID STORE %d ' % src.uid, cut)
    cut_off(proxy, lambda: tool('setfattr', '-n', FLAGS, '-v',
                                r'\Seen $Label2', path, check=False,
                                timeout=90))
    want = {'\\Seen', '$Label2'}
    assert flagset(box(plain_srv, 'INBOX', bodies=False)[src.uid]) == want
    assert set(os.getxattr(path, FLAGS).decode().split()) == want
    stores = sent(m, r'^UID STORE %d ' % src.uid)
    assert len(stores) == (1 if cut == 'reply-lost' else 2), stores
    assert all('UNCHANGEDSINCE' in c for c in stores), stores


@pytest.mark.parametrize('cut', ['mid-command', 'reply-lost'])
def test_mailbox_changes_cut_off(plain_srv, proxy, mount, cut):
    m = through_proxy(mount, plain_srv, proxy)
    root = m.mountpoint

    def path(name):
        return os.path.join(root, name)

    steps = [(rb' CREATE ', lambda: os.mkdir(path('Made')),
              {'Made'}, set()),
             (rb' RENAME ', lambda: os.rename(path('Made'), path('Named')),
              {'Named'}, {'Made'}),
             (rb' DELETE ', lambda: os.rmdir(path('Named')),
              set(), {'Named'})]
    for trigger, call, there, gone in steps:
        arm(proxy, trigger, cut)
        cuts = proxy.cuts
        call()
        assert proxy.cuts == cuts + 1, trigger
        listed = selectable(mailboxes(plain_srv))
        assert there <= listed and not gone & listed, (trigger, listed)
        names = set(os.listdir(root))
        assert there <= names and not gone & names, (trigger, names)
    want = 1 if cut == 'reply-lost' else 2
    for verb in ('CREATE', 'RENAME', 'DELETE'):
        assert len(sent(m, r'^%s ' % verb)) == want, verb


# -- fewer capabilities ----------------------------------------------------

@pytest.mark.parametrize('capped_server', ['no-literal-plus', 'no-condstore',
                                           'no-move'], indirect=True)
def test_changes_with_fewer_capabilities(capped_server, mount, tmp_path):
    srv = capped_server
    hidden = srv.hidden
    m = rw(mount, srv)
    root = m.mountpoint
    want = account(srv)
    data = message('with fewer capabilities', lines=300)
    (tmp_path / 'n.eml').write_bytes(data)
    tool('cp', tmp_path / 'n.eml', 'Archive/', cwd=root)
    want['Archive'][(data, frozenset())] += 1
    new = max(emls(os.path.join(root, 'Archive')), key=uid_of)
    tool('setfattr', '-n', FLAGS, '-v', r'\Seen $Done',
         os.path.join(root, 'Archive', new))
    want['Archive'][(data, frozenset())] -= 1
    want['Archive'][(data, frozenset({'\\Seen', '$Done'}))] += 1
    msg = srv.corpus['INBOX'].messages[1]
    tool('mv', 'INBOX/1.eml', 'Archive/', cwd=root)
    want['INBOX'][(msg.data, flagset(msg))] -= 1
    want['Archive'][(msg.data, flagset(msg))] += 1
    gone = srv.corpus['Archive/2024'].messages[1]
    tool('rm', 'Archive/2024/1.eml', cwd=root)
    want['Archive.2024'][(gone.data, flagset(gone))] -= 1
    assert account(srv) == {k: +v for k, v in want.items()}
    appends = sent(m, r'^APPEND ')
    assert len(appends) == 1
    if hidden == 'no-literal-plus':
        assert not re.search(r'\{\d+\+\}', appends[0]), appends
    if hidden == 'no-condstore':
        assert not sent(m, r'CONDSTORE|QRESYNC|CHANGEDSINCE|MODSEQ')
    if hidden == 'no-move':
        assert not sent(m, r'^UID MOVE ')


# -- many random changes against a model -----------------------------------

WORDS = ('\\Seen', '\\Flagged', '\\Answered', '\\Draft', '$Label1',
         '$Forwarded', 'Work')


def test_random_changes_match_a_model(srv, mount, tmp_path):
    """A few hundred random changes through the mount, mirrored in a model
    {mailbox: {name: (bytes, flags)}}; afterwards the server holds exactly
    the model: nothing lost, nothing duplicated, every flag right."""
    rng = random.Random(0x1a9f5)
    m = rw(mount, srv, debug=False)
    root = m.mountpoint
    model = {}          # mount path -> {file name: (bytes, flags)}
    server_name = {}
    for b in srv.corpus.mailboxes:
        if not b.noselect:
            model[b.path] = {msg.filename: (msg.data, flagset(msg))
                             for msg in b.messages.values()}
            server_name[b.path] = b.server
    ours = []           # mailboxes the test made (the only ones removed)
    serial = [0]

    def listing(path):
        names = set(os.listdir(os.path.join(root, path)))
        kids = {p.rsplit('/', 1)[1] for p in model if p.startswith(path + '/')
                and '/' not in p[len(path) + 1:]}
        messages = emls(os.path.join(root, path))
        # Every message has its parts directory, and only a message.
        parts = {n for n in names if re.fullmatch(r'\d+\.parts', n)}
        assert {n[:-len('.parts')] + '.eml' for n in parts} == messages
        stray = names - kids - messages - parts
        assert not stray, (path, stray)
        return emls(os.path.join(root, path))

    def arrived(path, before):
        now = listing(path)
        assert before <= now, (path, before - now)
        new = now - before
        assert len(new) == 1, (path, new)
        name = new.pop()
        assert not before or uid_of(name) > max(map(uid_of, before))
        return name

    def new_message(path):
        serial[0] += 1
        nl = b'\n' if rng.random() < 0.3 else b'\r\n'
        data = message('random #%d' % serial[0], lines=rng.randint(1, 200),
                       nl=nl)
        flags = frozenset(rng.sample(WORDS, rng.randint(0, 2))) \
            if rng.random() < 0.3 else frozenset()
        before = set(model[path])
        target = os.path.join(root, path, 'new-%d.eml' % serial[0])
        if rng.random() < 0.15:
            src = tmp_path / 'src.eml'
            src.write_bytes(data)
            tool('cp', src, target)
            flags = frozenset()
        else:
            hook = (lambda fd: os.setxattr(fd, FLAGS, ' '.join(
                sorted(flags)).encode())) if flags else None
            create_write_close(target, data, hook)
        model[path][arrived(path, before)] = (crlf(data), flags)

    def move(path):
        dest = rng.choice([p for p in model if p != path])
        name = rng.choice(sorted(model[path]))
        before = set(model[dest])
        if rng.random() < 0.15:
            tool('mv', os.path.join(root, path, name),
                 os.path.join(root, dest) + '/')
        else:
            os.rename(os.path.join(root, path, name),
                      os.path.join(root, dest, name))
        item = model[path].pop(name)
        assert name not in listing(path)
        model[dest][arrived(dest, before)] = item

    def remove(path):
        name = rng.choice(sorted(model[path]))
        os.unlink(os.path.join(root, path, name))
        del model[path][name]
        assert listing(path) == set(model[path])

    def set_flags(path):
        name = rng.choice(sorted(model[path]))
        p = os.path.join(root, path, name)
        flags = frozenset(rng.sample(WORDS, rng.randint(0, 3)))
        if flags:
            os.setxattr(p, FLAGS, ' '.join(sorted(flags)).encode())
        else:
            os.removexattr(p, FLAGS)
        model[path][name] = (model[path][name][0], flags)
        got = os.getxattr(p, FLAGS).decode().split() if flags else []
        assert set(got) == flags

    def make_dir(_):
        serial[0] += 1
        parents = [p for p in ours if p.count('/') < 2]
        path = ('%s/' % rng.choice(parents) if parents and rng.random() < 0.4
                else '') + 'R%d' % serial[0]
        os.mkdir(os.path.join(root, path))
        model[path] = {}
        server_name[path] = path.replace('/', F.SEP)
        ours.append(path)

    def remove_dir(_):
        if not ours:
            return 'nothing to remove'
        busy = lambda p: model[p] or any(q.startswith(p + '/') for q in model)
        empty = [p for p in ours if not busy(p)]
        path = rng.choice(empty if empty and rng.random() < 0.6 else ours)
        full = os.path.join(root, path)
        if busy(path):
            raises_errno(lambda: os.rmdir(full), errno.ENOTEMPTY)
            return 'rmdir refused'
        os.rmdir(full)
        del model[path]
        ours.remove(path)
        assert not os.path.lexists(full)

    ops = [(new_message, 30), (move, 25), (remove, 12), (set_flags, 15),
           (make_dir, 8), (remove_dir, 10)]
    done = collections.Counter()
    for step in range(600):
        op = rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
        if op in (move, remove, set_flags):
            full = [p for p in model if model[p]]
            path = rng.choice(full)
        else:
            path = rng.choice(sorted(model))
        try:
            done[op(path) or op.__name__] += 1
        except Exception as e:
            raise AssertionError('step %d: %s(%r): %s' % (
                step, op.__name__, path, e)) from e

    # Each kind of change happened often enough to mean something.
    done.pop('nothing to remove', None)
    assert min(done.values()) >= 15 and len(done) == 7, done
    for path in model:
        assert listing(path) == set(model[path]), path
    m.stop()
    got = account(srv)
    want = {server_name[p]: collections.Counter(v.values())
            for p, v in model.items()}
    assert set(got) == set(want)
    for name in want:
        lost = want[name] - got[name]
        extra = got[name] - want[name]
        assert not lost and not extra, (name, [d[:80] for d, _ in lost],
                                        [d[:80] for d, _ in extra])


# -- what the review of the write paths found ------------------------------

def test_a_child_closing_the_descriptor_does_not_store_early(srv, mount,
                                                            tmp_path):
    """The shell opens the file and each command inherits it: only the
    opener's close stores, with everything every child wrote."""
    a, b = message('first half', lines=30), b'X-Tail: second half\r\n'
    (tmp_path / 'a').write_bytes(a)
    (tmp_path / 'b').write_bytes(b)
    m = rw(mount, srv)
    uid = uidnext(srv, 'INBOX')
    r = tool('sh', '-c', '{ cat "$1"; cat "$2"; } > INBOX/two.eml',
             'sh', str(tmp_path / 'a'), str(tmp_path / 'b'),
             cwd=m.mountpoint, check=False)
    assert r.returncode == 0, r.stderr
    assert box(srv, 'INBOX')[uid].data == a + b
    assert len(sent(m, r'^APPEND ')) == 1


def test_a_read_only_open_does_not_store_early(srv, mount):
    m = rw(mount, srv)
    path = os.path.join(m.mountpoint, 'INBOX', 'slow.eml')
    uid = uidnext(srv, 'INBOX')
    data = message('written in two steps', lines=40)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data[:100])
        os.close(os.open(path, os.O_RDONLY))
        assert uidnext(srv, 'INBOX') == uid     # nothing stored yet
        os.write(fd, data[100:])
    finally:
        os.close(fd)
    assert box(srv, 'INBOX')[uid].data == data


def test_copy_of_a_message_expunged_meanwhile_fails(srv, mount):
    src = corpus_msg(srv, 'INBOX')
    m = rw(mount, srv)
    root = m.mountpoint
    fin = os.open(os.path.join(root, 'INBOX', src.filename), os.O_RDONLY)
    fout = os.open(os.path.join(root, 'Archive', 'gone.eml'),
                   os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        assert os.copy_file_range(fin, fout, src.size) == src.size
        expunge_other_client = srv.client()
        try:
            F.imap_check(expunge_other_client.select('INBOX'), 'SELECT')
            F.imap_check(expunge_other_client.uid(
                'STORE', str(src.uid), '+FLAGS.SILENT', r'(\Deleted)'),
                'STORE')
            F.imap_check(expunge_other_client.uid('EXPUNGE', str(src.uid)),
                         'UID EXPUNGE')
        finally:
            expunge_other_client.logout()
    finally:
        os.close(fin)
    raises_errno(lambda: os.close(fout), errno.ENOENT)
    assert copies(srv, src.data) == []


def test_rmdir_of_an_empty_noselect_mailbox(srv, mount):
    imap(srv, ('CREATE', 'Bare.'))
    assert '\\Noselect' in ' '.join(mailboxes(srv).get('Bare', ()))
    m = rw(mount, srv)
    os.rmdir(os.path.join(m.mountpoint, 'Bare'))
    assert 'Bare' not in mailboxes(srv)


def test_flags_changed_by_another_client_then_retry(srv, mount):
    src = corpus_msg(srv, 'INBOX')
    m = rw(mount, srv)
    path = os.path.join(m.mountpoint, 'INBOX', src.filename)
    assert os.getxattr(path, FLAGS) is not None
    c = srv.client()
    try:
        F.imap_check(c.select('INBOX'), 'SELECT')
        F.imap_check(c.uid('STORE', str(src.uid), '+FLAGS.SILENT',
                           r'(\Answered)'), 'STORE')
    finally:
        c.logout()
    # The mount's listing predates that change: refused, nothing lost.
    raises_errno(lambda: os.setxattr(path, FLAGS, b'\\Seen'), errno.EBUSY)
    assert '\\Answered' in box(srv, 'INBOX')[src.uid].flags
    # It has looked again: the flags show the other client's change, and
    # a second try goes through.
    assert '\\Answered' in os.getxattr(path, FLAGS).decode()
    os.setxattr(path, FLAGS, b'\\Seen')
    assert flagset(box(srv, 'INBOX')[src.uid]) == {'\\Seen'}


def test_rm_of_the_written_name_removes_that_message(srv, mount):
    """For a few seconds the name a message was written under still
    stands for it (rsync renames it): rm of it removes that message."""
    m = rw(mount, srv)
    data = message('written then removed')
    uid = uidnext(srv, 'INBOX')
    path = os.path.join(m.mountpoint, 'INBOX', 'gone-soon.eml')
    create_write_close(path, data)
    assert box(srv, 'INBOX')[uid].data == data
    os.unlink(path)
    assert uid not in box(srv, 'INBOX')
    assert sent(m, r'^UID EXPUNGE %d$' % uid)
    assert not os.path.lexists(path)
