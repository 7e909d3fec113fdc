"""Rate-limit buckets, header parsing, token estimates and the adaptive window."""

from __future__ import annotations

import asyncio

import pytest

from annoy_datasync import pacing
from annoy_datasync.pacing import (Bucket, Pacer, TokenEstimate, Window, message_chars,
                                   parse_duration, parse_limit_headers)


def test_bucket_refills_continuously_and_may_go_into_debt():
    b = Bucket(rate=10.0, capacity=2.0, now=0.0)
    assert b.wait(0.0) == 0.0
    b.take(1.0, 0.0)
    b.take(1.0, 0.0)
    assert b.wait(0.0) == 0.0                # level exactly zero: the next may start
    b.take(5.0, 0.0)                         # larger than the allowance: passes, into debt
    assert b.wait(0.0) == pytest.approx(0.5)
    assert b.wait(0.3) == pytest.approx(0.2)
    b.settle(+3.0, now=0.3)                  # it cost less than taken
    assert b.wait(0.3) == 0.0 and b.level == pytest.approx(1.0)
    b.cap(0.0, now=10.0)                     # full by then, but the server says empty
    b.take(1.0, 10.0)
    assert b.wait(10.0) == pytest.approx(0.1)


@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.25", 0.25),
    ("soon", None), ("1x", None), ("", None),
])
def test_reset_durations(text, seconds):
    got = parse_duration(text)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


def test_limit_headers():
    info = parse_limit_headers({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "12",
                                "x-ratelimit-reset-requests": "1m2s", "x-ratelimit-limit-tokens": "bad",
                                "retry-after": "3"})
    assert info == {"limit_requests": 600.0, "remaining_requests": 12.0, "reset_requests": 62.0}
    assert parse_limit_headers(None) == {}


def test_token_estimate_learns_from_usage():
    messages = [{"role": "system", "content": "x" * 100},
                {"role": "user", "content": [{"type": "text", "text": "y" * 500}]}]
    chars, n = message_chars(messages)
    assert (chars, n) == (600, 2)
    est = TokenEstimate(max_tokens=4096)
    assert est.request(chars, n) == pytest.approx(600 / 4 + 8 + 1000)
    # the provider's tokenizer makes 3 characters a token and answers are about 50 tokens
    for _ in range(60):
        est.learn(chars, n, {"prompt_tokens": 200 + 8, "completion_tokens": 50})
    assert est.request(chars, n) == pytest.approx(208 + 50, rel=0.05)


def test_message_chars_counts_the_text_of_any_content_parts_the_messages_check_lets_through():
    """The messages check (jsonl.messages_problem) takes any list of objects as content parts:
    parts without text, or whose "text" is not a string, count no characters, they do not
    stop the step."""
    parts = [{"type": "image_url", "image_url": {"url": "data:,"}}, {"type": "text", "text": 5},
             {"type": "text", "text": ["a"]}, {"type": "text", "text": "abc"}]
    assert message_chars([{"role": "user", "content": parts}]) == (3, 1)


def test_pacer_learns_limits_from_headers_and_splits_them():
    p = Pacer(share=0.5)
    assert not p.known
    p.observe({"limit_requests": 600.0, "limit_tokens": 60000.0})
    assert p.known and p.learned
    assert p.buckets["requests"].rate == pytest.approx(600 / 60 * 0.5 * 0.95)
    assert p.buckets["tokens"].rate == pytest.approx(60000 / 60 * 0.5 * 0.95)
    given = Pacer(rpm=120.0)
    given.observe({"limit_requests": 600.0})                 # a flag wins over headers
    assert given.limits["requests"] == 120.0 and not given.learned


def test_pacer_spreads_a_queue_of_attempts(monkeypatch):
    """30 waiters at 38 a second: about 10 go at once (a quarter second of allowance), the
    rest spread out, never early. Checked on the instants at which the pacer let each go (its
    own clock readings), not on when the test saw them: a loaded machine may wake a waiter
    late, and after such a stall the allowance saved up meanwhile lets the next ones go
    together, as a token bucket should (a test that forbade that failed on a busy machine)."""
    granted = []
    take = pacing.Bucket.take

    def recording_take(self, cost, now):
        granted.append(now)
        take(self, cost, now)

    monkeypatch.setattr(pacing.Bucket, "take", recording_take)

    async def main():
        p = Pacer(rpm=60 * 40.0)                 # 38 per second after headroom
        await asyncio.gather(*(p.acquire(0) for _ in range(30)))
        return p.buckets["requests"]

    bucket = asyncio.run(main())
    assert (bucket.rate, bucket.capacity) == (pytest.approx(38.0), pytest.approx(9.5))
    times = sorted(granted)
    assert len(times) == 30
    # never early: n attempts in a row span at least (n - 10.5) / rate seconds (a full
    # allowance of 9.5 lets 10 go at once, then one each 1/38 s); in the end at least 19/38 s
    for i in range(30):
        for j in range(i + 10, 30):
            assert times[j] - times[i] >= (j - i + 1 - 10.5) / 38.0 - 1e-9, (i, j, times)


def test_a_smaller_answer_than_estimated_wakes_the_queue():
    """The waiter leaves soon after the settlement, not ~10 s later when the debt of the
    estimate would have been paid (the bound leaves room for a loaded machine)."""
    async def main():
        p = Pacer(tpm=60 * 100.0)                # 95 tokens a second
        await p.acquire(1000.0)                  # estimated 1,000: about 10 s of debt
        loop = asyncio.get_running_loop()
        waiter = asyncio.create_task(p.acquire(10.0))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        t0 = loop.time()
        p.settle_tokens(1000.0, 30.0)            # the answer used 30
        await asyncio.wait_for(waiter, 9)
        return loop.time() - t0

    assert asyncio.run(main()) < 5.0


def test_window_halves_once_per_burst_and_grows_back():
    async def main():
        w = Window(64)
        tickets = [await w.acquire() for _ in range(40)]
        for t in tickets[:20]:                   # a burst of 429s: one decrease, not 20
            w.release(t, "congested")
        assert w.limit == 32 and w.decreases == 1
        t = await w.acquire()                    # started after the decrease: counts again
        w.release(t, "congested")
        assert w.limit == 16 and w.decreases == 2
        for t in tickets[20:]:
            w.release(t, "ok")
        assert 16 < w.limit < 18                 # additive: about one per window of answers
        for _ in range(5000):
            w.release(await w.acquire(), "ok")
        assert w.limit == 64                     # never above the maximum
        w2 = Window(8, start=1)
        first = await w2.acquire()
        blocked = asyncio.create_task(w2.acquire())
        await asyncio.sleep(0.01)
        assert not blocked.done()                # a window of one holds the second attempt
        w2.release(first, "neutral")
        await asyncio.wait_for(blocked, 1)
    asyncio.run(main())


def test_window_wakes_only_as_many_waiters_as_it_has_room_for():
    async def main():
        w = Window(4)
        held = [await w.acquire() for _ in range(4)]
        waiters = [asyncio.create_task(w.acquire()) for _ in range(10)]
        await asyncio.sleep(0)
        w.release(held[0], "congested")          # limit 4 -> 2, in flight 3: nobody enters
        await asyncio.sleep(0.01)
        assert sum(t.done() for t in waiters) == 0
        w.release(held[1], "neutral")
        w.release(held[2], "neutral")            # in flight 1 of 2: exactly one enters
        await asyncio.sleep(0.01)
        assert sum(t.done() for t in waiters) == 1 and w.in_flight == 2
        waiters[1].cancel()                      # a waiter that gives up takes no room
        w.release(held[3], "neutral")
        await asyncio.sleep(0.01)
        done = [i for i, t in enumerate(waiters) if t.done() and not t.cancelled()]
        assert done == [0, 2] and w.in_flight == 2   # first come, first served
        for t in waiters:
            t.cancel()
    asyncio.run(main())


def test_a_rate_is_inferred_from_429s_when_no_limit_is_known(monkeypatch):
    import annoy_datasync.pacing as pacing
    clock = [0.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: clock[0])
    p = Pacer(share=0.5)
    for _ in range(40):                          # 20 answers a second for 2 s
        clock[0] += 0.05
        p.accepted()
    assert not p.known
    p.rejected()
    assert p.inferred and p.known
    assert p.buckets["requests"].rate == pytest.approx(20.0, rel=0.01)   # what it accepted
    p.rejected()                                 # within the second: no second decrease
    assert p.buckets["requests"].rate == pytest.approx(20.0, rel=0.01)
    clock[0] += 1.1
    p.rejected()
    assert p.buckets["requests"].rate == pytest.approx(17.0, rel=0.01)
    for _ in range(170):                         # 10 s of answers at 17/s: +5%
        clock[0] += 1 / 17
        p.accepted()
    assert p.buckets["requests"].rate == pytest.approx(17.85, rel=0.01)
    p.observe({"limit_requests": 3000.0})        # the server tells its limit after all
    assert not p.inferred and p.limits["requests"] == 3000.0
