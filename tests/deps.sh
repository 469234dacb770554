#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Installs what building and testing imapfs needs (Debian/Ubuntu), or
# only the packages named as arguments. Does nothing, and needs no
# network, when everything is already installed.
set -euo pipefail

PKGS=(meson ninja-build pkg-config gcc libfuse3-dev fuse3 libglib2.0-dev
      libssl-dev libxxhash-dev libgmime-3.0-dev dovecot-imapd python3-pytest openssl attr rsync clang
      libclang-rt-14-dev clang-format systemd mandoc dpkg-dev debhelper)
(($# > 0)) && PKGS=("$@")

missing=()
for p in "${PKGS[@]}"; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
		grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done
((${#missing[@]} == 0)) && exit 0

SUDO=()
[[ $(id -u) -ne 0 ]] && SUDO=(sudo)
echo "deps.sh: installing ${missing[*]}" >&2
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
