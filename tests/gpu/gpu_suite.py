#!/usr/bin/env python3
"""GPU suite: the real gpu-warmd against the real NVIDIA driver (run on the GPU machine, as root).

Checks what CI's fake driver cannot: the daemon primes the real GPU, `warmctl status` shows it,
and `warmctl suspend/resume` of a process holding N GiB of cuMemAlloc'd VRAM keeps its data.
Measures the same toggle done by a fresh process (gw-ckpt-fresh: load + cuInit + driver calls,
what cuda-checkpoint does) in the same run, and prints both.

usage: gpu_suite.py BUILD_DIR [--gib 4] [--rounds 3] [--json OUT.json]
"""
import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time


from criu_suite import daemon_wrap, print_caps  # the same daemon wrapper for both suites

class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)
    print(f"  ok: {what}", flush=True)


class App:
    """gw-vram-app holding VRAM; verify() asks it to check every block."""

    def __init__(self, build, mib, extra=(), shim_socket=None, argv=None, env_extra=None):
        env = dict(os.environ)
        if shim_socket:
            env["LD_PRELOAD"] = f"{build}/client/shim/libgpuwarm-shim.so"
            env["GPUWARM_SOCKET"] = shim_socket
        env.update(env_extra or {})
        argv = argv or [f"{build}/tests/apps/gw-vram-app", "--mib", str(mib), *extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        line = self.readline(300)
        if not line.startswith("ready pid"):
            raise Failure(f"gw-vram-app did not get ready: {line!r}")
        self.pid = self.proc.pid
        self.ready_line = line

    def readline(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise Failure("gw-vram-app printed nothing in time")
        return self.proc.stdout.readline().strip()

    def verify(self):
        t0 = time.monotonic()
        os.kill(self.pid, signal.SIGUSR1)
        while True:
            line = self.readline(120)
            if line.startswith("verify "):
                return line, time.monotonic() - t0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def warmctl(build, sock, *args, expect=0):
    t0 = time.monotonic()
    p = subprocess.run([f"{build}/client/warmctl", "--socket", sock, "--json", *args],
                       capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    if p.returncode != expect:
        raise Failure(f"warmctl {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()} {p.stdout.strip()}")
    return json.loads(p.stdout), wall


def fresh(build, action, pid):
    p = subprocess.run([f"{build}/tests/bench/gw-ckpt-fresh", action, str(pid)],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise Failure(f"gw-ckpt-fresh {action}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def fast_path(build, sock, gib, rounds):
    """The same size through the shim (fast path) and, on a second app, the driver path."""
    mib = int(gib * 1024)
    out = {"gib": gib}
    print(f"== {gib} GiB: fast path (shim) vs driver path, same run")
    fast = App(build, mib, ["--chunk-mib", "256"], shim_socket=sock)
    print("  shimmed app:", fast.ready_line)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st, _ = warmctl(build, sock, "status")
        procs = [p for p in st["result"]["processes"] if p["pid"] == fast.pid]
        if procs and procs[0]["vram_bytes"] >= mib << 20:
            break
        time.sleep(0.2)
    check(procs and procs[0]["vram_bytes"] >= mib << 20, f"agent registered {procs[0]['vram_bytes'] >> 20 if procs else 0} MiB")
    rows = {"fast_suspend": [], "fast_resume": [], "driver_suspend": [], "driver_resume": [],
            "copy_out_gbps": [], "fill_gbps": []}
    try:
        for r in range(rounds):
            j, wall = warmctl(build, sock, "suspend", str(fast.pid))
            res = j["result"]
            check(res["path"] == "fast" and res["state"] == "checkpointed",
                  f"round {r}: fast suspend {wall*1e3:.0f} ms (daemon {res['duration_ms']:.0f} ms, copy {res.get('copy_gb_per_s', 0):.1f} GB/s); steps " +
                  ", ".join(f"{s['step']} {s['duration_ms']:.1f}" for s in res["steps"]))
            rows["fast_suspend"].append(wall)
            rows["copy_out_gbps"].append(res.get("copy_gb_per_s", 0))
            j, wall = warmctl(build, sock, "resume", str(fast.pid))
            res = j["result"]
            check(res["path"] == "fast" and res["state"] == "running",
                  f"round {r}: fast resume {wall*1e3:.0f} ms (fill {res.get('copy_gb_per_s', 0):.1f} GB/s); steps " +
                  ", ".join(f"{s['step']} {s['duration_ms']:.1f}" for s in res["steps"]))
            rows["fast_resume"].append(wall)
            rows["fill_gbps"].append(res.get("copy_gb_per_s", 0))
            line, vt = fast.verify()
            check(line.startswith("verify ok"), f"data verified after the fast cycle ({line})")
    finally:
        fast.stop()
    drv = App(build, mib, ["--chunk-mib", "256"])
    try:
        j, wall = warmctl(build, sock, "suspend", str(drv.pid))
        check(j["result"]["path"] == "driver", f"driver-path suspend {wall:.3f} s")
        rows["driver_suspend"].append(wall)
        j, wall = warmctl(build, sock, "resume", str(drv.pid))
        check(j["result"]["state"] == "running", f"driver-path resume {wall:.3f} s")
        rows["driver_resume"].append(wall)
        line, _ = drv.verify()
        check(line.startswith("verify ok"), f"data verified after the driver cycle ({line})")
    finally:
        drv.stop()
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    out["median"] = med
    out["samples"] = rows
    print()
    print(f"{'':24}{'fast path':>12}{'driver path':>14}{'ratio':>8}")
    for op in ("suspend", "resume"):
        f, d = med[f"fast_{op}"], med[f"driver_{op}"]
        print(f"{op + ' (' + str(gib) + ' GiB)':24}{f:11.3f}s{d:13.3f}s{d / f:7.1f}x")
    print(f"copy engine: out {med['copy_out_gbps']:.1f} GB/s, in (fill) {med['fill_gbps']:.1f} GB/s")
    return out


def wait_registered(build, sock, pid, want_bytes, timeout=60):
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        st, _ = warmctl(build, sock, "status")
        procs = [p for p in st["result"]["processes"] if p["pid"] == pid]
        got = procs[0]["vram_bytes"] if procs else 0
        if got >= want_bytes:
            return got
        time.sleep(0.2)
    raise Failure(f"pid {pid}: its agent registered {got >> 20} MiB, expected {want_bytes >> 20}")


def torch_path(build, sock, gib):
    """PyTorch tensors through the fast path: the default caching allocator (cudaMalloc ->
    cuMemAlloc via cuGetProcAddress) and expandable segments (the app's own cuMemCreate/cuMemMap)."""
    out = {}
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_tensors.py")
    for conf in ("default", "expandable_segments:True"):
        print(f"== PyTorch, {gib} GiB of tensors, allocator {conf}")
        env = {} if conf == "default" else {"PYTORCH_CUDA_ALLOC_CONF": conf}
        app = App(build, 0, shim_socket=sock, argv=["python3", script, "--gib", str(gib)], env_extra=env)
        try:
            print("  app:", app.ready_line)
            got = wait_registered(build, sock, app.pid, int(gib * 2**30 * 0.99))
            check(True, f"agent registered {got / 2**30:.2f} GiB")
            j, ws = warmctl(build, sock, "suspend", str(app.pid))
            res = j["result"]
            check(res["path"] == "fast", f"fast suspend {ws*1e3:.0f} ms, {res['ranges']} ranges, copy {res.get('copy_gb_per_s', 0):.1f} GB/s")
            j, wr = warmctl(build, sock, "resume", str(app.pid))
            check(j["result"]["state"] == "running", f"fast resume {wr*1e3:.0f} ms")
            line, _ = app.verify()
            check(line.startswith("verify ok"), f"tensors bit-identical: {line}")
            out[conf] = {"suspend_s": ws, "resume_s": wr, "ranges": res["ranges"], "bytes": res["vram_bytes"]}
        finally:
            app.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build")
    ap.add_argument("--gib", type=float, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--staging-mib", type=int, default=1024)
    ap.add_argument("--fast-gib", type=float, default=0,
                    help="also run the fast path (shim) with an app of this size, vs the driver path")
    ap.add_argument("--torch-gib", type=float, default=0,
                    help="also suspend/resume a PyTorch process holding this many GiB of tensors "
                         "through the fast path, with the default allocator and expandable segments")
    ap.add_argument("--json")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    results = {"gib": a.gib, "rounds": a.rounds}
    tmp = tempfile.mkdtemp(prefix="gw-gpu-")
    sock = f"{tmp}/gpu-warmd.sock"
    log = open(f"{tmp}/gpu-warmd.log", "w")
    t0 = time.monotonic()
    pool_mib = int(a.fast_gib * 1024) + 256 if a.fast_gib else 0
    daemon = subprocess.Popen(daemon_wrap() + [f"{build}/daemon/gpu-warmd", "--socket", sock,
                               "--staging-mib", str(a.staging_mib),
                               "--image-pool-mib", str(pool_mib)], stderr=log, stdout=log)
    print_caps(daemon.pid)
    app = None
    try:
        status = None
        while time.monotonic() - t0 < 120:
            if os.path.exists(sock):
                try:
                    status, _ = warmctl(build, sock, "status")
                    if all(g["state"] != "priming" for g in status["result"]["gpus"]):
                        break
                except (Failure, json.JSONDecodeError):
                    pass
            time.sleep(0.05)
        results["daemon_ready_s"] = time.monotonic() - t0
        print("== warmctl status (real driver)")
        print(subprocess.run([f"{build}/client/warmctl", "--socket", sock, "--human", "status"],
                             capture_output=True, text=True).stdout)
        gpus = status["result"]["gpus"]
        check(len(gpus) >= 1, f"{len(gpus)} GPU(s) listed: {gpus[0]['name']} {gpus[0]['uuid']} {gpus[0]['pci_bus_id']}")
        check(gpus[0]["state"] == "ready" and gpus[0]["context"] == "primed", "GPU 0 ready with a primed context")
        check(gpus[0]["staging"]["bytes"] == a.staging_mib << 20,
              f"pinned pool {gpus[0]['staging']['bytes'] >> 20} MiB, pinned in {gpus[0]['staging']['pin_ms']:.0f} ms")
        results["status"] = status["result"]

        print(f"== {a.gib} GiB app: warmctl suspend/resume vs a fresh process")
        app = App(build, int(a.gib * 1024), ["--chunk-mib", "256"])
        print("  app:", app.ready_line)
        rows = {"warmctl_suspend": [], "warmctl_resume": [], "fresh_suspend": [], "fresh_resume": [],
                "fresh_cuinit": []}
        for r in range(a.rounds):
            j, wall = warmctl(build, sock, "suspend", str(app.pid))
            check(j["result"]["state"] == "checkpointed", f"round {r}: warmctl suspend -> checkpointed in {wall*1e3:.0f} ms (daemon {j['result']['duration_ms']:.0f} ms)")
            rows["warmctl_suspend"].append(wall)
            st, _ = warmctl(build, sock, "state", str(app.pid))
            check(st["result"]["state"] == "checkpointed", "state says checkpointed")
            j, wall = warmctl(build, sock, "resume", str(app.pid))
            check(j["result"]["state"] == "running", f"round {r}: warmctl resume -> running in {wall*1e3:.0f} ms")
            rows["warmctl_resume"].append(wall)
            line, vt = app.verify()
            check(line.startswith("verify ok"), f"data verified after warmctl cycle ({line}, {vt:.1f} s)")

            t = time.monotonic()
            fs = fresh(build, "suspend", app.pid)
            rows["fresh_suspend"].append(time.monotonic() - t)
            rows["fresh_cuinit"].append(fs["cuinit_ms"] / 1e3)
            t = time.monotonic()
            fresh(build, "resume", app.pid)
            rows["fresh_resume"].append(time.monotonic() - t)
            line, vt = app.verify()
            check(line.startswith("verify ok"), f"data verified after fresh-process cycle ({line})")
        med = {k: statistics.median(v) for k, v in rows.items()}
        results["median_s"] = med
        results["samples_s"] = rows
        print()
        print(f"{'':24}{'gpu-warmd':>12}{'fresh process':>16}{'ratio':>8}")
        for op in ("suspend", "resume"):
            w, f = med[f"warmctl_{op}"], med[f"fresh_{op}"]
            print(f"{op + ' (' + str(a.gib) + ' GiB)':24}{w:11.3f}s{f:15.3f}s{f / w:7.2f}x")
        print(f"{'fresh cuInit alone':24}{'':12}{med['fresh_cuinit']:15.3f}s")
        app.stop()
        app = None
        if a.fast_gib:
            results["fast"] = fast_path(build, sock, a.fast_gib, a.rounds)
        if a.torch_gib:
            results["torch"] = torch_path(build, sock, a.torch_gib)
        st, _ = warmctl(build, sock, "status")
        results["operations"] = st["result"]["operations"]
        results["image_pool"] = {k: st["result"]["daemon"][k] for k in ("image_pool_bytes", "image_pool_pin_ms")}
    finally:
        if app:
            app.stop()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(60)
        log.close()
        print("== daemon log")
        print(open(f"{tmp}/gpu-warmd.log").read())
    check(code == 0, "gpu-warmd stopped cleanly on SIGTERM")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    print("GPU SUITE PASSED")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"GPU SUITE FAILED: {e}", flush=True)
        sys.exit(1)
