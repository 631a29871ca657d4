#!/bin/bash
# Build the Debian packages (gpu-warmd, libgpuwarm0, libgpuwarm-dev) from this checkout into
# OUT (default: build-deb/), check them with lintian (no errors allowed) and check what each
# package holds (scripts/check-debs.sh). The checkout stays clean: the tree is copied to
# OUT/src first, and dpkg-buildpackage writes its files next to that copy.
# Needs the packages scripts/deps.sh installs (debhelper, lintian, go-md2man, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build-deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=$(dpkg-parsechangelog -l debian/changelog -S Version)
src="$out/src/gpu-warmd-$version"
rm -rf "$out/src"
mkdir -p "$src"
# the files git knows (committed or not, ignored ones left out); a tarball has no git
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
		tar --null -T - -cf - | tar -xf - -C "$src"
else
	tar --exclude='./build*' --exclude=./.git -cf - . | tar -xf - -C "$src"
fi
echo "building the packages in $out/src (log: $out/build.log)" >&2
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1; then
	tail -40 "$out/build.log" >&2
	echo "dpkg-buildpackage failed" >&2
	exit 1
fi
changes=$(ls "$out"/src/gpu-warmd_"${version}"_*.changes)
echo "lintian $(basename "$changes")" >&2
# lintian exits 1 on errors (its default --fail-on error); warnings are printed, not fatal
lintian --info --display-level '>=warning' "$changes" | tee "$out/lintian.txt" >&2
debs=()
for p in gpu-warmd libgpuwarm0 libgpuwarm-dev; do
	debs+=("$(ls "$out"/src/"${p}_${version}"_*.deb)")
done
./scripts/check-debs.sh "${debs[@]}"
