# SPDX-License-Identifier: GPL-2.0-or-later
"""Hostile and broken servers: nothing a server sends ends the daemon.

The server is fake_imap.FakeImap instead of Dovecot. It serves INBOX and
Good correctly and misbehaves, by script, only for the request a test
aims at (mostly in the mailbox Evil). For every case check_healthy()
asserts that the daemon is alive and mounted without a sanitizer report,
that INBOX and Good are still listed and read correctly afterwards, that
no directory lists a name with '/' or a second '.' or '..', and that the
daemon's peak RSS grew by less than RSS_GROWTH_LIMIT_KB although the
endless lines and literals below are far larger; each test asserts what
became of the request it aimed at (a clean errno, or the right data).
"""

import base64
import ctypes
import errno
import os
import re

import pytest

import imapfs_fixtures as F
from fake_imap import (FakeImap, Msg, before, mixed, raw, reply, stream,
                       text_message)

# How much the daemon's peak RSS (VmHWM) may grow from mounting to the end
# of a test. Measured under ASan: 39 MB at the mount, then +10 MB for
# test_baseline (which reads everything), +27 MB for
# test_many_tiny_arguments, +6 to +12 MB for the others; without
# sanitizers 11 MB, then +2 to +7 MB. The endless streams send 256 MiB,
# so a daemon buffering one would pass the limit whatever the build.
RSS_GROWTH_LIMIT_KB = 64 * 1024
ENDLESS = 256 * 1024 * 1024
# What a client that hangs up on an endless stream lets the server send:
# the socket buffers (about 3 MiB on loopback), per connection.
HANGUP_BYTES = 16 * 1024 * 1024

OPTIONS = ['allow_plaintext', 'timeout=3', 'poll=0']
BODY_FETCH = r'^UID FETCH .*BODY\.PEEK\['
META_FETCH = r'^UID FETCH .*BODYSTRUCTURE'
FETCH_HEAD = b'* 1 FETCH (UID 1 BODY[]<0> '
EVIL_DATA = text_message('evil\r\n', 'evil')


def big_body():
    return b''.join(b'%07d the quick brown fox\r\n' % i
                    for i in range(24000))


GOOD = {
    'INBOX': [text_message('hello\r\n', 'one'),
              text_message(big_body(), 'big')],
    'Good': [text_message('still good\r\n', 'good')],
}


@pytest.fixture
def server():
    """Replaces the Dovecot of conftest.py for `mount` in this module."""
    srv = FakeImap()
    for name, msgs in GOOD.items():
        srv.mailbox(name, [Msg(d) for d in msgs])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def mnt_fake(mount):
    """mnt_fake(): the fake server mounted with OPTIONS; .rss_at_mount is
    the daemon's peak RSS then."""
    def start():
        # ASan keeps up to 256 MB of freed memory aside to catch use
        # after free; the peak RSS is to count what the daemon holds.
        m = mount(scheme='imap', options=OPTIONS,
                  env={'ASAN_OPTIONS': 'quarantine_size_mb=4'})
        m.rss_at_mount = peak_rss_kb(m.pid)
        return m
    return start


def evil(server, *msgs, name='Evil', **kw):
    """Adds the mailbox the test aims at (one small message by
    default)."""
    return server.mailbox(name, list(msgs) or [Msg(EVIL_DATA)], **kw)


# ---------------------------------------------------------------------------
# Checks

class Dirent(ctypes.Structure):
    _fields_ = [('d_ino', ctypes.c_uint64), ('d_off', ctypes.c_int64),
                ('d_reclen', ctypes.c_ushort), ('d_type', ctypes.c_ubyte),
                ('d_name', ctypes.c_char * 256)]


LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.opendir.restype = ctypes.c_void_p
LIBC.opendir.argtypes = [ctypes.c_char_p]
LIBC.readdir.restype = ctypes.POINTER(Dirent)
LIBC.readdir.argtypes = [ctypes.c_void_p]
LIBC.closedir.argtypes = [ctypes.c_void_p]


def raw_readdir(path):
    """Every name readdir(3) gives, '.' and '..' included (os.listdir
    drops those, and so would hide a directory named '..')."""
    d = LIBC.opendir(os.fsencode(path))
    if not d:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    names = []
    try:
        while True:
            ctypes.set_errno(0)
            ent = LIBC.readdir(d)
            if not ent:
                e = ctypes.get_errno()
                if e:
                    raise OSError(e, os.strerror(e), path)
                return names
            names.append(ent.contents.d_name)
    finally:
        LIBC.closedir(d)


def listing(path):
    """The names in directory `path` as str, checked: none holds '/',
    none is empty, '.' and '..' come once each."""
    names = raw_readdir(path)
    assert not [n for n in names if b'/' in n], names
    assert names.count(b'.') <= 1 and names.count(b'..') <= 1, names
    assert b'' not in names, names
    return [os.fsdecode(n) for n in names if n not in (b'.', b'..')]


def outcome(call):
    """call()'s result, or the name of the errno it failed with."""
    try:
        return call()
    except OSError as e:
        return errno.errorcode.get(e.errno, e.errno)


def read_file(path):
    with open(path, 'rb') as f:
        return f.read()


def walk(top):
    """{path relative to top: what reading it gave (bytes or errno
    name)} for every file below `top`, and {dir: errno name} for
    directories that could not be listed. Checks every listing, and that
    every name resolves to a path inside its directory."""
    seen = {}
    todo = ['']
    while todo:
        rel = todo.pop()
        d = os.path.join(top, rel)
        names = outcome(lambda: listing(d))
        if isinstance(names, str):
            seen[rel] = names
            continue
        for n in names:
            p = os.path.join(d, n)
            assert os.path.dirname(os.path.realpath(p)) == \
                os.path.realpath(d), p
            st = outcome(lambda: os.lstat(p))
            if isinstance(st, str):
                seen[os.path.join(rel, n)] = st
            elif os.path.isdir(p):
                todo.append(os.path.join(rel, n))
            else:
                seen[os.path.join(rel, n)] = outcome(lambda: read_file(p))
    return seen


def peak_rss_kb(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    raise AssertionError('no VmHWM for pid %d' % pid)


def check_healthy(m):
    """The daemon lives, serves the good mailboxes, and stayed small."""
    assert F.pid_alive(m.pid), m.stderr()[-3000:]
    assert F.is_mounted(m.mountpoint)
    assert not F.sanitizer_reports(m.stderr()), m.stderr()[-6000:]
    assert {'INBOX', 'Good'} <= set(listing(m.mountpoint))
    for box, msgs in GOOD.items():
        d = os.path.join(m.mountpoint, box)
        want = ['%d.eml' % (i + 1) for i in range(len(msgs))]
        assert sorted(n for n in listing(d) if n.endswith('.eml')) == want
        for name, data in zip(want, msgs):
            assert read_file(os.path.join(d, name)) == data
    assert F.pid_alive(m.pid)
    rss = peak_rss_kb(m.pid)
    print('peak RSS %d kB (%d kB at the mount)' % (rss, m.rss_at_mount))
    assert rss - m.rss_at_mount < RSS_GROWTH_LIMIT_KB


def evil_read(m, path='Evil/1.eml'):
    return outcome(lambda: read_file(os.path.join(m.mountpoint, path)))


def test_baseline(server, mnt_fake):
    """The fake server is a usable IMAP server (and the RSS reference)."""
    evil(server)
    m = mnt_fake()
    seen = walk(m.mountpoint)
    assert seen['Evil/1.eml'] == EVIL_DATA
    assert seen['Evil/1.parts/1.txt'] == b'evil\r\n'
    assert seen['INBOX/2.parts/1.txt'] == big_body()
    check_healthy(m)


# ---------------------------------------------------------------------------
# Bytes no parser should accept

def check_hung_up(m, script):
    """The read failed (tried again at most once), and each time the daemon
    hung up long before the server got the endless stream out."""
    assert evil_read(m) == 'EIO'
    assert 1 <= script.hits <= 2
    assert 0 < script.action.sent < HANGUP_BYTES
    check_healthy(m)


@pytest.mark.parametrize('head', [
    FETCH_HEAD + b'"',                      # in a quoted string
    FETCH_HEAD + b'{1}\r\nx X-JUNK ',       # an atom after a literal
    b'* OK ',                               # status text
], ids=['quoted', 'atom', 'text'])
def test_endless_line(server, mnt_fake, head):
    evil(server)
    s = server.on(BODY_FETCH, stream(head, ENDLESS), mailbox='Evil')
    check_hung_up(mnt_fake(), s)


@pytest.mark.parametrize('size', [2 ** 63, 2 ** 64, 10 ** 30, 2 ** 32 + 1])
def test_huge_literal(server, mnt_fake, size):
    """Literal sizes past the 4 GiB limit, some past 64 bits; the
    server sends bytes for as long as the client takes them."""
    evil(server)
    s = server.on(BODY_FETCH, stream(FETCH_HEAD + b'{%d}\r\n' % size,
                                     ENDLESS), mailbox='Evil')
    check_hung_up(mnt_fake(), s)


@pytest.mark.parametrize('tail', [
    b'',
    b'\r\n* BYE shutting down\r\n',
], ids=['close', 'bye'])
def test_literal_cut_short(server, mnt_fake, tail):
    """{1000} announced, 10 bytes sent, then the server closes (after an
    untagged BYE that is, for the client, literal data)."""
    evil(server)
    server.on(BODY_FETCH, raw(FETCH_HEAD + b'{1000}\r\n0123456789' + tail),
              mailbox='Evil')
    m = mnt_fake()
    assert evil_read(m) == 'EIO'
    check_healthy(m)


def test_deep_nesting(server, mnt_fake):
    """BODYSTRUCTURE opens 100,000 lists."""
    evil(server)
    server.on(META_FETCH, raw(b'* 1 FETCH (UID 1 BODYSTRUCTURE ' +
                              b'(' * 100000 + b'\r\n'), mailbox='Evil')
    m = mnt_fake()
    assert evil_read(m, 'Evil/1.parts/1.txt') == 'EIO'
    assert outcome(lambda: listing(m.mountpoint + '/Evil/1.parts')) == \
        'EIO'
    assert evil_read(m) == EVIL_DATA
    check_healthy(m)


def test_many_tiny_arguments(server, mnt_fake):
    """A list of 1.2 million one-byte atoms on 40 lines joined by empty
    literals (each line below the line limit): refused at the parser's
    argument limit before its arguments cost much."""
    evil(server)
    line = b'a ' * 30000 + b'{0}\r\n '
    server.on(META_FETCH, raw(b'* 1 FETCH (UID 1 X-JUNK (' + line * 40 +
                              b'))\r\n'), mailbox='Evil')
    m = mnt_fake()
    assert outcome(lambda: listing(m.mountpoint + '/Evil/1.parts')) == \
        'EIO'
    check_healthy(m)


@pytest.mark.parametrize('pattern,selected,path', [
    (r'^EXAMINE "Evil"', None, 'Evil/1.eml'),
    (BODY_FETCH, 'Evil', 'Evil/1.eml'),
    (META_FETCH, 'Evil', 'Evil/1.parts/1.txt'),
], ids=['examine', 'body', 'bodystructure'])
def test_unexpected_continuation(server, mnt_fake, pattern, selected, path):
    """"+ go ahead" before the reply to a command that sent no literal:
    the connection is out of step, so the command fails."""
    evil(server)
    server.on(pattern, before(b'+ go ahead\r\n'), mailbox=selected)
    m = mnt_fake()
    assert evil_read(m, path) == 'EIO'
    check_healthy(m)


# ---------------------------------------------------------------------------
# Well-formed lies

NIL_STRUCTURES = [
    b'NIL',
    b'()',
    b'"text"',
    b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)',
    b'("TEXT" NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)',
    b'(NIL "PLAIN" ("CHARSET" NIL) NIL NIL NIL NIL NIL NIL NIL NIL NIL)',
    b'("TEXT" "PLAIN" (NIL NIL) NIL NIL NIL 5 NIL NIL NIL NIL NIL)',
    b'("APPLICATION" "PDF" NIL NIL NIL "BASE64" 5 NIL (NIL NIL) NIL NIL)',
    b'("APPLICATION" "PDF" NIL NIL NIL NIL NIL NIL ("ATTACHMENT" '
    b'("FILENAME" NIL)) NIL NIL)',
    b'(("TEXT" "PLAIN" NIL NIL NIL NIL NIL NIL) NIL NIL NIL NIL)',
    b'((NIL NIL NIL NIL NIL NIL NIL) (NIL) NIL NIL NIL NIL)',
    b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 5 NIL NIL NIL 1 NIL NIL)',
    b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 5 NIL NIL NIL NIL)',
    b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 18446744073709551615 '
    b'99999999999999999999 NIL NIL NIL NIL)',
]


def test_nil_in_bodystructure(server, mnt_fake):
    """NIL (or nothing, or a number past 64 bits) where BODYSTRUCTURE
    has strings, lists and sizes, one message each: the parts that make
    sense are shown, reading one gives the section's bytes (decoded) or
    EIO."""
    evil(server, *[Msg(EVIL_DATA, bodystructure=bs)
                   for bs in NIL_STRUCTURES])
    m = mnt_fake()
    seen = walk(m.mountpoint + '/Evil')
    for path, got in seen.items():
        if '/' not in path:
            assert got == EVIL_DATA, path
            continue
        assert re.fullmatch(r'\d+\.parts/[12]\.[a-z]+', path), path
        assert got in (b'evil\r\n', b'', base64.b64decode('evil'),
                       'EIO'), (path, got)
    assert len([p for p in seen if '/' not in p]) == len(NIL_STRUCTURES)
    check_healthy(m)


def index_line(seq, items):
    return b'* %d FETCH (%s)\r\n' % (seq, items)


BOGUS_INDEX = [
    b'UID 0 RFC822.SIZE 10',
    b'UID 4294967296 RFC822.SIZE 10',
    b'UID 18446744073709551617 RFC822.SIZE 10',
    b'UID -5 RFC822.SIZE 10',
    b'UID abc RFC822.SIZE 10',
    b'UID NIL RFC822.SIZE 10',
    b'UID (3) RFC822.SIZE 10',
    b'UID 4 RFC822.SIZE -1',
    b'UID 5 RFC822.SIZE 18446744073709551615',
    b'UID 6 RFC822.SIZE 99999999999999999999999',
    b'UID 7 RFC822.SIZE 5 INTERNALDATE "99-Foo-99999 99:99:99 +9999"',
    b'UID 8 RFC822.SIZE 5 INTERNALDATE NIL FLAGS NIL',
    b'UID 9 RFC822.SIZE 5 FLAGS (((\\Seen)))',
    b'UID',
    b'',
    b'UID 1 RFC822.SIZE 99999',
]


def test_bogus_index(server, mnt_fake):
    """UID FETCH 1:* (UID RFC822.SIZE ...) answered with bogus UIDs and
    sizes besides the one real message: UIDs that are no 32-bit number
    are left out, the first answer for UID 1 counts, a size past
    INT64_MAX fails stat, messages the server then has not are ENOENT."""
    evil(server)
    lines = [index_line(1, b'UID 1 RFC822.SIZE %d' % len(EVIL_DATA))]
    lines += [index_line(i + 2, x) for i, x in enumerate(BOGUS_INDEX)]
    lines += [b'* 99 FETCH NIL\r\n', b'* 99 FETCH "x"\r\n', b'* FETCH\r\n']
    server.on(r'^UID FETCH 1:\* \(UID RFC822', reply(b''.join(lines)),
              mailbox='Evil')
    m = mnt_fake()
    seen = walk(m.mountpoint + '/Evil')
    assert {k: v for k, v in seen.items() if k.endswith('.eml')} == {
        '1.eml': EVIL_DATA, '5.eml': 'EIO', '7.eml': 'ENOENT',
        '8.eml': 'ENOENT', '9.eml': 'ENOENT'}
    check_healthy(m)


@pytest.mark.parametrize('extra', [
    b'* 9 FETCH (UID 99 BODY[]<0> {7}\r\ngarbage)\r\n',
    b'* 9 FETCH (BODY[]<0> {7}\r\ngarbage)\r\n',
    b'* 9 FETCH (BODY[]<0> {7}\r\ngarbage UID 99)\r\n',
    b'* 9 FETCH (UID 99 BODY[]<0> {7}\r\ngarbage UID 1)\r\n',
], ids=['other-uid', 'no-uid', 'uid-after', 'two-uids'])
def test_unasked_uids(server, mnt_fake, extra):
    """Bodies for UIDs not asked for come before the right one."""
    evil(server)
    server.on(BODY_FETCH, before(extra), mailbox='Evil')
    m = mnt_fake()
    assert evil_read(m) == EVIL_DATA
    check_healthy(m)


def test_only_unasked_uids(server, mnt_fake):
    """Only a body for another UID, then OK: the message is gone."""
    evil(server)
    server.on(BODY_FETCH, reply(
        b'* 9 FETCH (UID 99 BODY[]<0> {7}\r\ngarbage)\r\n'), mailbox='Evil')
    m = mnt_fake()
    assert evil_read(m) == 'ENOENT'
    check_healthy(m)


@pytest.mark.parametrize('delta', [-50, 5000])
def test_size_lies(server, mnt_fake, delta):
    """RFC822.SIZE smaller or larger than the message: st_size is what
    the server said until the file is opened, then what it sent; a read
    gives the bytes it sent, and the daemon warns."""
    data = text_message('evil\r\n' * 100, 'evil')
    evil(server, Msg(data, size=len(data) + delta))
    m = mnt_fake()
    p = m.mountpoint + '/Evil/1.eml'
    assert os.stat(p).st_size == len(data) + delta
    assert read_file(p) == data
    assert os.stat(p).st_size == len(data)
    assert 'the server said %d bytes but sent %d' % (
        len(data) + delta, len(data)) in m.stderr()
    check_healthy(m)


def test_partial_fetch_returns_whole_message(server, mnt_fake):
    """Every BODY[]<offset.length> of a three-block message is answered
    with all of it, as BODY[]<0>."""
    data = text_message(big_body(), 'big evil')
    evil(server, Msg(data))
    server.on(BODY_FETCH, reply(b'* 1 FETCH (UID 1 BODY[]<0> {%d}\r\n%s)\r\n'
                                % (len(data), data)), mailbox='Evil')
    m = mnt_fake()
    assert evil_read(m) == data
    check_healthy(m)


def test_partial_fetch_returns_huge_message(server, mnt_fake):
    """Each partial fetch is answered with a 256 MiB BODY[]: the daemon
    reads it through and keeps only what was asked for."""
    head = text_message(b'', 'huge')
    size = len(head) + ENDLESS
    evil(server, Msg(head, size=size))
    s = server.on(BODY_FETCH, stream(
        b'* 1 FETCH (UID 1 BODY[] {%d}\r\n' % size + head, ENDLESS,
        tail=b')\r\n'), mailbox='Evil')
    m = mnt_fake()
    with open(m.mountpoint + '/Evil/1.eml', 'rb') as f:
        assert os.pread(f.fileno(), 4096, 0) == (head + b'x' * 4096)[:4096]
        assert os.pread(f.fileno(), 4096, size - 100) == b'x' * 100
    assert s.hits >= 2 and s.action.sent == len(s.action.head) + ENDLESS
    check_healthy(m)


# ---------------------------------------------------------------------------
# Names

def add_named(server, names, **kw):
    """A mailbox for each name, holding one message that names it."""
    for name in names:
        text = name if isinstance(name, str) else repr(name)
        server.mailbox(name, [Msg(text_message(text + '\r\n', 'n'))], **kw)


def tree_names(m):
    """The top-level names other than INBOX and Good, after checking
    that every file below them reads without error."""
    seen = walk(m.mountpoint)
    assert not [v for v in seen.values() if isinstance(v, str)], seen
    return {k.split('/')[0] for k in seen} - set(GOOD)


def test_invalid_mutf7_names(server, mnt_fake):
    """Only valid, canonical modified UTF-7 names are shown."""
    add_named(server, [
        '&Jjo', '&AGE-', '&-', '&Jjo-', '&AAA-', '&2D3cAA-', '&2D0-',
        '&3AA-', '&ZeVnLIqe', '&U,BTFw-&ZeVnLIqe-', '&', '&&-', '&=-',
        '&AGEAYgBj-', '&Jjr-'])
    server.mailbox(b'caf\xe9', literal=True)
    m = mnt_fake()
    assert tree_names(m) == {'&', '\u263a', '\U0001f400'}
    check_healthy(m)


def test_dot_and_slash_names(server, mnt_fake):
    """'.', '..' and '/' in names, with '/', '.' and NIL as the
    hierarchy delimiter: escaped, or left out when a level is empty."""
    for delim, names in (('/', ['..', '.', 'a/../b', '/etc', '../../x',
                                'a//b', 'c/']),
                         ('.', ['..', 'a/b', '/etc', '%2F', '%2E%2E']),
                         (None, ['.', '..', 'x/y'])):
        add_named(server, names, delim=delim)
    m = mnt_fake()
    assert tree_names(m) == {
        '%2E%2E', '%2E', 'a', '%2Fetc', 'a%2Fb', '%252F', '%252E%252E',
        'x%2Fy'}
    assert listing(m.mountpoint + '/a') == ['%2E%2E']
    assert read_file(m.mountpoint + '/a/%2E%2E/b/1.eml').endswith(
        b'\r\n\r\na/../b\r\n')
    check_healthy(m)


def test_control_char_names(server, mnt_fake):
    """Control characters, NUL, CR LF and 8-bit bytes in names (as
    literals): none of these is modified UTF-7, none is shown."""
    add_named(server, [b'tab\there', b'bell\x07', b'esc\x1b[0m', b'del\x7f',
                       b'nul\x00name', b'cr\r\nlf', b'\xff\xfe', b'\x00'],
              literal=True)
    m = mnt_fake()
    assert tree_names(m) == set()
    check_healthy(m)


PART_NAMES = [
    b'"../../etc/passwd"', b'"/etc/shadow"', b'".."', b'"."', b'"a/b/../c"',
    b'"\x01\x1b[31mred"', b'"=?UTF-8?B?Li4vLi4vZXRjL3Bhc3N3ZA==?="',
    b'"' + b'x' * 400 + b'.pdf"', b'{9}\r\nab\x00cd.txt', b'"back\\\\slash"',
    b'""', b'"/"', b'"//"', b'"../"',
]


def test_part_names_stay_inside(server, mnt_fake):
    """Attachment file names that are paths, dots, control characters,
    NUL, RFC 2047 and RFC 2231 encoded paths, or too long: every part is
    listed in N.parts/ under a safe name and reads as its own bytes."""
    atts = [(b'("FILENAME" %s)' % n, b'part %d\r\n' % (i + 2))
            for i, n in enumerate(PART_NAMES)]
    atts.append((b'("FILENAME*" "UTF-8\'\'..%2F..%2Fetc%2Fshadow")',
                 b'part %d\r\n' % (len(atts) + 2)))
    evil(server, mixed(b'text\r\n', atts))
    m = mnt_fake()
    seen = walk(m.mountpoint + '/Evil/1.parts')
    assert len(seen) == len(atts) + 1
    for name, got in seen.items():
        assert len(name.encode()) <= 255 and not name.startswith('.')
        assert not re.search(r'[\x00-\x1f\x7f]', name), name
        section = int(re.match(r'(\d+)[-.]', name).group(1))
        assert got == (b'text\r\n' if section == 1 else
                       b'part %d\r\n' % section), name
    assert '2-.._.._etc_passwd' in seen and '3-_etc_shadow' in seen
    check_healthy(m)





def test_big_structure_spares_the_others(server, mnt_fake):
    """Message 2 of Evil has a BODYSTRUCTURE of 1500 parts (one 90 KB
    line, as Dovecot sends it): message 1's parts must still show."""
    leaf = b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 1 1 NIL NIL NIL NIL)'
    bs = b'(' + leaf * 1500 + b' "MIXED" NIL NIL NIL NIL)'
    evil(server, Msg(EVIL_DATA), Msg(EVIL_DATA, bodystructure=bs))
    m = mnt_fake()
    assert evil_read(m, 'Evil/1.parts/1.txt') == b'evil\r\n'
    assert listing(m.mountpoint + '/Evil/1.parts') == ['1.txt']
    got = outcome(lambda: len(listing(m.mountpoint + '/Evil/2.parts')))
    assert got in ('EIO', 1500), got
    check_healthy(m)

def test_unasked_structures(server, mnt_fake):
    """UID FETCH 1:* (UID ENVELOPE BODYSTRUCTURE) in a mailbox of one
    message also brings 128 other UIDs, each with 1999 parts (6 MiB on
    the wire): only what the listing has may be kept."""
    leaf = b'("A" "B" NIL NIL NIL NIL 1)'
    bs = b'(' + leaf * 1999 + b' "MIXED" NIL NIL NIL NIL)'
    evil(server)
    server.on(META_FETCH, before(b''.join(
        b'* %d FETCH (UID %d BODYSTRUCTURE %s)\r\n' % (u, u, bs)
        for u in range(2, 130))), mailbox='Evil')
    m = mnt_fake()
    assert listing(m.mountpoint + '/Evil/1.parts') == ['1.txt']
    assert evil_read(m, 'Evil/1.parts/1.txt') == b'evil\r\n'
    check_healthy(m)


def test_encoded_part_larger_than_said(server, mnt_fake):
    """A base64 part that BODYSTRUCTURE says is 8 bytes comes as 64 MiB
    (without BINARY imapfs fetches the whole part to decode it): it may
    fail or be cut, but not be held in memory whole."""
    bs = (b'(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 6 1 NIL NIL NIL NIL)'
          b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 8 NIL NIL '
          b'NIL NIL) "MIXED" ("BOUNDARY" "b") NIL NIL NIL)')
    evil(server, Msg(EVIL_DATA, bodystructure=bs))
    big = 64 * 1024 * 1024
    server.on(r'BODY\.PEEK\[2\]', stream(
        b'* 1 FETCH (UID 1 BODY[2] {%d}\r\n' % big, big, fill=b'QUFB',
        tail=b')\r\n'), mailbox='Evil')
    m = mnt_fake()
    got = evil_read(m, 'Evil/1.parts/2.bin')
    size = got if isinstance(got, str) else len(got)
    assert size == 'EIO' or size <= 1024 * 1024
    check_healthy(m)
