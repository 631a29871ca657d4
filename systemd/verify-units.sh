#!/bin/sh
# Test: the generated unit files pass `systemd-analyze verify` (ExecStart pointed at the built
# daemon, since verify checks that the binary exists). Any diagnostic fails the test. The man
# page in Documentation= is not looked up (it is not installed here; check-man.sh tests it).
# usage: verify-units.sh BUILT_DAEMON SERVICE SOCKET
set -eu
daemon=$1 service=$2 socket=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$service" "$socket" "$tmp/"
sed -i "s|^ExecStart=[^ ]*|ExecStart=$daemon|" "$tmp/gpu-warmd.service"
cd "$tmp"
out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no ./gpu-warmd.socket ./gpu-warmd.service 2>&1) || {
	echo "$out"; exit 1; }
if printf '%s' "$out" | grep -q 'gpu-warmd'; then
	echo "$out"
	exit 1
fi
grep -q '^Type=notify' gpu-warmd.service
grep -q '^WatchdogSec=' gpu-warmd.service
grep -q '^SocketMode=0660' gpu-warmd.socket
echo "units verified"
