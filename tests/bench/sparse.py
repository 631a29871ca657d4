#!/usr/bin/env python3
"""Sparse VRAM images (issue 9): zero chunks never cross PCIe. GPU machine, as root.

Everything against a baseline measured in the same run, the same process, the same daemon: the
same suspend/resume through an image file with zero elision (the default) and with --dense.
  1. gw-vram-app with DATA GiB of data and ZERO GiB of zeroed allocations (a KV cache nothing has
     written yet): image size, suspend and resume times, sparse vs dense; data verified after each.
  2. `warmctl inspect` on the sparse image: its predicted restore time vs the measured resume.
  3. The model server with --gpu-memory-utilization UTIL: a warm-up sparse cycle (the daemon's
     speed measurements, as a host that has restored this workload before has them), then
     restore -> first token, sparse vs dense, greedy output identical to before the suspend.
Images go to a tmpfs (IMG_DIR, mounted here when it is not one already). Writes OUT/sparse.json
and, with matplotlib, OUT/sparse.png.

usage: sparse.py BUILD OUT [--data-gib 4] [--zero-gib 40] [--img-dir /mnt/gw-sparse]
                 [--server-util 0.9] [--no-server] [--tmpfs-huge] [--segments N]
"""
import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "gpu"))
sys.path.insert(0, os.path.join(HERE, "..", "workloads"))
sys.path.insert(0, HERE)
from gpu_suite import App, Failure, check, warmctl, wait_registered  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog. Checkpoint me, restore me, then"
GIB = float(1 << 30)


def ensure_tmpfs(path, gib, huge=False):
    os.makedirs(path, exist_ok=True)
    mounts = open("/proc/mounts").read().split("\n")
    if not any(m.split()[1:2] == [path] and m.split()[2] == "tmpfs" for m in mounts if m):
        opts = f"size={gib}g" + (",huge=always" if huge else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "gw-sparse", path], check=True)
    return path


SEGMENTS = None  # --segments: warmctl suspend --segments N (None: warmctl's default)


def remove_image(img):
    """The image file and its segment files (FILE.seg-N)."""
    for path in [img] + glob.glob(glob.escape(img) + ".seg-*"):
        os.unlink(path)


def cycle(build, sock, pid, img, dense=False, first_token=None):
    """suspend --image img [--dense], then resume --image img; returns the numbers."""
    args = ["suspend", str(pid), "--image", img, "--timeout", "120"] + (["--dense"] if dense else [])
    if SEGMENTS is not None:
        args += ["--segments", str(SEGMENTS)]
    j, ws = warmctl(build, sock, *args)
    s = j["result"]
    check(s["path"] == "fast" and s["image"] == "file",
          f"{'dense' if dense else 'sparse'} suspend {ws:.2f} s: {s['vram_bytes'] / GIB:.1f} GiB, "
          f"{s['data_bytes'] / GIB:.2f} GiB of data, files {s['image_bytes'] / GIB:.2f} GiB "
          f"({s.get('segments', 0)} segments, {s.get('io_lanes', 0)} lanes, written at "
          f"{s.get('file_write_bytes_per_s', 0) / 1e9:.1f} GB/s); steps " +
          ", ".join(f"{x['step']} {x['duration_ms']:.0f}" for x in s["steps"]))
    out = {"suspend_s": ws, "image_bytes": s["image_bytes"], "vram_bytes": s["vram_bytes"],
           "data_bytes": s["data_bytes"], "suspend_steps": s["steps"],
           "segments": s.get("segments", 0), "suspend_gpu_jobs": s.get("gpu_jobs"),
           "file_write_bytes_per_s": s.get("file_write_bytes_per_s")}
    if not dense:
        ins, _ = warmctl(build, sock, "inspect", img)
        out["inspect"] = ins["result"]["images"][0]
    t = time.monotonic()
    j, wr = warmctl(build, sock, "resume", str(pid), "--image", img)
    if first_token:
        first_token()
        out["restore_first_token_s"] = time.monotonic() - t
    r = j["result"]
    check(r["state"] == "running", f"{'dense' if dense else 'sparse'} resume {wr:.2f} s "
          f"(checksums {'verified' if r.get('verified') else 'none'}, files read at "
          f"{r.get('file_read_bytes_per_s', 0) / 1e9:.1f} GB/s); steps " +
          ", ".join(f"{x['step']} {x['duration_ms']:.0f}" for x in r["steps"]))
    out["resume_s"] = wr
    out["resume_steps"] = r["steps"]
    out["resume_gpu_jobs"] = r.get("gpu_jobs")
    out["file_read_bytes_per_s"] = r.get("file_read_bytes_per_s")
    remove_image(img)
    return out


def synthetic(build, sock, img_dir, data_gib, zero_gib):
    print(f"== gw-vram-app: {data_gib} GiB of data + {zero_gib} GiB of zeros", flush=True)
    app = App(build, int(data_gib * 1024), ["--zero-mib", str(int(zero_gib * 1024)), "--chunk-mib", "1024"],
              shim_socket=sock)
    res = {"data_gib": data_gib, "zero_gib": zero_gib}
    try:
        wait_registered(build, sock, app.pid, int((data_gib + zero_gib) * GIB), timeout=120)
        # A first sparse cycle lets the daemon measure its file fill rate (inspect predicts from it).
        cycle(build, sock, app.pid, f"{img_dir}/warmup.img")
        line, _ = app.verify()
        check(line.startswith("verify ok"), "data verified after the warm-up cycle")
        res["sparse"] = cycle(build, sock, app.pid, f"{img_dir}/sparse.img")
        line, _ = app.verify()
        check(line.startswith("verify ok"), "data verified after the sparse cycle")
        res["dense"] = cycle(build, sock, app.pid, f"{img_dir}/dense.img", dense=True)
        line, _ = app.verify()
        check(line.startswith("verify ok"), "data verified after the dense cycle")
    finally:
        app.stop()
    sp, de = res["sparse"], res["dense"]
    res["suspend_ratio"] = sp["suspend_s"] / de["suspend_s"]
    res["resume_ratio"] = sp["resume_s"] / de["resume_s"]
    res["predicted_restore_s"] = sp["inspect"]["predicted_restore_s"]
    res["prediction_error"] = res["predicted_restore_s"] / sp["resume_s"] - 1
    return res


def server(build, sock, img_dir, util):
    import client  # tests/workloads/client.py
    from bench import Server
    print(f"== model server, --gpu-memory-utilization {util}, under the shim", flush=True)
    s = Server(build, sock, True, ["--gpu-memory-utilization", str(util)])
    res = {"util": util, "ready_s": s.ready_s, "ready_line": s.ready_line}
    try:
        ref, _, _, _ = client.complete(s.port, PROMPT, 32)
        check(True, f"ready in {s.ready_s:.1f} s: {s.ready_line}")
        st, _ = warmctl(build, sock, "status")
        want = [p for p in st["result"]["processes"] if p["pid"] == s.pid][0]["vram_bytes"]
        first = lambda: client.complete(s.port, PROMPT, 1)  # noqa: E731
        # A first sparse cycle of this workload: the daemon measures its speeds on it, and
        # inspect predicts the measured cycle's restore from them.
        cycle(build, sock, s.pid, f"{img_dir}/server-warmup.img", first_token=first)
        for mode in ("sparse", "dense"):
            r = cycle(build, sock, s.pid, f"{img_dir}/server-{mode}.img", dense=mode == "dense",
                      first_token=first)
            ids, _, _, _ = client.complete(s.port, PROMPT, 32)
            check(ids == ref, f"{mode}: restore -> first token {r['restore_first_token_s']:.2f} s, "
                  "greedy output identical")
            res[mode] = r
        res["registered_bytes"] = want
    finally:
        s.stop()
    res["first_token_speedup"] = res["dense"]["restore_first_token_s"] / res["sparse"]["restore_first_token_s"]
    res["predicted_restore_s"] = res["sparse"]["inspect"]["predicted_restore_s"]
    res["prediction_error"] = res["predicted_restore_s"] / res["sparse"]["resume_s"] - 1
    return res


def plot(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"(no plot: {e})")
        return
    groups = []
    if "synthetic" in res:
        sy = res["synthetic"]
        groups += [("app suspend", sy["sparse"]["suspend_s"], sy["dense"]["suspend_s"]),
                   ("app resume", sy["sparse"]["resume_s"], sy["dense"]["resume_s"])]
    if "server" in res:
        sv = res["server"]
        groups += [("server restore\n-> first token", sv["sparse"]["restore_first_token_s"],
                    sv["dense"]["restore_first_token_s"])]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(groups))
    ax.bar([x - 0.2 for x in xs], [g[1] for g in groups], 0.4, label="sparse (zero chunks elided)")
    ax.bar([x + 0.2 for x in xs], [g[2] for g in groups], 0.4, label="dense (same run)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([g[0] for g in groups])
    ax.set_ylabel("seconds")
    ax.set_title(f"VRAM image files on tmpfs, {res.get('gpu', '')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("out")
    ap.add_argument("--data-gib", type=float, default=4)
    ap.add_argument("--zero-gib", type=float, default=40)
    ap.add_argument("--img-dir", default="/mnt/gw-sparse")
    ap.add_argument("--tmpfs-gib", type=int, default=110)
    ap.add_argument("--server-util", type=float, default=0.9)
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--tmpfs-huge", action="store_true",
                    help="mount the tmpfs (when --img-dir is none yet) with huge=always")
    ap.add_argument("--segments", type=int, default=None,
                    help="warmctl suspend --segments N (default: warmctl's, 8; 1: one file)")
    a = ap.parse_args()
    global SEGMENTS
    SEGMENTS = a.segments
    build = os.path.abspath(a.build)
    os.makedirs(a.out, exist_ok=True)
    img_dir = ensure_tmpfs(a.img_dir, a.tmpfs_gib, a.tmpfs_huge)
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "gpu": subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True).stdout.strip()}
    tmp = tempfile.mkdtemp(prefix="gw-sparse-")
    sock = f"{tmp}/gpu-warmd.sock"
    log = open(f"{a.out}/daemon.log", "w")
    daemon = subprocess.Popen([f"{build}/daemon/gpu-warmd", "--socket", sock, "--staging-mib", "256"],
                              stdout=log, stderr=log)
    try:
        for _ in range(300):
            time.sleep(0.2)
            try:
                st, _ = warmctl(build, sock, "status")
                if all(g["state"] == "ready" for g in st["result"]["gpus"]):
                    break
            except Exception:
                pass
        if not a.no_synthetic:
            res["synthetic"] = synthetic(build, sock, img_dir, a.data_gib, a.zero_gib)
            json.dump(res, open(f"{a.out}/sparse.json", "w"), indent=1)
        if not a.no_server:
            res["server"] = server(build, sock, img_dir, a.server_util)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    json.dump(res, open(f"{a.out}/sparse.json", "w"), indent=1)
    print()
    if "synthetic" in res:
        sy = res["synthetic"]
        sp, de = sy["sparse"], sy["dense"]
        print(f"app {sy['data_gib']:.0f} GiB data + {sy['zero_gib']:.0f} GiB zeros, image files on tmpfs:")
        print(f"  image   sparse {sp['image_bytes'] / GIB:6.2f} GiB   dense {de['image_bytes'] / GIB:6.2f} GiB")
        print(f"  suspend sparse {sp['suspend_s']:6.2f} s     dense {de['suspend_s']:6.2f} s   -> {sy['suspend_ratio']:.0%} of dense")
        print(f"  resume  sparse {sp['resume_s']:6.2f} s     dense {de['resume_s']:6.2f} s   -> {sy['resume_ratio']:.0%} of dense")
        print(f"  inspect predicted {sy['predicted_restore_s']:.2f} s for the sparse resume, measured "
              f"{sp['resume_s']:.2f} s ({sy['prediction_error']:+.0%})")
    if "server" in res:
        sv = res["server"]
        print(f"model server ({sv['util']} of GPU memory, {sv['registered_bytes'] / GIB:.1f} GiB under the shim):")
        print(f"  image   sparse {sv['sparse']['image_bytes'] / GIB:6.2f} GiB   dense {sv['dense']['image_bytes'] / GIB:6.2f} GiB")
        print(f"  restore -> first token: sparse {sv['sparse']['restore_first_token_s']:.2f} s, dense "
              f"{sv['dense']['restore_first_token_s']:.2f} s -> {sv['first_token_speedup']:.1f}x faster")
        print(f"  inspect predicted {sv['predicted_restore_s']:.2f} s for the sparse resume, measured "
              f"{sv['sparse']['resume_s']:.2f} s ({sv['prediction_error']:+.0%})")
    plot(res, f"{a.out}/sparse.png")
    print("SPARSE DONE")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"SPARSE FAILED: {e}", flush=True)
        sys.exit(1)
