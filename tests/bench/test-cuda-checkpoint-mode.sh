#!/bin/bash
# gw-ckpt-fresh as `cuda-checkpoint` (what CRIU's cuda_plugin runs), over the fake driver: the
# calls cuda_plugin makes for a dump and a restore, in its order, with its arguments, and the output
# it parses (-h must name --action; --get-state prints the state word; --get-restore-tid the tid,
# and the state of that tid is the process's). The app's data must survive.
#   test-cuda-checkpoint-mode.sh GW_CKPT_FRESH GW_VRAM_APP   (GPUWARM_CUDA_LIBRARY: the fake driver)
set -euo pipefail
fresh=$(realpath "$1")
app=$(realpath "$2")
tmp=$(mktemp -d)
export FAKECUDA_STATE_DIR=$tmp/state GW_CKPT_FRESH_LOG=$tmp/calls.jsonl
mkdir -p "$tmp/bin" "$FAKECUDA_STATE_DIR"
ln -s "$fresh" "$tmp/bin/cuda-checkpoint"
export PATH=$tmp/bin:$PATH
pid=""
cleanup() {
	[[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$app" --mib 8 >"$tmp/app.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "^ready pid" "$tmp/app.log" && break; sleep 0.05; done
grep -q "^ready pid" "$tmp/app.log" || fail "gw-vram-app not ready"

cuda-checkpoint -h | grep -q -- "--action" || fail "-h does not name --action"
tid=$(cuda-checkpoint --get-restore-tid --pid "$pid") || fail "--get-restore-tid"
[[ "$tid" =~ ^[0-9]+$ && "$tid" != "$pid" ]] || fail "restore tid '$tid'"
[[ $(cuda-checkpoint --get-state --pid "$tid") == running ]] || fail "state of the restore tid is not running"
cuda-checkpoint --action lock --pid "$pid" --timeout 10000 || fail "lock"
[[ $(cuda-checkpoint --get-state --pid "$pid") == locked ]] || fail "not locked"
cuda-checkpoint --action checkpoint --pid "$pid" || fail "checkpoint"
[[ $(cuda-checkpoint --get-state --pid "$pid") == checkpointed ]] || fail "not checkpointed"
cuda-checkpoint --action restore --pid "$pid" || fail "restore"
cuda-checkpoint --action unlock --pid "$pid" || fail "unlock"
[[ $(cuda-checkpoint --get-state --pid "$pid") == running ]] || fail "not running again"
kill -USR1 "$pid"
for _ in $(seq 100); do grep -q "^verify" "$tmp/app.log" && break; sleep 0.05; done
grep -q "^verify ok" "$tmp/app.log" || fail "data: $(grep '^verify' "$tmp/app.log")"

# Errors: a process without CUDA fails (cuda_plugin then leaves it alone), bad usage is 2.
if out=$(cuda-checkpoint --get-restore-tid --pid $$); then fail "a non-CUDA pid gave a tid: $out"; fi
rc=0; cuda-checkpoint --action frobnicate --pid "$pid" 2>/dev/null || rc=$?
[[ $rc == 2 ]] || fail "bad action: exit $rc, want 2"
[[ $(grep -c '"ok":true' "$GW_CKPT_FRESH_LOG") -ge 9 ]] || fail "calls log: $(cat "$GW_CKPT_FRESH_LOG")"
echo "ok: cuda-checkpoint mode of gw-ckpt-fresh"
