# SPDX-License-Identifier: GPL-2.0-or-later
"""packaging/build-deb.sh builds the .deb with dpkg-buildpackage from
this tree and checks it (files, links, --version); here we also check
what the package declares and ships."""

import os
import shutil
import subprocess

import pytest

import imapfs_fixtures as F

SCRIPT = os.path.join(F.REPO, 'packaging', 'build-deb.sh')


@pytest.mark.skipif(not os.path.isdir(os.path.join(F.REPO, '.git')),
                    reason='build-deb.sh takes its file list from git')
@pytest.mark.skipif(shutil.which('dpkg-buildpackage') is None,
                    reason='dpkg-dev is not installed')
def test_deb_builds_and_ships_everything(tmp_path):
    out = tmp_path / 'out'
    r = subprocess.run(['bash', SCRIPT, str(out)], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    deb = r.stdout.strip().splitlines()[-1]
    assert deb.startswith(str(out)) and deb.endswith('.deb'), r.stdout
    info = subprocess.run(['dpkg-deb', '-f', deb, 'Package', 'Version',
                           'Depends'], capture_output=True, text=True,
                          check=True).stdout
    assert 'Package: imapfs' in info
    assert 'fuse3' in info and 'libfuse3' in info and 'libssl' in info
    files = subprocess.run(['dpkg-deb', '-c', deb], capture_output=True,
                           text=True, check=True).stdout
    for path in ('./usr/bin/imapfs',
                 './usr/sbin/mount.imapfs -> ../bin/imapfs',
                 './usr/sbin/mount.fuse.imapfs -> ../bin/imapfs',
                 './usr/share/man/man1/imapfs.1.gz',
                 './usr/share/man/man8/mount.imapfs.8.gz',
                 './usr/lib/systemd/user/imapfs@.service',
                 './usr/share/doc/imapfs/examples/srv-mail.mount'):
        assert path in files, files
    x = tmp_path / 'x'
    subprocess.run(['dpkg-deb', '-x', deb, str(x)], check=True)
    with open(x / 'usr/lib/systemd/user/imapfs@.service') as f:
        assert 'ExecStart=/usr/bin/imapfs -f ' in f.read()
