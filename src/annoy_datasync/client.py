"""Chat completions over a JSONL file of requests: endpoint and key, retries, the async worker.

The step script `batched_api_inference.py` is a thin shell around this module:

- `resolve_endpoint` picks the base URL and the API key (flag, environment, model family).
- `run_shard` is one worker process: an asyncio loop with up to ``concurrency`` requests in
  flight over one reused `openai.AsyncOpenAI` client (its own retries off). The client sends
  through the SDK's aiohttp transport (`openai.DefaultAioHttpClient`, the ``openai[aiohttp]``
  extra) when it is installed: aiohttp's pool hands out a free connection at once, where the
  default httpx pool scans all its connections for every request. Without aiohttp the worker
  falls back to httpx clients of at most LANE requests each.
  Answers are read with the SDK's raw-response path (``cast_to`` the HTTP response) and
  decoded with `json.loads`: the SDK still builds the request and raises its typed errors for
  every non-2xx status, but we skip building pydantic models we would throw away.
  It streams the input, takes the lines of its shard that are not done yet, and appends each
  result the moment it completes: answers to the output file, failures to the failures file
  (one ``os.write`` each).
- `complete` is the single place where requests are retried: exponential backoff with jitter,
  honouring ``Retry-After`` / ``retry-after-ms``; errors that no retry can fix (bad key, unknown
  model, no credit) come back with a ``fatal`` message, and `run_shard` then stops the run
  instead of failing every row.

The API key lives only in memory: `redact` scrubs it from every error text we keep or print.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import importlib
import json
import logging
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import openai

from . import status
from .jsonl import Appender, InputError, where
from .cache import ResponseCache, cache_key, endpoint_family
from .pacing import Pacer, Window, message_chars, parse_limit_headers

log = logging.getLogger("annoy_datasync")

DEEPSEEK_URL = "https://api.deepseek.com"
OPENAI_URL = "https://api.openai.com/v1"
NO_KEY = "EMPTY"                       # what local servers (vLLM, sglang) accept as "no key"
OUR_FIELDS = ("output", "model", "reasoning", "index", "finish_reason", "usage")
MAX_RETRY_AFTER = 300.0                # longest server-requested wait we honour, in seconds
ERROR_CHARS = 1000


# --- endpoint and key ----------------------------------------------------------------------
def model_family(model: str) -> str | None:
    """"deepseek", "openai" or None (unknown: needs an explicit base URL)."""
    if "/" in model:          # a Hugging Face id served locally, e.g. deepseek-ai/DeepSeek-R1
        return None
    name = model.lower()
    if name.startswith("deepseek-"):
        return "deepseek"
    if re.match(r"(gpt-|chatgpt-|o1|o3|o4)", name):
        return "openai"
    return None


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    key: str = field(repr=False)
    key_source: str            # "--key", "OPENAI_API_KEY", ... or "none" (placeholder)


def resolve_endpoint(model: str, base_url: str | None, key: str | None,
                     environ: Mapping[str, str] = os.environ) -> Endpoint:
    """Base URL: ``base_url``, else $OPENAI_BASE_URL, else the model family's provider.
    Key: ``key``, else the provider's variable ($DEEPSEEK_API_KEY for api.deepseek.com, then
    $OPENAI_API_KEY), else the placeholder ``EMPTY`` for an explicitly given server."""
    family = model_family(model)
    explicit = base_url or environ.get("OPENAI_BASE_URL")
    url = explicit or {"deepseek": DEEPSEEK_URL, "openai": OPENAI_URL}.get(family or "")
    if not url:
        raise InputError(
            f'--model {model}: unknown model family, so no default server; pass --base_url '
            f'(e.g. http://127.0.0.1:8000/v1 for vLLM or sglang) or set OPENAI_BASE_URL')
    names = ["OPENAI_API_KEY"]
    if "api.deepseek.com" in url:
        names = ["DEEPSEEK_API_KEY", "OPENAI_API_KEY"]
    if key:
        return Endpoint(url.rstrip("/"), key, "--key")
    for name in names:
        if environ.get(name):
            return Endpoint(url.rstrip("/"), environ[name], name)
    if explicit:
        return Endpoint(url.rstrip("/"), NO_KEY, "none")
    raise InputError(f"no API key for {url}: set {names[0]} in the environment "
                     f"(or pass --key, which other users can see in `ps`)")


def redact(text: str, secret: str | None) -> str:
    """`text` without `secret` (the API key) in it."""
    if secret and secret != NO_KEY and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


# --- one request ---------------------------------------------------------------------------
@dataclass
class Outcome:
    """Result of one attempt, or of the last attempt of a request."""

    ok: bool
    reason: str | None = None           # status.FAIL_* when not ok
    retry: bool = False                 # worth another attempt
    error: str = ""
    retry_after: float | None = None    # seconds asked by the server
    fatal: str | None = None            # message that stops the whole run
    output: str | None = None
    reasoning: str | None = None
    finish_reason: str | None = None
    usage: dict | None = None
    attempts: int = 0
    code: int | None = None             # HTTP status of an error answer
    limits: dict = field(default_factory=dict)   # the provider's rate-limit headers, parsed


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        if name == "retry-after":
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            return max(0.0, when.timestamp() - time.time())
    return None


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Wait before attempt ``attempt + 1``: base * 2**(attempt-1), capped, times a jitter in
    [0.5, 1]; never shorter than what the server asked for (up to MAX_RETRY_AFTER)."""
    rng = rng or random
    delay = min(cap, base * 2 ** (attempt - 1)) * (0.5 + 0.5 * rng.random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def _usage_dict(usage: Any) -> dict | None:
    """The token counts of an answer; prompt tokens served from the provider's prompt cache
    (priced lower) are kept as ``cached_tokens`` when the provider reports them."""
    if not isinstance(usage, dict):
        return None
    out = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None:
        cached = usage.get("prompt_cache_hit_tokens")        # DeepSeek's name
    if isinstance(cached, int) and cached > 0:
        out["cached_tokens"] = cached
    return out


def _unexpected(body: Any) -> Outcome:
    return Outcome(False, status.FAIL_EMPTY, retry=True,
                   error=f"unexpected response body: {json.dumps(body)[:200]!r}")


def classify_completion(body: Any, max_tokens: int | None) -> Outcome:
    """A 200 answer, as decoded JSON: success, or truncated / filtered / empty."""
    if not isinstance(body, dict) or "choices" not in body:
        return _unexpected(body)
    choices = body["choices"]
    if not choices:
        return Outcome(False, status.FAIL_EMPTY, retry=True, error="the answer has no choices")
    choice = choices[0] if isinstance(choices, list) else None
    msg = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(msg, dict):
        return _unexpected(body)
    content = msg.get("content")
    # DeepSeek and sglang say reasoning_content, newer vLLM says reasoning
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    finish = choice.get("finish_reason")
    usage = _usage_dict(body.get("usage"))
    out = Outcome(True, output=content, reasoning=reasoning if isinstance(reasoning, str) else None,
                  finish_reason=finish, usage=usage)
    if finish == "length":
        used = (usage or {}).get("completion_tokens")
        out.ok, out.reason = False, status.FAIL_LENGTH
        out.error = (f"truncated: finish_reason length after {used} completion tokens "
                     f"(max_tokens={max_tokens}); raise --max_tokens")
    elif finish == "content_filter":
        out.ok, out.reason = False, status.FAIL_CONTENT_FILTER
        out.error = "finish_reason content_filter: the provider filtered the answer"
    elif not isinstance(content, str) or not content.strip():
        out.ok, out.reason, out.retry = False, status.FAIL_EMPTY, True
        out.error = f"empty answer (finish_reason {finish})"
    return out


def _timed_out(exc: BaseException) -> bool:
    """Whether the deepest cause of `exc` is a timeout. The aiohttp transport reports a
    refused or cut connection as a connect timeout; its cause tells them apart."""
    root, depth = exc, 0
    while root.__cause__ is not None and depth < 20:
        root, depth = root.__cause__, depth + 1
    return isinstance(root, TimeoutError) or "Timeout" in type(root).__name__


def classify_exception(exc: BaseException, key: str | None, base_url: str, model: str) -> Outcome:
    """An exception of one attempt: reason, whether to retry, whether to stop the run."""
    text = redact(f"{type(exc).__name__}: {exc}", key)[:ERROR_CHARS]
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        headers = exc.response.headers if exc.response is not None else None
        after = parse_retry_after(headers)
        err_code = str(getattr(exc, "code", None) or "")
        text = redact(f"{code}: {exc.message}", key)[:ERROR_CHARS]
        out = _classify_status(code, err_code, text, after, base_url, model)
        out.code = code
        out.limits = parse_limit_headers(headers)
        return out
    if isinstance(exc, openai.APITimeoutError) and _timed_out(exc):
        return Outcome(False, status.FAIL_TIMEOUT, retry=True, error=text)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        if cause is not None:
            text = redact(f"{text} ({type(cause).__name__}: {cause})", key)[:ERROR_CHARS]
        return Outcome(False, status.FAIL_CONNECTION, retry=True, error=text)
    if isinstance(exc, (ValueError, openai.APIResponseValidationError)):
        # an empty or truncated 200 body makes the SDK's JSON decoding fail
        return Outcome(False, status.FAIL_EMPTY, retry=True,
                       error=f"empty or unreadable response body ({text})")
    return Outcome(False, status.FAIL_OTHER, error=text)


def _classify_status(code: int, err_code: str, text: str, after: float | None, base_url: str,
                     model: str) -> Outcome:
    """An HTTP error status: reason, whether to retry, whether to stop the run."""
    if code in (401, 403):
        return Outcome(False, status.FAIL_AUTH, error=text, fatal=(
            f"{base_url} refused the API key ({text}); check the key "
            f"(--key, OPENAI_API_KEY or DEEPSEEK_API_KEY) and --base_url"))
    if code == 402 or (code == 429 and err_code == "insufficient_quota"):
        return Outcome(False, status.FAIL_AUTH, error=text, fatal=(
            f"{base_url} refused for billing reasons ({text}); top up the account, then rerun"))
    if code == 404:
        return Outcome(False, status.FAIL_NOT_FOUND, error=text, fatal=(
            f"{base_url} answered 404 for model {model!r} ({text}); check --model, and that "
            f"--base_url ends with the API prefix (e.g. /v1)"))
    if code == 429:
        return Outcome(False, status.FAIL_RATE_LIMIT, retry=True, error=text, retry_after=after)
    if code == 408:
        return Outcome(False, status.FAIL_TIMEOUT, retry=True, error=text, retry_after=after)
    if code == 409 or code >= 500:
        return Outcome(False, status.FAIL_SERVER, retry=True, error=text, retry_after=after)
    if code in (400, 413, 422):
        return Outcome(False, status.FAIL_BAD_REQUEST, error=text)
    return Outcome(False, status.FAIL_OTHER, error=text)


@dataclass
class Settings:
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


# ``cast_to`` this class, the SDK returns the HTTP response undecoded, after its status checks
RawResponse = _sdk_httpx().Response


@functools.cache
def http_backend() -> str:
    """"aiohttp" when the SDK's aiohttp transport (the ``openai[aiohttp]`` extra) is
    installed, else "httpx"."""
    try:
        openai.DefaultAioHttpClient()     # raises RuntimeError without the extra
    except (RuntimeError, AttributeError):  # AttributeError: an SDK older than the option
        return "httpx"
    return "aiohttp"


def make_client(settings: Settings, connections: int, backend: str,
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


def request_params(settings: Settings, messages: list) -> dict:
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

    def release(self, m: Member, lane: int, out: Outcome | None) -> None:
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


def congestion_signal(out: Outcome) -> str:
    """How an attempt's outcome steers the `Window`: "ok", "congested" or "neutral"."""
    if out.ok:
        return "ok"
    if out.code in CONGESTION or out.reason == status.FAIL_TIMEOUT:
        return "congested"
    return "neutral"


async def complete(pool: Pool | openai.AsyncOpenAI, settings: Settings, messages: list,
                   pacer: Pacer | None = None, window: Window | None = None,
                   on_attempt: Callable[[Outcome], None] | None = None) -> Outcome:
    """Send one request, retrying what is worth retrying, each attempt paced by `pacer`,
    counted in `window` and sent to the least-loaded endpoint of `pool` (or to one client).
    Never raises for API errors: the returned `Outcome` carries success or the last
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
                                                       cast_to=RawResponse)
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
class Bitmap:
    """A growable set of non-negative ints, one bit each (1M indices: 125 kB)."""

    def __init__(self) -> None:
        self.bits = bytearray()
        self.count = 0

    def add(self, i: int) -> bool:
        byte = i >> 3
        if byte >= len(self.bits):
            self.bits.extend(bytes(max(byte + 1 - len(self.bits), len(self.bits))))
        mask = 1 << (i & 7)
        if self.bits[byte] & mask:
            return False
        self.bits[byte] |= mask
        self.count += 1
        return True

    def __contains__(self, i: int) -> bool:
        byte = i >> 3
        return byte < len(self.bits) and bool(self.bits[byte] & (1 << (i & 7)))


def scan_indices(path: str, what: str = "index",
                 models: Counter | None = None) -> tuple[Bitmap, int]:
    """Indices (field `what`) present in a JSONL file, streamed. Returns (set, duplicates).
    When `models` is given, it counts the "model" field of the lines too."""
    done = Bitmap()
    dups = 0
    if not os.path.exists(path):
        return done, 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                idx = rec.get(what)
            except (ValueError, AttributeError, RecursionError):
                log.warning("%s: skipped an unreadable line while resuming", where(path, lineno))
                continue
            if isinstance(idx, int) and idx >= 0 and not done.add(idx):
                dups += 1
            if models is not None:
                models[rec.get("model")] += 1
    return done, dups


def scan_input(path: str, limit: int | None, done: Bitmap) -> tuple[int, int]:
    """(lines in the file, requests still to send: non-blank, index < limit, not done)."""
    lines = pending = 0
    with open(path, "rb") as fh:
        for index, raw in enumerate(fh):
            lines += 1
            if (limit is None or index < limit) and index not in done and raw.strip():
                pending += 1
    return lines, pending


def iter_shard(path: str, shard: int, nshards: int, limit: int | None,
               done: Bitmap) -> Iterator[tuple[int, bytes]]:
    """(index, raw line) of this shard's lines that are not done, streamed."""
    with open(path, "rb") as fh:
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
        rec = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        torn = "" if raw.endswith(b"\n") else " (torn last line?)"
        return None, f"{where(path, lineno)}: not valid JSON{torn}: {exc}"
    if not isinstance(rec, dict):
        return None, f"{where(path, lineno)}: a JSON {type(rec).__name__}, not an object"
    why = messages_problem(rec, path, lineno)
    return (None, why) if why else (rec, "")


def messages_problem(rec: dict, path: str, lineno: int) -> str:
    """Why `rec` (line `lineno` of `path`) has no usable "messages", or ""."""
    if "messages" not in rec:
        keys = ", ".join(sorted(rec)) or "none"
        return f'{where(path, lineno)}: no "messages" field (keys: {keys})'
    msgs = rec["messages"]
    if not isinstance(msgs, list) or not msgs:
        what = "an empty list" if isinstance(msgs, list) else type(msgs).__name__
        return f'{where(path, lineno)}: "messages" should be a non-empty list, got {what}'
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


async def run_shard(settings: Settings, shard: int, nshards: int, out: Appender, failed: Appender,
                    done: Bitmap, stop: Any = None,
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

    def count_attempt(out: Outcome) -> None:
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
        finally:
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
            task.add_done_callback(tasks.discard)
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
