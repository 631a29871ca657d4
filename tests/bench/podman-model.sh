#!/bin/bash
# The podman model-server benchmark on the GPU machine, as root, in one command:
#   tests/bench/podman-model.sh BUILD CARRY OUT [podman-model.py options: --only cold,seeds ...]
# BUILD: the meson build directory (gpu-warmd, warmctl, gpuwarm_plugin.so, the shim,
#        gw-ckpt-fresh). CARRY: what travelled with it:
#   CARRY/criu-debs/*.deb              criu 4.2 and the libraries it needs beyond the machine's
#   CARRY/podman-debs/*.deb            podman, crun, conmon... (scripts/podman-debs.sh)
#   CARRY/cuda-plugin/cuda_plugin.so   CRIU's plugins/cuda built from the CRIU source (seeds)
#   CARRY/lib/*.so*                    libcjson etc. for our binaries, where the machine lacks them
# Unpacks the debs with dpkg -x under /dev/shm (or uses $CRIU_ROOT / $PODMAN_ROOT, already
# unpacked), then runs tests/bench/podman-model.py, which sets podman up the way
# tests/gpu/podman_suite.py does and undoes it. Output: OUT/podman-model-<stacks>.json,
# OUT/podman-model.log, OUT/daemon.log. One call of the GPU machine may be too short for every
# stack: run them in separate calls (--only cold,seeds / --only driver,fast) and merge:
#   tests/bench/podman-model.py --merge OUT/podman-model-*.json --out RESULTS
set -euo pipefail
if [[ $# -lt 3 ]]; then
	echo "usage: $0 BUILD CARRY OUT [podman-model.py options]" >&2
	exit 2
fi
build=$(realpath "$1")
carry=$(realpath "$2")
mkdir -p "$3"
out=$(realpath "$3")
shift 3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $(id -u) == 0 ]] || { echo "$0: run as root" >&2; exit 2; }

work=$(mktemp -d /dev/shm/gw-podman-model-setup.XXXXXX)
trap 'rm -rf "$work"' EXIT
unpack() { # DEB_DIR ROOT
	local n=0 f
	mkdir -p "$2"
	for f in "$1"/*.deb; do
		[[ -e $f ]] || continue
		dpkg -x "$f" "$2"
		n=$((n + 1))
	done
	echo "$1: $n debs unpacked into $2"
}
criu_root=${CRIU_ROOT:-$work/criu-root}
podman_root=${PODMAN_ROOT:-$work/podman-root}
[[ -n ${CRIU_ROOT:-} ]] || unpack "$carry/criu-debs" "$criu_root"
[[ -n ${PODMAN_ROOT:-} ]] || unpack "$carry/podman-debs" "$podman_root"
args=(--carry-lib "$carry/lib")
[[ -f $carry/cuda-plugin/cuda_plugin.so ]] && args+=(--cuda-plugin "$carry/cuda-plugin/cuda_plugin.so")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
uname -r

set +e
python3 -u "$here/podman-model.py" "$build" "$criu_root" "$podman_root" --out "$out" "${args[@]}" "$@" \
	2>&1 | tee "$out/podman-model.log"
exit "${PIPESTATUS[0]}"
