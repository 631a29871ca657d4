#!/usr/bin/env python3
"""Print the GW_TEST(name) cases of a test source, one per line, for meson to register."""
import re
import sys

for path in sys.argv[1:]:
    with open(path, encoding='utf-8') as f:
        for name in re.findall(r'^GW_TEST\((\w+)\)', f.read(), re.M):
            print(name)
