# SPDX-License-Identifier: GPL-2.0-or-later
"""The fixtures' own helpers, so a test failure is never theirs."""

import imapfs_fixtures as F


def test_mutf7_vectors():
    # RFC 3501 section 5.1.3, and the names the corpus uses.
    vectors = {
        '~peter/mail/台北/日本語': '~peter/mail/&U,BTFw-/&ZeVnLIqe-',
        'Entwürfe': 'Entw&APw-rfe',
        '日本語': '&ZeVnLIqe-',
        'a&b': 'a&-b',
        'INBOX': 'INBOX',
        '🦓': '&2D7dkw-',
    }
    for utf8, mutf7 in vectors.items():
        assert F.mutf7_encode(utf8) == mutf7
        assert F.mutf7_decode(mutf7) == utf8


def test_escape_level():
    assert F.escape_level('Slash/Name') == 'Slash%2FName'
    assert F.escape_level('Pct%Name') == 'Pct%25Name'
    assert F.escape_level('100%/x') == '100%25%2Fx'


def test_corpus_server_state(server):
    """The shared server holds what the tests assume (LIST attributes,
    \\Noselect parent, sizes), checked through imaplib only."""
    c = server.client()
    try:
        server.corpus.check_list(c)
        typ, _ = c.select('Parent', readonly=True)
        assert typ != 'OK'
        inbox = F.fetch_reference(c, 'INBOX', bodies=False)
        for uid, m in server.corpus['INBOX'].messages.items():
            assert inbox[uid].size == len(m.data) == m.size
    finally:
        c.logout()
