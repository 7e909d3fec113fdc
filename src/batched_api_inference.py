"""Send every line of a JSONL file of chat requests to an OpenAI-compatible API.

In:  --input, one JSON object per line with a "messages" list (other fields are kept).
Out: --output, one line per answered request, in completion order: the input line plus
     "output", "model", "reasoning" (reasoning content of reasoning models, else null),
     "index" (0-based line of the input), "finish_reason" and "usage".
     --failed_output (default <output>.failed.jsonl): one line per request that did not
     succeed: {"index", "reason", "attempts", "error"}; reasons are rate_limited,
     server_error, connection_error, request_timeout, empty_answer, length (truncated),
     content_filter, bad_request, bad_input, ...

Rerunning the same command resumes: indices already in the output are skipped, so exactly
the missing and failed rows are sent again; the failures file is then rewritten to list
only what is still failed. The API key comes from --key or the environment
(OPENAI_API_KEY, DEEPSEEK_API_KEY for api.deepseek.com); it is never printed or written.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import mmap
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections import Counter

from tqdm import tqdm

from annoy_datasync import batch_api, cli, status
from annoy_datasync import client as client_lib
from annoy_datasync.client import (Bitmap, Settings, StopFlag, messages_problem,
                                   resolve_endpoint, run_shard, scan_indices, scan_input)
from annoy_datasync.jsonl import Appender, InputError, atomic_write, read_jsonl

log = logging.getLogger("annoy_datasync")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="JSONL of requests, each with \"messages\"")
    p.add_argument("--output", required=True, help="JSONL of answers (appended to; resumable)")
    p.add_argument("--model", required=True, help="model name sent to the server")
    p.add_argument("--num_process", type=int, default=1,
                   help="worker processes (default 1; more only helps above ~1000 requests/s)")
    p.add_argument("--num_thread", type=int, default=64,
                   help="requests in flight per process (default 64); "
                        "num_process x num_thread requests are in flight in all")
    p.add_argument("--key", default=None,
                   help="API key; prefer OPENAI_API_KEY / DEEPSEEK_API_KEY in the environment, "
                        "a flag is visible to other users in `ps`")
    p.add_argument("--base_url", default=None,
                   help="server URL, e.g. http://127.0.0.1:8000/v1 for vLLM/sglang (default: "
                        "$OPENAI_BASE_URL, else DeepSeek for deepseek-*, OpenAI for gpt-*/o*)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max_tokens", type=int, default=4096,
                   help="answer length limit; a longer answer is a failure with reason length")
    p.add_argument("--failed_output", default=None,
                   help="failures file (default: <output>.failed.jsonl)")
    p.add_argument("--max_retries", type=int, default=8,
                   help="retries per request of rate limits, 5xx, timeouts, connection errors "
                        "and empty answers (default 8)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds per attempt before giving up on it (default 600)")
    p.add_argument("--backoff", type=float, default=1.0,
                   help="seconds before the first retry, doubled each retry up to 60, with "
                        "jitter; a server's Retry-After wins when longer (default 1)")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N lines of the input (try a few before paying for all)")
    p.add_argument("--transport", choices=("auto", "aiohttp", "httpx"), default="auto",
                   help="HTTP transport under the openai client: aiohttp (the openai[aiohttp] "
                        "extra; about half the CPU per request at hundreds in flight) or "
                        "the SDK's default httpx; auto takes aiohttp when installed")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    batch_api.add_args(p)
    args = p.parse_args(argv)
    batch_api.check_args(p, args)
    if args.num_process < 1 or args.num_thread < 1:
        p.error("--num_process and --num_thread must be at least 1")
    if args.max_retries < 0 or args.timeout <= 0 or args.backoff < 0:
        p.error("--max_retries and --backoff must be >= 0 and --timeout > 0")
    if args.limit is not None and args.limit < 0:
        p.error("--limit must be >= 0")
    if args.failed_output is None:
        args.failed_output = args.output + ".failed.jsonl"
    paths = {os.path.abspath(x) for x in (args.input, args.output, args.failed_output)}
    if len(paths) < 3:
        p.error("--input, --output and --failed_output must be three different files")
    return args


def choose_transport(wanted: str) -> str:
    """The transport to use: `wanted`, or for "auto" aiohttp when the SDK can use it."""
    have = client_lib.http_backend()
    if wanted == "aiohttp" and have != "aiohttp":
        raise InputError("--transport aiohttp: the openai aiohttp extra is not installed; "
                         "run pip install 'openai[aiohttp]' (or use --transport httpx)")
    if wanted == "auto":
        if have != "aiohttp":
            log.info("aiohttp is not installed: using the SDK's httpx transport, which costs "
                     "more CPU per request (pip install 'openai[aiohttp]' to change that)")
        return have
    return wanted


def check_input(path: str) -> None:
    """Fail fast on a file that is not JSONL of requests (a wrong path, a raw-code file)."""
    for lineno, rec in read_jsonl(path):
        why = messages_problem(rec, path, lineno)
        if why:
            raise InputError(f"{why}; is this a messages file (e.g. from build_transform_msg.py)?")
        return


class Progress:
    """The bar: done / failed / in flight, requests per second and tokens."""

    def __init__(self, total: int, disable: bool):
        self.bar = tqdm(total=total, unit="req", dynamic_ncols=True, mininterval=0.5,
                        disable=disable, smoothing=0.1)
        self.snaps: dict[int, dict] = {}
        self.shown = 0

    def update(self, shard: int, snap: dict) -> None:
        self.snaps[shard] = snap
        t = self.totals()
        finished = sum(t["counts"].values())
        ok = t["counts"].get(status.INFERENCE_SUCCEEDED, 0)
        self.bar.set_postfix_str(
            f"ok={ok} failed={finished - ok} in_flight={t['in_flight']} "
            f"tok_in={t['tokens_in']} tok_out={t['tokens_out']}", refresh=False)
        self.bar.update(finished - self.shown)
        self.shown = finished

    def totals(self) -> dict:
        counts: Counter = Counter()
        t = {"in_flight": 0, "tokens_in": 0, "tokens_out": 0, "attempts": 0}
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


def _worker(settings: Settings, shard: int, nshards: int, out: Appender, failed: Appender,
            done: Bitmap, answered: mmap.mmap, stop, q, parent: int) -> None:
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


def run_processes(settings: Settings, nproc: int, out: Appender, failed: Appender, done: Bitmap,
                  answered: mmap.mmap, progress: Progress) -> str | None:
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


def rewrite_failures(path: str, done: Bitmap, answered: mmap.mmap) -> int:
    """Keep one line per index still failed (its latest, with the attempts of all runs);
    drop rows answered since."""
    if not os.path.exists(path):
        return 0
    latest: dict[int, dict] = {}
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                rec = json.loads(raw)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli.setup_logging()
    for noisy in ("httpx", "httpx2", "httpcore", "openai"):  # one INFO line per request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    check_input(args.input)
    if batch_api.requested(args):   # the Batch API, or its offline files
        print(batch_api.run(args, rewrite_failures), file=sys.stderr)
        return 0
    endpoint = resolve_endpoint(args.model, args.base_url, args.key)
    if args.key:
        log.warning("--key is visible to other users in `ps`; prefer OPENAI_API_KEY or "
                    "DEEPSEEK_API_KEY in the environment")
    start = time.monotonic()
    out = Appender(args.output)          # repairs a torn last line left by a killed run
    failed = Appender(args.failed_output)
    models: Counter = Counter()
    done, dups = scan_indices(args.output, models=models)
    others = {m: n for m, n in models.items() if m is not None and m != args.model}
    if others:
        listed = ", ".join(f"{n} from {m!r}" for m, n in sorted(others.items(), key=str))
        raise InputError(
            f"{args.output} already holds answers of another model ({listed}); this run asks "
            f"{args.model!r}, and a rerun only sends the rows that are missing, so the file "
            f"would mix models. Write to a new --output (or pass the model that wrote it)")
    if dups:
        log.warning("%s: %d indices appear more than once (written by another tool?)",
                    args.output, dups)
    limit = args.limit
    nlines, pending = scan_input(args.input, limit, done)
    answered = mmap.mmap(-1, nlines + 1)   # one byte per line, shared with forked workers
    settings = Settings(input=args.input, model=args.model, endpoint=endpoint,
                        temperature=args.temperature, max_tokens=args.max_tokens,
                        timeout=args.timeout, max_retries=args.max_retries, backoff=args.backoff,
                        concurrency=args.num_thread, limit=limit,
                        transport=choose_transport(args.transport))
    log.info("%s: %d requests to send (%d already answered) to %s as %s, %d in flight (%s)",
             args.input, pending, done.count, endpoint.base_url, args.model,
             args.num_process * args.num_thread, settings.transport)
    progress = Progress(pending, disable=args.no_progress)
    try:
        if args.num_process == 1:
            stats, fatal = asyncio.run(run_shard(settings, 0, 1, out, failed, done, StopFlag(),
                                                 lambda snap: progress.update(0, snap), answered))
            progress.update(0, stats.snapshot())
        else:
            fatal = run_processes(settings, args.num_process, out, failed, done, answered, progress)
    finally:
        progress.close()
        out.close()
        failed.close()
    still_failed = rewrite_failures(args.failed_output, done, answered)
    t = progress.totals()
    counts = Counter(t["counts"])
    line = cli.summary(counts, "batched_api_inference:")
    print(f"{line} already_done={done.count} still_failed={still_failed} "
          f"tokens_in={t['tokens_in']} tokens_out={t['tokens_out']} "
          f"attempts={t['attempts']} wall={time.monotonic() - start:.1f}s", file=sys.stderr)
    if fatal:
        raise InputError(f"stopped early: {fatal}. Rows not answered are retried by a rerun.")
    if still_failed:
        log.info("%d requests failed (see %s); rerun the same command to retry them",
                 still_failed, args.failed_output)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
