#!/usr/bin/env python3
"""The podman model-server benchmark on the GPU machine (as root, no network, no systemd): time
from a container's start, or from `podman container restore`, to a healthy model server and to
its first token, for four stacks on one container image and one model server
(tests/workloads/model_server.py, Qwen2-1.5B-shaped, --kv-cache-gib 24 by default):

  cold    podman run -> /health 200 -> first completion (no checkpoint);
  seeds   CRIU 4.2 + NVIDIA's cuda_plugin.so (built from CRIU's source; the only plugin in CRIU's
          plugin directory) + cuda-checkpoint (found in PATH and the usual places, or given;
          else BUILD/tests/bench/gw-ckpt-fresh stands in for it, and the JSON says so);
  driver  gpuwarm_plugin.so, gpu-warmd running, the server without the shim (the daemon makes
          the driver's checkpoint calls);
  fast    gpuwarm_plugin.so, the server started with the CDI device
          `--device gpu-warmd.dev/gpuwarm=shim` (the spec written by `warmctl cdi` into a CDI
          directory podman reads): its VRAM goes through gpu-warmd's fast path into the
          checkpoint's VRAM image; --fast-util-09 adds the same at --gpu-memory-utilization 0.9
          ("fast-util09": a KV pool of 90 % of the GPU, of which the image holds only the data;
          "fast-mounts": the shim given by hand, a mount of the build directory and LD_PRELOAD,
          GPUWARM_SOCKET set, instead of the CDI device);
  fast-store  the fast stack with gpu-warmd --vram-store (a directory on tmpfs): the
          checkpoint links its VRAM data and CRIU's page images there, so the exported archive
          holds CRIU's small images and the links only, and --import unpacks that much.

Every checkpointed stack: the golden checkpoint by tools/gw-golden-checkpoint (--export to an
archive on tmpfs, --keep), then tools/gw-podman-restore in place -> first token, then --import
of the archive -> first token; the greedy output is compared with the cold run's. The set-up
(podman and criu from dpkg -x'd debs, the offline image, the container's mounts) is
tests/gpu/podman_suite.py's. A failure of podman or CRIU prints the command, its stderr's tail
and CRIU's log's tail; the stack is marked failed and the next one runs.

usage: podman-model.py BUILD CRIU_ROOT PODMAN_ROOT --out DIR [--only STACK[,STACK]] [...]
       podman-model.py --merge A.json [B.json ...] --out DIR     (one JSON + one PNG, ratios)
       podman-model.py [BUILD CRIU_ROOT PODMAN_ROOT] --self-check  (no GPU needed)
"""
import argparse
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "gpu"))
sys.path.insert(0, os.path.join(SRC, "tools"))
import podman_suite as ps  # noqa: E402
from thp import thp_get, thp_restore, thp_set  # noqa: E402

STACKS = ("cold", "seeds", "driver", "fast", "fast-util09", "fast-mounts", "fast-store")
FAST_BOUNDED = ("fast", "fast-store")  # the stacks the time targets apply to
TOOLS = os.path.join(SRC, "tools")
SERVER = "/gw/src/tests/workloads/model_server.py"
CDI_DEVICE = "gpu-warmd.dev/gpuwarm=shim"
DEFAULT_CDI_DIR = "/var/run/cdi"
PROMPT = "The quick brown fox jumps over the lazy dog. Checkpoint me, restore me, then"
CC_PLACES = ["/usr/bin", "/usr/local/bin", "/usr/sbin", "/usr/local/cuda/bin", "/usr/local/cuda-*/bin",
             "/usr/local/nvidia/bin", "/usr/lib/nvidia/bin", "/opt/nvidia/bin", "/opt/cuda/bin"]
# The acceptance bounds the merge step checks.
FAST_INPLACE_MAX_S, FAST_IMPORT_MAX_S, VS_SEEDS_MIN, VS_COLD_MIN = 2.0, 3.0, 5.0, 10.0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build", nargs="?", help="the meson build directory")
    ap.add_argument("criu_root", nargs="?", help="criu 4.2's debs unpacked (dpkg -x)")
    ap.add_argument("podman_root", nargs="?", help="podman's debs unpacked (dpkg -x)")
    ap.add_argument("--out", help="results: podman-model.json (+ .png with --merge), logs")
    ap.add_argument("--only", default="cold,seeds,driver,fast",
                    help=f"stacks to run, comma-separated, of {','.join(STACKS)} "
                         "(default cold,seeds,driver,fast)")
    ap.add_argument("--fast-util-09", action="store_true",
                    help="also the fast path at --gpu-memory-utilization 0.9 (fast-util09)")
    ap.add_argument("--kv-cache-gib", type=float, default=24, help="KV pool (default 24 GiB)")
    ap.add_argument("--server-args", default="", help="more model_server.py options")
    ap.add_argument("--cdi-spec", help="use this CDI spec instead of the one `warmctl cdi` writes")
    ap.add_argument("--port", type=int, default=8000, help="the server's port (default 8000)")
    ap.add_argument("--max-tokens", type=int, default=16, help="the completion's tokens")
    ap.add_argument("--repeat", type=int, default=1, help="restores of each kind (default 1)")
    ap.add_argument("--thp", metavar="MODE",
                    help="the host's transparent huge pages for the whole run, every stack and "
                         "the cold start alike: always, madvise, never; always+defrag also "
                         "sets defrag to always (put back at the end)")
    ap.add_argument("--net-checks", action="store_true",
                    help="after the stacks, podman's network flags on a fast-store container: a "
                         "TCP connection open at the checkpoint, without and with "
                         "--tcp-established, and --import with --ignore-static-ip/--mac")
    ap.add_argument("--cuda-plugin", help="CRIU's cuda_plugin.so for the seeds' stack "
                                          "(default: CARRY/cuda-plugin/cuda_plugin.so)")
    ap.add_argument("--cuda-checkpoint", help="NVIDIA's cuda-checkpoint (default: PATH's, or "
                                              "the usual places, else gw-ckpt-fresh)")
    ap.add_argument("--carry-lib", help="libraries the machine lacks (default BUILD/../.device-carry/lib)")
    ap.add_argument("--budget-s", type=float, default=0,
                    help="start no stack after this many seconds (0: no limit)")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="merge these results into --out/podman-model.json and .png")
    ap.add_argument("--self-check", action="store_true",
                    help="check arguments, tools and environment; run nothing on a GPU")
    a = ap.parse_args(argv)
    a.stacks = [s for s in a.only.split(",") if s]
    bad = [s for s in a.stacks if s not in STACKS]
    if bad:
        ap.error(f"--only: unknown stack(s) {','.join(bad)} (of {','.join(STACKS)})")
    if a.fast_util_09 and "fast-util09" not in a.stacks:
        a.stacks.append("fast-util09")
    if a.merge:
        if not a.out:
            ap.error("--merge needs --out")
    elif not a.self_check and not (a.build and a.criu_root and a.podman_root and a.out):
        ap.error("BUILD CRIU_ROOT PODMAN_ROOT and --out are needed to run")
    if a.repeat < 1 or a.kv_cache_gib <= 0:
        ap.error("--repeat >= 1 and --kv-cache-gib > 0")
    return a


def server_args(a, stack):
    kv = (["--gpu-memory-utilization", "0.9"] if stack == "fast-util09"
          else ["--kv-cache-gib", f"{a.kv_cache_gib:g}"])
    return ["--port", str(a.port), *kv, *a.server_args.split()]


def find_cuda_checkpoint(explicit):
    cands = [explicit] if explicit else []
    if shutil.which("cuda-checkpoint"):
        cands.append(shutil.which("cuda-checkpoint"))
    for place in CC_PLACES:
        cands += sorted(glob.glob(os.path.join(place, "cuda-checkpoint")))
    for c in cands:
        if c and os.access(c, os.X_OK):
            return os.path.realpath(c)
    return None


class Bench:
    def __init__(self, a):
        self.a = a
        self.build = os.path.abspath(a.build)
        self.carry_lib = os.path.abspath(a.carry_lib or f"{SRC}/.device-carry/lib")
        self.work = tempfile.mkdtemp(prefix="gw-podman-model-", dir="/dev/shm")
        self.exports = f"{self.work}/exports"  # tmpfs
        os.makedirs(self.exports)
        self.setup = ps.Setup(self.build, os.path.abspath(a.criu_root),
                              os.path.abspath(a.podman_root), self.carry_lib, self.work)
        self.res = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "kernel": os.uname().release,
                    "kv_cache_gib": a.kv_cache_gib, "stacks": {}}
        self.daemon = None
        self.daemon_extra = ()
        self.cold_ids = None

    # ---- set-up (podman_suite's) ----
    def set_up(self):
        s = self.setup
        s.libraries()
        self.bindir, self.plugins_gw = s.criu()
        self.plugins_cuda = f"{self.work}/criu-plugins-cuda"
        os.makedirs(self.plugins_cuda)
        cp = self.a.cuda_plugin or f"{SRC}/.device-carry/cuda-plugin/cuda_plugin.so"
        if os.path.exists(cp):
            shutil.copy(cp, self.plugins_cuda)
        self.cc_dir = f"{self.work}/ccbin"
        os.makedirs(self.cc_dir)
        cc = find_cuda_checkpoint(self.a.cuda_checkpoint)
        fresh = f"{self.build}/tests/bench/gw-ckpt-fresh"
        os.symlink(cc or fresh, f"{self.cc_dir}/cuda-checkpoint")
        self.res["cuda_checkpoint"] = {"kind": "nvidia" if cc else "gw-ckpt-fresh stand-in",
                                       "path": cc or fresh}
        self.res["cuda_plugin"] = cp if os.path.exists(cp) else None
        self.cdi_dir = f"{self.work}/cdi"
        os.makedirs(self.cdi_dir)
        self.env = s.podman(ps.cgroups(), cdi_dirs=[self.cdi_dir])
        self.env["PATH"] = f"{self.bindir}:{self.env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        self.podman = ps.Podman(f"{self.setup.podman_root}/usr/bin/podman", self.env)
        for cmd, key in ((["criu", "--version"], "criu"), ([self.podman.bin, "--version"], "podman"),
                         (["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                          "gpu")):
            p = ps.sh(cmd, env=self.env, check_rc=False)
            self.res[key] = (p.stdout + p.stderr).strip().splitlines()[:2]
            log(f"{key}: {self.res[key]}")
        binds = ps.make_image(self.podman, self.work)
        os.makedirs(ps.SOCK_DIR, exist_ok=True)
        self.cargs = ps.container_args(self.build, self.carry_lib, SRC, binds, ps.python_binds(SRC))
        # the CDI spec, as an operator writes it (the shim at the build's path)
        ps.sh([f"{self.build}/client/warmctl", "cdi", "--output", f"{self.cdi_dir}/gpu-warmd.json",
                   "--shim", f"{self.build}/client/shim/libgpuwarm-shim.so"])
        if self.a.cdi_spec:  # another spec to try in its place
            shutil.copy(self.a.cdi_spec, f"{self.cdi_dir}/gpu-warmd.json")
        self.res["cdi_spec"] = json.load(open(f"{self.cdi_dir}/gpu-warmd.json"))
        # and where podman looks by default (/var/run/cdi: specs generated at run time), which is
        # what an operator does with `warmctl cdi --output /var/run/cdi/gpu-warmd.json`
        os.makedirs(DEFAULT_CDI_DIR, exist_ok=True)
        self.cdi_default = f"{DEFAULT_CDI_DIR}/gpu-warmd-bench.json"
        shutil.copy(f"{self.cdi_dir}/gpu-warmd.json", self.cdi_default)

    def plugins(self, stack):
        """CRIU's plugin directory (default.conf's libdir) and criu's PATH for the stack."""
        seeds = stack == "seeds"
        d = self.plugins_cuda if seeds else self.plugins_gw
        self.setup.write(ps.CRIU_CONF, f"# written by tests/bench/podman-model.py\nlibdir {d}\n"
                         + ("" if shutil.which("iptables-restore") else "network-lock skip\n"))
        with open(f"{self.bindir}/criu", "w") as f:  # cuda_plugin execvp()s cuda-checkpoint
            f.write("#!/bin/sh\n"
                    f"export LD_LIBRARY_PATH={self.setup.criu_root}/{ps.LIBDIR}:{self.carry_lib}"
                    "${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\n"
                    + (f"export PATH={self.cc_dir}:$PATH\n" if seeds else "")
                    + f"exec {self.setup.criu_root}/usr/sbin/criu \"$@\"\n")
        os.chmod(f"{self.bindir}/criu", 0o755)
        return os.listdir(d)

    def daemon_for(self, stack):
        want = stack != "cold" and stack != "seeds"
        extra = ("--vram-store", f"{self.work}/vram-store") if stack == "fast-store" else ()
        running = self.daemon and self.daemon.poll() is None
        if running and (not want or extra != self.daemon_extra):
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(30)
            self.daemon, running = None, False
        if want and not running:
            self.daemon = ps.start_daemon(self.build, self.work, extra)
            self.daemon_extra = extra

    # ---- the tools ----
    def tool(self, name, *args, timeout=900):
        cmd = [sys.executable, os.path.join(TOOLS, name), "--podman", self.podman.bin, "--json", *args]
        log(f"$ {' '.join(cmd)}")
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=self.env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"{name} timed out after {timeout} s"}
        try:
            return json.loads(p.stdout)
        except ValueError:
            return {"ok": False, "error": f"{name} exit {p.returncode}: {p.stdout[-2000:]}"}

    def urls(self):
        base = f"http://127.0.0.1:{self.a.port}"
        return base + "/health", base + "/v1/completions"

    def body(self, max_tokens=None):
        return json.dumps({"prompt": PROMPT, "max_tokens": max_tokens or self.a.max_tokens})

    def container_args(self, stack):
        """The fast stacks get the shim and the socket directory from the CDI device alone: the
        container's own mount of the socket directory is left out."""
        if not stack.startswith("fast"):
            return self.cargs
        if stack == "fast-mounts":  # the build directory is mounted at /gw/build
            return self.cargs + ["-e", "LD_PRELOAD=/gw/build/client/shim/libgpuwarm-shim.so",
                                 "-e", f"GPUWARM_SOCKET={ps.SOCK}"]
        out, i = [], 0
        while i < len(self.cargs):
            x = self.cargs[i]
            nxt = self.cargs[i + 1] if i + 1 < len(self.cargs) else ""
            if x == "--mount" and f"destination={ps.SOCK_DIR}," in nxt + ",":
                i += 2
                continue
            out.append(x)
            i += 1
        return out + ["--device", CDI_DEVICE]

    def golden(self, stack, name, checkpoint):
        health, comp = self.urls()
        run_args = shlex.join(self.container_args(stack))
        args = ["--image", ps.IMAGE, "--name", name, "--run-args", run_args, "--health-url", health,
                "--warmup-url", comp, "--warmup-body", self.body(1), "--warmup-body", self.body(),
                "--health-timeout", "600"]
        args += (["--export", f"{self.exports}/{name}.tar", "--compress", "none", "--keep"]
                 if checkpoint else ["--no-checkpoint"])
        return self.tool("gw-golden-checkpoint", *args, "--", sys.executable, SERVER,
                         *server_args(self.a, stack))

    def restore(self, name, archive=None):
        health, comp = self.urls()
        # the first token: a one-token completion's reply; then the warm-up's completion again,
        # whose token ids are compared with the cold start's
        args = ["--name", name, "--health-url", health, "--first-token-url", comp, "--body",
                self.body(1), "--check-body", self.body(), "--repeat", str(self.a.repeat)]
        return self.tool("gw-podman-restore", *args, *(["--import", archive] if archive else []))

    def restore_debug(self, name, archive):
        """A failed restore once more with podman's debug log, and CRIU's and the runtime's logs
        under the work directory: what is needed to tell why."""
        args = ["--log-level=debug", "container", "restore", *(["--import", archive] if archive else []), name]
        p = self.podman.run(*args, check_rc=False, timeout=300)
        out = {"podman_debug_tail": (p.stderr or "")[-6000:]}
        logs = {}
        for root, _, files in os.walk(self.work):
            for f in files:
                if f.endswith(".log") and ("restore" in f or "crun" in f or "criu" in f):
                    path = os.path.join(root, f)
                    try:
                        logs[path] = open(path, errors="replace").read()[-4000:]
                    except OSError:
                        pass
        out["logs"] = logs
        log(f"  restore debug: podman --log-level=debug tail:\n{out['podman_debug_tail'][-3000:]}")
        for path, text in logs.items():
            log(f"  --- {path} (tail):\n{text[-2500:]}")
        return out

    # ---- the stacks ----
    def run_stack(self, stack):
        r = {"ok": False}
        self.res["stacks"][stack] = r
        name = f"gwm-{stack}"
        self.podman.run("rm", "-f", "-t", "0", name, check_rc=False, timeout=120)
        self.daemon_for(stack)
        if stack != "cold":
            r["criu_plugins"] = self.plugins(stack)
        g = r["golden"] = self.golden(stack, name, stack != "cold")
        if not g.get("ok"):
            return self.failed(stack, "golden checkpoint", g)
        ids = g["warmup"][-1]["token_ids"] if g.get("warmup") else None  # the long completion
        if stack == "cold":
            self.cold_ids = ids
            r["ok"] = True
            self.podman.run("rm", "-f", "-t", "0", name, check_rc=False, timeout=120)
            return r
        r["export_bytes"] = g["checkpoint"].get("export_bytes")
        r["inspect"] = self.inspect(f"{self.exports}/{name}.tar")
        for kind, archive in (("inplace", None), ("import", f"{self.exports}/{name}.tar")):
            if kind == "import":
                self.podman.run("rm", "-f", "-t", "0", name, check_rc=False, timeout=120)
            x = r[kind] = self.restore(name, archive)
            if not x.get("ok"):
                x["debug"] = self.restore_debug(name, archive)
                return self.failed(stack, f"restore {kind}", x)
            got = [rd.get("check_token_ids", rd.get("token_ids")) for rd in x["rounds"]]
            want = self.cold_ids if self.cold_ids is not None else ids
            x["same_as_cold"] = all(g_ == want for g_ in got) if want is not None else None
            log(f"  {stack} {kind}: first token {x['summary']['time_to_first_token_s']['median']:.2f} s"
                f", output {'identical' if x['same_as_cold'] else 'DIFFERENT'}")
        self.podman.run("rm", "-f", "-t", "0", name, check_rc=False, timeout=120)
        os.unlink(f"{self.exports}/{name}.tar")
        r["ok"] = all(r[k]["same_as_cold"] is not False for k in ("inplace", "import"))
        return r

    def inspect(self, archive):
        p = ps.sh([f"{self.build}/client/warmctl", "--json", "inspect", archive], check_rc=False)
        try:
            res = json.loads(p.stdout)["result"]
        except (ValueError, KeyError):
            return {"error": (p.stdout + p.stderr)[-500:]}
        keep = ("archive_bytes", "unpacked_bytes", "criu_image_bytes", "page_bytes",
                "vram_image_bytes", "vram_outside_bytes", "vram_outside_segment_files",
                "page_outside_files", "page_outside_bytes",
                "predicted_vram_restore_s", "criu_threads")
        return {k: res.get(k) for k in keep}

    # ---- podman's network flags ----
    def completion_on(self, sock):
        """A one-token completion over an open connection: (HTTP status, seconds)."""
        body = self.body(1).encode()
        req = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
               f"application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
               ).encode() + body
        t = time.monotonic()
        sock.settimeout(60)
        sock.sendall(req)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head = data.split(b"\r\n", 1)[0].decode(errors="replace")
        status = int(head.split()[1]) if head.startswith("HTTP/") and len(head.split()) > 1 else 0
        return status, time.monotonic() - t

    def net_checks(self):
        """What --tcp-established and --ignore-static-ip/--mac do to a model server under the
        fast path: each step's podman result, recorded; a step that podman refuses is a finding,
        not a bench failure, unless the docs say it works."""
        import socket
        r = self.res["net"] = {"stack": "fast-store", "steps": {}}
        name = "gwm-net"
        self.podman.run("rm", "-f", "-t", "0", name, check_rc=False, timeout=120)
        self.daemon_for("fast-store")
        self.plugins("fast-store")
        g = self.golden("fast-store", name, False)
        if not g.get("ok"):
            r["error"] = f"start: {g.get('error')}"
            return r
        health, _ = self.urls()

        def step(key, *args, expect_ok=True):
            t, p = self.podman.timed(*args, timeout=300)
            out = (p.stdout + p.stderr).strip()
            r["steps"][key] = {"args": list(args), "rc": p.returncode, "s": round(t, 3),
                               "tail": out[-600:], "as_documented": (p.returncode == 0) == expect_ok}
            log(f"  net {key}: rc {p.returncode} in {t:.2f} s"
                + ("" if p.returncode == 0 else f": {out[-300:]}"))
            return p.returncode == 0

        held = socket.create_connection(("127.0.0.1", self.a.port), timeout=10)
        # 1. an established connection, no flag: CRIU refuses the dump (docs/podman.md)
        step("checkpoint_open_connection_no_flag", "container", "checkpoint", "--keep", name,
             expect_ok=False)
        r["running_after_refused_checkpoint"] = self.podman.inspect(name).get(
            "State", {}).get("Running", False)
        # 2. with --tcp-established: dumped, restored in place, the held connection carries a
        #    request afterwards
        if step("checkpoint_tcp_established", "container", "checkpoint", "--keep",
                "--tcp-established", name) and \
                step("restore_tcp_established", "container", "restore", "--keep",
                     "--tcp-established", name):
            try:
                status, s = self.completion_on(held)
                r["held_connection_after_restore"] = {"http_status": status, "s": round(s, 3)}
                log(f"  net: the connection open at the checkpoint answered HTTP {status} "
                    f"after the restore ({s:.2f} s)")
            except OSError as e:
                r["held_connection_after_restore"] = {"error": str(e)}
                log(f"  net: the connection open at the checkpoint failed after the restore: {e}")
        held.close()
        # 3. --export, then --import with --ignore-static-ip/--ignore-static-mac: the server
        #    answers on the same port
        archive = f"{self.exports}/{name}.tar"
        if step("checkpoint_export", "container", "checkpoint", "--export", archive,
                "--compress", "none", name):
            self.podman.run("rm", "-f", "-t", "0", name, check_rc=False, timeout=120)
            if step("restore_import_ignore_static", "container", "restore", "--import", archive,
                    "--name", name, "--ignore-static-ip", "--ignore-static-mac"):
                try:
                    with socket.create_connection(("127.0.0.1", self.a.port), timeout=10) as c:
                        status, s = self.completion_on(c)
                    r["after_import"] = {"http_status": status, "s": round(s, 3)}
                except OSError as e:
                    r["after_import"] = {"error": str(e)}
            if os.path.exists(archive):
                os.unlink(archive)
        self.podman.run("rm", "-f", "-t", "0", name, check_rc=False, timeout=120)
        r["ok"] = (all(x["as_documented"] for x in r["steps"].values())
                   and r.get("held_connection_after_restore", {}).get("http_status") == 200
                   and r.get("after_import", {}).get("http_status") == 200)
        log(f"  net checks: {'as documented' if r['ok'] else 'NOT as documented'}")
        return r

    def failed(self, stack, what, x):
        r = self.res["stacks"][stack]
        r["error"] = f"{what}: {x.get('error')}"
        log(f"== {stack} FAILED at the {what}:\n{x.get('error')}")
        self.podman.run("rm", "-f", "-t", "0", f"gwm-{stack}", check_rc=False, timeout=120)
        return r

    def tear_down(self, out):
        if getattr(self, "cdi_default", None) and os.path.exists(self.cdi_default):
            os.unlink(self.cdi_default)
        if os.path.exists(f"{self.work}/daemon.log"):
            shutil.copy(f"{self.work}/daemon.log", out)
        if getattr(self, "podman", None):
            self.podman.run("rm", "-a", "-f", "-t", "0", check_rc=False, timeout=120)
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(30)
        self.setup.restore()


def ratios(res):
    """Ratios vs cold and vs seeds, and the acceptance checks, from merged stacks."""
    st = res.get("stacks", {})

    def ftt(stack, kind):
        try:
            if stack == "cold":
                return st["cold"]["golden"]["time_to_first_token_s"]
            return st[stack][kind]["summary"]["time_to_first_token_s"]["median"]
        except (KeyError, TypeError):
            return None
    out, checks = {}, {}
    cold = ftt("cold", None)
    for stack in STACKS[1:]:
        for kind in ("inplace", "import"):
            t = ftt(stack, kind)
            if t is None:
                continue
            row = out.setdefault(f"{stack}/{kind}", {"first_token_s": t})
            if cold:
                row["vs_cold"] = cold / t
            seeds = ftt("seeds", kind)
            if seeds and stack != "seeds":
                row["vs_seeds"] = seeds / t
    for stack in FAST_BOUNDED:
        for kind, bound in (("inplace", FAST_INPLACE_MAX_S), ("import", FAST_IMPORT_MAX_S)):
            row = out.get(f"{stack}/{kind}")
            if not row:
                continue
            checks[f"{stack} {kind} <= {bound} s"] = row["first_token_s"] <= bound
            if "vs_seeds" in row:
                checks[f"{stack} {kind} >= {VS_SEEDS_MIN}x seeds"] = row["vs_seeds"] >= VS_SEEDS_MIN
            if "vs_cold" in row:
                checks[f"{stack} {kind} >= {VS_COLD_MIN}x cold"] = row["vs_cold"] >= VS_COLD_MIN
    # greedy output: every restore's token ids against the cold start's (runs merged from
    # separate calls too), else against the stack's own cold start before its checkpoint
    try:
        cold_ids = st["cold"]["golden"]["warmup"][-1]["token_ids"]
    except (KeyError, IndexError, TypeError):
        cold_ids = None
    for stack, r in st.items():
        for kind in ("inplace", "import"):
            x = r.get(kind)
            if not isinstance(x, dict):
                continue
            got = [rd.get("check_token_ids", rd.get("token_ids")) for rd in x.get("rounds", [])]
            if cold_ids is not None and got:
                checks[f"{stack} {kind} greedy output identical to cold"] = all(
                    g == cold_ids for g in got)
            elif x.get("same_as_cold") is not None:
                checks[f"{stack} {kind} greedy output identical"] = x["same_as_cold"]
    return out, checks


def merge(paths, out_dir):
    res = {"stacks": {}, "runs": []}
    for p in paths:
        r = json.load(open(p))
        res["runs"].append({k: v for k, v in r.items() if k not in ("stacks", "ratios", "checks")})
        res["stacks"].update(r.get("stacks", {}))
        for k in ("gpu", "kernel", "criu", "podman", "kv_cache_gib", "cuda_checkpoint", "cuda_plugin",
                  "net", "thp"):
            if r.get(k) is not None and res.get(k) is None:
                res[k] = r[k]  # the first run that has it
    res["ratios"], res["checks"] = ratios(res)
    os.makedirs(out_dir, exist_ok=True)
    json.dump(res, open(f"{out_dir}/podman-model.json", "w"), indent=1)
    report(res)
    try:
        plot(res, f"{out_dir}/podman-model.png")
    except Exception as e:  # noqa: BLE001 - the JSON is written; a plot failure is not fatal
        print(f"plot failed: {type(e).__name__}: {e}")
    return res


def report(res):
    cold = res["stacks"].get("cold", {}).get("golden", {})
    if cold.get("time_to_first_token_s"):
        print(f"cold: healthy {cold['time_to_health_s']:.2f} s, first token "
              f"{cold['time_to_first_token_s']:.2f} s")
    for key, row in res["ratios"].items():
        print(f"{key:20} first token {row['first_token_s']:7.2f} s"
              + (f"  {row['vs_cold']:6.1f}x vs cold" if "vs_cold" in row else "")
              + (f"  {row['vs_seeds']:6.1f}x vs seeds" if "vs_seeds" in row else ""))
    for what, ok in res["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    for stack, r in res["stacks"].items():
        if not r.get("ok"):
            print(f"FAILED stack {stack}: {str(r.get('error'))[:300]}")
    net = res.get("net")
    if net:
        for key, x in net.get("steps", {}).items():
            print(f"net {key:36} rc {x['rc']:3}  {'as documented' if x['as_documented'] else 'NOT as documented'}")
        for key in ("held_connection_after_restore", "after_import"):
            if key in net:
                print(f"net {key:36} {net[key]}")
        print(f"{'PASS' if net.get('ok') else 'FAIL'}  network flags as docs/podman.md says")


def plot(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"no matplotlib: {path} not drawn")
        return
    labels, health, token = [], [], []
    cold = res["stacks"].get("cold", {}).get("golden", {})
    if cold.get("time_to_first_token_s"):
        labels.append("cold start")
        health.append(cold["time_to_health_s"])
        token.append(cold["time_to_first_token_s"])
    for key in res["ratios"]:
        stack, kind = key.split("/")
        s = res["stacks"][stack][kind]["summary"]
        labels.append(f"{stack}\n{'in place' if kind == 'inplace' else '--import'}")
        health.append(s["time_to_health_s"]["median"])
        token.append(s["time_to_first_token_s"]["median"])
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 4.2))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], health, 0.4, label="to /health 200")
    ax.bar([i + 0.2 for i in x], token, 0.4, label="to first token")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("seconds (log)")
    ax.legend(fontsize=8)
    ax.set_title(f"podman model server (KV {res.get('kv_cache_gib', '?')} GiB): "
                 f"{' '.join(res.get('gpu') or [])[:60]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def self_check(a):
    """Arguments, tools, environment, and the merge step on made-up results: no GPU needed."""
    ok = True
    print(f"stacks: {a.stacks}; server args (fast): {server_args(a, 'fast')}")
    for t in ("gw-golden-checkpoint", "gw-podman-restore"):
        p = subprocess.run([sys.executable, os.path.join(TOOLS, t), "--help"], capture_output=True, text=True)
        print(f"tool {t}: {'ok' if p.returncode == 0 else 'FAILED ' + p.stderr[-300:]}")
        ok &= p.returncode == 0
    found = {"model_server.py": os.path.exists(f"{SRC}/tests/workloads/model_server.py"),
             "podman_suite.Setup": hasattr(ps, "Setup"),
             "nvidia-smi": bool(shutil.which("nvidia-smi")),
             "cuda-checkpoint": find_cuda_checkpoint(a.cuda_checkpoint) or "none (gw-ckpt-fresh stands in)",
             "root": os.geteuid() == 0}
    if a.build:
        for f in ("client/warmctl", "daemon/gpu-warmd", "plugin-shim/gpuwarm_plugin.so",
                  "client/shim/libgpuwarm-shim.so", "tests/bench/gw-ckpt-fresh"):
            found[f] = os.path.exists(os.path.join(a.build, f))
        if found["client/warmctl"]:
            p = subprocess.run([os.path.join(a.build, "client/warmctl"), "cdi", "--shim",
                                os.path.abspath(os.path.join(a.build, "client/shim/libgpuwarm-shim.so"))],
                               capture_output=True, text=True)
            found["warmctl cdi"] = p.returncode == 0 and CDI_DEVICE.split("=")[0] in p.stdout
            ok &= found["warmctl cdi"]
    for root, binary in ((a.criu_root, "usr/sbin/criu"), (a.podman_root, "usr/bin/podman")):
        if root:
            found[binary] = os.path.exists(os.path.join(root, binary))
    cp = a.cuda_plugin or f"{SRC}/.device-carry/cuda-plugin/cuda_plugin.so"
    found["cuda_plugin.so"] = os.path.exists(cp)
    for k, v in found.items():
        print(f"  {k}: {v}")
    with tempfile.TemporaryDirectory() as d:
        fake = made_up_results()
        paths = []
        for i, part in enumerate((("cold", "seeds"), ("driver", "fast", "fast-store"))):
            p = f"{d}/part{i}.json"
            json.dump({"stacks": {s: fake[s] for s in part}, "gpu": ["made up"]}, open(p, "w"))
            paths.append(p)
        res = merge(paths, f"{d}/merged")
        good = ("fast import greedy output identical to cold" in res["checks"] and
                "fast-store import <= 3.0 s" in res["checks"] and
                abs(res["ratios"]["fast/inplace"]["vs_cold"] - 40.0) < 1e-9 and
                abs(res["ratios"]["fast/import"]["vs_seeds"] - 5.0) < 1e-9 and all(res["checks"].values()))
        print(f"merge of made-up results: {'ok' if good else 'WRONG'}")
        ok &= good
    print("SELF-CHECK " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


def made_up_results():
    def rs(h, t):
        return {"ok": True, "same_as_cold": True, "rounds": [{"token_ids": [7, 8, 9]}], "summary": {
            "time_to_health_s": {"median": h}, "time_to_first_token_s": {"median": t}}}
    return {"cold": {"ok": True, "golden": {"time_to_health_s": 50.0, "time_to_first_token_s": 60.0,
                                            "warmup": [{"token_ids": [7, 8, 9]}]}},
            "seeds": {"ok": True, "inplace": rs(7, 8), "import": rs(7, 10)},
            "driver": {"ok": True, "inplace": rs(3, 3.5), "import": rs(4, 5)},
            "fast": {"ok": True, "inplace": rs(1.2, 1.5), "import": rs(1.8, 2.0)},
            "fast-store": {"ok": True, "inplace": rs(1.2, 1.5), "import": rs(1.4, 1.7)}}


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if a.self_check:
        return self_check(a)
    if a.merge:
        res = merge(a.merge, a.out)
        return 0 if all(res["checks"].values()) and all(r.get("ok") for r in res["stacks"].values()) else 1
    if os.geteuid() != 0:
        sys.exit("podman-model.py: run as root")
    os.makedirs(a.out, exist_ok=True)
    b = Bench(a)
    t0 = time.monotonic()
    thp_saved = None
    try:
        if a.thp:
            b.res["thp"] = {"host": thp_get(), "run": a.thp}
            thp_saved = thp_set(a.thp)
            log(f"transparent huge pages for this run: {a.thp} (host setting: {thp_saved})")
        b.set_up()
        for stack in a.stacks:
            if a.budget_s and time.monotonic() - t0 > a.budget_s:
                b.res["stacks"][stack] = {"ok": False, "error": f"skipped: past --budget-s {a.budget_s:g}"}
                continue
            log(f"== {stack}")
            try:
                b.run_stack(stack)
            except (ps.Failure, subprocess.TimeoutExpired, OSError, KeyError) as e:
                b.res["stacks"][stack] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                log(f"== {stack} FAILED: {e}")
        if a.net_checks and not (a.budget_s and time.monotonic() - t0 > a.budget_s):
            log("== network flags")
            try:
                b.net_checks()
            except (ps.Failure, subprocess.TimeoutExpired, OSError, KeyError) as e:
                b.res["net"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                log(f"== network flags FAILED: {e}")
    except (ps.Failure, subprocess.TimeoutExpired, OSError) as e:
        b.res["error"] = f"set-up: {e}"
        log(f"SET-UP FAILED: {e}")
    finally:
        b.tear_down(a.out)
        if thp_saved:
            thp_restore(thp_saved)
    b.res["ratios"], b.res["checks"] = ratios(b.res)
    name = "-".join(a.stacks)
    json.dump(b.res, open(f"{a.out}/podman-model-{name}.json", "w"), indent=1)
    report(b.res)
    return 0 if all(r.get("ok") for r in b.res["stacks"].values()) and "error" not in b.res else 1


if __name__ == "__main__":
    sys.exit(main())
