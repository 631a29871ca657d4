#!/bin/sh
# Build gpu-warmd and run it in the foreground on a private socket (build/gpu-warmd.sock).
# With no NVIDIA driver it says so and serves with zero GPUs; pass --cuda-library
# build/tests/fake-cuda/libfakecuda.so to play with two fake GPUs. Extra arguments go to gpu-warmd.
# In another terminal: build/client/warmctl --socket build/gpu-warmd.sock status
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
echo "gpu-warmd on $(pwd)/build/gpu-warmd.sock; try: build/client/warmctl --socket build/gpu-warmd.sock status" >&2
exec build/daemon/gpu-warmd --socket "$(pwd)/build/gpu-warmd.sock" --socket-mode 0600 --staging-mib 64 "$@"
