"""A small OpenAI-compatible chat completions server on 127.0.0.1, with a pluggable responder.

Used by the inference tests and benchmark, and as the base of the demo's replay server.
It speaks HTTP/1.1 with keep-alive on plain asyncio (one event loop in a background thread),
and serves ``POST /v1/chat/completions`` and ``GET /v1/models``; streaming is not supported.

A responder is a function (plain or ``async``) from a `ChatRequest` to a `Reply`::

    def responder(req: ChatRequest) -> Reply:
        if req.number == 0:
            return Reply(status=429, headers={"Retry-After": "1"})
        return Reply(content="echo: " + req.messages[-1]["content"])

    with ChatServer(responder) as server:        # port 0: a free port
        client = openai.OpenAI(base_url=server.url, api_key="EMPTY")
        ...
    server.requests   # every request seen (with its arrival time), if record=True

A `Reply` can answer slowly (``delay``), fail with any status and headers (``Retry-After``),
cut the connection without answering (``cut``), send a 200 with an empty body (``empty_body``)
or raw bytes (``body``), and carry ``reasoning_content``, ``finish_reason`` and ``usage``.

``ChatServer(..., rpm=600, tpm=100_000)`` enforces rate limits the way providers do at short
intervals: token buckets with continuous refill (``rpm / 60`` requests per second) holding
``burst`` seconds of allowance (default 1). A request over either limit is answered 429
with ``Retry-After`` / ``retry-after-ms`` (the time until it would pass) without reaching the
responder; every answer carries ``x-ratelimit-limit-*`` (per minute), ``-remaining-*`` and
``-reset-*`` headers for the limits set (``limit_headers=False`` leaves them out). Prompt
tokens are charged when a request is admitted, answer tokens when it is answered; tokens
are counted as words. ``server.rejected`` counts the 429s it sent (their arrival times are
in ``server.rejected_at``). ``clock`` (default time.monotonic) is what the limits and the
requests' times are measured by: a test that gives a clock it moves itself checks the limits
without depending on how fast a busy machine sends the requests.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

__all__ = ["ChatRequest", "ChatServer", "RateLimiter", "Reply", "echo_responder"]


@dataclass
class ChatRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]          # lower-case names
    body: Any                        # parsed JSON body, or None
    number: int                      # 0-based arrival order over the server's life
    received: float                  # time.monotonic() at arrival
    answered: float | None = None    # time.monotonic() when the reply was sent (or cut)
    status: int | None = None        # status sent (None: cut, or not answered yet)

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def messages(self) -> list[dict]:
        msgs = self.body.get("messages") if isinstance(self.body, dict) else None
        return msgs if isinstance(msgs, list) else []


@dataclass
class Reply:
    """What to answer. Defaults give a normal 200 chat completion."""

    content: str | None = "ok"
    reasoning_content: str | None = None
    finish_reason: str | None = "stop"
    usage: dict | None = None            # default: rough token counts from the text
    model: str | None = None             # default: the requested model
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None             # message of an error body (status >= 400)
    delay: float = 0.0                   # seconds to wait before answering (or cutting)
    cut: bool = False                    # close the connection without any answer
    empty_body: bool = False             # answer with this status and a zero-length body
    body: bytes | None = None            # raw body, sent as is


Responder = Callable[[ChatRequest], Reply | Awaitable[Reply]]


def echo_responder(req: ChatRequest) -> Reply:
    """Answer with the last user message, for smoke tests."""
    last = req.messages[-1].get("content", "") if req.messages else ""
    return Reply(content=f"echo: {last}")


def _tokens(text: str | None) -> int:
    return len(text.split()) if text else 0


def _prompt_tokens(req: ChatRequest) -> int:
    return sum(_tokens(m.get("content")) for m in req.messages
               if isinstance(m, dict) and isinstance(m.get("content"), str))


def _usage(req: ChatRequest, reply: Reply) -> dict:
    prompt_tokens = _prompt_tokens(req)
    completion_tokens = _tokens(reply.content) + _tokens(reply.reasoning_content)
    return reply.usage if reply.usage is not None else {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _completion_body(req: ChatRequest, reply: Reply) -> bytes:
    usage = _usage(req, reply)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.reasoning_content is not None:
        message["reasoning_content"] = reply.reasoning_content
    return json.dumps({
        "id": f"chatcmpl-{req.number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or req.model or "unknown",
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason,
                     "logprobs": None}],
        "usage": usage,
    }).encode()


def _error_body(status: int, message: str | None) -> bytes:
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 429: "rate_limit_error"}.get(status, "server_error")
    try:
        text = message or HTTPStatus(status).phrase
    except ValueError:
        text = f"error {status}"
    return json.dumps({"error": {"message": text, "type": kind,
                                 "code": None, "param": None}}).encode()


def _head(status: int, headers: dict[str, str], length: int, close: bool) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}", "Content-Type: application/json",
             f"Content-Length: {length}"]
    if close:
        lines.append("Connection: close")
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class RateLimiter:
    """Requests and tokens per minute, as continuous-refill buckets of `burst` seconds."""

    def __init__(self, rpm: float | None, tpm: float | None, burst: float = 1.0,
                 now: float | None = None) -> None:
        self.limits = {"requests": rpm, "tokens": tpm}
        self.level: dict[str, float] = {}
        self.capacity: dict[str, float] = {}
        self.stamp = time.monotonic() if now is None else now
        for kind, per_minute in self.limits.items():
            if per_minute:
                self.capacity[kind] = max(1.0, per_minute / 60.0 * burst)
                self.level[kind] = self.capacity[kind]

    def _refill(self, now: float) -> None:
        for kind, cap in self.capacity.items():
            rate = self.limits[kind] / 60.0
            self.level[kind] = min(cap, self.level[kind] + (now - self.stamp) * rate)
        self.stamp = now

    def admit(self, prompt_tokens: int, now: float) -> float:
        """0 if the request passes (and is charged), else seconds until it would pass."""
        self._refill(now)
        wait = 0.0
        # a request passes when its prompt fits in what is left (a prompt larger than the
        # whole allowance passes on a full bucket)
        need = {"requests": 1.0, "tokens": float(min(max(prompt_tokens, 1), self.capacity.get("tokens", 1.0)))}
        for kind, lvl in self.level.items():
            if lvl < need[kind]:
                wait = max(wait, (need[kind] - lvl) / (self.limits[kind] / 60.0))
        if wait > 0:
            return wait
        if "requests" in self.level:
            self.level["requests"] -= 1
        if "tokens" in self.level:
            self.level["tokens"] -= prompt_tokens
        return 0.0

    def charge_tokens(self, tokens: int, now: float) -> None:
        if "tokens" in self.level:
            self._refill(now)
            self.level["tokens"] -= tokens

    def headers(self, now: float) -> dict[str, str]:
        self._refill(now)
        out = {}
        for kind, cap in self.capacity.items():
            per_minute = self.limits[kind]
            lvl = self.level[kind]
            out[f"x-ratelimit-limit-{kind}"] = f"{per_minute:.0f}"
            out[f"x-ratelimit-remaining-{kind}"] = f"{max(0, int(lvl))}"
            out[f"x-ratelimit-reset-{kind}"] = f"{(cap - lvl) / (per_minute / 60.0):.3f}s"
        return out


class _Connection(asyncio.Protocol):
    """HTTP/1.1 on one connection: requests are handled one after the other."""

    def __init__(self, server: ChatServer):
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        try:
            method, path, _ = head[0].split(" ", 2)
        except ValueError:
            self._send(400, {}, _error_body(400, "malformed request line"), close=True)
            return
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0") or 0)
        if len(self.buf) < end + 4 + length:
            return  # wait for the rest of the body
        raw = bytes(self.buf[end + 4:end + 4 + length])
        del self.buf[:end + 4 + length]
        self.busy = True
        self.close_after = headers.get("connection", "").lower() == "close"
        self.server._dispatch(self, method, path.split("?", 1)[0], headers, raw)

    def _send(self, status: int, headers: dict[str, str], body: bytes, close: bool = False) -> None:
        if self.closed:
            return
        close = close or getattr(self, "close_after", False)
        self.transport.write(_head(status, headers, len(body), close) + body)
        if close:
            self.transport.close()
            return
        self.busy = False
        if self.buf:
            self._next()

    def _cut(self) -> None:
        if not self.closed:
            self.transport.abort()


class ChatServer:
    """An OpenAI-compatible server in a background thread. ``url`` is the base_url (…/v1)."""

    def __init__(self, responder: Responder = echo_responder, host: str = "127.0.0.1",
                 port: int = 0, *, record: bool = True, models: list[str] | None = None,
                 rpm: float | None = None, tpm: float | None = None, burst: float = 1.0,
                 limit_headers: bool = True, clock: Callable[[], float] = time.monotonic):
        self.responder = responder
        self.clock = clock      # of the rate limits and of the requests' times
        self.limiter = RateLimiter(rpm, tpm, burst, clock()) if (rpm or tpm) else None
        self.limit_headers = limit_headers
        self.rejected = 0
        self.rejected_at: list[float] = []
        self.host = host
        self.port = port
        self.record = record
        self.models = models or ["test-model"]
        self.requests: list[ChatRequest] = []
        self.count = 0
        self._lock = threading.Lock()
        self._transports: set = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._async = inspect.iscoroutinefunction(responder)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # --- life cycle ---------------------------------------------------------------------
    def start(self) -> ChatServer:
        """Start serving in a daemon thread; returns once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(self._bind())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="chat-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (for a server run as its own process)."""
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._server = await self._bind()
            await self._server.serve_forever()
        asyncio.run(main())

    async def _bind(self) -> asyncio.base_events.Server:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), self.host, self.port,
                                          backlog=4096, reuse_address=True)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def stop(self) -> None:
        """Close the listening socket and every open connection, then end the thread."""
        loop = self._loop
        if loop is None or self._thread is None:
            return

        def shut() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._transports):
                t.abort()
            loop.stop()

        loop.call_soon_threadsafe(shut)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- requests -----------------------------------------------------------------------
    def _dispatch(self, conn: _Connection, method: str, path: str,
                  headers: dict[str, str], raw: bytes) -> None:
        if method == "GET" and path.rstrip("/").endswith("/models"):
            body = json.dumps({"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "local"} for m in self.models
            ]}).encode()
            conn._send(200, {}, body)
            return
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            conn._send(404, {}, _error_body(404, f"no route {method} {path}"))
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            conn._send(400, {}, _error_body(400, "body is not JSON"))
            return
        with self._lock:
            number = self.count
            self.count += 1
        req = ChatRequest(method, path, headers, body, number, self.clock())
        if self.record:
            self.requests.append(req)
        if self.limiter is not None:
            wait = self.limiter.admit(_prompt_tokens(req), req.received)
            if wait > 0:
                self.rejected += 1
                self.rejected_at.append(req.received)
                self._answer(conn, req, Reply(status=429, error="rate limit reached", headers={
                    "retry-after-ms": f"{wait * 1000:.0f}", "Retry-After": f"{math.ceil(wait)}"}))
                return
        if self._async:
            asyncio.ensure_future(self._answer_async(conn, req))
            return
        try:
            reply = self.responder(req)
        except Exception as exc:  # noqa: BLE001 - a responder bug becomes a 500, visibly
            reply = Reply(status=500, error=f"responder raised {type(exc).__name__}: {exc}")
        if reply.delay > 0:
            asyncio.get_running_loop().call_later(reply.delay, self._answer, conn, req, reply)
        else:
            self._answer(conn, req, reply)

    async def _answer_async(self, conn: _Connection, req: ChatRequest) -> None:
        try:
            reply = await self.responder(req)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001
            reply = Reply(status=500, error=f"responder raised {type(exc).__name__}: {exc}")
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        self._answer(conn, req, reply)

    def _answer(self, conn: _Connection, req: ChatRequest, reply: Reply) -> None:
        req.answered = self.clock()
        if reply.cut:
            conn._cut()
            return
        req.status = reply.status
        headers = reply.headers
        if self.limiter is not None:
            if reply.status < 400:
                self.limiter.charge_tokens(_usage(req, reply).get("completion_tokens") or 0,
                                           req.answered)
            if self.limit_headers:
                headers = {**self.limiter.headers(req.answered), **headers}
        if reply.empty_body:
            body = b""
        elif reply.body is not None:
            body = reply.body
        elif reply.status >= 400:
            body = _error_body(reply.status, reply.error)
        else:
            body = _completion_body(req, reply)
        conn._send(reply.status, headers, body)
