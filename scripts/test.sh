#!/bin/bash
# The whole test suite, as CI runs it: installs build dependencies, builds with ASan+UBSan and
# the test suites (-Dtests=true) in build-test/, runs every suite (unit, integration, fuzz,
# plugin, ...) against the fake CUDA driver, then builds the Debian packages, checks them with
# lintian and checks their contents (scripts/build-debs.sh, into build-test/deb/). Ends with
# the line "N passed, N failed"; skipped tests are counted on the line before it.
# Arguments go to `meson test` (e.g. --suite unit); with arguments the packages are not built.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
if [ ! -f build-test/build.ninja ]; then
	meson setup build-test -Dtests=true -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
else
	meson configure build-test -Dtests=true >/dev/null
fi
ninja -C build-test
set +e
meson test -C build-test --print-errorlogs --num-processes "$(nproc)" "$@" 2>&1 | tee build-test/test-output.txt
status=${PIPESTATUS[0]}
packaging=skipped
if [ $# -eq 0 ]; then
	echo "== Debian packages: dpkg-buildpackage, lintian, contents"
	if ./scripts/build-debs.sh build-test/deb; then
		packaging=ok
	else
		packaging=failed
		status=1
	fi
	echo "Debian packages: $packaging"
fi
set -e
# meson's own summary is not what CI reads: print the totals in the agreed form.
python3 - build-test/test-output.txt "$packaging" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def n(label):
    m = re.search(r"^" + label + r":\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else 0
passed = n("Ok") + n("Expected Fail") + (sys.argv[2] == "ok")
failed = n("Fail") + n("Unexpected Pass") + n("Timeout") + (sys.argv[2] == "failed")
print(f"{n('Skipped')} skipped")
print(f"{passed} passed, {failed} failed")
PY
exit $status
