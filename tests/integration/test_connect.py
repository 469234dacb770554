# SPDX-License-Identifier: GPL-2.0-or-later
"""Connecting, authenticating and the process lifecycle: TLS variants,
password sources, failures that must not mount, -d traces, daemon mode
and signals."""

import base64
import os
import re
import signal
import socket
import time

import pytest

import imapfs_fixtures as F
from imapfs_fixtures import tool

PASSWORD = F.USERS['alice']


def read_first(m, corpus, path='INBOX'):
    box = corpus[path]
    msg = box.messages[min(box.messages)]
    got = tool('cat', os.path.join(m.mountpoint, path, msg.filename)).stdout
    assert got == msg.data


def logins(dovecot):
    return [ln for ln in dovecot.log_text().splitlines() if 'Login:' in ln]


# -- ways in that work --------------------------------------------------------

def test_starttls_mount(fresh_server, mount):
    m = mount(server=fresh_server, scheme='imap')
    read_first(m, fresh_server.corpus)
    ours = logins(fresh_server)[1:]     # [0] was the corpus loader
    assert ours, fresh_server.log_text()
    assert all(', TLS' in ln for ln in ours), ours


def test_hostname_localhost(mount, corpus, server):
    m = mount(url=server.url(host='localhost'))
    read_first(m, corpus)


def test_plaintext_with_allow_plaintext(plain_server, mount):
    m = mount(server=plain_server, scheme='imap',
              options=['allow_plaintext'])
    read_first(m, plain_server.corpus)


def test_tls_insecure_accepts_untrusted_certificate(mount, corpus):
    m = mount(options=['tls_insecure'])
    read_first(m, corpus)
    # DESIGN.md: it prints a warning at mount.
    assert re.search(r'insecure|verif|certificate', m.stderr(), re.I), \
        m.stderr()


# -- password sources --------------------------------------------------------

def test_password_env(mount, corpus):
    read_first(mount(password=PASSWORD), corpus)


def test_password_file(mount, corpus, server, tmp_path):
    pw = tmp_path / 'pw'
    pw.write_text(PASSWORD + '\nsecond line is ignored\n')
    pw.chmod(0o600)
    m = mount(password=None, options=['cafile=' + server.cafile,
                                      'password_file=' + str(pw)])
    read_first(m, corpus)


def test_password_command(mount, corpus, server, tmp_path):
    script = tmp_path / 'pw.sh'
    script.write_text('#!/bin/sh\nprintf "%s\\n" "$SECRET_FOR_TEST"\n'
                      'echo ignored\n')
    script.chmod(0o700)
    # password_command comes before IMAPFS_PASSWORD (which is wrong here).
    m = mount(password='wrong', env={'SECRET_FOR_TEST': PASSWORD},
              options=['cafile=' + server.cafile,
                       'password_command=' + str(script)])
    read_first(m, corpus)


# -- ways in that must fail, without mounting --------------------------------

def expect_failure(tmp_path, args, pattern, password=PASSWORD, env=None,
                   timeout=30):
    mp = tmp_path / 'mnt'
    mp.mkdir(exist_ok=True)
    r = F.run_imapfs(['-f'] + list(args) + [str(mp)], str(tmp_path / 'w'),
                     password=password, env=env, timeout=timeout,
                     mountpoint=str(mp))
    assert not r.timed_out, 'imapfs kept running (mounted?):\n' + r.stderr
    assert not F.is_mounted(str(mp))
    assert r.returncode != 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith('imapfs: ')]
    assert lines, 'no "imapfs: " line on stderr:\n' + r.stderr
    assert any(re.search(pattern, ln, re.I) for ln in lines), \
        '%r not in:\n%s' % (pattern, r.stderr)
    assert not F.sanitizer_reports(r.stderr), r.stderr
    assert PASSWORD not in r.stderr + r.stdout
    return r


def test_wrong_password(tmp_path, server):
    before = len(server.log_text().splitlines())
    expect_failure(tmp_path, ['-o', 'cafile=' + server.cafile, server.url()],
                   r'login|auth|password|credential|reject',
                   password='not the password')
    new = server.log_text().splitlines()[before:]
    assert any('auth failed' in ln for ln in new), new


def test_unknown_user(tmp_path, server):
    expect_failure(tmp_path, ['-o', 'cafile=' + server.cafile,
                              server.url(user='mallory')],
                   r'login|auth|password|credential|reject')


def test_untrusted_certificate(tmp_path, server):
    """No cafile: the system store does not know our CA."""
    before = len(logins(server))
    expect_failure(tmp_path, [server.url()],
                   r'certificate|verif|trust|tls|ssl')
    assert len(logins(server)) == before


def test_untrusted_certificate_starttls(tmp_path, server):
    before = len(logins(server))
    expect_failure(tmp_path, [server.url('imap')],
                   r'certificate|verif|trust|tls|ssl')
    assert len(logins(server)) == before


def test_certificate_name_mismatch(tmp_path, mismatch_server):
    expect_failure(tmp_path, ['-o', 'cafile=' + mismatch_server.cafile,
                              mismatch_server.url()],
                   r'certificate|verif|host|name|match|tls|ssl')
    assert logins(mismatch_server) == []


def test_plaintext_refused(tmp_path, plain_server):
    before = plain_server.log_text().count('\n')
    expect_failure(tmp_path, [plain_server.url('imap')],
                   r'starttls|plaintext|allow_plaintext|tls|unencrypted')
    new = plain_server.log_text().splitlines()[before:]
    # Refused before any credential was sent.
    assert not [ln for ln in new
                if re.search(r'Login:|auth failed|\d+ attempts', ln)], new


def test_unreachable_port(tmp_path, server):
    port = F.free_port()
    expect_failure(tmp_path, ['-o', 'cafile=%s,timeout=5' % server.cafile,
                              'imaps://alice@127.0.0.1:%d' % port],
                   r'connect|refused|unreachable|%d' % port)


def test_silent_server_times_out(tmp_path, server):
    """A server that accepts the connection but never greets."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen(5)
        port = s.getsockname()[1]
        t0 = time.monotonic()
        expect_failure(tmp_path, ['-o', 'cafile=%s,timeout=2' % server.cafile,
                                  'imaps://alice@127.0.0.1:%d' % port],
                       r'time|respon|greeting|connect|tls', timeout=40)
        assert time.monotonic() - t0 < 20


@pytest.mark.parametrize('url', [
    'imapx://alice@127.0.0.1',
    'http://alice@127.0.0.1:993',
    'imaps://',
    'imaps://alice@',
    'imaps://alice@127.0.0.1:99999',
    'imaps://alice@127.0.0.1:0',
    'imaps://alice@127.0.0.1:12ab',
    'imaps://alice@[::1',
    '127.0.0.1',
])
def test_malformed_url(tmp_path, url):
    expect_failure(tmp_path, [url], r'url|scheme|host|port|invalid|malformed')


def test_no_user(tmp_path, server):
    expect_failure(tmp_path, ['-o', 'cafile=' + server.cafile,
                              'imaps://127.0.0.1:%d' % server.imaps_port],
                   r'user')


def test_no_password_source(tmp_path, server):
    expect_failure(tmp_path, ['-o', 'cafile=' + server.cafile, server.url()],
                   r'password', password=None)


def test_password_file_readable_by_others_refused(tmp_path, server):
    pw = tmp_path / 'pw'
    pw.write_text(PASSWORD + '\n')
    pw.chmod(0o644)
    before = len(logins(server))
    expect_failure(tmp_path, ['-o', 'cafile=%s,password_file=%s' % (
        server.cafile, pw), server.url()],
        r'password_file|permission|readable|mode|group|others|0644|pw',
        password=None)
    assert len(logins(server)) == before


def test_password_command_failing(tmp_path, server):
    expect_failure(tmp_path, ['-o', 'cafile=%s,password_command=exit 3' %
                              server.cafile, server.url()],
                   r'password|command', password=None)


# -- tracing ------------------------------------------------------------------

def test_debug_traces_conversation_without_password(mount, corpus):
    m = mount(debug=True)
    read_first(m, corpus)
    tool('ls', os.path.join(m.mountpoint, 'Archive'))
    m.stop()
    err = m.stderr()
    assert re.search(r'CAPABILITY', err), err[-3000:]
    assert re.search(r'\b(LOGIN|AUTHENTICATE)\b', err), err[-3000:]
    assert re.search(r'\bLIST\b', err)
    assert re.search(r'\b(SELECT|EXAMINE)\b', err)
    assert re.search(r'\bFETCH\b', err)
    # Neither the password nor its SASL PLAIN / LOGIN encodings.
    secrets = [PASSWORD]
    for plain in ('\0alice\0' + PASSWORD, 'alice\0alice\0' + PASSWORD):
        secrets.append(base64.b64encode(plain.encode()).decode())
    secrets.append(base64.b64encode(PASSWORD.encode()).decode())
    for s in secrets:
        assert s not in err, 'secret %r leaked in the -d trace' % s


@pytest.mark.parametrize('mech', ['plain', 'login'])
def test_forced_mechanism_is_used_and_redacted(fresh_server, mount, mech):
    m = mount(server=fresh_server, debug=True,
              options=['cafile=' + fresh_server.cafile, 'auth=' + mech])
    read_first(m, fresh_server.corpus)
    m.stop()
    ours = logins(fresh_server)[1:]     # [0] was the corpus loader
    assert ours and all('method=%s' % mech.upper() in ln for ln in ours), \
        ours
    err = m.stderr()
    assert re.search(r'AUTHENTICATE %s' % mech.upper(), err), err[-3000:]
    for secret in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in err


def test_unsupported_mechanism_fails_clearly(tmp_path, server):
    expect_failure(tmp_path, ['-o', 'cafile=%s,auth=cram-md5' % server.cafile,
                              server.url()], r'CRAM-MD5.*not supported')


# -- lifecycle ----------------------------------------------------------------

def test_daemon_mode(mount, corpus):
    m = mount(foreground=False)
    # start() returned only after the parent exited 0 with the mount live.
    assert F.is_mounted(m.mountpoint)
    assert m.daemon_pid and m.daemon_pid != m.proc.pid
    read_first(m, corpus)
    m.stop()                    # fusermount3 -u, then the daemon must end
    assert not F.is_mounted(m.mountpoint)
    assert not F.pid_alive(m.daemon_pid)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT],
                         ids=['SIGTERM', 'SIGINT'])
def test_signal_unmounts_cleanly(mount, corpus, sig):
    m = mount()
    read_first(m, corpus)
    m.signal(sig)               # raises unless unmounted and exit 0
    assert not F.is_mounted(m.mountpoint)
    assert m.returncode == 0


def test_fusermount_unmount_ends_process(mount, corpus):
    m = mount()
    read_first(m, corpus)
    m.stop()
    assert m.returncode == 0


def test_mount_while_file_open_then_unmount(mount, corpus):
    """A lazy unmount with a file still open must not crash imapfs."""
    m = mount()
    msg = corpus['INBOX'].messages[1]
    with open(os.path.join(m.mountpoint, 'INBOX', msg.filename), 'rb') as f:
        assert f.read(10) == msg.data[:10]
        tool('fusermount3', '-uz', m.mountpoint)
    m.stop()
    assert m.returncode == 0


SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')


def option_names():
    """Every -o option imapfs takes: config.c's table, and those main.c
    handles for the low-level FUSE API."""
    with open(os.path.join(SOURCE, 'src', 'config.c')) as f:
        names = re.findall(r'^\t\{"(\w+)", OPT_', f.read(), re.M)
    assert len(names) > 15
    return names + ['uid', 'gid', 'umask', 'allow_other']


def test_help_is_one_screen_with_every_option(tmp_path, imapfs_bin):
    r = F.run_imapfs(['--help'], str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) <= 30 and max(map(len, lines)) <= 80, r.stdout
    missing = [n for n in option_names()
               if not re.search(r'\b%s\b' % n, r.stdout)]
    assert not missing, r.stdout
    assert not F.sanitizer_reports(r.stdout + r.stderr)


def test_version_names_the_libraries(tmp_path, imapfs_bin):
    r = F.run_imapfs(['--version'], str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert re.match(r'imapfs \d+\.\d+\.\d+\n', r.stdout), r.stdout
    for lib in ('libfuse', 'OpenSSL', 'GLib'):
        assert re.search(r'^%s \d+\.\d+' % lib, r.stdout, re.M), r.stdout
    assert not F.sanitizer_reports(r.stdout + r.stderr)


def test_man_pages_document_every_option():
    with open(os.path.join(SOURCE, 'man', 'imapfs.1')) as f:
        man = f.read()
    missing = [n for n in option_names()
               if not re.search(r'\\-o %s\b' % n, man)]
    assert not missing


def test_missing_mountpoint(tmp_path, server):
    mp = tmp_path / 'does-not-exist'
    r = F.run_imapfs(['-f', '-o', 'cafile=' + server.cafile, server.url(),
                      str(mp)], str(tmp_path / 'w'), password=PASSWORD,
                     mountpoint=str(mp))
    assert not r.timed_out
    assert not F.is_mounted(str(mp))
    assert r.returncode != 0
    assert re.search(r'^(imapfs|fuse): .*mount ?point', r.stderr, re.M | re.I), \
        r.stderr
    assert not F.sanitizer_reports(r.stderr), r.stderr
