#!/bin/bash
# Download Debian 13 (trixie) podman, crun, conmon, catatonit, netavark and the libraries they
# need beyond a stock Ubuntu 24.04, as .deb files, into DIR (default: .podman-debs). For carrying
# to the GPU machine together with scripts/../.criu-debs (criu 4.1.1), where
#   for f in DIR/*.deb; do dpkg -x "$f" /opt/podman; done
# unpacks them; tests/gpu/podman_suite.py sets the rest up (configuration files, the libraries the
# machine lacks) and docs/podman.md says what an operator installs instead.
#
# Debian 13 binaries need glibc >= 2.38 (Ubuntu 24.04 has 2.39). crun is built with CRIU support
# (`crun --version` shows +CRIU) and dlopen()s libcriu.so.2 (from .criu-debs' libcriu2).
# The libraries: podman links libgpgme (-> libassuan, libgpg-error), libsubid (shadow; -> libbsd,
# libmd, libsemanage, libpam...), libsqlite3, libseccomp; crun libyajl, libseccomp, libcap,
# libsystemd; conmon libglib-2.0 (-> libatomic, libpcre2), libsystemd. Whatever of these the
# machine already has is used from the machine. containers-common/-image hold the default
# configuration (containers.conf, seccomp.json, policy.json, registries.conf).
set -euo pipefail
out=${1:-.podman-debs}
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$out"
echo "deb [trusted=yes] $mirror trixie main" > "$tmp/sources.list"
opts=(-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$tmp/lists")
apt-get "${opts[@]}" update -qq
cd "$out"
apt-get "${opts[@]}" download \
	podman crun conmon catatonit netavark golang-github-containers-common golang-github-containers-image \
	libgpgme11t64 libassuan9 libgpg-error0 libsubid5 libbsd0 libmd0 libyajl2 libsqlite3-0 libseccomp2 \
	libglib2.0-0t64 libatomic1 >/dev/null 2>&1
ls -1 "$PWD"
du -sh "$PWD"
