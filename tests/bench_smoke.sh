#!/bin/sh
# SPDX-License-Identifier: MIT
# mpbench runs every suite in --quick mode and writes JSON that parses.
# It checks that the harness works, not how fast anything is.  Prints TAP.
set -u
b=${top_builddir:-.}
out=$b/tests/bench_smoke.json
echo "1..2"
if "$b/bench/mpbench" --quick --json "$out" > "$b/tests/bench_smoke.out" 2>&1; then
	echo "ok 1 - mpbench --quick ran every suite"
else
	echo "not ok 1 - mpbench --quick failed:"
	sed 's/^/# /' "$b/tests/bench_smoke.out"
fi
if command -v python3 >/dev/null 2>&1; then
	if python3 - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = d["rows"]
assert rows, "no rows"
for r in rows:
    for k in ("suite", "workload", "impl", "size", "ops_per_s", "ratio"):
        assert k in r, k
    assert r["ops_per_s"] > 0, r
print("# %d rows" % len(rows))
PY
	then echo "ok 2 - the JSON parses and every row has a rate"
	else echo "not ok 2 - bad JSON in $out"
	fi
elif grep -q '"rows": \[' "$out" && tail -n 1 "$out" | grep -q '^}$'; then
	echo "ok 2 - the JSON looks whole (no python3 to parse it)"
else
	echo "not ok 2 - bad JSON in $out"
fi
