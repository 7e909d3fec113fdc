"""Answer chat requests from recorded answers, matched by the request's messages.

The replay server (``src/replay_server.py``) lets the whole pipeline run without an API:
every request is looked up by a key of its messages and answered with the recorded text.
A request that was never recorded gets HTTP 400 with a message saying so; the inference
client then records it as a failed request, like any other refused call.

Recorded answers are JSONL, one object per line::

    {"messages": [...], "output": str, "reasoning": str | null, "finish_reason": "stop" | "length"}

Only ``messages`` and ``output`` are required, so the output file of an earlier real run of
``batched_api_inference.py`` (the input line plus ``output``, ``reasoning``, ``finish_reason``,
``usage`` ...) is a valid answers file as it is. When several lines share the same messages
(a model sampled twice, or two identical prompts), the answers are served in file order,
one per request, starting again from the first when they run out.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from .chat_server import ChatRequest, Reply
from .jsonl import InputError, read_jsonl, require_messages, where

UNKNOWN_STATUS = 400  # not retried by the client, and not mistaken for an unknown model (404)


def message_key(messages: list) -> str:
    """A stable key of a messages list: sha256 of its canonical JSON (role and content only)."""
    canon = [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m
             for m in messages]
    text = json.dumps(canon, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Recorded:
    output: str
    reasoning: str | None = None
    finish_reason: str = "stop"
    usage: dict | None = None


@dataclass
class AnswerBook:
    """Recorded answers by message key, with the counts of what was loaded and served."""

    answers: dict[str, list[Recorded]] = field(default_factory=dict)
    loaded: int = 0
    skipped: int = 0      # lines without a usable output (e.g. a failed row of a real run)
    answered: int = 0
    unknown: int = 0
    _next: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, messages: list, rec: Recorded) -> None:
        self.answers.setdefault(message_key(messages), []).append(rec)
        self.loaded += 1

    def lookup(self, messages: list) -> Recorded | None:
        key = message_key(messages)
        with self._lock:
            recs = self.answers.get(key)
            if not recs:
                self.unknown += 1
                return None
            i = self._next.get(key, 0)
            self._next[key] = i + 1
            self.answered += 1
            return recs[i % len(recs)]

    def __len__(self) -> int:
        return len(self.answers)


def load_answers(paths: Iterable[str | os.PathLike]) -> AnswerBook:
    """Read one or more answers files (see the module docstring) into an `AnswerBook`."""
    book = AnswerBook()
    for path in paths:
        for lineno, rec in read_jsonl(path):
            messages = require_messages(rec, path, lineno)
            output = rec.get("output")
            if not isinstance(output, str):
                book.skipped += 1
                continue
            finish = rec.get("finish_reason") or "stop"
            if not isinstance(finish, str):
                raise InputError(f'{where(path, lineno)}: "finish_reason" should be a string')
            reasoning = rec.get("reasoning")
            book.add(messages, Recorded(output=output,
                                        reasoning=reasoning if isinstance(reasoning, str) else None,
                                        finish_reason=finish,
                                        usage=rec.get("usage") if isinstance(rec.get("usage"), dict) else None))
    return book


def make_responder(book: AnswerBook):
    """A `chat_server` responder answering from `book`; HTTP 400 for an unknown request."""

    def respond(req: ChatRequest) -> Reply:
        messages = req.messages
        rec = book.lookup(messages) if messages else None
        if rec is None:
            last = ""
            if messages and isinstance(messages[-1], dict):
                last = str(messages[-1].get("content", ""))[:60].replace("\n", " ")
            key = message_key(messages)[:12] if messages else "-"
            return Reply(status=UNKNOWN_STATUS,
                         error=(f"replay: no recorded answer for this request (messages key {key}, "
                                f"last message {last!r}); record it in the answers file or use a "
                                f"real endpoint"))
        return Reply(content=rec.output, reasoning_content=rec.reasoning,
                     finish_reason=rec.finish_reason, usage=rec.usage)

    return respond


__all__ = ["AnswerBook", "Recorded", "UNKNOWN_STATUS", "load_answers", "make_responder",
           "message_key"]
