#!/bin/sh
# Make the root filesystem of loopline/debian-base: Debian bookworm's minbase with the packages
# docker/debian-base.packages lists (Python and its venv module, CA certificates), as a tarball
# that `podman import` turns into an image. No image is pulled from any registry: everything
# comes from the apt sources given, which `loopline images build` takes from this machine.
#
# Usage: docker/debian-base.sh OUTPUT.tar PACKAGES_FILE SOURCES_FILE...
#   OUTPUT.tar     the tarball to write (mmdebstrap picks the format from the name)
#   PACKAGES_FILE  one Debian package a line; `#` starts a comment
#   SOURCES_FILE   apt sources (deb822 `.sources` or one-line `.list`) for suite bookworm
#
# Documentation, manual pages and translations are left out (copyright files are kept), the
# apt lists and logs are removed, and so are the __pycache__ folders Debian's Python leaves.
set -eu

if [ $# -lt 3 ]; then
    echo "usage: $0 OUTPUT.tar PACKAGES_FILE SOURCES_FILE..." >&2
    exit 2
fi
output=$1
packages_file=$2
shift 2

packages=$(sed -e 's/#.*//' "$packages_file" | tr -s ' \t\n' '\n' | grep -v '^$' | paste -sd, -)
if [ -z "$packages" ]; then
    echo "$0: $packages_file lists no package" >&2
    exit 2
fi

exec mmdebstrap \
    --variant=minbase \
    --include="$packages" \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log "$1"/var/log/apt/*' \
    --customize-hook='find "$1"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +' \
    bookworm "$output" "$@"
