# SPDX-License-Identifier: GPL-2.0-or-later
"""A server that goes away: what is cached stays readable, the rest fails
within the timeout, nothing is queued, and the mount resumes by itself
when the server is back. A request stuck on a silent server gives up at
Ctrl-C, and a connection that died while idle is replaced before a
request waits on it."""

import errno
import os
import signal
import subprocess
import time

import imapfs_fixtures as F
from imapfs_fixtures import tool
from test_reconnect import silenced

TIMEOUT = 4


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def elapsed(fn):
    t = time.monotonic()
    result = fn()
    return result, time.monotonic() - t


def failing_errno(fn):
    try:
        fn()
    except OSError as e:
        return e.errno
    return None


def test_cached_mail_readable_while_the_server_is_down(fresh_server, mount,
                                                       tmp_path):
    srv = fresh_server
    m = mount(server=srv, options=['cafile=' + srv.cafile, 'parts=no',
                                   'timeout=%d' % TIMEOUT])
    inbox = os.path.join(m.mountpoint, 'INBOX')
    box = srv.corpus['INBOX'].messages
    names = {msg.filename: msg.data for msg in box.values()}
    assert set(os.listdir(inbox)) == set(names)
    for name, data in names.items():
        assert read(os.path.join(inbox, name)) == data
    archive = srv.corpus['Archive'].messages
    unread = os.path.join(m.mountpoint, 'Archive',
                          archive[max(archive)].filename)
    assert os.path.exists(unread)       # listed, never read

    srv.kill()
    try:
        # Past the freshness of a lookup (2 s): a name not listed makes
        # the tree ask for the listing again; it gets none and says
        # what the cached one says, without waiting for the timeout.
        time.sleep(2.5)
        exists, took = elapsed(
            lambda: os.path.exists(os.path.join(inbox, '99999.eml')))
        assert not exists
        assert took < TIMEOUT / 2, 'a lookup waited for the server'
        listing, took = elapsed(lambda: set(os.listdir(inbox)))
        assert listing == set(names)
        assert took < TIMEOUT / 2, 'ls waited for the server'
        for name, data in names.items():
            assert read(os.path.join(inbox, name)) == data
        word = box[min(box)].data.split()[-1].decode()
        r = tool('grep', '-rlF', word, inbox, check=False)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip()

        # Not cached: fails, within the bound.
        err, took = elapsed(lambda: failing_errno(lambda: read(unread)))
        assert err == errno.EIO
        assert took < TIMEOUT + 5
        # A change fails too, and is not kept to be sent later.
        new = tmp_path / 'new.eml'
        new.write_bytes(b'Subject: while offline\r\n\r\nqueued?\r\n')
        r = tool('cp', new, inbox + '/', check=False, timeout=60)
        assert r.returncode != 0
        assert b'Input/output error' in r.stderr
        assert 'serving what is cached' in m.stderr()
    finally:
        srv.restart()

    # Back by itself: the uncached message comes, nothing was queued.
    want = archive[max(archive)].data
    assert F.wait_for(lambda: failing_errno(lambda: read(unread)) is None,
                      timeout=30)
    assert read(unread) == want
    time.sleep(2)
    assert set(os.listdir(inbox)) == set(names)
    assert 'reachable again' in m.stderr()


def test_ctrl_c_on_a_stuck_request(fresh_server, mount):
    srv = fresh_server
    m = mount(server=srv, options=['cafile=' + srv.cafile, 'parts=no'])
    inbox = os.path.join(m.mountpoint, 'INBOX')
    msg = srv.corpus['INBOX'].messages
    last = msg[max(msg)]
    assert last.filename in os.listdir(inbox)
    # The whole server stops: open connections go silent, and new ones
    # are accepted by the kernel but never greeted.
    os.killpg(srv.proc.pid, signal.SIGSTOP)
    try:
        # A directory never listed: opendir waits for the server.
        lister = subprocess.Popen(
            ['ls', os.path.join(m.mountpoint, 'Archive')],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # A message never read: open and read wait for it.
        reader = subprocess.Popen(
            ['cat', os.path.join(inbox, last.filename)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        for proc in (lister, reader):
            assert proc.poll() is None, '%s should be waiting' % proc.args
            t = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
            # timeout=60 (the default) would otherwise hold it.
            assert time.monotonic() - t < 1.0, proc.args
    finally:
        os.killpg(srv.proc.pid, signal.SIGCONT)
    # The interrupted requests left nothing behind: the mount works.
    archive = srv.corpus['Archive'].messages
    assert set(os.listdir(os.path.join(m.mountpoint, 'Archive'))) >= {
        a.filename for a in archive.values()}
    assert read(os.path.join(inbox, last.filename)) == last.data


def test_keepalive_replaces_a_dead_idle_connection(fresh_server, mount):
    srv = fresh_server
    m = mount(server=srv, options=['cafile=' + srv.cafile, 'parts=no',
                                   'timeout=%d' % TIMEOUT])
    inbox = os.path.join(m.mountpoint, 'INBOX')
    msg = srv.corpus['INBOX'].messages
    assert os.listdir(inbox)
    with silenced(srv):
        # A NOOP after TIMEOUT of silence, dropped TIMEOUT later.
        time.sleep(2 * TIMEOUT + 2)
        last = msg[max(msg)]
        data, took = elapsed(
            lambda: read(os.path.join(inbox, last.filename)))
        assert data == last.data
        # On a dead connection the read would first wait TIMEOUT.
        assert took < TIMEOUT / 2
