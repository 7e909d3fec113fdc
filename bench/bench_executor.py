"""Executor throughput against the original method, in the same run on the same machine.

    python bench/bench_executor.py [--jobs 300] [--baseline_jobs 40] [--repeats 3] [--workers 2]

Rows:
  fresh interpreter: the original's check, one `python -` per call that imports numpy,
                     runs the code and prints the result (run `workers` at a time, no limits);
  warm pool:         Executor.run_calls with one input per job (all limits and isolation);
  warm pool x10:     ten inputs per job (how parse_gen_ios re-runs pairs).
Prints calls/s (median of the repeats), ms per call and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from annoy_datasync import status  # noqa: E402
from annoy_datasync.executor import Executor, Limits  # noqa: E402

CODE = """
import numpy as np

def main_solution(n, scale):
    a = np.arange(n, dtype=float) * scale
    return {"total": float(a.sum()), "top": [float(x) for x in np.sort(a)[-3:]]}
"""


def fresh_interpreter_call(python: str, inp: dict) -> bool:
    script = CODE + f"\nprint(repr(main_solution(**{inp!r})))\n"
    proc = subprocess.run([python, "-"], input=script, capture_output=True, text=True,
                          timeout=60)
    return proc.returncode == 0


def bench_fresh(python: str, n: int, workers: int) -> float:
    inputs = [{"n": 10 + i, "scale": 0.5} for i in range(n)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ok = list(pool.map(lambda x: fresh_interpreter_call(python, x), inputs))
    dt = time.perf_counter() - t0
    assert all(ok), "the baseline failed"
    return n / dt


def bench_pool(ex: Executor, n_jobs: int, calls_per_job: int) -> float:
    jobs = [[{"n": 10 + i + k, "scale": 0.5} for k in range(calls_per_job)]
            for i in range(n_jobs)]
    t0 = time.perf_counter()
    futures = [ex.run_calls(CODE, inputs) for inputs in jobs]
    results = [r for f in futures for r in f.result()]
    dt = time.perf_counter() - t0
    assert all(r.status == status.SUCCESS for r in results), results[0]
    return len(results) / dt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--baseline_jobs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--python_path", default=sys.executable)
    args = parser.parse_args(argv)

    rows: dict[str, list[float]] = {"fresh interpreter": [], "warm pool": [],
                                    "warm pool x10": []}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ex = Executor(python_path=args.python_path, run_path=os.path.join(tmp, "run"),
                      workers=args.workers, limits=Limits())
        startup = time.perf_counter() - t0
        with ex:
            bench_pool(ex, 20, 1)   # warm-up
            for _ in range(args.repeats):   # interleaved, so load changes hit all rows
                rows["fresh interpreter"].append(
                    bench_fresh(args.python_path, args.baseline_jobs, args.workers))
                rows["warm pool"].append(bench_pool(ex, args.jobs, 1))
                rows["warm pool x10"].append(bench_pool(ex, args.jobs // 10, 10))

    base = statistics.median(rows["fresh interpreter"])
    print(f"executor bench: {args.workers} workers, {os.cpu_count()} cpus, "
          f"median of {args.repeats}, pool start-up {startup:.2f} s")
    print(f"{'method':<20} {'calls/s':>9} {'ms/call':>9} {'ratio':>7}")
    for name, values in rows.items():
        med = statistics.median(values)
        print(f"{name:<20} {med:>9.1f} {1000 / med:>9.2f} {med / base:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
