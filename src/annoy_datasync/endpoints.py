"""Where a request goes and what its answer means: endpoint and key, error classification.

- `resolve_endpoint` picks the base URL and the API key (flag, environment, model family);
  `redact` scrubs the key from every error text we keep or print.
- `classify_completion` reads a 200 answer (success, truncated, filtered, empty) and
  `classify_exception` an error of one attempt (reason, whether a retry can help, whether
  it must stop the run: a rejected key, an unknown model, no credit).
- `parse_retry_after` and `backoff_delay`: how long to wait before the next attempt.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import openai

from . import status
from .jsonl import InputError
from .pacing import parse_limit_headers

DEEPSEEK_URL = "https://api.deepseek.com"
OPENAI_URL = "https://api.openai.com/v1"
NO_KEY = "EMPTY"                       # what local servers (vLLM, sglang) accept as "no key"
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
class AttemptOutcome:
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


def _unexpected(body: Any) -> AttemptOutcome:
    return AttemptOutcome(False, status.FAIL_EMPTY, retry=True,
                          error=f"unexpected response body: {json.dumps(body)[:200]!r}")


def classify_completion(body: Any, max_tokens: int | None) -> AttemptOutcome:
    """A 200 answer, as decoded JSON: success, or truncated / filtered / empty."""
    if not isinstance(body, dict) or "choices" not in body:
        return _unexpected(body)
    choices = body["choices"]
    if not choices:
        return AttemptOutcome(False, status.FAIL_EMPTY, retry=True,
                              error="the answer has no choices")
    choice = choices[0] if isinstance(choices, list) else None
    msg = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(msg, dict):
        return _unexpected(body)
    content = msg.get("content")
    # DeepSeek and sglang say reasoning_content, newer vLLM says reasoning
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    finish = choice.get("finish_reason")
    usage = _usage_dict(body.get("usage"))
    out = AttemptOutcome(True, output=content,
                         reasoning=reasoning if isinstance(reasoning, str) else None,
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


def classify_exception(exc: BaseException, key: str | None, base_url: str,
                       model: str) -> AttemptOutcome:
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
        return AttemptOutcome(False, status.FAIL_TIMEOUT, retry=True, error=text)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        if cause is not None:
            text = redact(f"{text} ({type(cause).__name__}: {cause})", key)[:ERROR_CHARS]
        return AttemptOutcome(False, status.FAIL_CONNECTION, retry=True, error=text)
    if isinstance(exc, (ValueError, openai.APIResponseValidationError)):
        # an empty or truncated 200 body makes the SDK's JSON decoding fail
        return AttemptOutcome(False, status.FAIL_EMPTY, retry=True,
                              error=f"empty or unreadable response body ({text})")
    return AttemptOutcome(False, status.FAIL_OTHER, error=text)


def _classify_status(code: int, err_code: str, text: str, after: float | None, base_url: str,
                     model: str) -> AttemptOutcome:
    """An HTTP error status: reason, whether to retry, whether to stop the run."""
    if code in (401, 403):
        return AttemptOutcome(False, status.FAIL_AUTH, error=text, fatal=(
            f"{base_url} refused the API key ({text}); check the key "
            f"(--key, OPENAI_API_KEY or DEEPSEEK_API_KEY) and --base_url"))
    if code == 402 or (code == 429 and err_code == "insufficient_quota"):
        return AttemptOutcome(False, status.FAIL_AUTH, error=text, fatal=(
            f"{base_url} refused for billing reasons ({text}); top up the account, then rerun"))
    if code == 404:
        return AttemptOutcome(False, status.FAIL_NOT_FOUND, error=text, fatal=(
            f"{base_url} answered 404 for model {model!r} ({text}); check --model, and that "
            f"--base_url ends with the API prefix (e.g. /v1)"))
    if code == 429:
        return AttemptOutcome(False, status.FAIL_RATE_LIMIT, retry=True, error=text,
                              retry_after=after)
    if code == 408:
        return AttemptOutcome(False, status.FAIL_TIMEOUT, retry=True, error=text, retry_after=after)
    if code == 409 or code >= 500:
        return AttemptOutcome(False, status.FAIL_SERVER, retry=True, error=text, retry_after=after)
    if code in (400, 413, 422):
        return AttemptOutcome(False, status.FAIL_BAD_REQUEST, error=text)
    return AttemptOutcome(False, status.FAIL_OTHER, error=text)
