#!/bin/bash
# What each Debian package must hold (dpkg-deb -c): binaries, units, the CRIU plugin in CRIU's
# plugin directory, the shim, man pages, docs, bash completion; the shared library with its
# soname link; the header, the development link and the .pc. Usage: check-debs.sh DEB...
set -euo pipefail
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
fail=0

want() { # PACKAGE-LISTING PATH-PATTERN (grep -E, anchored)
	if grep -Eq "^$2\$" <<<"$1"; then
		echo "ok   $pkg: $2"
	else
		echo "FAIL $pkg: no $2"
		fail=1
	fi
}

for deb in "$@"; do
	pkg=$(dpkg-deb -f "$deb" Package)
	# "mode owner size date time ./path[ -> target]" -> "/path[ -> target]"
	list=$(dpkg-deb -c "$deb" | awk '{ $1 = $2 = $3 = $4 = $5 = ""; sub(/^ +\./, ""); print }')
	case $pkg in
	gpu-warmd)
		want "$list" /usr/sbin/gpu-warmd
		want "$list" /usr/bin/warmctl
		want "$list" /etc/cdi/gpu-warmd.json
		want "$list" /lib/systemd/system/gpu-warmd.service
		want "$list" /lib/systemd/system/gpu-warmd.socket
		want "$list" /usr/lib/sysusers.d/gpu-warmd.conf
		want "$list" /usr/lib/criu/gpuwarm_plugin.so
		want "$list" "/usr/lib/$multiarch/gpu-warmd/libgpuwarm-shim.so"
		want "$list" /usr/share/man/man1/warmctl.1.gz
		want "$list" /usr/share/man/man8/gpu-warmd.8.gz
		want "$list" /usr/share/man/man7/gpuwarm-plugin.7.gz
		want "$list" /usr/bin/gw-golden-checkpoint
		want "$list" /usr/bin/gw-podman-restore
		want "$list" /usr/share/gpu-warmd/python/gwpodman.py
		want "$list" /usr/share/man/man1/gw-golden-checkpoint.1.gz
		want "$list" /usr/share/man/man1/gw-podman-restore.1.gz
		want "$list" /usr/share/bash-completion/completions/warmctl
		want "$list" /usr/share/doc/gpu-warmd/README.md
		want "$list" /usr/share/doc/gpu-warmd/warmctl.md
		want "$list" /usr/share/doc/gpu-warmd/copyright
		# the unit starts what the package installs
		exec_start=$(dpkg-deb --fsys-tarfile "$deb" |
			tar -xOf - ./lib/systemd/system/gpu-warmd.service | sed -n 's/^ExecStart=//p')
		want "$list" "$exec_start"
		# the gpuwarm group (the socket's) is created on installation
		if dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./postinst 2>/dev/null |
			grep -q 'systemd-sysusers.*gpu-warmd.conf'; then
			echo "ok   $pkg: postinst runs systemd-sysusers gpu-warmd.conf"
		else
			echo "FAIL $pkg: postinst does not create the gpuwarm group"
			fail=1
		fi
		;;
	libgpuwarm0)
		want "$list" "/usr/lib/$multiarch/libgpuwarm.so.0.[0-9.]+"
		want "$list" "/usr/lib/$multiarch/libgpuwarm.so.0 -> libgpuwarm.so.0.[0-9.]+"
		tmp=$(mktemp)
		dpkg-deb --fsys-tarfile "$deb" | tar -xOf - --wildcards './usr/lib/*/libgpuwarm.so.0.*' >"$tmp"
		soname=$(readelf -d "$tmp" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
		rm -f "$tmp"
		if [ "$soname" = libgpuwarm.so.0 ]; then echo "ok   $pkg: SONAME $soname"; else
			echo "FAIL $pkg: SONAME '$soname', want libgpuwarm.so.0"; fail=1; fi
		;;
	libgpuwarm-dev)
		want "$list" /usr/include/gpuwarm/gw-client.h
		want "$list" /usr/include/gpuwarm/gw-proto.h
		want "$list" "/usr/lib/$multiarch/pkgconfig/libgpuwarm.pc"
		want "$list" "/usr/lib/$multiarch/libgpuwarm.so -> libgpuwarm.so.0"
		;;
	*)
		echo "FAIL unexpected package $pkg ($deb)"
		fail=1
		;;
	esac
done
[ $# -eq 3 ] || { echo "FAIL expected 3 packages, got $#"; fail=1; }

# A program builds against the -dev package (header, .pc) and links libgpuwarm.so.0.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
for deb in "$@"; do
	case $(dpkg-deb -f "$deb" Package) in libgpuwarm0 | libgpuwarm-dev) dpkg-deb -x "$deb" "$root" ;; esac
done
cat >"$root/use.c" <<'C'
#include <gw-client.h>
int main(void)
{
	struct gw_client_error err;
	struct gw_client *c = NULL;

	if (gw_client_connect("/nonexistent/gpu-warmd.sock", "check-debs", 1000, &c, &err) == 0)
		gw_client_close(c);
	return GW_PROTO_VERSION == 1 ? 0 : 1;
}
C
pc_env=(env PKG_CONFIG_SYSROOT_DIR="$root" PKG_CONFIG_PATH="$root/usr/lib/$multiarch/pkgconfig")
if flags=$("${pc_env[@]}" pkg-config --cflags --libs libgpuwarm) &&
	cc -o "$root/use" "$root/use.c" $flags 2>"$root/cc.log" &&
	LD_LIBRARY_PATH="$root/usr/lib/$multiarch" "$root/use"; then
	echo "ok   libgpuwarm-dev: a program builds with pkg-config libgpuwarm and runs"
else
	echo "FAIL libgpuwarm-dev: building a program with pkg-config libgpuwarm: $(cat "$root/cc.log" 2>/dev/null)"
	fail=1
fi
exit $fail
