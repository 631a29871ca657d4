#!/usr/bin/env python3
"""Soak: many suspend/resume cycles, with the daemon's resources sampled after every one.

Issue 6, acceptance 3 and 4: a shimmed gw-vram-app goes through --shim-cycles fast-path
suspend/resume cycles, then a plain one through --driver-cycles driver-path cycles (every other
one as the four single steps lock, checkpoint, restore, unlock, so that every operation kind
runs), its data verified every --verify-every cycles and at the end. After every cycle it samples
GPU memory used (nvidia-smi, or the daemon's view of the GPU without nvidia-smi), the daemon's
pinned memory (VmLck and VmPin of /proc/PID/status; the image pool and staging bytes of
`warmctl status`), its open fds and its RSS. A sample kind is flat when its last value is within
its tolerance of its value after the warm-up cycles. Then `warmctl metrics` must show a non-zero
ok counter for every operation kind.

Run on the GPU machine, as root (the fast path freezes the app's threads):

    tests/gpu/soak.py build --mib 4096 --json soak.json

Against the fake driver (no GPU; what CI's machines can do, with small counts):

    FAKECUDA_GPUS=1 tests/gpu/soak.py build --cuda-library build/tests/fake-cuda/libfakecuda.so \\
        --shim-cycles 20 --driver-cycles 10 --mib 64 --warmup 3

With an ASan build (build-test/) add ASAN_OPTIONS=verify_asan_link_order=0:quarantine_size_mb=0:
the shim is preloaded, and ASan's quarantine keeps up to 256 MiB of freed memory, which reads as
RSS growth.

usage: soak.py BUILD_DIR [--shim-cycles 200] [--driver-cycles 50] [--mib 4096]
                 [--verify-every 10] [--warmup 10] [--cuda-library PATH] [--json OUT.json]
"""
import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

OPERATION_KINDS = ("lock", "checkpoint", "restore", "unlock", "suspend", "resume")


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)
    print(f"  ok: {what}", flush=True)


class Soak:
    def __init__(self, args):
        self.a = args
        self.build = os.path.abspath(args.build)
        self.tmp = tempfile.mkdtemp(prefix="gw-soak-")
        self.sock = f"{self.tmp}/gpu-warmd.sock"
        self.env = dict(os.environ)
        if args.cuda_library:
            lib = os.path.abspath(args.cuda_library)
            self.env["GPUWARM_CUDA_LIBRARY"] = lib
            # the fake driver's cross-process state (harmless with a real driver)
            self.env.setdefault("FAKECUDA_STATE_DIR", self.tmp)
        self.daemon = None
        self.log = None
        self.nvidia_smi = shutil.which("nvidia-smi") and not args.no_nvidia_smi

    # ---- processes ----

    def warmctl(self, *args, expect=0, json_out=True):
        argv = [f"{self.build}/client/warmctl", "--socket", self.sock]
        if json_out:
            argv.append("--json")
        p = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=600,
                           env=self.env)
        if p.returncode != expect:
            raise Failure(f"warmctl {' '.join(args)}: exit {p.returncode}: "
                          f"{p.stderr.strip()} {p.stdout.strip()}")
        return json.loads(p.stdout) if json_out else p.stdout

    def pool_mib(self):
        # the app's image in 64 MiB pool blocks, and one block to spare; with the fake driver
        # pool memory is host memory touched on first use, so a small pool warms up fast
        if self.a.image_pool_mib:
            return self.a.image_pool_mib
        return (self.a.mib + 63) // 64 * 64 + 64

    def start_daemon(self):
        argv = [f"{self.build}/daemon/gpu-warmd", "--socket", self.sock,
                "--staging-mib", str(self.a.staging_mib),
                "--image-pool-mib", str(self.pool_mib())]
        if self.a.cuda_library:
            argv += ["--cuda-library", os.path.abspath(self.a.cuda_library)]
        self.log = open(f"{self.tmp}/gpu-warmd.log", "w")
        self.daemon = subprocess.Popen(argv, stdout=self.log, stderr=self.log, env=self.env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise Failure(f"gpu-warmd exited: {open(self.log.name).read()}")
            if os.path.exists(self.sock):
                try:
                    st = self.warmctl("status")
                    if all(g["state"] != "priming" for g in st["result"]["gpus"]):
                        check(len(st["result"]["gpus"]) >= 1,
                              f"gpu-warmd ready: {len(st['result']['gpus'])} GPU(s), image pool "
                              f"{st['result']['daemon']['image_pool_bytes'] / 2**20:.0f} MiB")
                        return
                except (Failure, json.JSONDecodeError):
                    pass
            time.sleep(0.05)
        raise Failure("gpu-warmd did not get ready")

    def stop_daemon(self):
        if not self.daemon:
            return None
        self.daemon.send_signal(signal.SIGTERM)
        try:
            code = self.daemon.wait(120)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            code = -9
        self.log.close()
        self.daemon = None
        return code

    def start_app(self, shimmed):
        env = dict(self.env)
        if shimmed:
            env["LD_PRELOAD"] = f"{self.build}/client/shim/libgpuwarm-shim.so"
            env["GPUWARM_SOCKET"] = self.sock
        chunk = min(256, max(2, self.a.mib // 4))
        proc = subprocess.Popen([f"{self.build}/tests/apps/gw-vram-app", "--mib", str(self.a.mib),
                                 "--chunk-mib", str(chunk)],
                                stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        line = self.readline(proc, 300)
        if not line.startswith("ready pid"):
            raise Failure(f"gw-vram-app did not get ready: {line!r}")
        print(f"  app ({'shimmed' if shimmed else 'plain'}): {line}", flush=True)
        if shimmed:
            want = self.a.mib << 20
            deadline = time.monotonic() + 60
            got = 0
            while time.monotonic() < deadline:
                procs = [p for p in self.warmctl("status")["result"]["processes"]
                         if p["pid"] == proc.pid]
                got = procs[0]["vram_bytes"] if procs else 0
                if got >= want:
                    break
                time.sleep(0.1)
            check(got >= want, f"its agent registered {got >> 20} MiB")
        return proc

    @staticmethod
    def readline(proc, timeout):
        r, _, _ = select.select([proc.stdout], [], [], timeout)
        if not r:
            raise Failure("gw-vram-app printed nothing in time")
        return proc.stdout.readline().strip()

    def verify(self, proc):
        os.kill(proc.pid, signal.SIGUSR1)
        while True:
            line = self.readline(proc, 300)
            if line.startswith("verify "):
                if not line.startswith("verify ok"):
                    raise Failure(f"data lost: {line}")
                return line

    @staticmethod
    def stop_app(proc):
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # ---- samples ----

    def gpu_used_mib(self, status):
        if self.nvidia_smi:
            p = subprocess.run(["nvidia-smi", "--query-gpu=memory.used",
                                "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=60)
            if p.returncode == 0 and p.stdout.strip():
                return sum(float(x) for x in p.stdout.split())
        # without nvidia-smi (the fake driver): what the daemon last read from the driver
        return sum(g["memory_total_mib"] - g["memory_free_mib"] for g in status["gpus"])

    def sample(self):
        pid = self.daemon.pid
        fields = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                m = re.match(r"(VmRSS|VmLck|VmPin):\s+(\d+) kB", line)
                if m:
                    fields[m.group(1)] = int(m.group(2)) / 1024.0
        status = self.warmctl("status")["result"]
        d = status["daemon"]
        return {
            "gpu_used_mib": self.gpu_used_mib(status),
            "vm_lck_mib": fields.get("VmLck", 0.0),
            "vm_pin_mib": fields.get("VmPin", 0.0),
            "image_pool_used_mib": (d["image_pool_bytes"] - d["image_pool_free_bytes"]) / 2**20,
            "staging_mib": sum(g["staging"]["bytes"] for g in status["gpus"]) / 2**20,
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "rss_mib": fields.get("VmRSS", 0.0),
            "clients": d["clients"],
            "leases": len(status["leases"]),
        }

    # Growth allowed after the warm-up, per sample kind: absolute, and relative to the value.
    TOLERANCE = {
        "gpu_used_mib": (64.0, 0.01),
        "vm_lck_mib": (0.0, 0.0),
        "vm_pin_mib": (0.0, 0.0),
        "image_pool_used_mib": (0.0, 0.0),
        "staging_mib": (0.0, 0.0),
        "fds": (2, 0.0),
        "rss_mib": (8.0, 0.02),
        "clients": (0, 0.0),
        "leases": (0, 0.0),
    }

    def summarize(self, name, samples):
        warm = min(self.a.warmup, len(samples) - 1)
        rows = {}
        flat = True
        print(f"\n== {name}: {len(samples) - 1} cycles, warm-up {warm}")
        print(f"{'sample':22}{'first':>11}{'warm':>11}{'last':>11}{'max':>11}{'growth':>10}"
              f"{'tol':>9}  verdict")
        for kind, (abs_tol, rel_tol) in self.TOLERANCE.items():
            values = [s[kind] for s in samples]
            ref, last = values[warm], values[-1]
            growth = last - ref
            tol = max(abs_tol, rel_tol * abs(ref))
            ok = growth <= tol
            flat &= ok
            rows[kind] = {"first": values[0], "warm": ref, "last": last, "max": max(values),
                          "growth": growth, "tolerance": tol, "flat": ok}
            print(f"{kind:22}{values[0]:11.1f}{ref:11.1f}{last:11.1f}{max(values):11.1f}"
                  f"{growth:10.1f}{tol:9.1f}  {'flat' if ok else 'GROWS'}")
        print(f"verdict: {'flat' if flat else 'GROWS'}", flush=True)
        return {"cycles": len(samples) - 1, "warmup": warm, "summary": rows,
                "verdict": "flat" if flat else "grows", "samples": samples}

    # ---- phases ----

    def fast_phase(self):
        print(f"== fast path: {self.a.shim_cycles} suspend/resume cycles of a shimmed "
              f"{self.a.mib} MiB app", flush=True)
        app = self.start_app(shimmed=True)
        samples = [self.sample()]
        t0 = time.monotonic()
        try:
            for c in range(1, self.a.shim_cycles + 1):
                s = self.warmctl("suspend", str(app.pid))["result"]
                if s["path"] != "fast" or s["state"] != "checkpointed":
                    raise Failure(f"cycle {c}: suspend took path {s['path']}, state {s['state']}")
                r = self.warmctl("resume", str(app.pid))["result"]
                if r["path"] != "fast" or r["state"] != "running":
                    raise Failure(f"cycle {c}: resume took path {r['path']}, state {r['state']}")
                if c % self.a.verify_every == 0 or c == self.a.shim_cycles:
                    self.verify(app)
                samples.append(self.sample())
                if c % max(1, self.a.shim_cycles // 10) == 0:
                    print(f"  cycle {c}: suspend {s['duration_ms']:.0f} ms, resume "
                          f"{r['duration_ms']:.0f} ms, rss {samples[-1]['rss_mib']:.1f} MiB, "
                          f"fds {samples[-1]['fds']}", flush=True)
        finally:
            self.stop_app(app)
        check(True, f"{self.a.shim_cycles} fast cycles in {time.monotonic() - t0:.1f} s, data "
                    f"verified every {self.a.verify_every}")
        return self.summarize("fast path", samples)

    def driver_phase(self):
        print(f"\n== driver path: {self.a.driver_cycles} cycles of a plain {self.a.mib} MiB app "
              "(odd cycles as single steps)", flush=True)
        app = self.start_app(shimmed=False)
        samples = [self.sample()]
        t0 = time.monotonic()
        try:
            for c in range(1, self.a.driver_cycles + 1):
                if c % 2:
                    for step, state in (("lock", "locked"), ("checkpoint", "checkpointed"),
                                        ("restore", "locked"), ("unlock", "running")):
                        j = self.warmctl(step, str(app.pid))["result"]
                        if j["state"] != state:
                            raise Failure(f"cycle {c}: {step} left it {j['state']}")
                else:
                    s = self.warmctl("suspend", str(app.pid))["result"]
                    if s["path"] != "driver" or s["state"] != "checkpointed":
                        raise Failure(f"cycle {c}: suspend: path {s['path']}, state {s['state']}")
                    r = self.warmctl("resume", str(app.pid))["result"]
                    if r["state"] != "running":
                        raise Failure(f"cycle {c}: resume left it {r['state']}")
                if c % 5 == 0:
                    # a lease that ends with its client: leases must not pile up either
                    self.warmctl("lease", "--gpu", "0")
                if c % self.a.verify_every == 0 or c == self.a.driver_cycles:
                    self.verify(app)
                samples.append(self.sample())
        finally:
            self.stop_app(app)
        check(True, f"{self.a.driver_cycles} driver cycles in {time.monotonic() - t0:.1f} s")
        return self.summarize("driver path", samples)

    def metrics(self):
        text = self.warmctl("metrics", json_out=False)
        counters = {}
        for m in re.finditer(r'^gpuwarm_operations_total\{operation="(\w+)",result="(\w+)"\} '
                             r'(\d+)$', text, re.M):
            counters.setdefault(m.group(1), {})[m.group(2)] = int(m.group(3))
        print("\n== warmctl metrics: operations")
        for op, c in sorted(counters.items()):
            print(f"  {op:12} ok {c.get('ok', 0):6}  failed {c.get('failed', 0)}")
        kinds = set(counters) | set(OPERATION_KINDS)
        zero = sorted(k for k in kinds if counters.get(k, {}).get("ok", 0) == 0)
        check(not zero, f"every operation kind counted ({', '.join(sorted(kinds))})"
                        + (f"; zero: {', '.join(zero)}" if zero else ""))
        failed = {k: c.get("failed", 0) for k, c in counters.items() if c.get("failed", 0)}
        check(not failed, "no operation failed" + (f": {failed}" if failed else ""))
        moved = {m.group(1): int(m.group(2)) for m in re.finditer(
            r'^gpuwarm_vram_moved_bytes_total\{operation="(\w+)"\} (\d+)$', text, re.M)}
        check(moved.get("suspend", 0) > 0 and moved.get("resume", 0) > 0,
              f"VRAM bytes moved counted: {moved}")
        return {"operations": counters, "vram_moved_bytes": moved}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build")
    ap.add_argument("--shim-cycles", type=int, default=200)
    ap.add_argument("--driver-cycles", type=int, default=50)
    ap.add_argument("--mib", type=int, default=4096, help="VRAM each app holds")
    ap.add_argument("--verify-every", type=int, default=10, metavar="K")
    ap.add_argument("--warmup", type=int, default=10, help="cycles before the reference sample")
    ap.add_argument("--staging-mib", type=int, default=256)
    ap.add_argument("--image-pool-mib", type=int, default=0,
                    help="the daemon's image pool (default: the app's VRAM plus one 64 MiB block)")
    ap.add_argument("--cuda-library", help="driver for the daemon and the apps (the fake: "
                                           "build/tests/fake-cuda/libfakecuda.so)")
    ap.add_argument("--no-nvidia-smi", action="store_true",
                    help="read GPU memory from the daemon even where nvidia-smi exists")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.shim_cycles < 1 or a.driver_cycles < 1 or a.verify_every < 1:
        ap.error("cycle counts and --verify-every must be positive")
    soak = Soak(a)
    results = {"args": vars(a), "gpu_memory_from": "nvidia-smi" if soak.nvidia_smi else "daemon"}
    ok = False
    try:
        soak.start_daemon()
        results["fast"] = soak.fast_phase()
        results["driver"] = soak.driver_phase()
        results["metrics"] = soak.metrics()
        flat = results["fast"]["verdict"] == "flat" and results["driver"]["verdict"] == "flat"
        results["verdict"] = "flat" if flat else "grows"
        ok = flat
    finally:
        code = soak.stop_daemon()
        results["daemon_exit"] = code
        if code not in (0, None):
            print(f"gpu-warmd exited {code}; its log: {soak.tmp}/gpu-warmd.log")
            ok = False
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
    if not ok:
        raise Failure("resources grow (see the tables above)")
    shutil.rmtree(soak.tmp, ignore_errors=True)
    print("SOAK PASSED: flat")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"SOAK FAILED: {e}", flush=True)
        sys.exit(1)
