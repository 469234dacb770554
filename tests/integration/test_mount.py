# SPDX-License-Identifier: GPL-2.0-or-later
"""What a mounted account looks like and reads like, checked with real
tools (ls, cat, cp, dd, grep, stat, rsync, df) against the server's copy
fetched independently through imaplib."""

import hashlib
import os
import re

import pytest

import imapfs_fixtures as F
from imapfs_fixtures import tool

PARTS = re.compile(r'^\d+\.parts$')     # N.parts/ directories, if shown

# Mailboxes small enough to read file by file with cat.
SMALL = ['INBOX', 'Archive', 'Archive/2024', 'Entwürfe', '日本語',
         'Parent/Child', 'Slash%2FName', 'Pct%25Name']


def expected_entries(corpus, path, prefix=''):
    """Names imapfs should list in mailbox directory `path` ('' = root)."""
    names = set()
    depth = len(path.split('/')) if path else 0
    for box in corpus.mailboxes:
        lv = box.path.split('/')
        if len(lv) == depth + 1 and '/'.join(lv[:depth]) == path:
            names.add(lv[-1])
    if path:
        names |= {m.filename for m in corpus[path].messages.values()}
    return names


def ls(path, *flags):
    out = tool('ls', '-1A', *flags, path).stdout.decode()
    return [n for n in out.splitlines() if not PARTS.match(n)]


def eml_files(box):
    return sorted(box.messages.values(), key=lambda m: m.uid)


# -- the tree ----------------------------------------------------------------

def test_root_lists_mailbox_tree(mnt, corpus):
    names = set(ls(mnt.mountpoint))
    assert names == expected_entries(corpus, '')
    # The names the brief cares about, spelled out:
    assert {'INBOX', 'Archive', 'Entwürfe', '日本語', 'Empty', 'Parent',
            'Slash%2FName', 'Pct%25Name'} <= names
    for n in names:
        assert os.path.isdir(os.path.join(mnt.mountpoint, n)), n


@pytest.mark.parametrize('path', [b.path for b in F.Corpus().mailboxes])
def test_mailbox_directory_lists_children_and_messages(mnt, corpus, path):
    d = os.path.join(mnt.mountpoint, path)
    assert tool('stat', '-c', '%F', d).stdout.decode().strip() == 'directory'
    assert set(ls(d)) == expected_entries(corpus, path)


def test_nested_mailbox_is_subdirectory(mnt, corpus):
    assert set(ls(os.path.join(mnt.mountpoint, 'Archive'))) == (
        {'2024'} | {m.filename for m in corpus['Archive'].messages.values()})
    assert set(ls(os.path.join(mnt.mountpoint, 'Archive', '2024'))) == {
        m.filename for m in corpus['Archive/2024'].messages.values()}


def test_empty_mailbox_is_empty_directory(mnt):
    d = os.path.join(mnt.mountpoint, 'Empty')
    assert os.path.isdir(d)
    assert ls(d) == []
    assert tool('find', d, '-mindepth', '1').stdout == b''


def test_noselect_parent_holds_only_its_child(mnt, corpus):
    d = os.path.join(mnt.mountpoint, 'Parent')
    assert os.path.isdir(d)
    assert ls(d) == ['Child']
    assert set(ls(os.path.join(d, 'Child'))) == {
        m.filename for m in corpus['Parent/Child'].messages.values()}


def test_listing_is_in_ascending_uid_order(mnt, corpus):
    for path in ('INBOX', 'Bulk'):
        names = [n for n in ls(os.path.join(mnt.mountpoint, path), '-U')
                 if n.endswith('.eml')]
        uids = [int(n[:-4]) for n in names]
        assert uids == sorted(corpus[path].messages), path


def test_missing_entries_are_enoent(mnt, corpus):
    missing = max(corpus['INBOX'].messages) + 1000
    for p in ('INBOX/%d.eml' % missing, 'NoSuchMailbox', 'INBOX/x.txt'):
        r = tool('stat', os.path.join(mnt.mountpoint, p), check=False)
        assert r.returncode != 0
        assert b'No such file or directory' in r.stderr, p


# -- content -----------------------------------------------------------------

@pytest.mark.parametrize('path', SMALL)
def test_cat_is_byte_identical(mnt, corpus, path):
    box = corpus[path]
    assert box.messages or path == 'Empty'
    for msg in eml_files(box):
        f = os.path.join(mnt.mountpoint, path, msg.filename)
        got = tool('cat', f).stdout
        assert len(got) == len(msg.data), f
        assert got == msg.data, f


def test_cp_of_bulk_mailbox_is_byte_identical(mnt, corpus, tmp_path):
    box = corpus['Bulk']
    dest = tmp_path / 'copy'
    tool('cp', '-r', os.path.join(mnt.mountpoint, 'Bulk'), str(dest))
    copied = {n for n in os.listdir(dest) if n.endswith('.eml')}
    assert copied == {m.filename for m in box.messages.values()}
    bad = [m.filename for m in box.messages.values()
           if (dest / m.filename).read_bytes() != m.data]
    assert bad == []


def test_parallel_reads_are_consistent(mnt, corpus):
    """Many readers at once (xargs -P8 md5sum) across the pool."""
    files = []
    for path in ('Bulk', 'INBOX'):
        files += [os.path.join(path, m.filename)
                  for m in corpus[path].messages.values()]
    r = tool('xargs', '-0', '-P', '8', '-n', '40', 'md5sum',
             input=b'\0'.join(f.encode() for f in files),
             cwd=mnt.mountpoint)
    got = {}
    for line in r.stdout.decode().splitlines():
        digest, name = line.split(None, 1)
        got[name.lstrip('*')] = digest
    want = {}
    for path in ('Bulk', 'INBOX'):
        for m in corpus[path].messages.values():
            want[os.path.join(path, m.filename)] = hashlib.md5(
                m.data).hexdigest()
    assert got == want


def _dd(path, offset, count):
    return tool('dd', 'if=' + path, 'iflag=skip_bytes,count_bytes',
                'skip=%d' % offset, 'count=%d' % count, 'bs=65536',
                'status=none').stdout


def test_partial_reads_at_offsets(mnt, corpus):
    box = corpus['INBOX']
    big = max(box.messages.values(), key=lambda m: m.size)
    f = os.path.join(mnt.mountpoint, 'INBOX', big.filename)
    n = big.size
    for off, cnt in [(0, 1), (1, 4095), (4095, 2), (65535, 3), (65536, 1),
                     (131071, 70000), (1234567, 100000), (n // 2, 1 << 20),
                     (n - 1, 10), (n - 100, 100), (n, 10), (n + 4096, 10)]:
        assert _dd(f, off, cnt) == big.data[off:off + cnt], (off, cnt)
    # Random access with pread(2), backwards through the file.
    fd = os.open(f, os.O_RDONLY)
    try:
        step = 777777
        for off in range(n - 5000, -1, -step):
            assert os.pread(fd, 5000, off) == big.data[off:off + 5000], off
    finally:
        os.close(fd)


def test_small_messages_partial_reads(mnt, corpus):
    for msg in corpus['INBOX'].messages.values():
        if msg.size > 200000:
            continue
        f = os.path.join(mnt.mountpoint, 'INBOX', msg.filename)
        for off in {0, 1, msg.size // 3, msg.size - 1, msg.size}:
            assert _dd(f, off, 4097) == msg.data[off:off + 4097], (f, off)


# -- metadata ----------------------------------------------------------------

def test_size_and_mtime_match_server(mnt, corpus):
    for box in corpus.mailboxes:
        if not box.messages:
            continue
        files = [os.path.join(mnt.mountpoint, box.path, m.filename)
                 for m in eml_files(box)]
        out = tool('stat', '-c', '%s\t%Y\t%F\t%i', *files).stdout.decode()
        rows = out.splitlines()
        assert len(rows) == len(files)
        for msg, row in zip(eml_files(box), rows):
            size, mtime, kind, _ = row.split('\t')
            where = '%s/%s' % (box.path, msg.filename)
            assert kind == 'regular file', where
            assert int(size) == msg.size, where
            assert int(mtime) == msg.internaldate, where


def test_inode_numbers_are_stable(mnt, corpus):
    d = os.path.join(mnt.mountpoint, 'INBOX')
    first = {n: os.stat(os.path.join(d, n)).st_ino for n in ls(d)}
    tool('cat', *[os.path.join(d, n) for n in first])
    second = {n: os.stat(os.path.join(d, n)).st_ino for n in ls(d)}
    assert first == second
    assert len(set(first.values())) == len(first)


def test_reading_never_sets_seen(mount, corpus, server):
    mnt = mount()
    for box in corpus.mailboxes:
        for msg in box.messages.values():
            with open(os.path.join(mnt.mountpoint, box.path, msg.filename),
                      'rb') as f:
                while f.read(1 << 20):
                    pass
    mnt.stop()
    c = server.client()
    try:
        for box in corpus.mailboxes:
            if box.noselect:
                continue
            now = F.fetch_reference(c, box.server, bodies=False)
            for uid, msg in box.messages.items():
                assert now[uid].flags - {'\\Recent'} == \
                    msg.flags - {'\\Recent'}, (box.path, uid)
    finally:
        c.logout()


# -- tools over the whole tree -------------------------------------------------

def test_grep_finds_exactly_the_matching_messages(mnt, corpus):
    word = F.GREP_WORD.encode()
    want = {os.path.join(mnt.mountpoint, box.path, m.filename)
            for box, m in corpus.all_messages() if word in m.data}
    assert len(want) > 100      # the corpus is what we think it is
    r = tool('grep', '-rl', '--exclude-dir=*.parts', F.GREP_WORD,
             mnt.mountpoint, timeout=300)
    got = set(r.stdout.decode().splitlines())
    assert got == want


def test_rsync_copies_identical_files(mnt, corpus, tmp_path):
    dest = tmp_path / 'rsync'
    tool('rsync', '-a', '--exclude=/Bulk', '--exclude=*.parts',
         mnt.mountpoint + '/', str(dest) + '/', timeout=300)
    for box in corpus.mailboxes:
        if box.path == 'Bulk':
            continue
        d = dest / box.path
        assert d.is_dir(), box.path
        for m in box.messages.values():
            f = d / m.filename
            assert f.read_bytes() == m.data, f
            assert int(f.stat().st_mtime) == m.internaldate, f
    got = {str(p.relative_to(dest)) for p in dest.rglob('*.eml')}
    want = {'%s/%s' % (b.path, m.filename) for b, m in corpus.all_messages()
            if b.path != 'Bulk'}
    assert got == want
    # A second run finds nothing to transfer (sizes and mtimes are stable).
    r = tool('rsync', '-a', '--itemize-changes', '--exclude=/Bulk',
             '--exclude=*.parts', mnt.mountpoint + '/', str(dest) + '/')
    assert [ln for ln in r.stdout.decode().splitlines()
            if not ln.startswith('.d')] == []


def test_statfs(mnt, server):
    r = tool('df', mnt.mountpoint)
    assert mnt.mountpoint in r.stdout.decode()
    tool('stat', '-f', mnt.mountpoint)
    st = os.statvfs(mnt.mountpoint)
    assert st.f_bsize > 0
    assert st.f_bfree <= st.f_blocks
    assert st.f_bavail <= st.f_blocks
    if st.f_blocks:
        # The fixture's quota is 1 GiB; if imapfs reports a total, it is that.
        assert st.f_blocks * st.f_frsize == 1 << 30


# -- subtree mounts ------------------------------------------------------------

@pytest.mark.parametrize('url_path,box', [
    ('Archive', 'Archive'),
    ('Archive/2024', 'Archive/2024'),
    ('Entw%C3%BCrfe', 'Entwürfe'),
    ('%E6%97%A5%E6%9C%AC%E8%AA%9E', '日本語'),
    ('Parent', 'Parent'),
])
def test_subtree_mount(mount, corpus, url_path, box):
    m = mount(mailbox=url_path)
    assert set(ls(m.mountpoint)) == expected_entries(corpus, box)
    for msg in corpus[box].messages.values():
        assert tool('cat', os.path.join(m.mountpoint, msg.filename)
                    ).stdout == msg.data
    if box == 'Archive':
        assert set(ls(os.path.join(m.mountpoint, '2024'))) == \
            expected_entries(corpus, 'Archive/2024')
        assert 'INBOX' not in ls(m.mountpoint)


@pytest.mark.parametrize('cache', ['disk', 'memory', 'none'])
def test_cache_modes_read_identical(mount, corpus, cache, server):
    m = mount(options=['cafile=' + server.cafile, 'cache=' + cache])
    box = corpus['INBOX']
    for attempt in range(2):        # the second time may come from a cache
        for msg in eml_files(box):
            f = os.path.join(m.mountpoint, 'INBOX', msg.filename)
            assert tool('cat', f).stdout == msg.data, (cache, attempt, f)
