#!/bin/sh
# SPDX-License-Identifier: MIT
# Every MP_API function in the public headers is named in a man page's NAME
# or SYNOPSIS, and every page renders without warnings.  Prints TAP.
set -u
src=${top_srcdir:-.}
names=$(sed -n 's/.*MP_API[^(]*[ *]\(mp_[a-z0-9_]*\)(.*/\1/p' "$src"/include/mproc/*.h | sort -u)
n=0
missing=""
for f in $names; do
	n=$((n + 1))
	grep -qw "$f" "$src"/man/*.[37] || missing="$missing $f"
done
echo "1..2"
if [ -z "$missing" ]; then
	echo "ok 1 - all $n public functions have a man page"
else
	echo "not ok 1 - no man page names:$missing"
fi
bad=""
if command -v man >/dev/null 2>&1; then
	for p in "$src"/man/*.[37]; do
		out=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l "$p" 2>&1 >/dev/null)
		[ -n "$out" ] && bad="$bad $(basename "$p"): $out"
	done
	if [ -z "$bad" ]; then
		echo "ok 2 - the pages render without warnings"
	else
		echo "not ok 2 - warnings:$bad"
	fi
else
	echo "ok 2 - # SKIP man is not installed"
fi
