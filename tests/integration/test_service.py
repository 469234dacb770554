# SPDX-License-Identifier: GPL-2.0-or-later
"""Living under systemd: readiness by sd_notify's protocol (Type=notify),
and the unit files in packaging/systemd/ as systemd-analyze reads them.

No systemd runs here: the test is the service manager, listening on the
datagram socket that $NOTIFY_SOCKET names."""

import os
import shutil
import socket
import subprocess
import threading

import pytest

import imapfs_fixtures as F

SYSTEMD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           '..', '..', 'packaging', 'systemd')


class Manager:
    """Collects notifications; records whether the mount was in place
    when each arrived."""

    def __init__(self, path, mountpoint):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path.startswith('@'):
            self.sock.bind('\0' + path[1:])
        else:
            self.sock.bind(path)
        self.sock.settimeout(30)
        self.mountpoint = mountpoint
        self.messages = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except OSError:
                return
            self.messages.append((data, F.is_mounted(self.mountpoint)))
            if 'STOPPING=1' in data:
                return

    def wait_for(self, key, timeout=20):
        F.wait_for(lambda: any(key in m for m, _ in self.messages), timeout)
        for msg, mounted in self.messages:
            if key in msg:
                return msg, mounted
        raise AssertionError('no %s among %r' % (key, self.messages))

    def close(self):
        self.sock.close()


@pytest.mark.parametrize('kind', ['path', 'abstract'])
def test_ready_once_mounted_then_stopping(mount, server, tmp_path, kind):
    mp = str(tmp_path / 'mnt')
    envfile = tmp_path / 'command.env'
    path = (str(tmp_path / 'notify') if kind == 'path'
            else '@imapfs-test-%d' % os.getpid())
    manager = Manager(path, mp)
    try:
        # The password command writes its environment: the socket must
        # not leak to the commands imapfs runs.
        cmd = 'env > %s; echo "$PW"' % envfile
        m = mount(options=['cafile=' + server.cafile,
                           'password_command=' + cmd.replace(',', '\\,')],
                  password=None, start=False,
                  env={'NOTIFY_SOCKET': path, 'PW': F.USERS['alice']})
        m.start()
        msg, mounted = manager.wait_for('READY=1')
        assert mounted, 'READY=1 came before the mount'
        assert 'STATUS=%s mounted on %s' % (server.url(), mp) in msg
        assert 'INBOX' in os.listdir(mp)
        assert 'NOTIFY_SOCKET' not in envfile.read_text()
        m.stop()
        manager.wait_for('STOPPING=1')
    finally:
        manager.close()


@pytest.mark.skipif(shutil.which('systemd-analyze') is None,
                    reason='systemd-analyze is not installed')
@pytest.mark.parametrize('unit', ['imapfs@.service', 'srv-mail.mount'])
def test_unit_files_verify(tmp_path, imapfs_bin, unit):
    """The units parse, and name commands that exist (the binary under
    test standing in for /usr/bin/imapfs)."""
    with open(os.path.join(SYSTEMD_DIR, unit)) as f:
        text = f.read()
    assert 'Type=notify' in text or 'Type=imapfs' in text
    name = unit.replace('@.', '@test.')
    (tmp_path / name).write_text(
        text.replace('@bindir@/imapfs', os.path.abspath(imapfs_bin)))
    runtime = tmp_path / 'runtime'
    runtime.mkdir(mode=0o700)
    cmd = ['systemd-analyze', 'verify', '--man=no', str(tmp_path / name)]
    if unit.endswith('.service'):
        cmd.insert(1, '--user')
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime),
                                HOME=str(tmp_path)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'rror' not in r.stdout + r.stderr
