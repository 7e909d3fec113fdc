"""Sending at the provider's pace: rate limits, token estimates, adaptive concurrency.

- `Bucket` is a token bucket with continuous refill. A request may start when the level is
  not below zero, and then takes its whole cost, so the level may go negative: a request
  larger than the allowance still passes, and the next one waits for the debt to be paid.
  Waiting requests queue in arrival order and only the first of them watches the clock, so
  they leave one after the other, 1/rate apart, instead of waking together and colliding
  again (the lockstep of retries after a 429). A correction (answer tokens fewer than
  estimated) wakes the first waiter at once.
- `Pacer` holds a requests bucket and a tokens bucket of one worker process. Their rates
  come from ``--rpm`` / ``--tpm`` or, when those are not given, from the provider's
  ``x-ratelimit-limit-requests`` / ``-tokens`` headers; ``-remaining-*`` lowers our level
  when the provider has less left than we think (another job on the same key). A run of
  several processes gives each process an equal share of every limit (requests are dealt
  to the processes by index, so their loads are equal): the whole run stays under it.
- `TokenEstimate` guesses the tokens of a request before sending it: characters of the
  messages divided by a characters-per-token ratio, plus a few tokens per message, plus the
  expected answer length. Both the ratio (start 4, about right for English and code with
  GPT-style tokenizers) and the expected answer length (start: a quarter of max_tokens,
  at most 1,000) are running averages corrected from every answer's ``usage``; the
  difference between what was reserved and what was used is settled with the bucket.
- `Window` is the number of attempts allowed on the wire: multiplicative decrease (halved on
  429, 503 or a timeout), then additive increase (one more per window of good answers) for
  one window, then one more per good answer until the next decrease; between 1 and the
  configured maximum. A burst of 429s halves it once, not once per 429:
  only a signal from an attempt started after the last decrease counts.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

# Pace at this fraction of a known limit: the slack refills the server's burst allowance,
# which absorbs the jitter of our timers and of the network.
HEADROOM = 0.95
# Our own burst allowance, in seconds of the rate: small, so that the first requests of a
# run do not empty the server's allowance (providers allow about one second).
BURST_SECONDS = 0.25


class Bucket:
    """Continuous-refill token bucket: ``rate`` per second, at most ``capacity`` saved up."""

    def __init__(self, rate: float, capacity: float, now: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.stamp = time.monotonic() if now is None else now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a request may start (0: now)."""
        self._refill(now)
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def take(self, cost: float, now: float) -> None:
        self._refill(now)
        self.level -= cost

    def settle(self, delta: float, now: float) -> None:
        """Give back (delta > 0) or take more (delta < 0) after the true cost is known."""
        self._refill(now)
        self.level = min(self.capacity, self.level + delta)

    def cap(self, available: float, now: float) -> None:
        """The provider says only `available` is left: never believe we have more."""
        self._refill(now)
        self.level = min(self.level, available)

    def set_rate(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.level = min(self.level, capacity)


def parse_duration(text: str) -> float | None:
    """Seconds in a rate-limit reset value: ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``, ``"0.5"``."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def parse_limit_headers(headers: Mapping[str, str] | None) -> dict[str, float]:
    """The provider's rate-limit headers as numbers: keys ``limit_requests``,
    ``remaining_tokens``, ``reset_requests`` (seconds), ... (only those present)."""
    out: dict[str, float] = {}
    if not headers:
        return out
    for what in ("limit", "remaining", "reset"):
        for kind in ("requests", "tokens"):
            value = headers.get(f"x-ratelimit-{what}-{kind}")
            if value is None:
                continue
            number = parse_duration(value) if what == "reset" else _number(value)
            if number is not None and math.isfinite(number) and number >= 0:
                out[f"{what}_{kind}"] = number
    return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def message_chars(messages: Any) -> tuple[int, int]:
    """(characters of text, number of messages) of a chat request's messages."""
    chars = count = 0
    for m in messages if isinstance(messages, list) else ():
        count += 1
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):          # parts: [{"type": "text", "text": ...}]
            chars += sum(len(p["text"]) for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return chars, count


class TokenEstimate:
    """Tokens of a request before it is sent, corrected from the answers' ``usage``."""

    PER_MESSAGE = 4          # role and separators, as chat templates add them
    WEIGHT = 0.05            # of each new observation in the running averages

    def __init__(self, max_tokens: int | None) -> None:
        self.chars_per_token = 4.0
        self.answer = float(min(1000, (max_tokens or 4096) / 4))
        self.seen = 0

    def prompt(self, chars: int, messages: int) -> float:
        return chars / self.chars_per_token + self.PER_MESSAGE * messages

    def request(self, chars: int, messages: int) -> float:
        return self.prompt(chars, messages) + self.answer

    def learn(self, chars: int, messages: int, usage: Mapping[str, Any] | None) -> None:
        if not usage:
            return
        prompt, answer = usage.get("prompt_tokens"), usage.get("completion_tokens")
        # the first observations count fully, then a running average
        w = max(self.WEIGHT, 1.0 / (self.seen + 1))
        if isinstance(prompt, int) and prompt > self.PER_MESSAGE * messages and chars > 0:
            ratio = chars / (prompt - self.PER_MESSAGE * messages)
            self.chars_per_token += w * (min(max(ratio, 0.5), 20.0) - self.chars_per_token)
        if isinstance(answer, int) and answer >= 0:
            self.answer += w * (answer - self.answer)
        self.seen += 1


class Pacer:
    """When the next attempt of one worker may start: rate limits, and pauses a server asked
    for. ``share`` is this worker's fraction of every limit (1 / number of processes)."""

    ACCEPTED_SECONDS = 5.0
    GROW_START = 0.02        # an inferred rate's growth a second below the ceiling ...
    GROW_DOUBLING = 2.0      # ... and above it, doubling every this many seconds there
    FORGET_ABOVE = 4.0       # an inferred rate this many times what is used is dropped

    def __init__(self, rpm: float | None = None, tpm: float | None = None, share: float = 1.0,
                 max_tokens: int | None = None) -> None:
        self.share = share
        self.given = {"requests": rpm, "tokens": tpm}
        self.limits: dict[str, float | None] = {"requests": rpm, "tokens": tpm}  # per minute, whole run
        self.buckets: dict[str, Bucket | None] = {"requests": None, "tokens": None}
        self.estimate = TokenEstimate(max_tokens)
        self.not_before = 0.0
        self.learned = False          # a limit came from the provider's headers
        self.inferred = False         # the requests limit was inferred from 429s
        self._accepted: deque[float] = deque()   # times of answered attempts, last seconds
        self._last_cut = 0.0
        self._last_429 = 0.0
        self._grown = 0.0             # when the inferred rate last grew
        self._ceiling: float | None = None   # the inferred limit a 429 last cut (per minute)
        self._above = 0.0             # since when the inferred limit is above that
        self._queue = asyncio.Lock()  # FIFO: waiters leave in arrival order
        self._wake = asyncio.Event()  # set when the buckets gained (a correction, new limits)
        for kind, limit in self.limits.items():
            if limit:
                self._set_limit(kind, limit)

    @property
    def known(self) -> bool:
        return any(b is not None for b in self.buckets.values())

    def _set_limit(self, kind: str, per_minute: float) -> None:
        self.limits[kind] = per_minute
        rate = per_minute / 60.0 * self.share * HEADROOM
        capacity = max(1.0, rate * BURST_SECONDS)
        b = self.buckets[kind]
        if b is None:
            self.buckets[kind] = Bucket(rate, capacity)
        else:
            b.set_rate(rate, capacity)
        self._wake.set()

    async def acquire(self, tokens: float) -> None:
        """Wait until one request of about `tokens` tokens may start, and take its cost."""
        if not self.known and self.not_before <= time.monotonic():
            return
        async with self._queue:
            while True:
                now = time.monotonic()
                wait = self.not_before - now
                for b in self.buckets.values():
                    if b is not None:
                        wait = max(wait, b.wait(now))
                if wait <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            for kind, cost in (("requests", 1.0), ("tokens", tokens)):
                b = self.buckets[kind]
                if b is not None:
                    b.take(cost, now)

    def settle_tokens(self, reserved: float, used: float) -> None:
        b = self.buckets["tokens"]
        if b is not None:
            b.settle(reserved - used, time.monotonic())
            if used < reserved:
                self._wake.set()

    def pause(self, seconds: float) -> None:
        """No attempt starts within `seconds` (a server's Retry-After)."""
        self.not_before = max(self.not_before, time.monotonic() + seconds)

    def observe(self, info: Mapping[str, float]) -> None:
        """Take in the provider's rate-limit headers of one answer (see parse_limit_headers)."""
        now = time.monotonic()
        for kind in ("requests", "tokens"):
            limit = info.get(f"limit_{kind}")
            if limit and not self.given[kind] and (limit != self.limits[kind] or self.inferred):
                self._set_limit(kind, limit)
                self.learned = True
                if kind == "requests":
                    self.inferred = False
            left = info.get(f"remaining_{kind}")
            b = self.buckets[kind]
            if left is not None and b is not None:
                b.cap(left * self.share, now)

    def rejected(self) -> None:
        """A 429 came back: the provider's allowance is spent, whatever we believed. With no
        limit known, the rate the server accepted over the last seconds becomes one
        (`inferred`). That first guess is often far too low: the answers counted are those of
        the first burst, however many happened to come back before the first 429. A later
        429 lowers it by 15% (at most once a second; down to what was accepted over the last
        seconds when that is lower, but never below half)."""
        now = time.monotonic()
        self._last_429 = now
        for b in self.buckets.values():
            if b is not None:
                b.cap(0.0, now)
        if self.buckets["requests"] is None and len(self._accepted) >= 2:
            self.inferred = True
            self._last_cut = self._grown = self._above = now
            self._ceiling = None      # unpaced when it came: no rate known to be too high
            self._set_limit("requests", self._accepted_rate(now) * 60.0 / self.share / HEADROOM)
            self.buckets["requests"].cap(0.0, now)
        elif self.inferred and now - self._last_cut > 1.0:
            self._last_cut = self._grown = now
            limit = self._ceiling = self.limits["requests"]
            measured = self._accepted_rate(now) * 60.0 / self.share / HEADROOM
            self._set_limit("requests", max(0.5 * limit, min(0.85 * limit, measured)))

    def _accepted_rate(self, now: float) -> float:
        """Answers per second of this worker over the last seconds (over at least one)."""
        while self._accepted and self._accepted[0] < now - self.ACCEPTED_SECONDS:
            self._accepted.popleft()
        if len(self._accepted) < 2:
            return 0.0
        return (len(self._accepted) - 1) / max(1.0, now - self._accepted[0])

    def accepted(self) -> None:
        """An attempt was answered (not 429): the server took it. An inferred rate grows by
        GROW_START a second while below the rate a 429 last came at (the ceiling); above it
        (or from the first guess, made unpaced: no ceiling), the faster the longer it has
        been there: the growth doubles every GROW_DOUBLING seconds, up to doubling the rate
        every second. An inferred rate far above what is used (a server that refused for a
        moment only) is forgotten: the run is unpaced again until the next 429."""
        now = time.monotonic()
        self._accepted.append(now)
        while self._accepted and self._accepted[0] < now - self.ACCEPTED_SECONDS:
            self._accepted.popleft()
        if not self.inferred:
            return
        quiet = now - self._last_429
        limit = self.limits["requests"]
        if self._ceiling is not None and limit < self._ceiling:
            growth = self.GROW_START          # back towards a rate a 429 came at: gently
            self._above = now
        else:
            growth = min(1.0, self.GROW_START * 2.0 ** ((now - self._above) / self.GROW_DOUBLING))
        limit *= (1.0 + growth) ** max(0.0, now - self._grown)
        self._grown = now
        used = len(self._accepted) / self.ACCEPTED_SECONDS * 60.0 / self.share / HEADROOM
        if quiet > self.ACCEPTED_SECONDS and limit > self.FORGET_ABOVE * used:
            self.inferred = False
            self.limits["requests"] = self.buckets["requests"] = None
            self._wake.set()
        else:
            self._set_limit("requests", limit)

    def describe(self) -> str:
        parts = [f"{kind[:3]}/min={self.limits[kind]:.0f}" for kind in ("requests", "tokens")
                 if self.limits[kind]]
        return " ".join(parts)


class Window:
    """Attempts allowed in flight at once: additive increase, multiplicative decrease."""

    def __init__(self, maximum: int, start: int | None = None) -> None:
        self.maximum = maximum
        self.limit = float(min(maximum, start or maximum))
        self.in_flight = 0
        self.started = 0            # attempts started so far
        self.cut_at = -1            # value of `started` at the last decrease
        self.decreases = 0
        self.good = 0               # "ok" answers since the last decrease
        self._waiting: deque[asyncio.Future] = deque()   # FIFO; only those with room are woken
        self._granted = 0           # woken waiters that have not taken their room yet

    def _cap(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> int:
        """Wait for room; returns the attempt's number (give it back to `release`)."""
        if self._waiting or self.in_flight + self._granted >= self._cap():
            fut = asyncio.get_running_loop().create_future()
            self._waiting.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():   # room given, never taken: pass it on
                    self._granted -= 1
                    self._wake()
                else:
                    try:
                        self._waiting.remove(fut)
                    except ValueError:
                        pass
                raise
            self._granted -= 1
        self.in_flight += 1
        self.started += 1
        return self.started

    def _wake(self) -> None:
        while self._waiting and self.in_flight + self._granted < self._cap():
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                self._granted += 1

    def release(self, ticket: int, signal: str) -> None:
        """`signal`: "ok" (grow), "congested" (429, 503, timeout: shrink) or "neutral"."""
        self.in_flight -= 1
        if signal == "ok":
            # one more per window of answers; after a whole window without congestion, one
            # more per answer (doubling per window), so it is back to full within a few windows
            step = 1.0 if self.good >= self.limit else 1.0 / max(1.0, self.limit)
            self.limit = min(float(self.maximum), self.limit + step)
            self.good += 1
        elif signal == "congested" and ticket > self.cut_at:
            self.limit = max(1.0, self.limit / 2)
            self.good = 0
            self.cut_at = self.started
            self.decreases += 1
        self._wake()

    def open_fully(self) -> None:
        """After the first answer of a run whose limits were unknown (see run_shard)."""
        self.limit = float(self.maximum)
        self._wake()
