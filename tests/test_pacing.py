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
        for t in tickets[20:14 + 20]:
            w.release(t, "ok")
        assert 16 < w.limit < 17.1               # additive: about one per window of answers
        for t in tickets[34:]:                   # 17 answers since the decrease, a whole
            w.release(t, "ok")                   # window: one more per answer from then on
        assert 18.9 < w.limit < 19.2
        for _ in range(36):
            w.release(await w.acquire(), "ok")
        assert w.limit >= 55                     # doubled within about one more window
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
    for _ in range(22):                          # answers go on, at the rate inferred
        clock[0] += 0.05
        p.accepted()
    grown = p.buckets["requests"].rate
    assert 20.0 < grown < 20.6                   # +2% a second just after a 429
    p.rejected()                                 # a second later: 15% lower
    assert p.buckets["requests"].rate == pytest.approx(0.85 * grown)
    clock[0] += 2.0
    p.rejected()                                 # nothing answered for 2 s: down to what was
    # answered over the last 5 s (61 answers, from 0.1 s to 3.1 s), less than 15% lower
    assert p.buckets["requests"].rate == pytest.approx(60 / 5.0, rel=0.01)
    before = p.buckets["requests"].rate
    for _ in range(14):                          # 1 s of answers: +2%, below the rate
        clock[0] += 1 / 14                       # the last 429 came at
        p.accepted()
    assert p.buckets["requests"].rate / before == pytest.approx(1.02)
    p.observe({"limit_requests": 3000.0})        # the server tells its limit after all
    assert not p.inferred and p.limits["requests"] == 3000.0


def simulate(pacer, clock, server_ok, full, until):
    """A client sending as fast as `pacer` lets it (at most `full` a second) to a server
    that answers or 429s as `server_ok(now)` says; `clock` is the pacer's. Returns the
    outcomes as (time, accepted)."""
    seen = []
    while clock[0] < until:
        rate = pacer.buckets["requests"].rate if pacer.known else full
        clock[0] += 1 / min(full, rate)
        ok = server_ok(clock[0])
        pacer.accepted() if ok else pacer.rejected()
        seen.append((clock[0], ok))
    return seen


def test_after_a_few_429s_only_the_inferred_rate_is_gone_within_seconds(monkeypatch):
    """A server (a proxy, a self-hosted one) that refused 10 requests, after 20 answers at
    full speed, and never again: the rate inferred from that moment (what was answered in
    the one second counted) is back to full speed within about 11 s and forgotten (the run
    unpaced) soon after; growing 0.5% a second, as it did, took minutes."""
    clock = [0.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: clock[0])
    p = Pacer()
    full = 100.0
    sent = [0]

    def server_ok(now):
        sent[0] += 1
        return not 20 < sent[0] <= 30
    simulate(p, clock, server_ok, full, until=0.3)
    assert p.inferred and p.buckets["requests"].rate == pytest.approx(19.0, rel=0.01)
    quiet_from = clock[0]
    back_at = None
    while p.known:
        simulate(p, clock, server_ok, full, until=clock[0] + 0.1)
        if back_at is None and (not p.known or p.buckets["requests"].rate >= full):
            back_at = clock[0] - quiet_from
        assert clock[0] < 60, "still paced a minute later"
    assert back_at < 12 and clock[0] - quiet_from < 15
    assert not p.inferred and p.limits["requests"] is None
    assert sent[0] - 30 < 600                    # requests answered until then


def test_against_a_headerless_limit_the_inferred_rate_holds_it_with_few_429s(monkeypatch):
    """A server allowing 20 requests a second (one second of burst) that never says so: after
    the first minute the client sends at about that rate, and under 1.5% of its requests get
    a 429 (the inferred rate creeps back up to where the last 429 came, probes above it,
    and is cut again)."""
    clock = [0.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: clock[0])
    p = Pacer()
    server = Bucket(rate=20.0, capacity=20.0, now=0.0)

    def server_ok(now):
        if server.wait(now) > 0:
            return False
        server.take(1.0, now)
        return True
    seen = simulate(p, clock, server_ok, full=100.0, until=120.0)
    late = [ok for t, ok in seen if t > 60]
    assert sum(late) / 60 == pytest.approx(20.0, rel=0.05)
    assert 0 < late.count(False) / len(late) < 0.015
