#!/bin/bash
# The restore benchmark on the GPU machine, as root, in one command:
#   tests/bench/restore-gpu.sh BUILD CARRY OUT [restore.py options: --only a,b --kv-gib 16 ...]
# BUILD: the meson build directory (gpu-warmd, warmctl, gpuwarm_plugin.so, the shim, gw-vram-app,
#        gw-ckpt-fresh). CARRY: what travelled with it:
#   CARRY/criu-debs/*.deb         criu 4.2.1 and the libraries it needs beyond Ubuntu 24.04
#                                 (../shared/scripts/criu-debs.sh, trimmed to what criu runs with)
#   CARRY/cuda-plugin/cuda_plugin.so   CRIU's plugins/cuda built from the CRIU source (BUILT-FROM.txt)
#   CARRY/lib/*.so*               libcjson, libevent, libsystemd for our binaries; only those the
#                                 machine lacks are used
# Sets up: criu unpacked with dpkg -x under a work directory in /dev/shm (or $CRIU_ROOT, already
# unpacked), one plugin directory per stack (each holding exactly one CUDA plugin, passed to
# criu with -L, which overrides any libdir of /etc/criu/default.conf), the library path. Then
# runs tests/bench/restore.py, which starts gpu-warmd from BUILD itself (private socket; an image
# pool only when part d runs), mounts and unmounts its tmpfs, and finds cuda-checkpoint (or uses
# gw-ckpt-fresh in its place). Output: OUT/restore.json, OUT/restore.png, OUT/restore.log,
# OUT/logs/*.log.gz (CRIU's), OUT/daemon.log.
set -euo pipefail
if [[ $# -lt 3 ]]; then
	echo "usage: $0 BUILD CARRY OUT [restore.py options]" >&2
	exit 2
fi
build=$(realpath "$1")
carry=$(realpath "$2")
mkdir -p "$3"
out=$(realpath "$3")
shift 3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $(id -u) == 0 ]] || { echo "$0: run as root" >&2; exit 2; }

work=$(mktemp -d /dev/shm/gw-restore-setup.XXXXXX)
cleanup() {
	# restore.py tears down after itself; this is for when it was killed.
	for m in /mnt/gw-restore-huge /mnt/gw-restore-plain; do
		if grep -q " $m " /proc/mounts; then umount "$m" 2>/dev/null || umount -l "$m" || true; fi
	done
	rm -rf "$work"
}
trap cleanup EXIT

# 1. criu
if [[ -n "${CRIU_ROOT:-}" ]]; then
	root=$CRIU_ROOT
else
	root=$work/criu-root
	mkdir -p "$root"
	n=0
	for f in "$carry"/criu-debs/*.deb; do
		dpkg -x "$f" "$root"
		n=$((n + 1))
	done
	echo "criu: $n debs unpacked into $root"
fi
if ! v=$(LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu "$root/usr/sbin/criu" --version 2>&1); then
	echo "criu does not run: $v" >&2
	LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu ldd "$root/usr/sbin/criu" >&2 || true
	exit 1
fi
echo "criu: $(tr '\n' ' ' <<<"$v")"

# 2. libraries our binaries need that this machine lacks (never shadow the machine's own)
mkdir -p "$work/lib"
have=$(ldconfig -p | awk '{print $1}')
for l in "$carry"/lib/*.so*; do
	[[ -e "$l" ]] || continue
	n=$(basename "$l")
	if ! grep -qxF "$n" <<<"$have"; then
		ln -s "$l" "$work/lib/$n"
		echo "lib: using the carried $n"
	fi
done
export LD_LIBRARY_PATH=$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for b in daemon/gpu-warmd client/warmctl plugin-shim/gpuwarm_plugin.so client/shim/libgpuwarm-shim.so \
	tests/apps/gw-vram-app tests/bench/gw-ckpt-fresh; do
	[[ -e "$build/$b" ]] || { echo "missing $build/$b (build it with meson first)" >&2; exit 1; }
	if ldd "$build/$b" | grep -q "not found"; then
		echo "$b: $(ldd "$build/$b" | grep "not found" | tr -s ' \t\n' ' ')" >&2
		exit 1
	fi
done

# 3. one plugin directory per stack, exactly one CUDA plugin in each
mkdir -p "$work/plugins-gpuwarm" "$work/plugins-cuda"
ln -s "$build/plugin-shim/gpuwarm_plugin.so" "$work/plugins-gpuwarm/gpuwarm_plugin.so"
cuda_args=()
if [[ -f "$carry/cuda-plugin/cuda_plugin.so" ]]; then
	cp "$carry/cuda-plugin/cuda_plugin.so" "$work/plugins-cuda/"
	cuda_args=(--plugins-cuda "$work/plugins-cuda")
	[[ -f "$carry/cuda-plugin/BUILT-FROM.txt" ]] && head -2 "$carry/cuda-plugin/BUILT-FROM.txt"
else
	echo "WARNING: no $carry/cuda-plugin/cuda_plugin.so: no baseline (--skip-baseline)"
	cuda_args=(--skip-baseline)
fi
for f in /etc/criu/default.conf "$HOME/.criu/default.conf"; do
	if [[ -f $f ]]; then
		echo "note: $f exists (criu reads it; -L on the command line overrides a libdir there):"
		sed 's/^/  /' "$f"
	fi
done

# 4. what the machine has; NVIDIA's cuda-checkpoint, if it is anywhere (restore.py also looks on
# PATH and in the usual places, and else uses gw-ckpt-fresh in its place)
cc_args=()
cc=$(timeout 20 find /usr/bin /usr/sbin /usr/local /opt /usr/lib/x86_64-linux-gnu /usr/lib/nvidia \
	-maxdepth 6 -name cuda-checkpoint -type f -perm -u+x 2>/dev/null | head -1 || true)
if [[ -n "$cc" ]]; then
	echo "cuda-checkpoint found: $cc"
	cc_args=(--cuda-checkpoint "$cc")
else
	echo "cuda-checkpoint: none under /usr/bin /usr/sbin /usr/local /opt /usr/lib/x86_64-linux-gnu /usr/lib/nvidia"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,persistence_mode --format=csv,noheader || true
uname -r
free -g | head -2

# 5. run
set +e
python3 -u "$here/restore.py" "$build" "$out" --criu-root "$root" \
	--plugins-gpuwarm "$work/plugins-gpuwarm" "${cuda_args[@]}" "${cc_args[@]}" "$@" 2>&1 | tee "$out/restore.log"
rc=${PIPESTATUS[0]}
exit "$rc"
