"""batched_api_inference.py --batch_api and the offline pair, against a Batch API on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

import batched_api_inference as bai
from annoy_datasync import batch_api, prices, status
from annoy_datasync.batch_server import BatchServer, echo
from annoy_datasync.chat_server import ChatServer, echo_responder
from annoy_datasync.jsonl import BOM, InputError
from testutil import SRC, read, write_requests


def base_argv(inp, out, url="http://127.0.0.1:9/v1", *extra):
    return ["--input", inp, "--output", out, "--model", "test-model", "--base_url", url,
            "--no_progress", *extra]


def run_batch(server, inp, out, *extra):
    return bai.main(base_argv(inp, out, server.url, "--batch_api", "--poll_interval", "0.02",
                              *extra))


def by_index(rows):
    return {r["index"]: r for r in rows}


@pytest.fixture
def serve():
    servers = []

    def start(**kw):
        s = BatchServer(**kw).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


# --- request files ---------------------------------------------------------------------------
def test_custom_id_round_trips():
    for i in (0, 7, 1_000_000):
        assert batch_api.index_of(batch_api.custom_id(i)) == i
    for bad in ("7", "row-", "row-x", "row-1 ", None, 7, "request-1"):
        assert batch_api.index_of(bad) is None


def test_write_batch_file_splits_by_count_and_bytes(tmp_path):
    inp = write_requests(tmp_path / "in.jsonl", 25, bad_lines={3})
    target = str(tmp_path / "req.jsonl")
    rc = bai.main(base_argv(inp, str(tmp_path / "out.jsonl"), "http://x/v1",
                            "--write_batch_file", target, "--batch_max_requests", "10"))
    assert rc == 0
    parts = [str(tmp_path / f"req.{k:03d}.jsonl") for k in (1, 2, 3)]
    assert [len(read(p)) for p in parts] == [10, 10, 4]
    assert not os.path.exists(target)
    ids = [batch_api.index_of(x["custom_id"]) for p in parts for x in read(p)]
    assert ids == [i for i in range(25) if i != 3]
    first = read(parts[0])[0]
    assert first["method"] == "POST" and first["url"] == "/v1/chat/completions"
    assert first["body"]["model"] == "test-model"
    assert first["body"]["messages"] == [{"role": "user", "content": "question 0"}]
    assert [f["index"] for f in read(str(tmp_path / "out.jsonl.failed.jsonl"))] == [3]

    # by bytes: each line is about 200 bytes, so a 1024-byte cap holds 4-5 of them
    target2 = str(tmp_path / "b.jsonl")
    bai.main(base_argv(inp, str(tmp_path / "out2.jsonl"), "http://x/v1",
                       "--write_batch_file", target2, "--batch_max_bytes", "1024"))
    files = sorted(p for p in os.listdir(tmp_path) if p.startswith("b."))
    assert len(files) > 4
    seen = []
    for name in files:
        path = tmp_path / name
        assert os.path.getsize(path) <= 1024
        seen += [batch_api.index_of(x["custom_id"]) for x in read(path)]
    assert seen == [i for i in range(25) if i != 3]


def test_write_batch_file_one_part_keeps_the_name(tmp_path):
    inp = write_requests(tmp_path / "in.jsonl", 5)
    target = str(tmp_path / "req.jsonl")
    assert bai.main(base_argv(inp, str(tmp_path / "o.jsonl"), "http://x/v1",
                              "--write_batch_file", target)) == 0
    assert len(read(target)) == 5


@pytest.mark.parametrize("batch", [False, True], ids=["live", "batch"])
def test_an_output_of_another_model_is_refused_alike_live_and_in_batches(tmp_path, batch):
    """A rerun only sends the missing rows: onto another model's answers it would mix models.
    The live run and the batch run refuse it with the same message, and send nothing."""
    inp = write_requests(tmp_path / "in.jsonl", 3)
    out = tmp_path / "o.jsonl"
    out.write_text('{"index": 0, "model": "other-model", "output": "x"}\n'
                   '{"index": 1, "model": "other-model", "output": "y"}\n')
    extra = ("--write_batch_file", str(tmp_path / "req.jsonl")) if batch else ()
    with pytest.raises(InputError) as err:
        bai.main(base_argv(inp, str(out), "http://127.0.0.1:9/v1", *extra))
    assert str(err.value) == (
        f"{out} already holds answers of another model (2 from 'other-model'); this run asks "
        "'test-model', and a rerun only sends the rows that are missing, so the file would "
        "mix models. Write to a new --output (or pass the model that wrote it)")
    assert not (tmp_path / "req.jsonl").exists()


def completion(content, finish="stop"):
    return {"choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}


@pytest.mark.parametrize("line, ok, reason, text", [
    ({"response": {"status_code": 200, "body": completion("hi")}, "error": None}, True, None, ""),
    ({"response": {"status_code": 200, "body": completion("hi", "length")}}, False,
     status.FAIL_LENGTH, "max_tokens"),
    ({"response": {"status_code": 200, "body": completion("  ")}}, False, status.FAIL_EMPTY, "empty"),
    # OpenAI: the error inside the body
    ({"response": {"status_code": 429, "body": {"error": {"message": "slow down"}}}}, False,
     status.FAIL_RATE_LIMIT, "slow down"),
    ({"response": {"status_code": 500, "body": {"error": {"message": "oops"}}}}, False,
     status.FAIL_SERVER, "oops"),
    # vLLM: no body, the error object (or a plain message) beside the response
    ({"response": {"status_code": 400, "body": None},
      "error": {"object": "error", "message": "too long", "code": 400}}, False,
     status.FAIL_BAD_REQUEST, "too long"),
    ({"response": {"status_code": 400}, "error": "bad json in request"}, False,
     status.FAIL_BAD_REQUEST, "bad json"),
    # OpenAI's error file for a request the window did not reach
    ({"response": None, "error": {"code": "batch_expired", "message": "window"}}, False,
     status.FAIL_BATCH_EXPIRED, "window"),
    ({"response": None, "error": None}, False, status.FAIL_OTHER, "no response"),
])
def test_classify_result(line, ok, reason, text):
    res = batch_api.classify_result(line, max_tokens=100)
    assert res.ok is ok
    assert res.reason == reason
    assert text in res.error
    if ok:
        assert res.output == "hi" and res.usage["completion_tokens"] == 7


def vllm_results(request_file, fail=()):
    """What vLLM's run_batch writes for a request file: one line per request, any order."""
    rows = []
    for n, req in enumerate(reversed(read(request_file))):
        cid = req["custom_id"]
        error = None
        if batch_api.index_of(cid) in fail:
            resp = {"status_code": 400, "request_id": f"vllm-{n}", "body": None}
            error = {"object": "error", "message": "prompt too long", "type": "BadRequestError",
                     "param": None, "code": 400}
        else:
            code, body = echo(cid, req["body"])
            resp = {"status_code": code, "request_id": f"vllm-{n}", "body": body}
        rows.append({"id": f"vllm-{n}", "custom_id": cid, "response": resp, "error": error})
    return rows


def test_offline_pair_gives_the_live_output(tmp_path):
    inp = write_requests(tmp_path / "in.jsonl", 12, bad_lines={5})
    req = str(tmp_path / "req.jsonl")
    assert bai.main(base_argv(inp, str(tmp_path / "off.jsonl"), "http://x/v1",
                              "--write_batch_file", req)) == 0
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in vllm_results(req, fail={7})))
    off = str(tmp_path / "off.jsonl")
    assert bai.main(base_argv(inp, off, "http://x/v1", "--read_batch_output", str(results))) == 0

    # the same requests answered live by the chat server, which answers "echo: <content>"
    with ChatServer(echo_responder) as server:
        live = str(tmp_path / "live.jsonl")
        assert bai.main(base_argv(inp, live, server.url, "--backoff", "0.01")) == 0
    got, want = by_index(read(off)), by_index(read(live))
    assert set(got) == set(want) - {7}
    for i in got:
        g, w = dict(got[i]), dict(want[i])
        assert g.pop("usage") and w.pop("usage")   # token counts differ between the servers
        assert g == w
    fails = {f["index"]: f for f in read(off + ".failed.jsonl")}
    assert fails[5]["reason"] == status.FAIL_BAD_INPUT
    assert fails[7]["reason"] == status.FAIL_BAD_REQUEST and "prompt too long" in fails[7]["error"]

    # reading the same results again writes nothing twice
    assert bai.main(base_argv(inp, off, "http://x/v1", "--read_batch_output", str(results))) == 0
    assert sorted(r["index"] for r in read(off)) == sorted(got)


def test_a_byte_order_mark_at_the_start_of_a_file_changes_nothing(tmp_path):
    # the files of a Windows editor: input and results begin with a UTF-8 BOM
    lines = open(write_requests(tmp_path / "in.jsonl", 6)).read().splitlines(keepends=True)
    got = {}
    for name, head, line3 in (("plain", b"", b""), ("bom", BOM, b""), ("inside", b"", BOM)):
        d = tmp_path / name
        d.mkdir()
        inp = d / "in.jsonl"
        inp.write_bytes(head + "".join(lines[:3]).encode() + line3 + "".join(lines[3:]).encode())
        req = d / "req.jsonl"
        assert bai.main(base_argv(str(inp), str(d / "o.jsonl"), "http://x/v1",
                                  "--write_batch_file", str(req))) == 0
        results = d / "results.jsonl"
        results.write_bytes(head + "".join(json.dumps(r) + "\n"
                                           for r in vllm_results(req)).encode())
        off = d / "off.jsonl"
        assert bai.main(base_argv(str(inp), str(off), "http://x/v1",
                                  "--read_batch_output", str(results))) == 0
        with ChatServer(echo_responder) as server:
            live = d / "live.jsonl"
            assert bai.main(base_argv(str(inp), str(live), server.url, "--backoff", "0.01")) == 0
        got[name] = (req.read_bytes(), off.read_bytes(), sorted(read(live), key=lambda r: r["index"]),
                     read(d / "o.jsonl.failed.jsonl") + read(str(live) + ".failed.jsonl"))
    assert got["bom"] == got["plain"] and got["plain"][3] == []
    # a mark anywhere else is not skipped: that line is a bad request, as any line not JSON
    # (refused when the request file is written, and by the live run)
    req, off, live, failed = got["inside"]
    assert [r["index"] for r in live] == [0, 1, 2, 4, 5]
    assert [(f["index"], f["reason"]) for f in failed] == [(3, status.FAIL_BAD_INPUT)] * 2
    assert all("in.jsonl:4" in f["error"] and "byte order mark" in f["error"] for f in failed)


def test_read_batch_output_counts_lines_without_a_result(tmp_path, capsys):
    inp = write_requests(tmp_path / "in.jsonl", 6)
    req = str(tmp_path / "req.jsonl")
    assert bai.main(base_argv(inp, str(tmp_path / "o.jsonl"), "http://x/v1",
                              "--write_batch_file", req)) == 0
    results = tmp_path / "results.jsonl"
    rows = [r for r in vllm_results(req) if r["custom_id"] not in ("row-1", "row-4")]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    out = str(tmp_path / "o.jsonl")
    assert bai.main(base_argv(inp, out, "http://x/v1", "--read_batch_output", str(results))) == 0
    err = capsys.readouterr().err
    assert "succeeded=4" in err and "not_in_results=2" in err
    assert sorted(r["index"] for r in read(out)) == [0, 2, 3, 5]


def test_read_batch_output_names_file_and_line(tmp_path, capsys):
    inp = write_requests(tmp_path / "in.jsonl", 3)
    bad = tmp_path / "res.jsonl"
    bad.write_text('{"custom_id": "row-0", "response": null}\n{"custom_id": "other-1"}\n')
    rc = bai.cli.run(bai.main, base_argv(inp, str(tmp_path / "o.jsonl"), "http://x/v1",
                                         "--read_batch_output", str(bad)))
    assert rc == 1
    assert f"{bad}:2" in capsys.readouterr().err


# --- live ------------------------------------------------------------------------------------
def test_batch_completes_with_some_failed_requests(serve, tmp_path, capsys):
    def responder(cid, body):
        if batch_api.index_of(cid) % 4 == 1:
            return 500, {"error": {"message": "overloaded", "type": "server_error"}}
        return echo(cid, body)

    server = serve(responder=responder, per_poll=3)
    inp = write_requests(tmp_path / "in.jsonl", 10, bad_lines={6})
    out = str(tmp_path / "out.jsonl")
    assert run_batch(server, inp, out, "--batch_max_requests", "4") == 0
    assert len(server.batches) == 3
    rows = read(out)
    assert sorted(r["index"] for r in rows) == [0, 2, 3, 4, 7, 8]
    r0 = by_index(rows)[0]
    assert r0["output"] == "echo: question 0" and r0["itemid"] == 0
    assert r0["model"] == "test-model" and r0["finish_reason"] == "stop"
    assert set(r0) == {"messages", "itemid", "output", "model", "reasoning", "index",
                       "finish_reason", "usage"}
    fails = {f["index"]: f["reason"] for f in read(out + ".failed.jsonl")}
    assert fails == {1: status.FAIL_SERVER, 5: status.FAIL_SERVER, 9: status.FAIL_SERVER,
                     6: status.FAIL_BAD_INPUT}
    err = capsys.readouterr().err
    assert "succeeded=6" in err and "server_error=3" in err

    # a rerun resubmits exactly the failed requests
    server.responder = echo
    assert run_batch(server, inp, out) == 0
    assert len(server.batches) == 4
    last = max(server.batches.values(), key=lambda b: int(b["id"].split("-")[1]))
    resent = [batch_api.index_of(json.loads(x)["custom_id"])
              for x in server.files[last["input_file_id"]]["content"].splitlines()]
    assert resent == [1, 5, 9]
    assert Counter(r["index"] for r in read(out)) == Counter(i for i in range(10) if i != 6)


@pytest.mark.parametrize("how", ["expired", "cancelled", "failed"])
def test_batch_that_does_not_complete(serve, tmp_path, how):
    kw = {"expired": {"expire_after": 2}, "failed": {"fail_validation": True},
          "cancelled": {"per_poll": 2}}[how]
    server = serve(**kw)
    inp = write_requests(tmp_path / "in.jsonl", 6)
    out = str(tmp_path / "out.jsonl")
    if how == "cancelled":
        # submit and look once (2 answered), then cancel: the answered two are kept
        assert run_batch(server, inp, out, "--batch_no_wait") == 0
        assert read(out) == []
        assert run_batch(server, inp, out, "--batch_cancel") == 0
    else:
        assert run_batch(server, inp, out) == 0
    answered = {"expired": [0, 1], "cancelled": [0, 1], "failed": []}[how]
    assert sorted(r["index"] for r in read(out)) == answered
    reason = {"expired": status.FAIL_BATCH_EXPIRED, "cancelled": status.FAIL_BATCH_CANCELLED,
              "failed": status.FAIL_BATCH_FAILED}[how]
    fails = read(out + ".failed.jsonl")
    assert sorted(f["index"] for f in fails) == [i for i in range(6) if i not in answered]
    assert {f["reason"] for f in fails} == {reason}
    # the rerun resubmits exactly those, in one new batch
    server.expire_after = None
    server.fail_validation = False
    server.per_poll = None
    n = len(server.batches)
    assert run_batch(server, inp, out) == 0
    assert len(server.batches) == n + 1
    assert Counter(r["index"] for r in read(out)) == Counter(range(6))
    assert read(out + ".failed.jsonl") == []


def test_state_is_recorded_and_other_flags_refused(serve, tmp_path, capsys):
    server = serve(per_poll=1)
    inp = write_requests(tmp_path / "in.jsonl", 3)
    out = str(tmp_path / "out.jsonl")
    assert run_batch(server, inp, out, "--batch_no_wait") == 0
    state = json.load(open(out + ".batch_state.json"))
    assert state["parts"][0]["batch_id"] in server.batches
    assert state["parts"][0]["file_id"] in server.files
    rc = bai.cli.run(bai.main, base_argv(inp, out, server.url, "--batch_api") +
                     ["--model", "other-model"])
    assert rc == 1 and "batch_state" in capsys.readouterr().err


def run_killed(server, inp, out, event, victim):
    """Run the step in a child process; the server kills it at `event`."""
    cmd = [sys.executable, os.path.join(SRC, "batched_api_inference.py"),
           *base_argv(inp, out, server.url, "--batch_api", "--poll_interval", "0.02")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    victim.append(proc.pid)
    rc = proc.wait(timeout=60)
    return rc


@pytest.mark.parametrize("event", ["upload", "create", "created", "retrieve", "content"])
def test_killed_run_resumes_without_duplicates(serve, tmp_path, event):
    victim: list[int] = []
    fired = []

    def hook(ev, detail):
        if ev == event and not fired and victim:
            fired.append(detail)
            os.kill(victim[0], signal.SIGKILL)

    server = serve(hook=hook)
    inp = write_requests(tmp_path / "in.jsonl", 7)
    out = str(tmp_path / "out.jsonl")
    assert run_killed(server, inp, out, event, victim) == -signal.SIGKILL
    assert fired
    server.hook = lambda ev, detail: None
    assert run_batch(server, inp, out) == 0
    assert len(server.batches) == 1, "a batch was submitted twice"
    assert Counter(r["index"] for r in read(out)) == Counter(range(7))
    assert read(out + ".failed.jsonl") == []


def test_batch_max_active_submits_one_part_at_a_time(serve, tmp_path):
    running_at_create = []

    def hook(event, detail):
        if event == "create":
            running_at_create.append(sum(b["status"] not in batch_api.TERMINAL
                                         for b in server.batches.values()))

    server = serve(hook=hook, per_poll=2)
    inp = write_requests(tmp_path / "in.jsonl", 9)
    out = str(tmp_path / "out.jsonl")
    assert run_batch(server, inp, out, "--batch_max_requests", "3", "--batch_max_active", "1") == 0
    assert running_at_create == [0, 0, 0]
    assert Counter(r["index"] for r in read(out)) == Counter(range(9))


def test_cancel_before_submission_fails_the_parts_not_sent(serve, tmp_path):
    server = serve(per_poll=1)
    inp = write_requests(tmp_path / "in.jsonl", 4)
    out = str(tmp_path / "out.jsonl")
    assert run_batch(server, inp, out, "--batch_max_requests", "2", "--batch_max_active", "1",
                     "--batch_no_wait") == 0
    assert len(server.batches) == 1
    assert run_batch(server, inp, out, "--batch_cancel") == 0
    assert len(server.batches) == 1
    assert sorted(r["index"] for r in read(out)) == [0]
    fails = {f["index"]: f["reason"] for f in read(out + ".failed.jsonl")}
    assert fails == {1: status.FAIL_BATCH_CANCELLED, 2: status.FAIL_BATCH_CANCELLED,
                     3: status.FAIL_BATCH_CANCELLED}


def test_run_pipeline_sends_the_three_rounds_as_batches(serve, tmp_path):
    server = serve()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "run"
    # the run's own price table and batch share reach every round and the report
    table = tmp_path / "prices.yaml"
    table.write_text("test-model: {input: 100000, output: 1000000, batch_discount: 0.5}\n")
    cmd = ["bash", os.path.join(root, "scripts", "run_pipeline.sh"), "--model", "test-model",
           "--base_url", server.url, "--out_dir", str(out), "--limit", "1", "--batch_api",
           "--poll_interval", "0.05", "--prices", str(table), "--batch_discount", "0.25"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(server.batches) == 3
    report = json.loads((out / "report.json").read_text())
    assert report["prices"] == {"table": str(table), "batch_discount": 0.25}
    summaries = [_summary_words(line) for line in proc.stderr.splitlines()
                 if line.startswith("batched_api_inference:")]
    assert len(summaries) == 3
    for words, step, name in zip(summaries, ("transform", "turn_1", "turn_2"),
                                 ("rawcode_demo_unified.jsonl", "spec_demo_gens.jsonl",
                                  "spec_demo_gens_rev.jsonl")):
        rows = read(out / name)
        assert rows and all(r["output"].startswith("echo: ") for r in rows)
        # the batch server's echo: 3 prompt and 2 answer tokens a row; less a quarter
        cost = len(rows) * (3 * 100_000 + 2 * 1_000_000) * 0.75 / 1e6
        assert words["cost"] == prices.dollars(cost)
        assert report["inference"][step]["cost"] == pytest.approx(cost)
    # with recorded answers there is no Batch API to send to, nor batches to price
    for extra in (["--batch_api"], ["--batch_discount", "0.25"]):
        proc = subprocess.run(cmd[:2] + ["--out_dir", str(tmp_path / "replay"), *extra],
                              cwd=root, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and extra[0] in proc.stderr


def test_collecting_again_writes_no_row_twice(serve, tmp_path):
    """A kill after a batch's rows were written but before it was marked collected: the
    rerun downloads and converts it again and skips what is in the output."""
    server = serve(responder=lambda cid, body: (500, {"error": {"message": "x"}})
                   if cid == "row-2" else echo(cid, body))
    inp = write_requests(tmp_path / "in.jsonl", 5)
    out = str(tmp_path / "out.jsonl")
    assert run_batch(server, inp, out, "--batch_max_requests", "3") == 0
    state_path = out + ".batch_state.json"
    state = json.load(open(state_path))
    for part in state["parts"]:
        part["collected"] = False
    # the request files are removed once collected; put them back
    for part in state["parts"]:
        with open(part["request_file"], "wb") as fh:
            fh.write(server.files[part["file_id"]]["content"])
    json.dump(state, open(state_path, "w"))
    assert run_batch(server, inp, out) == 0
    assert len(server.batches) == 2
    assert Counter(r["index"] for r in read(out)) == Counter([0, 1, 3, 4])
    assert [f["index"] for f in read(out + ".failed.jsonl")] == [2]


def test_polling_outlasts_a_few_failed_looks_but_not_many(serve, tmp_path, monkeypatch):
    server = serve(failing_looks=4)
    inp = write_requests(tmp_path / "in.jsonl", 3)
    out = str(tmp_path / "out.jsonl")
    assert run_batch(server, inp, out) == 0
    assert server.failing_looks == 0
    assert sorted(r["index"] for r in read(out)) == [0, 1, 2]

    monkeypatch.setattr(batch_api, "MAX_POLL_ERRORS", 2)
    server.failing_looks = 10
    inp2 = write_requests(tmp_path / "in2.jsonl", 3)
    out2 = str(tmp_path / "out2.jsonl")
    rc = bai.cli.run(bai.main, base_argv(inp2, out2, server.url, "--batch_api",
                                         "--poll_interval", "0.01"))
    assert rc == 1 and server.failing_looks == 7
    assert read(out2) == []
    # the rerun re-attaches to the same batch once the server answers again
    server.failing_looks = 0
    assert run_batch(server, inp2, out2) == 0
    assert len(server.batches) == 2
    assert sorted(r["index"] for r in read(out2)) == [0, 1, 2]


def test_a_second_run_on_the_same_batches_is_refused(serve, tmp_path, capsys):
    import fcntl
    server = serve()
    inp = write_requests(tmp_path / "in.jsonl", 2)
    out = str(tmp_path / "out.jsonl")
    with open(out + ".batch_state.json.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        rc = bai.cli.run(bai.main, base_argv(inp, out, server.url, "--batch_api"))
    assert rc == 1 and "another run" in capsys.readouterr().err
    assert server.batches == {} and server.files == {}
    assert run_batch(server, inp, out) == 0
    assert len(read(out)) == 2


# --- cost at the batch price ----------------------------------------------------------------
def _priced(cid, body):
    """Token counts that differ per row; odd rows had cached prompt tokens; row 3 is cut
    (paid all the same), row 5 fails (no usage, nothing paid)."""
    i = batch_api.index_of(cid)
    if i == 5:
        return 500, {"error": {"message": "overloaded"}}
    usage = {"prompt_tokens": 100_000 + i, "completion_tokens": 30_000 * (i + 1),
             "total_tokens": 0}
    if i % 2:
        usage["prompt_tokens_details"] = {"cached_tokens": 40_000}
    code, answer = echo(cid, body)
    answer["usage"] = usage
    if i == 3:
        answer["choices"][0]["finish_reason"] = "length"
    return code, answer


def _tokens(i):
    return 100_000 + i, (40_000 if i % 2 else 0), 30_000 * (i + 1)   # prompt, cached, answer


def _summary_words(err):
    line = err.strip().splitlines()[-1]
    return dict(w.split("=", 1) for w in line.split() if "=" in w)


def test_batch_summary_and_report_cost_at_the_batch_price(serve, tmp_path, capsys):
    from annoy_datasync.report import inference_stats
    server = serve(responder=_priced)
    inp = write_requests(tmp_path / "in.jsonl", 6)
    out = str(tmp_path / "out.jsonl")
    argv = ["--input", inp, "--output", out, "--model", "gpt-4o-mini", "--base_url", server.url,
            "--no_progress", "--batch_api", "--poll_interval", "0.02"]
    assert bai.main(argv) == 0
    # gpt-4o-mini in prices.yaml: $0.15 input, $0.075 cached input, $0.60 output per million;
    # through a batch half of each
    def at_batch(rows):
        return sum(((p - c) * 0.075 + c * 0.0375 + a * 0.30) / 1e6
                   for p, c, a in map(_tokens, rows))
    words = _summary_words(capsys.readouterr().err)
    assert words["cost"] == f"${at_batch([0, 1, 2, 3, 4]):.4f}"       # the cut row 3 too
    assert words["tokens_cached_in"] == str(2 * 40_000)
    rows = by_index(read(out))
    assert sorted(rows) == [0, 1, 2, 4]
    assert all(r["usage"]["batch"] is True for r in rows.values())
    stats = inference_stats(out, out + ".failed.jsonl")
    assert stats["via_batch"] == 4
    assert stats["cost"] == pytest.approx(at_batch([0, 1, 2, 4]))      # the rows kept

    # flags are listed prices; --batch_discount overrides the table's share
    out2 = str(tmp_path / "out2.jsonl")
    argv2 = ["--input", inp, "--output", out2, "--model", "my-model", "--base_url", server.url,
             "--no_progress", "--batch_api", "--poll_interval", "0.02", "--price_in", "2",
             "--price_out", "8", "--batch_discount", "0.25"]
    assert bai.main(argv2) == 0
    flat = sum((p * 2 + a * 8) * 0.75 / 1e6 for p, _, a in map(_tokens, [0, 1, 2, 3, 4]))
    assert _summary_words(capsys.readouterr().err)["cost"] == f"${flat:.4f}"


def test_read_batch_output_prices_from_the_table_and_its_batch_discount(tmp_path, capsys):
    inp = write_requests(tmp_path / "in.jsonl", 4)
    req = str(tmp_path / "req.jsonl")
    assert bai.main(base_argv(inp, str(tmp_path / "o.jsonl"), "http://x/v1",
                              "--write_batch_file", req)) == 0
    words = _summary_words(capsys.readouterr().err)
    assert words["requests_written"] == "4" and words["cost"] == "unknown"   # test-model
    results = tmp_path / "results.jsonl"
    results.write_text("".join(
        json.dumps({"custom_id": r["custom_id"],
                    "response": {"status_code": 200,
                                 "body": _priced(r["custom_id"], r["body"])[1]}}) + "\n"
        for r in read(req)))
    table = tmp_path / "prices.yaml"
    table.write_text("test-model: {input: 4, cached_input: 1, output: 10, batch_discount: 0.4}\n")
    out = str(tmp_path / "out.jsonl")
    assert bai.main(base_argv(inp, out, "http://x/v1", "--read_batch_output", str(results),
                              "--prices", str(table))) == 0
    expected = sum(((p - c) * 4 + c * 1 + a * 10) * 0.6 / 1e6
                   for p, c, a in map(_tokens, range(4)))
    assert _summary_words(capsys.readouterr().err)["cost"] == f"${expected:.4f}"
    with pytest.raises(SystemExit) as exc:        # no batch to price in the live mode
        bai.main(base_argv(inp, out, "http://x/v1", "--batch_discount", "0.5"))
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        bai.main(base_argv(inp, out, "http://x/v1", "--batch_api", "--batch_discount", "2"))
    assert exc.value.code == 2


def test_a_download_that_breaks_off_leaves_the_old_file_and_no_temp_file(tmp_path):
    """A batch's results are written whole through jsonl.atomic_text: a connection cut
    half-way through the body leaves whatever was there before and nothing beside it."""
    import contextlib
    import types

    import openai

    from annoy_datasync.client import _sdk_httpx
    httpx = _sdk_httpx()

    def stream(chunks, cut):
        def iter_bytes():
            yield from chunks
            if cut:
                raise httpx.ReadError("connection reset", request=httpx.Request("GET", "http://127.0.0.1:9/"))
        return types.SimpleNamespace(iter_bytes=iter_bytes)

    def client(chunks, cut):
        content = lambda file_id: contextlib.nullcontext(stream(chunks, cut))  # noqa: E731
        return types.SimpleNamespace(files=types.SimpleNamespace(
            with_streaming_response=types.SimpleNamespace(content=content)))

    path = tmp_path / "results.jsonl"
    path.write_bytes(b"old\n")
    with pytest.raises(openai.APIConnectionError, match="file-1 broke off"):
        batch_api.download(client([b"half", b" of it"], cut=True), "file-1", str(path))
    assert path.read_bytes() == b"old\n"
    assert os.listdir(tmp_path) == ["results.jsonl"]
    batch_api.download(client([b'{"a": 1}\n', b'{"b": 2}\n'], cut=False), "file-1", str(path))
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    assert os.listdir(tmp_path) == ["results.jsonl"]


# JSON may escape a lone surrogate (a model's text can hold one); no UTF-8 body can carry it
LONE_SURROGATE = ('{"messages": [{"role": "system", "content": "ok"}, '
                  '{"role": "user", "content": [{"type": "text", "text": "half \\ud800 a pair"}]}]}')


def test_a_lone_surrogate_is_bad_input_naming_file_and_line_in_a_batch(serve, tmp_path):
    """The row is recorded as bad_input, as the live path does (test_batched_api_inference);
    the other rows of its file go through (writing the file crashed on it)."""
    server = serve(responder=echo)
    inp = write_requests(tmp_path / "in.jsonl", 5, bad_lines={2: LONE_SURROGATE})
    out = str(tmp_path / "out.jsonl")
    assert run_batch(server, inp, out) == 0
    assert sorted(r["index"] for r in read(out)) == [0, 1, 3, 4]
    [fail] = read(out + ".failed.jsonl")
    assert fail["index"] == 2 and fail["reason"] == status.FAIL_BAD_INPUT
    assert fail["error"].startswith(f"{inp}:3: ")
    assert 'messages[1]["content"][0]["text"] holds a lone surrogate' in fail["error"]
