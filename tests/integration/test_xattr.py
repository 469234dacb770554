# SPDX-License-Identifier: GPL-2.0-or-later
"""Extended attributes: on message files user.imap.{flags,uid,uidvalidity,
internaldate,modseq} from the listing and user.mail.* from ENVELOPE
(decoded to UTF-8), on mailbox directories user.imap.{uidvalidity,
uidnext,messages,unseen,special-use}, each checked against the server
through imaplib; exactly the names with a value are listed, unknown ones
are ENODATA, and reading them costs no command per file."""

import datetime
import errno
import os
import re

import pytest

import imapfs_fixtures as F
from imapfs_fixtures import tool

MESSAGE_NAMES = {'user.imap.flags', 'user.imap.uid', 'user.imap.uidvalidity',
                 'user.imap.internaldate', 'user.imap.modseq'}
MAIL_NAMES = {'user.mail.subject', 'user.mail.from', 'user.mail.to',
              'user.mail.cc', 'user.mail.date', 'user.mail.message-id'}
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
        assert set(got) - MAIL_NAMES == MESSAGE_NAMES
        assert 'user.mail.subject' in got
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
    # The watcher's own connection settles first (it idles on Bulk).
    F.settle_watcher(m)
    before = len(re.findall(r'\bC: A\d+ ', m.stderr()))
    r = tool('sh', '-c', 'getfattr -d -m - *.eml', cwd=bulk)
    out = r.stdout.decode()
    n = len(corpus['Bulk'].messages)
    assert out.count('# file: ') == n
    assert out.count('user.imap.uid=') == n
    assert len(re.findall(r'\bC: A\d+ ', m.stderr())) - before <= 4


MAIL = (b'Date: Tue, 4 Jun 2024 10:00:00 +0200\r\n'
        b'From: =?iso-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.org>\r\n'
        b'To: a@example.org, "Bob B." <bob@example.org>\r\n'
        b'Cc: =?UTF-8?B?5pel5pys?= <nihon@example.jp>\r\n'
        b'Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus?= =?UTF-8?Q?_M=C3=BCnchen?=\r\n'
        b'Message-ID: <xattr-1@imapfs.test>\r\n'
        b'\r\n'
        b'Hallo.\r\n')


def test_mail_attributes_are_decoded_envelope_fields(mount, fresh_server):
    srv = fresh_server
    c = srv.client()
    try:
        F.imap_check(c.append('INBOX', None, None, MAIL), 'APPEND')
        uidnext = int(re.search(rb'UIDNEXT (\d+)', F.imap_check(
            c.status('INBOX', '(UIDNEXT)'), 'STATUS')[0]).group(1))
    finally:
        c.logout()
    m = mount(server=srv)
    got = xattrs(os.path.join(m.mountpoint, 'INBOX', '%d.eml' %
                              (uidnext - 1)))
    assert got['user.mail.subject'] == 'Grüße aus München'
    assert got['user.mail.from'] == 'Jörg Müller <joerg@example.org>'
    assert got['user.mail.to'] == 'a@example.org, Bob B. <bob@example.org>'
    assert got['user.mail.cc'] == '日本 <nihon@example.jp>'
    assert got['user.mail.date'] == 'Tue, 4 Jun 2024 10:00:00 +0200'
    assert got['user.mail.message-id'] == '<xattr-1@imapfs.test>'


def test_mail_attributes_cost_one_command_per_mailbox(mount, server, corpus):
    m = mount(debug=True)
    bulk = os.path.join(m.mountpoint, 'Bulk')
    os.listdir(bulk)
    r = tool('sh', '-c', 'getfattr -n user.mail.subject *.eml', cwd=bulk)
    assert r.stdout.decode().count('user.mail.subject=') == \
        len(corpus['Bulk'].messages)
    envelopes = re.findall(r'\bC: A\d+ UID FETCH \S+ \(UID ENVELOPE',
                           m.stderr())
    assert len(envelopes) == 1
