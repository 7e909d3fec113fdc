"""The request runner: chat completions over a JSONL file of requests, paced, retried, cached.

The step script `batched_api_inference.py` is a shell around this module; where requests go
and what their answers mean is `endpoints.py`, pacing is `pacing.py`, the cache `cache.py`.

- `run_shard` is one worker process: an asyncio loop with up to ``concurrency`` rows in
  progress, each attempt sent through a `Pool` of endpoints, each with reused
  `openai.AsyncOpenAI` clients (their own retries off). A client sends through the SDK's
  aiohttp transport (`openai.DefaultAioHttpClient`, the ``openai[aiohttp]`` extra) when it is
  installed: aiohttp's pool hands out a free connection at once, where the default httpx
  pool scans all its connections for every request. Without aiohttp the worker falls back
  to httpx clients of at most LANE requests each.
  Answers are read with the SDK's raw-response path (``cast_to`` the HTTP response class,
  found on first use) and decoded with `json.loads`: the SDK still builds the request and
  raises its typed errors for every non-2xx status, but we skip building pydantic models we
  would throw away.
  It streams the input, takes the lines of its shard that are not done yet, answers from
  the response cache what it can, and appends each result the moment it completes: answers
  to the output file, failures to the failures file (one ``os.write`` each).
- `complete` is the single place where requests are retried: exponential backoff with jitter,
  honouring ``Retry-After`` / ``retry-after-ms``; every attempt waits for the `Window` and
  the `Pacer`. Errors that no retry can fix (bad key, unknown model, no credit) come back
  with a ``fatal`` message, and `run_shard` then stops the run instead of failing every row.

The API key lives only in memory: `redact` scrubs it from every error text we keep or print.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai

from . import status
from .cache import ResponseCache, cache_key, endpoint_family
from .endpoints import (ERROR_CHARS, MAX_RETRY_AFTER, AttemptOutcome, Endpoint, backoff_delay,
                        classify_completion, classify_exception, model_family, redact)
from .indexset import IndexSet
from .jsonl import Appender, InputError, loads_line, messages_problem, open_lines, where
from .pacing import Pacer, Window, message_chars, parse_limit_headers

log = logging.getLogger(__name__)

OUR_FIELDS = ("output", "model", "reasoning", "index", "finish_reason", "usage")


@dataclass
class RequestSettings:
    """Everything a worker needs; inherited by forked workers (never pickled, never logged)."""

    input: str
    model: str
    endpoint: Endpoint
    temperature: float | None = 0.7
    max_tokens: int | None = 4096
    timeout: float = 600.0
    max_retries: int = 8
    backoff: float = 1.0          # first retry waits about this long, then doubles
    backoff_cap: float = 60.0
    concurrency: int = 64         # requests in flight per worker
    limit: int | None = None      # only input lines with index < limit
    report_every: float = 0.25
    transport: str = "auto"       # "aiohttp", "httpx", or "auto": aiohttp when installed
    rpm: float | None = None      # requests per minute for the whole run (None: learn)
    tpm: float | None = None      # tokens per minute for the whole run (None: learn)
    nshards: int = 1              # processes sharing the limits
    cache_path: str | None = None  # the response cache (SQLite), None: no cache
    sample: int = 0               # sample number, part of the cache key
    endpoints: list[Endpoint] = field(default_factory=list)  # all servers (default: [endpoint])

    def __post_init__(self) -> None:
        if not self.endpoints:
            self.endpoints = [self.endpoint]


# Requests in flight per httpx client (and connections per pool) when aiohttp is missing:
# the httpx pool scans all its connections for every request; measured in bench/.
LANE = 16

def _sdk_httpx() -> Any:
    """The httpx module the SDK is built on (httpx for openai 1-2, httpx2 for openai 3)."""
    for cls in openai.DefaultAsyncHttpxClient.__mro__:
        if cls.__name__ == "AsyncClient":
            return importlib.import_module(cls.__module__.split(".")[0])
    raise ImportError("cannot tell which httpx the openai package uses")


@functools.cache
def raw_response_class() -> Any:
    """``cast_to`` this class, the SDK returns the HTTP response undecoded, after its status
    checks (looked up on first use, not at import)."""
    return _sdk_httpx().Response


@functools.cache
def http_backend() -> str:
    """"aiohttp" when the SDK's aiohttp transport (the ``openai[aiohttp]`` extra) is
    installed, else "httpx"."""
    try:
        openai.DefaultAioHttpClient()     # raises RuntimeError without the extra
    except (RuntimeError, AttributeError):  # AttributeError: an SDK older than the option
        return "httpx"
    return "aiohttp"


def make_client(settings: RequestSettings, connections: int, backend: str,
                endpoint: Endpoint | None = None) -> openai.AsyncOpenAI:
    """A client of `endpoint` (default: the settings' first) whose connection pool holds
    `connections`, sending through aiohttp (`backend` "aiohttp") or httpx ("httpx")."""
    endpoint = endpoint or settings.endpoint
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=connections,
                                                    max_keepalive_connections=connections)
    factory = openai.DefaultAioHttpClient if backend == "aiohttp" else openai.DefaultAsyncHttpxClient
    http = factory(limits=limits, timeout=settings.timeout)
    return openai.AsyncOpenAI(api_key=endpoint.key, base_url=endpoint.base_url,
                              max_retries=0, timeout=settings.timeout, http_client=http)


def request_params(settings: RequestSettings, messages: list) -> dict:
    params: dict[str, Any] = {"model": settings.model, "messages": messages}
    if settings.temperature is not None:
        params["temperature"] = settings.temperature
    if settings.max_tokens is not None:
        # OpenAI's reasoning models take max_completion_tokens instead of max_tokens
        if model_family(settings.model) == "openai" and re.match(r"o\d", settings.model.lower()):
            params["max_completion_tokens"] = settings.max_tokens
        else:
            params["max_tokens"] = settings.max_tokens
    return params


class Member:
    """One endpoint of a `Pool`: its clients (lanes), load and health."""

    def __init__(self, endpoint: Endpoint, clients: list[openai.AsyncOpenAI]) -> None:
        self.endpoint = endpoint
        self.clients = clients
        self.lane_load = [0] * len(clients)
        self.in_flight = 0
        self.sent = 0
        self.failures = 0           # consecutive attempts that failed for the endpoint's sake
        self.aside_until = 0.0      # set aside until then (0: in service)
        self.aside = False
        self.cooldown = Pool.FIRST_COOLDOWN


class Pool:
    """Several servers of one model: each attempt goes to the least-loaded one in service.
    An endpoint whose last `FAILS` attempts failed with a connection error, a 5xx or a
    timeout is set aside for a cool-down (1 s, doubled each time, at most 60 s); then it
    gets one probe attempt at a time until one succeeds."""

    FAILS = 3
    FIRST_COOLDOWN = 1.0
    MAX_COOLDOWN = 60.0

    def __init__(self, members: list[Member]) -> None:
        self.members = members

    def choose(self) -> tuple[Member, int]:
        """The member and lane for the next attempt."""
        now = time.monotonic()
        ready = [m for m in self.members if not m.aside or (m.aside_until <= now and m.in_flight == 0)]
        if not ready:            # all set aside: the one back soonest (its attempt may fail)
            ready = [min(self.members, key=lambda m: m.aside_until)]
        m = min(ready, key=lambda m: (m.in_flight, m.sent))
        lane = min(range(len(m.clients)), key=m.lane_load.__getitem__)
        m.in_flight += 1
        m.lane_load[lane] += 1
        m.sent += 1
        return m, lane

    def release(self, m: Member, lane: int, out: AttemptOutcome | None) -> None:
        m.in_flight -= 1
        m.lane_load[lane] -= 1
        if out is None:
            return
        broken = out.reason in (status.FAIL_CONNECTION, status.FAIL_TIMEOUT) or (
            out.reason == status.FAIL_SERVER and (out.code or 0) >= 500)
        if not broken:
            m.failures, m.aside, m.cooldown = 0, False, self.FIRST_COOLDOWN
            return
        m.failures += 1
        if m.aside or m.failures >= self.FAILS:      # a failed probe, or too many failures
            if len(self.members) > 1:
                if not m.aside:
                    log.warning("%s: %d attempts in a row failed (%s); set aside, probed again "
                                "in %.0f s", m.endpoint.base_url, m.failures, out.reason,
                                m.cooldown)
                m.aside = True
                m.aside_until = time.monotonic() + m.cooldown
                m.cooldown = min(self.MAX_COOLDOWN, m.cooldown * 2)

    async def close(self) -> None:
        for m in self.members:
            for c in m.clients:
                await c.close()


# Statuses that say "too much at once": the window of attempts in flight shrinks on them.
CONGESTION = frozenset({429, 503, 504, 408})


def congestion_signal(out: AttemptOutcome) -> str:
    """How an attempt's outcome steers the `Window`: "ok", "congested" or "neutral"."""
    if out.ok:
        return "ok"
    if out.code in CONGESTION or out.reason == status.FAIL_TIMEOUT:
        return "congested"
    return "neutral"


async def complete(pool: Pool | openai.AsyncOpenAI, settings: RequestSettings,
                   messages: list, pacer: Pacer | None = None, window: Window | None = None,
                   on_attempt: Callable[[AttemptOutcome], None] | None = None) -> AttemptOutcome:
    """Send one request, retrying what is worth retrying, each attempt paced by `pacer`,
    counted in `window` and sent to the least-loaded endpoint of `pool` (or to one client).
    Never raises for API errors: the returned `AttemptOutcome` carries success or the last
    failure, and ``fatal`` if any. `on_attempt` sees the outcome of every attempt."""
    if not isinstance(pool, Pool):
        pool = Pool([Member(settings.endpoint, [pool])])
    params = request_params(settings, messages)
    pacer = pacer or Pacer()
    window = window or Window(1)
    chars, nmsg = message_chars(messages)
    attempt = 0
    while True:
        attempt += 1
        ticket = await window.acquire()
        tokens = pacer.estimate.request(chars, nmsg)
        member = None
        try:
            await pacer.acquire(tokens)
            member, lane = pool.choose()
            ep = member.endpoint
            try:
                # the SDK's generic call: the same request as chat.completions.create without
                # its per-call typed transform; non-2xx answers still raise its typed errors
                resp = await member.clients[lane].post("/chat/completions", body=params,
                                                       cast_to=raw_response_class())
                body = json.loads(resp.content)
            except (openai.OpenAIError, ValueError, RecursionError) as exc:
                out = classify_exception(exc, ep.key, ep.base_url, settings.model)
            else:
                out = classify_completion(body, settings.max_tokens)
                out.limits = parse_limit_headers(resp.headers)
        except BaseException:
            window.release(ticket, "neutral")
            if member is not None:
                pool.release(member, lane, None)
            raise
        window.release(ticket, congestion_signal(out))
        pool.release(member, lane, out)
        out.attempts = attempt
        pacer.observe(out.limits)
        if out.usage:
            used = (out.usage.get("prompt_tokens") or 0) + (out.usage.get("completion_tokens") or 0)
            pacer.settle_tokens(tokens, used)
            pacer.estimate.learn(chars, nmsg, out.usage)
        if out.reason == status.FAIL_RATE_LIMIT:
            pacer.rejected()
        elif out.code is None and out.reason not in (status.FAIL_CONNECTION, status.FAIL_TIMEOUT):
            pacer.accepted()
        if on_attempt:
            on_attempt(out)
        if out.ok or not out.retry or out.fatal or attempt > settings.max_retries:
            return out
        if out.retry_after is not None and out.retry_after > MAX_RETRY_AFTER:
            out.error += f" (the server asked to wait {out.retry_after:.0f} s; not waiting that long)"
            return out
        delay = backoff_delay(attempt, settings.backoff, settings.backoff_cap, out.retry_after)
        if out.reason == status.FAIL_RATE_LIMIT and out.retry_after is not None:
            pacer.pause(out.retry_after)      # nobody in this worker starts before that
        await asyncio.sleep(delay)


# --- the input, the done set ----------------------------------------------------------------
def scan_indices(path: str, models: Counter | None = None) -> tuple[IndexSet, int]:
    """The "index" fields present in a JSONL file, streamed. Returns (set, duplicates).
    When `models` is given, it counts the "model" field of the lines too."""
    done = IndexSet()
    dups = 0
    if not os.path.exists(path):
        return done, 0
    with open_lines(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                rec = loads_line(raw)
                idx = rec.get("index")
            except (ValueError, AttributeError, RecursionError):
                log.warning("%s: skipped an unreadable line while resuming", where(path, lineno))
                continue
            if isinstance(idx, int) and idx >= 0 and not done.add(idx):
                dups += 1
            if models is not None:
                models[rec.get("model")] += 1
    return done, dups


def answered_indices(output: str, model: str) -> IndexSet:
    """The rows already answered in `output`, where a rerun picks up (live or in batches).
    `InputError` when it holds another model's answers: the rows still missing would be
    answered by `model`, and the file would mix models."""
    models: Counter = Counter()
    done, dups = scan_indices(output, models=models)
    others = {m: n for m, n in models.items() if m is not None and m != model}
    if others:
        listed = ", ".join(f"{n} from {m!r}" for m, n in sorted(others.items(), key=str))
        raise InputError(
            f"{output} already holds answers of another model ({listed}); this run asks "
            f"{model!r}, and a rerun only sends the rows that are missing, so the file "
            f"would mix models. Write to a new --output (or pass the model that wrote it)")
    if dups:
        log.warning("%s: %d indices appear more than once (written by another tool?)",
                    output, dups)
    return done


def scan_input(path: str, limit: int | None, done: IndexSet) -> tuple[int, int]:
    """(lines in the file, requests still to send: non-blank, index < limit, not done)."""
    lines = pending = 0
    with open_lines(path) as fh:
        for index, raw in enumerate(fh):
            lines += 1
            if (limit is None or index < limit) and index not in done and raw.strip():
                pending += 1
    return lines, pending


def iter_shard(path: str, shard: int, nshards: int, limit: int | None,
               done: IndexSet) -> Iterator[tuple[int, bytes]]:
    """(index, raw line) of this shard's lines that are not done, streamed."""
    with open_lines(path) as fh:
        for index, raw in enumerate(fh):
            if limit is not None and index >= limit:
                return
            if index % nshards != shard or index in done or not raw.strip():
                continue
            yield index, raw


def parse_request(raw: bytes, path: str, index: int) -> tuple[dict | None, str]:
    """The record and its messages, or None and why not."""
    lineno = index + 1
    try:
        rec = loads_line(raw)
    except (ValueError, RecursionError) as exc:
        torn = "" if raw.endswith(b"\n") else " (torn last line?)"
        return None, f"{where(path, lineno)}: not valid JSON{torn}: {exc}"
    if not isinstance(rec, dict):
        return None, f"{where(path, lineno)}: a JSON {type(rec).__name__}, not an object"
    why = messages_problem(rec, path, lineno)
    if not why:
        at = lone_surrogate_at(rec["messages"], "messages")
        if at:
            # JSON may escape one (a model's text can hold one), but no request body can
            # carry it: the HTTP client encodes bodies as UTF-8, the Batch API reads UTF-8
            # files, and servers' JSON parsers refuse the escape. Bad input, not a failed
            # answer retried on every rerun.
            why = (f"{where(path, lineno)}: {at} holds a lone surrogate (a \\udXXX escape "
                   f"with no pair), which no request can carry; fix or drop the line")
    return (None, why) if why else (rec, "")


def lone_surrogate_at(value: Any, at: str) -> str:
    """Where in `value` (JSON data, named `at`) a string holds a lone surrogate, or ""."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return at
        return ""
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        found = lone_surrogate_at(item, f'{at}["{key}"]' if isinstance(key, str) else f"{at}[{key}]")
        if found:
            return found
    return ""


# --- the worker -----------------------------------------------------------------------------
class Stats:
    """Counts of one worker, sent to the parent as plain dicts."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.in_flight = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.tokens_cached = 0      # prompt tokens the provider served from its prompt cache
        self.attempts = 0
        self.rejected = 0           # attempts answered 429
        self.window = 0.0           # attempts allowed in flight now (see pacing.Window)
        self.limits = ""            # rate limits in force, for the progress bar
        self.cached = 0             # rows answered from the response cache

    def snapshot(self) -> dict:
        return {"counts": dict(self.counts), "in_flight": self.in_flight,
                "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
                "tokens_cached": self.tokens_cached, "attempts": self.attempts, "rejected": self.rejected,
                "window": self.window, "limits": self.limits, "cached": self.cached}


class StopFlag:
    """What `run_shard` polls to stop early (a threading or multiprocessing Event fits too)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


# Stop if the first this-many finished rows all failed as bad requests (wrong parameters
# for this model) or could not connect (wrong URL, server down), before any success: those
# would fail every row. Once a request has succeeded, failures are per row.
FIRST_FAILURES = 8
# Also stop if no attempt has reached a server at all (every one refused or cut off before
# an answer) for this long and this many attempts: a wrong --base_url or a server that is down
# then costs about half a minute, not the retries of FIRST_FAILURES rows one after another
# (minutes with one request in flight). Once any server has answered, failures are per row.
UNREACHABLE_SECONDS = 30.0
UNREACHABLE_ATTEMPTS = 4


async def run_shard(settings: RequestSettings, shard: int, nshards: int, out: Appender,
                    failed: Appender, done: IndexSet, stop: Any = None,
                    report: Callable[[dict], None] | None = None,
                    answered: Any = None) -> tuple[Stats, str | None]:
    """Answer this shard's pending lines. Returns the stats and a fatal message or None.

    ``answered[index] = 1`` is set for each success when given (a byte array shared with the
    parent, which uses it to drop answered rows from the failures file)."""
    stop = stop or StopFlag()
    stats = Stats()
    backend = settings.transport if settings.transport != "auto" else http_backend()
    # aiohttp: one client per endpoint; httpx: clients of at most LANE requests each
    nlanes = 1 if backend == "aiohttp" else -(-settings.concurrency // LANE)
    pool = Pool([Member(ep, [make_client(settings, -(-settings.concurrency // nlanes), backend, ep)
                             for _ in range(nlanes)]) for ep in settings.endpoints])
    pacer = Pacer(settings.rpm, settings.tpm, share=1.0 / settings.nshards,
                  max_tokens=settings.max_tokens)
    # limits unknown: the first attempt goes alone, so that the provider's rate-limit headers
    # are known before the others start (then the window opens, paced by what they said)
    window = Window(settings.concurrency, start=None if pacer.known else 1)
    probing = [not pacer.known]
    cache = ResponseCache(settings.cache_path) if settings.cache_path else None
    family = endpoint_family(settings.endpoint.base_url)
    # rows in progress (each holds one until it is written)
    slots = asyncio.Semaphore(settings.concurrency)
    tasks: set[asyncio.Task] = set()
    fatal: list[str] = []
    finished = asyncio.Event()
    unreachable = {"since": None, "attempts": 0, "heard": False}

    def watch_reach(out: AttemptOutcome) -> None:
        """Stop the run when no server has been reached for UNREACHABLE_SECONDS."""
        if unreachable["heard"]:
            return
        if out.reason != status.FAIL_CONNECTION:
            unreachable["heard"] = True
            return
        now = time.monotonic()
        if unreachable["since"] is None:
            unreachable["since"] = now
        unreachable["attempts"] += 1
        waited = now - unreachable["since"]
        if unreachable["attempts"] >= UNREACHABLE_ATTEMPTS and waited >= UNREACHABLE_SECONDS:
            servers = " / ".join(e.base_url for e in settings.endpoints)
            halt(f"no server answered: {unreachable['attempts']} attempts over {waited:.0f} s "
                 f"all failed with {status.FAIL_CONNECTION}, the last with: {out.error}; "
                 f"is the server at {servers} up? check --base_url")

    def count_attempt(out: AttemptOutcome) -> None:
        watch_reach(out)
        stats.attempts += 1
        if out.usage:       # every answer is paid for, a truncated or empty one too
            stats.tokens_in += out.usage.get("prompt_tokens") or 0
            stats.tokens_out += out.usage.get("completion_tokens") or 0
            stats.tokens_cached += out.usage.get("cached_tokens") or 0
        if out.code == 429:
            stats.rejected += 1
        if probing[0]:
            probing[0] = False
            window.open_fully()

    def fail(index: int, reason: str, attempts: int, error: str) -> None:
        failed.write({"index": index, "reason": reason, "attempts": attempts, "error": error})
        stats.counts[reason] += 1

    def halt(message: str) -> None:
        if not fatal:
            fatal.append(message)
        for t in list(tasks):
            t.cancel()

    async def one(index: int, raw: bytes) -> None:
        try:
            await answer(index, raw)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a row is never lost without a trace
            error = redact(f"{type(exc).__name__}: {exc}", settings.endpoint.key)[:ERROR_CHARS]
            log.error("%s: %s; recorded as %s", where(settings.input, index + 1), error,
                      status.FAIL_OTHER)
            try:
                fail(index, status.FAIL_OTHER, 0, error)
            except OSError as exc2:   # e.g. a full disk: nothing more can be recorded
                halt(f"cannot write {failed.path}: {exc2}")

    def row_done(task: asyncio.Task) -> None:
        # a done callback, not a `finally` in `one`: a task cancelled before its coroutine
        # ever ran (a halt right after the rows were handed out) runs no `finally`, and its
        # slot would never come back (the shard then waited for one for ever)
        tasks.discard(task)
        stats.in_flight -= 1
        slots.release()

    def keep(index: int, rec: dict, answer: dict) -> None:
        for k in OUR_FIELDS:
            rec.pop(k, None)
        rec.update(output=answer.get("output"), model=settings.model,
                   reasoning=answer.get("reasoning"), index=index,
                   finish_reason=answer.get("finish_reason"), usage=answer.get("usage"))
        out.write(rec)
        if answered is not None:
            answered[index] = 1
        stats.counts[status.INFERENCE_SUCCEEDED] += 1

    async def answer(index: int, raw: bytes) -> None:
        """One row: its answer to the output, or its failure to the failures file."""
        rec, why = parse_request(raw, settings.input, index)
        if rec is None:
            log.warning("%s; recorded as %s", why, status.FAIL_BAD_INPUT)
            fail(index, status.FAIL_BAD_INPUT, 0, why)
            return
        key = None
        if cache is not None:
            key = cache_key(family, request_params(settings, rec["messages"]), settings.sample)
            hit = cache.get(key)
            if hit is not None:
                stats.cached += 1
                keep(index, rec, hit)
                return
        res = await complete(pool, settings, rec["messages"], pacer, window, count_attempt)
        if res.ok:
            answer = {"output": res.output, "reasoning": res.reasoning,
                      "finish_reason": res.finish_reason, "usage": res.usage}
            keep(index, rec, answer)
            if cache is not None and key is not None:
                cache.put(key, answer)
            return
        fail(index, res.reason or status.FAIL_OTHER, res.attempts, res.error)
        if res.fatal:
            halt(res.fatal)
        elif (res.reason in (status.FAIL_BAD_REQUEST, status.FAIL_CONNECTION)
              and not stats.counts[status.INFERENCE_SUCCEEDED]
              and stats.counts[res.reason] >= FIRST_FAILURES):
            hint = ("check --model, --temperature and --max_tokens for this server"
                    if res.reason == status.FAIL_BAD_REQUEST else
                    f"is the server at {' / '.join(e.base_url for e in settings.endpoints)} up? "
                    f"check --base_url")
            halt(f"the first {FIRST_FAILURES} requests all failed with {res.reason}, the last "
                 f"with: {res.error}; {hint}")

    async def ticker() -> None:
        while not finished.is_set():
            if stop.is_set():
                halt("")
            if cache is not None:
                cache.flush()
            if report:
                stats.window, stats.limits = window.limit, pacer.describe()
                report(stats.snapshot())
            try:
                await asyncio.wait_for(finished.wait(), settings.report_every)
            except asyncio.TimeoutError:
                pass

    tick = asyncio.create_task(ticker())
    try:
        for index, raw in iter_shard(settings.input, shard, nshards, settings.limit, done):
            await slots.acquire()
            if fatal:
                break
            stats.in_flight += 1
            task = asyncio.create_task(one(index, raw))
            tasks.add(task)
            task.add_done_callback(row_done)
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
    finally:
        finished.set()
        await tick
        for t in list(tasks):
            t.cancel()
        await pool.close()
        if cache is not None:
            cache.close()
    stats.window, stats.limits = window.limit, pacer.describe()
    if report:
        report(stats.snapshot())
    message = next((m for m in fatal if m), None)
    return stats, message
