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
import logging
import mmap
import os
import sys
import time
from collections import Counter

from annoy_datasync import cache as cache_lib
from annoy_datasync import batch_api, cli, layout, prices
from annoy_datasync import client as client_lib
from annoy_datasync.client import (RequestSettings, StopFlag, answered_indices, run_shard,
                                   scan_input)
from annoy_datasync.endpoints import resolve_endpoint
from annoy_datasync.fanout import Progress, rewrite_failures, run_processes
from annoy_datasync.jsonl import Appender, StepError, read_jsonl, require_messages

log = logging.getLogger("annoy_datasync.batched_api_inference")


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    p.add_argument("--input", required=True, help="JSONL of requests, each with \"messages\"")
    p.add_argument("--output", required=True, help="JSONL of answers (appended to; resumable)")
    p.add_argument("--model", required=True, help="model name sent to the server")
    p.add_argument("--num_process", type=int, default=1,
                   help="worker processes (default 1; more only helps when one process's CPU "
                        "is the limit: bench/bench_inference.py shows where that is)")
    p.add_argument("--num_thread", type=int, default=64,
                   help="requests in flight per process (default 64); "
                        "num_process x num_thread requests are in flight in all")
    p.add_argument("--key", default=None,
                   help="API key; prefer OPENAI_API_KEY / DEEPSEEK_API_KEY in the environment, "
                        "a flag is visible to other users in `ps`")
    p.add_argument("--base_url", action="append", default=None,
                   help="server URL, e.g. http://127.0.0.1:8000/v1 for vLLM/sglang (default: "
                        "$OPENAI_BASE_URL, else DeepSeek for deepseek-*, OpenAI for gpt-*/o*); "
                        "give it several times for several servers of the same model: each "
                        "request goes to the least-loaded one, a failing one is set aside and "
                        "probed again later")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max_tokens", type=int, default=4096,
                   help="answer length limit; a longer answer is a failure with reason length")
    p.add_argument("--failed_output", default=None,
                   help=f"failures file (default: {layout.side_file('<output>', layout.FAILED)})")
    p.add_argument("--max_retries", type=int, default=8,
                   help="retries per request of rate limits, 5xx, timeouts, connection errors "
                        "and empty answers (default 8)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds per attempt before giving up on it (default 600)")
    p.add_argument("--backoff", type=float, default=1.0,
                   help="seconds before the first retry, doubled each retry up to 60, with "
                        "jitter; a server's Retry-After wins when longer (default 1)")
    p.add_argument("--rpm", type=float, default=None,
                   help="requests per minute allowed for the whole run (all processes); "
                        "default: learned from the provider's x-ratelimit-* headers, if any")
    p.add_argument("--tpm", type=float, default=None,
                   help="tokens per minute (prompt + answer) allowed for the whole run; "
                        "default: learned from the provider's headers, if any")
    p.add_argument("--no_cache", action="store_true",
                   help="neither read nor write the response cache")
    p.add_argument("--cache_dir", default=None,
                   help="directory of the response cache, responses.sqlite3 (default: "
                        "$ANNOY_DATASYNC_CACHE, else $XDG_CACHE_HOME/annoy_datasync, else "
                        "~/.cache/annoy_datasync); delete that file to clear the cache")
    p.add_argument("--sample", type=int, default=0,
                   help="sample number, part of the cache key: to draw another sample of the "
                        "same requests at temperature > 0, run again with another number "
                        "(default 0)")
    p.add_argument("--price_in", type=float, default=None,
                   help="US dollars per million prompt tokens (default: the price table)")
    p.add_argument("--price_out", type=float, default=None,
                   help="US dollars per million answer tokens (default: the price table)")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N lines of the input (try a few before paying for all)")
    p.add_argument("--transport", choices=("auto", "aiohttp", "httpx"), default="auto",
                   help="HTTP transport under the openai client: aiohttp (the openai[aiohttp] "
                        "extra; less CPU per request, bench/bench_inference.py compares) or "
                        "the SDK's default httpx; auto takes aiohttp when installed")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    cli.add_price_args(p, batch_api.add_args(p))
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of flag values and combinations; fills in the default --failed_output."""
    cli.check_price_args(p, args)
    batch_api.check_args(p, args)
    if args.num_process < 1 or args.num_thread < 1:
        p.error("--num_process and --num_thread must be at least 1")
    if args.max_retries < 0 or args.timeout <= 0 or args.backoff < 0:
        p.error("--max_retries and --backoff must be >= 0 and --timeout > 0")
    for name in ("rpm", "tpm"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            p.error(f"--{name} must be > 0")
    for name in ("price_in", "price_out"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            p.error(f"--{name} must be >= 0")
    if args.limit is not None and args.limit < 0:
        p.error("--limit must be >= 0")
    if args.failed_output is None:
        args.failed_output = layout.side_file(args.output, layout.FAILED)
    paths = {os.path.abspath(x) for x in (args.input, args.output, args.failed_output)}
    if len(paths) < 3:
        p.error("--input, --output and --failed_output must be three different files")


def choose_transport(wanted: str) -> str:
    """The transport to use: `wanted`, or for "auto" aiohttp when the SDK can use it."""
    have = client_lib.http_backend()
    if wanted == "aiohttp" and have != "aiohttp":
        raise StepError("--transport aiohttp: the openai aiohttp extra is not installed; "
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
        require_messages(rec, path, lineno)
        return


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    cli.setup_logging()
    for noisy in ("httpx", "httpx2", "httpcore", "openai"):  # one INFO line per request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    check_input(args.input)
    price = prices.resolve(args.model, args.price_in, args.price_out, args.prices,
                           args.batch_discount)
    if price is None:
        log.info("no price known for %s: costs are not shown (pass --price_in and --price_out, "
                 "or add the model to %s)", args.model, args.prices or prices.DEFAULT_TABLE)
    if batch_api.requested(args):   # the Batch API, or its offline files
        print(batch_api.run(args, rewrite_failures, price), file=sys.stderr)
        return 0
    endpoints = [resolve_endpoint(args.model, url, args.key) for url in args.base_url or [None]]
    endpoint = endpoints[0]
    if args.key:
        log.warning("--key is visible to other users in `ps`; prefer OPENAI_API_KEY or "
                    "DEEPSEEK_API_KEY in the environment")
    start = time.monotonic()
    done = answered_indices(args.output, args.model)   # refuses before anything is opened
    cache_path = None if args.no_cache else os.path.join(
        args.cache_dir or cache_lib.default_dir(), cache_lib.FILENAME)
    if cache_path:      # created here, before the workers (they raced to create it)
        cache_lib.check_usable(cache_path)
    out = Appender(args.output)          # repairs a torn last line left by a killed run
    failed = Appender(args.failed_output)
    limit = args.limit
    nlines, pending = scan_input(args.input, limit, done)
    answered = mmap.mmap(-1, nlines + 1)   # one byte per line, shared with forked workers
    settings = RequestSettings(
        input=args.input, model=args.model, endpoint=endpoint, endpoints=endpoints,
        temperature=args.temperature, max_tokens=args.max_tokens, timeout=args.timeout,
        max_retries=args.max_retries, backoff=args.backoff, concurrency=args.num_thread,
        limit=limit, transport=choose_transport(args.transport), rpm=args.rpm, tpm=args.tpm,
        nshards=args.num_process,
        cache_path=cache_path, sample=args.sample)
    log.info("%s: %d requests to send (%d already answered) to %s as %s, %d in flight (%s)",
             args.input, pending, done.count, " + ".join(e.base_url for e in endpoints), args.model,
             args.num_process * args.num_thread, settings.transport)
    progress = Progress(pending, disable=args.no_progress, price=price)
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
    spent = progress.cost(t)
    print(f"{line} from_cache={t['cached']} already_done={done.count} still_failed={still_failed} "
          f"tokens_in={t['tokens_in']} tokens_out={t['tokens_out']} "
          f"tokens_cached_in={t['tokens_cached']} "
          f"cost={'unknown' if spent is None else prices.dollars(spent)} "
          f"attempts={t['attempts']} rate_limited_attempts={t['rejected']} wall={time.monotonic() - start:.1f}s", file=sys.stderr)
    if fatal:
        raise StepError(f"stopped early: {fatal}. Rows not answered are retried by a rerun.")
    if still_failed:
        log.info("%d requests failed (see %s); rerun the same command to retry them",
                 still_failed, args.failed_output)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
