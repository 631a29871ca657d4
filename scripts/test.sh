#!/bin/bash
# The whole test suite, as CI runs it: installs build dependencies, builds with ASan+UBSan in
# build-test/, runs every suite (unit, integration, fuzz, plugin, ...) against the fake CUDA
# driver, and ends with the line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
if [ ! -f build-test/build.ninja ]; then
	meson setup build-test -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C build-test
set +e
meson test -C build-test --print-errorlogs --num-processes "$(nproc)" "$@" 2>&1 | tee build-test/test-output.txt
status=$?
set -e
# meson's own summary is not what CI reads: print the totals in the agreed form.
python3 - build-test/test-output.txt <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def n(label):
    m = re.search(r"^" + label + r":\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else 0
passed = n("Ok") + n("Expected Fail")
failed = n("Fail") + n("Unexpected Pass") + n("Timeout")
print(f"{passed} passed, {failed} failed, {n('Skipped')} skipped")
PY
exit $status
