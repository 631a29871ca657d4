#!/usr/bin/env python3
"""Write the seed corpus of fuzz-tar: small archives in the formats `podman container checkpoint
--export` and tar(1) write (ustar, GNU long names, pax, gzip), shaped like a checkpoint; the
"-links" ones hold the VRAM segment files as symlinks into gpu-warmd's VRAM store, as a checkpoint
taken with `--vram-store DIR` does (GNU 'K' and pax linkpath for the long targets).
Run from this directory: ./make-tar-corpus.py corpus-tar"""
import gzip
import io
import os
import sys
import tarfile

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def archive(fmt, long_names=False, link_to=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        def add(name, data, kind=tarfile.REGTYPE, link=""):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            info.mtime = 1700000000
            t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("checkpoint", b"", tarfile.DIRTYPE)
        add("config.dump", b'{"name":"srv","rootfsImageName":"localhost/m:latest"}')
        add("checkpoint/inventory.img", b"\x01" * 40)
        add("checkpoint/pages-1.img", b"\x00" * 1000)
        add("checkpoint/gpuwarm-12.json", b'{"format":1,"pid":12,"vpid":1,"fast":true}')
        add("checkpoint/gpuwarm-vram-12.img", b"GWVRAMIM" + b"\x00" * 300)
        seg = "gpuwarm-vram-12.img.seg-0"
        if link_to:
            add("checkpoint/" + seg, b"", tarfile.SYMTYPE, link_to + "/" + seg + ".1a2b3c")
        else:
            add("checkpoint/" + seg, b"GWVRAMSG" + b"\x00" * 100)
        if long_names:
            add("checkpoint/" + "d" * 120 + "/core-7.img", b"x" * 10)
    return buf.getvalue()


seeds = {
    "ustar": archive(tarfile.USTAR_FORMAT),
    "gnu-long": archive(tarfile.GNU_FORMAT, True),
    "pax-long": archive(tarfile.PAX_FORMAT, True),
}
store = "/var/lib/gpu-warmd/vram"
long_store = "/var/lib/gpu-warmd/" + "v" * 120
seeds["ustar-links"] = archive(tarfile.USTAR_FORMAT, link_to=store)
seeds["gnu-links"] = archive(tarfile.GNU_FORMAT, True, link_to=long_store)
seeds["pax-links"] = archive(tarfile.PAX_FORMAT, True, link_to=long_store)
seeds["gzip"] = gzip.compress(seeds["ustar"], mtime=0)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
