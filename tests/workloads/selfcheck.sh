#!/usr/bin/env bash
# Self-check of the model-server workload, for the GPU machine (needs torch + transformers + CUDA).
#   bash tests/workloads/selfcheck.sh            # all cases (about a minute or two)
#   SELFCHECK_CASES="tiny full" bash tests/workloads/selfcheck.sh
# For each case: start model_server.py on a free port, wait for its ready line and /health, ask for
# the same 32-token greedy completion twice (must be identical), print startup_s and TTFT, stop it.
# Also: --verify (our paged decode vs transformers' forward), bad requests -> 400, and the full
# model's output with and without CUDA graphs compared (a difference is only a warning).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}
cases=${SELFCHECK_CASES:-"tiny tiny-fp32 tiny-graphs full full-graphs"}
tmp=$(mktemp -d /tmp/gw-workload.XXXXXX)
pid=""
fails=0
passes=0

cleanup() {
	if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

case_args() {
	case "$1" in
	tiny) echo "--tiny --verify" ;;
	tiny-fp32) echo "--tiny --dtype float32 --verify" ;;
	tiny-graphs) echo "--tiny --cuda-graphs --verify" ;;
	full) echo "" ;;
	full-graphs) echo "--cuda-graphs --verify" ;;
	*) echo "unknown case $1" >&2; return 1 ;;
	esac
}

run_case() {
	local name=$1 args log port ready
	args=$(case_args "$name")
	log="$tmp/$name.log"
	echo "=== $name: model_server.py $args"
	# shellcheck disable=SC2086
	"$PY" -u "$here/model_server.py" --port 0 $args >"$log" 2>"$tmp/$name.err" &
	pid=$!
	ready=""
	for _ in $(seq 1 1500); do	# 300 s
		ready=$(grep -m1 '^ready ' "$log" || true)
		[[ -n "$ready" ]] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	grep -E '^(verify|startup) ' "$log" || true
	if [[ -z "$ready" ]]; then
		echo "FAIL $name: no ready line"; tail -n 30 "$tmp/$name.err" "$log"
		kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
		fails=$((fails + 1)); return 0
	fi
	echo "$ready"
	port=$(awk '{for (i = 1; i < NF; i++) if ($i == "port") print $(i + 1)}' <<<"$ready")
	local ok=1
	if ! "$PY" "$here/client.py" --port "$port" --wait 10 --max-tokens 32 --repeat 2 \
		--prompt "The capital of France is" --ids-out "$tmp/$name.ids"; then
		ok=0
	fi
	# Bad requests must be refused with 400, not crash the server.
	if ! "$PY" - "$port" <<-'EOF'; then
		import http.client, json, sys
		port = int(sys.argv[1])
		for body in (b"not json", json.dumps({"prompt": 3}).encode(),
		             json.dumps({"prompt": "x", "max_tokens": 0}).encode(),
		             json.dumps({"prompt": "x", "max_tokens": 10**9}).encode()):
		    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
		    c.request("POST", "/v1/completions", body=body)
		    r = c.getresponse(); r.read(); c.close()
		    if r.status != 400:
		        sys.exit(f"bad request {body[:40]!r} -> HTTP {r.status}, want 400")
		print("bad requests -> 400: ok")
		EOF
		ok=0
	fi
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	pid=""
	if [[ $ok == 1 ]]; then
		echo "PASS $name"; passes=$((passes + 1))
	else
		echo "FAIL $name"; tail -n 30 "$tmp/$name.err"; fails=$((fails + 1))
	fi
}

"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers",
	transformers.__version__, "cuda", torch.cuda.is_available(),
	torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
for c in $cases; do
	run_case "$c"
done
if [[ -f "$tmp/full.ids" && -f "$tmp/full-graphs.ids" ]]; then
	if cmp -s "$tmp/full.ids" "$tmp/full-graphs.ids"; then
		echo "full model: eager and CUDA-graph outputs identical (and across processes)"
	else
		echo "WARN: full model: eager and CUDA-graph outputs differ"
	fi
fi
echo "$passes passed, $fails failed"
[[ $fails == 0 ]]
