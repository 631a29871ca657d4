#!/usr/bin/env python3
"""A PyTorch process holding GiB of tensors, for the fast-path suite.

Allocates --gib GiB of tensors on cuda:0 (in --pieces tensors) filled from a seeded generator,
prints "ready pid <pid> gib <g> alloc <conf>", and on SIGUSR1 checks every tensor is bit-identical
to its saved checksum, printing "verify ok ..." or "verify CORRUPT ...". Run it with
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to exercise apps that use the VMM API themselves.
"""
import argparse
import os
import signal
import sys
import threading

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=6)
    ap.add_argument("--pieces", type=int, default=24)
    a = ap.parse_args()
    torch.manual_seed(1234)
    per = int(a.gib * 2**30 / a.pieces) // 4
    tensors = [torch.randint(-2**31, 2**31 - 1, (per,), dtype=torch.int32, device="cuda:0")
               for _ in range(a.pieces)]
    torch.cuda.synchronize()
    # A checksum per tensor computed on the GPU: sum of int64 of the words and of word*index.
    idx = None

    def sums():
        nonlocal idx
        out = []
        for t in tensors:
            if idx is None or idx.numel() != t.numel():
                idx = torch.arange(t.numel(), device="cuda:0", dtype=torch.int64)
            w = t.to(torch.int64)
            out.append((int(w.sum()), int((w * idx).sum())))
        return out

    ref = sums()
    ev = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: ev.set())
    conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default")
    print(f"ready pid {os.getpid()} gib {a.gib} alloc {conf} reserved {torch.cuda.memory_reserved() / 2**30:.2f}",
          flush=True)
    while True:
        ev.wait()
        ev.clear()
        got = sums()
        bad = [i for i, (x, y) in enumerate(zip(got, ref)) if x != y]
        print(f"verify {'ok' if not bad else 'CORRUPT'} pid {os.getpid()} tensors {len(tensors)} bad {bad[:4]}",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
