"""The inference step's parent side: the progress bar, the fan-out over worker processes,
and the rewrite of the failures file at the end.

- `Progress` sums the workers' snapshots into one bar: rows done, from the cache and
  failed, rows in flight, the adaptive window, the rate over the last seconds, 429s, the
  rate limits in force, tokens, money spent and projected.
- `run_processes` forks ``nproc`` workers (each runs `client.run_shard` on its share of
  the rows) that die with the parent, and stops them all on the first fatal error.
- `rewrite_failures` keeps one line per index still failed, with its attempts summed over
  the runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import multiprocessing as mp
import os
import queue
import signal
import time
from collections import Counter, deque

from tqdm import tqdm

from . import prices, status
from .client import RequestSettings, run_shard
from .indexset import IndexSet
from .jsonl import Appender, atomic_write, loads_line, open_lines

class Progress:
    """The bar: done / failed / in flight, the window of attempts allowed in flight (adaptive),
    the rate over the last seconds, 429s, the rate limits in force, and tokens."""

    RATE_SECONDS = 10.0

    def __init__(self, total: int, disable: bool, price: prices.Price | None = None):
        self.price = price
        self.total = total
        # no tqdm monitor thread: the worker processes are forked after the bar exists, and a
        # fork should not copy a thread that may hold a lock (the bar refreshes on updates)
        tqdm.monitor_interval = 0
        self.bar = tqdm(total=total, unit="req", dynamic_ncols=True, mininterval=0.5,
                        disable=disable, smoothing=0.1)
        self.snaps: dict[int, dict] = {}
        self.shown = 0
        self.history: deque[tuple[float, int]] = deque()

    def update(self, shard: int, snap: dict) -> None:
        self.snaps[shard] = snap
        t = self.totals()
        finished = sum(t["counts"].values())
        ok = t["counts"].get(status.INFERENCE_SUCCEEDED, 0)
        now = time.monotonic()
        self.history.append((now, finished))
        while len(self.history) > 2 and self.history[1][0] < now - self.RATE_SECONDS:
            self.history.popleft()
        t0, n0 = self.history[0]
        rate = (finished - n0) / (now - t0) if now > t0 else 0.0
        limits = next((s["limits"] for s in self.snaps.values() if s.get("limits")), "")
        self.bar.set_postfix_str(
            f"ok={ok} cached={t['cached']} failed={finished - ok} in_flight={t['in_flight']} "
            f"window={t['window']:.0f} rate={rate:.1f}/s 429s={t['rejected']}"
            f"{' ' + limits if limits else ''} tok_in={t['tokens_in']} tok_out={t['tokens_out']}"
            f"{self.cost_text(t, finished)}", refresh=False)
        self.bar.update(finished - self.shown)
        self.shown = finished

    def cost(self, t: dict) -> float | None:
        if self.price is None:
            return None
        return self.price.cost(t["tokens_in"], t["tokens_out"], t["tokens_cached"])

    def cost_text(self, t: dict, finished: int) -> str:
        spent = self.cost(t)
        if spent is None:
            return ""
        sent = finished - t["cached"]           # rows that cost something so far
        todo = self.total - t["cached"]
        projected = spent * todo / sent if sent > 0 else 0.0
        return f" spent={prices.dollars(spent)} projected={prices.dollars(projected)}"

    def totals(self) -> dict:
        counts: Counter = Counter()
        t = {"in_flight": 0, "tokens_in": 0, "tokens_out": 0, "tokens_cached": 0, "attempts": 0,
             "rejected": 0, "window": 0.0, "cached": 0}
        for s in self.snaps.values():
            counts.update(s["counts"])
            for k in t:
                t[k] += s[k]
        t["counts"] = counts
        return t

    def close(self) -> None:
        self.bar.close()


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the parent dies, so a killed run leaves no writer."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker(settings: RequestSettings, shard: int, nshards: int, out: Appender,
            failed: Appender, done: IndexSet, answered: mmap.mmap, stop, q, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sets `stop`
    try:
        stats, fatal = asyncio.run(run_shard(settings, shard, nshards, out, failed, done, stop,
                                             lambda snap: q.put(("stats", shard, snap, None)), answered))
        q.put(("final", shard, stats.snapshot(), fatal))
    except BaseException as exc:
        q.put(("crash", shard, f"{type(exc).__name__}: {exc}", None))
        raise


# once the run is stopping, how long the parent waits for the last workers' reports before
# it gives up on them (and kills them): a stopped worker cancels its requests and reports
# within a second or so
STOP_GRACE_S = 30.0


def run_processes(settings: RequestSettings, nproc: int, out: Appender, failed: Appender,
                  done: IndexSet, answered: mmap.mmap, progress: Progress) -> str | None:
    """Run the shards in `nproc` forked workers; the first fatal error (a worker's own, or a
    worker that died or ended without its final report) stops them all and is returned.

    Never waits for ever on a worker that cannot report: one that ended without a final
    report counts as dead, and once the run is stopping, workers that have not reported
    within STOP_GRACE_S are given up on (a worker killed while it held the queue's write
    lock leaves the others unable to send anything, or even to exit)."""
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, name=f"inference-{i}", daemon=True,
                         args=(settings, i, nproc, out, failed, done, answered, stop, q, os.getpid()))
             for i in range(nproc)]
    for p in procs:
        p.start()
    fatal: str | None = None
    finals: set[int] = set()
    stopping_since: float | None = None
    gave_up = False

    def stopping(message: str) -> None:
        nonlocal fatal, stopping_since
        fatal = fatal or message
        stop.set()
        if stopping_since is None:
            stopping_since = time.monotonic()

    def handle(kind: str, shard: int, payload, message: str | None) -> None:
        if kind == "stats":
            progress.update(shard, payload)
        elif kind == "final":
            progress.update(shard, payload)
            finals.add(shard)
            if message:
                stopping(message)
        else:
            finals.add(shard)
            stopping(f"worker {shard} crashed: {payload}")

    try:
        while len(finals) < nproc:
            try:
                handle(*q.get(timeout=0.5))
                continue
            except queue.Empty:
                pass
            ended = [i for i, p in enumerate(procs) if i not in finals and p.exitcode is not None]
            if ended:       # what they sent before they ended is in the pipe: read it first
                try:
                    while True:
                        handle(*q.get_nowait())
                except queue.Empty:
                    pass
            for i in ended:
                if i not in finals:
                    finals.add(i)
                    code = procs[i].exitcode
                    stopping(f"worker {i} died (exit code {code})" if code
                             else f"worker {i} ended without its final report")
            if (stopping_since is not None and len(finals) < nproc
                    and time.monotonic() - stopping_since > STOP_GRACE_S):
                silent = sorted(set(range(nproc)) - finals)
                stopping(f"worker(s) {', '.join(map(str, silent))} did not report within "
                         f"{STOP_GRACE_S:g} s of the stop")
                gave_up = True
                break
    finally:
        stop.set()
        # 10 s for all to end (none after they were given up on), then the rest are killed
        end = time.monotonic() + (0.0 if gave_up else 10.0)
        for p in procs:
            p.join(timeout=max(0.0, end - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
    return fatal


def rewrite_failures(path: str, done: IndexSet, answered: mmap.mmap) -> int:
    """Keep one line per index still failed (its latest, with the attempts of all runs);
    drop rows answered since."""
    if not os.path.exists(path):
        return 0
    latest: dict[int, dict] = {}
    with open_lines(path) as fh:
        for raw in fh:
            try:
                rec = loads_line(raw)
                idx = rec.get("index")
            except (ValueError, AttributeError, RecursionError):
                continue
            if not isinstance(idx, int) or idx < 0 or idx in done or (
                    idx < len(answered) and answered[idx]):
                continue
            prev = latest.pop(idx, None)  # order of the latest attempts
            if prev is not None:          # attempts add up over the runs
                total = [r.get("attempts") for r in (prev, rec)]
                if all(isinstance(n, int) for n in total):
                    rec["attempts"] = sum(total)
            latest[idx] = rec
    with atomic_write(path) as w:
        for rec in latest.values():
            w.write(rec)
    return len(latest)
