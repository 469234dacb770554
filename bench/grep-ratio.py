#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""How long `grep -rl` over a mounted mailbox takes next to a plain IMAP
client fetching the same messages from the same private Dovecot.

Prints ratios (imapfs time / client time), since absolute seconds on a
shared machine mean little. Baselines:
  sequential: one UID FETCH BODY.PEEK[] per message, waiting for each
              (what a naive client, or a file system without readahead,
              costs in round trips);
  bulk:       a single UID FETCH 1:* BODY.PEEK[] (the raw limit).

usage: bench/grep-ratio.py [MESSAGES] [RUNS]   (run as root, after a build)
"""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))
import imapfs_fixtures as fx  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def client_sequential(dovecot, uids):
    c = dovecot.client()
    c.select('Bulk', readonly=True)
    total = 0
    for uid in uids:
        typ, data = c.uid('FETCH', str(uid), '(BODY.PEEK[])')
        total += len(data[0][1])
    c.logout()
    return total


def client_bulk(dovecot):
    c = dovecot.client()
    c.select('Bulk', readonly=True)
    typ, data = c.uid('FETCH', '1:*', '(BODY.PEEK[])')
    c.logout()
    return sum(len(d[1]) for d in data if isinstance(d, tuple))


def grep_mount(dovecot, mnt):
    env = dict(os.environ, IMAPFS_PASSWORD=fx.USERS['alice'])
    subprocess.run([fx.imapfs_bin(), '-o', 'cafile=' + dovecot.cafile,
                    dovecot.url(), mnt], check=True, env=env)
    try:
        t, out = timed(lambda: subprocess.run(
            ['grep', '-rl', fx.GREP_WORD, os.path.join(mnt, 'Bulk')],
            stdout=subprocess.PIPE, check=False).stdout)
        return t, len(out.splitlines())
    finally:
        subprocess.run(['fusermount3', '-u', mnt], check=False)
        fx.wait_for(lambda: not os.path.ismount(mnt), 10)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    root = tempfile.mkdtemp(prefix='imapfs-bench-', dir=fx.scratch_dir())
    ca = fx.CA(os.path.join(root, 'ca'))
    with fx.Dovecot(ca=ca) as dovecot:
        corpus = fx.Corpus(bulk=n, big=False).load(dovecot)
        uids = sorted(corpus['Bulk'].messages)
        mnt = os.path.join(root, 'mnt')
        os.mkdir(mnt)
        rows = []
        for _ in range(runs):
            t_grep, hits = grep_mount(dovecot, mnt)
            t_seq, _ = timed(lambda: client_sequential(dovecot, uids))
            t_bulk, _ = timed(lambda: client_bulk(dovecot))
            rows.append((t_grep, t_seq, t_bulk))
        best = [min(col) for col in zip(*rows)]
        print('messages: %d, grep hits: %d, runs: %d (best of each)'
              % (len(uids), hits, runs))
        print('grep -rl (cold mount) / sequential client: %.2f'
              % (best[0] / best[1]))
        print('grep -rl (cold mount) / bulk FETCH 1:*:     %.2f'
              % (best[0] / best[2]))


if __name__ == '__main__':
    main()
