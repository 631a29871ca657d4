#!/usr/bin/env python3
"""Small stdlib client for model_server.py (used by the benchmark and selfcheck.sh).

    wait_ready(port, timeout)  -> seconds waited until GET /health answered 200
    complete(port, prompt, max_tokens) -> (token_ids, text, ttft_ms, total_ms)

ttft_ms is the server's own time to first token (request arrival -> first token on the host; the
server does not stream); total_ms is this client's wall time for the whole request.

As a program: prints one line per completion; with --repeat N it asks N times and exits 1 if the
answers differ (greedy decoding must be deterministic).
"""

import argparse
import hashlib
import http.client
import json
import sys
import time

HOST = "127.0.0.1"


def health(port, host=HOST, timeout=2.0):
    """HTTP status of GET /health, or None if nothing answered."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_ready(port, timeout=120.0, host=HOST, interval=0.02):
    """Poll /health until it answers 200; returns the seconds waited, raises TimeoutError."""
    t0 = time.monotonic()
    while True:
        if health(port, host, timeout=max(0.5, interval)) == 200:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"model server on {host}:{port} not ready after {timeout:.0f} s")
        time.sleep(interval)


def complete(port, prompt, max_tokens=16, host=HOST, timeout=300.0):
    """POST /v1/completions (greedy). Returns (token_ids, text, ttft_ms, total_ms)."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens}).encode()
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/completions", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    total_ms = (time.monotonic() - t0) * 1e3
    if resp.status != 200:
        raise RuntimeError(f"completion failed: HTTP {resp.status}: {data[:500]!r}")
    obj = json.loads(data)
    choice = obj["choices"][0]
    return choice["token_ids"], choice["text"], float(obj["timing"]["ttft_ms"]), total_ms


def main(argv=None):
    ap = argparse.ArgumentParser(description="ask model_server.py for a greedy completion")
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--prompt", default="Hello, my name is")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="ask N times; exit 1 if they differ")
    ap.add_argument("--wait", type=float, default=0.0, help="first wait this long for /health")
    ap.add_argument("--ids-out", help="write the first answer's token ids (JSON) to this file")
    a = ap.parse_args(argv)
    if a.wait > 0:
        print(f"ready after {wait_ready(a.port, a.wait, a.host):.3f} s")
    answers = []
    for i in range(max(1, a.repeat)):
        ids, text, ttft_ms, total_ms = complete(a.port, a.prompt, a.max_tokens, a.host)
        digest = hashlib.sha1(json.dumps(ids).encode()).hexdigest()[:12]
        print(f"completion {i} tokens {len(ids)} ttft_ms {ttft_ms:.2f} total_ms {total_ms:.2f} "
              f"ids_sha1 {digest} text {text!r}")
        answers.append(ids)
    if a.ids_out:
        with open(a.ids_out, "w") as f:
            json.dump(answers[0], f)
    if any(x != answers[0] for x in answers):
        print("MISMATCH: greedy completions differ between requests")
        return 1
    if len(answers) > 1:
        print(f"identical {len(answers)}/{len(answers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
