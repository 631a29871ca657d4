#!/usr/bin/env python3
"""Two-GPU suite (issue 8), on a machine with two GPUs, as root:
  1. a process on GPU 0 suspended and resumed onto GPU 1 (driver path, `warmctl resume --gpu 1`:
     the daemon saw the process's GPU in /proc when it locked it and builds the driver's pair);
  2. a process using both GPUs suspended and resumed, through the driver path and through the
     fast path (one copy engine per GPU, in parallel: the aggregate copy rate is printed);
data verified by the process after each resume.

usage: multigpu_suite.py BUILD [--gib 8] [--json OUT]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_suite import App, Failure, check, wait_registered, warmctl  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--gib", type=float, default=8)
    ap.add_argument("--json")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    mib = int(a.gib * 1024)
    tmp = tempfile.mkdtemp(prefix="gw-2gpu-")
    sock = f"{tmp}/gpu-warmd.sock"
    log = open(f"{tmp}/daemon.log", "w")
    daemon = subprocess.Popen([f"{build}/daemon/gpu-warmd", "--socket", sock, "--staging-mib", "64",
                               "--image-pool-mib", str(mib + 512)], stdout=log, stderr=log)
    res = {}
    apps = []
    try:
        t0 = time.monotonic()
        while True:
            time.sleep(0.2)
            try:
                st, _ = warmctl(build, sock, "status")
                if st["result"]["daemon"]["image_pool_bytes"] >= (mib + 512) << 20:
                    break
            except Exception:
                if time.monotonic() - t0 > 90:
                    raise
        gpus = st["result"]["gpus"]
        check(len(gpus) >= 2, f"{len(gpus)} GPUs: " + ", ".join(f"{g['index']} {g['name']} {g['uuid']}" for g in gpus))
        u0, u1 = gpus[0]["uuid"], gpus[1]["uuid"]

        print(f"== {a.gib} GiB process on GPU 0 resumed onto GPU 1 (driver path)")
        app = App(build, mib, ["--chunk-mib", "256", "--gpu", "0"])
        apps.append(app)
        check(u0 in app.ready_line, "it runs on GPU 0")
        j, ws = warmctl(build, sock, "suspend", str(app.pid))
        # cuInit opens every visible GPU's device node, so /proc shows both GPUs in use and
        # `--gpu 1` is refused as ambiguous; the pairs must name every GPU: swap them.
        j, _ = warmctl(build, sock, "resume", str(app.pid), "--gpu", "1", expect=1)
        check("several GPUs" in j["error"]["message"], "resume --gpu 1 refused as ambiguous, with the fix named")
        j, wr = warmctl(build, sock, "resume", str(app.pid), "--gpu-map", f"{u0}={u1},{u1}={u0}")
        check(j["result"]["state"] == "running", f"suspend {ws:.2f} s, resume onto GPU 1 {wr:.2f} s")
        line, _ = app.verify()
        check(line.startswith("verify ok") and u1 in line, f"data verified, now on GPU 1: {line}")
        res["remap"] = {"suspend_s": ws, "resume_s": wr}
        app.stop()

        print(f"== {a.gib} GiB process on both GPUs, driver path")
        app = App(build, mib, ["--chunk-mib", "256", "--gpu", "0", "--second-gpu", "1"])
        apps.append(app)
        j, ws = warmctl(build, sock, "suspend", str(app.pid))
        j, wr = warmctl(build, sock, "resume", str(app.pid))
        line, _ = app.verify()
        check(line.startswith("verify ok") and u0 in line and u1 in line,
              f"suspend {ws:.2f} s, resume {wr:.2f} s, data verified on both: {line}")
        res["two_gpu_driver"] = {"suspend_s": ws, "resume_s": wr}
        app.stop()

        print(f"== {a.gib} GiB process on both GPUs, fast path (shim)")
        app = App(build, mib, ["--chunk-mib", "256", "--gpu", "0", "--second-gpu", "1"], shim_socket=sock)
        apps.append(app)
        wait_registered(build, sock, app.pid, mib << 20)
        rows = []
        for r in range(2):
            j, ws = warmctl(build, sock, "suspend", str(app.pid))
            s = j["result"]
            j, wr = warmctl(build, sock, "resume", str(app.pid))
            f = j["result"]
            line, _ = app.verify()
            check(s["path"] == "fast" and line.startswith("verify ok") and u0 in line and u1 in line,
                  f"round {r}: suspend {ws:.3f} s (copy {s.get('copy_gb_per_s', 0):.1f} GB/s over both), "
                  f"resume {wr:.3f} s (fill {f.get('copy_gb_per_s', 0):.1f} GB/s), data verified on both")
            rows.append({"suspend_s": ws, "resume_s": wr, "copy_out_gbps": s.get("copy_gb_per_s", 0),
                         "copy_in_gbps": f.get("copy_gb_per_s", 0)})
        res["two_gpu_fast"] = rows
        app.stop()
    finally:
        for app in apps:
            app.stop()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    if a.json:
        json.dump(res, open(a.json, "w"), indent=1)
    print("MULTI-GPU SUITE PASSED")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"MULTI-GPU SUITE FAILED: {e}", flush=True)
        sys.exit(1)
