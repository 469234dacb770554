#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the imapfs .deb from this work tree (uncommitted edits included)
# with packaging/debian, then checks it: the files it must ship are in it,
# its symlinks resolve inside it, and its imapfs runs --version.
#   packaging/build-deb.sh [OUTDIR]   (default: build-deb/ in the tree)
# Ends with the .deb's path; exits non-zero with a message on any failure.
set -euo pipefail

die() {
	echo "build-deb.sh: $*" >&2
	exit 1
}

TOP=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/..
TOP=$(readlink -f "$TOP")
# Relative to where we were called from, as a user expects of an argument.
OUT=$(readlink -m "${1:-$TOP/build-deb}")

# The packaging tools, and the Build-Depends of packaging/debian/control
# (dpkg-buildpackage checks those again, so a list gone stale fails loudly).
bash "$TOP/tests/deps.sh" dpkg-dev debhelper build-essential git meson \
	ninja-build pkg-config libfuse3-dev libglib2.0-dev libgmime-3.0-dev \
	libssl-dev libxxhash-dev || die "installing the build dependencies failed"

cd "$TOP"
git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
	die "$TOP is not a git work tree (the file list comes from git)"

# The source directory is named after the upstream version, which must be
# the one meson builds: a release without a changelog entry stops here.
version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" meson.build | head -n 1)
deb_version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
[[ -n $version ]] || die "no project version found in meson.build"
[[ ${deb_version%-*} == "$version" ]] ||
	die "packaging/debian/changelog is at $deb_version but meson.build at" \
		"$version: add a changelog entry"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/imapfs-deb.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
SRC=$TMP/imapfs-$version

# Tracked and untracked-but-not-ignored files, as they are now, so that an
# uncommitted checkout builds and build directories stay out. Files deleted
# but not yet committed are still listed by git; skip them.
mkdir "$SRC"
git ls-files -z -co --exclude-standard |
	while IFS= read -r -d '' f; do
		if [[ -e $f || -L $f ]]; then printf '%s\0' "$f"; fi
	done |
	tar -c --null -T - -f - | tar -x -C "$SRC" ||
	die "copying the source tree failed"
[[ -d $SRC/packaging/debian ]] || die "packaging/debian is missing"
cp -a "$SRC/packaging/debian" "$SRC/debian"

# -b: binary only, so no orig tarball is needed for the quilt format.
(cd "$SRC" && dpkg-buildpackage -b -us -uc -Jauto) ||
	die "dpkg-buildpackage failed (its output is above)"

debs=("$TMP"/imapfs_"$deb_version"_*.deb)
DEB=${debs[0]}
[[ -f $DEB ]] || die "dpkg-buildpackage made no imapfs .deb"

# What must be in the package; the systemd files only once the tree has
# them (packaging/systemd/), and man pages with or without compression.
want=(usr/bin/imapfs usr/sbin/mount.imapfs usr/sbin/mount.fuse.imapfs
	usr/share/man/man1/imapfs.1 usr/share/man/man8/mount.imapfs.8
	usr/share/man/man8/mount.fuse.imapfs.8)
[[ -e $SRC/packaging/systemd/imapfs@.service ]] &&
	want+=("usr/lib/systemd/user/imapfs@.service")
[[ -e $SRC/packaging/systemd/srv-mail.mount ]] &&
	want+=(usr/share/doc/imapfs/examples/srv-mail.mount)
listing=$(dpkg-deb -c "$DEB" | awk '{ print $6 }' |
	sed -e 's|^\./||' -e 's|\.gz$||') || die "dpkg-deb -c $DEB failed"
for f in "${want[@]}"; do
	grep -qxF "$f" <<<"$listing" || die "the .deb lacks /$f"
done

X=$TMP/extract
dpkg-deb -x "$DEB" "$X" || die "dpkg-deb -x $DEB failed"
# Absolute links would point at the build machine's /usr/bin/imapfs.
for link in usr/sbin/mount.imapfs usr/sbin/mount.fuse.imapfs; do
	[[ $(readlink -f "$X/$link") == "$X/usr/bin/imapfs" ]] ||
		die "/$link does not resolve to the packaged /usr/bin/imapfs"
done
"$X/usr/bin/imapfs" --version || die "the packaged imapfs --version failed"

# Only a package that passed reaches OUTDIR.
mkdir -p "$OUT" || die "cannot create $OUT"
cp "$DEB" "$OUT/" || die "copying the .deb to $OUT failed"
echo "build-deb.sh: ${#want[@]} required files present, --version runs"
echo "$OUT/$(basename "$DEB")"
