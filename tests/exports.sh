#!/bin/sh
# SPDX-License-Identifier: MIT
# Only mp_* may leave the shared library.  Prints TAP.
set -u
lib=${top_builddir:-.}/lib/.libs/libmproc.so
echo "1..2"
if [ ! -f "$lib" ]; then
	echo "not ok 1 - $lib not built"
	echo "ok 2 - # SKIP no shared library"
	exit 0
fi
bad=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^mp_' | grep -v '^MPROC_' || true)
if [ -z "$bad" ]; then
	echo "ok 1 - only mp_* symbols are exported"
else
	echo "not ok 1 - symbols exported beyond mp_*:"
	echo "$bad" | sed 's/^/# /'
fi
n=$(nm -D --defined-only "$lib" | awk '$3 ~ /^mp_/' | wc -l)
if [ "$n" -gt 10 ]; then
	echo "ok 2 - $n mp_* symbols exported"
else
	echo "not ok 2 - only $n mp_* symbols exported"
fi
