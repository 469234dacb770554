# SPDX-License-Identifier: GPL-2.0-or-later
"""The live view: what a second, independent client (imaplib, straight to
Dovecot) changes shows through the mount without a rescan. Every test
runs twice: with IDLE (changes must show within 2 s, with polling set
far beyond that, so only IDLE can explain them) and with IDLE and NOTIFY
hidden from the capability list (within the poll interval).

Each test uses mailboxes of its own on a server shared by the module."""

import errno
import os
import re
import time

import pytest

import imapfs_fixtures as F

IDLE_BOUND = 2.0
POLL = 2                # poll= for the polling runs
POLL_BOUND = POLL + 2.0


@pytest.fixture(scope='module', params=['idle', 'poll'])
def live_server(request, ca):
    caps = None
    if request.param == 'poll':
        caps = F.capabilities_without('IDLE', 'NOTIFY')
    d = F.Dovecot(ca, imap_capability=caps)
    d.mode = request.param
    try:
        yield d.start()
    finally:
        d.stop()


def bound(srv):
    return IDLE_BOUND if srv.mode == 'idle' else POLL_BOUND


def mount_live(mount, srv, *extra, poll=None, debug=False):
    if poll is None:
        poll = 60 if srv.mode == 'idle' else POLL
    opts = ['cafile=' + srv.cafile, 'poll=%d' % poll] + list(extra)
    return mount(server=srv, options=opts, debug=debug)


class Client:
    """The other client."""

    def __init__(self, srv):
        self.c = srv.client()

    def close(self):
        try:
            self.c.logout()
        except Exception:
            pass

    def create(self, name, n=0, size=200):
        F.imap_check(self.c.create(F.imap_quote(name)), 'CREATE')
        if n:
            self.append(name, n, size)

    def append(self, name, n=1, size=200, tag='live'):
        msgs = [message('%s %d' % (tag, i), size) for i in range(n)]
        F.multiappend(self.c, name, [(None, None, m) for m in msgs])
        return msgs

    def select(self, name):
        F.imap_check(self.c.select(F.imap_quote(name)), 'SELECT')

    def uids(self, name):
        self.select(name)
        data = F.imap_check(self.c.uid('SEARCH', 'ALL'), 'SEARCH')
        return [int(x) for x in data[0].split()]

    def uid(self, *args):
        return F.imap_check(self.c.uid(*args), args[0])

    def expunge(self, name, uid):
        self.select(name)
        self.uid('STORE', str(uid), '+FLAGS.SILENT', r'(\Deleted)')
        F.imap_check(self.c.expunge(), 'EXPUNGE')

    def uidvalidity(self, name):
        data = F.imap_check(self.c.status(F.imap_quote(name),
                                          '(UIDVALIDITY)'), 'STATUS')
        return int(re.search(rb'UIDVALIDITY (\d+)', data[0]).group(1))


def message(subject, size):
    head = ('From: Other <other@example.org>\r\nTo: alice@example.org\r\n'
            'Subject: %s\r\nMessage-ID: <%s@example.org>\r\n\r\n'
            % (subject, subject.replace(' ', '.')))
    body = ('%s\r\n' % subject) * max(1, size // (len(subject) + 2))
    return (head + body).encode()


@pytest.fixture
def other(live_server):
    c = Client(live_server)
    yield c
    c.close()


def names(path):
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return set()


def unique(request):
    return re.sub(r'\W', '', request.node.name)[:40]


def live_box(mount, srv, other, request, n, *extra, size=200):
    """A mailbox of its own with n messages, and the mount: (box, dir)."""
    box = unique(request)
    other.create(box, n, size)
    m = mount_live(mount, srv, *extra)
    return box, os.path.join(m.mountpoint, box)


def test_append_shows(mount, live_server, other, request):
    box, d = live_box(mount, live_server, other, request, 3)
    before = names(d)
    assert len([n for n in before if n.endswith('.eml')]) == 3
    msgs = other.append(box, 1, tag='arrived')
    new = max(other.uids(box))
    name = '%d.eml' % new
    assert F.wait_for(lambda: name in names(d), bound(live_server)), \
        'new message not listed'
    with open(os.path.join(d, name), 'rb') as f:
        assert f.read() == msgs[0]


def test_expunge_shows_and_kernel_forgets(mount, live_server, other,
                                          request):
    box, d = live_box(mount, live_server, other, request, 3)
    uid = other.uids(box)[1]
    path = os.path.join(d, '%d.eml' % uid)
    assert os.stat(path).st_size > 0     # the kernel now knows the name
    other.expunge(box, uid)
    assert F.wait_for(lambda: '%d.eml' % uid not in names(d),
                      bound(live_server)), 'expunged message still listed'
    # Without an invalidation the kernel would keep its entry for an
    # hour (message entries do not time out sooner).
    with pytest.raises(FileNotFoundError):
        os.stat(path)
    assert '%d.parts' % uid not in names(d)


def test_move_shows_on_both_sides(mount, live_server, other, request):
    src = unique(request) + 'A'
    dst = unique(request) + 'B'
    other.create(src, 2)
    other.create(dst, 1)
    m = mount_live(mount, live_server)
    a = os.path.join(m.mountpoint, src)
    b = os.path.join(m.mountpoint, dst)
    assert len(names(a)) == 4 and len(names(b)) == 2
    uid = other.uids(src)[0]
    other.uid('MOVE', str(uid), F.imap_quote(dst))
    new = max(other.uids(dst))
    assert F.wait_for(lambda: '%d.eml' % uid not in names(a) and
                      '%d.eml' % new in names(b), bound(live_server))


def test_flags_show_in_xattrs(mount, live_server, other, request):
    box, d = live_box(mount, live_server, other, request, 2)
    uid = other.uids(box)[0]
    path = os.path.join(d, '%d.eml' % uid)
    names(d)
    assert os.getxattr(path, 'user.imap.flags') == b''
    modseq = os.getxattr(path, 'user.imap.modseq')
    other.uid('STORE', str(uid), '+FLAGS', r'(\Flagged $Label1)')

    def flagged():
        got = set(os.getxattr(path, 'user.imap.flags').decode().split())
        return got == {'\\Flagged', '$Label1'}
    assert F.wait_for(flagged, bound(live_server))
    assert int(os.getxattr(path, 'user.imap.modseq')) > int(modseq)


def test_mailbox_tree_changes_show(mount, live_server, other, request):
    base = unique(request)
    other.create(base + 'Old', 1)
    other.create(base + 'Doomed')
    # Mailbox changes come from the poll in both runs (no NOTIFY).
    m = mount_live(mount, live_server, poll=POLL)
    root = m.mountpoint
    assert {base + 'Old', base + 'Doomed'} <= names(root)
    other.create(base + 'New')
    F.imap_check(other.c.delete(F.imap_quote(base + 'Doomed')), 'DELETE')
    F.imap_check(other.c.rename(F.imap_quote(base + 'Old'),
                                F.imap_quote(base + 'Renamed')), 'RENAME')

    def shown():
        got = names(root)
        return (base + 'New' in got and base + 'Renamed' in got and
                base + 'Doomed' not in got and base + 'Old' not in got)
    assert F.wait_for(shown, POLL_BOUND)
    assert len(names(os.path.join(root, base + 'Renamed'))) == 2


def test_recreated_mailbox(mount, live_server, other, request):
    box, d = live_box(mount, live_server, other, request, 2)
    old_uids = other.uids(box)
    old_validity = other.uidvalidity(box)
    f = open(os.path.join(d, '%d.eml' % old_uids[0]), 'rb')
    try:
        assert f.read(10)
        other.c.close()
        F.imap_check(other.c.delete(F.imap_quote(box)), 'DELETE')
        other.create(box)
        other.append(box, 3, tag='reborn')
        assert other.uidvalidity(box) != old_validity
        new_names = {'%d.eml' % u for u in other.uids(box)}
        assert F.wait_for(
            lambda: {n for n in names(d) if n.endswith('.eml')} ==
            new_names, bound(live_server))
        with pytest.raises(OSError) as e:
            os.pread(f.fileno(), 10, 0)
        assert e.value.errno == errno.ESTALE
    finally:
        f.close()
    with open(os.path.join(d, sorted(new_names)[0]), 'rb') as g:
        assert b'reborn' in g.read()


@pytest.mark.parametrize('cache', ['memory', 'none'])
def test_open_file_of_expunged_message(mount, live_server, other, request,
                                       cache):
    box, d = live_box(mount, live_server, other, request, 1,
                      'cache=' + cache, size=3000000)
    uid = other.uids(box)[0]
    path = os.path.join(d, '%d.eml' % uid)
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.pread(fd, 4096, 0)
        assert head.startswith(b'From: Other')
        other.expunge(box, uid)
        assert F.wait_for(lambda: '%d.eml' % uid not in names(d),
                          bound(live_server))
        if cache == 'memory':
            # What was read stays readable, byte for byte.
            assert os.pread(fd, 4096, 0) == head
        else:
            # Never read (beyond the kernel's readahead), nothing kept:
            # the server has no such message any more.
            with pytest.raises(OSError) as e:
                os.pread(fd, 4096, 2500000)
            assert e.value.errno == errno.EIO
    finally:
        os.close(fd)


def commands(trace):
    return re.findall(r'C: A\d+ (\S+)', trace)


def settled(sent):
    """Whether the last two polls came after every other command."""
    quiet = ('LIST', 'UNSELECT', 'IDLE')
    others = [i for i, c in enumerate(sent) if c not in quiet]
    return sent[(others[-1] + 1) if others else 0:].count('LIST') >= 2


def test_unchanged_account_costs_constant_commands(mount, live_server,
                                                  other, request):
    small = unique(request) + 'S'
    large = unique(request) + 'L'
    other.create(small, 5)
    other.create(large, 1500, size=100)
    m = mount_live(mount, live_server, poll=1, debug=True)
    for box in (small, large):
        assert len(names(os.path.join(m.mountpoint, box))) > 0
    # The first listings and refreshes done: two polls in a row sent
    # nothing else (a loaded machine may need more than a few seconds).
    assert F.wait_for(lambda: settled(commands(m.stderr())), 30)
    start = len(commands(m.stderr()))
    time.sleep(4.5)         # four polls or so
    during = commands(m.stderr())[start:]
    polls = during.count('LIST')
    assert polls >= 3
    # Only the poll itself: no EXAMINE, FETCH or SEARCH for the 1,500
    # messages; with LIST-STATUS one command per poll (and an UNSELECT
    # when the connection it got had a mailbox open).
    assert set(during) <= {'LIST', 'UNSELECT'}, during
    assert during.count('UNSELECT') <= 4
