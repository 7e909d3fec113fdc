"""Batch mode of batched_api_inference.py: the same requests through a provider's Batch API.

The same input, output and failures files as the live mode, so every later step works
unchanged; only the way requests travel differs.

- Request files are in the OpenAI batch format, one line per input line::

      {"custom_id": "row-17", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

  ``custom_id`` carries the 0-based input line, so results join back on it, never on order.
  They are split to stay under the provider's limits (requests per batch, bytes per file).
- Live (``--batch_api``): write the request files beside the output, record them in a state
  file, then upload each, create its batch and record the file and batch ids in the state
  file as soon as the provider returns them. A rerun after a kill re-attaches to what the
  state file names; a file uploaded whose batch id was never recorded is looked up among the
  provider's batches by its input file id before a new batch is created, so no request is
  submitted twice. Polling shows requests done / failed per batch and the expected end;
  each finished batch's results and errors are downloaded, converted to output rows and
  failure rows, and the part is marked collected. Indices already in the output are never
  written again. When every part is collected, a rerun starts a new round with exactly the
  rows still missing from the output (the failed, expired and cancelled ones).
- Offline: `write_offline` writes the request files and stops (for vLLM's ``run_batch`` or a
  provider's console); `read_offline` turns result files (OpenAI's or vLLM's output format)
  into output rows, joining on ``custom_id``.

A row answered through a batch carries ``"batch": true`` in its ``usage``: the summary line
and the run report (report.py) price its tokens at the batch price of the price table.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
from tqdm import tqdm

from . import cli, prices, status
from .client import (OUR_FIELDS, RequestSettings, _sdk_httpx, answered_indices, parse_request,
                     request_params)
from .endpoints import AttemptOutcome, Endpoint, classify_completion, redact, resolve_endpoint
from .indexset import IndexSet
from .jsonl import Appender, InputError, StepError, atomic_text, loads_line, open_lines, where

log = logging.getLogger(__name__)

URL = "/v1/chat/completions"
ID_PREFIX = "row-"
# OpenAI's limits: 50,000 requests per batch and 200 MB per input file
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1000 * 1000
TERMINAL = ("completed", "failed", "expired", "cancelled")
STATE_VERSION = 1
# how far back (seconds) to look for a batch created from a file whose batch id was lost
LOOKBACK = 3600.0

FailureRewriter = Callable[[str, IndexSet, Any], int]


# --- flags ----------------------------------------------------------------------------------
def add_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The batch mode's flags, in a group of their own (returned: --batch_discount, added
    with the price flags, is listed there too)."""
    g = p.add_argument_group("batch mode (half the price, answers within the completion window)")
    g.add_argument("--batch_api", action="store_true",
                   help="send through the provider's Batch API; rerun the same command to "
                        "re-attach after a kill, and again later to resubmit what failed")
    g.add_argument("--poll_interval", metavar="S", type=float, default=60.0,
                   help="seconds between two looks at the batches (default 60)")
    g.add_argument("--batch_state", metavar="FILE", default=None,
                   help="state file of the batches (default: <output>.batch_state.json)")
    g.add_argument("--batch_dir", metavar="DIR", default=None,
                   help="directory of request files and downloads (default: <output>.batch)")
    g.add_argument("--batch_max_requests", metavar="N", type=int, default=MAX_REQUESTS,
                   help=f"requests per batch at most (default {MAX_REQUESTS}, OpenAI's limit)")
    g.add_argument("--batch_max_bytes", metavar="BYTES", type=int, default=MAX_BYTES,
                   help=f"bytes per request file at most (default {MAX_BYTES}, OpenAI's limit)")
    g.add_argument("--batch_max_active", metavar="N", type=int, default=0,
                   help="batches submitted at a time; the next part goes out when one "
                        "finishes (default 0: all at once). Keeps a large run under the "
                        "provider's limit of tokens enqueued per model")
    g.add_argument("--completion_window", metavar="WINDOW", default="24h", help="batch window (default 24h)")
    g.add_argument("--batch_no_wait", action="store_true",
                   help="submit (or look once at the batches) and return; rerun to collect")
    g.add_argument("--batch_cancel", action="store_true",
                   help="cancel the batches of the state file, then collect what they answered")
    g.add_argument("--write_batch_file", default=None, metavar="FILE",
                   help="only write the request file(s) and stop (FILE, or FILE's name with "
                        ".001, .002, ... before the extension when split)")
    g.add_argument("--read_batch_output", nargs="+", default=None, metavar="FILE",
                   help="only turn batch result files (OpenAI or vLLM run_batch format) into "
                        "the output, joining on custom_id")
    return g


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    modes = [args.batch_api, args.write_batch_file is not None, args.read_batch_output is not None]
    if sum(modes) > 1:
        p.error("--batch_api, --write_batch_file and --read_batch_output exclude each other")
    if (args.poll_interval <= 0 or args.batch_max_requests < 1 or args.batch_max_bytes < 1024
            or args.batch_max_active < 0):
        p.error("--poll_interval must be > 0, --batch_max_requests >= 1, --batch_max_bytes "
                ">= 1024, --batch_max_active >= 0")
    if args.batch_discount is not None and not requested(args):
        p.error("--batch_discount goes with --batch_api or --read_batch_output")
    if (args.batch_no_wait or args.batch_cancel) and not args.batch_api:
        p.error("--batch_no_wait and --batch_cancel go with --batch_api")
    if requested(args) and args.base_url and len(args.base_url) > 1:
        p.error("the Batch API modes take one --base_url (a batch goes to one provider)")
    if args.batch_state is None:
        args.batch_state = args.output + ".batch_state.json"
    if args.batch_dir is None:
        args.batch_dir = args.output + ".batch"


def requested(args: argparse.Namespace) -> bool:
    return bool(args.batch_api or args.write_batch_file or args.read_batch_output)


# --- request files --------------------------------------------------------------------------
def custom_id(index: int) -> str:
    return f"{ID_PREFIX}{index}"


def index_of(cid: Any) -> int | None:
    m = re.fullmatch(re.escape(ID_PREFIX) + r"(\d+)", cid) if isinstance(cid, str) else None
    return int(m.group(1)) if m else None


def part_name(path: str, number: int) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}.{number:03d}{ext or '.jsonl'}"


@dataclass
class Part:
    path: str
    count: int = 0
    size: int = 0
    first: int = -1
    last: int = -1
    offset: int = 0      # byte offset of line `first` in the input: collecting starts there


def write_requests(settings: RequestSettings, skip: IndexSet, failed: Appender,
                   counts: Counter, name: Callable[[int], str], max_requests: int,
                   max_bytes: int) -> list[Part]:
    """Stream the input; each pending line becomes one request line in the current part; a
    new part starts before one would exceed `max_requests` or `max_bytes`. Lines that are not
    requests go to the failures file as bad_input. Returns the parts written (files closed)."""
    parts: list[Part] = []
    fh = None
    try:
        with open_lines(settings.input) as src:
            offset = src.tell()
            for index, raw in enumerate(src):
                at, offset = offset, offset + len(raw)
                if settings.limit is not None and index >= settings.limit:
                    break
                if index in skip or not raw.strip():
                    continue
                rec, why = parse_request(raw, settings.input, index)
                if rec is None:
                    log.warning("%s; recorded as %s", why, status.FAIL_BAD_INPUT)
                    failed.write({"index": index, "reason": status.FAIL_BAD_INPUT,
                                  "attempts": 0, "error": why})
                    counts[status.FAIL_BAD_INPUT] += 1
                    continue
                line = (json.dumps({"custom_id": custom_id(index), "method": "POST", "url": URL,
                                    "body": request_params(settings, rec["messages"])},
                                   ensure_ascii=False) + "\n").encode("utf-8")
                if len(line) > max_bytes:
                    why = (f"{where(settings.input, index + 1)}: the request is {len(line)} bytes, "
                           f"more than a whole batch file may hold ({max_bytes})")
                    failed.write({"index": index, "reason": status.FAIL_BAD_REQUEST,
                                  "attempts": 0, "error": why})
                    counts[status.FAIL_BAD_REQUEST] += 1
                    continue
                part = parts[-1] if parts else None
                if part is None or part.count >= max_requests or part.size + len(line) > max_bytes:
                    if fh:
                        fh.close()
                    part = Part(name(len(parts) + 1), first=index, offset=at)
                    parts.append(part)
                    os.makedirs(os.path.dirname(part.path) or ".", exist_ok=True)
                    fh = open(part.path, "wb")
                fh.write(line)
                part.count += 1
                part.size += len(line)
                part.last = index
    finally:
        if fh:
            fh.close()
    return parts


def request_indices(path: str) -> list[int]:
    """The input indices named by a request file we wrote."""
    out = []
    with open_lines(path) as fh:
        for raw in fh:
            if raw.strip():
                idx = index_of(loads_line(raw).get("custom_id"))
                if idx is not None:
                    out.append(idx)
    return out


# --- results --------------------------------------------------------------------------------
def _status_reason(code: int) -> str:
    if code == 429:
        return status.FAIL_RATE_LIMIT
    if code == 408:
        return status.FAIL_TIMEOUT
    if code == 409 or code >= 500:
        return status.FAIL_SERVER
    if code in (400, 413, 422):
        return status.FAIL_BAD_REQUEST
    if code in (401, 402, 403):
        return status.FAIL_AUTH
    if code == 404:
        return status.FAIL_NOT_FOUND
    return status.FAIL_OTHER


ERROR_CODES = {"batch_expired": status.FAIL_BATCH_EXPIRED,
               "batch_cancelled": status.FAIL_BATCH_CANCELLED}


def classify_result(line: dict, max_tokens: int | None) -> AttemptOutcome:
    """One line of a result or error file (OpenAI's or vLLM's): the same `AttemptOutcome` a live
    request gives, or a failure with its reason."""
    resp = line.get("response")
    err = line.get("error")
    if isinstance(resp, dict) and resp.get("status_code") == 200:
        out = classify_completion(resp.get("body"), max_tokens)
        out.attempts = 1
        return out
    if isinstance(resp, dict) and isinstance(resp.get("status_code"), int):
        body = resp.get("body")
        # OpenAI nests {"error": {...}} in the body; vLLM leaves the body empty and puts its
        # error object (or a plain message) in "error"
        msg = (body.get("error") or body) if isinstance(body, dict) and body else err
        if isinstance(msg, dict):
            msg = msg.get("message") or json.dumps(msg)
        code = resp["status_code"]
        return AttemptOutcome(False, _status_reason(code), error=f"{code}: {msg}"[:1000],
                              attempts=1)
    if isinstance(err, dict):
        reason = ERROR_CODES.get(err.get("code"), status.FAIL_OTHER)
        return AttemptOutcome(False, reason,
                              error=f"{err.get('code')}: {err.get('message')}"[:1000],
                              attempts=1)
    return AttemptOutcome(False, status.FAIL_OTHER,
                          error=f"no response in {json.dumps(line)[:200]}", attempts=1)


def index_results(paths: Iterable[str]) -> dict[int, tuple[str, int]]:
    """custom_id index -> (file, byte offset) of its line; a later line for the same index wins
    unless the earlier one succeeded (a retried request answered once is answered)."""
    found: dict[int, tuple[str, int]] = {}
    good: set[int] = set()
    for path in paths:
        with open_lines(path) as fh:
            offset = fh.tell()
            for lineno, raw in enumerate(fh, start=1):
                at, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                try:
                    line = loads_line(raw)
                except (ValueError, RecursionError) as exc:
                    raise InputError(f"{where(path, lineno)}: not valid JSON ({exc}); "
                                     f"is this a batch result file?") from None
                cid = line.get("custom_id") if isinstance(line, dict) else None
                idx = index_of(cid)
                if idx is None:
                    raise InputError(f"{where(path, lineno)}: custom_id {cid!r} is not one of "
                                     f"ours ({ID_PREFIX}<input line>); results of another file?")
                if idx in good:
                    continue
                found[idx] = (path, at)
                resp = line.get("response")
                if isinstance(resp, dict) and resp.get("status_code") == 200:
                    good.add(idx)
    return found


def _read_at(path: str, offset: int, cache: dict) -> dict:
    fh = cache.get(path)
    if fh is None:
        fh = cache[path] = open(path, "rb")
    fh.seek(offset)
    return loads_line(fh.readline())


def answer_row(rec: dict, index: int, model: str, res: AttemptOutcome) -> dict:
    """The output row of an answer; ``usage.batch`` says its tokens cost the batch price
    (inside ``usage`` so that the row keeps the live mode's fields, and a later round that
    answers this row again replaces the mark with its own usage)."""
    for k in OUR_FIELDS:
        rec.pop(k, None)
    usage = dict(res.usage, batch=True) if isinstance(res.usage, dict) else res.usage
    rec.update(output=res.output, model=model, reasoning=res.reasoning, index=index,
               finish_reason=res.finish_reason, usage=usage)
    return rec


@dataclass
class Sink:
    """Where converted results go, with the counts of this run."""

    out: Appender
    failed: Appender
    done: IndexSet
    counts: Counter
    tokens: Counter
    price: prices.Price | None = None     # the batch price; None: unknown

    def fail(self, index: int, reason: str, attempts: int, error: str) -> None:
        self.failed.write({"index": index, "reason": reason, "attempts": attempts, "error": error})
        self.counts[reason] += 1


def convert(settings: RequestSettings, results: dict[int, tuple[str, int]], sink: Sink,
            first: int = 0, offset: int = 0) -> None:
    """Stream the input and write, for each index with a result and not in the output yet, its
    output row or failure row. `first` and its byte `offset` skip the lines before a part."""
    if not results:
        return
    last = max(results)
    cache: dict = {}
    try:
        with open_lines(settings.input, offset) as src:
            for index, raw in enumerate(src, start=first):
                if index > last:
                    break
                if index not in results or index in sink.done:
                    continue
                res = classify_result(_read_at(*results[index], cache), settings.max_tokens)
                if res.usage:
                    sink.tokens["in"] += res.usage.get("prompt_tokens") or 0
                    sink.tokens["out"] += res.usage.get("completion_tokens") or 0
                    sink.tokens["cached"] += res.usage.get("cached_tokens") or 0
                rec, why = parse_request(raw, settings.input, index)
                if rec is None:
                    sink.fail(index, status.FAIL_BAD_INPUT, 0, why)
                elif res.ok:
                    sink.out.write(answer_row(rec, index, settings.model, res))
                    sink.done.add(index)
                    sink.counts[status.INFERENCE_SUCCEEDED] += 1
                else:
                    sink.fail(index, res.reason or status.FAIL_OTHER, res.attempts, res.error)
    finally:
        for fh in cache.values():
            fh.close()


# --- the step -------------------------------------------------------------------------------
def settings_of(args: argparse.Namespace, endpoint: Endpoint | None) -> RequestSettings:
    return RequestSettings(input=args.input, model=args.model,
                           endpoint=endpoint or Endpoint("", "", "none"),
                           temperature=args.temperature, max_tokens=args.max_tokens,
                           timeout=args.timeout, limit=args.limit)


def open_sink(args: argparse.Namespace, price: prices.Price | None) -> Sink:
    done = answered_indices(args.output, args.model)
    return Sink(Appender(args.output), Appender(args.failed_output), done, Counter(), Counter(),
                price)


def finish(args: argparse.Namespace, sink: Sink, already: int, rewrite: FailureRewriter,
           start: float, extra: str = "") -> str:
    """Close the files, rewrite the failures file; the summary line of the run."""
    sink.out.close()
    sink.failed.close()
    still_failed = rewrite(args.failed_output, sink.done, b"")
    line = cli.summary(sink.counts, "batched_api_inference:")
    t = sink.tokens
    # every result with a usage is paid for, a truncated answer's too (as in the live mode)
    cost = ("unknown" if sink.price is None
            else prices.dollars(sink.price.cost(t["in"], t["out"], t["cached"])))
    return (f"{line} already_done={already} still_failed={still_failed} "
            f"tokens_in={t['in']} tokens_out={t['out']} tokens_cached_in={t['cached']} "
            f"cost={cost}{extra} wall={time.monotonic() - start:.1f}s")


def run(args: argparse.Namespace, rewrite: FailureRewriter,
        price: prices.Price | None = None) -> str:
    """Run the batch mode the flags ask for (`requested` is true); returns the summary line.
    `rewrite` is the step's rewrite of the failures file (one line per index still failed);
    `price` the model's listed price (None: unknown), of which the summary takes the batch
    price."""
    start = time.monotonic()
    price = prices.batch_price(price, args.model) if price is not None else None
    if args.write_batch_file:
        return write_offline(args, rewrite, start, price)
    if args.read_batch_output:
        return read_offline(args, rewrite, start, price)
    endpoint = resolve_endpoint(args.model, (args.base_url or [None])[0], args.key)
    client = openai.OpenAI(api_key=endpoint.key, base_url=endpoint.base_url, max_retries=5,
                           timeout=max(args.timeout, 600.0))
    try:
        with state_lock(args.batch_state):
            return run_live(args, endpoint, client, rewrite, start, price)
    finally:
        client.close()


@contextlib.contextmanager
def state_lock(path: str) -> Iterator[None]:
    """Hold ``<state>.lock`` for the run: two runs on one state file would submit twice."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StepError(f"{path}: another run is using these batches (it holds "
                            f"{path}.lock); wait for it or stop it first") from None
        yield


def write_offline(args: argparse.Namespace, rewrite: FailureRewriter, start: float,
                  price: prices.Price | None) -> str:
    sink = open_sink(args, price)
    already = sink.done.count
    target = args.write_batch_file
    parts = write_requests(settings_of(args, None), sink.done, sink.failed, sink.counts,
                           lambda k: part_name(target, k), args.batch_max_requests,
                           args.batch_max_bytes)
    if len(parts) == 1:
        os.replace(parts[0].path, target)
        parts[0].path = target
    for p in parts:
        log.info("wrote %s: %d requests (lines %d..%d), %d bytes",
                 p.path, p.count, p.first + 1, p.last + 1, p.size)
    sink.counts["requests_written"] = sum(p.count for p in parts)
    return finish(args, sink, already, rewrite, start, f" files={len(parts)}")


def read_offline(args: argparse.Namespace, rewrite: FailureRewriter, start: float,
                 price: prices.Price | None) -> str:
    results = index_results(args.read_batch_output)
    with open_lines(args.input) as fh:
        nlines = sum(1 for _ in fh)
    beyond = sum(1 for i in results if i >= nlines)
    if beyond:
        raise InputError(f"{beyond} results name lines past the end of {args.input} "
                         f"({nlines} lines); results of another input file?")
    sink = open_sink(args, price)
    already = sink.done.count
    try:
        convert(settings_of(args, None), results, sink)
    except BaseException:
        sink.out.close()
        sink.failed.close()
        raise
    # lines these results do not cover (a partial run, or files left out): no row, no failure
    missing = 0
    with open_lines(args.input) as fh:
        for index, raw in enumerate(fh):
            if args.limit is not None and index >= args.limit:
                break
            missing += bool(raw.strip()) and index not in results and index not in sink.done
    if missing:
        sink.counts["not_in_results"] = missing
    return finish(args, sink, already, rewrite, start)


# --- the state file -------------------------------------------------------------------------
def load_state(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path) as fh:
            state = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable batch state ({exc}); it names batches that may "
                         f"still run: fix or move it away, then rerun") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise InputError(f"{path}: not a batch state file of this version")
    return state


def save_state(path: str, state: dict) -> None:
    """Write the state whole (temp file, fsync, rename: a kill leaves the old or the new)."""
    with atomic_text(path) as fh:
        json.dump(state, fh, indent=1)


def check_state(state: dict, args: argparse.Namespace, endpoint: Endpoint, path: str) -> None:
    wanted = {"input": os.path.abspath(args.input), "model": args.model,
              "base_url": endpoint.base_url, "input_bytes": os.path.getsize(args.input)}
    for k, v in wanted.items():
        if state.get(k) != v:
            raise InputError(
                f"{path} holds batches of {k} {state.get(k)!r}, this run has {v!r}; run with the "
                f"same flags to collect them, or pass another --batch_state")


def new_round(args: argparse.Namespace, endpoint: Endpoint, sink: Sink) -> dict:
    settings = settings_of(args, endpoint)
    round_no = int(time.time())
    # what a run killed before its state file was written left behind (no batch names it)
    if os.path.isdir(args.batch_dir):
        for name in os.listdir(args.batch_dir):
            if name.startswith("requests-"):
                os.unlink(os.path.join(args.batch_dir, name))
    parts = write_requests(settings, sink.done, sink.failed, sink.counts,
                           lambda k: os.path.join(args.batch_dir, f"requests-{round_no}.{k:03d}.jsonl"),
                           args.batch_max_requests, args.batch_max_bytes)
    state = {"version": STATE_VERSION, "input": os.path.abspath(args.input), "model": args.model,
             "base_url": endpoint.base_url, "input_bytes": os.path.getsize(args.input),
             "round": round_no,
             "parts": [{"request_file": p.path, "count": p.count, "first": p.first, "last": p.last,
                        "offset": p.offset, "file_id": None, "uploaded_at": None, "batch_id": None,
                        "status": None, "collected": False} for p in parts]}
    save_state(args.batch_state, state)
    return state


def find_batch(client: openai.OpenAI, file_id: str, since: float) -> Any:
    """The batch created from `file_id` (newest first, back to `since`), or None."""
    for b in client.batches.list(limit=100):
        if b.input_file_id == file_id:
            return b
        if b.created_at < since:
            return None
    return None


def submit(client: openai.OpenAI, args: argparse.Namespace, state: dict, part: dict) -> None:
    """Upload the part's file and create its batch, each id saved as soon as it is known."""
    if not part["file_id"]:
        part["uploaded_at"] = time.time()
        with open(part["request_file"], "rb") as fh:
            f = client.files.create(file=fh, purpose="batch")
        part["file_id"] = f.id
        save_state(args.batch_state, state)
    if not part["batch_id"]:
        b = find_batch(client, part["file_id"], (part["uploaded_at"] or time.time()) - LOOKBACK)
        if b is None:
            b = client.batches.create(
                input_file_id=part["file_id"], endpoint=URL,
                completion_window=args.completion_window,
                metadata={"annoy_datasync_rows": f"{part['first']}..{part['last']}"})
        else:
            log.info("re-attached to batch %s of %s", b.id, part["request_file"])
        part["batch_id"] = b.id
        part["status"] = b.status
        save_state(args.batch_state, state)


def submit_more(client: openai.OpenAI, args: argparse.Namespace, state: dict) -> None:
    """Submit the parts not submitted yet, at most --batch_max_active running at a time. A
    part whose file went up is always finished first (its batch may exist already)."""
    busy = sum(1 for p in state["parts"] if not p["collected"] and p["file_id"])
    for part in state["parts"]:
        if part["collected"] or part["batch_id"]:
            continue
        if not part["file_id"]:
            if args.batch_max_active and busy >= args.batch_max_active:
                continue
            busy += 1
        submit(client, args, state, part)


def cancel(client: openai.OpenAI, args: argparse.Namespace, endpoint: Endpoint, state: dict,
           sink: Sink) -> None:
    """Cancel the running batches (polling then collects what they answered); the requests of
    parts never submitted become failures with reason batch_cancelled."""
    for part in state["parts"]:
        if part["collected"]:
            continue
        if not part["batch_id"] and part["file_id"]:
            found = find_batch(client, part["file_id"],
                               (part["uploaded_at"] or time.time()) - LOOKBACK)
            part["batch_id"] = found.id if found else None
        if part["batch_id"]:
            client.batches.cancel(part["batch_id"])
            continue
        for idx in request_indices(part["request_file"]):
            if idx not in sink.done:
                sink.fail(idx, status.FAIL_BATCH_CANCELLED, 0, "cancelled before it was submitted")
        part["collected"] = True
        save_state(args.batch_state, state)


def download(client: openai.OpenAI, file_id: str, path: str) -> None:
    """Stream a file's content to `path`, written whole (`atomic_text`: a download that
    breaks off leaves the old file)."""
    try:
        with client.files.with_streaming_response.content(file_id) as resp, \
                atomic_text(path) as fh:
            for chunk in resp.iter_bytes():
                fh.buffer.write(chunk)   # the content as sent: bytes, to the binary buffer
    except _sdk_httpx().HTTPError as exc:    # a connection cut while the body streams
        raise openai.APIConnectionError(message=f"download of {file_id} broke off: {exc}",
                                        request=exc.request) from exc


# errors of a look at a batch that the next poll may not meet; more than this many in a row
# stop the run (a rerun re-attaches)
TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
MAX_POLL_ERRORS = 30

MISSING_REASON = {"expired": status.FAIL_BATCH_EXPIRED, "cancelled": status.FAIL_BATCH_CANCELLED,
                  "failed": status.FAIL_BATCH_FAILED, "completed": status.FAIL_NO_RESULT}


def collect(client: openai.OpenAI, args: argparse.Namespace, endpoint: Endpoint, state: dict,
            part: dict, batch: Any, sink: Sink) -> None:
    """Download a finished batch's results and errors, write their rows, and record every
    request the batch did not answer as a failure with the batch's reason."""
    files = []
    for kind in ("output_file_id", "error_file_id"):
        fid = getattr(batch, kind, None)
        if fid:
            path = f"{part['request_file']}.{kind.split('_')[0]}.jsonl"
            download(client, fid, path)
            files.append(path)
    expected = request_indices(part["request_file"])
    results = index_results(files)
    sent = set(expected)
    strangers = [i for i in results if i not in sent]
    if strangers:
        log.warning("batch %s returned %d results for requests it was not sent (e.g. %s); "
                    "ignored", batch.id, len(strangers), custom_id(strangers[0]))
        for i in strangers:
            del results[i]
    convert(settings_of(args, endpoint), results, sink, part["first"], part["offset"])
    reason = MISSING_REASON.get(batch.status, status.FAIL_OTHER)
    why = f"batch {batch.id} ended {batch.status} without an answer for this request"
    errors = getattr(batch, "errors", None)
    if errors is not None and getattr(errors, "data", None):
        why += ": " + "; ".join(f"{e.code}: {e.message}" for e in errors.data[:3])
    for idx in expected:
        if idx not in results and idx not in sink.done:
            sink.fail(idx, reason, 1, redact(why, endpoint.key)[:1000])
    part["collected"] = True
    save_state(args.batch_state, state)
    for path in files + [part["request_file"]]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class BatchProgress:
    """A bar over all requests of the round: done / failed per batch, elapsed, expected end."""

    def __init__(self, state: dict, disable: bool):
        self.total = sum(p["count"] for p in state["parts"])
        self.bar = tqdm(total=self.total, unit="req", dynamic_ncols=True, disable=disable)
        self.shown = 0
        self.start = time.time()

    def update(self, state: dict, seen: dict[str, Any]) -> None:
        finished = 0
        per_batch = []
        end = 0.0
        now = time.time()
        for p in state["parts"]:
            b = seen.get(p["batch_id"])
            rc = getattr(b, "request_counts", None) if b is not None else None
            ok, bad = (rc.completed, rc.failed) if rc is not None else (0, 0)
            if p["collected"]:
                ok, bad = p["count"] - bad, bad
            finished += ok + bad
            per_batch.append(f"{ok}/{bad}" + ("" if p["collected"] else
                                               f" {p['status'] or 'not submitted'}"))
            if b is not None and not p["collected"] and ok + bad:
                began = getattr(b, "in_progress_at", None) or b.created_at
                end = max(end, now + (now - began) * (p["count"] - ok - bad) / (ok + bad))
        eta = time.strftime(" end~%H:%M:%S", time.localtime(end)) if end else ""
        self.bar.set_postfix_str("done/failed " + ", ".join(per_batch) + eta, refresh=False)
        self.bar.update(min(finished, self.total) - self.shown)
        self.shown = min(finished, self.total)

    def close(self) -> None:
        self.bar.close()


def run_live(args: argparse.Namespace, endpoint: Endpoint, client: openai.OpenAI,
             rewrite: FailureRewriter, start: float, price: prices.Price | None) -> str:
    sink = open_sink(args, price)
    already = sink.done.count
    state = load_state(args.batch_state)
    if state is not None and not all(p["collected"] for p in state["parts"]):
        check_state(state, args, endpoint, args.batch_state)   # batches of this run only
    if state is None or all(p["collected"] for p in state["parts"]):
        if args.batch_cancel:
            raise StepError(f"{args.batch_state}: no batch left to cancel")
        state = new_round(args, endpoint, sink)
        log.info("%s: %d requests in %d batch file(s) (%d already answered)", args.input,
                 sum(p["count"] for p in state["parts"]), len(state["parts"]), already)
    else:
        log.info("%s: re-attaching to %d batch(es)", args.batch_state,
                 sum(not p["collected"] for p in state["parts"]))
    try:
        if args.batch_cancel:
            cancel(client, args, endpoint, state, sink)
        waiting = poll(client, args, endpoint, state, sink)
    except openai.APIError as exc:
        raise StepError(f"{redact(str(exc), endpoint.key)[:500]}; the batches so far are in "
                        f"{args.batch_state}: rerun the same command to re-attach") from None
    finally:
        sink.out.close()
        sink.failed.close()
    sink.counts["batches_waiting"] = waiting
    if waiting:
        log.info("%d batch(es) still running; rerun the same command to collect them", waiting)
    return finish(args, sink, already, rewrite, start, f" batches={len(state['parts'])}")


def poll(client: openai.OpenAI, args: argparse.Namespace, endpoint: Endpoint, state: dict,
         sink: Sink) -> int:
    """Look at the batches every poll interval, collecting each one that finished, until all
    are collected (or once, with --batch_no_wait). Returns how many are still running."""
    progress = BatchProgress(state, args.no_progress)
    seen: dict[str, Any] = {}
    looker = client.with_options(max_retries=0)   # the next poll is the retry
    errors = 0
    try:
        while True:
            submit_more(client, args, state)
            for part in state["parts"]:
                if part["collected"] or not part["batch_id"]:
                    continue
                try:
                    b = looker.batches.retrieve(part["batch_id"])
                except TRANSIENT as exc:
                    errors += 1
                    if errors > MAX_POLL_ERRORS:
                        raise
                    log.warning("looking at batch %s failed (%s); trying again at the next poll",
                                part["batch_id"], redact(str(exc), endpoint.key)[:200])
                    continue
                errors = 0
                seen[b.id] = b
                if b.status != part["status"]:
                    part["status"] = b.status
                    save_state(args.batch_state, state)
                if b.status in TERMINAL:
                    collect(client, args, endpoint, state, part, b, sink)
            progress.update(state, seen)
            waiting = sum(not p["collected"] for p in state["parts"])
            if not waiting or args.batch_no_wait:
                return waiting
            time.sleep(args.poll_interval)
    finally:
        progress.close()
