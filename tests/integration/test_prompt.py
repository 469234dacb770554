# SPDX-License-Identifier: GPL-2.0-or-later
"""With no other password source, imapfs asks on the terminal without
echoing what is typed, and mounts with the answer."""

import fcntl
import os
import pty
import select
import subprocess
import termios
import time

import imapfs_fixtures as F


def read_until(fd, needle, timeout=20):
    got = b''
    end = time.monotonic() + timeout
    while needle not in got and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    return got


def take_terminal():
    """In the child: a new session whose controlling terminal is stdin."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_password_prompt_on_terminal_without_echo(server, tmp_path):
    mp = tmp_path / 'mnt'
    mp.mkdir()
    master, slave = pty.openpty()
    err = open(tmp_path / 'stderr', 'wb')
    p = subprocess.Popen(
        [F.imapfs_bin(), '-f', '-o', 'cafile=' + server.cafile, server.url(),
         str(mp)], stdin=slave, stdout=slave, stderr=err,
        env=F.daemon_env(str(tmp_path / 'w')), preexec_fn=take_terminal)
    os.close(slave)
    try:
        shown = read_until(master, b'assword')
        assert b'assword' in shown, shown
        os.write(master, F.USERS['alice'].encode() + b'\n')
        assert F.wait_for(lambda: F.is_mounted(str(mp)), 20), \
            open(tmp_path / 'stderr', 'rb').read()
        echoed = read_until(master, b'\0', timeout=1)
        assert F.USERS['alice'].encode() not in shown + echoed
        assert 'INBOX' in os.listdir(mp)
    finally:
        subprocess.run(['fusermount3', '-u', str(mp)])
        try:
            rc = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        os.close(master)
        err.close()
    assert rc == 0, open(tmp_path / 'stderr', 'rb').read()
