# SPDX-License-Identifier: GPL-2.0-or-later
"""Extended attributes from what the listing holds: on message files
user.imap.{flags,uid,uidvalidity,internaldate,modseq}, on mailbox
directories user.imap.{uidvalidity,uidnext,messages,unseen,special-use},
each checked against the server through imaplib; exactly the names with
a value are listed, unknown ones are ENODATA, and reading them costs no
command per file."""

import datetime
import errno
import os
import re

import pytest

import imapfs_fixtures as F
from imapfs_fixtures import tool

MESSAGE_NAMES = {'user.imap.flags', 'user.imap.uid', 'user.imap.uidvalidity',
                 'user.imap.internaldate', 'user.imap.modseq'}
MAILBOX_NAMES = {'user.imap.uidvalidity', 'user.imap.uidnext',
                 'user.imap.messages', 'user.imap.unseen'}


def status(server, mailbox):
    c = server.client()
    try:
        data = F.imap_check(c.status(F.imap_quote(mailbox),
                                     '(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)'),
                            'STATUS')
        return {k.decode(): int(v) for k, v in
                re.findall(rb'(MESSAGES|UIDNEXT|UIDVALIDITY|UNSEEN) (\d+)',
                           data[0])}
    finally:
        c.logout()


def xattrs(path):
    return {n: os.getxattr(path, n).decode() for n in os.listxattr(path)}


def test_message_attributes_match_the_server(mount, trash_server):
    srv = trash_server
    m = mount(server=srv)
    box = srv.corpus['INBOX']
    st = status(srv, 'INBOX')
    for uid, msg in sorted(box.messages.items())[:6]:
        got = xattrs(os.path.join(m.mountpoint, 'INBOX', msg.filename))
        assert set(got) == MESSAGE_NAMES
        assert got['user.imap.uid'] == str(uid)
        assert got['user.imap.uidvalidity'] == str(st['UIDVALIDITY'])
        when = datetime.datetime.fromtimestamp(msg.internaldate,
                                               datetime.timezone.utc)
        assert got['user.imap.internaldate'] == \
            when.strftime('%Y-%m-%dT%H:%M:%SZ')
        assert set(got['user.imap.flags'].split()) == \
            set(msg.flags) - {'\\Recent'}
        assert int(got['user.imap.modseq']) > 0


def test_mailbox_attributes_match_status(mount, trash_server):
    srv = trash_server
    m = mount(server=srv)
    for name in ('INBOX', 'Archive', 'Trash'):
        st = status(srv, name)
        got = xattrs(os.path.join(m.mountpoint, name))
        want = MAILBOX_NAMES | ({'user.imap.special-use'}
                                if name == 'Trash' else set())
        assert set(got) == want, name
        assert got['user.imap.uidvalidity'] == str(st['UIDVALIDITY'])
        assert got['user.imap.uidnext'] == str(st['UIDNEXT'])
        assert got['user.imap.messages'] == str(st['MESSAGES'])
        assert got['user.imap.unseen'] == str(st['UNSEEN'])
    assert os.getxattr(os.path.join(m.mountpoint, 'Trash'),
                       'user.imap.special-use') == b'\\Trash'


def test_unknown_names_are_enodata(mount, trash_server):
    m = mount(server=trash_server)
    for path in ('INBOX', 'INBOX/1.eml', '.'):
        with pytest.raises(OSError) as e:
            os.getxattr(os.path.join(m.mountpoint, path), 'user.nope')
        assert e.value.errno == errno.ENODATA
    # A parent that is no mailbox has no attributes at all.
    assert os.listxattr(os.path.join(m.mountpoint, 'Parent')) == []


def test_getfattr_of_a_whole_mailbox_costs_no_command_per_file(mount, server,
                                                                 corpus):
    m = mount(debug=True)
    bulk = os.path.join(m.mountpoint, 'Bulk')
    os.listdir(bulk)
    before = len(re.findall(r'\bC: A\d+ ', m.stderr()))
    r = tool('sh', '-c', 'getfattr -d -m - *.eml', cwd=bulk)
    out = r.stdout.decode()
    n = len(corpus['Bulk'].messages)
    assert out.count('# file: ') == n
    assert out.count('user.imap.uid=') == n
    assert len(re.findall(r'\bC: A\d+ ', m.stderr())) - before <= 4
