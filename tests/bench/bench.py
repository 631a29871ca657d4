#!/usr/bin/env python3
"""gpu-warmd benchmark (GPU machine, as root; not part of the test suite).

One command, one run, every number against a baseline measured in the same run:
  - the PCIe link's pinned copy bandwidth (gw-pcie-bw);
  - size sweep of the synthetic app (gw-vram-app): suspend/resume through the fast path (shim),
    through the daemon's driver path, and by a fresh process toggling the driver (what
    cuda-checkpoint and CRIU's cuda_plugin do);
  - the model server (tests/workloads/model_server.py): cold start -> ready -> first token vs
    restore -> first token on the fast and the driver path, with the greedy output checked
    identical before and after.
Writes BENCH_DIR/bench.json, prints a summary table, and bench.png when matplotlib is there
(else run tests/bench/plot.py on the JSON).

usage: bench.py BUILD OUT_DIR [--sizes 1,4,16,48] [--rounds 2] [--no-server]
"""
import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "gpu"))
sys.path.insert(0, os.path.join(HERE, "..", "workloads"))
from gpu_suite import App, Failure, check, warmctl, wait_registered  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog. Checkpoint me, restore me, then"


def sh(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def fresh(build, action, pid):
    t = time.monotonic()
    sh(f"{build}/tests/bench/gw-ckpt-fresh", action, str(pid))
    return time.monotonic() - t


def sweep_one(build, sock, gib, rounds):
    mib = int(gib * 1024)
    r = {"gib": gib}
    print(f"== {gib} GiB", flush=True)
    app = App(build, mib, ["--chunk-mib", "256"], shim_socket=sock)
    try:
        wait_registered(build, sock, app.pid, mib << 20)
        fs, fr, gout, gin = [], [], [], []
        for _ in range(rounds):
            j, w = warmctl(build, sock, "suspend", str(app.pid))
            check(j["result"]["path"] == "fast", f"fast suspend {w:.3f} s")
            fs.append(w)
            gout.append(j["result"].get("copy_gb_per_s", 0))
            j, w = warmctl(build, sock, "resume", str(app.pid))
            check(j["result"]["path"] == "fast", f"fast resume {w:.3f} s")
            fr.append(w)
            gin.append(j["result"].get("copy_gb_per_s", 0))
        line, _ = app.verify()
        check(line.startswith("verify ok"), "data verified (fast)")
    finally:
        app.stop()
    r["fast"] = {"suspend_s": statistics.median(fs), "resume_s": statistics.median(fr),
                 "copy_out_gbps": statistics.median(gout), "copy_in_gbps": statistics.median(gin)}
    app = App(build, mib, ["--chunk-mib", "256"])
    try:
        j, ws = warmctl(build, sock, "suspend", str(app.pid))
        j, wr = warmctl(build, sock, "resume", str(app.pid))
        check(j["result"]["path"] == "driver", f"daemon driver path {ws:.3f} s / {wr:.3f} s")
        fsu = fresh(build, "suspend", app.pid)
        fre = fresh(build, "resume", app.pid)
        check(True, f"fresh-process toggle {fsu:.3f} s / {fre:.3f} s")
        line, _ = app.verify()
        check(line.startswith("verify ok"), "data verified (driver paths)")
    finally:
        app.stop()
    r["driver"] = {"suspend_s": ws, "resume_s": wr}
    r["fresh"] = {"suspend_s": fsu, "resume_s": fre}
    return r


class Server:
    def __init__(self, build, sock, shim, args):
        env = dict(os.environ)
        if shim:
            env["LD_PRELOAD"] = f"{build}/client/shim/libgpuwarm-shim.so"
            env["GPUWARM_SOCKET"] = sock
        self.log = tempfile.NamedTemporaryFile("w+", prefix="server-", suffix=".log", delete=False)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "..", "workloads", "model_server.py"),
                                      "--port", "0", *args], stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, bufsize=1, env=env)
        self.port = None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.log.seek(0)
                raise Failure("model server died:\n" + self.log.read()[-3000:])
            if line.startswith("ready "):
                f = line.split()
                self.port = int(f[f.index("port") + 1])
                self.ready_s = time.monotonic() - self.t0
                self.ready_line = line.strip()
                break
        self.pid = self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


def server_bench(build, sock, args):
    import client  # tests/workloads/client.py
    out = {}
    print("== model server: cold start", flush=True)
    s = Server(build, sock, False, args)
    try:
        t = time.monotonic()
        client.complete(s.port, PROMPT, 1)
        cold_ttft = s.ready_s + (time.monotonic() - t)
        ref, _, _, _ = client.complete(s.port, PROMPT, 32)
        check(True, f"cold start: ready {s.ready_s:.2f} s, first token {cold_ttft:.2f} s ({s.ready_line})")
        out["cold"] = {"ready_s": s.ready_s, "first_token_s": cold_ttft, "ready_line": s.ready_line}
        j, ws = warmctl(build, sock, "suspend", str(s.pid), "--timeout", "120")
        t = time.monotonic()
        warmctl(build, sock, "resume", str(s.pid))
        client.complete(s.port, PROMPT, 1)
        rt = time.monotonic() - t
        ids, _, _, _ = client.complete(s.port, PROMPT, 32)
        check(ids == ref, f"driver path: suspend {ws:.2f} s, restore -> first token {rt:.2f} s, output identical")
        out["driver"] = {"suspend_s": ws, "restore_first_token_s": rt, "identical": ids == ref}
    finally:
        s.stop()
    print("== model server under the shim: fast path", flush=True)
    s = Server(build, sock, True, args)
    try:
        client.complete(s.port, PROMPT, 1)
        ids0, _, _, _ = client.complete(s.port, PROMPT, 32)
        check(ids0 == ref, f"shimmed server starts in {s.ready_s:.2f} s and answers the same")
        st, _ = warmctl(build, sock, "status")
        held = [p for p in st["result"]["processes"] if p["pid"] == s.pid]
        j, ws = warmctl(build, sock, "suspend", str(s.pid), "--timeout", "120")
        check(j["result"]["path"] == "fast",
              f"fast suspend {ws:.2f} s ({j['result']['vram_bytes'] / 2**30:.1f} GiB in {j['result']['ranges']} ranges)")
        t = time.monotonic()
        j, _ = warmctl(build, sock, "resume", str(s.pid))
        client.complete(s.port, PROMPT, 1)
        rt = time.monotonic() - t
        ids, _, _, _ = client.complete(s.port, PROMPT, 32)
        check(ids == ref, f"fast path: restore -> first token {rt:.2f} s, output identical")
        out["fast"] = {"suspend_s": ws, "restore_first_token_s": rt, "identical": ids == ref,
                       "vram_bytes": j["result"]["vram_bytes"],
                       "registered_bytes": held[0]["vram_bytes"] if held else 0}
    finally:
        s.stop()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("out")
    ap.add_argument("--sizes", default="1,4,16,48")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument("--server-args", default="", help="extra model_server.py arguments")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    os.makedirs(a.out, exist_ok=True)
    sizes = [float(x) for x in a.sizes.split(",")]
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
           "gpu": sh("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader").strip()}
    res["pcie"] = json.loads(sh(f"{build}/tests/bench/gw-pcie-bw", "4096", "5"))
    link = min(res["pcie"]["h2d_gb_per_s"], res["pcie"]["d2h_gb_per_s"])
    print(f"== PCIe pinned copy: H2D {res['pcie']['h2d_gb_per_s']} GB/s, D2H {res['pcie']['d2h_gb_per_s']} GB/s", flush=True)
    tmp = tempfile.mkdtemp(prefix="gw-bench-")
    sock = f"{tmp}/gpu-warmd.sock"
    pool = int(max(sizes + [40.0]) * 1024) + 512
    log = open(f"{a.out}/daemon.log", "w")
    t0 = time.monotonic()
    daemon = subprocess.Popen([f"{build}/daemon/gpu-warmd", "--socket", sock, "--staging-mib", "256",
                               "--image-pool-mib", str(pool)], stdout=log, stderr=log)
    try:
        while True:
            time.sleep(0.2)
            try:
                st, _ = warmctl(build, sock, "status")
                if st["result"]["daemon"]["image_pool_bytes"] >= pool << 20:
                    break
            except Exception:
                if time.monotonic() - t0 > 120:
                    raise
        res["daemon_start_s"] = time.monotonic() - t0
        res["image_pool_pin_ms"] = st["result"]["daemon"]["image_pool_pin_ms"]
        print(f"== gpu-warmd ready in {res['daemon_start_s']:.1f} s ({pool} MiB image pool pinned)", flush=True)
        res["sweep"] = [sweep_one(build, sock, g, a.rounds) for g in sizes]
        if not a.no_server:
            res["server"] = server_bench(build, sock, a.server_args.split())
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    json.dump(res, open(f"{a.out}/bench.json", "w"), indent=1)
    print()
    print(f"PCIe pinned copy (same run): H2D {res['pcie']['h2d_gb_per_s']:.1f} GB/s, D2H {res['pcie']['d2h_gb_per_s']:.1f} GB/s")
    print(f"{'size':>6} | {'fast susp':>9} {'fast res':>9} | {'drv susp':>9} {'drv res':>9} | {'fresh susp':>10} {'fresh res':>9} | "
          f"{'susp x':>6} {'res x':>6} | {'res GB/s':>8} {'of link':>7}")
    for r in res["sweep"]:
        f, d, fr = r["fast"], r["driver"], r["fresh"]
        eff = r["gib"] * 1.073741824 / f["resume_s"]
        print(f"{r['gib']:>5.0f}G | {f['suspend_s']:9.3f} {f['resume_s']:9.3f} | {d['suspend_s']:9.3f} {d['resume_s']:9.3f} | "
              f"{fr['suspend_s']:10.3f} {fr['resume_s']:9.3f} | {d['suspend_s'] / f['suspend_s']:5.1f}x {d['resume_s'] / f['resume_s']:5.1f}x | "
              f"{eff:8.1f} {eff / link:6.0%}")
    big = [r for r in res["sweep"] if r["gib"] >= 4]
    if len(big) >= 2:
        a0, a1 = big[0], big[-1]
        slope = (a1["gib"] - a0["gib"]) * 1.073741824 / (a1["fast"]["resume_s"] - a0["fast"]["resume_s"])
        res["fast_resume_marginal_gbps"] = slope
        print(f"fast resume grows at {slope:.1f} GB/s between {a0['gib']:.0f} and {a1['gib']:.0f} GiB")
    if "server" in res:
        sv = res["server"]
        print(f"model server: cold start -> first token {sv['cold']['first_token_s']:.2f} s; "
              f"restore -> first token: fast {sv['fast']['restore_first_token_s']:.2f} s "
              f"({sv['cold']['first_token_s'] / sv['fast']['restore_first_token_s']:.1f}x faster than cold), "
              f"driver {sv['driver']['restore_first_token_s']:.2f} s "
              f"(fast {sv['driver']['restore_first_token_s'] / sv['fast']['restore_first_token_s']:.1f}x faster)")
    json.dump(res, open(f"{a.out}/bench.json", "w"), indent=1)
    try:
        subprocess.run([sys.executable, os.path.join(HERE, "plot.py"), f"{a.out}/bench.json", f"{a.out}/bench.png"],
                       check=True)
    except Exception as e:
        print(f"(no plot here: {e}; run tests/bench/plot.py on bench.json)")
    print("BENCH DONE")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"BENCH FAILED: {e}", flush=True)
        sys.exit(1)
