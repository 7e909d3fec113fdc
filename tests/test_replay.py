"""The replay server: recorded answers served over real HTTP, unknown requests refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import openai
import pytest

from annoy_datasync import status
from annoy_datasync.chat_server import ChatServer
from annoy_datasync.jsonl import InputError
from annoy_datasync.replay import load_answers, make_responder, message_key
from testutil import SRC


def _write(path, records):
    with open(path, "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return str(path)


Q1 = [{"role": "user", "content": "What is 2+2? End with {\"output\": ...}"}]
Q2 = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
      {"role": "user", "content": "try again"}]


def test_message_key_ignores_key_order_and_extra_fields_but_not_content():
    a = [{"role": "user", "content": "hi"}]
    b = [{"content": "hi", "role": "user", "name": "x"}]
    assert message_key(a) == message_key(b)
    assert message_key(a) != message_key([{"role": "user", "content": "hi "}])
    assert message_key(a) != message_key([{"role": "system", "content": "hi"}])


def test_load_answers_accepts_inference_output_and_skips_failed_rows(tmp_path):
    path = _write(tmp_path / "gens.jsonl", [
        # the shape of a batched_api_inference output line (extra fields are fine)
        {"messages": Q1, "itemid": 3, "output": "4. {\"output\": 4}", "model": "m",
         "reasoning": "adding", "index": 0, "finish_reason": "stop",
         "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}},
        {"messages": Q2, "output": None},
    ])
    book = load_answers([path])
    assert (book.loaded, book.skipped, len(book)) == (1, 1, 1)
    assert book.lookup(Q1).reasoning == "adding"
    assert book.lookup(Q2) is None and book.unknown == 1


def test_load_answers_names_file_and_line_of_a_bad_record(tmp_path):
    path = _write(tmp_path / "a.jsonl", [{"messages": Q1, "output": "x"}, {"output": "y"}])
    with pytest.raises(InputError, match=r"a\.jsonl:2: no \"messages\" field"):
        load_answers([path])


def test_duplicate_messages_are_served_in_file_order_then_cycle(tmp_path):
    path = _write(tmp_path / "a.jsonl", [{"messages": Q1, "output": "one"},
                                         {"messages": Q1, "output": "two"}])
    book = load_answers([path])
    assert [book.lookup(Q1).output for _ in range(3)] == ["one", "two", "one"]


def test_known_request_answered_unknown_refused_over_http(tmp_path):
    path = _write(tmp_path / "a.jsonl", [
        {"messages": Q1, "output": "It is 4.\n{\"output\": 4}", "reasoning": "2+2",
         "finish_reason": "stop"},
        {"messages": Q2, "output": "cut off mid", "reasoning": None, "finish_reason": "length"},
    ])
    book = load_answers([path])
    with ChatServer(make_responder(book)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="EMPTY", max_retries=0)
        r = client.chat.completions.create(model="any", messages=Q1)
        assert r.choices[0].message.content == "It is 4.\n{\"output\": 4}"
        assert r.choices[0].finish_reason == "stop"
        assert getattr(r.choices[0].message, "reasoning_content", None) == "2+2"
        r2 = client.chat.completions.create(model="any", messages=Q2)
        assert r2.choices[0].finish_reason == "length"
        with pytest.raises(openai.BadRequestError, match="no recorded answer"):
            client.chat.completions.create(model="any",
                                           messages=[{"role": "user", "content": "never seen"}])
    assert (book.answered, book.unknown) == (2, 1)


def test_cli_writes_port_file_serves_and_stops_on_sigterm(tmp_path):
    answers = _write(tmp_path / "a.jsonl", [{"messages": Q1, "output": "{\"output\": 4}"}])
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, os.path.join(SRC, "replay_server.py"),
                             "--answers", answers, "--port_file", str(port_file)],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "replay server did not write its port file"
            time.sleep(0.05)
        port = int(port_file.read_text())
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY",
                               max_retries=0)
        r = client.chat.completions.create(model="replay", messages=Q1)
        assert r.choices[0].message.content == "{\"output\": 4}"
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="replay", messages=Q2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "answered=1" in err and "unknown_request=1" in err


def test_cli_refuses_an_answers_file_without_usable_answers(tmp_path):
    answers = _write(tmp_path / "a.jsonl", [{"messages": Q1, "output": None}])
    proc = subprocess.run([sys.executable, os.path.join(SRC, "replay_server.py"),
                           "--answers", answers], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no usable recorded answer" in proc.stderr


def test_inference_client_records_an_unknown_request_as_a_failed_row(tmp_path, monkeypatch):
    import batched_api_inference

    known = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]
    answers = _write(tmp_path / "answers.jsonl",
                     [{"messages": m, "output": f"answer {i}"} for i, m in enumerate(known)])
    requests = _write(tmp_path / "requests.jsonl",
                      [{"messages": known[0], "id": "a"},
                       {"messages": [{"role": "user", "content": "not recorded"}], "id": "b"},
                       {"messages": known[1], "id": "c"},
                       {"messages": known[2], "id": "d"}])
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-replay-demo")
    with ChatServer(make_responder(load_answers([answers]))) as server:
        rc = batched_api_inference.main(["--input", requests, "--output", str(out), "--model", "replay",
                                         "--base_url", server.url, "--num_thread", "1",
                                         "--no_progress"])
    assert rc == 0
    got = {r["id"]: (r["output"], r["index"]) for r in map(json.loads, out.read_text().splitlines())}
    assert got == {"a": ("answer 0", 0), "c": ("answer 1", 2), "d": ("answer 2", 3)}
    failed = [json.loads(line) for line in (tmp_path / "out.jsonl.failed.jsonl").read_text().splitlines()]
    assert [(f["index"], f["reason"]) for f in failed] == [(1, status.FAIL_BAD_REQUEST)]
    assert "no recorded answer" in failed[0]["error"]
