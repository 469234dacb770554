# SPDX-License-Identifier: GPL-2.0-or-later
"""mount.imapfs: `mount -t imapfs`, an fstab line with `mount DIR`,
`mount -t fuse.imapfs`, and `umount DIR`, with the real mount(8).

mount(8) looks for its helpers in /sbin only, so the module links
/sbin/mount.imapfs and /sbin/mount.fuse.imapfs to the binary under test
for its duration, and puts back whatever was there before."""

import os
import subprocess

import pytest

import imapfs_fixtures as F
from imapfs_fixtures import tool

HELPERS = ('/sbin/mount.imapfs', '/sbin/mount.fuse.imapfs')


@pytest.fixture(scope='module')
def helpers(imapfs_bin):
    saved = []
    try:
        for path in HELPERS:
            if os.path.lexists(path):
                os.rename(path, path + '.imapfs-test-saved')
                saved.append(path)
            os.symlink(os.path.abspath(imapfs_bin), path)
        yield HELPERS
    finally:
        for path in HELPERS:
            if os.path.islink(path):
                os.unlink(path)
        for path in saved:
            os.rename(path + '.imapfs-test-saved', path)


@pytest.fixture
def password_file(tmp_path):
    """A password file in a directory whose name has a space, so that
    password_command=cat\\040... needs the escape."""
    d = tmp_path / 'pass word'
    d.mkdir()
    f = d / 'pw'
    f.write_text(F.USERS['alice'] + '\n')
    f.chmod(0o600)
    return str(f)


@pytest.fixture
def helper_mount(tmp_path, helpers):
    mounts = []

    def start(command, mountpoint, **kw):
        m = F.HelperMount(command, mountpoint,
                          workdir=str(tmp_path / ('w%d' % len(mounts))),
                          **kw)
        mounts.append(m)
        return m.start()
    yield start
    errors = []
    for m in mounts:
        try:
            m.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail('teardown: ' + '\n'.join(errors))


def fstype_and_source(path):
    fields = F.mount_entry(path)
    assert fields is not None, '%s is not mounted' % path
    sep = fields.index(b'-')
    return fields[sep + 1].decode(), fields[sep + 2].decode()


def assert_live(mountpoint, server):
    """mount returned: the account must answer at once, no waiting."""
    assert 'INBOX' in os.listdir(mountpoint)
    fstype, source = fstype_and_source(mountpoint)
    assert fstype == 'fuse.imapfs'
    assert source == server.url('imaps')
    out = tool('df', '--output=fstype,source', mountpoint).stdout.decode()
    assert 'fuse.imapfs' in out and server.url('imaps') in out


# mount(8)'s own options, as an fstab line would carry them.
FOREIGN = 'noauto,user,_netdev,nofail,x-systemd.automount,defaults,rw'


def test_mount_t_imapfs_and_umount(helper_mount, server, password_file,
                                   tmp_path):
    mp = str(tmp_path / 'mnt')
    opts = ("%s,cafile=%s,password_command=cat\\040'%s'" %
            (FOREIGN, server.cafile, password_file.replace(' ', '\\040')))
    m = helper_mount(['mount', '-t', 'imapfs', server.url('imaps'), mp,
                      '-o', opts], mp)
    assert_live(mp, server)
    inbox = sorted(os.listdir(os.path.join(mp, 'INBOX')))
    assert any(n.endswith('.eml') for n in inbox)
    pid = m.pid
    r = subprocess.run(['umount', mp], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert not F.is_mounted(mp)
    F.wait_for(lambda: not F.pid_alive(pid), 20)
    assert not F.pid_alive(pid), 'the daemon outlived umount'
    m.stop()


def test_fstab_line_and_mount_dir(helper_mount, server, password_file,
                                  tmp_path):
    """fstab spells a space \\040; mount(8) decodes it for us."""
    mp = str(tmp_path / 'mail box')
    os.makedirs(mp)
    fstab = tmp_path / 'fstab'
    fstab.write_text('%s %s imapfs %s,ro,parts=no,cafile=%s,'
                     "password_command=cat\\040'%s' 0 0\n" % (
                         server.url('imaps'), mp.replace(' ', '\\040'),
                         FOREIGN, server.cafile,
                         password_file.replace(' ', '\\040')))
    helper_mount(['mount', '-T', str(fstab), mp], mp)
    assert_live(mp, server)
    opts = F.mount_entry(mp)[5].decode().split(',')
    assert 'ro' in opts
    inbox = os.listdir(os.path.join(mp, 'INBOX'))
    assert inbox and not any(n.endswith('.parts') for n in inbox)
    with pytest.raises(OSError):
        open(os.path.join(mp, 'INBOX', 'new.eml'), 'wb')


def test_mount_t_fuse_imapfs(helper_mount, server, tmp_path):
    mp = str(tmp_path / 'mnt')
    helper_mount(['mount', '-t', 'fuse.imapfs', server.url('imaps'), mp,
                  '-o', 'cafile=' + server.cafile],
                 mp, password=F.USERS['alice'])
    assert_live(mp, server)


@pytest.mark.parametrize('options,reason', [
    ('password_command=echo\\040wrong', 'login as "alice" failed'),
    ('connections=0', 'connections'),
    ('no_such_option', 'no_such_option'),
])
def test_mount_fails_with_reason(helpers, server, tmp_path, options,
                                 reason):
    mp = str(tmp_path / 'mnt')
    os.makedirs(mp)
    env = F.daemon_env(str(tmp_path / 'w'))
    try:
        r = subprocess.run(['mount', '-t', 'imapfs', server.url('imaps'), mp,
                            '-o', 'cafile=%s,%s' % (server.cafile, options)],
                           capture_output=True, timeout=60, env=env)
    finally:
        if F.is_mounted(mp):
            F.fusermount_u(mp)
    assert r.returncode != 0
    assert reason in r.stderr.decode(), r.stderr
    assert not F.is_mounted(mp)


def test_fake_mount_checks_only(helpers, server, tmp_path):
    mp = str(tmp_path / 'mnt')
    os.makedirs(mp)
    r = subprocess.run([HELPERS[0], server.url('imaps'), mp, '-f', '-v',
                        '-o', 'noauto,ro'], capture_output=True, timeout=30,
                       env=F.daemon_env(str(tmp_path / 'w')))
    assert r.returncode == 0, r.stderr
    assert b'(fake)' in r.stderr
    assert not F.is_mounted(mp)
    r = subprocess.run([HELPERS[0], server.url('imaps'), mp, '-f',
                        '-o', 'timeout=never'], capture_output=True,
                       timeout=30, env=F.daemon_env(str(tmp_path / 'w')))
    assert r.returncode == 1 and b'timeout' in r.stderr
