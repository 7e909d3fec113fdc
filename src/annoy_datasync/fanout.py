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


def run_processes(settings: RequestSettings, nproc: int, out: Appender, failed: Appender,
                  done: IndexSet, answered: mmap.mmap, progress: Progress) -> str | None:
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
    try:
        while len(finals) < nproc:
            try:
                kind, shard, payload, message = q.get(timeout=0.5)
            except queue.Empty:
                dead = [i for i, p in enumerate(procs) if i not in finals and p.exitcode not in (None, 0)]
                if dead:
                    fatal = fatal or f"worker {dead[0]} died (exit code {procs[dead[0]].exitcode})"
                    stop.set()
                    finals.update(dead)
                continue
            if kind == "stats":
                progress.update(shard, payload)
            elif kind == "final":
                progress.update(shard, payload)
                finals.add(shard)
                if message and not fatal:
                    fatal = message
                    stop.set()
            else:
                finals.add(shard)
                fatal = fatal or f"worker {shard} crashed: {payload}"
                stop.set()
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=10)
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
