"""Executor throughput against the original method, in the same run on the same machine.

    python bench/bench_executor.py [--jobs 300] [--baseline_jobs 40] [--repeats 3] [--workers 2]

Rows:
  fresh interpreter: the original's check, one `python -` per call that imports numpy,
                     runs the code and prints the result (run `workers` at a time, no limits);
  warm pool:         Executor.run_calls with one input per job (all limits and isolation);
  warm pool x10:     ten inputs per job (how parse_gen_ios re-runs pairs);
  ..., no filter:    the same on a second pool whose jobs run without the system-call
                     filter (executor.USE_SYSCALL_FILTER = False): the filter's cost, A/B
                     in the same run;
  syscalls [no filter]: a call making 20,000 stat/getppid calls and 20 forks, with and
                     without the filter (what the filter costs code that makes many calls;
                     clone, the forks, is one of the calls the filter always examines).
Prints calls/s (median of the repeats), ms per call and the ratio to the baseline, then
the filter's ratios (with / without; 1.00 = no cost).
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

from annoy_datasync import executor as executor_mod  # noqa: E402
from annoy_datasync import status  # noqa: E402
from annoy_datasync.executor import Executor, Limits  # noqa: E402

CODE = """
import numpy as np

def main_solution(n, scale):
    a = np.arange(n, dtype=float) * scale
    return {"total": float(a.sum()), "top": [float(x) for x in np.sort(a)[-3:]]}
"""


SYSCALLS = """
import os

def main_solution(n):
    for _ in range(n):
        os.stat("/")
        os.getppid()
    for _ in range(20):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return n
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


def bench_pool(ex: Executor, n_jobs: int, calls_per_job: int, code: str = CODE) -> float:
    if code == CODE:
        jobs = [[{"n": 10 + i + k, "scale": 0.5} for k in range(calls_per_job)]
                for i in range(n_jobs)]
    else:
        jobs = [[{"n": 10_000}] * calls_per_job for _ in range(n_jobs)]
    t0 = time.perf_counter()
    futures = [ex.run_calls(code, inputs) for inputs in jobs]
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

    rows: dict[str, list[float]] = {name: [] for name in (
        "fresh interpreter", "warm pool", "warm pool x10", "warm pool, no filter",
        "warm pool x10, no filter", "syscalls", "syscalls, no filter")}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ex = Executor(python_path=args.python_path, run_path=os.path.join(tmp, "run"),
                      workers=args.workers, limits=Limits())
        startup = time.perf_counter() - t0
        executor_mod.USE_SYSCALL_FILTER = False
        try:
            bare = Executor(python_path=args.python_path, run_path=os.path.join(tmp, "run2"),
                            workers=args.workers, limits=Limits())
        finally:
            executor_mod.USE_SYSCALL_FILTER = True
        with ex, bare:
            assert ex.syscalls_filtered and not bare.syscalls_filtered
            for pool in (ex, bare):
                bench_pool(pool, 20, 1)   # warm-up
            for i in range(args.repeats):   # interleaved, so load changes hit all rows
                rows["fresh interpreter"].append(
                    bench_fresh(args.python_path, args.baseline_jobs, args.workers))
                pools = [(ex, ""), (bare, ", no filter")]
                for pool, tag in pools[::1 if i % 2 == 0 else -1]:   # either goes first
                    rows["warm pool" + tag].append(bench_pool(pool, args.jobs, 1))
                    rows["warm pool x10" + tag].append(bench_pool(pool, args.jobs // 10, 10))
                    rows["syscalls" + tag].append(
                        bench_pool(pool, args.jobs // 10, 1, SYSCALLS))

    base = statistics.median(rows["fresh interpreter"])
    print(f"executor bench: {args.workers} workers, {os.cpu_count()} cpus, "
          f"median of {args.repeats}, pool start-up {startup:.2f} s")
    print(f"{'method':<26} {'calls/s':>9} {'ms/call':>9} {'ratio':>7}")
    for name, values in rows.items():
        med = statistics.median(values)
        print(f"{name:<26} {med:>9.1f} {1000 / med:>9.2f} {med / base:>6.1f}x")
    print("system-call filter, with / without (per repeat, then median):")
    for name in ("warm pool", "warm pool x10", "syscalls"):
        ratios = [a / b for a, b in zip(rows[name], rows[name + ", no filter"])]
        print(f"  {name:<16} " + " ".join(f"{r:.3f}" for r in ratios) +
              f"  median {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
