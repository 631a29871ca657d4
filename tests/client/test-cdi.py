#!/usr/bin/env python3
"""`warmctl cdi`: the CDI spec's content (what podman's CDI library checks, and what the shim
needs in a container), --output, usage errors, and the spec meson installs for the installed
shim. Usage: test-cdi.py WARMCTL INSTALLED_SPEC SHIM_INSTALL_PATH (INSTALLED_SPEC "" when
none is built)."""
import json
import os
import re
import stat
import subprocess
import sys
import tempfile

warmctl, installed, shim_install = sys.argv[1:4]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL", what)


def run(*args, code=0):
    p = subprocess.run([warmctl, *args], capture_output=True, text=True)
    check(p.returncode == code, f"warmctl {' '.join(args)}: exit {p.returncode}, want {code}: "
          f"{p.stderr.strip()}")
    return p.stdout


def check_spec(spec, shim, sock_dir, what):
    check(spec.get("cdiVersion") == "0.6.0", f"{what}: cdiVersion")
    vendor, _, cls = spec.get("kind", "").partition("/")
    # the CDI library's name rules (pkg/parser): vendor, class and device name
    check(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", vendor) and "." in vendor,
          f"{what}: vendor {vendor!r}")
    check(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?", cls), f"{what}: class")
    check(spec["kind"] == "gpu-warmd.dev/gpuwarm", f"{what}: kind")
    devs = spec.get("devices", [])
    check(len(devs) == 1 and devs[0].get("name") == "shim", f"{what}: one device, shim")
    edits = devs[0]["containerEdits"]
    env = dict(e.split("=", 1) for e in edits["env"])
    preload = env.get("LD_PRELOAD", "").split()
    check(preload and preload[-1] == shim, f"{what}: LD_PRELOAD ends with the shim: {preload}")
    check(env.get("GPUWARM_SOCKET") == sock_dir + "/gpu-warmd.sock", f"{what}: GPUWARM_SOCKET")
    mounts = {m["containerPath"]: m for m in edits["mounts"]}
    for m in edits["mounts"]:
        check(m["hostPath"] == m["containerPath"], f"{what}: {m} at the host's path")
        check(m.get("type") == "bind", f"{what}: {m} says its type (crun's restore crashes "
              "on a mount without one)")
        check("bind" in m["options"] and "rbind" not in m["options"],
              f"{what}: {m} a bind mount, not recursive (CRIU refuses mounts below one)")
    check(shim in mounts and "ro" in mounts[shim]["options"], f"{what}: the shim mounted ro")
    check(sock_dir in mounts and "ro" not in mounts[sock_dir]["options"],
          f"{what}: the socket directory mounted rw")
    for lib in preload[:-1]:  # libcjson, preloaded before the shim, mounted too
        check(lib in mounts and "libcjson" in lib, f"{what}: {lib} mounted")
    check(len(mounts) == len(preload) + 1, f"{what}: mounts {sorted(mounts)}")


spec = json.loads(run("cdi", "--shim", "/opt/gw/lib/libgpuwarm-shim.so",
                      "--socket-dir", "/srv/gw"))
check_spec(spec, "/opt/gw/lib/libgpuwarm-shim.so", "/srv/gw", "--shim/--socket-dir")
default = run("cdi")
check_spec(json.loads(default), shim_install, "/run/gpu-warmd", "defaults")
check(json.loads(run("--json", "cdi")) == json.loads(default), "--json prints the spec itself")

with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "gpu-warmd.json")
    res = json.loads(run("--json", "cdi", "--output", out))
    check(res["result"]["device"] == "gpu-warmd.dev/gpuwarm=shim", "--output: device named")
    check(open(out).read().strip() == default.strip(), "--output writes what stdout shows")
    check(stat.S_IMODE(os.stat(out).st_mode) == 0o644, "--output: mode 0644")
    check(os.listdir(tmp) == ["gpu-warmd.json"], "--output leaves no temporary file")
    run("cdi", "--output", os.path.join(tmp, "no/such/dir.json"), code=1)

run("cdi", "--shim", "relative.so", code=2)
run("cdi", "--socket-dir", "run", code=2)
run("cdi", "--shim", "", code=2)
run("cdi", "extra", code=2)
run("status", "--output", "x", code=2)  # cdi's options apply to cdi only
check("cdi [--output FILE]" in run("cdi", "--help"), "cdi --help")

if installed:
    spec = json.load(open(installed))
    check_spec(spec, shim_install, "/run/gpu-warmd", "installed spec")
    check(spec == json.loads(default), "the installed spec is `warmctl cdi`'s")
print("ok" if not failures else f"{len(failures)} failures")
sys.exit(1 if failures else 0)
