#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The manager suite's workloads on Python's multiprocessing.Manager().dict().

bench/mpbench's manager suite runs this script (when python3 is present)
and puts its figures in the same table as mproc's, so that the ratio is
measured in the same run.  Run by hand:

    python3 bench/python/manager_bench.py [--seconds 1]

Each output line is "workload<TAB>ops_per_s<TAB>ns_per_op".  Workloads:
  set-1  get-1   d[k] = v / d[k] from one client (the main process)
  set-2  get-2   the same from two client processes at once (total ops/s)
  update-1       d.update() of 64 items a call, one client (items/s)
Keys are ints 0..63, values 8-byte bytes, as in bench/suite_manager.c.
"""
import argparse
import multiprocessing
import sys
import time

KEYS = 64
VAL = b"\x01" * 8


def run(d, op, seconds):
    """Operations done in `seconds`, checking the clock every 200 ops."""
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if op == "set":
            for i in range(200):
                d[i % KEYS] = VAL
        else:
            for i in range(200):
                d[i % KEYS]
        n += 200
    return n


def client(d, op, seconds, start, q):
    start.wait()
    t0 = time.perf_counter()
    n = run(d, op, seconds)
    q.put((n, time.perf_counter() - t0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    a = ap.parse_args()
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as m:
        d = m.dict()
        for i in range(KEYS):
            d[i] = VAL
        for op in ("set", "get"):
            t0 = time.perf_counter()
            n = run(d, op, a.seconds)
            dt = time.perf_counter() - t0
            print("%s-1\t%.1f\t%.1f" % (op, n / dt, dt * 1e9 / n),
                  flush=True)
        batch = {i: VAL for i in range(KEYS)}
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < a.seconds:
            for _ in range(10):
                d.update(batch)
            n += 10 * KEYS
        dt = time.perf_counter() - t0
        print("update-1\t%.1f\t%.1f" % (n / dt, dt * 1e9 / n), flush=True)
        for op in ("set", "get"):
            start = ctx.Event()
            q = ctx.Queue()
            ps = [ctx.Process(target=client,
                              args=(d, op, a.seconds, start, q))
                  for _ in range(2)]
            for p in ps:
                p.start()
            start.set()
            res = [q.get() for _ in ps]
            for p in ps:
                p.join()
            ops = sum(n / dt for n, dt in res)
            print("%s-2\t%.1f\t%.1f" % (op, ops, 1e9 / ops), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
