# SPDX-License-Identifier: GPL-2.0-or-later
"""OAuth 2.0 logins: auth=xoauth2 / oauthbearer with oauth_token_command,
against Dovecot's oauth2 passdb asking a local introspection endpoint
(TokenEndpoint) whether a token is valid and whose it is."""

import base64
import os
import re
import subprocess

import pytest

import imapfs_fixtures as F
from imapfs_fixtures import tool

GOOD = 'ya29.good-' + 'x' * 1500        # tokens are long
EXPIRED = 'ya29.expired-token'


@pytest.fixture(scope='module')
def endpoint():
    e = F.TokenEndpoint().start()
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture(scope='module')
def oauth_server(ca, endpoint):
    yield from F.fresh_dovecot(ca, oauth_url=endpoint.url)


@pytest.fixture(scope='module')
def oauth_server_no_sasl_ir(ca, endpoint):
    """Without SASL-IR: the token goes after the server's "+"."""
    yield from F.fresh_dovecot(
        ca, oauth_url=endpoint.url,
        imap_capability=F.capabilities_without('SASL-IR'))


@pytest.fixture
def tokens(endpoint, tmp_path):
    """The valid tokens, and a token file the token command prints and
    counts its runs in."""
    endpoint.tokens.clear()
    endpoint.tokens[GOOD] = 'alice'
    f = tmp_path / 'token'
    f.write_text(GOOD + '\n')
    runs = tmp_path / 'runs'
    runs.write_text('')
    yield f, runs
    endpoint.tokens.clear()


def token_options(server, token_file, runs, mech=None):
    cmd = 'echo run >> %s; cat %s' % (runs, token_file)
    opts = ['cafile=' + server.cafile,
            'oauth_token_command=' + cmd.replace(',', '\\,')]
    return opts + (['auth=' + mech] if mech else [])


def logins(server):
    return re.findall(r'imap-login: Info: Login: user=<(\w+)>, '
                      r'method=([\w-]+)', server.log_text())


def sasl_messages(token, port):
    """The forms a token could leak in: itself, and inside the base64 of
    either SASL message."""
    raw = ['user=alice\x01auth=Bearer %s\x01\x01' % token,
           'n,a=alice,\x01host=127.0.0.1\x01port=%d\x01auth=Bearer %s'
           '\x01\x01' % (port, token)]
    return [token] + [base64.b64encode(r.encode()).decode() for r in raw]


@pytest.mark.parametrize('mech,want', [(None, 'OAUTHBEARER'),
                                       ('xoauth2', 'XOAUTH2'),
                                       ('oauthbearer', 'OAUTHBEARER')])
@pytest.mark.parametrize('sasl_ir', [True, False])
def test_token_login(mount, oauth_server, oauth_server_no_sasl_ir, tokens,
                     endpoint, mech, want, sasl_ir):
    server = oauth_server if sasl_ir else oauth_server_no_sasl_ir
    token_file, runs = tokens
    before = len(logins(server))
    m = mount(server=server, password=None, debug=True,
              options=token_options(server, token_file, runs, mech))
    box = server.corpus['INBOX']
    msg = box.messages[min(box.messages)]
    path = os.path.join(m.mountpoint, 'INBOX', msg.filename)
    assert tool('cat', path).stdout == msg.data
    m.stop()
    ours = logins(server)[before:]
    assert ours and all(ln == ('alice', want) for ln in ours), ours
    assert GOOD in endpoint.seen
    err = m.stderr()
    # With SASL-IR the token rides on the command, else after "+".
    shown = ('AUTHENTICATE %s <redacted>' if sasl_ir else
             r'AUTHENTICATE %s\n.*S: \+ ?\n.*C: <credentials redacted>')
    assert re.search(shown % want, err), err[-3000:]
    for secret in sasl_messages(GOOD, server.imaps_port):
        assert secret not in err, 'the token leaked in the -d trace'


@pytest.mark.parametrize('mech,said', [('xoauth2', '"status":"401"'),
                                       ('oauthbearer', 'invalid_token')])
def test_refused_token_fails_with_the_servers_reason(
        oauth_server, tokens, tmp_path, mech, said):
    """The server's error challenge is answered as each mechanism wants
    (an empty line, ^A), so the server ends with NO, not BAD."""
    token_file, runs = tokens
    token_file.write_text(EXPIRED + '\n')
    mp = tmp_path / 'mnt'
    mp.mkdir()
    opts = ','.join(token_options(oauth_server, token_file, runs, mech))
    r = F.run_imapfs(['-f', '-o', opts, oauth_server.url(), str(mp)],
                     str(tmp_path / 'w'), mountpoint=str(mp))
    assert not r.timed_out and r.returncode == 1
    assert not F.is_mounted(str(mp))
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith('imapfs: login as "alice" failed'), r.stderr
    assert said in line and 'Authentication failed' in line, line
    assert 'aborted' not in line.lower()
    # The command ran twice: a refused token is renewed once.
    assert runs.read_text().count('run') == 2
    assert EXPIRED not in r.stderr


def test_expired_token_is_renewed_on_reconnect(mount, oauth_server, tokens,
                                               endpoint):
    token_file, runs = tokens
    m = mount(server=oauth_server, password=None,
              options=token_options(oauth_server, token_file, runs) +
              ['connections=1', 'poll=0'])
    box = oauth_server.corpus['INBOX']
    uids = sorted(box.messages)
    inbox = os.path.join(m.mountpoint, 'INBOX')
    assert tool('cat', os.path.join(inbox, box.messages[uids[0]].filename)
                ).stdout == box.messages[uids[0]].data
    runs_before = runs.read_text().count('run')
    # The token expires; the command now prints a new one.
    new = GOOD.replace('good', 'renewed')
    del endpoint.tokens[GOOD]
    endpoint.tokens[new] = 'alice'
    token_file.write_text(new + '\n')
    subprocess.run(['doveadm', '-c', oauth_server.conf, 'kick', 'alice'],
                   check=True, capture_output=True, timeout=30)
    last = box.messages[uids[-1]]
    assert tool('cat', os.path.join(inbox, last.filename)).stdout == last.data
    assert new in endpoint.seen
    assert runs.read_text().count('run') > runs_before


@pytest.mark.parametrize('options,reason', [
    (['auth=xoauth2'], 'needs -o oauth_token_command'),
    (['oauth_token_command=false'], 'oauth_token_command exited with '
                                    'status 1'),
])
def test_oauth_misconfiguration(oauth_server, tmp_path, options, reason):
    mp = tmp_path / 'mnt'
    mp.mkdir()
    opts = ','.join(['cafile=' + oauth_server.cafile] + options)
    r = F.run_imapfs(['-f', '-o', opts, oauth_server.url(), str(mp)],
                     str(tmp_path / 'w'), password='unused',
                     mountpoint=str(mp))
    assert r.returncode == 1 and not F.is_mounted(str(mp))
    assert reason in r.stderr, r.stderr


def test_server_without_oauth(server, tmp_path):
    mp = tmp_path / 'mnt'
    mp.mkdir()
    r = F.run_imapfs(['-f', '-o', 'cafile=%s,oauth_token_command=echo t'
                      % server.cafile, server.url(), str(mp)],
                     str(tmp_path / 'w'), mountpoint=str(mp))
    assert r.returncode == 1 and not F.is_mounted(str(mp))
    assert 'offers neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2' in r.stderr
