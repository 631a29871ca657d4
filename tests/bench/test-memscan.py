#!/usr/bin/env python3
"""memscan.py on a child process whose memory is known: a mapping of zero pages it wrote, one
of data, and the diff between two scans says which grew."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import memscan  # noqa: E402

CHILD = r"""
import ctypes, mmap, sys
zeros = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(0, 8 << 20, 4096):
    zeros[i] = 1
    zeros[i] = 0          # resident, all zeros
data = mmap.mmap(-1, 4 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
data.write(b"\x5a" * (4 << 20))
addr = lambda m: ctypes.addressof(ctypes.c_char.from_buffer(m))
print("ready", addr(zeros), addr(data), flush=True)
sys.stdin.readline()
more = mmap.mmap(-1, 2 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
more.write(b"\x01" * (2 << 20))
print("grown", flush=True)
sys.stdin.readline()
"""


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        sys.exit(1)


def main():
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        ready, zeros_at, data_at = p.stdout.readline().split()
        check(ready == "ready", "the child is ready")
        a = memscan.scan(p.pid)

        def holding(addr):  # adjacent mappings may have been merged into one
            for m in a["mappings"]:
                start = int(m["start"], 16)
                if start <= int(addr) < start + m["size_mib"] * 2**20:
                    return m
            return None
        z, d = holding(zeros_at), holding(data_at)
        check(z is not None and z["zero_mib"] >= 7.9, f"the 8 MiB of zeros: {z}")
        check(d is not None and d["anon_mib"] - d["zero_mib"] >= 3.9, f"the 4 MiB of data: {d}")
        check(a["anon_mib"] >= 12 and a["zero_mib"] >= 7.9, "the totals")
        p.stdin.write("\n")
        p.stdin.flush()
        check(p.stdout.readline().strip() == "grown", "the child grew")
        b = memscan.scan(p.pid)
        d = memscan.diff(a, b)
        check(any(1.9 <= m["grew_mib"] <= 2.1 for m in d["mappings"] if m["kind"] == "anonymous"),
              f"the diff finds the 2 MiB the child mapped: {json.dumps(d['mappings'][:3])}")
        check("MiB of anonymous pages" in memscan.table(b), "the table")
        out = subprocess.run([sys.executable, os.path.join(HERE, "memscan.py"), str(p.pid), "--json"],
                             capture_output=True, text=True)
        check(out.returncode == 0 and json.loads(out.stdout)["pid"] == p.pid, "the command line")
        out = subprocess.run([sys.executable, os.path.join(HERE, "memscan.py"), "999999999"],
                             capture_output=True, text=True)
        check(out.returncode == 1 and "no process" in out.stderr, "a pid that does not exist")
    finally:
        p.kill()
        p.wait()
    print("MEMSCAN OK")


if __name__ == "__main__":
    main()
