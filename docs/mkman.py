#!/usr/bin/env python3
"""Turn one of docs/*.md into a man page with go-md2man.

usage: mkman.py GO_MD2MAN INPUT.md OUTPUT NAME SECTION VERSION

The markdown page starts with "# name(N)"; that line becomes the man page's title (.TH), the
"##" headings its sections and "###" its subsections. Links keep their text only, since a man
page cannot follow them.
"""
import re
import subprocess
import sys

go_md2man, src, out, name, section, version = sys.argv[1:7]
lines = open(src, encoding="utf-8").read().split("\n")
if lines and lines[0].startswith("# "):
    lines = lines[1:]
text = "\n".join(lines)
text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
title = f'% {name} {section} "" "gpu-warmd {version}"\n'
subprocess.run([go_md2man, "-out", out], input=(title + text).encode(), check=True)
