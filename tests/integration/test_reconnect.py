# SPDX-License-Identifier: GPL-2.0-or-later
"""A connection the server drops is replaced, and an idempotent request
(LIST, EXAMINE, FETCH) is retried on the new one without the user seeing
an error."""

import contextlib
import os
import signal
import subprocess
import time

import imapfs_fixtures as F
from imapfs_fixtures import tool


def kick(dovecot, user='alice'):
    """Makes the server close every connection of @user (BYE)."""
    r = subprocess.run(['doveadm', '-c', dovecot.conf, 'kick', user],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    assert r.returncode == 0, r.stdout.decode()


def test_reads_survive_dropped_connections(fresh_server, mount):
    m = mount(server=fresh_server, options=['cafile=' + fresh_server.cafile,
                                             'parts=no'])
    box = fresh_server.corpus['INBOX']
    uids = sorted(box.messages)
    inbox = os.path.join(m.mountpoint, 'INBOX')
    want_names = {box.messages[u].filename for u in uids}
    assert set(os.listdir(inbox)) == want_names
    first = box.messages[uids[0]]
    assert tool('cat', os.path.join(inbox, first.filename)).stdout == \
        first.data
    logins_before = fresh_server.log_text().count('Login:')

    kick(fresh_server)

    # A message not read before must come over a new connection.
    last = box.messages[uids[-1]]
    assert tool('cat', os.path.join(inbox, last.filename)).stdout == \
        last.data
    assert set(os.listdir(inbox)) == want_names
    assert set(os.listdir(m.mountpoint)) >= {'INBOX', 'Archive'}
    assert fresh_server.log_text().count('Login:') > logins_before


def server_children(dovecot):
    """The pids of the imap processes serving our connections."""
    out = subprocess.run(['pgrep', '-P', str(dovecot.proc.pid), '-x', 'imap'],
                         stdout=subprocess.PIPE).stdout.decode()
    return [int(p) for p in out.split()]


@contextlib.contextmanager
def silenced(dovecot):
    """The connections open now go silent (their processes stopped), as
    behind a dead link; new ones are served. Resumed on exit."""
    stopped = server_children(dovecot)
    assert stopped
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield stopped
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


def test_sigterm_does_not_wait_for_a_silent_server(fresh_server, mount):
    m = mount(server=fresh_server)          # timeout=60 (the default)
    box = fresh_server.corpus['INBOX']
    inbox = os.path.join(m.mountpoint, 'INBOX')
    assert os.listdir(inbox)
    with silenced(fresh_server):
        msg = box.messages[max(box.messages)]
        reader = subprocess.Popen(['cat', os.path.join(inbox, msg.filename)],
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(1)
        assert reader.poll() is None, 'the read should be waiting'
        t = time.monotonic()
        m.signal(signal.SIGTERM, timeout=10)
        assert time.monotonic() - t < 8
        assert reader.wait(timeout=10) != 0


def test_open_file_keeps_working_across_a_drop(fresh_server, mount):
    m = mount(server=fresh_server, options=['cafile=' + fresh_server.cafile,
                                             'parts=no', 'cache=none'])
    box = fresh_server.corpus['INBOX'].messages
    msg = max(box.values(), key=lambda x: len(x.data))
    path = os.path.join(m.mountpoint, 'INBOX', msg.filename)
    logins_before = fresh_server.log_text().count('Login:')
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        head = os.pread(fd, 4096, 0)
        kick(fresh_server)
        # O_DIRECT: the kernel keeps nothing, each read reaches imapfs.
        rest = os.pread(fd, len(msg.data), len(head))
    finally:
        os.close(fd)
    assert head + rest == msg.data
    # The rest came over a new connection (the watcher's reconnecting
    # may have logged in first: wait for more than that).
    assert F.wait_for(lambda: fresh_server.log_text().count('Login:') >
                      logins_before, timeout=10)
