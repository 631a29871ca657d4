#!/usr/bin/env python3
"""CRIU suite on the GPU machine (as root): criu dump/restore of CUDA processes with our plugin.

For each size: (a) criu + gpuwarm_plugin with gpu-warmd running (the daemon makes the driver's
checkpoint calls), (b) what the upstream flow does without our plugin: a fresh process toggles
the driver (gw-ckpt-fresh, like cuda-checkpoint) around a plugin-less criu. Also a parent+child
pair that both use CUDA, and a dump with the daemon stopped (the plugin's fallback). Every
process verifies its VRAM after the restore and keeps running.

usage: criu_suite.py BUILD CRIU_ROOT [--sizes 4,16] [--json OUT]
  CRIU_ROOT: where Debian 13's criu debs were unpacked (dpkg -x), e.g. /opt/criu
"""
import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def daemon_wrap():
    """$GW_DAEMON_WRAP: a command the daemon runs under (e.g. setpriv with the unit's bounding set)."""
    import shlex
    return shlex.split(os.environ.get("GW_DAEMON_WRAP", ""))


def print_caps(pid):
    """The daemon's capability sets, to show what it ran with."""
    time.sleep(0.3)  # a wrapper (setpriv) has exec'd the daemon by now
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(("CapBnd", "CapEff", "Name")):
                print("daemon", line.strip())
    except OSError as e:
        print(f"daemon capabilities unknown: {e}")


class Failure(Exception):
    pass


def become_subreaper():
    """Orphans of the processes we start (a killed parent's child, what `criu restore -d` leaves
    behind) become our children, so we can reap them: a zombie keeps its pid, and criu restore
    cannot fork a task whose pid is taken."""
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def check(cond, what):
    if not cond:
        raise Failure(what)
    print(f"  ok: {what}", flush=True)


def wait_for(path, text, timeout, start=0):
    """Wait until file path contains text after offset start; return the matching line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                f.seek(start)
                for line in f.read().splitlines():
                    if text in line:
                        return line
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise Failure(f"{path}: no line with {text!r} within {timeout} s")


class App:
    """gw-vram-app started the way criu can dump it: own session, no pipes to us."""

    def __init__(self, build, workdir, mib, extra=(), env=None):
        self.log = f"{workdir}/app-{time.monotonic_ns()}.log"
        with open(self.log, "w") as out:
            p = subprocess.Popen([f"{build}/tests/apps/gw-vram-app", "--mib", str(mib),
                                  "--chunk-mib", "256", *extra], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=out, env=env, start_new_session=True)
        self.popen = p
        line = wait_for(self.log, "ready pid", 120)
        self.pid = int(line.split()[2])

    def verify(self, expect=1, timeout=120):
        start = os.path.getsize(self.log)
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log) as f:
                f.seek(start)
                lines = [l for l in f.read().splitlines() if l.startswith("verify ")]
            if len(lines) >= expect:
                return lines
            time.sleep(0.05)
        raise Failure(f"no verify line from pid {self.pid}")

    def kill(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(5)
        except Exception:
            pass
        time.sleep(0.1)
        reap()


class Criu:
    def __init__(self, root):
        self.bin = f"{root}/usr/sbin/criu"
        self.env = dict(os.environ)
        self.env["LD_LIBRARY_PATH"] = f"{root}/usr/lib/x86_64-linux-gnu:" + self.env.get("LD_LIBRARY_PATH", "")

    def run(self, *args, log=None):
        t = time.monotonic()
        p = subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True, timeout=300)
        wall = time.monotonic() - t
        if p.returncode != 0:
            tail = ""
            if log and os.path.exists(log):
                tail = "".join(open(log).readlines()[-25:])
            raise Failure(f"criu {' '.join(args[:1])} failed ({p.returncode}): {p.stderr.strip()}\n{tail}")
        return wall


def dump_restore(criu, app, images, plugin_dir, tag):
    pid = app.pid
    shutil.rmtree(images, ignore_errors=True)
    os.makedirs(images)
    dump_log, restore_log = f"{images}/dump.log", f"{images}/restore.log"
    td = criu.run("dump", "-t", str(pid), "-D", images, "-L", plugin_dir, "-v4", "-o", dump_log,
                  log=dump_log)
    app.popen.wait(30)  # criu killed the tree: reap it, or its pids stay taken and restore cannot fork
    time.sleep(0.1)
    reap()
    size = sum(os.path.getsize(os.path.join(images, f)) for f in os.listdir(images)
               if f.startswith("pages-"))
    tr = criu.run("restore", "-d", "-D", images, "-L", plugin_dir, "-v4", "-o", restore_log,
                  log=restore_log)
    print(f"  {tag}: criu dump {td:.3f} s, restore {tr:.3f} s, page images {size / 2**30:.2f} GiB",
          flush=True)
    return td, tr, size, dump_log, restore_log


def fast_stage(criu, build, work, plugin_dir, sock, gib):
    """A process under the shim: the plugin has gpu-warmd move its VRAM out at PAUSE_DEVICES,
    claims the agent's connection, and has it mapped back at RESUME_DEVICES_LATE."""
    mib = int(gib * 1024)
    print(f"== {gib} GiB under the shim: criu + gpuwarm plugin, fast path")
    env = dict(os.environ, LD_PRELOAD=f"{build}/client/shim/libgpuwarm-shim.so", GPUWARM_SOCKET=sock)
    app = App(build, work, mib, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = json.loads(subprocess.run([f"{build}/client/warmctl", "--socket", sock, "--json", "status"],
                                           capture_output=True, text=True).stdout)
            procs = [p for p in st["result"]["processes"] if p["pid"] == app.pid]
            if procs and procs[0]["vram_bytes"] >= mib << 20:
                break
            time.sleep(0.2)
        check(procs and procs[0]["vram_bytes"] >= mib << 20, "the app's agent registered its VRAM")
        td, tr, size, dl, rl = dump_restore(criu, app, f"{work}/img-fast-{mib}", plugin_dir, "fast")
        text = open(dl).read()
        check("fast path" in text, "criu's dump log: " + next(l.strip() for l in text.splitlines() if "fast path" in l))
        check(size < 2 * 2**30, f"page images hold no VRAM: {size / 2**20:.0f} MiB for {mib} MiB of VRAM")
        lines = app.verify()
        check(lines[0].startswith("verify ok"), f"restored process verified its VRAM: {lines[0]}")
        lines = app.verify()
        check(lines[0].startswith("verify ok"), "and keeps running (second verify ok)")
        return {"gib": gib, "dump_s": td, "restore_s": tr, "page_bytes": size}
    finally:
        app.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("criu_root")
    ap.add_argument("--sizes", default="4,16")
    ap.add_argument("--fast-gib", type=float, default=0,
                    help="also dump/restore a process of this size under the shim (fast path)")
    ap.add_argument("--only-fast", action="store_true", help="skip the driver-path stages")
    ap.add_argument("--json")
    a = ap.parse_args()
    become_subreaper()
    build = os.path.abspath(a.build)
    plugin_dir = f"{build}/plugin-shim"
    empty_dir = tempfile.mkdtemp(prefix="gw-noplugin-")
    work = tempfile.mkdtemp(prefix="gw-criu-", dir="/dev/shm")
    sock = f"{work}/gpu-warmd.sock"
    os.environ["GPUWARM_SOCKET"] = sock  # for the plugin, inside criu
    criu = Criu(a.criu_root)
    print(subprocess.run([criu.bin, "--version"], env=criu.env, capture_output=True, text=True).stdout.strip())
    results = {"sizes": {}}
    dlog = open(f"{work}/daemon.log", "w")
    pool = int(a.fast_gib * 1024) + 512 if a.fast_gib else 0
    daemon = subprocess.Popen(daemon_wrap() + [f"{build}/daemon/gpu-warmd", "--socket", sock, "--staging-mib", "64",
                               "--image-pool-mib", str(pool)], stdout=dlog, stderr=dlog)
    print_caps(daemon.pid)
    apps = []
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        time.sleep(0.5)
        while pool and "image pool" not in open(f"{work}/daemon.log").read():
            time.sleep(0.2)
        if a.fast_gib:
            results["fast"] = fast_stage(criu, build, work, plugin_dir, sock, a.fast_gib)
        for gib in ([] if a.only_fast else [float(s) for s in a.sizes.split(",")]):
            mib = int(gib * 1024)
            r = {}
            print(f"== {gib} GiB, criu + gpuwarm plugin + gpu-warmd")
            app = App(build, work, mib)
            apps.append(app)
            td, tr, size, dl, rl = dump_restore(criu, app, f"{work}/img-{mib}", plugin_dir, "plugin")
            check("gpuwarm:" in open(dl).read(), "criu's dump log shows the gpuwarm plugin at work")
            lines = app.verify()
            check(lines[0].startswith("verify ok"), f"restored process verified its VRAM: {lines[0]}")
            lines = app.verify()
            check(lines[0].startswith("verify ok"), "and keeps running (second verify ok)")
            r["plugin"] = {"dump_s": td, "restore_s": tr, "page_bytes": size}
            app.kill()

            print(f"== {gib} GiB, fresh-process driver toggle around a plugin-less criu")
            app = App(build, work, mib)
            apps.append(app)
            t = time.monotonic()
            subprocess.run([f"{build}/tests/bench/gw-ckpt-fresh", "suspend", str(app.pid)], check=True,
                           capture_output=True)
            toggle_out = time.monotonic() - t
            td, tr, size, dl, rl = dump_restore(criu, app, f"{work}/img-fresh-{mib}", empty_dir, "fresh toggle")
            t = time.monotonic()
            subprocess.run([f"{build}/tests/bench/gw-ckpt-fresh", "resume", str(app.pid)], check=True,
                           capture_output=True)
            toggle_in = time.monotonic() - t
            lines = app.verify()
            check(lines[0].startswith("verify ok"), f"restored process verified its VRAM: {lines[0]}")
            r["fresh_toggle"] = {"dump_s": td + toggle_out, "restore_s": tr + toggle_in, "page_bytes": size,
                                 "toggle_out_s": toggle_out, "toggle_in_s": toggle_in}
            app.kill()
            results["sizes"][str(gib)] = r
            print(f"  {gib} GiB: plugin dump {r['plugin']['dump_s']:.2f} s restore {r['plugin']['restore_s']:.2f} s | "
                  f"fresh toggle + criu dump {r['fresh_toggle']['dump_s']:.2f} s restore {r['fresh_toggle']['restore_s']:.2f} s")

        if a.only_fast:
            raise StopIteration
        print("== parent + child, both CUDA, one criu dump of the tree")
        app = App(build, work, 1024, ["--spawn-child"])
        apps.append(app)
        wait_for(app.log, "child pid", 60)
        wait_for(app.log, "ready pid", 60)
        time.sleep(1)
        dump_restore(criu, app, f"{work}/img-tree", plugin_dir, "tree")
        lines = app.verify(expect=2)
        check(all(l.startswith("verify ok") for l in lines[:2]), f"both processes verified: {lines[:2]}")
        app.kill()

        print("== daemon stopped: the plugin's fallback")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        app = App(build, work, 1024)
        apps.append(app)
        td, tr, size, dl, rl = dump_restore(criu, app, f"{work}/img-fallback", plugin_dir, "fallback")
        text = open(dl).read()
        fb = [l for l in text.splitlines() if "using the driver directly" in l]
        check(bool(fb), f"criu's log says so: {fb[0].strip() if fb else ''}")
        lines = app.verify()
        check(lines[0].startswith("verify ok"), f"restored process verified its VRAM: {lines[0]}")
        results["fallback"] = {"dump_s": td, "restore_s": tr}
        app.kill()
    except StopIteration:
        pass
    finally:
        for app in apps:
            app.kill()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                print("gpu-warmd did not stop within 30 s of SIGTERM; its log ends:")
                print("".join(open(f"{work}/daemon.log").readlines()[-40:]))
                try:
                    print(open(f"/proc/{daemon.pid}/stack").read())
                except OSError:
                    pass
                for t in os.listdir(f"/proc/{daemon.pid}/task"):
                    try:
                        print(t, open(f"/proc/{daemon.pid}/task/{t}/wchan").read(),
                              open(f"/proc/{daemon.pid}/task/{t}/stat").read().split()[2])
                    except OSError:
                        pass
                daemon.kill()
                raise
    if a.json:
        json.dump(results, open(a.json, "w"), indent=1)
    print("CRIU SUITE PASSED")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"CRIU SUITE FAILED: {e}", flush=True)
        sys.exit(1)
