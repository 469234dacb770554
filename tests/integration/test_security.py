# SPDX-License-Identifier: GPL-2.0-or-later
"""Secrets and files: the password and the OAuth token stay out of argv,
environments, the -d trace and syslog; the daemon cannot be dumped or
traced by its user; the disk cache is private whatever the umask; other
users see the mount only with allow_other."""

import base64
import errno
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

import pytest

import imapfs_fixtures as F
from imapfs_fixtures import tool
from test_cache import cache_opts
from test_connect import read_first
# endpoint, oauth_server and tokens are fixtures: pytest finds them here.
from test_oauth import GOOD, endpoint, oauth_server, sasl_messages, \
    tokens  # noqa: F401, F811

PASSWORD = F.USERS['alice']
NOBODY = pwd.getpwnam('nobody')
# Runs the rest of the command line as nobody.
AS_NOBODY = ['setpriv', '--reuid=%d' % NOBODY.pw_uid,
             '--regid=%d' % NOBODY.pw_gid, '--clear-groups']
# ... allowed to open /dev/fuse, which may be root's only (mode 0600).
AS_NOBODY_WITH_FUSE = AS_NOBODY + ['--inh-caps=+dac_override,+sys_admin',
                                   '--ambient-caps=+dac_override,+sys_admin']


def password_forms(password):
    """The password and the base64 forms a login sends it in (SASL
    PLAIN, with and without an authorization identity; SASL LOGIN)."""
    raw = [password, '\0alice\0' + password, 'alice\0alice\0' + password]
    return [password] + [base64.b64encode(r.encode()).decode() for r in raw]


def assert_hidden(forms, places):
    """places: {what: text}; none may hold any of the secret's forms."""
    for where, text in places.items():
        for s in forms:
            assert s not in text, 'secret %r found in %s' % (s, where)


def proc_text(pid, name):
    with open('/proc/%d/%s' % (pid, name), 'rb') as f:
        return f.read().decode(errors='replace')


def daemon_places(pid):
    return {'daemon ' + n: proc_text(pid, n) for n in ('cmdline', 'environ')}


def recording_command(tmp_path, secret_file):
    """A command printing the first line of secret_file that first
    appends its own argv and environment to tmp_path/seen."""
    seen = tmp_path / 'seen'
    script = tmp_path / 'secret.sh'
    script.write_text('#!/bin/sh\ncat /proc/$$/cmdline /proc/$$/environ '
                      '>> %s\nhead -n 1 %s\n' % (seen, secret_file))
    script.chmod(0o700)
    return str(script), seen


def command_places(script, seen):
    text = seen.read_text(errors='replace')
    # It ran, and what it recorded is its argv and environment.
    assert script in text and 'PATH=' in text, text
    assert 'IMAPFS_PASSWORD' not in text, 'the command inherited it'
    return {'the command': text}


@pytest.fixture
def shared_dir(mount):
    """A directory other users may enter (tmp_path's parents are 0700).
    The mounts in it are stopped before it is removed."""
    d = tempfile.mkdtemp(prefix='imapfs-sec-', dir=F.scratch_dir())
    os.chmod(d, 0o755)
    yield d
    errors = mount.close()
    shutil.rmtree(d, ignore_errors=True)
    assert not errors, errors


def wrapped_mount(mount, wrapper, mountpoint, options, **kw):
    m = F.WrappedMount(wrapper, mount.server.url(), mountpoint,
                       options=options, password=PASSWORD,
                       workdir=mountpoint + '.work', **kw)
    return mount.add(m).start()


# -- secrets ------------------------------------------------------------------

@pytest.mark.parametrize('source', ['env', 'command'])
def test_password_stays_out_of_argv_environ_and_trace(mount, server,
                                                      tmp_path, source):
    """IMAPFS_PASSWORD is set in both cases: wiped when used, and with a
    password_command it must not reach the command either."""
    opts = ['cafile=' + server.cafile]
    if source == 'command':
        pw = tmp_path / 'pw'
        pw.write_text(PASSWORD + '\n')
        script, seen = recording_command(tmp_path, pw)
        opts.append('password_command=' + script)
    m = mount(options=opts, password=PASSWORD, debug=True)
    read_first(m, server.corpus)
    places = daemon_places(m.pid)
    m.stop()
    err = m.stderr()
    assert re.search(r'C: A\d+ AUTHENTICATE PLAIN <redacted>', err), \
        err[-3000:]
    places['-d trace'] = err
    if source == 'command':
        places.update(command_places(script, seen))
    assert_hidden(password_forms(PASSWORD), places)


def test_token_stays_out_of_argv_environ_and_trace(mount, oauth_server,
                                                   tokens, tmp_path):
    token_file, _ = tokens
    script, seen = recording_command(tmp_path, token_file)
    m = mount(server=oauth_server, password=PASSWORD, debug=True,
              options=['cafile=' + oauth_server.cafile,
                       'oauth_token_command=' + script])
    read_first(m, oauth_server.corpus)
    places = daemon_places(m.pid)
    m.stop()
    err = m.stderr()
    assert re.search(r'C: A\d+ AUTHENTICATE OAUTHBEARER <redacted>',
                     err), err[-3000:]
    places['-d trace'] = err
    places.update(command_places(script, seen))
    assert_hidden(sasl_messages(GOOD, oauth_server.imaps_port), places)
    # The unused IMAPFS_PASSWORD went too.
    assert_hidden([PASSWORD], places)


class SyslogMount(F.WrappedMount):
    """imapfs daemonized in a mount namespace of its own, where /dev is a
    fresh tmpfs with the devices it needs and /dev/log is our socket: its
    syslog is ours to read, and the host's /dev is untouched. The mount
    is only in that namespace: path() reaches it through /proc/PID/root,
    and stop() is a SIGTERM."""

    def __init__(self, log_socket, url, mountpoint, **kw):
        devices = ' && '.join(
            'mknod -m 666 /dev/%s c %d %d' % (
                n, os.major(os.stat('/dev/' + n).st_rdev),
                os.minor(os.stat('/dev/' + n).st_rdev))
            for n in ('null', 'zero', 'random', 'urandom', 'fuse'))
        setup = ('mount -t tmpfs -o mode=755 imapfs-test /dev && %s && '
                 'ln -s %s /dev/log && exec "$@"' % (devices, log_socket))
        super().__init__(['unshare', '--mount', '--propagation=private',
                          'sh', '-c', setup, 'sh'], url, mountpoint,
                         foreground=False, **kw)

    def start(self, timeout=20):
        with open(self.stderr_path, 'wb') as err:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=err,
                stderr=err, env=self.env)
        F.ACTIVE_MOUNTS.add(self)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        if self.returncode != 0:
            self._abort()
            raise F.FixtureError('imapfs (namespace) exited %s:\n%s' % (
                self.returncode, self.stderr()))
        self.daemon_pid = F.find_daemon(self.mountpoint)
        return self

    def path(self, *names):
        return os.path.join('/proc/%d/root' % self.daemon_pid,
                            self.mountpoint.lstrip('/'), *names)

    def stop(self, timeout=20, check=True):
        if not self.stopped:
            self.signal(signal.SIGTERM, timeout, check)


def test_password_stays_out_of_syslog(mount, fresh_server, tmp_path):
    """The daemon logs to syslog; a login refused after the mount (the
    password was changed on the server) is logged there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as log:
        log.bind(str(tmp_path / 'log'))
        log.setblocking(False)
        lines = refused_login_logged(mount, fresh_server, tmp_path, log)
    assert_hidden(password_forms(PASSWORD), {'syslog': '\n'.join(lines)})


def refused_login_logged(mount, fresh_server, tmp_path, log):
    """Mounts, reads, has the server refuse the password, reads again:
    the syslog lines that came to socket `log`, once one names the
    refusal."""
    m = SyslogMount(log.getsockname(), fresh_server.url(),
                    str(tmp_path / 'mnt'),
                    options=['cafile=' + fresh_server.cafile, 'timeout=5',
                             'cache=none'],
                    password=PASSWORD, workdir=str(tmp_path / 'work'))
    mount.add(m).start()
    box = fresh_server.corpus['INBOX']
    first, last = min(box.messages), max(box.messages)
    with open(m.path('INBOX', box.messages[first].filename), 'rb') as f:
        assert f.read() == box.messages[first].data
    with open(fresh_server.passwd, 'w') as f:
        f.write('alice:{PLAIN}changed::::::\n')
    time.sleep(1.1)     # Dovecot looks at the file at most once a second
    tool('doveadm', '-c', fresh_server.conf, 'kick', 'alice')
    with pytest.raises(OSError) as e:
        with open(m.path('INBOX', box.messages[last].filename), 'rb') as f:
            f.read()
    assert e.value.errno == errno.EIO
    lines = []

    def refused():
        try:
            while True:
                lines.append(log.recv(65536).decode(errors='replace'))
        except BlockingIOError:
            pass
        return any('login as "alice" failed' in ln for ln in lines)
    assert F.wait_for(refused, 10), lines
    m.stop()
    return lines


# -- the process --------------------------------------------------------------

def proc_owners(pid, names=('environ', 'mem', 'status')):
    return {n: os.stat('/proc/%d/%s' % (pid, n)).st_uid for n in names}


def test_daemon_is_not_dumpable(mount, shared_dir, server):
    """Run as nobody (with the capabilities /dev/fuse wants here, where
    it is root's only): the files in /proc/PID of a process that is not
    dumpable belong to root, so core dumps, ptrace, /proc/PID/mem and
    environ are closed to its own user too. Its password_command is
    dumpable again, having been exec'd."""
    mp = os.path.join(shared_dir, 'mnt')
    work = mp + '.work'
    for d in (mp, work):
        os.mkdir(d)
        os.chown(d, NOBODY.pw_uid, NOBODY.pw_gid)
    cafile = os.path.join(shared_dir, 'ca.pem')
    shutil.copy(server.cafile, cafile)
    cmd = 'stat -c %%u /proc/$$/status > %s/owner; echo "$PW"' % work
    m = wrapped_mount(mount, AS_NOBODY_WITH_FUSE, mp,
                      ['cafile=' + cafile, 'password_command=' + cmd],
                      env={'PW': PASSWORD})
    status = proc_text(m.pid, 'status')
    assert re.search(r'^Uid:\s+%d\s' % NOBODY.pw_uid, status, re.M), status
    assert proc_owners(m.pid) == {'environ': 0, 'mem': 0, 'status': 0}
    with open(os.path.join(work, 'owner')) as f:
        assert int(f.read()) == NOBODY.pw_uid


@pytest.mark.parametrize('allow_other', [False, True],
                         ids=['default', 'allow_other'])
def test_other_users_need_allow_other(mount, shared_dir, allow_other):
    mp = os.path.join(shared_dir, 'mnt')
    opts = ['cafile=' + mount.server.cafile]
    m = wrapped_mount(mount, [], mp,
                      opts + (['allow_other'] if allow_other else []))
    r = tool(*AS_NOBODY, 'ls', m.mountpoint, check=False)
    if allow_other:
        assert r.returncode == 0 and b'INBOX' in r.stdout.split(), r
    else:
        assert r.returncode != 0 and b'Permission denied' in r.stderr, r
    assert 'INBOX' in os.listdir(m.mountpoint)      # its owner always can
    super_options = F.mount_entry(m.mountpoint)[-1].split(b',')
    assert (b'allow_other' in super_options) == allow_other


# -- files --------------------------------------------------------------------

def modes_under(top):
    """{path relative to top: permission bits} of top and all below."""
    out = {'.': stat.S_IMODE(os.stat(top).st_mode)}
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, top)] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


@pytest.mark.parametrize('existing', [False, True],
                         ids=['new', 'existing-0755'])
def test_cache_is_private_with_umask_0(mount, corpus, tmp_path, existing):
    cache = tmp_path / 'deep' / 'cache'
    if existing:
        cache.mkdir(parents=True)
        cache.chmod(0o755)
    umask0 = ['sh', '-c', 'umask 0 && exec "$@"', 'sh']
    m = wrapped_mount(mount, umask0, str(tmp_path / 'mnt'),
                      cache_opts(mount.server, cache))
    box = corpus['INBOX']
    for msg in list(box.messages.values())[:5]:
        with open(os.path.join(m.mountpoint, 'INBOX', msg.filename),
                  'rb') as f:
            assert f.read() == msg.data
    m.stop()
    modes = modes_under(str(cache))
    assert any(p.startswith('segments/') for p in modes), modes
    wrong = {p: oct(mode) for p, mode in modes.items()
             if mode != (0o700 if os.path.isdir(cache / p) else 0o600)}
    assert not wrong, wrong
    if not existing:            # so are the parents it made
        assert stat.S_IMODE(os.stat(tmp_path / 'deep').st_mode) == 0o700
