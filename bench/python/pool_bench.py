#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The pool suite's workloads on Python's multiprocessing.Pool.

bench/mpbench's pool suite runs this script (when python3 is present) and
puts its figures in the same table as mproc's, so that the ratio is
measured in the same run.  Run by hand:

    python3 bench/python/pool_bench.py [--processes 2] [--seconds 1]

Each output line is "workload<TAB>tasks_per_s<TAB>ns_per_task".  The
workloads are those of bench/suite_pool.c:
  map         Pool.map(f, range(N)), default chunksize, N = 1,000,000
  map-cs1     Pool.map(f, range(N), chunksize=1), N scaled to --seconds
  apply_async N apply_async calls, then every get()
  apply       one apply() round trip at a time (latency)
f is a trivial task: it returns its argument plus one.
"""
import argparse
import multiprocessing
import sys
import time


def task(x):
    return x + 1


def timed(fn):
    t0 = time.perf_counter()
    n = fn()
    dt = time.perf_counter() - t0
    return n / dt, dt * 1e9 / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--items", type=int, default=1000000)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    # Item counts for the slow workloads: at least 20,000 tasks (Python's
    # per-task rate still climbs below that, so fewer would flatter it),
    # more when --seconds asks for longer runs.
    small = max(20000, int(20000 * a.seconds))
    rt = max(2000, int(5000 * a.seconds))
    out = []
    with multiprocessing.Pool(a.processes) as pool:
        pool.map(task, range(1000))         # warm the workers up
        work = {
            "map": lambda: len(pool.map(task, range(a.items))),
            "map-cs1": lambda: len(pool.map(task, range(small), 1)),
            "apply_async": lambda: len([r.get() for r in
                                        [pool.apply_async(task, (i,))
                                         for i in range(small)]]),
            "apply": lambda: len([pool.apply(task, (i,))
                                  for i in range(rt)]),
        }
        for name, fn in work.items():
            if a.only and name not in a.only.split(","):
                continue
            ops, ns = timed(fn)
            out.append("%s\t%.1f\t%.1f" % (name, ops, ns))
            print(out[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
