"""batched_api_inference.py against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import pytest

import batched_api_inference as bai
from annoy_datasync import status
from annoy_datasync.chat_server import ChatServer, Reply
from annoy_datasync import client as client_mod
from annoy_datasync.endpoints import backoff_delay, parse_retry_after, redact, resolve_endpoint
from annoy_datasync.jsonl import MESSAGES_HINT, InputError, StepError
from testutil import (NO_MESSAGES, NOT_JSON, SRC, abort_with_stacks, read, run_or_show_stacks,
                      with_stack_dumps, write_requests)

KEY = "sk-test-0123456789abcdefSECRET"


def row_of(req) -> int:
    return int(req.messages[-1]["content"].split()[-1])


def run(server, inp, out, *extra):
    """The step in this process; with ``--num_process`` above 1, in a process of its own
    (its workers are forked, and a fork of this process would copy the test server's threads
    with whatever lock one of them holds: a child hung on one once)."""
    argv = ["--input", inp, "--output", out, "--model", "test-model", "--base_url", server.url,
            "--num_thread", "8", "--backoff", "0.01", "--max_retries", "3", "--no_progress",
            *extra]
    if "--num_process" in extra and extra[extra.index("--num_process") + 1] != "1":
        proc = run_or_show_stacks([sys.executable, os.path.join(SRC, "batched_api_inference.py"),
                                   *argv], timeout=300, env={**os.environ, "OPENAI_API_KEY": ""})
        assert proc.returncode == 0, proc.stderr
        return proc.returncode
    return bai.main(argv)


@pytest.fixture
def serve():
    servers = []

    def start(responder, **kw):
        s = ChatServer(responder, **kw).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(params=["aiohttp", "httpx"])
def transport(request, monkeypatch):
    """Run the test over the SDK's aiohttp transport (the default) and over its httpx one
    (the fallback when the aiohttp extra is missing)."""
    if request.param == "aiohttp":
        assert client_mod.http_backend() == "aiohttp", "install openai[aiohttp]"
    monkeypatch.setattr(client_mod, "http_backend", lambda: request.param)
    return request.param


def fault_responder():
    """Behaviour by row number (index % 10); `seen` counts attempts per row."""
    seen: Counter = Counter()

    def respond(req):
        i = row_of(req)
        seen[i] += 1
        kind, first = i % 10, seen[i] == 1
        if kind == 0:
            return Reply(content=f"slow {i}", delay=0.3)
        if kind == 1 and first:
            return Reply(status=500, error="boom")
        if kind == 2 and first:
            return Reply(cut=True)
        if kind == 3 and first:
            return Reply(empty_body=True)
        if kind == 4:
            return Reply(content="cut sh", finish_reason="length")
        if kind == 5:
            return Reply(content=f"answer {i}", reasoning_content=f"thinking about {i}")
        if kind == 6:
            return Reply(status=503)
        if kind == 7:
            return Reply(content="", finish_reason="content_filter")
        if kind == 8:
            return Reply(content="   ")
        return Reply(content=f"answer {i}")

    return respond, seen


def test_every_row_is_answered_or_failed_with_its_reason(serve, tmp_path, transport):
    respond, seen = fault_responder()
    server = serve(respond)
    inp = write_requests(tmp_path / "in.jsonl", 40, bad_lines={21: NOT_JSON, 32: NO_MESSAGES})
    out = str(tmp_path / "out.jsonl")
    assert run(server, inp, out) == 0

    rows = read(out)
    fails = read(out + ".failed.jsonl")
    got = [r["index"] for r in rows] + [f["index"] for f in fails]
    assert sorted(got) == list(range(40))            # every row once, in one of the two files
    reasons = {f["index"]: f["reason"] for f in fails}
    for i in range(40):
        kind = i % 10
        if i in (21, 32):
            assert reasons[i] == status.FAIL_BAD_INPUT
        elif kind == 4:
            assert reasons[i] == status.FAIL_LENGTH
        elif kind == 6:
            assert reasons[i] == status.FAIL_SERVER
        elif kind == 7:
            assert reasons[i] == status.FAIL_CONTENT_FILTER
        elif kind == 8:
            assert reasons[i] == status.FAIL_EMPTY
        else:
            assert i not in reasons
    by_index = {r["index"]: r for r in rows}
    for i, r in by_index.items():
        assert r["itemid"] == i and r["model"] == "test-model" and r["finish_reason"] == "stop"
        assert r["usage"]["completion_tokens"] >= 1
        assert r["reasoning"] == (f"thinking about {i}" if i % 10 == 5 else None)
    # retried exactly as far as needed: once after 500 / cut / empty body; 1 + 3 for always-503
    assert seen[1] == 2 and seen[2] == 2 and seen[3] == 2 and seen[6] == 4
    assert seen[4] == 1 and seen[7] == 1                 # truncation and filtering not retried
    f6 = next(f for f in fails if f["index"] == 6)
    assert f6["attempts"] == 4 and "503" in f6["error"]
    assert next(f for f in fails if f["index"] == 21)["error"].startswith(
        f"{inp}:22:")


def test_retry_after_is_respected_server_side(serve, tmp_path):
    seen: Counter = Counter()

    def respond(req):
        i = row_of(req)
        seen[i] += 1
        if seen[i] == 1 and i == 0:
            return Reply(status=429, headers={"Retry-After": "1"}, error="slow down")
        if seen[i] == 1 and i == 1:
            return Reply(status=429, headers={"retry-after-ms": "400"}, error="slow down")
        return Reply(content=f"answer {i}")

    server = serve(respond)
    inp = write_requests(tmp_path / "in.jsonl", 2)
    out = str(tmp_path / "out.jsonl")
    assert run(server, inp, out, "--num_thread", "1") == 0
    assert sorted(r["index"] for r in read(out)) == [0, 1]
    times = defaultdict(list)
    for req in server.requests:
        times[row_of(req)].append((req.received, req.answered))
    (_, refused0), (again0, _) = times[0]
    (_, refused1), (again1, _) = times[1]
    assert again0 - refused0 >= 1.0
    assert again1 - refused1 >= 0.4


@pytest.mark.parametrize("code, words", [(401, "refused the API key"), (404, "404 for model")])
def test_auth_or_unknown_model_stops_the_run_early(serve, tmp_path, capsys, code, words):
    server = serve(lambda req: Reply(status=code, error=f"Incorrect API key provided: {KEY}"))
    inp = write_requests(tmp_path / "in.jsonl", 300)
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(StepError, match=words) as err:
        run(server, inp, out, "--key", KEY, "--num_thread", "4")
    assert server.count <= 8                              # not one request per row
    assert type(err.value) is StepError                   # the API refused: not bad input
    assert KEY not in str(err.value)
    failures = open(out + ".failed.jsonl").read()
    assert KEY not in failures and KEY not in capsys.readouterr().err
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_rerun_retries_exactly_missing_and_failed_rows(serve, tmp_path):
    broken = {"on": True}

    def respond(req):
        i = row_of(req)
        if broken["on"] and i % 3 == 0:
            return Reply(status=500)
        return Reply(content=f"answer {i}")

    server = serve(respond)
    inp = write_requests(tmp_path / "in.jsonl", 30)
    out = str(tmp_path / "out.jsonl")
    assert run(server, inp, out, "--max_retries", "0") == 0
    assert sorted(f["index"] for f in read(out + ".failed.jsonl")) == list(range(0, 30, 3))
    assert run(server, inp, out, "--max_retries", "1") == 0     # still failing: 1 + 2 attempts
    fails = read(out + ".failed.jsonl")
    assert sorted(f["index"] for f in fails) == list(range(0, 30, 3))
    assert {f["attempts"] for f in fails} == {3}
    broken["on"] = False
    before = server.count
    assert run(server, inp, out) == 0
    assert server.count - before == 10                     # only the failed rows again
    assert sorted(r["index"] for r in read(out)) == list(range(30))
    assert read(out + ".failed.jsonl") == []               # answered rows leave the failures file


def test_torn_last_line_is_repaired_and_redone(serve, tmp_path):
    server = serve(lambda req: Reply(content="fine"))
    inp = write_requests(tmp_path / "in.jsonl", 5)
    out = str(tmp_path / "out.jsonl")
    with open(out, "w") as fh:
        fh.write(json.dumps({"index": 0, "output": "old"}) + "\n")
        fh.write('{"index": 1, "output": "half')
    assert run(server, inp, out) == 0
    rows = read(out)
    assert sorted(r["index"] for r in rows) == [0, 1, 2, 3, 4]
    assert rows[0]["output"] == "old" and server.count == 4


def test_limit_only_sends_the_first_lines(serve, tmp_path):
    server = serve(lambda req: Reply(content="fine"))
    inp = write_requests(tmp_path / "in.jsonl", 20)
    out = str(tmp_path / "out.jsonl")
    assert run(server, inp, out, "--limit", "5") == 0
    assert sorted(r["index"] for r in read(out)) == [0, 1, 2, 3, 4]


def test_a_file_that_is_not_requests_is_a_clear_error(serve, tmp_path):
    server = serve(lambda req: Reply())
    out = str(tmp_path / "out.jsonl")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello world\nsecond line\n")
    with pytest.raises(InputError, match="JSONL"):
        run(server, str(txt), out)
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"content": "def f(): pass"}) + "\n")
    with pytest.raises(InputError, match=r'raw.jsonl:1: no "messages" field'):
        run(server, str(raw), out)
    raw.write_text(json.dumps({"messages": "hello"}) + "\n")
    with pytest.raises(InputError, match=r'raw.jsonl:1: "messages" should be a non-empty list, '
                                         r'got str; is this a messages file'):
        run(server, str(raw), out)
    assert server.count == 0


def test_a_lone_surrogate_in_a_prompt_is_bad_input_naming_file_and_line(serve, tmp_path, transport):
    """JSON may escape a lone surrogate (a model's text can hold one) but no request body can
    carry it: the row is bad_input, never sent, its neighbours answered. (Its attempts
    failed on encoding the body, as an unreadable answer, retried, and again on every rerun.)"""
    server = serve(lambda req: Reply(content=f"answer {row_of(req)}"))
    bad = '{"messages": [{"role": "user", "content": "half \\udfff 1"}]}'
    inp = write_requests(tmp_path / "in.jsonl", 3, bad_lines={1: bad})
    out = str(tmp_path / "out.jsonl")
    assert run(server, inp, out) == 0
    assert sorted(r["index"] for r in read(out)) == [0, 2]
    assert server.count == 2
    [fail] = read(out + ".failed.jsonl")
    assert fail["reason"] == status.FAIL_BAD_INPUT and fail["attempts"] == 0
    assert fail["error"].startswith(f"{inp}:2: messages[0][\"content\"] holds a lone surrogate")


def test_a_request_line_is_checked_by_the_one_messages_rule():
    ok = json.dumps({"messages": [{"role": "user", "content": "q"}]}).encode() + b"\n"
    assert client_mod.parse_request(ok, "in.jsonl", 0)[0] is not None
    bad = json.dumps({"messages": [{"role": "user"}]}).encode() + b"\n"
    rec, why = client_mod.parse_request(bad, "in.jsonl", 4)
    assert rec is None and why.startswith('in.jsonl:5: messages[0]["content"] should be str')
    assert why.endswith(MESSAGES_HINT)
    parts = json.dumps({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "q"}]}]}).encode() + b"\n"
    assert client_mod.parse_request(parts, "in.jsonl", 1)[0] is not None


def _ids(path):
    return sorted(r["index"] for r in read(path))


def test_sigkill_midway_then_resume_gives_the_same_rows(serve, tmp_path):
    """A run killed mid-way and rerun writes each row exactly once, as one whole run does.

    Neither the kill nor the end waits on a clock: the rows after the first quarter are held
    by the server until the kill (so the run cannot finish before it), and the kill waits for
    the first rows however long the step takes to start (seconds of imports on a busy
    machine)."""
    n = 600
    run_killed = threading.Event()

    def respond(req):
        i = row_of(req)
        if i % 25 == 0:
            return Reply(content="partial", finish_reason="length")
        held = i >= n // 4 and not run_killed.is_set()
        return Reply(content=f"answer {i} " + "x" * 2000, delay=3600 if held else 0.02)

    server = serve(respond, record=False)
    inp = write_requests(tmp_path / "in.jsonl", n)
    killed = str(tmp_path / "killed.jsonl")
    cmd = [sys.executable, os.path.join(SRC, "batched_api_inference.py"), "--input", inp,
           "--output", killed, "--model", "test-model", "--base_url", server.url,
           "--num_process", "2", "--num_thread", "8", "--no_progress"]
    env = with_stack_dumps({**os.environ, "OPENAI_API_KEY": ""})
    with open(tmp_path / "killed.stderr", "w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.monotonic() + 300
        while len(read_lines(killed)) < n // 8 or len(workers := _children(proc.pid)) < 2:
            if proc.poll() is None and time.monotonic() > deadline:
                abort_with_stacks(proc)
                err.seek(0)
                pytest.fail(f"no rows written in 300 s; where the step waited:\n{err.read()[-20000:]}")
            assert proc.poll() is None, f"the run ended (exit code {proc.returncode}) unkilled"
            time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_killed.set()
    written = len(read_lines(killed))
    assert n // 8 <= written < n // 4                    # killed mid-way
    # its workers died with it (waited for as a condition: a busy machine delays the kernel's
    # signal to them, it does not make them survive)
    deadline = time.monotonic() + 60
    while any(map(_running, workers)):
        assert time.monotonic() < deadline, "the workers outlived the killed run"
        time.sleep(0.02)

    assert run_or_show_stacks(cmd, timeout=300, env=env).returncode == 0
    whole = str(tmp_path / "whole.jsonl")
    assert run(server, inp, whole) == 0

    assert _ids(killed) == _ids(whole)                  # same rows, each exactly once
    assert len(_ids(killed)) == len(set(_ids(killed))) == n - n // 25
    assert _ids(killed + ".failed.jsonl") == _ids(whole + ".failed.jsonl") == list(range(0, n, 25))


def test_a_stop_before_any_row_started_ends_the_shard(serve, tmp_path):
    """A stop seen while the rows just handed out have not started yet (their coroutines never
    ran) ends the shard: each such row gives its slot back when its task is cancelled.

    It hung for good once: a worker of a two-process run crashed at start-up, the parent set
    the stop flag, and the other worker cancelled its first rows before they had run, so their
    slots were never released and the worker waited for a free one for ever."""
    from annoy_datasync.indexset import IndexSet
    from annoy_datasync.jsonl import Appender
    server = serve(lambda req: Reply(content="ok"))
    inp = write_requests(tmp_path / "in.jsonl", 50)
    settings = client_mod.RequestSettings(
        input=inp, model="test-model", concurrency=8, report_every=0.05,
        endpoint=resolve_endpoint("test-model", server.url, None, {}))
    stop = client_mod.StopFlag()
    stop.set()                                      # the parent stopped the run at once
    with Appender(tmp_path / "out.jsonl") as out, Appender(tmp_path / "failed.jsonl") as failed:
        stats, fatal = asyncio.run(asyncio.wait_for(
            client_mod.run_shard(settings, 0, 1, out, failed, IndexSet(), stop), 30))
    assert fatal is None and stats.in_flight == 0
    assert read_lines(tmp_path / "out.jsonl") == [] and server.count == 0


def test_workers_opening_a_new_cache_at_once_all_open_it(tmp_path):
    """Several processes opening one new cache file at the same moment each get it (the first
    switch to write-ahead logging raced with the others' and one of them failed with
    "database is locked", which crashed that inference worker)."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    for attempt in range(6):
        path = str(tmp_path / f"c{attempt}" / "responses.sqlite3")
        start = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_cache_at, args=(path, start)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6, f"round {attempt}"


def test_a_cache_that_cannot_be_opened_stops_the_run_before_it_starts(serve, tmp_path):
    server = serve(lambda req: Reply(content="ok"))
    inp = write_requests(tmp_path / "in.jsonl", 4)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(StepError) as err:
        run(server, inp, out, "--cache_dir", str(blocker))
    assert f"cannot open the response cache {blocker}" in str(err.value)
    assert "--no_cache" in str(err.value)
    assert server.count == 0 and not os.path.exists(out)
    assert run(server, inp, out, "--cache_dir", str(blocker), "--no_cache") == 0
    assert len(read(out)) == 4


def _open_cache_at(path, start):
    from annoy_datasync.cache import ResponseCache, cache_key
    start.wait()
    c = ResponseCache(path)
    c.put(cache_key("f", {"pid": os.getpid()}, 0), {"output": "x"})
    c.close()


def _children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a dead worker may wait to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def read_lines(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().splitlines()
    except FileNotFoundError:
        return []


# --- library pieces ---------------------------------------------------------------------------
@pytest.mark.parametrize("model, base_url, env, url, source", [
    ("deepseek-chat", None, {"DEEPSEEK_API_KEY": "d-key"}, "https://api.deepseek.com", "DEEPSEEK_API_KEY"),
    ("deepseek-reasoner", None, {"OPENAI_API_KEY": "o"}, "https://api.deepseek.com", "OPENAI_API_KEY"),
    ("gpt-4o-mini", None, {"OPENAI_API_KEY": "o", "DEEPSEEK_API_KEY": "d"}, "https://api.openai.com/v1", "OPENAI_API_KEY"),
    ("o3-mini", None, {"OPENAI_API_KEY": "o"}, "https://api.openai.com/v1", "OPENAI_API_KEY"),
    ("Qwen/Qwen2.5-7B", "http://127.0.0.1:8000/v1/", {}, "http://127.0.0.1:8000/v1", "none"),
    ("deepseek-ai/DeepSeek-R1", None, {"OPENAI_BASE_URL": "http://h:1/v1"}, "http://h:1/v1", "none"),
    ("gpt-4o", "http://proxy/v1", {"OPENAI_API_KEY": "o"}, "http://proxy/v1", "OPENAI_API_KEY"),
])
def test_endpoint_by_flag_environment_and_model_family(model, base_url, env, url, source):
    ep = resolve_endpoint(model, base_url, None, env)
    assert (ep.base_url, ep.key_source) == (url, source)
    assert "key=" not in repr(ep)


def test_endpoint_errors_say_what_to_set():
    with pytest.raises(InputError, match="--base_url"):
        resolve_endpoint("llama-3-8b", None, None, {})
    with pytest.raises(InputError, match="DEEPSEEK_API_KEY"):
        resolve_endpoint("deepseek-chat", None, None, {})
    assert resolve_endpoint("deepseek-chat", None, "k", {}).key_source == "--key"


def test_retry_after_headers_and_backoff():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None
    delays = [backoff_delay(a, 1.0, 60.0) for a in (1, 2, 3, 10)]
    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and 2 <= delays[2] <= 4
    assert 30 <= delays[3] <= 60
    assert backoff_delay(1, 0.01, 60.0, retry_after=3.0) == 3.0
    assert redact(f"bad key {KEY}!", KEY) == "bad key ***!"


def test_an_unreachable_server_stops_the_run_early(tmp_path, transport):
    import socket
    with socket.socket() as s:                 # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inp = write_requests(tmp_path / "in.jsonl", 200)
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(StepError, match="connection_error.*check --base_url"):
        bai.main(["--input", inp, "--output", out, "--model", "m", "--no_progress",
                  "--base_url", f"http://127.0.0.1:{port}/v1", "--max_retries", "0",
                  "--num_thread", "4"])
    assert 8 <= len(read(out + ".failed.jsonl")) <= 12 and read(out) == []


def test_malformed_answers_and_unexpected_errors_never_lose_a_row(serve, tmp_path, monkeypatch):
    """Rows used to vanish from both files when handling one raised (a 200 body whose
    choices hold null, or any bug): the task's exception was swallowed."""
    def respond(req):
        i = row_of(req)
        base = {"id": "x", "object": "chat.completion", "created": 0, "model": "m"}
        if i == 0:
            return Reply(body=json.dumps({**base, "choices": [None]}).encode())
        if i == 1:
            return Reply(body=json.dumps({**base, "choices": "abc"}).encode())
        return Reply(content=f"answer {i}")

    server = serve(respond)
    inp, out = write_requests(tmp_path / "in.jsonl", 6), str(tmp_path / "out.jsonl")
    real = bai.run_shard.__globals__["complete"]

    async def flaky(client, settings, messages, *a, **k):
        if messages[-1]["content"].endswith(" 2"):
            raise RuntimeError("a bug in handling row 2")
        return await real(client, settings, messages, *a, **k)

    monkeypatch.setitem(bai.run_shard.__globals__, "complete", flaky)
    assert run(server, inp, out) == 0
    failed = {r["index"]: r for r in read(out + ".failed.jsonl")}
    assert sorted(r["index"] for r in read(out)) == [3, 4, 5]
    assert sorted(failed) == [0, 1, 2]
    assert failed[0]["reason"] == failed[1]["reason"] == status.FAIL_EMPTY
    assert failed[2]["reason"] == status.FAIL_OTHER and "a bug in handling row 2" in failed[2]["error"]


def test_no_server_reached_stops_within_the_unreachable_span(tmp_path, monkeypatch):
    """One request in flight, full retries: the run stops once no attempt has reached a
    server for UNREACHABLE_SECONDS, not after the retries of FIRST_FAILURES rows in turn."""
    import socket
    with socket.socket() as s:                 # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(client_mod, "UNREACHABLE_SECONDS", 1.0)
    inp = write_requests(tmp_path / "in.jsonl", 20)
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(StepError, match=r"no server answered: \d+ attempts over \d+ s all "
                                        r"failed with connection_error.*check --base_url"):
        bai.main(["--input", inp, "--output", out, "--model", "m", "--no_progress",
                  "--base_url", f"http://127.0.0.1:{port}/v1", "--num_thread", "1",
                  "--backoff", "0.05", "--no_cache"])
    # stopped inside the first row's retries: no row given up on, none answered
    assert read(out + ".failed.jsonl") == [] and read(out) == []


def test_a_slow_answer_is_a_timeout_and_a_refused_one_is_not(serve, tmp_path, transport):
    """Both transports report a request that outlives --timeout as request_timeout (the
    aiohttp one calls a refused connection a timeout too; the cause tells them apart)."""
    def respond(req):
        i = row_of(req)
        return Reply(content=f"answer {i}", delay=3.0 if i == 1 else 0.0)

    server = serve(respond)
    inp, out = write_requests(tmp_path / "in.jsonl", 3), str(tmp_path / "out.jsonl")
    assert run(server, inp, out, "--timeout", "0.5", "--max_retries", "0") == 0
    failed = read(out + ".failed.jsonl")
    assert sorted(r["index"] for r in read(out)) == [0, 2]
    assert [(f["index"], f["reason"]) for f in failed] == [(1, status.FAIL_TIMEOUT)]


def test_resuming_with_another_model_is_refused_and_nothing_is_touched(serve, tmp_path):
    server = serve(lambda req: Reply(content=f"answer {row_of(req)}"))
    inp, out = write_requests(tmp_path / "in.jsonl", 5), str(tmp_path / "out.jsonl")
    assert run(server, inp, out, "--limit", "3") == 0
    before = open(out, "rb").read()
    argv = ["--input", inp, "--output", out, "--model", "other-model", "--base_url", server.url,
            "--no_progress"]
    with pytest.raises(InputError, match=r"3 from 'test-model'.*'other-model'.*new --output"):
        bai.main(argv)
    assert open(out, "rb").read() == before and len(server.requests) == 3
    assert run(server, inp, out) == 0                 # the same model resumes as before
    assert sorted(r["index"] for r in read(out)) == [0, 1, 2, 3, 4]


# --- rate limits and adaptive concurrency -----------------------------------------------------
def write_long_input(path, n, words=30):
    with open(path, "w") as fh:
        for i in range(n):
            text = " ".join(["word"] * words) + f" question {i}"
            fh.write(json.dumps({"messages": [{"role": "user", "content": text}]}) + "\n")
    return str(path)


@pytest.mark.parametrize("how, nproc", [("given", 1), ("learned", 2)])
def test_requests_per_minute_are_kept_given_or_learned(serve, tmp_path, how, nproc):
    """A server allowing 3,000 requests per minute (50 per second, one second of burst,
    continuous refill): paced by --rpm or by the limit its headers announce, 32 requests in
    flight per process answer every row with hardly any 429 (unpaced, 240 rows sent at once
    would collect ~190)."""
    server = serve(lambda req: Reply(content=f"answer {row_of(req)}"), rpm=3000)
    n = 240
    inp = write_requests(tmp_path / "in.jsonl", n)
    out = str(tmp_path / "out.jsonl")
    extra = ["--rpm", "3000"] if how == "given" else []
    assert run(server, inp, out, "--num_thread", "32", "--num_process", str(nproc), *extra) == 0
    assert sorted(r["index"] for r in read(out)) == list(range(n))
    assert read(out + ".failed.jsonl") == []
    assert server.rejected <= 3
    assert server.count == n + server.rejected          # nothing sent twice but the 429s


@pytest.mark.parametrize("how", ["given", "learned"])
def test_tokens_per_minute_are_kept(serve, tmp_path, how):
    """60,000 tokens per minute (1,000 a second); a row costs about 33 prompt + 21 answer
    tokens, so about 18 rows a second pass. The estimate starts far off (4 characters a token,
    1,000 answer tokens) and is corrected from usage as answers come back."""
    server = serve(lambda req: Reply(content="yes " * 20), tpm=60_000)
    n = 60
    inp = write_long_input(tmp_path / "in.jsonl", n)
    out = str(tmp_path / "out.jsonl")
    extra = ["--tpm", "60000"] if how == "given" else []
    assert run(server, inp, out, "--num_thread", "32", *extra) == 0
    assert sorted(r["index"] for r in read(out)) == list(range(n))
    assert server.rejected <= 3


def test_without_headers_429s_shrink_the_window_and_every_row_ends_once(serve, tmp_path, capsys):
    """A server that refuses above 40 requests per second and says nothing of its limits:
    the run slows down through its window and backoff, and every row is still answered."""
    server = serve(lambda req: Reply(content=f"answer {row_of(req)}", delay=0.05), rpm=2400,
                   limit_headers=False, burst=0.25)
    n = 200
    inp = write_requests(tmp_path / "in.jsonl", n)
    out = str(tmp_path / "out.jsonl")
    assert run(server, inp, out, "--num_thread", "32", "--max_retries", "20") == 0
    assert sorted(r["index"] for r in read(out)) == list(range(n))
    assert server.rejected > 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"rate_limited_attempts={server.rejected}" in line


# --- the response cache -------------------------------------------------------------------------
def test_a_rerun_into_a_new_output_is_answered_from_the_cache(serve, tmp_path):
    def respond(req):
        i = row_of(req)
        if i % 7 == 3:
            return Reply(content="cut", finish_reason="length")       # failures are not cached
        return Reply(content=f"answer {i} at t={req.body['temperature']}",
                     usage={"prompt_tokens": 10, "completion_tokens": 4 + i, "total_tokens": 14 + i})

    server = serve(respond)
    n = 30
    failing = [i for i in range(n) if i % 7 == 3]
    inp = write_requests(tmp_path / "in.jsonl", n)
    cache_dir = str(tmp_path / "cache")
    first = str(tmp_path / "first.jsonl")
    assert run(server, inp, first, "--cache_dir", cache_dir, "--num_process", "2") == 0
    assert server.count == n
    assert os.path.exists(os.path.join(cache_dir, "responses.sqlite3"))

    again = str(tmp_path / "again.jsonl")
    assert run(server, inp, again, "--cache_dir", cache_dir) == 0
    assert server.count == n + len(failing)                 # only the truncated ones again
    def by_index(rows):
        return sorted(rows, key=lambda r: r["index"])

    assert by_index(read(again)) == by_index(read(first))   # the same records, usage too
    assert [f["index"] for f in by_index(read(again + ".failed.jsonl"))] == failing

    for extra in (["--temperature", "0.9"], ["--sample", "1"], ["--max_tokens", "100"],
                  ["--no_cache"]):
        before = server.count
        other = str(tmp_path / f"other{extra[0]}.jsonl")
        assert run(server, inp, other, "--cache_dir", cache_dir, *extra) == 0
        assert server.count - before == n, extra            # a different key: all sent
    before = server.count
    assert run(server, inp, str(tmp_path / "t09.jsonl"), "--cache_dir", cache_dir,
               "--temperature", "0.9") == 0
    assert server.count - before == len(failing)            # that sample is cached in turn
    assert run(server, inp, str(tmp_path / "other_dir.jsonl"),
               "--cache_dir", str(tmp_path / "empty")) == 0
    assert server.count - before == len(failing) + n        # another cache: nothing known


def test_cache_keys_and_endpoint_families():
    from annoy_datasync.cache import cache_key, endpoint_family
    assert endpoint_family("https://api.openai.com/v1") == "api.openai.com"
    assert endpoint_family("https://api.deepseek.com") == "api.deepseek.com"
    for url in ("http://127.0.0.1:8000/v1", "http://10.0.0.7:30000/v1", "http://localhost/v1",
                "http://gpu-node-3:8000/v1", "http://[::1]:8000/v1"):
        assert endpoint_family(url) == "self-hosted", url
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7}
    keys = {cache_key("self-hosted", base, 0),
            cache_key("api.openai.com", base, 0),
            cache_key("self-hosted", base, 1),
            cache_key("self-hosted", {**base, "temperature": 0.0}, 0),
            cache_key("self-hosted", {**base, "model": "m2"}, 0),
            cache_key("self-hosted", {**base, "top_p": 0.9}, 0),
            cache_key("self-hosted", {**base, "messages": [{"role": "user", "content": "hi!"}]}, 0)}
    assert len(keys) == 7
    assert cache_key("x", dict(reversed(base.items())), 0) == cache_key("x", base, 0)


def test_cache_file_is_shared_by_processes(tmp_path):
    from annoy_datasync.cache import ResponseCache, cache_key
    path = str(tmp_path / "c" / "responses.sqlite3")
    a, b = ResponseCache(path), ResponseCache(path)
    ka, kb = cache_key("f", {"n": 1}, 0), cache_key("f", {"n": 2}, 0)
    a.put(ka, {"output": "A"})
    assert a.get(ka) == {"output": "A"} and b.get(ka) is None      # not written yet
    b.put(kb, {"output": "B"})
    a.flush()
    b.flush()
    assert b.get(ka) == {"output": "A"} and a.get(kb) == {"output": "B"} and len(a) == 2
    a.close()
    b.close()
    assert ResponseCache(path).get(kb) == {"output": "B"}


# --- cost ---------------------------------------------------------------------------------------
def _cost_server(serve):
    def respond(req):
        i = row_of(req)
        usage = {"prompt_tokens": 100_000 + i, "completion_tokens": 20_000 * (i + 1),
                 "total_tokens": 0}
        if i % 2:
            usage["prompt_tokens_details"] = {"cached_tokens": 60_000}
        if i == 4:
            return Reply(content="cut", finish_reason="length", usage=usage)   # paid all the same
        return Reply(content=f"answer {i}", usage=usage)

    return serve(respond)


def _summary_cost(err: str) -> str:
    line = err.strip().splitlines()[-1]
    return next(w for w in line.split() if w.startswith("cost="))


def test_cost_from_the_price_table_counts_cached_input_tokens(serve, tmp_path, capsys):
    server = _cost_server(serve)
    inp, out = write_requests(tmp_path / "in.jsonl", 6), str(tmp_path / "out.jsonl")
    argv = ["--input", inp, "--output", out, "--model", "gpt-4o-mini", "--base_url", server.url,
            "--no_progress", "--num_thread", "4"]
    assert bai.main(argv) == 0
    # gpt-4o-mini in prices.yaml: $0.15 input, $0.075 cached input, $0.60 output per million
    expected = 0.0
    for i in range(6):
        prompt, cached, answer = 100_000 + i, 60_000 if i % 2 else 0, 20_000 * (i + 1)
        expected += ((prompt - cached) * 0.15 + cached * 0.075 + answer * 0.60) / 1e6
    assert _summary_cost(capsys.readouterr().err) == f"cost=${expected:.4f}"
    assert sorted(f["index"] for f in read(out + ".failed.jsonl")) == [4]

    out2 = str(tmp_path / "out2.jsonl")
    argv2 = ["--input", inp, "--output", out2, "--model", "my-local-model", "--base_url",
             server.url, "--no_progress", "--price_in", "2", "--price_out", "8", "--no_cache"]
    assert bai.main(argv2) == 0
    flat = sum(((100_000 + i) * 2 + 20_000 * (i + 1) * 8) / 1e6 for i in range(6))
    assert _summary_cost(capsys.readouterr().err) == f"cost=${flat:.4f}"   # flags: no cached price

    out3 = str(tmp_path / "out3.jsonl")
    assert bai.main(["--input", inp, "--output", out3, "--model", "my-local-model",
                     "--base_url", server.url, "--no_progress", "--no_cache"]) == 0
    assert _summary_cost(capsys.readouterr().err) == "cost=unknown"


def test_price_lookup_and_bad_tables(tmp_path):
    from annoy_datasync import prices
    table = prices.load_table()
    assert prices.lookup("gpt-4o-2024-08-06", table) == table["gpt-4o"]
    assert prices.lookup("gpt-4o-mini-2024-07-18", table) == table["gpt-4o-mini"]
    assert prices.lookup("openai/GPT-4.1-mini", table) == table["gpt-4.1-mini"]
    assert prices.lookup("Qwen/Qwen2.5-7B", table) is None
    p = prices.Price(1.0, 4.0, 0.25)
    assert p.cost(1_000_000, 500_000, 400_000) == pytest.approx(0.6 + 0.1 + 2.0)
    bad = tmp_path / "p.yaml"
    bad.write_text("m: {input: 1}\n")
    with pytest.raises(InputError, match="p.yaml: m: no output price"):
        prices.load_table(str(bad))
    bad.write_text("m: {input: -1, output: 2}\n")
    with pytest.raises(InputError, match="non-negative"):
        prices.load_table(str(bad))
    bad.write_text("m: {input: 1, output: 2, cached_input: 0.5}\n")
    assert prices.resolve("m-2025", None, None, str(bad)) == prices.Price(1, 2, 0.5)
    assert prices.resolve("m", 3.0, None, str(bad)) == prices.Price(3.0, 2, None)
    with pytest.raises(InputError, match="go together"):
        prices.resolve("unknown", 3.0, None, str(bad))
    # the batch price: every price less the entry's batch_discount (0.5 when not given)
    assert prices.Price(1.0, 4.0, 0.25).at_batch() == prices.Price(0.5, 2.0, 0.125, 0.0)
    bad.write_text("m: {input: 1, output: 2, batch_discount: 0.2}\nn: {input: 1, output: 2}\n")
    assert prices.load_table(str(bad))["m"].at_batch() == prices.Price(0.8, 1.6, None, 0.0)
    assert prices.load_table(str(bad))["n"].batch_discount == 0.5
    assert prices.resolve("m", None, None, str(bad), 0.0).at_batch().input == 1.0
    assert prices.resolve("m", 3.0, 5.0, str(bad)).batch_discount == 0.2
    assert prices.resolve("unknown", 3.0, 5.0, str(bad)).batch_discount == 0.5
    assert {p.batch_discount for p in prices.load_table(str(bad), 0.3).values()} == {0.3}
    # DeepSeek has no Batch API: a batch answer of its models costs the full price, unless
    # the run says what its batch host saves
    assert table["deepseek-chat"].at_batch().input == table["deepseek-chat"].input == 0.27
    assert prices.resolve("deepseek-reasoner", None, None, None, 0.5).at_batch().input == 0.275
    bad.write_text("m: {input: 1, output: 2, batch_discount: 1.5}\n")
    with pytest.raises(InputError, match="m: batch_discount is the share"):
        prices.load_table(str(bad))
    # a broken table is named by file and line in one line, as a broken prompts file is
    bad.write_text("m: {input: 1,\n  output: [2\n")
    with pytest.raises(InputError, match=r"p\.yaml:3: not valid YAML \(expected") as err:
        prices.load_table(str(bad))
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="missing.yaml: no such price table"):
        prices.load_table(str(tmp_path / "missing.yaml"))


# --- several endpoints --------------------------------------------------------------------------
def test_several_servers_least_loaded_dead_one_set_aside(serve, tmp_path, capsys):
    """Three servers of one model: a fast one, a slow one and one killed mid-run. Every row
    ends once in the output; the slow one gets a small share; the dead one costs a few
    failed attempts, not one per row (it fails fast, so without setting it aside it would
    look the least loaded of all and draw every attempt)."""
    import threading
    fast = serve(lambda req: Reply(content=f"answer {row_of(req)}", delay=0.02))
    slow = serve(lambda req: Reply(content=f"answer {row_of(req)}", delay=0.4))
    doomed = serve(lambda req: Reply(content=f"answer {row_of(req)}", delay=0.02))

    def kill_when_busy():
        while doomed.count < 20:
            time.sleep(0.005)
        doomed.stop()

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    n = 400
    inp, out = write_requests(tmp_path / "in.jsonl", n), str(tmp_path / "out.jsonl")
    argv = ["--input", inp, "--output", out, "--model", "test-model", "--no_progress",
            "--base_url", fast.url, "--base_url", slow.url, "--base_url", doomed.url,
            "--num_thread", "12", "--backoff", "0.01", "--max_retries", "3"]
    assert bai.main(argv) == 0
    killer.join(5)
    assert sorted(r["index"] for r in read(out)) == list(range(n))     # every row once
    assert read(out + ".failed.jsonl") == []
    line = capsys.readouterr().err.strip().splitlines()[-1]
    attempts = int(line.split("attempts=")[1].split()[0])
    assert attempts - n <= 30                      # failed attempts: those cut, then probes
    assert fast.count + slow.count + doomed.count >= n
    assert slow.count < fast.count / 3            # least loaded: the slow one holds its few
    assert 20 <= doomed.count < 40


def test_pool_sets_aside_and_probes_again(monkeypatch):
    from annoy_datasync.client import Member, Pool
    from annoy_datasync.endpoints import AttemptOutcome, Endpoint
    clock = [100.0]
    monkeypatch.setattr(client_mod.time, "monotonic", lambda: clock[0])
    a, b = (Member(Endpoint(u, "k", "none"), [object()]) for u in ("http://a/v1", "http://b/v1"))
    pool = Pool([a, b])
    down = AttemptOutcome(False, status.FAIL_CONNECTION, retry=True)
    for i in range(Pool.FAILS):
        assert not a.aside
        a.in_flight += 1                            # as if chosen
        a.lane_load[0] += 1
        pool.release(a, 0, down)
    assert a.aside
    held = [pool.choose() for _ in range(5)]       # a is set aside: everything goes to b
    assert all(m is b for m, _ in held)
    clock[0] += 1.01                               # the cool-down of 1 s is over: one probe
    probe, lane = pool.choose()
    assert probe is a and pool.choose()[0] is b    # only one probe at a time
    pool.release(a, lane, down)                    # the probe failed: aside for 2 s now
    clock[0] += 1.5
    assert pool.choose()[0] is b
    clock[0] += 0.6
    probe, lane = pool.choose()
    assert probe is a
    pool.release(a, lane, AttemptOutcome(True))    # back in service
    assert not a.aside and a.cooldown == Pool.FIRST_COOLDOWN


def test_progress_projects_the_cost_of_the_rows_left():
    from annoy_datasync.fanout import Progress
    from annoy_datasync.prices import Price
    p = Progress(total=100, disable=True, price=Price(1.0, 2.0))
    snap = {"counts": {status.INFERENCE_SUCCEEDED: 30}, "in_flight": 5, "tokens_in": 1_000_000,
            "tokens_out": 500_000, "tokens_cached": 0, "attempts": 25, "rejected": 2,
            "window": 12.0, "limits": "req/min=600", "cached": 10}
    p.update(0, snap)
    p.update(1, {**snap, "counts": {}, "tokens_in": 0, "tokens_out": 0, "cached": 0})
    t = p.totals()
    assert p.cost(t) == pytest.approx(2.0) and t["window"] == 24.0 and t["rejected"] == 4
    # $2 for the 20 rows sent so far; 90 of the 100 rows cost something: $9 in all
    assert p.cost_text(t, 30) == " spent=$2.0000 projected=$9.0000"
    assert Progress(total=5, disable=True).cost_text(t, 30) == ""


def test_the_progress_bar_starts_no_thread_before_the_workers_fork():
    import threading
    from annoy_datasync.client import Stats
    from annoy_datasync.fanout import Progress
    before = threading.active_count()
    bar = Progress(10, disable=False)
    try:
        bar.update(0, Stats().snapshot())
        assert threading.active_count() == before
    finally:
        bar.close()


# --- the parent of the worker processes never waits for ever on one ---------------------------
def _killed_holding_the_queue_lock(settings, shard, nshards, out, failed, done, answered, stop,
                                   q, parent):
    from annoy_datasync.client import Stats
    if shard == 0:          # killed (say by the OOM killer) while it was sending a message
        q._wlock.acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    stop.wait()             # the parent stops the run; this one's report can never get through
    q.put(("final", shard, Stats().snapshot(), None))


def _ended_without_a_report(settings, shard, nshards, out, failed, done, answered, stop, q,
                            parent):
    from annoy_datasync.client import Stats
    if shard == 0:
        os._exit(0)
    stop.wait()
    q.put(("final", shard, Stats().snapshot(), None))


def _run_processes_with(worker, monkeypatch, nproc=2):
    """run_processes over fake workers, in a thread so that a hang fails the test."""
    from annoy_datasync import fanout
    monkeypatch.setattr(fanout, "_worker", worker)
    monkeypatch.setattr(fanout, "STOP_GRACE_S", 1.0)
    result = []
    t = threading.Thread(target=lambda: result.append(fanout.run_processes(
        None, nproc, None, None, None, None, fanout.Progress(10, disable=True))), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "run_processes waited for ever on a worker that cannot report"
    return result[0]


def test_a_worker_killed_while_sending_does_not_hang_the_parent(monkeypatch):
    """A worker killed while it held the queue's write lock: the others can send nothing (nor
    exit); the parent gives up on them once the run has been stopping for STOP_GRACE_S."""
    fatal = _run_processes_with(_killed_holding_the_queue_lock, monkeypatch)
    assert fatal == "worker 0 died (exit code -9)"


def test_a_worker_that_ends_without_its_report_stops_the_run(monkeypatch):
    fatal = _run_processes_with(_ended_without_a_report, monkeypatch)
    assert fatal == "worker 0 ended without its final report"
