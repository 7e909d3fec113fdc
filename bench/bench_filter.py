"""What installing the jobs' system-call filter costs, in the same run on the same machine
(why the worker installs it once on itself, and jobs inherit it, rather than per job).

    python bench/bench_filter.py [--rounds 200]

Each round forks a child (as the worker forks a job) that sets no_new_privs and then
installs, timed from inside the child:
  our filter:        sandbox_filter.Filter().install(), the program every job inherits;
  1-instruction:     a filter that allows everything: the kernel's fixed cost of any filter;
  none:              no filter (the timer alone).
Then, in a child with and one without our filter: 20,000 stat + getppid calls, and 50
forks (clone is one of the calls the filter always examines).
Prints medians in microseconds / milliseconds and ratios. bench/bench_executor.py
measures the executor with and without the filter (jobs per second, A/B).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "annoy_datasync"))

import sandbox_filter  # noqa: E402 - the worker's sibling module, stdlib only

PR_SET_NO_NEW_PRIVS = 38


def one_instruction() -> sandbox_filter.Filter:
    filt = sandbox_filter.Filter()
    code = ctypes.create_string_buffer(sandbox_filter.INSN.pack(
        sandbox_filter.RET, 0, 0, sandbox_filter.RET_ALLOW))
    filt._code = code
    filt._prog = sandbox_filter._SockFprog(1, ctypes.addressof(code))
    return filt


def in_child(filt, work) -> list[float]:
    """Fork; in the child: no_new_privs, install `filt` (timed), run `work` (timed)."""
    libc = ctypes.CDLL(None, use_errno=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            t0 = time.perf_counter()
            if filt is not None:
                filt.install()
            t1 = time.perf_counter()
            times = work() if work else []
            os.write(w, " ".join(str(x) for x in [t1 - t0] + times).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    out = os.read(r, 1000).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return [float(x) for x in out.split()]


def syscalls() -> list[float]:
    t0 = time.perf_counter()
    for _ in range(20_000):
        os.stat("/")
        os.getppid()
    t1 = time.perf_counter()
    for _ in range(50):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return [t1 - t0, time.perf_counter() - t1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    ours = sandbox_filter.Filter()
    if not ours.available:
        print(f"no filter here: {ours.reason}")
        return 1
    rows = {"our filter": ours, "1-instruction": one_instruction(), "none": None}
    install: dict[str, list[float]] = {name: [] for name in rows}
    work: dict[str, list[list[float]]] = {"our filter": [], "none": []}
    for i in range(args.rounds):        # interleaved, so load changes hit all rows
        for name, filt in rows.items():
            install[name].append(in_child(filt, None)[0])
        if i % 10 == 0:
            for name in work:
                work[name].append(in_child(rows[name], syscalls)[1:])
    print(f"filter bench: {len(sandbox_filter.program())} instructions, "
          f"{args.rounds} rounds, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
    med = {name: statistics.median(v) * 1e6 for name, v in install.items()}
    for name, us in med.items():
        print(f"  install, {name:<14} {us:8.1f} us")
    print(f"  ours over the 1-instruction filter: {med['our filter'] - med['1-instruction']:.1f} us")
    for i, what in enumerate(("20,000 stat+getppid", "50 forks")):
        a = statistics.median(x[i] for x in work["our filter"]) * 1e3
        b = statistics.median(x[i] for x in work["none"]) * 1e3
        print(f"  {what:<20} with {a:7.1f} ms, without {b:7.1f} ms, ratio {a / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
