#!/bin/sh
# Install what building and testing gpu-warmd needs on Debian 12 (or Ubuntu 24.04), if missing:
# the build, the man pages (go-md2man; man-db and groff to check them), and the Debian packages
# (debhelper, dpkg-dev, lintian).
set -eu
pkgs="gcc meson ninja-build pkg-config python3 libevent-dev libcjson-dev zlib1g-dev libsystemd-dev systemd
go-md2man man-db groff-base debhelper dpkg-dev lintian"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
