#!/bin/sh
# A built man page renders with man(1) without warnings and has its NAME and SYNOPSIS.
# Usage: check-man.sh PAGE NAME
set -eu
page=$1 name=$2
out=$(MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l "$page" 2>&1 >/dev/null) || true
if [ -n "$out" ]; then
	echo "man reports for $page:" >&2
	echo "$out" >&2
	exit 1
fi
text=$(MANWIDTH=80 LC_ALL=C.UTF-8 man -l "$page" 2>/dev/null)
for want in NAME "$name +- " SYNOPSIS DESCRIPTION "SEE ALSO"; do
	if ! printf '%s\n' "$text" | grep -Eq -- "$want"; then
		echo "$page: no '$want' in the rendered page" >&2
		exit 1
	fi
done
echo "$page renders: $(printf '%s\n' "$text" | wc -l) lines"
