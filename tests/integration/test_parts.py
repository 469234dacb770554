# SPDX-License-Identifier: GPL-2.0-or-later
"""<UID>.parts/: every message's MIME parts as files, transfer-decoded.

For each message of a corpus of hard cases (parts_corpus.py), the parts
directory must hold what Python's email package derives from the same raw
bytes: the same leaves under the same IMAP section numbers, each with
byte-identical decoded content and st_size equal to its length, and an
attached message as N.eml (its raw bytes, checked against BODY[N]) with
its own N.parts/. Run against Dovecot with BINARY (the server decodes) and
with BINARY hidden (imapfs decodes)."""

import email
import email.policy
import errno
import os
import re
import subprocess

import pytest

import imapfs_fixtures as F
import parts_corpus
from imapfs_fixtures import tool

BOX = 'Parts'


def _start(ca, caps):
    d = F.Dovecot(ca, imap_capability=caps)
    d.start()
    try:
        d.corpus = F.Corpus(bulk=0, big=False).load(d)
        c = d.client()
        try:
            F.imap_check(c.create(BOX), 'CREATE')
            F.multiappend(c, BOX, [(None, None, raw)
                                   for _, raw in parts_corpus.MESSAGES])
        finally:
            c.logout()
    except BaseException:
        d.stop()
        raise
    return d


@pytest.fixture(scope='module', params=['binary', 'no-binary'])
def parts_server(request, ca):
    caps = None if request.param == 'binary' else \
        F.capabilities_without('BINARY')
    d = _start(ca, caps)
    try:
        d.has_binary = request.param == 'binary'
        yield d
    finally:
        d.stop()


def uids(server):
    """key -> UID of the corpus messages (appended in order)."""
    c = server.client()
    try:
        F.imap_check(c.select(BOX, readonly=True), 'EXAMINE')
        data = F.imap_check(c.uid('SEARCH', 'ALL'), 'SEARCH')
        got = [int(x) for x in data[0].split()]
    finally:
        c.logout()
    assert len(got) == len(parts_corpus.MESSAGES)
    return {key: uid for (key, _), uid in zip(parts_corpus.MESSAGES, got)}


def raw_of(key):
    return dict(parts_corpus.MESSAGES)[key]


def server_section(server, uid, section):
    c = server.client()
    try:
        F.imap_check(c.select(BOX, readonly=True), 'EXAMINE')
        typ, data = c.uid('FETCH', str(uid), '(BODY.PEEK[%s])' % section)
        assert typ == 'OK'
        return data[0][1]
    finally:
        c.logout()


def python_leaves(msg):
    """[(section, part)] of a parsed message, numbered as IMAP does
    (RFC 3501 6.4.5), attached messages as one leaf each."""
    def walk(part, section):
        if part.get_content_maintype() == 'multipart':
            out = []
            for i, sub in enumerate(part.get_payload(), 1):
                out += walk(sub, '%s.%d' % (section, i))
            return out
        return [(section, part)]

    if msg.get_content_maintype() != 'multipart':
        return [('1', msg)]
    out = []
    for i, sub in enumerate(msg.get_payload(), 1):
        out += walk(sub, str(i))
    return out


def is_message(part):
    return part.get_content_type() in ('message/rfc822', 'message/global')


def split_name(name):
    """'1.2.html' -> ('1.2', '.html'); '3-a.pdf' -> ('3', '-a.pdf')."""
    m = re.match(r'^(\d+(?:\.\d+)*)([-.].*)$', name)
    assert m, name
    return m.group(1), m.group(2)


def check_dir(path, msg, server=None, uid=None, prefix=''):
    """Compares parts directory `path` with the parsed message `msg`."""
    names = sorted(os.listdir(path))
    files = {}
    dirs = set()
    for n in names:
        full = os.path.join(path, n)
        if os.path.isdir(full):
            assert n.endswith('.parts'), n
            dirs.add(n[:-len('.parts')])
        else:
            sec, rest = split_name(n)
            assert sec not in files, (n, files)
            files[sec] = n
    leaves = python_leaves(msg)
    assert sorted(files) == sorted(s for s, _ in leaves), (path, names)
    for sec, part in leaves:
        full = os.path.join(path, files[sec])
        with open(full, 'rb') as f:
            got = f.read()
        assert os.stat(full).st_size == len(got), full
        if is_message(part):
            assert files[sec] == sec + '.eml'
            assert sec in dirs, (sec, dirs)
            if server is not None:
                assert got == server_section(server, uid, prefix + sec)
            inner = email.message_from_bytes(got, policy=email.policy.compat32)
            check_dir(os.path.join(path, sec + '.parts'), inner, server,
                      uid, prefix + sec + '.')
            continue
        want = part.get_payload(decode=True)
        assert got == want, (full, got[:80], want[:80])
        if part.get_filename() is None:
            assert re.fullmatch(re.escape(sec) + r'\.[a-z0-9]+', files[sec])
    assert dirs <= set(files), dirs


@pytest.fixture(scope='module')
def parts_mount(parts_server, tmp_path_factory, imapfs_bin):
    tmp = tmp_path_factory.mktemp('parts')
    m = F.Mount(parts_server.url('imaps'), str(tmp / 'mnt'),
                ['cafile=' + parts_server.cafile],
                password=F.USERS['alice'], workdir=str(tmp / 'work'))
    m.start()
    try:
        yield m
    finally:
        m.stop()


@pytest.mark.parametrize('key', [k for k, _ in parts_corpus.MESSAGES])
def test_parts_match_python_email(parts_server, parts_mount, key):
    uid = uids(parts_server)[key]
    msg = email.message_from_bytes(raw_of(key), policy=email.policy.compat32)
    path = os.path.join(parts_mount.mountpoint, BOX, '%d.parts' % uid)
    check_dir(path, msg, parts_server, uid)


def names_of(parts_server, parts_mount, key, sub=''):
    uid = uids(parts_server)[key]
    return sorted(os.listdir(os.path.join(parts_mount.mountpoint, BOX,
                                          '%d.parts' % uid, sub)))


def test_names_follow_the_design(parts_server, parts_mount):
    assert names_of(parts_server, parts_mount, 'simple') == ['1.txt']
    assert names_of(parts_server, parts_mount, 'invoice') == \
        ['1.1.txt', '1.2.html', '2-Rechnung März.pdf']
    assert names_of(parts_server, parts_mount, 'nested') == \
        ['1.txt', '2.1.html', '2.2.eml', '2.2.parts']
    assert names_of(parts_server, parts_mount, 'nested', '2.2.parts') == \
        ['1.txt', '2-äöü.bin']
    assert names_of(parts_server, parts_mount, 'names') == \
        ['1-Grüße und Kuesse.txt', '2-übersicht.txt', '3.bin',
         '4-same.txt', '5-same.txt', '6-.._.._etc_passwd', '7.txt']
    assert names_of(parts_server, parts_mount, 'single_b64') == ['1.png']


def test_encoded_size_is_never_shown(parts_server, parts_mount):
    uid = uids(parts_server)['invoice']
    pdf = os.path.join(parts_mount.mountpoint, BOX, '%d.parts' % uid,
                       '2-Rechnung März.pdf')
    # st_size before any read, from the listing.
    assert os.stat(pdf).st_size == len(parts_corpus.PDF)
    with open(pdf, 'rb') as f:
        assert f.read() == parts_corpus.PDF


def test_grep_finds_text_inside_base64(parts_server, parts_mount):
    uid = uids(parts_server)['invoice']
    r = tool('grep', '-rl', 'Grüße <b>aus</b>',
             os.path.join(parts_mount.mountpoint, BOX, '%d.parts' % uid))
    assert r.stdout.decode().strip().endswith('/1.2.html')


def test_charset_attribute(parts_server, parts_mount):
    uid = uids(parts_server)['names']
    d = os.path.join(parts_mount.mountpoint, BOX, '%d.parts' % uid)
    assert os.getxattr(os.path.join(d, '1-Grüße und Kuesse.txt'),
                       'user.mail.charset') == b'iso-8859-1'
    assert os.getxattr(os.path.join(d, '2-übersicht.txt'),
                       'user.mail.charset') == b'UTF-8'
    assert 'user.mail.charset' not in os.listxattr(os.path.join(d, '3.bin'))
    with pytest.raises(OSError) as e:
        os.getxattr(os.path.join(d, '3.bin'), 'user.mail.charset')
    assert e.value.errno == errno.ENODATA


def test_parts_are_read_only(parts_server, parts_mount):
    uid = uids(parts_server)['simple']
    d = os.path.join(parts_mount.mountpoint, BOX, '%d.parts' % uid)
    part = os.path.join(d, '1.txt')
    assert os.stat(part).st_mode & 0o777 == 0o444
    assert os.stat(d).st_mode & 0o777 == 0o555
    for op, want in ((lambda: open(part, 'ab'), errno.EPERM),
                     (lambda: os.unlink(part), errno.EPERM),
                     (lambda: open(os.path.join(d, 'new'), 'wb'),
                      errno.EPERM),
                     (lambda: os.mkdir(os.path.join(d, 'x')), errno.EPERM),
                     (lambda: os.rmdir(d), errno.EPERM),
                     (lambda: os.rename(part, part + '.x'), errno.EPERM)):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == want
    assert os.path.exists(part)


def test_every_message_has_a_parts_directory(parts_server, parts_mount):
    names = os.listdir(os.path.join(parts_mount.mountpoint, BOX))
    emls = {n[:-4] for n in names if n.endswith('.eml')}
    parts = {n[:-6] for n in names if n.endswith('.parts')}
    assert emls == parts and len(emls) == len(parts_corpus.MESSAGES)


def test_parts_no_hides_them(parts_server, mount):
    m = mount(server=parts_server,
              options=['cafile=' + parts_server.cafile, 'parts=no'])
    box = os.path.join(m.mountpoint, BOX)
    names = os.listdir(box)
    assert names and all(n.endswith('.eml') for n in names)
    uid = uids(parts_server)['simple']
    assert not os.path.exists(os.path.join(box, '%d.parts' % uid))


def test_listing_parts_fetches_no_body(parts_server, mount):
    """ls -lR fetches BODYSTRUCTURE in one command for the mailbox and,
    with BINARY, no part content at all (sizes from BINARY.SIZE)."""
    m = mount(server=parts_server, debug=True)
    tool('ls', '-lR', os.path.join(m.mountpoint, BOX))
    log = m.stderr()
    assert len(re.findall(r'\bC: A\d+ UID FETCH \S+ \(UID ENVELOPE',
                          log)) == 1
    bodies = re.findall(r'\bC: A\d+ UID FETCH \S+ \(UID (?:BODY|BINARY)\.PEEK',
                        log)
    if parts_server.has_binary:
        # Only where the server refused to decode (Dovecot: NO [PARSE]
        # for the malformed quoted-printable) does imapfs fetch the part
        # to decode it itself.
        wrong = uids(parts_server)['wrong']
        assert bodies == ['C: A%s UID FETCH %d (UID BODY.PEEK' % (n, wrong)
                          for n in re.findall(
                              r'\bC: A(\d+) UID FETCH %d \(UID BODY' % wrong,
                              log)]
        assert len(bodies) == 1
        # BINARY.SIZE for the whole mailbox, pipelined: every command
        # goes out before the first answer comes back.
        lines = log.splitlines()
        asked = [i for i, l in enumerate(lines)
                 if re.search(r'\bC: A\d+ UID FETCH \d+ \(UID BINARY\.SIZE',
                              l)]
        answered = [i for i, l in enumerate(lines)
                    if re.search(r'\bS: \* \d+ FETCH \(UID \d+ BINARY\.SIZE',
                                 l)]
        assert len(asked) == len(parts_corpus.MESSAGES) - 1  # not 'simple'
        assert max(asked) < min(answered)
    else:
        assert 'BINARY' not in log


def test_mail_attributes_match_the_headers(parts_server, parts_mount):
    for key, raw in parts_corpus.MESSAGES:
        uid = uids(parts_server)[key]
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        path = os.path.join(parts_mount.mountpoint, BOX, '%d.eml' % uid)
        got = {n: os.getxattr(path, n).decode() for n in os.listxattr(path)}
        assert got['user.mail.subject'] == str(msg['subject'])
        frm = msg['from'].addresses[0]
        assert got['user.mail.from'] == '%s <%s>' % (frm.display_name,
                                                      frm.addr_spec)
        to = msg['to'].addresses[0]
        assert got['user.mail.to'] == '%s <%s>' % (to.display_name,
                                                    to.addr_spec)
        assert got['user.mail.message-id'] == msg['message-id']
        # As sent: compat32 keeps the header unparsed.
        assert got['user.mail.date'] == email.message_from_bytes(
            raw, policy=email.policy.compat32)['date']
