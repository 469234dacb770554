# SPDX-License-Identifier: GPL-2.0-or-later
"""With -o ro every change fails with EROFS, the server is left exactly
as it was, and no command that changes anything is ever sent."""

import errno
import os
import re

import pytest

import imapfs_fixtures as F
from imapfs_fixtures import tool

UID1 = '1.eml'      # INBOX's first message (the corpus starts at UID 1)

WRITES = {
    'touch-new': ['touch', 'INBOX/new.eml'],
    'redirect-truncate': ['sh', '-c', 'echo x > INBOX/' + UID1],
    'redirect-append': ['sh', '-c', 'echo x >> INBOX/' + UID1],
    'truncate': ['truncate', '-s', '0', 'INBOX/' + UID1],
    'mkdir-top': ['mkdir', 'NewBox'],
    'mkdir-nested': ['mkdir', 'INBOX/Sub'],
    'rm': ['rm', '-f', 'INBOX/' + UID1],
    'rmdir-empty': ['rmdir', 'Empty'],
    'mv-to-other-mailbox': ['mv', 'INBOX/' + UID1, 'Archive/'],
    'mv-rename-message': ['mv', 'INBOX/' + UID1, 'INBOX/99999.eml'],
    'mv-rename-mailbox': ['mv', 'Archive', 'Archive2'],
    'cp-into': ['cp', '/proc/self/cmdline', 'INBOX/new.eml'],
    'symlink': ['ln', '-s', UID1, 'INBOX/link'],
}


def server_state(server):
    c = server.client()
    try:
        listed = F.list_mailboxes(c)
        boxes = {}
        for name, attrs in listed.items():
            if not {'\\noselect', '\\nonexistent'} & {a.lower()
                                                        for a in attrs}:
                boxes[name] = {u: (m.size, m.internaldate, frozenset(
                    m.flags - {'\\Recent'})) for u, m in F.fetch_reference(
                        c, name, bodies=False).items()}
        return listed, boxes
    finally:
        c.logout()


@pytest.mark.parametrize('cmd', WRITES.values(), ids=list(WRITES))
def test_write_fails_with_erofs(mount, server, corpus, cmd):
    before = server_state(server)
    m = mount(options=ro_options(server), debug=True)
    r = tool(*cmd, check=False, cwd=m.mountpoint)
    assert r.returncode != 0
    assert b'Read-only file system' in r.stderr, r.stderr
    # Nothing changed, seen from the file system and from the server.
    assert tool('cat', os.path.join(m.mountpoint, 'INBOX', UID1)).stdout == \
        corpus['INBOX'].messages[1].data
    assert not os.path.lexists(os.path.join(m.mountpoint, 'INBOX/new.eml'))
    assert server_state(server) == before
    assert_no_changes_sent(m)


def ro_options(server):
    return ['cafile=' + server.cafile, 'ro']


# Every command that changes something on the server, or could (SELECT).
CHANGING = ('APPEND', 'STORE', 'EXPUNGE', 'MOVE', 'COPY', 'CREATE',
            'DELETE', 'RENAME', 'SELECT')


def assert_no_changes_sent(m):
    sent = re.findall(r'\bC: A\d+ (.*)', m.stderr())
    assert any(c.startswith('EXAMINE ') for c in sent), sent
    bad = [c for c in sent
           if set(c.upper().split()[:2]) & set(CHANGING)]
    assert bad == []


def test_syscalls_return_erofs(mount, server):
    m = mount(options=ro_options(server), debug=True)
    root = m.mountpoint
    msg = os.path.join(root, 'INBOX', UID1)
    attempts = {
        'open O_CREAT': lambda: os.open(os.path.join(root, 'INBOX/n.eml'),
                                        os.O_WRONLY | os.O_CREAT, 0o644),
        'open O_WRONLY': lambda: os.open(msg, os.O_WRONLY),
        'open O_RDWR': lambda: os.open(msg, os.O_RDWR),
        'open O_TRUNC': lambda: os.open(msg, os.O_WRONLY | os.O_TRUNC),
        'mkdir': lambda: os.mkdir(os.path.join(root, 'X')),
        'unlink': lambda: os.unlink(msg),
        'rmdir': lambda: os.rmdir(os.path.join(root, 'Empty')),
        'rename': lambda: os.rename(msg, os.path.join(root, 'Archive/x.eml')),
        'truncate': lambda: os.truncate(msg, 0),
        'mknod': lambda: os.mknod(os.path.join(root, 'INBOX/fifo'),
                                  0o600 | 0o010000),
        'setxattr': lambda: os.setxattr(msg, 'user.imap.flags', b'\\Seen'),
        'removexattr': lambda: os.removexattr(msg, 'user.imap.flags'),
        'chmod': lambda: os.chmod(msg, 0o600),
        'utime': lambda: os.utime(msg, (0, 0)),
    }
    assert F.errno_mismatches(attempts, errno.EROFS) == {}
    assert_no_changes_sent(m)
    # Read-only shows in the modes too.
    assert os.stat(msg).st_mode & 0o777 == 0o444
    assert os.stat(os.path.join(root, 'INBOX')).st_mode & 0o777 == 0o555
