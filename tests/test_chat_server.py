"""The OpenAI-compatible test server: what a client sees for each kind of reply."""

from __future__ import annotations

import asyncio
import http.client
import json
import typing
from collections.abc import Awaitable

import openai
import pytest

from annoy_datasync.chat_server import ChatRequest, ChatServer, Reply, Responder, echo_responder


def client(server):
    return openai.OpenAI(base_url=server.url, api_key="EMPTY", max_retries=0, timeout=5)


def ask(c, text="hello"):
    return c.chat.completions.create(model="m1", messages=[{"role": "user", "content": text}])


def test_a_responder_is_typed_with_the_types_it_names():
    # a real annotation, not a string only a type checker reads (whose import looked unused)
    params, result = typing.get_args(Responder)
    assert params == [ChatRequest] and set(typing.get_args(result)) == {Reply, Awaitable[Reply]}


def test_answers_like_the_openai_api_and_records_requests():
    with ChatServer(echo_responder, models=["m1", "m2"]) as server:
        c = client(server)
        r = ask(c, "two words")
        assert r.choices[0].message.content == "echo: two words"
        assert r.choices[0].finish_reason == "stop" and r.model == "m1"
        assert r.usage.prompt_tokens == 2 and r.usage.total_tokens == 5  # "echo: two words"
        assert [m.id for m in c.models.list()] == ["m1", "m2"]
        assert server.count == 1 and server.requests[0].messages[0]["content"] == "two words"
        assert server.requests[0].answered >= server.requests[0].received


def test_reasoning_length_and_usage_are_passed_through():
    reply = Reply(content="a", reasoning_content="why", finish_reason="length",
                  usage={"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16})
    with ChatServer(lambda req: reply) as server:
        r = ask(client(server))
        assert r.choices[0].message.reasoning_content == "why"
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 9


def test_errors_headers_cut_and_empty_body():
    replies = iter([Reply(status=429, headers={"Retry-After": "3"}, error="slow down"),
                    Reply(cut=True), Reply(empty_body=True), Reply(status=401)])
    with ChatServer(lambda req: next(replies)) as server:
        c = client(server)
        with pytest.raises(openai.RateLimitError) as err:
            ask(c)
        assert err.value.response.headers["retry-after"] == "3" and "slow down" in str(err.value)
        with pytest.raises(openai.APIConnectionError):
            ask(c)
        with pytest.raises(ValueError):          # the SDK cannot decode a zero-length body
            ask(c)
        with pytest.raises(openai.AuthenticationError):
            ask(c)


def test_keep_alive_serves_several_requests_on_one_connection():
    with ChatServer(echo_responder) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        for i in range(3):
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": str(i)}]})
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["choices"][0]["message"]["content"] == f"echo: {i}"
        conn.close()
        assert server.count == 3


def test_async_responder_and_delay():
    async def respond(req):
        await asyncio.sleep(0.01)
        return Reply(content="later", delay=0.2)

    with ChatServer(respond) as server:
        assert ask(client(server)).choices[0].message.content == "later"
        req = server.requests[0]
        assert req.answered - req.received >= 0.2


def test_a_responder_bug_is_a_visible_500():
    def respond(req):
        raise KeyError("oops")

    with ChatServer(respond) as server:
        with pytest.raises(openai.InternalServerError, match="KeyError"):
            ask(client(server))


class Clock:
    """Time that moves only when the test says (the limits do not depend on the machine's speed)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limits_answer_429_with_headers_and_refill_continuously():
    # 600 per minute = 10 per second, half a second of burst: 5 pass at once, then 1 per 0.1 s
    clock = Clock()
    with ChatServer(echo_responder, rpm=600, burst=0.5, clock=clock) as server:
        c = client(server)
        for _ in range(5):
            r = c.chat.completions.with_raw_response.create(
                model="m1", messages=[{"role": "user", "content": "hi"}])
            assert r.headers["x-ratelimit-limit-requests"] == "600"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as err:
            ask(c)
        headers = err.value.response.headers
        assert headers["retry-after-ms"] == "100" and headers["retry-after"] == "1"
        assert headers["x-ratelimit-reset-requests"] == "0.500s"
        assert server.rejected == 1 and server.requests[-1].status == 429
        clock.now += 0.09                              # not quite refilled
        with pytest.raises(openai.RateLimitError) as err:
            ask(c)
        assert err.value.response.headers["retry-after-ms"] == "10"
        clock.now += 0.01
        assert ask(c).choices[0].message.content == "echo: hello"
        assert server.rejected == 2


def test_token_limit_charges_prompt_and_answer_tokens():
    # 6,000 tokens per minute = 100 per second; 1 s of burst; "echo" answers cost 1 + words
    clock = Clock()
    with ChatServer(echo_responder, tpm=6000, clock=clock) as server:
        c = client(server)
        text = " ".join(["w"] * 40)                    # 40 prompt + 41 answer tokens
        ask(c, text)
        with pytest.raises(openai.RateLimitError) as err:
            ask(c, text)                               # 100 - 81 = 19 left < 40
        assert err.value.response.headers["x-ratelimit-limit-tokens"] == "6000"
        assert err.value.response.headers["retry-after-ms"] == "210"   # 21 more at 100/s
        assert server.rejected == 1
