"""A small OpenAI-compatible Batch API on 127.0.0.1, for the tests of the batch mode.

Serves ``POST /v1/files`` (multipart upload), ``GET /v1/files/{id}`` and
``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches`` (newest first, with
``after`` and ``limit``), ``GET /v1/batches/{id}`` and ``POST /v1/batches/{id}/cancel``.

A batch advances when it is looked at: every retrieve answers up to ``per_poll`` more of its
requests (all by default) through ``responder(custom_id, body) -> (status_code, body)``; when
none is left it is completed, with an output file (status 200 lines) and an error file (the
rest). ``expire_after=N`` makes a batch expire after N answered requests: the rest go to the
error file with code ``batch_expired``. ``fail_validation=True`` fails every batch at once,
without files. A cancelled batch keeps what it answered; the rest is in no file.
``failing_looks=N`` answers the first N retrieves with 503. ``hook(event, detail)`` is called for "upload", "create" (before the batch exists),
"created" (after it exists, before the answer is sent), "retrieve" and "content"; the tests
use it to kill the client at those moments.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Responder = Callable[[str, dict], tuple[int, dict]]


def echo(custom_id: str, body: dict) -> tuple[int, dict]:
    """Answer "echo: <last message>" like the chat server's echo responder."""
    text = "echo: " + str(body["messages"][-1]["content"])
    return 200, {"id": "chatcmpl-" + custom_id, "object": "chat.completion",
                 "model": body.get("model"), "created": int(time.time()),
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": text}}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


class BatchServer:
    def __init__(self, responder: Responder = echo, per_poll: int | None = None,
                 expire_after: int | None = None, fail_validation: bool = False,
                 hook: Callable[[str, str], None] | None = None, failing_looks: int = 0):
        self.responder = responder
        self.per_poll = per_poll
        self.expire_after = expire_after
        self.fail_validation = fail_validation
        self.hook = hook or (lambda event, detail: None)
        self.failing_looks = failing_looks      # the first this-many retrieves answer 503
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.answered: dict[str, list] = {}      # batch id -> [(custom_id, code, body)]
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> BatchServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.reply(*server.handle("GET", self.path, self.headers, b""))

            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                self.reply(*server.handle("POST", self.path, self.headers, self.rfile.read(n)))

            def reply(self, code: int, body: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/octet-stream"
                                 if isinstance(body, bytes) else "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    def __enter__(self) -> BatchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API --------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: Any, data: bytes) -> tuple[int, Any]:
        url = urlparse(raw_path)
        parts = url.path.rstrip("/").split("/")[2:]      # after "/v1"
        with self.lock:
            if method == "POST" and parts == ["files"]:
                return self.upload(headers, data)
            if method == "GET" and len(parts) >= 2 and parts[0] == "files" and parts[1] in self.files:
                f = self.files[parts[1]]
                if parts[2:] == ["content"]:
                    self.hook("content", parts[1])
                    return 200, f["content"]
                return 200, f["object"]
            if method == "POST" and parts == ["batches"]:
                return self.create(json.loads(data))
            if method == "GET" and parts == ["batches"]:
                return 200, self.listing(parse_qs(url.query))
            if len(parts) >= 2 and parts[0] == "batches" and parts[1] in self.batches:
                b = self.batches[parts[1]]
                if method == "POST" and parts[2:] == ["cancel"]:
                    if b["status"] not in ("completed", "failed", "expired", "cancelled"):
                        b["status"] = "cancelling"
                        b["cancelling_at"] = int(time.time())
                    return 200, b
                if method == "GET" and len(parts) == 2:
                    if self.failing_looks > 0:
                        self.failing_looks -= 1
                        return 503, {"error": {"message": "try later", "type": "server_error"}}
                    self.hook("retrieve", b["id"])
                    self.advance(b)
                    return 200, b
        return 404, {"error": {"message": f"no route {method} {url.path}", "type": "not_found"}}

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids)}"

    def add_file(self, content: bytes, filename: str, purpose: str) -> str:
        fid = self.new_id("file")
        self.files[fid] = {"content": content, "object": {
            "id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
            "filename": filename, "purpose": purpose, "status": "processed"}}
        return fid

    def upload(self, headers: Any, data: bytes) -> tuple[int, Any]:
        head = f"Content-Type: {headers.get('content-type')}\r\n\r\n".encode()
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + data)
        fields = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
        if "file" not in fields:
            return 400, {"error": {"message": "no file part", "type": "invalid_request_error"}}
        content = fields["file"].get_payload(decode=True)
        purpose = fields["purpose"].get_content() if "purpose" in fields else ""
        fid = self.add_file(content, fields["file"].get_filename() or "upload", purpose.strip())
        self.hook("upload", fid)
        return 200, self.files[fid]["object"]

    def create(self, req: dict) -> tuple[int, Any]:
        fid = req.get("input_file_id")
        if fid not in self.files:
            return 400, {"error": {"message": f"no file {fid}", "type": "invalid_request_error"}}
        self.hook("create", fid)
        lines = [json.loads(x) for x in self.files[fid]["content"].splitlines() if x.strip()]
        bid = self.new_id("batch")
        now = int(time.time())
        self.batches[bid] = {
            "id": bid, "object": "batch", "endpoint": req.get("endpoint"),
            "input_file_id": fid, "completion_window": req.get("completion_window"),
            "status": "validating", "created_at": now, "expires_at": now + 86400,
            "metadata": req.get("metadata"), "output_file_id": None, "error_file_id": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
        self.answered[bid] = []
        self.hook("created", bid)
        return 200, self.batches[bid]

    def listing(self, query: dict) -> dict:
        batches = sorted(self.batches.values(), key=lambda b: int(b["id"].split("-")[1]),
                         reverse=True)
        if "after" in query:
            ids = [b["id"] for b in batches]
            after = query["after"][0]
            batches = batches[ids.index(after) + 1:] if after in ids else []
        limit = int(query.get("limit", ["20"])[0])
        page = batches[:limit]
        return {"object": "list", "data": page, "has_more": len(batches) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None}

    def advance(self, b: dict) -> None:
        """One step of the batch's life, taken each time it is looked at."""
        if b["status"] in ("completed", "failed", "expired", "cancelled"):
            return
        now = int(time.time())
        if b["status"] == "cancelling":
            self.finish(b, "cancelled", [])
            return
        if self.fail_validation:
            b["status"] = "failed"
            b["failed_at"] = now
            b["errors"] = {"object": "list", "data": [
                {"code": "invalid_request", "message": "the file did not validate", "line": 1}]}
            return
        if b["status"] == "validating":
            b["status"] = "in_progress"
            b["in_progress_at"] = now
        lines = [json.loads(x) for x in self.files[b["input_file_id"]]["content"].splitlines()
                 if x.strip()]
        done = self.answered[b["id"]]
        todo = lines[len(done):]
        take = todo if self.per_poll is None else todo[:self.per_poll]
        for line in take:
            if self.expire_after is not None and len(done) >= self.expire_after:
                rest = [ln["custom_id"] for ln in lines[len(done):]]
                self.finish(b, "expired", rest)
                return
            code, body = self.responder(line["custom_id"], line["body"])
            done.append((line["custom_id"], code, body))
            b["request_counts"]["completed" if code == 200 else "failed"] += 1
        if len(done) == len(lines):
            self.finish(b, "completed", [])

    def finish(self, b: dict, final: str, expired: list[str]) -> None:
        ok, bad = [], []
        for n, (cid, code, body) in enumerate(self.answered[b["id"]]):
            line = {"id": f"req-{n}", "custom_id": cid, "error": None,
                    "response": {"status_code": code, "request_id": f"r{n}", "body": body}}
            (ok if code == 200 else bad).append(line)
        for cid in expired:
            bad.append({"id": f"req-x-{cid}", "custom_id": cid, "response": None,
                        "error": {"code": "batch_expired",
                                  "message": "This request could not be executed before the "
                                             "completion window expired."}})
        dump = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()  # noqa: E731
        if ok:
            b["output_file_id"] = self.add_file(dump(ok), "output.jsonl", "batch_output")
        if bad:
            b["error_file_id"] = self.add_file(dump(bad), "errors.jsonl", "batch_output")
        b["status"] = final
        b[f"{final}_at"] = int(time.time())
