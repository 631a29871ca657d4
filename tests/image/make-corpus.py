#!/usr/bin/env python3
"""Write the seed corpus of fuzz-vimg: small valid VRAM images (header and tables only) in the
layout of common/gw-vimg.h. Run from this directory: ./make-corpus.py corpus"""
import os
import struct
import sys

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF

def image(chunk, ranges, flags=3, segments=0, stripe=0):
    """ranges: list of (va, size, [(nchunks, zero), ...]); segments > 0: version 2, the data
    split over that many segment files by pieces of stripe bytes (docs/image-format.md)"""
    rtab, runtab, sums = b"", b"", b""
    run_i = chunk_i = data = vram = 0
    range_data = []
    for dev, (va, size, runs) in enumerate(ranges):
        rtab += struct.pack("<QQ16sIIQQQ", va, size, bytes([dev + 1]) * 16, dev, len(runs),
                            run_i, data, chunk_i)
        first = 0
        for n, zero in runs:
            start, end = first * chunk, min((first + n) * chunk, size)
            runtab += struct.pack("<QIIQ", first, n, zero, 0 if zero else data)
            if not zero:
                data += end - start
            first += n
            sums += b"".join(struct.pack("<Q", (chunk_i + k) * 7919) for k in range(n))
            chunk_i += n
        run_i += len(runs)
        vram += size
        range_data.append(data - sum(range_data))
    tables = rtab + runtab + sums
    if segments:
        fill, piece = [0] * segments, 0
        for n in range_data:
            while n > 0:
                fill[piece % segments] += min(n, stripe)
                n -= min(n, stripe)
                piece += 1
        tables += b"".join(struct.pack("<Q", f) for f in fill)
    data_off = (256 + len(tables) + 4095) // 4096 * 4096
    h = bytearray(256)
    struct.pack_into("<8sIIIiQIIQQQQQQQQ", h, 0, b"GWVRAMIM", 2 if segments else 1, 256, flags,
                     1234, chunk, len(ranges), 0, run_i, chunk_i, len(tables), data_off, data,
                     vram, vram - data, data_off + (0 if segments else data))
    h[104:120] = bytes(range(16))
    struct.pack_into("<QQQQ", h, 120, 1700000000000000000, 50 << 30, 48 << 30, 6 << 30)
    if segments:
        struct.pack_into("<IIQ", h, 176, segments, 0, stripe)
    struct.pack_into("<I", h, 248, crc32c(tables))
    struct.pack_into("<I", h, 252, crc32c(bytes(h[:252])))
    return bytes(h) + tables

def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "corpus"
    os.makedirs(out, exist_ok=True)
    K = 64 << 10
    seeds = {
        "one-dense": image(K, [(0x7f0000000000, 4 * K, [(4, 0)])], flags=0),
        "sparse": image(K, [(0x7f0000000000, 7 * K, [(2, 0), (3, 1), (1, 0), (1, 1)])]),
        "three-ranges": image(K, [(0x7f0000000000, 3 * K, [(3, 1)]),
                                  (0x7f0000100000, 2 * K + 4096, [(3, 0)]),
                                  (0x7e0000000000, 5 * K, [(1, 1), (4, 0)])]),
        "big-chunks": image(2 << 20, [(0x7f0000000000, 64 << 20, [(16, 0), (16, 1)])]),
        "segments-3": image(K, [(0x7f0000000000, 7 * K, [(2, 0), (3, 1), (2, 0)]),
                                (0x7f0000100000, 2 * K + 4096, [(3, 0)])],
                            segments=3, stripe=K),
        "segments-8-dense": image(K, [(0x7f0000000000, 20 * K, [(20, 0)])], flags=0,
                                  segments=8, stripe=2 * K),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

if __name__ == "__main__":
    main()
