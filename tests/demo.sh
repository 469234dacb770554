#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Try imapfs by hand: builds build/imapfs, starts a throw-away Dovecot with
# a few sample mailboxes under .demo/ (it keeps running), and mounts it on
# mnt/ in daemon mode.
#   tests/demo.sh         set up and mount
#   tests/demo.sh stop    unmount, stop that Dovecot, remove .demo/
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
REPO=$PWD
DEMO=$REPO/.demo
MNT=$REPO/mnt
PY=/usr/bin/python3

is_mounted() {
	"$PY" -c 'import sys; sys.path.insert(0, "tests/integration")
import imapfs_fixtures as F; sys.exit(0 if F.is_mounted(sys.argv[1]) else 1)' "$1"
}

stop() {
	if is_mounted "$MNT"; then
		fusermount3 -u "$MNT" || fusermount3 -uz "$MNT"
		echo "unmounted $MNT"
	fi
	if [[ -d $DEMO ]]; then
		"$PY" tests/integration/demo_server.py stop "$DEMO"
		rm -rf "$DEMO"
	fi
	rmdir "$MNT" 2>/dev/null || true
}

case ${1:-start} in
stop)
	stop
	exit 0
	;;
start) ;;
*)
	echo "usage: $0 [start|stop]" >&2
	exit 2
	;;
esac

if is_mounted "$MNT" || [[ -d $DEMO ]]; then
	echo "a demo is already set up; run: tests/demo.sh stop" >&2
	exit 1
fi

bash tests/deps.sh
[[ -f build/build.ninja ]] || meson setup build >/dev/null
ninja -C build imapfs

if ! vars=$("$PY" tests/integration/demo_server.py start "$DEMO"); then
	echo "starting the demo Dovecot failed; cleaning up" >&2
	stop
	exit 1
fi
eval "$vars"
mkdir -p "$MNT"
if ! build/imapfs -o "cafile=$CAFILE,password_file=$PWFILE" "$URL" "$MNT"; then
	echo "mount failed; cleaning up" >&2
	stop
	exit 1
fi

cat <<MSG

imapfs demo: $URL mounted on $MNT
  (Dovecot pid $DOVECOT_PID, log $DOVECOT_LOG)

Try:
  ls mnt
  ls -l mnt/INBOX
  grep -rl zebracorn mnt
  cat mnt/INBOX/1.eml
  ls mnt/Archive mnt/Entwürfe mnt/日本語
  getfattr -d mnt/INBOX/1.eml
  ls -R mnt/Attachments/2.parts mnt/Attachments/3.parts
  cat mnt/Attachments/2.parts/1.2.html         (base64 on the server)
  cp mnt/INBOX/1.eml mnt/Archive/copy.eml      (UID COPY on the server)
  mv mnt/INBOX/2.eml mnt/Archive/              (UID MOVE)
  setfattr -n user.imap.flags -v '\Seen' mnt/INBOX/3.eml
  mkdir mnt/Projects
  df -h mnt

Stop (unmount, stop this Dovecot, remove .demo/):
  tests/demo.sh stop
MSG
