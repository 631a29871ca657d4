#!/usr/bin/env python3
"""Podman suite on the GPU machine (as root): podman container checkpoint/restore of a CUDA
container, with gpuwarm_plugin.so as CRIU's CUDA plugin (issue 7): the fast path (the app under
the in-process shim, its VRAM in the plugin's gpuwarm-vram-<pid>.img), gpu-warmd's driver path,
and the plugin's own driver fallback with gpu-warmd stopped.

Sets podman up from Debian 13 packages unpacked with dpkg -x (scripts/podman-debs.sh; criu from
scripts/criu-debs.sh), without touching the machine's package state:
  - the shared libraries those binaries need and the machine lacks: symlinked into WORK/libs,
    which an /etc/ld.so.conf.d file names (podman hands its runtime only PATH and
    XDG_RUNTIME_DIR, so LD_LIBRARY_PATH would not reach crun, conmon or criu);
  - criu: WORK/bin/criu, a wrapper that execs CRIU_ROOT's criu (4.2) with its libraries, first in
    PATH (podman checks criu through PATH; crun's libcriu runs `criu swrk` through PATH);
  - CRIU's plugin directory: `libdir WORK/criu-plugins` in /etc/criu/default.conf, which every
    criu reads, `criu swrk` too (crun 1.21 passes no configuration file of its own over RPC);
    that directory holds gpuwarm_plugin.so only (no cuda_plugin.so);
  - containers.conf / storage.conf in WORK (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF): crun and
    conmon from PODMAN_ROOT, cgroupfs, file events and k8s-file logs, vfs storage under WORK.
  - /etc/criu/default.conf also gets `network-lock skip` when iptables-restore is absent.
An image is made offline: `podman import` of a tarball holding only mount points and the host's
merged-/usr symlinks; /usr (python3, torch's venv sits in /opt/torch), the driver's
/usr/local/nvidia (a mount of its own) and /etc/ld.so.cache are bind-mounted read-only from the
host, non-recursively, each mount on its own (CRIU refuses mounts that crun did not declare
external); the build directory at /gw/build, the carried libraries (libcjson) at /gw/lib, the
source tree at /gw/src, /run/gpu-warmd (the daemon's socket directory, for the fast path);
the GPU device nodes with --device; --network host (a network namespace of its own makes CRIU
need iproute2's `ip` and iptables, which the GPU machine lacks). docs/podman.md has the recipe.

Then three stages, each a container: "fast" (gw-vram-app under the shim, --zero-mib as much
again; gpu-warmd running), "daemon" (without the shim: the plugin has the daemon make the driver
calls) and "driver" (gpu-warmd stopped: the plugin's fallback runs the driver in a helper
process). Each: ready, verified (SIGUSR1 through `podman kill`, "verify ok" read from `podman
logs`), `podman container checkpoint --keep`, `podman container restore --keep`, verified, then
`podman container checkpoint --export F.tar.gz --compress gzip`, the archive listed and checked
(the VRAM in gpuwarm-vram-*.img for the fast path, in its page images otherwise, and the plugin's
gpuwarm-<pid>.json), the container removed, `podman container restore --import F.tar.gz`,
verified. Timings: wall time of each podman command and podman's own --print-stats
(microseconds, printed in seconds). --model also runs tests/workloads/model_server.py in a
container and checks that a greedy completion is identical after checkpoint/restore.

Seen on the H100 machine (kernel 6.18, 2 GiB): every stage passes (docs/podman.md has the
timings). --model fails: criu 4.1.1 cannot dump the server's TCP socket on kernels >= 6.16
("Can't get 1:16 opt: Operation not supported", SO_PASSCRED), which needs CRIU 4.2. The
"KNOWN" messages below flag the failures of earlier plugin versions if they come back.

usage: podman_suite.py BUILD_DIR CRIU_ROOT PODMAN_ROOT [--mib N] [--model] [--out DIR]
  CRIU_ROOT / PODMAN_ROOT: where the criu / podman debs were unpacked (dpkg -x)
"""
import argparse
import glob
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import gwpodman  # noqa: E402  (tools/: print_stats, shared with gw-podman-restore)

SOCK_DIR = "/run/gpu-warmd"          # the plugin's default socket directory
SOCK = f"{SOCK_DIR}/gpu-warmd.sock"
CRIU_CONF = "/etc/criu/default.conf"
LDCONF = "/etc/ld.so.conf.d/zz-gw-podman-suite.conf"
IMAGE = "localhost/gw-host-rootfs:latest"
LIBDIR = "usr/lib/x86_64-linux-gnu"
GPU_NODES = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)
    print(f"  ok: {what}", flush=True)


def sh(cmd, env=None, timeout=300, check_rc=True):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check_rc and p.returncode != 0:
        raise Failure(f"{' '.join(cmd[:4])}... failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


class Setup:
    """Everything the suite changes outside WORK, undone by restore()."""

    def __init__(self, build, criu_root, podman_root, carry_lib, work):
        self.build, self.criu_root, self.podman_root = build, criu_root, podman_root
        self.carry_lib, self.work = carry_lib, work
        self.saved = {}

    def save(self, path):
        if path not in self.saved:
            self.saved[path] = open(path, "rb").read() if os.path.exists(path) else None

    def write(self, path, text):
        self.save(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def restore(self):
        for path, data in self.saved.items():
            if data is None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            else:
                with open(path, "wb") as f:
                    f.write(data)
        subprocess.run(["ldconfig"])

    def libraries(self):
        """Symlink into WORK/libs every shared library of the unpacked packages whose name the
        machine's loader does not know, and register that directory with ldconfig."""
        known = set()
        for line in sh(["ldconfig", "-p"]).stdout.splitlines()[1:]:
            known.add(line.strip().split(" ", 1)[0])
        libs = f"{self.work}/libs"
        os.makedirs(libs)
        added = []
        for d in (f"{self.podman_root}/{LIBDIR}", f"{self.criu_root}/{LIBDIR}", self.carry_lib):
            for path in sorted(glob.glob(f"{d}/*.so.*")):
                base, _, ver = os.path.basename(path).partition(".so.")
                soname = f"{base}.so.{ver.split('.')[0]}"  # libfoo.so.1.2.3 -> libfoo.so.1
                if soname in known or os.path.exists(f"{libs}/{soname}"):
                    continue
                os.symlink(os.path.realpath(path), f"{libs}/{soname}")
                added.append(soname)
        self.write(LDCONF, libs + "\n")
        sh(["ldconfig"])
        print(f"libraries the machine lacked, from the packages: {' '.join(added)}")
        for binary in (f"{self.podman_root}/usr/bin/podman", f"{self.podman_root}/usr/bin/crun",
                       f"{self.podman_root}/usr/bin/conmon", f"{self.criu_root}/{LIBDIR}/libcriu.so.2"):
            out = sh(["ldd", binary], check_rc=False).stdout
            missing = [l.strip() for l in out.splitlines() if "not found" in l]
            print(f"ldd {os.path.basename(binary)}: {'MISSING ' + ', '.join(missing) if missing else 'all found'}")

    def criu(self):
        bindir = f"{self.work}/bin"
        os.makedirs(bindir)
        with open(f"{bindir}/criu", "w") as f:
            f.write("#!/bin/sh\n"
                    f"export LD_LIBRARY_PATH={self.criu_root}/{LIBDIR}:{self.carry_lib}"
                    "${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\n"
                    f"exec {self.criu_root}/usr/sbin/criu \"$@\"\n")
        os.chmod(f"{bindir}/criu", 0o755)
        plugins = f"{self.work}/criu-plugins"
        os.makedirs(plugins)
        shutil.copy(f"{self.build}/plugin-shim/gpuwarm_plugin.so", plugins)
        # network-lock skip: CRIU's default locks a container's network with iptables-restore,
        # which this machine lacks ("execvp(iptables-restore) failed" -> "Locking network
        # failed"); the containers here have no network (--network none).
        self.write(CRIU_CONF, f"# written by tests/gpu/podman_suite.py\nlibdir {plugins}\n"
                   + ("" if shutil.which("iptables-restore") else "network-lock skip\n"))
        print(f"{CRIU_CONF}:\n" + open(CRIU_CONF).read().rstrip())
        return bindir, plugins

    def podman(self, have_cgroups, cdi_dirs=()):
        """podman's environment; cdi_dirs: where podman reads CDI specs (default: its own)."""
        pr = self.podman_root
        storage = f"{self.work}/storage"
        helpers = [d for d in (f"{pr}/usr/libexec/podman", f"{pr}/usr/lib/podman") if os.path.isdir(d)]
        conf = f"""[containers]
log_driver = "k8s-file"
{'' if have_cgroups else 'cgroups = "disabled"'}
seccomp_profile = "{pr}/usr/share/containers/seccomp.json"
init_path = "{pr}/usr/libexec/podman/catatonit"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{self.work}/events.log"
conmon_path = ["{pr}/usr/bin/conmon"]
helper_binaries_dir = {json.dumps(helpers)}
runtime = "crun"
tmp_dir = "{self.work}/libpod-tmp"
{f'cdi_spec_dirs = {json.dumps(list(cdi_dirs))}' if cdi_dirs else ''}

[engine.runtimes]
crun = ["{pr}/usr/bin/crun"]

[network]
network_backend = "netavark"
"""
        with open(f"{self.work}/containers.conf", "w") as f:
            f.write(conf)
        with open(f"{self.work}/storage.conf", "w") as f:
            f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{storage}"\nrunroot = "{self.work}/runroot"\n')
        if not os.path.exists("/etc/containers/policy.json"):
            self.write("/etc/containers/policy.json", open(f"{pr}/etc/containers/policy.json").read())
        env = dict(os.environ)
        env["CONTAINERS_CONF"] = f"{self.work}/containers.conf"
        env["CONTAINERS_STORAGE_CONF"] = f"{self.work}/storage.conf"
        env["CONTAINERS_REGISTRIES_CONF"] = f"{pr}/etc/containers/registries.conf"
        return env


class Podman:
    def __init__(self, binary, env):
        self.bin, self.env = binary, env

    def run(self, *args, timeout=300, check_rc=True):
        return sh([self.bin, *args], env=self.env, timeout=timeout, check_rc=check_rc)

    def timed(self, *args, timeout=300):
        t = time.monotonic()
        p = self.run(*args, timeout=timeout, check_rc=False)
        return time.monotonic() - t, p

    def logs(self, ctr):
        p = self.run("logs", ctr, check_rc=False)
        return (p.stdout + p.stderr).splitlines()

    def inspect(self, ctr):
        p = self.run("container", "inspect", ctr, check_rc=False)
        if p.returncode:
            return {}
        return json.loads(p.stdout)[0]

    def wait_log(self, ctr, text, timeout, after=0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.logs(ctr)
            hits = [l for l in lines[after:] if text in l]
            if hits:
                return hits[0], lines
            st = self.inspect(ctr).get("State", {})
            if st and not st.get("Running", False) and st.get("Status") != "created":
                raise Failure(f"container {ctr} is {st.get('Status')} (exit {st.get('ExitCode')}):\n"
                              + "\n".join(lines[-20:]))
            time.sleep(0.1)
        raise Failure(f"{ctr}: no log line with {text!r} within {timeout} s:\n" + "\n".join(self.logs(ctr)[-20:]))


def make_image(podman, work):
    """A rootfs that is only mount points plus the host's /bin, /lib... symlinks (merged /usr)."""
    path = f"{work}/rootfs.tar"
    binds = []
    with tarfile.open(path, "w") as tar:
        for d in ("usr", "etc", "proc", "sys", "dev", "run", "tmp", "var", "var/tmp", "root", "gw",
                  "gw/build", "gw/lib", "gw/src", "run/gpu-warmd"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if d in ("tmp", "var/tmp") else 0o755
            tar.addfile(ti)
        for d in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
            host = f"/{d}"
            if os.path.islink(host):
                ti = tarfile.TarInfo(d)
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, os.readlink(host), 0o777
                tar.addfile(ti)
            elif os.path.isdir(host):
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
                binds.append(host)
        ti = tarfile.TarInfo("etc/passwd")
        data = b"root:x:0:0:root:/root:/bin/sh\n"
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
    podman.run("import", path, IMAGE)
    print(f"image {IMAGE} imported from {path} (host dirs bind-mounted beside /usr: {binds or 'none'})")
    return binds


def python_binds(src):
    """The directories that hold this interpreter (on the GPU machine a venv outside /usr, with
    torch), to bind into the container for the model server."""
    extra = []
    for path in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        top = "/".join(path.split("/")[:3])
        if top in ("", "/usr", src) or path.startswith("/usr/") or top in extra:
            continue
        if os.path.isdir(top):
            extra.append(top)
    return extra


def container_args(build, carry_lib, src, binds, extra_binds):
    # --network host: no network namespace for CRIU to dump. A container's own netns makes CRIU
    # run `ip addr/route save` (iproute2) and lock the network with iptables-restore, neither of
    # which the GPU machine has.
    args = ["--network", "host", "--security-opt", "label=disable",
            "-e", "LD_LIBRARY_PATH=/gw/lib", "-e", "HOME=/root", "-e", "PYTHONUNBUFFERED=1"]
    for node in GPU_NODES:
        if os.path.exists(node):
            args += ["--device", node]
    mounts = [("/usr", "/usr", "ro"), ("/etc/ld.so.cache", "/etc/ld.so.cache", "ro"),
              (build, "/gw/build", "ro"), (carry_lib, "/gw/lib", "ro"), (src, "/gw/src", "ro"),
              (SOCK_DIR, SOCK_DIR, "rw")]
    mounts += [(b, b, "ro") for b in binds] + [(b, b, "ro") for b in extra_binds]
    # Bind mounts are not recursive, and every mount below a source (on the GPU machine the
    # driver's /usr/local/nvidia) is passed on its own: crun declares to CRIU as external only
    # the mounts of the container's configuration, and CRIU refuses any other mount of a disk
    # file system ("mnt: FS mnt ./usr/local/nvidia dev 0xfe00010 root / unsupported").
    points = [l.split()[4] for l in open("/proc/self/mountinfo")]
    for host, ctr, mode in list(mounts):
        for point in sorted(set(points)):
            if point.startswith(host.rstrip("/") + "/") and os.path.isdir(host):
                mounts.append((point, ctr.rstrip("/") + point[len(host.rstrip("/")):], mode))
    for host, ctr, mode in mounts:
        args += ["--mount", f"type=bind,source={host},destination={ctr},bind-nonrecursive=true"
                 + (",ro=true" if mode == "ro" else "")]
    return args


def stats(text):
    """podman's --print-stats JSON (durations in microseconds) -> a short summary."""
    out = gwpodman.print_stats(text)
    if not out:
        return {}, text.strip()[:300]
    return out, " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items())


def criu_log(podman, ctr, name):
    d = podman.inspect(ctr).get("StaticDir")
    if d and os.path.exists(f"{d}/{name}"):
        return f"{d}/{name}"
    return None


def gpuwarm_lines(path, n=6):
    if not path:
        return []
    lines = [l.rstrip() for l in open(path, errors="replace") if "gpuwarm" in l]
    keys = ("using gpu-warmd", "using the driver directly", "no longer usable", "standing aside",
            "fast path", "restore", "checkpoint", "lock")
    picked = [l for l in lines if any(k in l for k in keys)]
    return (picked or lines)[:n]


def tail(path, n=30):
    if not path or not os.path.exists(path):
        return f"(no {path})"
    return "".join(open(path, errors="replace").readlines()[-n:])


class Stage:
    """One container: checkpoint/restore in place, then export/import, verified each time."""

    def __init__(self, podman, work, logs_dir, name, expect_log, results):
        self.podman, self.work, self.logs_dir = podman, work, logs_dir
        self.name, self.expect_log = name, expect_log
        self.results = results  # filled as it goes: a later failure keeps the earlier timings

    def verify(self, what, timeout=120):
        before = len(self.podman.logs(self.name))
        self.podman.run("kill", "--signal", "USR1", self.name)
        line, _ = self.podman.wait_log(self.name, "verify ", timeout, after=before)
        check(line.startswith("verify ok"), f"{what}: {line.strip()}")

    def keep_log(self, path, tag):
        if path:
            shutil.copy(path, f"{self.logs_dir}/{self.name}-{tag}-{os.path.basename(path)}")

    def plugin_log_check(self, path, what):
        lines = gpuwarm_lines(path)
        for l in lines:
            print(f"    {what}: {l.strip()[:200]}")
        check(lines, f"criu's {what} shows gpuwarm_plugin at work")
        if self.expect_log and what == "dump.log":
            text = open(path, errors="replace").read()
            check(self.expect_log in text, f"dump.log says {self.expect_log!r}")
        if self.expect_log and "fast path" in self.expect_log and what == "restore.log":
            text = open(path, errors="replace").read()
            check("restored by gpu-warmd (fast path)" in text, "restore.log says the fast path restored it")

    def checkpoint(self, tag, *extra):
        wall, p = self.podman.timed("container", "checkpoint", "--keep", "--print-stats", *extra, self.name)
        dl = criu_log(self.podman, self.name, "dump.log")
        self.keep_log(dl, tag)
        if p.returncode:
            if dl and "Can't setns" in open(dl, errors="replace").read() and \
                    "using the driver directly" in open(dl, errors="replace").read():
                print("  KNOWN: the plugin's fallback loaded the CUDA driver into CRIU's own process, whose "
                      "threads make CRIU's later setns() into the container's mount namespace fail "
                      "with EINVAL (setns(CLONE_NEWNS) needs a single-threaded caller)", flush=True)
            raise Failure(f"podman container checkpoint {' '.join(extra)} failed ({p.returncode}):\n"
                          f"{p.stderr.strip()[-3000:]}\n--- dump.log tail:\n{tail(dl, 40)}")
        st, text = stats(p.stdout)
        print(f"  {tag}: podman container checkpoint {' '.join(extra)}: {wall:.3f} s wall | {text}", flush=True)
        self.plugin_log_check(dl, "dump.log")
        self.results[f"{tag}_checkpoint"] = dict(st, wall_s=wall)

    def restore(self, tag, *extra, name=None):
        wall, p = self.podman.timed("container", "restore", "--keep", "--print-stats", *extra,
                                     *([name] if name else []))
        rl = criu_log(self.podman, self.name, "restore.log")
        self.keep_log(rl, tag)
        if p.returncode:
            raise Failure(f"podman container restore {' '.join(extra)} failed ({p.returncode}):\n"
                          f"{p.stderr.strip()[-3000:]}\n--- restore.log tail:\n{tail(rl, 40)}")
        st, text = stats(p.stdout)
        print(f"  {tag}: podman container restore {' '.join(extra)}: {wall:.3f} s wall | {text}", flush=True)
        self.plugin_log_check(rl, "restore.log")
        self.results[f"{tag}_restore"] = dict(st, wall_s=wall)


def list_archive(path, vram_mib, fast=False):
    print(f"  archive {path}: {os.path.getsize(path) / 2**20:.1f} MiB")
    pages = 0
    vram_images = {}
    jsons = []
    vpids = {}
    with tarfile.open(path, "r:*") as tar:
        for m in tar.getmembers():
            print(f"    {m.size:>12} {m.name}")
            if os.path.basename(m.name).startswith("pages-"):
                pages += m.size
            if os.path.basename(m.name).startswith("gpuwarm-vram-"):
                vram_images[m.name] = m.size
            if os.path.basename(m.name).startswith("gpuwarm-") and m.name.endswith(".json"):
                jsons.append(m.name)
                text = tar.extractfile(m).read().decode(errors="replace").strip()
                print(f"      {text[:400]}")
                try:
                    vpids.setdefault(json.loads(text).get("vpid"), []).append(m.name)
                except json.JSONDecodeError:
                    pass
    for vpid, names in vpids.items():
        if len(names) > 1:
            # checkpoint --keep / restore --keep leave the checkpoint directory in place, and the
            # next dump adds its gpuwarm-<host pid>.json beside the old one: at restore, in a new
            # pid namespace, the plugin finds two records for the vpid and restores none.
            print(f"  KNOWN BUG: {len(names)} plugin records for vpid {vpid} ({', '.join(names)}): a stale "
                  "one from an earlier dump into the same directory; the restore will not find its "
                  "record (gwp_image_find_vpid wants exactly one) and leaves the CUDA state checkpointed",
                  flush=True)
    check(bool(jsons), f"the archive holds the plugin's record: {jsons}")
    if fast:
        check(sum(vram_images.values()) >= vram_mib << 20,
              f"the archive holds the VRAM image (fast path): {vram_images}; page images "
              f"{pages / 2**20:.0f} MiB")
    else:
        check(pages >= vram_mib << 20, f"the archive's page images hold the VRAM: {pages / 2**20:.0f} MiB "
                                       f">= {vram_mib} MiB")


def vram_stage(podman, cargs, work, logs_dir, mib, tag, expect_log, results, fast=False):
    """fast: the app runs under the in-process shim (the fast path, VRAM in gpuwarm-vram-*.img)
    and holds as much zeroed VRAM again, which the image leaves out."""
    name = f"gw-vram-{tag}"
    podman.run("rm", "-f", "-t", "0", name, check_rc=False)
    shim = ["-e", "LD_PRELOAD=/gw/build/client/shim/libgpuwarm-shim.so", "-e", f"GPUWARM_SOCKET={SOCK}"]
    zero = ["--zero-mib", str(mib)] if fast else []
    print(f"== {tag}: gw-vram-app --mib {mib} {' '.join(zero)} in container {name}"
          f"{' under the shim' if fast else ''}", flush=True)
    t = time.monotonic()
    podman.run("run", "-d", "--name", name, *cargs, *(shim if fast else []), IMAGE,
               "/gw/build/tests/apps/gw-vram-app", "--mib", str(mib), *zero, "--chunk-mib", "256")
    line, _ = podman.wait_log(name, "ready pid", 120)
    st = podman.inspect(name)
    print(f"  started in {time.monotonic() - t:.2f} s: {line.strip()} (host pid {st['State']['Pid']})")
    s = Stage(podman, work, logs_dir, name, expect_log, results)
    s.verify("before checkpoint")
    s.checkpoint("inplace")
    s.restore("inplace", name=name)
    s.verify("restored in place")
    s.verify("and keeps running")
    archive = f"{work}/{name}.tar.gz"
    s.checkpoint("export", "--export", archive, "--compress", "gzip")
    list_archive(archive, mib, fast)
    podman.run("rm", "-f", "-t", "0", name)
    s.restore("import", "--import", archive)
    s.verify("restored from the exported archive")
    podman.run("rm", "-f", "-t", "0", name, check_rc=False)


def model_stage(podman, cargs, work, logs_dir, model_args, results):
    name = "gw-model"
    podman.run("rm", "-f", "-t", "0", name, check_rc=False)
    print(f"== model server in container {name}: {model_args}", flush=True)
    t = time.monotonic()
    podman.run("run", "-d", "--name", name, *cargs, IMAGE, sys.executable,
               "/gw/src/tests/workloads/model_server.py", "--port", "8000", *model_args.split())
    line, _ = podman.wait_log(name, "ready pid", 240)
    print(f"  ready after {time.monotonic() - t:.1f} s: {line.strip()}")

    def ask():
        p = podman.run("exec", name, sys.executable, "/gw/src/tests/workloads/client.py", "--port", "8000",
                       "--prompt", "Checkpoint me", "--max-tokens", "24", timeout=120)
        out = p.stdout.strip().splitlines()[-1]
        return out.split(" ids_sha1 ")[1].split()[0], out

    before, out = ask()
    print(f"  before: {out}")
    s = Stage(podman, work, logs_dir, name, None, results)
    s.checkpoint("inplace")
    s.restore("inplace", name=name)
    after, out = ask()
    print(f"  after restore: {out}")
    check(after == before, f"the restored model server answers the same greedy completion ({after})")
    podman.run("rm", "-f", "-t", "0", name, check_rc=False)


def start_daemon(build, work, extra=()):
    os.makedirs(SOCK_DIR, exist_ok=True)
    dlog = open(f"{work}/daemon.log", "a")
    daemon = subprocess.Popen([f"{build}/daemon/gpu-warmd", "--socket", SOCK, "--staging-mib", "64",
                               *extra], stdout=dlog, stderr=dlog)
    for _ in range(200):
        if os.path.exists(SOCK):
            break
        time.sleep(0.05)
    time.sleep(0.5)
    check(os.path.exists(SOCK) and daemon.poll() is None, f"gpu-warmd listens on {SOCK}")
    return daemon


def cgroups():
    """podman wants cgroup v2 at /sys/fs/cgroup; a machine booted without systemd may lack it."""
    fs = sh(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"], check_rc=False).stdout.strip()
    if fs != "cgroup2fs":
        p = sh(["mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup"], check_rc=False)
        print(f"/sys/fs/cgroup was {fs or 'absent'}: mount -t cgroup2 -> rc {p.returncode} {p.stderr.strip()}")
        fs = sh(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"], check_rc=False).stdout.strip()
    ctl = open("/sys/fs/cgroup/cgroup.controllers").read().strip() if fs == "cgroup2fs" else ""
    print(f"/sys/fs/cgroup: {fs}, controllers: {ctl}")
    return fs == "cgroup2fs"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("criu_root")
    ap.add_argument("podman_root")
    ap.add_argument("--mib", type=int, default=2048, help="gw-vram-app's VRAM (default 2048)")
    ap.add_argument("--model", action="store_true", help="also the model server (python3 + torch)")
    ap.add_argument("--model-args", default="--kv-cache-gib 1", help="model_server.py options")
    ap.add_argument("--carry-lib", help="libcjson/libsystemd for our binaries "
                                        "(default: BUILD/../.device-carry/lib)")
    ap.add_argument("--out", help="copy CRIU's logs there (one tar) and the results (json)")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    src = os.path.dirname(build)
    carry_lib = os.path.abspath(a.carry_lib or f"{src}/.device-carry/lib")
    criu_root, podman_root = os.path.abspath(a.criu_root), os.path.abspath(a.podman_root)
    work = tempfile.mkdtemp(prefix="gw-podman-", dir="/dev/shm")
    logs_dir = f"{work}/criu-logs"
    os.makedirs(logs_dir)
    setup = Setup(build, criu_root, podman_root, carry_lib, work)
    results = {}
    daemon = None
    podman = None
    failed = None
    try:
        setup.libraries()
        bindir, plugins = setup.criu()
        env = setup.podman(cgroups())
        env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        podman = Podman(f"{podman_root}/usr/bin/podman", env)
        for cmd in (["criu", "--version"], [f"{podman_root}/usr/bin/crun", "--version"],
                    [podman.bin, "--version"]):
            p = sh(cmd, env=env, check_rc=False)
            print(f"$ {os.path.basename(cmd[0])} --version: {(p.stdout + p.stderr).strip()}")
        print(f"CRIU plugin directory ({CRIU_CONF}: libdir): {plugins}: {os.listdir(plugins)}")
        p = podman.run("info", "--format", "json", check_rc=False)
        if p.returncode:
            raise Failure(f"podman info failed:\n{p.stderr}")
        info = json.loads(p.stdout)
        h = info.get("host", {})
        print(f"podman info: cgroups {h.get('cgroupVersion')} {h.get('cgroupManager')}, "
              f"runtime {h.get('ociRuntime', {}).get('path')} {h.get('ociRuntime', {}).get('version', '').splitlines()[:1]}, "
              f"conmon {h.get('conmon', {}).get('path')}, storage {info.get('store', {}).get('graphDriverName')}")
        binds = make_image(podman, work)
        os.makedirs(SOCK_DIR, exist_ok=True)
        cargs = container_args(build, carry_lib, src, binds, python_binds(src))
        print("container flags: " + " ".join(cargs))

        daemon = start_daemon(build, work)
        for mode, expect in (("fast", "(fast path) into gpuwarm-vram-"),
                             ("daemon", f"using gpu-warmd at {SOCK}"), ("driver", "using the driver directly")):
            if mode == "driver":
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(30)
                print(f"gpu-warmd stopped (exit {daemon.returncode}); socket file left: {os.path.exists(SOCK)}")
            try:
                vram_stage(podman, cargs, work, logs_dir, a.mib, mode, expect, results.setdefault(mode, {}),
                           fast=mode == "fast")
            except Failure as e:
                print(f"  {mode.upper()} STAGE FAILED: {e}", flush=True)
                failed = failed or e
        if a.model:
            daemon = start_daemon(build, work)
            try:
                model_stage(podman, cargs, work, logs_dir, a.model_args, results.setdefault("model", {}))
            except Failure as e:
                print(f"  MODEL STAGE FAILED: {e}", flush=True)
                failed = failed or e
        print("== timings (s): wall of the podman command | runtime (crun + criu) | criu freezing/frozen/memdump/memwrite or forking/restore")
        for mode in ("fast", "daemon", "driver", "model"):
            for k, v in results.get(mode, {}).items():
                crit = [f"{v[x]:.3f}" for x in ("criu_freezing_time", "criu_frozen_time", "criu_memdump_time",
                                                 "criu_memwrite_time", "criu_forking_time", "criu_restore_time")
                        if x in v]
                rt = v.get("runtime_checkpoint_duration", v.get("runtime_restore_duration", float("nan")))
                print(f"  {mode:6} {k:18} {v['wall_s']:7.3f} | {rt:7.3f} | {' / '.join(crit)}")
    except Failure as e:
        failed = e
    except subprocess.TimeoutExpired as e:
        failed = Failure(f"timed out: {e}")
    finally:
        if podman:
            podman.run("rm", "-a", "-f", "-t", "0", check_rc=False, timeout=60)
        if daemon and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
        if os.path.exists(f"{work}/daemon.log"):
            shutil.copy(f"{work}/daemon.log", logs_dir)
        setup.restore()
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            with tarfile.open(f"{a.out}/podman-criu-logs.tar.gz", "w:gz") as tar:
                tar.add(logs_dir, arcname="criu-logs")
            json.dump(results, open(f"{a.out}/podman-results.json", "w"), indent=1)
    if failed:
        print(f"PODMAN SUITE FAILED: {failed}", flush=True)
        sys.exit(1)
    print("PODMAN SUITE PASSED")


if __name__ == "__main__":
    main()
