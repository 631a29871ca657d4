#!/usr/bin/env python3
"""Restore in under a second through CRIU: one run, baselines in the same run (GPU machine, root).

Two stacks, switched by the plugin directory CRIU gets with -L (only one CUDA plugin in each):
  gpuwarm:  CRIU 4.2.1 + gpuwarm_plugin.so (BUILD) + gpu-warmd, the app under the shim (fast path)
  baseline: CRIU 4.2.1 + CRIU's cuda_plugin.so + cuda-checkpoint, the app without the shim (the
            seeds' stack); cuda-checkpoint is NVIDIA's binary when the machine has one, else
            BUILD/tests/bench/gw-ckpt-fresh in its cuda-checkpoint mode (the output says which)
Parts (--only a,b,c,d):
  a  the model server (tests/workloads/model_server.py, Qwen2-1.5B shape, --kv-cache-gib KV):
     criu dump of the whole process, criu restore; restore -> first token (from starting
     `criu restore` to the restored server's first token), greedy output identical to before the
     dump, RESUME_DEVICES_LATE's time and CRIU's restore phases from its -v4 log and
     --display-stats; both stacks, images on a plain tmpfs. --a-thp-again always: gpu-warmd's
     images restored once more with the host's transparent huge pages set to "always" (CRIU's
     restore of the process's memory faults in 2 MiB pages then; always+defrag also sets defrag
     to always), the host's mode put back after. --a-memscan: what of the server's host memory
     CRIU dumps (tests/bench/memscan.py), running, suspended (`warmctl suspend --image`, then
     resumed) and restored.
  b  gw-vram-app with DENSE GiB of data through criu: dump and restore times with the image dir on
     a huge-page tmpfs (huge=always) and on a plain tmpfs; both stacks. With --cache, gpu-warmd
     has a RAM image cache: its restore reads the files (the cache dropped first), then a second
     dump and a restore from the cache.
  c  warmctl suspend/resume --image of DENSE GiB on both tmpfs kinds: times, copy rates, steps.
  d  the same from the daemon's pinned image pool (--image-pool-mib), resume only.
Every restored process verifies its data (b, c, d) or answers the same tokens (a).
Writes OUT/restore.json (after every part), OUT/restore.png (matplotlib, if there), CRIU's logs
gzipped under OUT/logs/, OUT/daemon.log. Called by tests/bench/restore-gpu.sh, which unpacks CRIU
and makes the plugin directories.

usage: restore.py BUILD OUT --criu-root DIR [--cuda-plugin SO | --plugins-cuda DIR]
                  [--plugins-gpuwarm DIR] [--only a,b,c,d] [--skip-baseline] [--kv-gib 16]
                  [--dense-gib 16] [--budget-s 480] [--tmpfs-gib 40] [--a-tmpfs plain|huge]
"""
import argparse
import glob
import gzip
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "gpu"))
sys.path.insert(0, os.path.join(HERE, "..", "workloads"))
from criu_suite import App, Criu, Failure, become_subreaper, reap, wait_for  # noqa: E402
import memscan  # noqa: E402
from thp import thp_get, thp_restore, thp_set  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog. Checkpoint me, restore me, then"
GIB = float(1 << 30)
KINDS = ("huge", "plain")
MOUNT = {"huge": "/mnt/gw-restore-huge", "plain": "/mnt/gw-restore-plain"}
# Where a cuda-checkpoint binary may be, besides PATH.
CC_PLACES = ["/usr/bin", "/usr/local/bin", "/usr/sbin", "/usr/local/cuda/bin", "/usr/local/cuda-*/bin",
             "/usr/local/nvidia/bin", "/usr/lib/nvidia/bin", "/usr/lib/x86_64-linux-gnu/nvidia/*/bin",
             "/opt/nvidia/bin", "/opt/cuda/bin", "/usr/local/cuda/extras/cuda-checkpoint/bin"]


def log(msg):
    print(msg, flush=True)


def ok(msg):
    print(f"  ok: {msg}", flush=True)


def check(cond, what):
    if not cond:
        raise Failure(what)
    ok(what)


# ------------------------------------------------------------------------------------------------
# Run state: budget, results, cleanup


class Run:
    def __init__(self, a, build, out, work):
        self.a, self.build, self.out, self.work = a, build, out, work
        self.t0 = time.monotonic()
        self.res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
                    "args": {k: v for k, v in vars(a).items()}, "skipped": [], "errors": []}
        self.pids = set()  # every process we started or restored: killed at teardown
        self.criu = None
        self.sock = f"{work}/gpu-warmd.sock"
        self.daemon = None

    def left(self):
        return self.a.budget_s - (time.monotonic() - self.t0)

    def allow(self, what, need):
        if self.left() >= need:
            return True
        msg = f"{what}: needs ~{need:.0f} s, {max(0, self.left()):.0f} s of --budget-s left"
        log(f"== SKIPPED {msg}")
        self.res["skipped"].append(msg)
        return False

    def save(self):
        self.res["elapsed_s"] = time.monotonic() - self.t0
        with open(f"{self.out}/restore.json", "w") as f:
            json.dump(self.res, f, indent=1)

    def keep_log(self, path, name):
        """A gzipped copy of a CRIU log into OUT/logs (the images go away)."""
        if not os.path.exists(path):
            return None
        os.makedirs(f"{self.out}/logs", exist_ok=True)
        dst = f"{self.out}/logs/{name}.gz"
        with open(path, "rb") as src, gzip.open(dst, "wb", 6) as g:
            shutil.copyfileobj(src, g)
        return os.path.relpath(dst, self.out)

    def kill_all(self):
        for pid in list(self.pids):
            kill_tree(pid)
        self.pids.clear()
        reap()


def kill_tree(pid):
    for f in (os.killpg, os.kill):
        try:
            f(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    wait_dead(pid, 10, quiet=True)


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return s[s.rindex(")") + 2]
    except (OSError, ValueError, IndexError):
        return None


def wait_dead(pid, timeout, quiet=False):
    """Until pid is gone (reaped: we are the subreaper of everything criu leaves behind)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap()
        st = proc_state(pid)
        if st is None:
            return True
        if st == "T" and os.environ.get("RESTORE_DRYRUN_STOPPED_OK") == "1":
            return True  # dry run with a stand-in criu that stops tasks instead of killing them
        time.sleep(0.05)
    if not quiet:
        raise Failure(f"pid {pid} still there {timeout} s after criu dump (state {proc_state(pid)})")
    return False


def socket_fds(pid):
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


# ------------------------------------------------------------------------------------------------
# tmpfs kinds


def mounted(path):
    with open("/proc/mounts") as f:
        for line in f:
            fs = line.split()
            if len(fs) > 3 and fs[1] == path:
                return fs
    return None


def umount(path):
    for _ in range(2):
        if not mounted(path):
            return
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)


def mount_kind(kind, gib):
    path = MOUNT[kind]
    umount(path)
    os.makedirs(path, exist_ok=True)
    opts = f"size={gib}g" + (",huge=always" if kind == "huge" else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, f"gw-restore-{kind}", path], check=True)
    m = mounted(path)
    if kind == "huge" and "huge=always" not in m[3]:
        log(f"  WARNING: {path} mounted without huge=always: {m[3]}")
    return path


# ------------------------------------------------------------------------------------------------
# cuda-checkpoint for the baseline stack


def find_cuda_checkpoint(explicit):
    cands = []
    if explicit:
        cands.append(explicit)
    w = shutil.which("cuda-checkpoint")
    if w:
        cands.append(w)
    for place in CC_PLACES:
        cands += sorted(glob.glob(os.path.join(place, "cuda-checkpoint")))
    seen = []
    for c in cands:
        c = os.path.realpath(c)
        if c in seen or not os.access(c, os.X_OK):
            continue
        seen.append(c)
        try:
            p = subprocess.run([c, "-h"], capture_output=True, text=True, timeout=30)
            if "--action" in p.stdout + p.stderr:
                return c, seen
            log(f"  {c}: no --action in its help (driver < 555?): not used")
        except Exception as e:  # noqa: BLE001
            log(f"  {c}: {e}")
    return None, seen


def setup_cuda_checkpoint(run):
    """A directory with `cuda-checkpoint` for the front of criu's PATH (cuda_plugin execvp()s it)."""
    d = f"{run.work}/ccbin"
    os.makedirs(d, exist_ok=True)
    found, looked = find_cuda_checkpoint(run.a.cuda_checkpoint)
    calls = f"{run.work}/cuda-checkpoint-calls.jsonl"
    if found:
        # A wrapper that records each call's wall time, then NVIDIA's binary.
        with open(f"{d}/cuda-checkpoint", "w") as f:
            f.write("#!/bin/sh\n"
                    "s=$(date +%s.%N)\n"
                    f"'{found}' \"$@\"\n"
                    "rc=$?\n"
                    f"echo \"{{\\\"tool\\\":\\\"cuda-checkpoint\\\",\\\"args\\\":\\\"$*\\\",\\\"start\\\":$s,"
                    f"\\\"end\\\":$(date +%s.%N),\\\"rc\\\":$rc}}\" >> '{calls}'\n"
                    "exit $rc\n")
        os.chmod(f"{d}/cuda-checkpoint", 0o755)
        info = {"kind": "nvidia", "path": found,
                "version": subprocess.run([found, "--version"], capture_output=True, text=True).stdout.strip()[:200]}
        log(f"== cuda-checkpoint for the baseline: NVIDIA's {found} {info['version']!r}")
    else:
        fresh = f"{run.build}/tests/bench/gw-ckpt-fresh"
        h = subprocess.run([fresh, "-h"], capture_output=True, text=True)
        if "--action" not in h.stdout + h.stderr:
            raise Failure(f"no cuda-checkpoint on this machine, and {fresh} has no cuda-checkpoint mode "
                          "(BUILD older than this script?): the baseline cannot run (--skip-baseline)")
        if os.path.lexists(f"{d}/cuda-checkpoint"):
            os.unlink(f"{d}/cuda-checkpoint")
        os.symlink(fresh, f"{d}/cuda-checkpoint")
        info = {"kind": "gw-ckpt-fresh stand-in", "path": fresh, "looked_in": CC_PLACES + ["PATH"]}
        log(f"== cuda-checkpoint for the baseline: NOT FOUND on this machine (PATH, {', '.join(CC_PLACES)});"
            f" using the stand-in {fresh} (a fresh process per call: driver load + cuInit + the call,"
            " what cuda-checkpoint does)")
    info["calls_log"] = calls
    run.cc_dir = d
    run.res["cuda_checkpoint"] = info


def cc_calls(run):
    """The cuda-checkpoint calls so far (and forget them)."""
    path = run.res["cuda_checkpoint"].get("calls_log")
    out = []
    if path and os.path.exists(path):
        for line in open(path):
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if "start" in j:
                j["wall_ms"] = (j["end"] - j["start"]) * 1e3
            out.append(j)
        os.unlink(path)
    return out


# ------------------------------------------------------------------------------------------------
# CRIU


TS = re.compile(r"^\((\d+)\.(\d+)\)\s*(?:(\d+):\s)?\s*(.*)$")


def parse_log(path):
    """[(seconds since criu's log start, pid or None, text)] of a -v4 CRIU log."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = TS.match(line)
                if m:
                    out.append((int(m.group(1)) + int(m.group(2)) / 1e6,
                                int(m.group(3)) if m.group(3) else None, m.group(4).rstrip()))
    except OSError:
        pass
    return out


def first(lines, text):
    for t, _, s in lines:
        if text in s:
            return t
    return None


RESTORE_MARKS = [("start", None), ("prepare shared", "Preparing info about shared resources"),
                 ("fork", "Forking task with"), ("resources", "Restoring resources"),
                 ("late hooks", "Run late stage hook from criu master"),
                 ("finished", "Restore finished successfully")]


def restore_phases(path):
    lines = parse_log(path)
    if not lines:
        return {}
    marks = {}
    for name, text in RESTORE_MARKS:
        t = lines[0][0] if text is None else first(lines, text)
        if t is not None:
            marks[name] = t
    marks["log end"] = lines[-1][0]
    out = {"marks_s": marks}
    order = [n for n, _ in RESTORE_MARKS if n in marks] + ["log end"]
    out["phases_ms"] = {f"{a} -> {b}": (marks[b] - marks[a]) * 1e3 for a, b in zip(order, order[1:])}
    if "late hooks" in marks and "finished" in marks:
        # RESUME_DEVICES_LATE of every task, every plugin (+ pre-resume scripts, detach: tiny).
        out["late_hooks_ms"] = (marks["finished"] - marks["late hooks"]) * 1e3
    if "finished" in marks:
        out["to_finished_ms"] = (marks["finished"] - marks["start"]) * 1e3
    hooks = []
    for t, _, s in lines:
        m = re.search(r"RESUME_DEVICES_LATE\((\d+)\) returns (-?\d+) after ([\d.]+) ms", s)
        if m:
            hooks.append({"pid": int(m.group(1)), "ret": int(m.group(2)), "ms": float(m.group(3)),
                          "entry_s": t - float(m.group(3)) / 1e3, "return_s": t})
    if hooks:
        out["gpuwarm_resume_devices_late"] = hooks
    plug = [f"{t:.6f} {s}" for t, _, s in lines if s.startswith("gpuwarm:") or "cuda_plugin" in s
            or "resuming devices" in s or "RESUME_DEVICES" in s or "cuda-checkpoint" in s]
    out["plugin_lines"] = plug[:40]
    return out


def dump_phases(path):
    lines = parse_log(path)
    if not lines:
        return {}
    out = {"log_end_s": lines[-1][0]}
    plug = [f"{t:.6f} {s}" for t, _, s in lines if s.startswith("gpuwarm:") or "cuda_plugin" in s
            or "pausing devices" in s or "Checkpointing CUDA" in s or "cuda-checkpoint" in s]
    out["plugin_lines"] = plug[:40]
    for name, text in (("pause devices (first)", "pausing devices"), ("checkpoint devices", "Checkpointing CUDA"),
                       ("seize", "Seized task"), ("dump pages", "Dumping pages"),
                       ("finished", "Dumping finished successfully")):
        t = first(lines, text)
        if t is not None:
            out.setdefault("marks_s", {})[name] = t
    return out


def stats(text):
    """--display-stats lines (criu prints them on stdout)."""
    out = {}
    for m in re.finditer(r"^([A-Z][A-Za-z ]+?): (\d+)(?: us| \(0x)", text, re.M):
        key = m.group(1).lower().replace(" ", "_")
        out[key + ("_us" if "time" in key else "")] = int(m.group(2))
    return out


class CriuRunner:
    def __init__(self, run, root):
        self.run = run
        self.c = Criu(root)
        self.version = subprocess.run([self.c.bin, "--version"], env=self.c.env, capture_output=True,
                                      text=True).stdout.strip()

    def env(self, stack):
        e = dict(self.c.env)
        e["GPUWARM_SOCKET"] = self.run.sock
        if stack == "baseline":
            e["PATH"] = f"{self.run.cc_dir}:" + e.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            if self.run.res["cuda_checkpoint"]["kind"] != "nvidia":
                e["GW_CKPT_FRESH_LOG"] = self.run.res["cuda_checkpoint"]["calls_log"]
        return e

    def call(self, stack, args, logpath, timeout):
        plugin_dir = self.run.plugin_dirs[stack]
        argv = [self.c.bin, *args, "-L", plugin_dir, "-v4", "-o", logpath, "--display-stats"]
        t = time.monotonic()
        try:
            p = subprocess.run(argv, env=self.env(stack), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"criu {args[0]} ({stack}) ran past {timeout} s; log {logpath}") from None
        wall = time.monotonic() - t
        if p.returncode != 0:
            tail = ""
            if os.path.exists(logpath):
                tail = "".join(open(logpath, errors="replace").readlines()[-40:])
            raise Failure(f"criu {args[0]} ({stack}) failed ({p.returncode}): {p.stderr.strip()[-2000:]}\n{tail}")
        return wall, p.stdout + p.stderr

    def dump(self, stack, pid, images, name):
        """criu dump of pid's tree (killed after); returns the numbers."""
        shutil.rmtree(images, ignore_errors=True)
        os.makedirs(images)
        logpath = f"{images}/dump.log"
        cc_calls(self.run)
        try:
            wall, text = self.call(stack, ["dump", "-t", str(pid), "-D", images, "--timeout", "300",
                                           "--ghost-limit", "256M"], logpath, 600)
        except Failure:
            self.run.keep_log(logpath, f"{name}-dump-FAILED.log")
            raise
        wait_dead(pid, 60)
        sizes = {}
        for f in os.listdir(images):
            sz = os.path.getsize(os.path.join(images, f))
            k = "pages" if f.startswith("pages-") else "gpuwarm_vram" if f.startswith("gpuwarm-vram-") else "other"
            sizes[k] = sizes.get(k, 0) + sz
        r = {"wall_s": wall, "image_bytes": sizes, "stats": stats(text), "log": dump_phases(logpath),
             "log_file": self.run.keep_log(logpath, f"{name}-dump.log")}
        calls = cc_calls(self.run)
        if calls:
            r["cuda_checkpoint_calls"] = calls
        ok(f"criu dump ({stack}) {wall:.3f} s; images: " +
           ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in sorted(sizes.items())))
        return r

    def restore(self, stack, images, name, after=None):
        """criu restore -d; after() (e.g. the first token) is timed from criu's start too."""
        logpath = f"{images}/restore.log"
        cc_calls(self.run)
        t = time.monotonic()
        try:
            wall, text = self.call(stack, ["restore", "-d", "-D", images], logpath, 600)
        except Failure:
            self.run.keep_log(logpath, f"{name}-restore-FAILED.log")
            raise
        r = {"wall_s": wall}
        if after:
            after()
            r["to_first_token_s"] = time.monotonic() - t
            r["first_token_after_criu_s"] = r["to_first_token_s"] - wall
        reap()
        r.update({"stats": stats(text), "log": restore_phases(logpath),
                  "log_file": self.run.keep_log(logpath, f"{name}-restore.log")})
        calls = cc_calls(self.run)
        if calls:
            r["cuda_checkpoint_calls"] = calls
        lg = r["log"]
        ok(f"criu restore ({stack}) {wall:.3f} s" +
           (f", restore -> first token {r['to_first_token_s']:.3f} s" if after else "") +
           (f"; log: late hooks {lg['late_hooks_ms']:.0f} ms" if "late_hooks_ms" in lg else "") +
           "".join(f", gpuwarm RESUME_DEVICES_LATE({h['pid']}) {h['ms']:.1f} ms -> {h['ret']}"
                   for h in lg.get("gpuwarm_resume_devices_late", [])))
        return r


# ------------------------------------------------------------------------------------------------
# gpu-warmd and the apps


def warmctl(run, *args, timeout=600):
    t = time.monotonic()
    p = subprocess.run([f"{run.build}/client/warmctl", "--socket", run.sock, "--json", *args],
                       capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t
    if p.returncode != 0:
        raise Failure(f"warmctl {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()} {p.stdout.strip()}")
    return json.loads(p.stdout), wall


def start_daemon(run, pool_mib, cache_mib=0):
    dlog = open(f"{run.out}/daemon.log", "a")
    argv = [f"{run.build}/daemon/gpu-warmd", "--socket", run.sock, "--staging-mib", "256"]
    if pool_mib:
        argv += ["--image-pool-mib", str(pool_mib)]
    if cache_mib:
        argv += ["--image-cache-mib", str(cache_mib)]
    t = time.monotonic()
    run.daemon = subprocess.Popen(argv, stdout=dlog, stderr=dlog)
    while True:
        time.sleep(0.2)
        if run.daemon.poll() is not None:
            raise Failure(f"gpu-warmd exited {run.daemon.returncode}: see {run.out}/daemon.log")
        try:
            st, _ = warmctl(run, "status", timeout=10)
            d = st["result"]["daemon"]
            if all(g["state"] == "ready" for g in st["result"]["gpus"]) and \
                    d.get("image_pool_bytes", 0) >= (pool_mib << 20):
                break
        except Exception:  # noqa: BLE001
            pass
        if time.monotonic() - t > 180:
            raise Failure("gpu-warmd not ready within 180 s")
    run.res["daemon"] = {"start_s": time.monotonic() - t, "image_pool_mib": pool_mib,
                         "image_pool_pin_ms": d.get("image_pool_pin_ms"),
                         "gpus": [{k: g.get(k) for k in ("name", "uuid", "state")} for g in st["result"]["gpus"]]}
    log(f"== gpu-warmd ready in {time.monotonic() - t:.1f} s (image pool {pool_mib} MiB)")


def stop_daemon(run):
    if run.daemon and run.daemon.poll() is None:
        run.daemon.send_signal(signal.SIGTERM)
        try:
            run.daemon.wait(60)
        except subprocess.TimeoutExpired:
            run.daemon.kill()
            run.daemon.wait(10)


def registered(run, pid, want, timeout=60):
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        st, _ = warmctl(run, "status")
        procs = [p for p in st["result"]["processes"] if p["pid"] == pid]
        got = procs[0]["vram_bytes"] if procs else 0
        if got >= want:
            return got
        time.sleep(0.2)
    log(f"  WARNING: pid {pid}: its agent registered {got / GIB:.2f} GiB, expected >= {want / GIB:.2f} GiB")
    return got


def shim_env(run):
    return dict(os.environ, LD_PRELOAD=f"{run.build}/client/shim/libgpuwarm-shim.so", GPUWARM_SOCKET=run.sock)


def vram_app(run, gib, shim):
    mib = int(gib * 1024)
    app = App(run.build, run.work, mib, env=shim_env(run) if shim else None)
    run.pids.add(app.pid)
    log(f"  gw-vram-app pid {app.pid}, {mib} MiB of data{' (under the shim)' if shim else ''}")
    if shim:
        registered(run, app.pid, mib << 20)
    return app


def verify(app):
    line = app.verify()[-1]
    check(line.startswith("verify ok"), f"pid {app.pid} verified its VRAM: {line}")


class Server:
    """model_server.py started the way criu can dump it: own session, output into files."""

    def __init__(self, run, shim, name):
        import client
        self.client = client
        self.log = f"{run.work}/server-{name}.log"
        self.err = f"{run.work}/server-{name}.err"
        argv = [sys.executable, "-u", run.a.server_script, "--port", "0", "--kv-cache-gib", str(run.a.kv_gib),
                *run.a.server_args.split()]
        env = shim_env(run) if shim else dict(os.environ)
        t = time.monotonic()
        with open(self.log, "w") as out, open(self.err, "w") as err:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                          start_new_session=True)
        self.pid = self.popen.pid
        run.pids.add(self.pid)
        deadline = time.monotonic() + 400
        line = None
        while time.monotonic() < deadline and line is None:
            if self.popen.poll() is not None:
                raise Failure(f"model server exited {self.popen.returncode}:\n" + open(self.err).read()[-3000:])
            for l in open(self.log).read().splitlines():
                if l.startswith("ready "):
                    line = l
            time.sleep(0.1)
        if line is None:
            raise Failure("model server not ready in 400 s:\n" + open(self.err).read()[-3000:])
        self.ready_s = time.monotonic() - t
        self.ready_line = line
        f = line.split()
        self.port = int(f[f.index("port") + 1])
        self.fields = {f[i]: f[i + 1] for i in range(0, len(f) - 1, 2)}

    def complete(self, n):
        return self.client.complete(self.port, PROMPT, n)

    def quiesce(self, base_sockets):
        """criu dumps no established TCP connection without --tcp-established: wait until the
        server has closed the ones of our requests."""
        deadline = time.monotonic() + 5
        while socket_fds(self.pid) > base_sockets and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------
# Parts


def part_a(run):
    a = run.a
    res = run.res.setdefault("a", {"kv_gib": a.kv_gib, "tmpfs": a.a_tmpfs})
    stacks = ["gpuwarm"] + ([] if a.skip_baseline else ["baseline"])
    gib = max(a.tmpfs_gib, int(a.kv_gib * 1.3 + 12))
    mnt = mount_kind(a.a_tmpfs, gib)
    ref = None
    try:
        for stack in stacks:
            need = 60 + (a.kv_gib + 3) * (3.0 if stack == "baseline" else 0.3)
            if not run.allow(f"a/{stack}: model server dump + restore", need):
                continue
            shim = stack == "gpuwarm"
            log(f"== a/{stack}: model server (kv {a.kv_gib} GiB){' under the shim' if shim else ''}, "
                f"CRIU + {'gpuwarm_plugin + gpu-warmd' if shim else 'cuda_plugin + cuda-checkpoint'}")
            r = res.setdefault(stack, {})
            try:
                s = Server(run, shim, stack)
                base_sk = socket_fds(s.pid)
                t = time.monotonic()
                s.complete(1)
                r["cold"] = {"ready_s": s.ready_s, "first_token_s": s.ready_s + time.monotonic() - t,
                             "ready_line": s.ready_line}
                ok(f"cold start: ready {s.ready_s:.2f} s, first token {r['cold']['first_token_s']:.2f} s "
                   f"({s.ready_line})")
                ids0, _, _, _ = s.complete(32)
                if ref is None:
                    ref = ids0
                r["same_as_other_stack_before_dump"] = ids0 == ref
                if shim:
                    r["registered_bytes"] = registered(run, s.pid, int(a.kv_gib * GIB), timeout=30)
                s.quiesce(base_sk)
                img = f"{mnt}/a-{stack}"
                if shim and a.a_memscan:
                    r["memscan"] = memscan_suspended(run, s.pid, f"{mnt}/a-memscan.img")
                r["dump"] = run.criu.dump(stack, s.pid, img, f"a-{stack}")
                if shim:
                    fast = [l for l in r["dump"]["log"].get("plugin_lines", []) if "fast path" in l]
                    r["fast_path"] = bool(fast)
                    if not fast:
                        log("  WARNING: the dump log does not say 'fast path' (the shim's agent was not used?)")
                r["thp"] = thp_get()
                r["restore"] = run.criu.restore(stack, img, f"a-{stack}", after=lambda: s.complete(1))
                if a.a_memscan:
                    r["memscan_restored"] = memscan_brief(memscan.scan(s.pid))
                    log("  restored process: " + memscan.table(r["memscan_restored"], 0))
                ids, _, _, _ = s.complete(32)
                r["identical"] = ids == ids0
                check(ids == ids0, f"greedy output after the restore identical to before the dump "
                      f"({len(ids)} tokens)")
                for mode in (m for m in a.a_thp_again.split(",") if m and shim):
                    r[f"restore_thp_{mode}"] = restore_again_thp(run, s, stack, img, mode, ids0)
                shutil.rmtree(img, ignore_errors=True)
            except Exception as e:  # noqa: BLE001
                r["error"] = str(e)[-3000:]
                run.res["errors"].append(f"a/{stack}: {str(e)[:3000]}")
                log(f"  FAILED a/{stack}: {e}")
            finally:
                run.kill_all()
                shutil.rmtree(f"{mnt}/a-{stack}", ignore_errors=True)
                run.save()
    finally:
        umount(mnt)


def memscan_brief(scan, top=8):
    return dict(scan, mappings=scan["mappings"][:top])


def memscan_suspended(run, pid, img):
    """The host memory CRIU dumps, running and suspended (`warmctl suspend --image`: the state the
    plugin's dump leaves, the driver's host copy of what the shim did not move included)."""
    before = memscan.scan(pid)
    j, ws = warmctl(run, "suspend", str(pid), "--image", img, "--timeout", "120")
    try:
        after = memscan.scan(pid)
    finally:
        warmctl(run, "resume", str(pid), "--image", img, "--timeout", "120")
        os.unlink(img)
    d = memscan.diff(before, after)
    log("  host memory, running: " + memscan.table(before, 6))
    log("  host memory, suspended: " + memscan.table(after, 6))
    log(f"  the suspend added {d['grew_mib']:.1f} MiB ({d['grew_zero_mib']:.1f} MiB of it zeros)")
    return {"running": memscan_brief(before), "suspended": memscan_brief(after),
            "suspend_added": dict(d, mappings=d["mappings"][:8]), "suspend_s": ws}


def restore_again_thp(run, s, stack, img, mode, ids0):
    """Kill the restored server and restore the same images again with the host's THP mode set to
    `mode` for this restore only (CRIU fills the process's anonymous memory with preadv: with THP
    "always" its page faults take 2 MiB pages)."""
    kill_tree(s.pid)
    reap()
    log(f"  again with transparent_hugepage={mode} (host setting: {thp_get()})")
    saved = None
    try:
        saved = thp_set(mode)
        r = run.criu.restore(stack, img, f"a-{stack}-thp-{mode}", after=lambda: s.complete(1))
    finally:
        if saved:
            thp_restore(saved)
    if run.a.a_memscan:
        r["memscan_restored"] = memscan_brief(memscan.scan(s.pid))
        log("  restored process: " + memscan.table(r["memscan_restored"], 0))
    ids, _, _, _ = s.complete(32)
    r["identical"] = ids == ids0
    check(ids == ids0, f"THP {mode}: greedy output after the restore identical to before the dump")
    return r


def cache_idle(run, timeout=120):
    """Wait until the daemon's image cache has no fill running; its status."""
    deadline = time.monotonic() + timeout
    while True:
        st, _ = warmctl(run, "status")
        c = (st["result"].get("image_pool") or {}).get("cache") or {}
        if not c.get("fills_running") or time.monotonic() > deadline:
            return c
        time.sleep(0.1)


def restore_from_cache(run, app, stack, img, name):
    """Dump again (the dump's image files go into the daemon's RAM cache behind the reply), wait
    for the cache to hold them, restore: the VRAM comes from the pinned pool, not the files."""
    r = {"dump": run.criu.dump(stack, app.pid, img, name)}
    t = time.monotonic()
    c = cache_idle(run)
    r["cache_fill_wait_s"] = time.monotonic() - t
    lst, _ = warmctl(run, "images")
    r["cache_entries"] = [{k: e.get(k) for k in ("state", "data_bytes", "origin")}
                          for e in lst["result"].get("entries", [])]
    r["restore"] = run.criu.restore(stack, img, name)
    hit = any("cache" in l for l in r["restore"]["log"].get("plugin_lines", []))
    r["cache_hit_in_log"] = hit
    verify(app)
    r["verified"] = True
    after = cache_idle(run)
    r["cache_hits"] = after.get("hits", 0) - c.get("hits", 0)
    log(f"  {name}: restore from the RAM cache {r['restore']['wall_s']:.3f} s (cache hits "
        f"{r['cache_hits']}, in CRIU's log: {hit}; dump {r['dump']['wall_s']:.3f} s, fill behind it "
        f"{r['cache_fill_wait_s']:.2f} s)")
    shutil.rmtree(img, ignore_errors=True)
    return r


def part_b(run):
    a = run.a
    res = run.res.setdefault("b", {"dense_gib": a.dense_gib})
    stacks = ["gpuwarm"] + ([] if a.skip_baseline else ["baseline"])
    gib = max(a.tmpfs_gib, int(a.dense_gib * 1.3 + 8))
    for stack in stacks:
        per_kind = 5 + a.dense_gib * (2.7 if stack == "baseline" else 0.8)
        if not run.allow(f"b/{stack}: {a.dense_gib} GiB through criu, both tmpfs kinds",
                         10 + a.dense_gib * 0.5 + per_kind):
            continue
        log(f"== b/{stack}: gw-vram-app {a.dense_gib} GiB dense through criu "
            f"({'gpuwarm_plugin, under the shim' if stack == 'gpuwarm' else 'cuda_plugin, no shim'})")
        app = None
        try:
            app = vram_app(run, a.dense_gib, stack == "gpuwarm")
            for kind in KINDS:
                if not run.allow(f"b/{stack}/{kind}", per_kind):
                    continue
                mnt = mount_kind(kind, gib)
                r = res.setdefault(kind, {}).setdefault(stack, {})
                try:
                    img = f"{mnt}/b-{stack}"
                    r["dump"] = run.criu.dump(stack, app.pid, img, f"b-{stack}-{kind}")
                    if a.cache and stack == "gpuwarm":
                        cache_idle(run)
                        warmctl(run, "images", "drop", "--all")  # this restore reads the files
                    r["restore"] = run.criu.restore(stack, img, f"b-{stack}-{kind}")
                    verify(app)
                    r["verified"] = True
                    log(f"  b/{stack}/{kind}: dump {r['dump']['wall_s']:.3f} s, restore {r['restore']['wall_s']:.3f} s")
                    if a.cache and stack == "gpuwarm":
                        shutil.rmtree(img, ignore_errors=True)
                        r["cached"] = restore_from_cache(run, app, stack, f"{img}-cached", f"b-{stack}-{kind}-cached")
                except Exception as e:  # noqa: BLE001
                    r["error"] = str(e)[-3000:]
                    run.res["errors"].append(f"b/{stack}/{kind}: {str(e)[:3000]}")
                    log(f"  FAILED b/{stack}/{kind}: {e}")
                    if proc_state(app.pid) is None:
                        break  # the process is gone: the other kind needs a new one
                finally:
                    shutil.rmtree(f"{mnt}/b-{stack}", ignore_errors=True)
                    umount(mnt)
                    run.save()
        except Exception as e:  # noqa: BLE001
            run.res["errors"].append(f"b/{stack}: {str(e)[:3000]}")
            log(f"  FAILED b/{stack}: {e}")
        finally:
            run.kill_all()
            for kind in KINDS:
                umount(MOUNT[kind])
            run.save()


def summarize_reply(j):
    r = j["result"]
    return {k: v for k, v in r.items() if not isinstance(v, (list, dict))}, r.get("steps", [])


def fmt_steps(steps):
    return ", ".join(f"{s['step']} {s['duration_ms']:.0f}" for s in steps)


def part_c(run):
    a = run.a
    res = run.res.setdefault("c", {"dense_gib": a.dense_gib})
    gib = max(a.tmpfs_gib, int(a.dense_gib * 1.3 + 8))
    if not run.allow(f"c: warmctl suspend/resume --image of {a.dense_gib} GiB, both tmpfs kinds",
                     15 + a.dense_gib * 1.2):
        return
    log(f"== c: warmctl suspend/resume --image, gw-vram-app {a.dense_gib} GiB dense under the shim")
    try:
        app = vram_app(run, a.dense_gib, True)
        for kind in KINDS:
            if not run.allow(f"c/{kind}", 5 + a.dense_gib * 0.7):
                continue
            mnt = mount_kind(kind, gib)
            r = res.setdefault(kind, {})
            img = f"{mnt}/c.img"
            try:
                j, ws = warmctl(run, "suspend", str(app.pid), "--image", img, "--timeout", "120")
                s, steps = summarize_reply(j)
                check(s.get("path") == "fast", f"c/{kind}: suspend {ws:.3f} s: " +
                      ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("pid",)) + f"; steps {fmt_steps(steps)}")
                r["suspend"] = {"wall_s": ws, "reply": s, "steps": steps, "file_bytes": os.path.getsize(img)}
                if a.cache:  # this part measures the files
                    cache_idle(run)
                    warmctl(run, "images", "drop", "--all")
                j, wr = warmctl(run, "resume", str(app.pid), "--image", img)
                s, steps = summarize_reply(j)
                check(s.get("state") == "running", f"c/{kind}: resume {wr:.3f} s: " +
                      ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("pid",)) + f"; steps {fmt_steps(steps)}")
                r["resume"] = {"wall_s": wr, "reply": s, "steps": steps}
                verify(app)
                r["verified"] = True
            except Exception as e:  # noqa: BLE001
                r["error"] = str(e)[-3000:]
                run.res["errors"].append(f"c/{kind}: {str(e)[:3000]}")
                log(f"  FAILED c/{kind}: {e}")
                if proc_state(app.pid) is None:
                    break
            finally:
                if os.path.exists(img):
                    os.unlink(img)
                umount(mnt)
                run.save()
        if "d" in run.parts:
            part_d(run, app)
    except Exception as e:  # noqa: BLE001
        run.res["errors"].append(f"c: {str(e)[:3000]}")
        log(f"  FAILED c: {e}")
    finally:
        run.kill_all()
        for kind in KINDS:
            umount(MOUNT[kind])
        run.save()


def part_d(run, app=None):
    a = run.a
    res = run.res.setdefault("d", {"dense_gib": a.dense_gib})
    if not run.allow(f"d: the image pool, {a.dense_gib} GiB", 5 + a.dense_gib * (0.3 if app else 0.8)):
        return
    log(f"== d: warmctl suspend/resume through the daemon's pinned image pool ({a.dense_gib} GiB dense)")
    own = app is None
    try:
        if own:
            app = vram_app(run, a.dense_gib, True)
        rounds = []
        for i in range(2):
            j, ws = warmctl(run, "suspend", str(app.pid), "--timeout", "120")
            s, steps = summarize_reply(j)
            check(s.get("path") == "fast" and s.get("image") == "memory",
                  f"d: suspend into the pool {ws:.3f} s; steps {fmt_steps(steps)}")
            j, wr = warmctl(run, "resume", str(app.pid))
            s2, steps2 = summarize_reply(j)
            check(s2.get("state") == "running", f"d: resume from the pool {wr:.3f} s: " +
                  ", ".join(f"{k} {v}" for k, v in s2.items() if k != "pid") + f"; steps {fmt_steps(steps2)}")
            rounds.append({"suspend_s": ws, "resume_s": wr, "resume_reply": s2, "resume_steps": steps2})
            if run.left() < 10:
                break
        verify(app)
        res["rounds"] = rounds
        res["resume_s"] = min(x["resume_s"] for x in rounds)
        res["verified"] = True
    except Exception as e:  # noqa: BLE001
        res["error"] = str(e)[-3000:]
        run.res["errors"].append(f"d: {str(e)[:3000]}")
        log(f"  FAILED d: {e}")
    finally:
        if own:
            run.kill_all()
        run.save()


# ------------------------------------------------------------------------------------------------
# Report


def g(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def rows(res):
    """(part, what, stack, tmpfs, dump_s, restore_s, first_token_s, baseline restore (or first token) s)"""
    out = []
    a = res.get("a", {})
    for stack in ("gpuwarm", "baseline"):
        if g(a, stack, "restore"):
            out.append(("a", "model server", stack, a.get("tmpfs"), g(a, stack, "dump", "wall_s"),
                        g(a, stack, "restore", "wall_s"), g(a, stack, "restore", "to_first_token_s"),
                        g(a, "baseline", "restore", "to_first_token_s") if stack == "gpuwarm" else None))
        for key in sorted(k for k in g(a, stack) or {} if k.startswith("restore_thp_")):
            out.append(("a", f"model server, THP {key[len('restore_thp_'):]}", stack, a.get("tmpfs"), None,
                        g(a, stack, key, "wall_s"), g(a, stack, key, "to_first_token_s"),
                        g(a, "baseline", "restore", "to_first_token_s")))
    b = res.get("b", {})
    for kind in KINDS:
        for stack in ("gpuwarm", "baseline"):
            if g(b, kind, stack, "restore"):
                out.append(("b", f"{b.get('dense_gib')} GiB dense", stack, kind, g(b, kind, stack, "dump", "wall_s"),
                            g(b, kind, stack, "restore", "wall_s"), None,
                            g(b, kind, "baseline", "restore", "wall_s") if stack == "gpuwarm" else None))
            if g(b, kind, stack, "cached", "restore"):
                out.append(("b", f"{b.get('dense_gib')} GiB dense, RAM cache", stack, kind,
                            g(b, kind, stack, "cached", "dump", "wall_s"),
                            g(b, kind, stack, "cached", "restore", "wall_s"), None,
                            g(b, kind, "baseline", "restore", "wall_s")))
    c = res.get("c", {})
    for kind in KINDS:
        if g(c, kind, "resume"):
            out.append(("c", f"{c.get('dense_gib')} GiB warmctl --image", "gpuwarm", kind,
                        g(c, kind, "suspend", "wall_s"), g(c, kind, "resume", "wall_s"), None,
                        g(b, kind, "baseline", "restore", "wall_s")))
    d = res.get("d", {})
    if d.get("resume_s"):
        out.append(("d", f"{d.get('dense_gib')} GiB image pool", "gpuwarm", "-", None, d["resume_s"], None,
                    g(b, "plain", "baseline", "restore", "wall_s")))
    return out


def fs(x, w=8):
    return f"{x:{w}.3f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"


def report(res):
    print()
    cc = res.get("cuda_checkpoint", {})
    print(f"{res.get('gpu', '')}; {res.get('criu_version', '')}; baseline cuda-checkpoint: "
          f"{cc.get('kind')} ({cc.get('path')})")
    print("Baseline = CRIU + cuda_plugin + cuda-checkpoint, app without the shim, same run. "
          "x = baseline / gpuwarm (restore -> first token for a; criu restore for b; "
          "c, d: against b's baseline restore on the same tmpfs kind / plain).")
    hdr = f"{'part':4} {'what':26} {'stack':8} {'tmpfs':6} | {'dump s':>8} {'restore s':>9} {'->token s':>9} | {'x':>6}"
    print(hdr)
    print("-" * len(hdr))
    for part, what, stack, kind, dump_s, rest_s, tok, base in rows(res):
        ours = tok if part == "a" else rest_s
        ratio = f"{base / ours:5.1f}x" if base and ours else f"{'-':>6}"
        print(f"{part:4} {what:26} {stack:8} {str(kind):6} | {fs(dump_s)} {fs(rest_s, 9)} {fs(tok, 9)} | {ratio}")
    a = res.get("a", {})
    for stack in ("gpuwarm", "baseline"):
        rl = g(a, stack, "restore", "log")
        if rl:
            print(f"a/{stack} CRIU restore phases (ms, from its -v4 log): " +
                  ", ".join(f"{k} {v:.0f}" for k, v in rl.get("phases_ms", {}).items()))
            if rl.get("gpuwarm_resume_devices_late"):
                print("  gpuwarm RESUME_DEVICES_LATE entry -> return: " +
                      ", ".join(f"pid {h['pid']} {h['ms']:.1f} ms" for h in rl["gpuwarm_resume_devices_late"]))
            if "late_hooks_ms" in rl:
                print(f"  late-hook stage (all plugins' RESUME_DEVICES_LATE): {rl['late_hooks_ms']:.0f} ms")
            st = g(a, stack, "restore", "stats")
            if st:
                print("  --display-stats: " + ", ".join(f"{k} {v}" for k, v in st.items()))
        for op in ("dump", "restore"):
            calls = g(a, stack, op, "cuda_checkpoint_calls")
            if calls:
                print(f"  a/{stack} {op}: cuda-checkpoint calls: " + ", ".join(
                    f"{c.get('call') or c.get('args', '').split(' --pid')[0]} "
                    f"{c['wall_ms'] if 'wall_ms' in c else c['load_ms'] + c['cuinit_ms'] + c['call_ms']:.0f} ms"
                    + (f" (cuInit {c['cuinit_ms']:.0f})" if "cuinit_ms" in c else "") for c in calls))
        if g(a, stack, "cold"):
            print(f"  a/{stack} cold start -> first token {a[stack]['cold']['first_token_s']:.2f} s")
    for kind in KINDS:
        for op in ("suspend", "resume"):
            rep = g(res, "c", kind, op, "reply")
            if rep:
                print(f"c/{kind} {op}: copy_gb_per_s {rep.get('copy_gb_per_s')}, file_io_ms {rep.get('file_io_ms')}, "
                      f"file_writes {rep.get('file_writes')}; steps {fmt_steps(g(res, 'c', kind, op, 'steps') or [])}")
    if res.get("skipped"):
        print("SKIPPED: " + "; ".join(res["skipped"]))
    if res.get("errors"):
        print("ERRORS:")
        for e in res["errors"]:
            print("  " + e.splitlines()[0][:300])


def plot(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"WARNING: no plot ({e}); restore.json has every number")
        return
    rs = rows(res)
    if not rs:
        print("(nothing to plot)")
        return
    short = {"a": "a: model server\nrestore->1st token", "b": "b: {g} dense\ncriu", "c": "c: {g} dense\nwarmctl --image",
             "d": "d: {g} dense\nimage pool"}
    by = {}
    main = {}  # (part, kind) -> the key of the part's own row (not a variant)
    for part, what, stack, kind, dump_s, rest_s, tok, _ in rs:
        variant = what.split(", ", 1)[1] if ", " in what else ""
        key = (part, variant, kind)
        lab = short[part].format(g=what.split(" dense")[0].split(" warmctl")[0].split(" image")[0]) + \
            (f"\n{variant}" if variant else "") + ("" if kind in (None, "-") else f"\n{kind} tmpfs")
        e = by.setdefault(key, {"label": lab})
        e[stack] = (dump_s, tok if part == "a" else rest_s)
        if not variant:
            main[(part, kind)] = key
    # variants (THP, RAM cache) show their part's baseline, c and d part b's on the same tmpfs
    # kind: hatched
    for (part, variant, kind), e in by.items():
        if "baseline" in e:
            continue
        src = main.get(("b", kind if part == "c" else "plain")) if part in ("c", "d") else \
            main.get((part, kind))
        b = by.get(src, {}).get("baseline")
        if b:
            e["baseline_b"] = b
    keys = list(by)
    fig, axes = plt.subplots(2, 1, figsize=(max(9, 1.3 * len(keys) + 3), 9))
    for ax, idx, title in ((axes[0], 1, "restore (a: restore -> first token)"),
                           (axes[1], 0, "dump / suspend")):
        xs = range(len(keys))
        ours = [by[k].get("gpuwarm", (None, None))[idx] or 0 for k in keys]
        base = [(by[k].get("baseline") or by[k].get("baseline_b") or (None, None))[idx] or 0 for k in keys]
        hatch = ["//" if "baseline_b" in by[k] else "" for k in keys]
        ax.bar([x - 0.2 for x in xs], ours, 0.4, label="gpu-warmd: gpuwarm_plugin + shim")
        bars = ax.bar([x + 0.2 for x in xs], base, 0.4,
                      label="CRIU cuda_plugin + cuda-checkpoint, no shim\n(hatched: the part's own or "
                            "part b's, same tmpfs)")
        for bar, h in zip(bars, hatch):
            bar.set_hatch(h)
        for x, o, b in zip(xs, ours, base):
            if o:
                ax.text(x - 0.2, o, f"{o:.2f}", ha="center", va="bottom", fontsize=7)
            if b:
                ax.text(x + 0.2, b, f"{b:.2f}", ha="center", va="bottom", fontsize=7)
        if idx == 1:
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        top = max(ours + base + [1.0])
        ax.set_ylim(top=top * 6)  # room for the legend above the bars
        ax.set_xticks(list(xs))
        ax.set_xticklabels([by[k]["label"] for k in keys], fontsize=7)
        ax.set_ylabel("seconds (log)")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Restore through CRIU 4.2.1, same run: {res.get('gpu', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


# ------------------------------------------------------------------------------------------------


def estimates(a, parts):
    """Rough seconds per part, from H100 numbers (README, criu-suite.log): model server cold start
    ~25 s; driver checkpoint ~0.75 s/GiB, restore ~0.25 s/GiB; CRIU page images ~0.5 s/GiB
    written, ~0.4 s/GiB read; fast path file write ~0.35 s/GiB, refill ~0.1 s/GiB."""
    kv, d, base = a.kv_gib, a.dense_gib, not a.skip_baseline
    srv = kv + 3 + 3  # VRAM (KV + weights + torch's own) + host memory
    out = {"daemon": 5 + (d * 0.6 if "d" in parts else 0)}
    if "a" in parts:
        out["a"] = 35 + 3 * 0.4 + 5 + (35 + srv * (0.75 + 0.5 + 0.4 + 0.25) if base else 0)
    v = d * 0.2  # gw-vram-app's verify after each restore (1 GiB in 0.2 s on the H100)
    if "b" in parts:
        out["b"] = 2 * (5 + d * 0.5) + 2 * (3 + d * 0.45 + v) + (2 * (3 + d * 1.9 + v) if base else 0)
    if "c" in parts:
        out["c"] = 5 + d * 0.5 + 2 * (2 + d * 0.6 + v)
    if "d" in parts:
        out["d"] = 2 + d * 0.3 + v + (0 if "c" in parts else 5 + d * 0.5)
    return out


def plugin_dir(run, stack, given, so):
    if given:
        d = given
    else:
        d = f"{run.work}/plugins-{stack}"
        os.makedirs(d, exist_ok=True)
        if so:
            dst = f"{d}/{os.path.basename(so)}"
            if not os.path.exists(dst):
                shutil.copy(so, dst)
    sos = sorted(f for f in os.listdir(d) if f.endswith(".so"))
    want = "gpuwarm_plugin.so" if stack == "gpuwarm" else "cuda_plugin.so"
    if sos != [want]:
        raise Failure(f"plugin dir {d} for {stack} must hold exactly {want}, holds {sos}")
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build")
    ap.add_argument("out")
    ap.add_argument("--criu-root", required=True, help="where the criu debs were unpacked (dpkg -x)")
    ap.add_argument("--plugins-gpuwarm", help="dir holding only gpuwarm_plugin.so (default: made from BUILD)")
    ap.add_argument("--plugins-cuda", help="dir holding only cuda_plugin.so")
    ap.add_argument("--cuda-plugin", help="CRIU's cuda_plugin.so (when --plugins-cuda is not given)")
    ap.add_argument("--cuda-checkpoint", help="NVIDIA's cuda-checkpoint (default: searched)")
    ap.add_argument("--only", default="a,b,c,d", help="parts, comma-separated (default a,b,c,d)")
    ap.add_argument("--skip-baseline", action="store_true", help="no cuda_plugin runs")
    ap.add_argument("--kv-gib", type=float, default=16, help="model server KV pool (default 16)")
    ap.add_argument("--dense-gib", type=float, default=16, help="dense data for b, c, d (default 16)")
    ap.add_argument("--budget-s", type=float, default=420,
                    help="seconds for the whole run; a part or step that would not fit in what is left is "
                         "skipped and named (default 420)")
    ap.add_argument("--tmpfs-gib", type=int, default=40, help="tmpfs size (raised when a part needs more)")
    ap.add_argument("--a-tmpfs", choices=KINDS, default="plain", help="tmpfs kind for part a's images")
    ap.add_argument("--cache", action="store_true",
                    help="gpu-warmd with a RAM image cache (--image-cache-mib, as large as the pool); "
                         "part b restores from the files (cache dropped) and again from the cache")
    ap.add_argument("--a-thp-again", default="",
                    help="part a, gpu-warmd: restore the same images again with the host's transparent "
                         "huge pages set to each mode listed (always, madvise, never; always+defrag "
                         "also sets defrag to always), then put back")
    ap.add_argument("--a-memscan", action="store_true",
                    help="part a: list the host memory CRIU dumps (running, suspended, restored)")
    ap.add_argument("--server-script", default=os.path.join(HERE, "..", "workloads", "model_server.py"))
    ap.add_argument("--server-args", default="", help="extra model_server.py arguments")
    a = ap.parse_args()
    a.server_script = os.path.abspath(a.server_script)
    parts = [p.strip() for p in a.only.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("a", "b", "c", "d")]
    if bad:
        ap.error(f"--only: unknown part(s) {bad}")
    if os.geteuid() != 0:
        print("restore.py: needs root (criu, mount)", file=sys.stderr)
        return 2
    build = os.path.abspath(a.build)
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    become_subreaper()
    work = tempfile.mkdtemp(prefix="gw-restore-", dir="/dev/shm")
    run = Run(a, build, out, work)
    run.parts = parts
    run.res["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else ""
    run.criu = CriuRunner(run, a.criu_root)
    run.res["criu_version"] = run.criu.version.replace("\n", " ")
    log(f"== {run.res['gpu']}; criu: {run.res['criu_version']}; parts {','.join(parts)}; budget {a.budget_s:.0f} s")
    run.plugin_dirs = {"gpuwarm": plugin_dir(run, "gpuwarm", a.plugins_gpuwarm, f"{build}/plugin-shim/gpuwarm_plugin.so")}
    if not a.skip_baseline and any(p in parts for p in ("a", "b")):
        if not (a.plugins_cuda or a.cuda_plugin):
            ap.error("the baseline needs --plugins-cuda or --cuda-plugin (or --skip-baseline)")
        run.plugin_dirs["baseline"] = plugin_dir(run, "baseline", a.plugins_cuda, a.cuda_plugin)
        try:
            setup_cuda_checkpoint(run)
        except Failure as e:
            log(f"== NO BASELINE: {e}")
            run.res["errors"].append(f"baseline: {e}")
            run.res["cuda_checkpoint"] = {"kind": "none"}
            a.skip_baseline = True
    else:
        run.res["cuda_checkpoint"] = {"kind": "not used"}
    run.res["plugin_dirs"] = run.plugin_dirs
    plan = estimates(a, parts)
    run.res["plan_estimate_s"] = plan
    log("== plan (rough estimates, s): " + ", ".join(f"{k} {v:.0f}" for k, v in plan.items()) +
        f"; total ~{sum(plan.values()):.0f} of --budget-s {a.budget_s:.0f}")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        pool = int(a.dense_gib * 1024) + 512 if "d" in parts else 0
        if a.cache:
            pool = max(pool, int(a.dense_gib * 1024) + 1024)
        start_daemon(run, pool, cache_mib=pool if a.cache else 0)
        for p in ("a", "b", "c", "d"):
            if p not in parts or (p == "d" and "c" in parts):  # d runs inside c, on c's app
                continue
            try:
                {"a": part_a, "b": part_b, "c": part_c, "d": part_d}[p](run)
            except Exception as e:  # noqa: BLE001
                run.res["errors"].append(f"{p}: {str(e)[:3000]}")
                log(f"== FAILED part {p}: {e}")
                run.kill_all()
                for kind in KINDS:
                    umount(MOUNT[kind])
    except KeyboardInterrupt:
        run.res["errors"].append("interrupted")
        log("== interrupted")
    except Exception as e:  # noqa: BLE001
        run.res["errors"].append(f"run: {str(e)[:3000]}")
        log(f"== FAILED: {e}")
    finally:
        run.kill_all()
        stop_daemon(run)
        for kind in KINDS:
            umount(MOUNT[kind])
        run.save()
    report(run.res)
    plot(run.res, f"{out}/restore.png")
    run.save()
    shutil.rmtree(work, ignore_errors=True)
    print(f"RESTORE BENCH DONE in {time.monotonic() - run.t0:.0f} s: {out}/restore.json"
          f"{' (with errors)' if run.res['errors'] else ''}")
    return 1 if run.res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
