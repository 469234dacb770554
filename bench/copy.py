#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Copying a large message between mailboxes inside the mount (cp hands
the kernel a copy_file_range, imapfs sends UID COPY) against what it
would cost otherwise: reading the message out and writing it back in
(cat to a local file, cp into the mount: a download and an APPEND).

    /usr/bin/python3 bench/copy.py [--imapfs build/imapfs] [--mb 8]
        [--delay MS] [--rounds 3]

Prints the best of each, the ratio, and the bytes each fetched or
appended (from the -d trace). Runs a private Dovecot on 127.0.0.1; with
--delay, through bench/delayproxy.py adding that round-trip time.
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
import delayproxy  # noqa: E402


def big_message(mb):
    head = (b'From: Bench <bench@example.org>\r\nTo: alice@example.org\r\n'
            b'Subject: large copy\r\n\r\n')
    line = b'x' * 76 + b'\r\n'
    return head + line * (mb * 1024 * 1024 // len(line))


def timed(cmd, cwd):
    t = time.monotonic()
    subprocess.run(cmd, shell=True, cwd=cwd, check=True)
    return time.monotonic() - t


def traced_bytes(text):
    """(bytes asked in BODY.PEEK windows, bytes APPENDed), from -d."""
    fetched = sum(int(n) for n in re.findall(
        r'C: A\d+ UID FETCH \S+ \(UID BODY\.PEEK\[\]<\d+\.(\d+)>', text))
    appended = sum(int(n) for n in re.findall(
        r'C: A\d+ APPEND .*\{(\d+)\+?\}', text))
    return fetched, appended


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--imapfs', default=fx.imapfs_bin())
    ap.add_argument('--mb', type=int, default=8)
    ap.add_argument('--delay', type=float, default=0, help='RTT in ms')
    ap.add_argument('--rounds', type=int, default=3)
    args = ap.parse_args()
    os.environ['IMAPFS_BIN'] = args.imapfs
    work = tempfile.mkdtemp(prefix='imapfs-copy-', dir=fx.scratch_dir())
    ca = fx.CA(os.path.join(work, 'ca'))
    dove = fx.Dovecot(ca)
    dove.start()
    mount = None
    proxies = contextlib.ExitStack()
    try:
        c = dove.client()
        for _ in range(args.rounds):
            fx.imap_check(c.append('INBOX', None, None, big_message(args.mb)),
                          'APPEND')
        # One empty mailbox per copy: "cp INBOX/1.eml Copies/" onto an
        # existing Copies/1.eml would be writing into a message (EPERM).
        for i in range(args.rounds):
            fx.imap_check(c.create('Copies%d' % i), 'CREATE')
        c.logout()
        url = proxies.enter_context(
            delayproxy.imaps_url(dove, args.delay))
        mount = fx.Mount(url, os.path.join(work, 'mnt'),
                         ['cafile=' + dove.cafile, 'cache=none'],
                         password=fx.USERS['alice'],
                         workdir=os.path.join(work, 'w'), debug=True)
        mount.start()
        mp = mount.mountpoint
        uids = sorted(int(n[:-4]) for n in os.listdir(
            os.path.join(mp, 'INBOX')) if n.endswith('.eml'))[-args.rounds:]
        inside, outside = [], []
        for i, uid in enumerate(uids):
            before = len(mount.stderr())
            os.listdir(os.path.join(mp, 'Copies%d' % i))
            inside.append(timed('cp INBOX/%d.eml Copies%d/' % (uid, i), mp))
            mid = len(mount.stderr())
            local = os.path.join(work, 'local.eml')
            outside.append(timed('cat INBOX/%d.eml > %s && cp %s Copies%d/'
                                 'out.eml' % (uid, local, local, i), mp))
            text = mount.stderr()
            f_in, a_in = traced_bytes(text[before:mid])
            f_out, a_out = traced_bytes(text[mid:])
        print('%d MiB message, %s: cp inside the mount %.3fs (fetched %d '
              'bytes, appended %d); cat out + cp in %.3fs (fetched %d, '
              'appended %d); ratio %.2f'
              % (args.mb, '%g ms RTT' % args.delay if args.delay
                 else 'loopback', min(inside), f_in, a_in, min(outside),
                 f_out, a_out, min(inside) / min(outside)))
    finally:
        if mount:
            mount.stop(check=False)
        proxies.close()
        dove.stop()


if __name__ == '__main__':
    main()
