#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""What staying mounted costs: an account with one large mailbox (100,000
messages by default, written as Maildir files by bench/corpus.py, like
run.py's "Listing") and the corpus's five small ones is mounted, the large one and the
root are listed (so they are "in use" and watched), and the mount is then
left alone for some minutes. Counts the IMAP commands imapfs sent (from
the -d trace) and the bytes both ways (through a counting proxy) while
idle, against what the first listing of the large mailbox cost.

    /usr/bin/python3 bench/idle.py [--imapfs build/imapfs]
        [--messages 100000] [--minutes 10] [--no-idle] [--poll 60]

--no-idle hides IDLE (and NOTIFY) from the capability list, so only the
poll watches. Runs a private Dovecot on 127.0.0.1.
"""

import argparse
import collections
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

import corpus  # noqa: E402
import imapfs_fixtures as fx  # noqa: E402
import tcp_proxy  # noqa: E402

BIG = corpus.LISTING
SMALL = 100             # messages spread over the five small mailboxes


def commands(trace):
    return re.findall(r'C: (?:A\d+ )?((?:UID )?[A-Z]+)', trace)


def snapshot(mount, proxy):
    with proxy.lock:
        return (len(commands(mount.stderr())), proxy.bytes_up,
                proxy.bytes_down)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--imapfs', default=fx.imapfs_bin())
    ap.add_argument('--messages', type=int, default=100000)
    ap.add_argument('--minutes', type=float, default=10)
    ap.add_argument('--poll', type=int, default=60)
    ap.add_argument('--no-idle', action='store_true')
    args = ap.parse_args()
    os.environ['IMAPFS_BIN'] = args.imapfs
    work = tempfile.mkdtemp(prefix='imapfs-idle-', dir=fx.scratch_dir())
    ca = fx.CA(os.path.join(work, 'ca'))
    caps = fx.capabilities_without('IDLE', 'NOTIFY') if args.no_idle \
        else None
    dove = fx.Dovecot(ca, imap_capability=caps)
    dove.start()
    proxy = tcp_proxy.CuttingProxy(dove.imaps_port).start()
    try:
        corpus.load(dove, SMALL, args.messages, seed=1,
                    log=lambda *a: None)
        mount = fx.Mount(dove.url('imaps', port=proxy.port),
                         os.path.join(work, 'mnt'),
                         ['cafile=' + dove.cafile, 'cache=memory',
                          'poll=%d' % args.poll],
                         password=fx.USERS['alice'],
                         workdir=os.path.join(work, 'w'), debug=True)
        mount.start()
        try:
            start = snapshot(mount, proxy)
            n = len(os.listdir(os.path.join(mount.mountpoint, BIG)))
            os.listdir(mount.mountpoint)
            listed = snapshot(mount, proxy)
            time.sleep(5)           # the watcher settles in
            before = snapshot(mount, proxy)
            trace_at = len(commands(mount.stderr()))
            time.sleep(args.minutes * 60)
            after = snapshot(mount, proxy)
            idle_cmds = collections.Counter(
                commands(mount.stderr())[trace_at:])
        finally:
            mount.stop(check=False)
        first = [b - a for a, b in zip(start, listed)]
        idle = [b - a for a, b in zip(before, after)]
        print('%d messages in %s (%d entries) + %d in %d mailboxes, %s, '
              'poll=%d:' % (args.messages, BIG, n, SMALL,
                            len(corpus.FOLDERS),
                            'IDLE hidden' if args.no_idle else 'IDLE',
                            args.poll))
        print('  first listing of %s: %d commands, %d bytes up, %d down'
              % (BIG, first[0], first[1], first[2]))
        print('  %g minutes idle: %d commands (%s), %d bytes up, %d down'
              % (args.minutes, idle[0],
                 ', '.join('%s %d' % kv for kv in sorted(idle_cmds.items())),
                 idle[1], idle[2]))
        print('  idle bytes / first listing bytes: %.4f'
              % ((idle[1] + idle[2]) / max(1, first[1] + first[2])))
    finally:
        proxy.stop()
        dove.stop()


if __name__ == '__main__':
    main()
