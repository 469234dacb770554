# SPDX-License-Identifier: GPL-2.0-or-later
"""pytest fixtures for the imapfs integration tests (see imapfs_fixtures.py).

Scopes: the CA and the corpus server (`server`, a few thousand messages) are
shared by the whole session, because loading the corpus is the slow part and
a read-only file system cannot change it; tests that need a server of their
own (other certificate, no TLS, a log to inspect) get a fresh one. Every
mount is per test and is unmounted and checked (exit 0, no sanitizer
report) in teardown, even when the test failed.
"""

import faulthandler
import os
import sys
import threading

import pytest

import imapfs_fixtures as F

# Longest a single test may take before the watchdog kills its imapfs
# processes (which makes any file system call stuck on them fail).
TEST_TIMEOUT = int(os.environ.get('IMAPFS_TEST_TIMEOUT', '180'))


def pytest_report_header(config):
    b = F.imapfs_bin()
    return 'imapfs binary: %s%s' % (b, '' if os.path.exists(b)
                                    else ' (MISSING)')


@pytest.fixture(autouse=True)
def watchdog(request):
    fired = []

    def fire():
        fired.append(True)
        sys.stderr.write('\n*** %s exceeded %ds: killing its imapfs '
                         'processes\n' % (request.node.nodeid, TEST_TIMEOUT))
        faulthandler.dump_traceback(all_threads=True)
        for m in list(F.ACTIVE_MOUNTS):
            m.kill()

    t = threading.Timer(TEST_TIMEOUT, fire)
    t.daemon = True
    t.start()
    yield
    t.cancel()
    if fired:
        pytest.fail('test exceeded %ds; imapfs was killed' % TEST_TIMEOUT)


@pytest.fixture(scope='session')
def imapfs_bin():
    b = F.imapfs_bin()
    if not os.access(b, os.X_OK):
        pytest.fail('imapfs binary %s is missing (set IMAPFS_BIN)' % b)
    return b


@pytest.fixture(scope='session')
def ca(tmp_path_factory):
    return F.CA(str(tmp_path_factory.mktemp('ca')))


@pytest.fixture(scope='session')
def server(ca):
    """Dovecot with the full corpus (server.corpus); shared, never written."""
    d = F.Dovecot(ca)
    try:
        d.start()
        d.corpus = F.Corpus().load(d)
        yield d
    finally:
        d.stop()


@pytest.fixture
def corpus(server):
    return server.corpus


@pytest.fixture
def fresh_server(ca):
    """A small private server for tests that inspect its log."""
    yield from F.fresh_dovecot(ca)


@pytest.fixture
def trash_server(ca):
    """A small private server with a \\Trash special-use mailbox."""
    yield from F.fresh_dovecot(ca, trash=True)


@pytest.fixture
def plain_server(ca):
    """`ssl = no`: plain imap only, STARTTLS is not offered."""
    yield from F.fresh_dovecot(ca, tls=False)


@pytest.fixture(scope='session')
def mismatch_server(ca):
    """TLS with a certificate from our CA for another host name."""
    cert = ca.issue('wrong-name', sans=('DNS:wrong.example.org',))
    d = F.Dovecot(ca, cert=cert, quota=False)
    try:
        yield d.start()
    finally:
        d.stop()


class MountFactory:
    """mount(...) starts imapfs for the test; all are stopped afterwards."""

    def __init__(self, tmp_path, server):
        self.tmp_path = tmp_path
        self.server = server
        self.mounts = []

    def __call__(self, url=None, options=None, password=F.USERS['alice'],
                 server=None, scheme='imaps', mailbox=None, name='mnt',
                 start=True, **kw):
        srv = server or self.server
        if options is None:
            options = ['cafile=' + srv.cafile]
        url = url or srv.url(scheme, mailbox=mailbox)
        m = F.Mount(url, str(self.tmp_path / name), options,
                    password=password,
                    workdir=str(self.tmp_path / (name + '.work')), **kw)
        self.mounts.append(m)
        return m.start() if start else m

    def add(self, m):
        """Has Mount `m`, made by the test, stopped with the others."""
        self.mounts.append(m)
        return m

    def close(self):
        errors = []
        for m in self.mounts:
            try:
                m.stop()
            except AssertionError as e:
                errors.append(str(e))
        return errors


@pytest.fixture
def mount(tmp_path, server, imapfs_bin):
    f = MountFactory(tmp_path, server)
    yield f
    errors = f.close()
    if errors:
        pytest.fail('teardown: ' + '\n'.join(errors))


@pytest.fixture
def mnt(mount):
    """The whole corpus account mounted (imaps, cafile, IMAPFS_PASSWORD)."""
    return mount()
