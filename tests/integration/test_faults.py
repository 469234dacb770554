# SPDX-License-Identifier: GPL-2.0-or-later
"""A bad network and a crashing server, made by fault_proxy.FaultProxy
between imapfs and a private Dovecot, and by killing that Dovecot: the
files still read back as the server's exact bytes, a silent server costs
a reader at most about `timeout`, and the daemon lives through it all.

The mail here is its own (FaultCorpus, about 29 MB in 300 messages), so
that connections can be cut every few megabytes several times over; the
server speaks plain imap, so the proxy sees the IMAP stream. Every mount
has cache=none and parts=no: what is read really comes over the wire.

Figures for the issue notes (drops survived, bytes verified, the longest
blocked call) are printed as "FAULTS <test>: ..." lines (pytest -s), and
appended as JSON lines to $IMAPFS_FAULTS_SUMMARY when that is set.
"""

import datetime
import json
import os
import re
import subprocess
import threading
import time

import pytest

import imapfs_fixtures as F
from fault_proxy import FaultProxy
from test_reconnect import server_children

MIB = 1024 * 1024
WORD = F.GREP_WORD.encode()
# The literal of a message body in a FETCH reply.
BODY_LITERAL = rb'BODY\[\](?:<\d+>)? \{\d+\}\r\n'


class FaultCorpus(F.Corpus):
    """Mailboxes INBOX, Archive and Lists of `per_box` messages each:
    every sixth a multipart/mixed of 100 KB - 1 MB (a base64 attachment
    of random bytes, then a text part), the others 1-12 KB of text. One
    in five holds WORD, in a big one only after the attachment."""

    def __init__(self, per_box=100, seed=8):
        super().__init__(bulk=0, big=False, seed=seed)
        self.per_box = per_box
        self.mailboxes = [F.Mailbox((name,))
                          for name in ('INBOX', 'Archive', 'Lists')]

    def _content(self, box):
        start = F._dt(2024, 1, 1)
        return [(None, start + datetime.timedelta(hours=i),
                 self._message('%s #%d' % (box.path, i), i % 6 == 0))
                for i in range(self.per_box)]

    def _text(self, nbytes, marked):
        words = []
        while sum(len(w) + 1 for w in words) < nbytes:
            words.append(self.rng.choice(F._WORDS))
        if marked:
            words.insert(self.rng.randrange(len(words)), F.GREP_WORD)
        lines = [' '.join(words[i:i + 10]) for i in range(0, len(words), 10)]
        return F.CRLF.join(x.encode() for x in lines) + F.CRLF

    def _message(self, subject, big):
        marked = self.rng.random() < 0.2
        if not big:
            return (F._hdr(subject) + F.CRLF +
                    self._text(self.rng.randint(1000, 12000), marked))
        raw = self.rng.randbytes(self.rng.randint(75000, 750000))
        b = b'fault-mixed'
        return (F._hdr(subject, extra=[
            'MIME-Version: 1.0',
            'Content-Type: multipart/mixed; boundary="%s"' % b.decode()]) +
            F.CRLF + b'--' + b + F.CRLF +
            b'Content-Type: text/plain\r\n\r\nSee attachment.\r\n' +
            b'--' + b + F.CRLF +
            b'Content-Type: application/octet-stream\r\n'
            b'Content-Transfer-Encoding: base64\r\n\r\n' +
            F._b64_lines(raw) + b'--' + b + F.CRLF +
            b'Content-Type: text/plain\r\n\r\n' +
            self._text(400, marked) + b'--' + b + b'--' + F.CRLF)


@pytest.fixture(scope='module')
def server(ca):
    """Overrides conftest's: the FaultCorpus on a plain-imap Dovecot of
    this module (test_server_restart_during_grep kills and restarts
    it, so it runs last)."""
    yield from F.fresh_dovecot(ca, corpus=FaultCorpus(), tls=False)


@pytest.fixture
def proxy(server):
    p = FaultProxy(server.imap_port).start()
    yield p
    p.stop()


def fault_mount(mount, server, port=None, timeout=10, more=()):
    """Mount `server` through the proxy on `port` (None: directly)."""
    return mount(url=server.url('imap', port=port),
                 options=['allow_plaintext', 'cache=none', 'parts=no',
                          'timeout=%d' % timeout] + list(more))


def report(test, **figures):
    line = ' '.join('%s=%s' % kv for kv in figures.items())
    print('\nFAULTS %s: %s' % (test, line), flush=True)
    path = os.environ.get('IMAPFS_FAULTS_SUMMARY')
    if path:
        with open(path, 'a') as f:
            f.write(json.dumps(dict(figures, test=test)) + '\n')


def check_listings(root, corpus):
    for box in corpus.mailboxes:
        names = os.listdir(os.path.join(root, box.path))
        assert set(names) == {m.filename for m in box.messages.values()}


def read_messages(root, box, uids):
    """Reads the files of `uids` in turn: (bytes that matched the
    server's, [(file, what went wrong)])."""
    good, bad = 0, []
    for uid in uids:
        msg = box.messages[uid]
        path = os.path.join(box.path, msg.filename)
        try:
            with open(os.path.join(root, path), 'rb') as f:
                data = f.read()
        except OSError as e:
            bad.append((path, e.strerror))
            continue
        if data == msg.data:
            good += len(data)
        else:
            bad.append((path, 'differs: %d bytes, want %d'
                        % (len(data), len(msg.data))))
    return good, bad


def daemon_log(m):
    return m.stderr()[-4000:]


def timed(*cmd, limit=60):
    """Runs a tool; (CompletedProcess, seconds it took)."""
    t = time.monotonic()
    r = F.tool(*cmd, check=False, timeout=limit)
    return r, time.monotonic() - t


def test_reads_survive_a_drop_every_few_megabytes(server, proxy, mount):
    m = fault_mount(mount, server, proxy.port)
    proxy.drop_every(2 * MIB, 3 * MIB, seed=1)
    t = time.monotonic()
    check_listings(m.mountpoint, server.corpus)
    verified, failed = 0, []
    for box in server.corpus.mailboxes:
        good, bad = read_messages(m.mountpoint, box, sorted(box.messages))
        verified += good
        failed += bad
    elapsed = time.monotonic() - t
    s = proxy.stats()
    report('drops', drops_survived=s['drops'], bytes_verified=verified,
           files=sum(len(b.messages) for b in server.corpus.mailboxes),
           failed=len(failed), connections=s['accepted'],
           bytes_down=s['bytes_down'], seconds='%.1f' % elapsed)
    assert failed == [], daemon_log(m)
    assert s['drops'] >= 3


def test_stalled_server_fails_a_read_in_time_then_recovers(server, proxy,
                                                           mount):
    timeout = 3
    m = fault_mount(mount, server, proxy.port, timeout=timeout)
    box = server.corpus['Lists']
    msg = max(box.messages.values(), key=lambda x: x.size)
    path = os.path.join(m.mountpoint, box.path, msg.filename)
    check_listings(m.mountpoint, server.corpus)
    # One timeout, and a margin for a loaded machine; a second
    # timeout (a retry or reconnection starting the wait over) breaks it.
    bound = timeout * 1.7
    proxy.stall()
    try:
        cat, cat_time = timed('cat', path, limit=bound + 30)
        ls, ls_time = timed('ls', '-l', os.path.dirname(path),
                            limit=bound + 30)
        alive = m.proc.poll() is None and F.is_mounted(m.mountpoint)
    finally:
        proxy.resume()
    again, again_time = timed('cat', path, limit=bound + 30)
    report('stall', timeout=timeout, failed_read_s='%.1f' % cat_time,
           ls_during_stall_s='%.1f' % ls_time, ls_status=ls.returncode,
           longest_blocked_s='%.1f' % max(cat_time, ls_time),
           read_after_resume_s='%.1f' % again_time)
    assert cat.returncode != 0, 'a read from a silent server succeeded'
    assert b'Input/output error' in cat.stderr, cat.stderr
    assert cat_time < bound, daemon_log(m)
    assert ls_time < bound, daemon_log(m)
    assert alive, daemon_log(m)
    assert again.returncode == 0, again.stderr + daemon_log(m).encode()
    assert again.stdout == msg.data


def test_delay_keeps_listings_and_content(server, proxy, mount):
    proxy.set_delay(up=0.03, down=0.03)
    m = fault_mount(mount, server, proxy.port)
    t = time.monotonic()
    check_listings(m.mountpoint, server.corpus)
    verified, failed = 0, []
    for box in server.corpus.mailboxes:
        for msg in box.messages.values():
            st = os.stat(os.path.join(m.mountpoint, box.path, msg.filename))
            assert st.st_size == msg.size
        good, bad = read_messages(m.mountpoint, box,
                                  sorted(box.messages)[::5])
        verified += good
        failed += bad
    report('delay', one_way_ms=30, bytes_verified=verified,
           seconds='%.1f' % (time.monotonic() - t))
    assert failed == [], daemon_log(m)


def test_truncated_literal_is_fetched_again(server, proxy, mount):
    # One connection for reads: the one cut is the one the read was on.
    m = fault_mount(mount, server, proxy.port, more=['connections=1'])
    box = server.corpus['Archive']
    check_listings(m.mountpoint, server.corpus)
    msg = max(box.messages.values(), key=lambda x: x.size)
    before = proxy.accepted
    proxy.truncate(4096, after=BODY_LITERAL)
    good, bad = read_messages(m.mountpoint, box, [msg.uid])
    report('truncate', truncations=proxy.truncations,
           new_connections=proxy.accepted - before, bytes_verified=good)
    assert bad == [], daemon_log(m)
    assert proxy.truncations == 1
    assert proxy.accepted > before


def expected_counts(root, corpus):
    """What `grep -rca WORD root` prints: {file: matching lines}."""
    return {os.path.join(root, box.path, msg.filename):
            sum(WORD in line for line in msg.data.split(b'\n'))
            for box in corpus.mailboxes for msg in box.messages.values()}


def server_sent(dovecot):
    """What the server's imap processes alive now have written (wchar):
    nearly all of it their replies to the mount."""
    total = 0
    for pid in server_children(dovecot):
        try:
            with open('/proc/%d/io' % pid) as f:
                total += int(re.search(r'^wchar: (\d+)', f.read(),
                                       re.M).group(1))
        except OSError:
            pass        # it has just ended
    return total


class Grep:
    """`grep -rca WORD root` running; .lines grows as it prints."""

    def __init__(self, root, errfile):
        self.err = open(errfile, 'w+b')
        self.proc = subprocess.Popen(
            ['grep', '-rca', '--line-buffered', F.GREP_WORD, root],
            stdout=subprocess.PIPE, stderr=self.err,
            env=dict(os.environ, LC_ALL='C'))
        self.lines = []
        self.reader = threading.Thread(
            target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def finish(self, timeout):
        """(exit status, {file: count}, stderr)."""
        status = self.proc.wait(timeout=timeout)
        self.reader.join(10)
        self.err.seek(0)
        counts = dict(re.match(rb'(.*):(\d+)\n', x).groups()
                      for x in self.lines)
        return status, {k.decode(): int(v) for k, v in counts.items()}, \
            self.err.read().decode(errors='replace')

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.err.close()


def test_server_restart_during_grep(server, mount, tmp_path):
    m = fault_mount(mount, server)
    want = expected_counts(m.mountpoint, server.corpus)
    check_listings(m.mountpoint, server.corpus)
    start = server_sent(server)
    grep = Grep(m.mountpoint, tmp_path / 'grep.err')
    try:
        # Killed a fifth of the way: prefetch cannot have fetched the rest.
        F.wait_for(lambda: server_sent(server) - start >= 6 * MIB
                   or grep.proc.poll() is not None, 60, interval=0.02)
        t = time.monotonic()
        server.kill()
        running, files_at_kill = grep.proc.poll() is None, len(grep.lines)
        logins = server.log_text().count('Login:')
        time.sleep(1)
        server.restart()
        down = time.monotonic() - t
        status, got, errors = grep.finish(timeout=120)
    finally:
        grep.close()
    report('restart', downtime_s='%.1f' % down, files_at_kill=files_at_kill,
           files=len(got), grep_status=status, bytes_sent_after_restart=
           server_sent(server), logins_after=server.log_text().count(
               'Login:') - logins, grep_errors=errors.count('\n'))
    assert running, 'grep ended before the server was killed'
    assert status in (0, 1), errors + daemon_log(m)
    assert got == want
    assert server_sent(server) >= 4 * MIB, 'the kill came too late'
