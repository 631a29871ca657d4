#!/usr/bin/env python3
"""Turn a PTX file into a C header holding it as one string: embed.py IN.ptx OUT.h NAME"""
import sys

src, out, name = sys.argv[1:4]
text = open(src, encoding="ascii").read()
lines = ['/* Generated from %s by embed.py: do not edit. */' % src.split("/")[-1],
         "static const char %s[] =" % name]
for line in text.splitlines():
    lines.append('\t"%s\\n"' % line.replace("\\", "\\\\").replace('"', '\\"'))
lines[-1] += ";"
open(out, "w", encoding="ascii").write("\n".join(lines) + "\n")
