#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""What the <UID>.parts/ directories cost: a cold `ls -lR` of a mailbox of
MIME messages (the hard cases of tests/integration/parts_corpus.py, over
and over) with parts=yes against the same listing with parts=no, each on a
fresh mount, and the IMAP commands each sent (from the -d trace).

    /usr/bin/python3 bench/parts.py [--imapfs build/imapfs] [--messages 1200]
        [--delay MS] [--no-binary] [--rounds 2]

Prints the best time of each, the ratio, and the commands: with BINARY
the sizes come from BINARY.SIZE, pipelined 256 messages at a time, so the
ratio should stay near 1 however far the server is; --no-binary hides
BINARY (imapfs then fetches and decodes the encoded parts to learn their
sizes). Runs a private Dovecot on 127.0.0.1; with --delay, through
bench/delayproxy.py adding that round-trip time.
"""

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))
sys.path.insert(0, HERE)

import imapfs_fixtures as fx  # noqa: E402
import parts_corpus  # noqa: E402
import delayproxy  # noqa: E402

BOX = 'Mime'


def run_ls(url, dove, work, name, parts):
    mount = fx.Mount(url, os.path.join(work, name),
                     ['cafile=' + dove.cafile, 'cache=memory',
                      'parts=' + ('yes' if parts else 'no')],
                     password=fx.USERS['alice'],
                     workdir=os.path.join(work, name + '.w'), debug=True)
    mount.start()
    try:
        t = time.monotonic()
        out = subprocess.run(['ls', '-lR', BOX], cwd=mount.mountpoint,
                             check=True, capture_output=True).stdout
        took = time.monotonic() - t
        cmds = re.findall(r'C: A\d+ (?:UID )?([A-Z]+(?: \S+ \(UID \w+)?)',
                          mount.stderr())
    finally:
        mount.stop(check=False)
    return took, len(out.splitlines()), cmds


def summary(cmds):
    counts = {}
    for c in cmds:
        key = re.sub(r' \S+ \(UID', '', c)
        counts[key] = counts.get(key, 0) + 1
    return ', '.join('%s %d' % kv for kv in sorted(counts.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--imapfs', default=fx.imapfs_bin())
    ap.add_argument('--messages', type=int, default=1200)
    ap.add_argument('--delay', type=float, default=0, help='RTT in ms')
    ap.add_argument('--no-binary', action='store_true')
    ap.add_argument('--rounds', type=int, default=2)
    args = ap.parse_args()
    os.environ['IMAPFS_BIN'] = args.imapfs
    work = tempfile.mkdtemp(prefix='imapfs-parts-', dir=fx.scratch_dir())
    ca = fx.CA(os.path.join(work, 'ca'))
    caps = fx.capabilities_without('BINARY') if args.no_binary else None
    dove = fx.Dovecot(ca, imap_capability=caps)
    dove.start()
    proxies = contextlib.ExitStack()
    try:
        c = dove.client()
        fx.imap_check(c.create(BOX), 'CREATE')
        raws = [raw for _, raw in parts_corpus.MESSAGES]
        fx.multiappend(c, BOX, [(None, None, raws[i % len(raws)])
                                for i in range(args.messages)])
        c.logout()
        url = proxies.enter_context(
            delayproxy.imaps_url(dove, args.delay))
        best = {}
        for r in range(args.rounds):
            for parts in (False, True):
                got = run_ls(url, dove, work, 'mnt%d%d' % (r, parts), parts)
                if parts not in best or got[0] < best[parts][0]:
                    best[parts] = got
        (t_no, n_no, c_no), (t_yes, n_yes, c_yes) = best[False], best[True]
        print('%d messages, %s, %s: ls -lR with parts %.2fs (%d lines; %s)'
              '; parts=no %.2fs (%d lines; %s); ratio %.2f'
              % (args.messages,
                 '%g ms RTT' % args.delay if args.delay else 'loopback',
                 'BINARY hidden' if args.no_binary else 'BINARY',
                 t_yes, n_yes, summary(c_yes), t_no, n_no, summary(c_no),
                 t_yes / t_no))
    finally:
        proxies.close()
        dove.stop()


if __name__ == '__main__':
    main()
