#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A throw-away Dovecot with a small sample corpus, for tests/demo.sh.

  demo_server.py start DIR   start it under DIR (CA, config, maildirs, logs);
                             print shell assignments: URL, CAFILE, PWFILE
  demo_server.py stop DIR    stop it (by the pid in DIR, only if it is ours)

It keeps running after `start` returns; `stop` ends it.
"""

import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imapfs_fixtures as F  # noqa: E402
from parts_corpus import MESSAGES  # noqa: E402


def start(root):
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    ca = F.CA(os.path.join(root, 'ca'), name='imapfs demo CA')
    d = F.Dovecot(ca, root=os.path.join(root, 'dovecot'), quota=True)
    d.start()
    try:
        F.Corpus(bulk=20, big=False).load(d)
        # MIME hard cases, to look at in <UID>.parts/.
        c = d.client()
        try:
            F.imap_check(c.create('Attachments'), 'CREATE')
            F.multiappend(c, 'Attachments',
                          [(None, None, raw) for _, raw in MESSAGES])
        finally:
            c.logout()
    except Exception:
        d.stop(remove=False)
        raise
    pid = d.proc_pid
    d.detach()
    pwfile = os.path.join(root, 'password')
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(F.USERS['alice'] + '\n')
    for k, v in (('URL', d.url()), ('CAFILE', ca.cert), ('PWFILE', pwfile),
                 ('DOVECOT_LOG', d.log), ('DOVECOT_PID', pid)):
        print('%s=%s' % (k, shlex.quote(str(v))))


def stop(root):
    root = os.path.abspath(root)
    conf = os.path.join(root, 'dovecot', 'dovecot.conf')
    pidfile = os.path.join(root, 'dovecot', 'dovecot.pid')
    try:
        with open(pidfile) as f:
            pid = int(f.read())
    except (OSError, ValueError):
        print('no demo dovecot pid in %s' % pidfile)
        return
    if not F.pid_alive(pid):
        print('demo dovecot (pid %d) is not running' % pid)
        return
    F.stop_dovecot(pid, conf)
    print('stopped demo dovecot (pid %d)' % pid)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ('start', 'stop'):
        sys.exit(__doc__)
    {'start': start, 'stop': stop}[sys.argv[1]](sys.argv[2])


if __name__ == '__main__':
    main()
