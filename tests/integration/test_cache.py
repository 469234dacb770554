# SPDX-License-Identifier: GPL-2.0-or-later
"""The block cache, the listing cache and prefetch, seen from outside:
what a mount reads is the server's bytes, a remount over the same cache
directory serves them without fetching, and the cache directory is
private and used by one mount at a time. Commands are counted in the
-d trace ("C: <tag> <command>")."""

import os
import re
import stat

import pytest

import imapfs_fixtures as F
from imapfs_fixtures import tool


def commands(m, pattern):
    """The traced client commands of mount m that match pattern."""
    rx = re.compile(pattern)
    return [line for line in m.stderr().splitlines()
            if re.search(r'\bC: A\d+ ', line) and rx.search(line)]


BODY = r'BODY\.PEEK\[\]'
FULL_INDEX = r'UID FETCH 1:\* \(UID RFC822\.SIZE'


def cache_opts(server, cache_dir, *more):
    """parts=no: these tests are about message files; grep -r and ls
    would otherwise also walk every <UID>.parts/ (see test_parts.py)."""
    return ['cafile=' + server.cafile, 'cache_dir=' + str(cache_dir),
            'parts=no'] + list(more)


def plain_opts(server):
    return ['cafile=' + server.cafile, 'parts=no']


def read_all(root, box):
    out = {}
    for uid, msg in box.messages.items():
        with open(os.path.join(root, box.path, msg.filename), 'rb') as f:
            out[uid] = f.read()
    return out


def test_remount_reads_from_disk_without_fetching(mount, corpus, tmp_path):
    box = corpus['INBOX']
    opts = cache_opts(mount.server, tmp_path / 'cache')
    m = mount(options=opts, debug=True)
    first = read_all(m.mountpoint, box)
    assert first == {u: msg.data for u, msg in box.messages.items()}
    assert commands(m, BODY), 'the first read should fetch'
    m.stop()

    m2 = mount(options=opts, debug=True, name='mnt2')
    assert read_all(m2.mountpoint, box) == first
    assert commands(m2, BODY) == []


def test_cache_dir_is_private(mount, tmp_path):
    cache = tmp_path / 'deep' / 'cache'
    m = mount(options=cache_opts(mount.server, cache))
    os.listdir(os.path.join(m.mountpoint, 'INBOX'))
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700


def test_second_mount_on_same_cache_dir_is_refused(mount, tmp_path):
    opts = cache_opts(mount.server, tmp_path / 'cache')
    mount(options=opts)
    second = mount(options=opts, name='mnt2', start=False)
    with pytest.raises(F.FixtureError):
        second.start()
    assert second.returncode == 1
    assert 'in use' in second.stderr()
    assert second.stderr().startswith('imapfs: ')


@pytest.mark.parametrize('mode', ['none', 'memory'])
def test_cache_modes_without_disk(mount, corpus, tmp_path, mode):
    cache = tmp_path / 'cache'
    m = mount(options=cache_opts(mount.server, cache, 'cache=' + mode))
    box = corpus['INBOX']
    assert read_all(m.mountpoint, box) == \
        {u: msg.data for u, msg in box.messages.items()}
    assert not cache.exists()


def test_listing_survives_remount(mount, corpus, tmp_path):
    opts = cache_opts(mount.server, tmp_path / 'cache')
    m = mount(options=opts, debug=True)
    names = sorted(os.listdir(os.path.join(m.mountpoint, 'Bulk')))
    assert len(names) == len(corpus['Bulk'].messages)
    assert len(commands(m, FULL_INDEX)) >= 1
    m.stop()

    m2 = mount(options=opts, debug=True, name='mnt2')
    assert sorted(os.listdir(os.path.join(m2.mountpoint, 'Bulk'))) == names
    st = os.stat(os.path.join(m2.mountpoint, 'Bulk', names[0]))
    uid = int(names[0].split('.')[0])
    assert st.st_size == corpus['Bulk'].messages[uid].size
    assert commands(m2, FULL_INDEX) == []


def add_message(server, mailbox, text):
    c = server.client()
    try:
        F.imap_check(c.append(F.imap_quote(mailbox), None, None, text),
                     'APPEND')
    finally:
        c.logout()


def expunge_uid(server, mailbox, uid):
    c = server.client()
    try:
        F.imap_check(c.select(F.imap_quote(mailbox)), 'SELECT')
        F.imap_check(c.uid('STORE', str(uid), '+FLAGS.SILENT', r'(\Deleted)'),
                     'STORE')
        F.imap_check(c.uid('EXPUNGE', str(uid)), 'UID EXPUNGE')
    finally:
        c.logout()


def test_remount_refreshes_only_the_changes(mount, fresh_server, tmp_path):
    srv = fresh_server
    box = srv.corpus['INBOX']
    opts = cache_opts(srv, tmp_path / 'cache')
    m = mount(options=opts, server=srv, debug=True)
    before = set(os.listdir(os.path.join(m.mountpoint, 'INBOX')))
    m.stop()

    gone = min(box.messages)
    expunge_uid(srv, 'INBOX', gone)
    c = srv.client()
    c.select('INBOX')
    F.imap_check(c.uid('STORE', str(max(box.messages)), '+FLAGS.SILENT',
                       r'(\Flagged)'), 'STORE')
    c.logout()
    add_message(srv, 'INBOX', b'Subject: new\r\n\r\nfresh mail\r\n')
    m2 = mount(options=opts, server=srv, debug=True, name='mnt2')
    after = set(os.listdir(os.path.join(m2.mountpoint, 'INBOX')))
    new_uid = max(box.messages) + 1
    assert after == (before - {'%d.eml' % gone}) | {'%d.eml' % new_uid}
    with open(os.path.join(m2.mountpoint, 'INBOX', '%d.eml' % new_uid),
              'rb') as f:
        assert f.read() == b'Subject: new\r\n\r\nfresh mail\r\n'
    assert commands(m2, FULL_INDEX) == []
    assert commands(m2, r'UID FETCH %d:\*' % (max(box.messages) + 1))
    assert commands(m2, r'UID SEARCH RETURN \(ALL\)')
    # The flag change comes alone (CONDSTORE), not with a full listing.
    assert commands(m2, r"\(UID FLAGS( MODSEQ)?\) \(CHANGEDSINCE \d+\)")


def test_recreated_mailbox_is_not_served_from_cache(mount, fresh_server,
                                                     tmp_path):
    srv = fresh_server
    c = srv.client()
    F.imap_check(c._simple_command('CREATE', 'Recycled'), 'CREATE')
    c.logout()
    old = b'Subject: old\r\n\r\nthe first life of UID 1\r\n'
    new = b'Subject: new\r\n\r\nthe second life of UID 1, longer\r\n'
    add_message(srv, 'Recycled', old)
    opts = cache_opts(srv, tmp_path / 'cache')
    m = mount(options=opts, server=srv)
    with open(os.path.join(m.mountpoint, 'Recycled', '1.eml'), 'rb') as f:
        assert f.read() == old
    m.stop()

    c = srv.client()
    F.imap_check(c._simple_command('DELETE', 'Recycled'), 'DELETE')
    F.imap_check(c._simple_command('CREATE', 'Recycled'), 'CREATE')
    c.logout()
    add_message(srv, 'Recycled', new)
    m2 = mount(options=opts, server=srv, name='mnt2')
    with open(os.path.join(m2.mountpoint, 'Recycled', '1.eml'), 'rb') as f:
        assert f.read() == new


def test_grep_prefetches_in_batches(mount, corpus, tmp_path):
    box = corpus['Bulk']
    m = mount(options=cache_opts(mount.server, tmp_path / 'cache'),
              debug=True)
    r = tool('grep', '-rl', F.GREP_WORD, 'Bulk', cwd=m.mountpoint)
    found = {int(os.path.basename(p).split('.')[0])
             for p in r.stdout.decode().split()}
    want = {u for u, msg in box.messages.items()
            if F.GREP_WORD.encode() in msg.data}
    assert found == want
    fetches = commands(m, BODY)
    # Messages come many to a command, not one round trip each.
    assert 0 < len(fetches) < len(box.messages) / 4
    assert commands(m, r'UID FETCH \d+[:,]\d+.* \(UID BODY\.PEEK')


def test_readahead_within_a_large_message(mount, corpus, tmp_path):
    box = corpus['INBOX']
    uid, msg = max(box.messages.items(), key=lambda kv: kv[1].size)
    assert msg.size > 1024 * 1024
    m = mount(options=cache_opts(mount.server, tmp_path / 'cache'),
              debug=True)
    with open(os.path.join(m.mountpoint, 'INBOX', msg.filename), 'rb') as f:
        assert f.read() == msg.data
    windows = [int(x) for line in commands(m, BODY)
               for x in re.findall(r'<\d+\.(\d+)>', line)]
    # Sequential reads grow the window beyond one block per command.
    assert max(windows) > 256 * 1024


@pytest.fixture
def limited_server(ca):
    d = F.Dovecot(ca, extra_conf='mail_max_userip_connections = 2\n')
    try:
        d.start()
        d.corpus = F.Corpus(bulk=300, big=False).load(d)
        yield d
    finally:
        d.stop()


def test_pool_stays_within_server_connection_limit(mount, limited_server,
                                                   tmp_path):
    srv = limited_server
    m = mount(server=srv, options=cache_opts(srv, tmp_path / 'cache',
                                             'connections=4'))
    r = tool('grep', '-rl', F.GREP_WORD, '.', cwd=m.mountpoint)
    want = {(b.path, msg.filename) for b, msg in srv.corpus.all_messages()
            if F.GREP_WORD.encode() in msg.data}
    found = {(os.path.dirname(p)[2:], os.path.basename(p))
             for p in r.stdout.decode().split()}
    assert found == want
    assert 'refused connection' in m.stderr()


def test_repeated_listing_costs_no_command(mount, corpus, tmp_path):
    m = mount(options=cache_opts(mount.server, tmp_path / 'cache'),
              debug=True)
    first = tool('ls', '-l', 'Bulk', cwd=m.mountpoint).stdout
    F.settle_watcher(m)
    sent = len(commands(m, '.'))
    second = tool('ls', '-l', 'Bulk', cwd=m.mountpoint).stdout
    assert second == first
    assert len(first.splitlines()) == len(corpus['Bulk'].messages) + 1
    assert len(commands(m, '.')) == sent


@pytest.mark.parametrize('stride', [-1, 7])
def test_scattered_reads_do_not_prefetch(mount, corpus, tmp_path, stride):
    box = corpus['Bulk']
    uids = sorted(box.messages)[:400]
    picked = uids[::stride][:40]
    m = mount(options=cache_opts(mount.server, tmp_path / 'cache'),
              debug=True)
    for uid in picked:
        with open(os.path.join(m.mountpoint, 'Bulk', '%d.eml' % uid),
                  'rb') as f:
            assert f.read() == box.messages[uid].data
    fetched = [int(x) for line in commands(m, BODY)
               for x in re.findall(r'UID FETCH (\S+) ', line)
               for x in x.split(',')]
    assert sorted(fetched) == sorted(picked)


def test_ls_l_asks_for_labels_and_acls_once(mount, corpus, tmp_path):
    """Only user.* attributes exist: the others are "not supported", so
    ls -l stops asking after one file instead of a round trip per file."""
    m = mount(options=cache_opts(mount.server, tmp_path / 'cache'),
              debug=True)
    path = os.path.join(m.mountpoint, 'INBOX', '1.eml')
    r = tool('getfattr', '-n', 'user.nothing', path, check=False)
    assert b'No such attribute' in r.stderr
    r = tool('getfattr', '-n', 'security.selinux', path, check=False)
    assert b'Operation not supported' in r.stderr
    before = m.stderr().count('GETXATTR')
    r = tool('ls', '-l', 'Bulk', cwd=m.mountpoint)
    assert len(r.stdout.splitlines()) == len(corpus['Bulk'].messages) + 1
    assert m.stderr().count('GETXATTR') - before <= 4


def test_daemon_fills_the_disk_cache(mount, corpus, tmp_path):
    """Without -f imapfs forks: the threads that write the cache and
    prefetch must be started in the daemon, not in the parent."""
    box = corpus['Bulk']
    opts = cache_opts(mount.server, tmp_path / 'cache')
    m = mount(options=opts, foreground=False)
    tool('grep', '-rl', F.GREP_WORD, 'Bulk', cwd=m.mountpoint)
    m.stop()
    m2 = mount(options=opts, debug=True, name='mnt2')
    assert read_all(m2.mountpoint, box) == \
        {u: msg.data for u, msg in box.messages.items()}
    assert commands(m2, BODY) == []


def test_closing_a_message_costs_no_request(mount, corpus):
    """A message file has nothing to do at close(): the kernel is told so
    at open, instead of sending a FLUSH per close (10,000 for a grep)."""
    m = mount(debug=True, options=plain_opts(mount.server))
    box = corpus['INBOX']
    for uid in sorted(box.messages)[:5]:
        with open(os.path.join(m.mountpoint, 'INBOX', '%d.eml' % uid),
                  'rb') as f:
            assert f.read() == box.messages[uid].data
    trace = m.stderr()
    assert trace.count('opcode: OPEN ') >= 5
    assert 'opcode: FLUSH' not in trace


def test_second_grep_costs_no_getattr_per_file(mount, corpus):
    """Reading a file makes the kernel forget its atime, and grep stats
    every file: the listing is sent again instead of one GETATTR each."""
    m = mount(debug=True, options=plain_opts(mount.server))
    n = len(corpus['Bulk'].messages)
    tool('grep', '-rl', F.GREP_WORD, 'Bulk', cwd=m.mountpoint)
    mark = len(m.stderr())
    tool('grep', '-rl', F.GREP_WORD, 'Bulk', cwd=m.mountpoint)
    ops = re.findall(r'opcode: (\w+)', m.stderr()[mark:])
    assert ops.count('OPEN') >= n
    assert ops.count('GETATTR') < n / 10


def test_warm_listing_comes_from_the_kernel(mount, corpus):
    m = mount(debug=True, options=plain_opts(mount.server))
    tool('ls', '-l', 'Bulk', cwd=m.mountpoint)
    mark = len(m.stderr())
    tool('ls', '-l', 'Bulk', cwd=m.mountpoint)
    ops = re.findall(r'opcode: (\w+)', m.stderr()[mark:])
    assert 'OPENDIR' in ops
    assert 'READDIRPLUS' not in ops and 'READDIR' not in ops
