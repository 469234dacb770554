# SPDX-License-Identifier: GPL-2.0-or-later
"""A connection the server drops is replaced, and an idempotent request
(LIST, EXAMINE, FETCH) is retried on the new one without the user seeing
an error."""

import os
import subprocess

import imapfs_fixtures as F
from imapfs_fixtures import tool


def kick(dovecot, user='alice'):
    """Makes the server close every connection of @user (BYE)."""
    r = subprocess.run(['doveadm', '-c', dovecot.conf, 'kick', user],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    assert r.returncode == 0, r.stdout.decode()


def test_reads_survive_dropped_connections(fresh_server, mount):
    m = mount(server=fresh_server)
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
