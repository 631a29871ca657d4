#!/usr/bin/env python3
"""What of a process's memory CRIU dumps and restores, by mapping (root; Linux pagemap).

CRIU writes a private mapping's anonymous pages (present or swapped, not file pages) into its page
images and reads them back at restore, one 4 KiB fault each unless transparent huge pages apply.
This lists those pages per mapping, how many of them hold only zeros, and how many are mapped by
huge pages, so a benchmark can say what the restore spends its time on:

    memscan.py PID [--top 12] [--json]
    memscan.py --diff BEFORE.json AFTER.json     mappings that appeared or grew between two scans

As a module: scan(pid) -> dict, diff(a, b) -> dict, table(scan) -> str.
"""
import argparse
import json
import os
import re
import struct
import sys

PAGE = 4096
ZERO = bytes(PAGE)
PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
PM_FILE = 1 << 61
CHUNK = 512  # pages per pagemap/mem read


def _maps(pid):
    """[(start, end, perms, path)] of /proc/PID/maps, with Rss/AnonHugePages from smaps."""
    out, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if m:
                cur = {"start": int(m.group(1), 16), "end": int(m.group(2), 16), "perms": m.group(3),
                       "path": m.group(4).strip(), "rss_kib": 0, "anon_huge_kib": 0}
                out.append(cur)
                continue
            k, _, v = line.partition(":")
            if cur is not None and k in ("Rss", "AnonHugePages"):
                cur["rss_kib" if k == "Rss" else "anon_huge_kib"] = int(v.split()[0])
    return out


def kind(path):
    if not path:
        return "anonymous"
    if path.startswith("["):
        return path
    if path.startswith("/dev/"):
        return "device"
    if path.startswith("/memfd:") or "(deleted)" in path:
        return "memfd/deleted"
    return "file"


def scan(pid):
    """Per mapping: the pages CRIU dumps (anonymous: present or swapped, not file pages) and how
    many of them are all zeros. Mappings without such pages are left out."""
    maps = _maps(pid)
    vmas = []
    with open(f"/proc/{pid}/pagemap", "rb") as pm, open(f"/proc/{pid}/mem", "rb") as mem:
        for m in maps:
            if "p" not in m["perms"] or m["path"].startswith("/dev/") or m["path"] == "[vsyscall]":
                continue
            anon = zero = 0
            first = m["start"] // PAGE
            n = (m["end"] - m["start"]) // PAGE
            for base in range(0, n, CHUNK):
                cnt = min(CHUNK, n - base)
                pm.seek((first + base) * 8)
                raw = pm.read(cnt * 8)
                ents = struct.unpack(f"<{len(raw) // 8}Q", raw)
                want = [i for i, e in enumerate(ents) if e & (PM_PRESENT | PM_SWAP) and not e & PM_FILE]
                if not want:
                    continue
                anon += len(want)
                try:
                    mem.seek((first + base) * PAGE)
                    data = mem.read(cnt * PAGE)
                except OSError:
                    continue
                zero += sum(1 for i in want if data[i * PAGE:(i + 1) * PAGE] == ZERO)
            if anon:
                vmas.append({"start": hex(m["start"]), "end": hex(m["end"]), "size_mib": round((m["end"] - m["start"]) / 2**20, 1),
                             "perms": m["perms"], "path": m["path"], "kind": kind(m["path"]),
                             "anon_mib": round(anon * PAGE / 2**20, 1),
                             "zero_mib": round(zero * PAGE / 2**20, 1),
                             "anon_huge_mib": round(m["anon_huge_kib"] / 1024, 1)})
    total = sum(v["anon_mib"] for v in vmas)
    by_kind = {}
    for v in vmas:
        k = by_kind.setdefault(v["kind"], {"anon_mib": 0.0, "zero_mib": 0.0, "mappings": 0})
        k["anon_mib"] = round(k["anon_mib"] + v["anon_mib"], 1)
        k["zero_mib"] = round(k["zero_mib"] + v["zero_mib"], 1)
        k["mappings"] += 1
    return {"pid": pid, "anon_mib": round(total, 1),
            "zero_mib": round(sum(v["zero_mib"] for v in vmas), 1),
            "anon_huge_mib": round(sum(v["anon_huge_mib"] for v in vmas), 1),
            "by_kind": by_kind, "mappings": sorted(vmas, key=lambda v: -v["anon_mib"])}


def _span(v):
    start = int(v["start"], 16)
    return start, int(v["end"], 16) if "end" in v else start + int(v["size_mib"] * 2**20)


def diff(a, b):
    """Mappings of scan b that are new or hold more anonymous pages than the mappings of scan a
    inside their address range (the kernel merges neighbours: a mapping may have grown down or
    up). Scans list only the largest mappings when trimmed: run it on whole scans."""
    grew = []
    for v in b["mappings"]:
        lo, hi = _span(v)
        before = [w for w in a["mappings"] if lo <= _span(w)[0] and _span(w)[1] <= hi]
        d = v["anon_mib"] - sum(w["anon_mib"] for w in before)
        if d >= 1:
            grew.append(dict(v, new=not before, grew_mib=round(d, 1)))
    grew.sort(key=lambda v: -v["grew_mib"])
    return {"anon_mib_before": a["anon_mib"], "anon_mib_after": b["anon_mib"],
            "grew_mib": round(sum(v["grew_mib"] for v in grew), 1),
            "grew_zero_mib": round(sum(v["zero_mib"] for v in grew if v["new"]), 1), "mappings": grew}


def table(s, top=12):
    lines = [f"pid {s['pid']}: {s['anon_mib']:.1f} MiB of anonymous pages ({s['zero_mib']:.1f} MiB all zeros, "
             f"{s['anon_huge_mib']:.1f} MiB in huge pages)"]
    for k, v in sorted(s["by_kind"].items(), key=lambda kv: -kv[1]["anon_mib"]):
        lines.append(f"  {k:14} {v['anon_mib']:9.1f} MiB  zeros {v['zero_mib']:8.1f}  ({v['mappings']} mappings)")
    for v in s["mappings"][:top]:
        lines.append(f"    {v['start']:>16} {v['size_mib']:9.1f} MiB map {v['anon_mib']:8.1f} anon "
                     f"{v['zero_mib']:8.1f} zero {v['anon_huge_mib']:7.1f} huge  {v['perms']} {v['path'][-60:]}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pid", nargs="?", type=int)
    ap.add_argument("--top", type=int, default=12, help="mappings listed (default 12)")
    ap.add_argument("--json", action="store_true", help="the scan as JSON")
    ap.add_argument("--diff", nargs=2, metavar=("BEFORE", "AFTER"), help="two scans' JSON files")
    a = ap.parse_args(argv)
    if a.diff:
        d = diff(*(json.load(open(p)) for p in a.diff))
        print(json.dumps(d, indent=1) if a.json else
              f"grew {d['grew_mib']:.1f} MiB ({d['anon_mib_before']:.1f} -> {d['anon_mib_after']:.1f})")
        return 0
    if a.pid is None:
        ap.error("a PID or --diff")
    if not os.path.exists(f"/proc/{a.pid}"):
        print(f"memscan: no process {a.pid}", file=sys.stderr)
        return 1
    s = scan(a.pid)
    print(json.dumps(s, indent=1) if a.json else table(s, a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
