import json
import random

import pytest

import verify
from annoy_datasync import status as st
from annoy_datasync.jsonl import InputError
from annoy_datasync.verification import read_verdict, show
from testutil import read

DOUBLE = "def main_solution(x):\n    return x * 2\n"
AREA = "def main_solution(r):\n    return 3.14159 * r * r\n"
EXITS = "import sys\n\ndef main_solution(a):\n    sys.exit(0)\n"
RAISES = ("def main_solution(n):\n    if n < 0:\n        raise ValueError('n must be >= 0')\n"
          "    return n + 1\n")
SLOW = "import time\n\ndef main_solution(t):\n    time.sleep(t)\n    return t\n"
LIAR = ("class Liar:\n    def __eq__(self, other):\n        return True\n\n"
        "def main_solution(x):\n    return Liar()\n")

PARSED = [
    {"refcode": DOUBLE, "ios": [{"input": {"x": 1}, "output": 2}, {"input": {"x": 5}, "output": 10}]},
    {"refcode": AREA, "ios": [{"input": {"r": 1.0}, "output": 3.14159},
                              {"input": {"r": 2.0}, "output": 12.56636}]},
    {"refcode": EXITS, "ios": [{"input": {"a": 1}, "output": 5}]},
    {"refcode": RAISES, "ios": [{"input": {"n": 3}, "output": 4}]},
    {"refcode": SLOW, "ios": [{"input": {"t": 0.4}, "output": 0.4}, {"input": {"t": 0}, "output": 0}]},
    {"refcode": LIAR, "ios": [{"input": {"x": 1}, "output": 7}]},
    {"refcode": "import os\n\ndef main_solution(a):\n    os._exit(0)\n",
     "ios": [{"input": {"a": 1}, "output": 1}]},
]


def answer(obj, style=0):
    body = json.dumps(obj)
    if style == 0:
        return f"Let me reason step by step.\n\n```json\n{body}\n```"
    return f"The final answer is {body}"


# (itemid, ioid, io_pred, answer text, expected status)
CASES = [
    (0, 0, "o", answer({"output": 2}), st.SUCCESS),
    (0, 1, "o", answer({"output": 11}, 1), st.WRONG_ANSWER),
    (0, 1, "o", answer({"output": 10.0}), st.SUCCESS),            # 10 == 10.0
    (0, 1, "o", answer({"output": True}), st.WRONG_ANSWER),       # a bool is not a number
    (0, 0, "i", answer({"input": {"x": 1}}), st.SUCCESS),
    (0, 1, "i", answer({"input": {"x": 5}}, 1), st.SUCCESS),
    (0, 1, "i", answer({"input": {"x": 4}}), st.WRONG_ANSWER),
    (0, 1, "i", answer({"input": {"x": 4}}, 1), st.WRONG_ANSWER),  # same as above: cached
    (0, 1, "i", answer({"input": {"y": 5}}), st.EXCEPTION),        # wrong argument name
    (0, 1, "i", answer({"input": [5]}), st.WRONG_ANSWER),          # main_solution([5]) == [5, 5]
    (0, 0, "o", "I think it is two.", st.NO_ANSWER),
    (0, 0, "i", "no idea", st.NO_ANSWER),
    (1, 0, "o", answer({"output": 3.1416}), st.SUCCESS),           # within relative 1e-3
    (1, 0, "o", answer({"output": 3.15}), st.WRONG_ANSWER),        # 2.7e-3 off
    (1, 1, "o", answer({"output": 12.57}), st.SUCCESS),
    (1, 1, "o", answer({"output": 12.6}), st.WRONG_ANSWER),
    (1, 0, "i", answer({"input": {"r": 1.0001}}), st.SUCCESS),     # output 2e-4 off
    (1, 0, "i", answer({"input": {"r": 1.01}}), st.WRONG_ANSWER),  # output 2% off
    (2, 0, "i", answer({"input": {"a": 2}}), st.EXCEPTION),        # sys.exit(0) never passes
    (2, 0, "i", answer({"input": {"a": 5}}), st.EXCEPTION),
    (3, 0, "i", answer({"input": {"n": -1}}), st.EXCEPTION),
    (3, 0, "i", answer({"input": {"n": 3}}), st.SUCCESS),
    (4, 0, "i", answer({"input": {"t": 0.4001}}), st.SUCCESS),     # slow: finishes after later ones
    (4, 1, "i", answer({"input": {"t": 0}}), st.SUCCESS),
    (4, 1, "i", answer({"input": {"t": 0.3}}), st.WRONG_ANSWER),
    (5, 0, "i", answer({"input": {"x": 2}}), st.NON_JSON),         # __eq__ always True: no pass
    (5, 0, "o", answer({"output": 7}), st.SUCCESS),
    (6, 0, "i", answer({"input": {"a": 2}}), st.CRASHED),          # exit status 0 proves nothing
]


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def make_files(tmp_path, cases, seed=0):
    parsed = tmp_path / "parsed.jsonl"
    write_lines(parsed, [json.dumps(r) for r in PARSED])
    rows = [{"messages": [{"role": "user", "content": f"q{k}"}], "itemid": i, "ioid": j,
             "io_pred": p, "output": text, "model": "m", "index": k, "tag": k}
            for k, (i, j, p, text, _) in enumerate(cases)]
    random.Random(seed).shuffle(rows)  # input and output predictions interleaved at random
    gens = tmp_path / "gens.jsonl"
    write_lines(gens, [json.dumps(r) for r in rows])
    return parsed, gens, rows


def run_verify(tmp_path, parsed, gens, out, *extra):
    return verify.main(["--parsed_file", str(parsed), "--gens_file", str(gens),
                        "--output_file", str(out), "--run_path", str(tmp_path / "run"),
                        "--workers", "2", "--timeout", "3", *extra])


@pytest.mark.parametrize("seed", [0, 1])
def test_mixed_file_verdicts_land_on_their_records(tmp_path, capsys, seed):
    parsed, gens, rows = make_files(tmp_path, CASES, seed)
    out = tmp_path / "verified.jsonl"
    assert run_verify(tmp_path, parsed, gens, out, "--window", "4") == 0
    got = read(out)
    assert [r["tag"] for r in got] == [r["tag"] for r in rows]           # all, once, in order
    for r in got:
        expected_status = CASES[r["tag"]][4]
        assert r["res"]["status"] == expected_status, (CASES[r["tag"]], r["res"])
        assert {k: v for k, v in r.items() if k != "res"} == rows[[x["tag"] for x in rows].index(r["tag"])]
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith("verify:")
    assert f"success={sum(c[4] == st.SUCCESS for c in CASES)}" in summary
    assert "cache_hits=1" in summary   # the repeated {"x": 4} prediction ran once
    assert "recorded_hits=4" in summary  # predicted inputs that are recorded inputs: not run


def test_messages_are_the_feedback(tmp_path):
    cases = [
        (0, 1, "o", answer({"output": 11}), st.WRONG_ANSWER),
        (0, 1, "i", answer({"input": {"x": 4}}), st.WRONG_ANSWER),
        (3, 0, "i", answer({"input": {"n": -1}}), st.EXCEPTION),
        (0, 0, "o", "no json here", st.NO_ANSWER),
        (0, 0, "o", answer({"output": 2}), st.SUCCESS),
    ]
    parsed, gens, rows = make_files(tmp_path, cases)
    out = tmp_path / "v.jsonl"
    assert run_verify(tmp_path, parsed, gens, out) == 0
    msgs = {r["tag"]: r["res"]["message"] for r in read(out)}
    assert msgs[0] == 'Given the input {"x": 5}, your predicted output 11 is wrong.'
    assert msgs[1] == 'Your predicted input {"x": 4} makes main_solution return 8, not 10.'
    assert msgs[2] == "Calling main_solution on your predicted input raised ValueError: n must be >= 0."
    assert msgs[3] == 'Your answer has no JSON object of the form {"output": ...}.'
    assert msgs[4] == "Your answer is correct."


def test_show_cuts_huge_values():
    text = show(list(range(10_000)))
    assert len(text) < 400 and text.startswith("[0, 1, 2") and text.endswith("characters)")
    assert show({"a": 1}) == '{"a": 1}'


def test_bad_gens_lines_get_not_runnable_and_nothing_is_lost(tmp_path, caplog, capsys):
    parsed, _, _ = make_files(tmp_path, CASES[:1])
    gens = tmp_path / "gens.jsonl"
    good = {"itemid": 0, "ioid": 0, "io_pred": "o", "output": answer({"output": 2})}
    write_lines(gens, [
        json.dumps(good),
        json.dumps({"ioid": 0, "io_pred": "o", "output": "x"}),                  # no itemid
        json.dumps({**good, "ioid": 7}),                                          # out of range
        json.dumps({**good, "itemid": 99}),                                       # no such sample
        json.dumps({**good, "io_pred": "x"}),
        '{"itemid": 0, "ioid": 0, "io_pred"',                                     # broken JSON
        json.dumps({**good, "output": None}),                                     # no answer text
        "[1, 2]",                                                                 # not an object
    ])
    out, rejects = tmp_path / "v.jsonl", tmp_path / "rejects.jsonl"
    assert run_verify(tmp_path, parsed, gens, out, "--rejects_file", str(rejects)) == 0
    got = [r["res"]["status"] for r in read(out)]
    assert got == [st.SUCCESS, st.NOT_RUNNABLE, st.NOT_RUNNABLE, st.NOT_RUNNABLE,
                   st.NOT_RUNNABLE, st.NO_ANSWER]
    assert "gens.jsonl:2" in caplog.text and "gens.jsonl:3" in caplog.text
    assert "out of range" in read(out)[2]["res"]["message"]
    # the lines that cannot carry a verdict are in the rejects file: in = out + rejected
    lost = read(rejects)
    assert [r["line"] for r in lost] == [6, 8]
    assert lost[0]["text"] == '{"itemid": 0, "ioid": 0, "io_pred"' and lost[1]["text"] == "[1, 2]"
    lines_in = len(gens.read_text().splitlines())
    assert lines_in == 8 == len(read(out)) + len(lost)
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "rejected=2" in summary and str(rejects) in summary

    # a run without bad lines removes the stale rejects file
    write_lines(gens, [json.dumps(good)])
    assert run_verify(tmp_path, parsed, gens, out, "--rejects_file", str(rejects)) == 0
    assert not rejects.exists() and len(read(out)) == 1


def test_recheck_only_touches_listed_statuses(tmp_path):
    parsed, _, _ = make_files(tmp_path, CASES[:1])
    verified = tmp_path / "v.jsonl"
    base = {"itemid": 0, "ioid": 1, "io_pred": "i", "output": answer({"input": {"x": 5}})}
    write_lines(verified, [
        # a stale "success" on a wrong answer: copied as is, proving it was not re-checked
        json.dumps({**base, "output": answer({"input": {"x": 3}}),
                    "res": {"status": "success", "message": "kept"}}),
        json.dumps({**base, "res": {"status": "timeout", "message": "timed out"}}),
        json.dumps(base),  # no res yet: checked
        # the original implementation's verdicts are kept as they are (only "timeout" of
        # theirs is re-checked); those of any other tool are checked again
        json.dumps({**base, "res": {"status": "failed", "message": "original"}}),
        json.dumps({**base, "res": {"status": "no answer"}}),
        json.dumps({**base, "res": {"status": "wrong", "message": "other tool"}}),
    ])
    assert run_verify(tmp_path, parsed, verified, verified, "--recheck", "timeout") == 0
    got = read(verified)
    assert got[0]["res"] == {"status": "success", "message": "kept"}
    assert got[1]["res"]["status"] == st.SUCCESS and got[1]["res"]["message"] != "timed out"
    assert got[2]["res"]["status"] == st.SUCCESS
    assert got[3]["res"] == {"status": "failed", "message": "original"}
    assert got[4]["res"] == {"status": "no answer", "message": ""}
    assert got[5]["res"]["status"] == st.SUCCESS
    assert all(set(r) == set(base) | {"res"} for r in got)


def test_resume_from_reuses_identical_lines_only(tmp_path, capsys):
    parsed, gens, rows = make_files(tmp_path, CASES[:8])
    out = tmp_path / "v.jsonl"
    assert run_verify(tmp_path, parsed, gens, out) == 0
    first = read(out)
    # forge the stored verdicts, then change one answer in the gens file
    forged = [{**r, "res": {"status": r["res"]["status"], "message": "old"}} for r in first]
    write_lines(out, [json.dumps(r) for r in forged])
    rows[3]["output"] = "changed, no answer"
    write_lines(gens, [json.dumps(r) for r in rows])
    capsys.readouterr()
    assert run_verify(tmp_path, parsed, gens, out, "--resume_from", str(out)) == 0
    second = read(out)
    assert [r["res"]["message"] == "old" for r in second] == [i != 3 for i in range(len(rows))]
    assert second[3]["res"]["status"] == st.NO_ANSWER
    assert "reused=7" in capsys.readouterr().err


def test_output_only_file_starts_no_executor(tmp_path, monkeypatch):
    cases = [c for c in CASES if c[2] == "o"]
    parsed, gens, _ = make_files(tmp_path, cases)

    def boom(*a, **k):
        raise AssertionError("an executor was started")

    monkeypatch.setattr(verify, "Executor", boom)
    out = tmp_path / "v.jsonl"
    assert run_verify(tmp_path, parsed, gens, out) == 0
    assert [r["res"]["status"] for r in read(out)] == [cases[r["tag"]][4] for r in read(out)]


def test_bad_usage_and_bad_files(tmp_path, capsys):
    parsed, gens, _ = make_files(tmp_path, CASES[:2])
    with pytest.raises(SystemExit) as exc:
        run_verify(tmp_path, parsed, gens, tmp_path / "o.jsonl", "--recheck", "timeuot")
    assert exc.value.code == 2
    from annoy_datasync import cli

    argv = ["--parsed_file", str(tmp_path / "missing.jsonl"), "--gens_file", str(gens),
            "--output_file", str(tmp_path / "o.jsonl")]
    assert cli.run(verify.main, argv) == 1
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    notjson = tmp_path / "p.csv"
    notjson.write_text("a,b\n1,2\n")
    argv[1] = str(notjson)
    assert cli.run(verify.main, argv) == 1
    assert "p.csv:1" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_recorded_input_is_judged_by_its_record(tmp_path, monkeypatch):
    """A predicted input equal to a recorded one gets the recorded output (the truth output
    predictions are judged by) without running; --always_run runs it anyway."""
    cases = [(2, 0, "i", answer({"input": {"a": 1}}), st.SUCCESS),       # recorded: a=1 -> 5
             (0, 1, "i", answer({"input": {"x": 1}}), st.WRONG_ANSWER)]  # another recorded pair
    parsed, gens, _ = make_files(tmp_path, cases)
    out = tmp_path / "v.jsonl"

    def boom(*a, **k):
        raise AssertionError("an executor was started")

    with monkeypatch.context() as m:
        m.setattr(verify, "Executor", boom)
        assert run_verify(tmp_path, parsed, gens, out) == 0
    got = {r["tag"]: r["res"] for r in read(out)}
    assert got[0]["status"] == st.SUCCESS
    assert got[1] == {"status": st.WRONG_ANSWER,
                      "message": 'Your predicted input {"x": 1} makes main_solution return 2, not 10.'}
    assert run_verify(tmp_path, parsed, gens, out, "--always_run") == 0
    got = {r["tag"]: r["res"] for r in read(out)}
    assert got[0]["status"] == st.EXCEPTION and "SystemExit" in got[0]["message"]
    assert got[1]["status"] == st.WRONG_ANSWER


def test_swapped_or_wrong_files_are_a_clear_error(tmp_path, capsys):
    """A parsed file given as predictions (or the reverse) would otherwise give every line
    not_runnable and exit 0."""
    from annoy_datasync import cli

    parsed, gens, _ = make_files(tmp_path, CASES[:2])
    out = tmp_path / "o.jsonl"
    for p, g, bad, words in [(parsed, parsed, parsed, 'no "itemid", "ioid" or "io_pred" field'),
                             (gens, gens, gens, 'no "refcode" and no "ios" field')]:
        argv = ["--parsed_file", str(p), "--gens_file", str(g), "--output_file", str(out),
                "--run_path", str(tmp_path / "run")]
        assert cli.run(verify.main, argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {bad}:1: {words}"), err
        assert len(err.strip().splitlines()) == 1
        assert not out.exists() and not list(tmp_path.glob("o.jsonl.*"))


def test_an_output_that_is_not_text_is_not_runnable_not_a_verdict(tmp_path, caplog):
    parsed, _, _ = make_files(tmp_path, CASES[:1])
    gens = tmp_path / "gens.jsonl"
    good = {"itemid": 0, "ioid": 0, "io_pred": "o"}
    write_lines(gens, [json.dumps({**good, "output": 2}), json.dumps({**good, "output": None})])
    out = tmp_path / "v.jsonl"
    assert run_verify(tmp_path, parsed, gens, out) == 0
    got = [r["res"] for r in read(out)]
    assert got[0]["status"] == st.NOT_RUNNABLE and '"output" should be a string' in got[0]["message"]
    assert got[1]["status"] == st.NO_ANSWER
    assert "gens.jsonl:1" in caplog.text


def test_an_execution_the_executor_failed_is_run_again_not_cached():
    from concurrent.futures import Future

    from annoy_datasync.executor import JobResult
    from annoy_datasync.verification import ExecCache

    results = [[JobResult(st.NOT_RUNNABLE, error_type=st.EXECUTOR_ERROR, message="worker died")],
               [JobResult(st.SUCCESS, value=2)]]
    calls = []

    def submit(code, kwargs, func):
        calls.append(kwargs)
        fut = Future()
        fut.set_result(results[len(calls) - 1])
        return fut

    cache = ExecCache(submit)
    first = cache.get(DOUBLE, {"x": 1}).result()
    assert first[0].status == st.NOT_RUNNABLE
    again = cache.get(DOUBLE, {"x": 1}).result()        # not the cached failure
    assert again[0].status == st.SUCCESS and len(calls) == 2
    assert cache.get(DOUBLE, {"x": 1}).result()[0].value == 2 and len(calls) == 2  # now cached


def test_resume_checks_not_runnable_again(tmp_path, capsys):
    parsed, gens, rows = make_files(tmp_path, CASES[:2])
    out = tmp_path / "v.jsonl"
    assert run_verify(tmp_path, parsed, gens, out) == 0
    first = read(out)
    # e.g. a sandbox worker died during the first run
    write_lines(out, [json.dumps({**r, "res": {"status": st.NOT_RUNNABLE, "message": "old"}})
                      for r in first])
    assert run_verify(tmp_path, parsed, gens, out, "--resume_from", str(out)) == 0
    assert [r["res"] for r in read(out)] == [r["res"] for r in first]
    assert "reused" not in capsys.readouterr().err


STATEFUL = ("import os, random\n\ncalls = []\n\ndef main_solution(x):\n"
            "    calls.append(x)\n"
            "    if x == -1:\n        while True:\n            pass\n"
            "    if x == -2:\n        os._exit(1)\n"
            "    if x == 7:\n        return random.random()\n"
            "    return len(calls) * 100 + x\n")


@pytest.mark.parametrize("grouped", [True, False])
def test_batched_executions_run_as_if_alone(tmp_path, monkeypatch, grouped):
    """Predictions of one sample share a job; each call still sees a fresh namespace and
    random state, and a hang or a crash inside the job fails only its own record."""
    from annoy_datasync.executor import Executor

    parsed = tmp_path / "parsed.jsonl"
    samples = [{"refcode": STATEFUL, "ios": [{"input": {"x": 1}, "output": 101},
                                             {"input": {"x": 2}, "output": 102}]},
               PARSED[0]]
    write_lines(parsed, [json.dumps(r) for r in samples])
    preds = [(0, 1, 2, st.SUCCESS), (0, 1, 3, st.WRONG_ANSWER), (0, 1, -1, st.TIMEOUT),
             (0, 1, 2.0, st.SUCCESS), (0, 0, -2, st.CRASHED), (0, 0, 1, st.SUCCESS),
             (1, 1, 5, st.SUCCESS), (1, 1, 6, st.WRONG_ANSWER), (0, 1, 7, st.WRONG_ANSWER),
             (0, 1, 4, st.WRONG_ANSWER), (0, 0, 1.0, st.SUCCESS), (1, 0, 1, st.SUCCESS)]
    rows = [{"itemid": i, "ioid": j, "io_pred": "i", "output": answer({"input": {"x": x}}),
             "tag": k} for k, (i, j, x, _) in enumerate(preds)]
    if not grouped:
        random.Random(3).shuffle(rows)
    gens = tmp_path / "gens.jsonl"
    write_lines(gens, [json.dumps(r) for r in rows])
    sizes = []
    real = Executor.run_calls

    def spy(self, code, inputs, **kw):
        sizes.append(len(inputs))
        assert kw.get("fresh") is True
        return real(self, code, inputs, **kw)

    monkeypatch.setattr(Executor, "run_calls", spy)
    # batch even while a worker is idle (by default a call then runs at once, alone)
    real_batcher = verify.CallBatcher
    monkeypatch.setattr(verify, "CallBatcher",
                        lambda run, max_calls, parallel: real_batcher(run, max_calls, parallel=0))
    outs = {}
    for batch in ("16", "1"):
        out = tmp_path / f"v{batch}.jsonl"
        sizes.clear()
        assert run_verify(tmp_path, parsed, gens, out, "--always_run", "--timeout", "1",
                          "--batch", batch) == 0
        got = read(out)
        assert [r["tag"] for r in got] == [r["tag"] for r in rows]
        for r in got:
            assert r["res"]["status"] == preds[r["tag"]][3], (preds[r["tag"]], r["res"])
        outs[batch] = [r["res"] for r in got]
        assert sum(sizes) == len(preds)     # every prediction ran once, none was lost
        if batch == "1":
            assert max(sizes) == 1
        elif grouped:
            assert max(sizes) > 1 and len(sizes) < len(preds)
    # the same verdicts and messages, batched or not (but for the unseeded random draw,
    # which differs between executors anyway)
    drawn = next(k for k, r in enumerate(rows) if '"x": 7' in r["output"])
    for k, (a, b) in enumerate(zip(outs["16"], outs["1"])):
        assert a == b or (k == drawn and a["status"] == b["status"])


def test_call_batcher_gives_each_call_its_own_result():
    from concurrent.futures import Future

    from annoy_datasync.executor import JobResult
    from annoy_datasync.verification import CallBatcher

    jobs = []

    def run_calls(code, inputs, func):
        fut = Future()
        jobs.append((code, list(inputs), fut))
        return fut

    b = CallBatcher(run_calls, max_calls=3, parallel=1)
    first = b.submit("A", {"x": 0})     # nothing running: sent at once, alone
    assert [i["x"] for i in jobs[-1][1]] == [0]
    futs = [(c, x, b.submit(c, {"x": x})) for c, x in
            [("A", 1), ("A", 2), ("B", 3), ("A", 4), ("A", 5), ("A", 6), ("A", 7)]]
    assert [(c, [i["x"] for i in inp]) for c, inp, _ in jobs[1:]] == \
        [("A", [1, 2]), ("B", [3]), ("A", [4, 5, 6])]     # code changed; buffer full
    assert not futs[-1][2].done()
    b.flush()
    assert [i["x"] for i in jobs[-1][1]] == [7]
    for code, inputs, fut in reversed(jobs):              # jobs finish in any order
        fut.set_result([JobResult(st.SUCCESS, value=f"{code}{i['x']}") for i in inputs])
    assert [f.result()[0].value for c, x, f in futs] == [f"{c}{x}" for c, x, _ in futs]
    assert first.result()[0].value == "A0"
    # a job that answers for the wrong number of calls fails all of its calls, loudly
    b.parallel = 0
    f1, f2 = b.submit("C", {"x": 1}), b.submit("C", {"x": 2})
    b.flush()
    jobs[-1][2].set_result([JobResult(st.SUCCESS, value=1)])
    for f in (f1, f2):
        with pytest.raises(RuntimeError):
            f.result(timeout=10)


@pytest.mark.parametrize("rule, text, says", [
    ("lenient", 'I think {"output": 3', "incomplete JSON object"),
    ("lenient", 'It is {"output": 3} or {"output": 4}.', "more than one different final answer"),
    ("lenient", 'So {"output": 1/3}', "cannot be read"),
    ("lenient", "I could not decide.", "has no JSON object"),
    ("method", 'So {"output": 1/3}', "cannot be read"),
    ("method", "{'output': 3}", "cannot be read"),
    ("method", 'It is {"output": 3}, so {"confidence": 1}', 'has no "output" key'),
    ("method", "```json\n[3]\n```", "is not an object"),
    ("method", "I could not decide.", "has no JSON object"),
])
def test_no_answer_feedback_says_why(rule, text, says):
    # the message is the second turn's prompt: it must name what to fix
    from annoy_datasync import verification
    r = verification.check_output_prediction(
        text, verification.Target("o", {"x": 1}, 3, "", sample=None), rule)
    assert r["status"] == "no_answer"
    assert says in r["message"] and '{"output": ...}' in r["message"]



def test_a_slow_execution_does_not_hold_back_the_next_ones(tmp_path):
    """Only records waiting on an execution count against --window: checked ones behind a
    slow head wait in a bounded buffer while later executions start."""
    from concurrent.futures import Future

    from annoy_datasync.executor import JobResult
    from annoy_datasync.verification import ParsedIndex, Verifier

    parsed = tmp_path / "parsed.jsonl"
    write_lines(parsed, [json.dumps(r) for r in PARSED])
    recs = ([(0, 0, "i", {"input": {"x": 3}})] + [(0, 0, "o", {"output": 2})] * 6
            + [(0, 1, "i", {"input": {"x": 4}}), (0, 1, "i", {"input": {"x": 6}})])

    def check(window, buffered):
        read_so_far, submitted, waited_at = [], [], []
        head = Future()     # the slow first execution: finishes when the verifier waits

        def submit(code, kwargs, func):
            submitted.append(kwargs["x"])
            if len(submitted) == 1:
                return head
            fut = Future()
            fut.set_result([JobResult(st.SUCCESS, value=2 * kwargs["x"])])
            return fut

        def flush():    # called by the verifier before it waits on an execution
            if submitted and not head.done():
                waited_at.append(len(read_so_far))
                head.set_result([JobResult(st.SUCCESS, value=6)])

        def items():
            for k, (i, j, p, obj) in enumerate(recs):
                read_so_far.append(k)
                yield f"gens:{k + 1}", {"itemid": i, "ioid": j, "io_pred": p, "index": k,
                                        "output": answer(obj)}, None

        index = ParsedIndex(parsed)
        try:
            out = list(Verifier(index, submit, timeout_s=1, window=window, buffered=buffered,
                                flush=flush).run(items()))
        finally:
            index.close()
        assert [r["index"] for r in out] == list(range(len(recs)))   # order kept
        assert [r["res"]["status"] for r in out] == (
            [st.WRONG_ANSWER] + [st.SUCCESS] * 6 + [st.WRONG_ANSWER, st.WRONG_ANSWER])
        return submitted, waited_at

    # window 2: the checked records behind the slow head do not count; the second
    # execution starts before anything waits for the head
    submitted, waited_at = check(window=2, buffered=100)
    assert submitted == [3, 4, 6] and waited_at == [8]
    # but no more than `buffered` records are held: the 4th one waits for the head
    submitted, waited_at = check(window=2, buffered=4)
    assert waited_at == [4]


def test_entry_point_is_the_records_funcname(tmp_path, capsys):
    """Files of other sources name their function (here f): it is called with **input for
    an object and with input as the one argument otherwise, and the messages name it."""
    parsed, gens, out = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    write_lines(parsed, [json.dumps(r) for r in [
        {"refcode": "def f(a, b):\n    return a - b\n", "funcname": "f",
         "ios": [{"input": {"a": 5, "b": 2}, "output": 3}]},
        {"refcode": "def f(s):\n    return s[::-1]\n", "funcname": "f",
         "ios": [{"input": "abc", "output": "cba"}]},
        {"refcode": "def main_solution(x):\n    return x\n", "funcname": "g",
         "ios": [{"input": {"x": 1}, "output": 1}]},
    ]])
    rows = [(0, "i", {"input": {"a": 7, "b": 4}}), (0, "i", {"input": {"a": 1, "b": 1}}),
            (0, "o", {"output": 3}), (1, "i", {"input": "abc"}), (1, "i", {"input": "abd"}),
            (1, "i", {"input": ["c", "b", "a"]}), (1, "o", {"output": "cba"}),
            (2, "i", {"input": {"x": 2}})]
    write_lines(gens, [json.dumps({"itemid": i, "ioid": 0, "io_pred": k, "output": answer(o)})
                       for i, k, o in rows])
    assert run_verify(tmp_path, parsed, gens, out, "--always_run") == 0
    got = [r["res"] for r in read(out)]
    assert [r["status"] for r in got] == [
        st.SUCCESS, st.WRONG_ANSWER, st.SUCCESS, st.SUCCESS, st.WRONG_ANSWER, st.WRONG_ANSWER,
        st.SUCCESS, st.NOT_RUNNABLE]
    assert got[1]["message"] == 'Your predicted input {"a": 1, "b": 1} makes f return 0, not 3.'
    assert got[4]["message"] == 'Your predicted input "abd" makes f return "dba", not "cba".'
    assert got[5]["message"].endswith('makes f return ["a", "b", "c"], not "cba".')
    assert "defines no function g" in got[7]["message"]
    # without --always_run, a predicted input equal to a recorded one (not an object here)
    # is judged by its record
    write_lines(gens, [json.dumps({"itemid": 1, "ioid": 0, "io_pred": "i",
                                   "output": answer({"input": "abc"})})])
    assert run_verify(tmp_path, parsed, gens, out) == 0
    assert read(out)[0]["res"]["status"] == st.SUCCESS
    assert "recorded_hits=1" in capsys.readouterr().err


def test_a_null_funcname_means_main_solution_and_a_bad_one_is_named(tmp_path):
    """A file written from a table (pandas & co.) holds null where a record has no
    funcname: that is main_solution, as for an absent field."""
    from annoy_datasync.verification import ParsedIndex
    parsed = tmp_path / "parsed.jsonl"
    code = "def main_solution(x):\n    return x\n"
    write_lines(parsed, [json.dumps({"refcode": code, "funcname": f, "ios": []})
                         for f in (None, "f", "Solution.f", 3)])
    index = ParsedIndex(parsed)
    try:
        assert [index.get(i).func for i in (0, 1)] == ["main_solution", "f"]
        assert "not a function name" in index.get(2) and index.get(2).endswith("Solution.f\"")
        assert "not a function name: 3" in index.get(3)
    finally:
        index.close()


def test_a_raising_call_names_the_function(tmp_path):
    parsed, gens, out = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    write_lines(parsed, [json.dumps({"refcode": "def f(n):\n    return 10 // n\n",
                                     "funcname": "f", "ios": [{"input": 2, "output": 5}]})])
    write_lines(gens, [json.dumps({"itemid": 0, "ioid": 0, "io_pred": "i",
                                   "output": answer({"input": 0})})])
    assert run_verify(tmp_path, parsed, gens, out) == 0
    res = read(out)[0]["res"]
    assert res["status"] == st.EXCEPTION
    assert res["message"].startswith("Calling f on your predicted input raised ZeroDivisionError")


def test_verdicts_are_the_same_idle_and_under_load(tmp_path):
    """A loop uses its whole CPU budget (timeout, final); code that needs 0.4 s of CPU
    under a 1 s budget passes however long a busy machine makes it wait; a sleeper past
    the idle allowance is a wall stop. Byte for byte the same file either way."""
    from testutil import cpu_burners
    heavy = ("import time\n\ndef main_solution(n):\n    end = time.thread_time() + 0.4\n"
             "    while time.thread_time() < end:\n        pass\n    return n + 1\n")
    loop = "def main_solution(n):\n    while True:\n        n += 1\n"
    parsed = tmp_path / "parsed.jsonl"
    write_lines(parsed, [json.dumps({"refcode": code, "ios": [{"input": {"n": 0}, "output": 1}]})
                         for code in (heavy, loop)]
                + [json.dumps({"refcode": SLOW, "ios": [{"input": {"t": 0}, "output": 0}]})])
    preds = [(0, {"n": 4}), (0, {"n": 5}), (1, {"n": 1}), (0, {"n": 0}), (2, {"t": 30}),
             (2, {"t": 0.1})]
    gens = tmp_path / "gens.jsonl"
    write_lines(gens, [json.dumps({"itemid": i, "ioid": 0, "io_pred": "i",
                                   "output": answer({"input": x}), "k": k})
                       for k, (i, x) in enumerate(preds)])
    outs = []
    for load in (False, True):
        out = tmp_path / f"v{int(load)}.jsonl"
        argv = ["--parsed_file", str(parsed), "--gens_file", str(gens), "--output_file",
                str(out), "--run_path", str(tmp_path / "run"), "--workers", "2",
                "--timeout", "1", "--always_run"]
        if load:
            with cpu_burners(2):
                assert verify.main(argv) == 0
        else:
            assert verify.main(argv) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    got = [r["res"] for r in read(tmp_path / "v0.jsonl")]
    assert [r["status"] for r in got] == [st.WRONG_ANSWER, st.WRONG_ANSWER, st.TIMEOUT,
                                          st.SUCCESS, st.WALL_TIMEOUT, st.WRONG_ANSWER]
    assert got[2]["limit"] == st.LIMIT_CPU and "limit" not in got[4]


def test_load_dependent_verdicts():
    from annoy_datasync.verification import load_dependent
    assert load_dependent({"status": st.WALL_TIMEOUT, "message": ""})
    assert load_dependent({"status": st.TIMEOUT, "message": "another tool's wall limit"})
    assert not load_dependent({"status": st.TIMEOUT, "message": "", "limit": st.LIMIT_CPU})
    assert not load_dependent({"status": st.SUCCESS, "message": ""})


def test_read_path_lets_reference_code_read_a_directory(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("w.txt", "v.txt"):
        (corpus / name).write_text("alpha\n")
    code = ("def main_solution(name):\n"
            f"    return open({str(corpus)!r} + '/' + name).read().strip()\n")
    parsed = tmp_path / "parsed.jsonl"
    write_lines(parsed, [json.dumps({"problem_description": "p", "io_requirements": "r",
                                     "refcode": code, "funcname": "main_solution",
                                     "ios": [{"input": {"name": "w.txt"}, "output": "alpha"}],
                                     "category": None, "meta": {"msgidx": 0}})])
    gens = tmp_path / "gens.jsonl"
    write_lines(gens, [json.dumps({"messages": [{"role": "user", "content": "q"}], "itemid": 0,
                                   "ioid": 0, "io_pred": "i", "model": "m", "index": 0,
                                   "output": answer({"input": {"name": "v.txt"}})})])
    out = tmp_path / "verified.jsonl"
    assert run_verify(tmp_path, parsed, gens, out) == 0
    assert read(out)[0]["res"]["status"] != st.SUCCESS       # the corpus is not visible
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert st.VIEW_UNRESTRICTED not in summary
    assert run_verify(tmp_path, parsed, gens, out, "--read_path", str(corpus)) == 0
    assert read(out)[0]["res"]["status"] == st.SUCCESS
    assert (corpus / "v.txt").read_text() == "alpha\n"
    with pytest.raises(SystemExit) as exc:
        run_verify(tmp_path, parsed, gens, out, "--read_path", str(tmp_path / "nope"))
    assert exc.value.code == 2
    # where the kernel refuses namespaces the summary line says the view is not restricted
    import annoy_datasync.executor as executor_mod
    monkeypatch.setattr(executor_mod, "USE_NAMESPACES", False)
    capsys.readouterr()
    assert run_verify(tmp_path, parsed, gens, out, "--read_path", str(corpus)) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{st.VIEW_UNRESTRICTED}=1" in summary
    assert st.SYSCALLS_UNFILTERED not in summary
    # so does it when jobs run without the system-call filter (no seccomp, another arch)
    monkeypatch.setattr(executor_mod, "USE_SYSCALL_FILTER", False)
    assert run_verify(tmp_path, parsed, gens, out, "--read_path", str(corpus)) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{st.SYSCALLS_UNFILTERED}=1" in summary


@pytest.mark.parametrize("res, passed, message, no_answer", [
    ({"status": "success", "message": "Your answer is correct."}, True, "Your answer is correct.", False),
    ({"status": "wrong_answer", "message": "no", "limit": "cpu"}, False, "no", False),
    ({"status": "no_answer", "message": "Your answer has no JSON"}, False, "Your answer has no JSON", True),
    # the original implementation's vocabulary; its files need not carry a message
    ({"status": "success"}, True, "", False),
    ({"status": "failed", "message": ""}, False, "", False),
    ({"status": "no answer"}, False, "", True),
    ({"status": "Success", "message": ""}, False, "", False),  # only the exact word passes
])
def test_read_verdict(res, passed, message, no_answer):
    v = read_verdict({"res": res}, "v.jsonl", 3)
    assert (v.passed, v.message, v.status, v.no_answer) == (passed, message, res["status"], no_answer)
    assert v.res is res         # kept whole: the revision step carries it into history_errors


@pytest.mark.parametrize("rec, problem", [
    ({"output": "x"}, 'no "res" field (keys: output)'),
    ({"res": "success"}, '"res" should be dict, got str'),
    ({"res": {"message": ""}}, 'no "status" field (keys: message)'),
    ({"res": {"status": 1}}, '"res.status" should be str, got int'),
    ({"res": {"status": "failed", "message": None}}, '"res.message" should be str, got NoneType'),
])
def test_read_verdict_names_file_and_line(rec, problem):
    with pytest.raises(InputError) as err:
        read_verdict(rec, "v.jsonl", 3)
    assert str(err.value) == f"v.jsonl:3: {problem}"


def test_a_result_no_file_can_hold_is_a_verdict_not_a_crash(tmp_path, capsys):
    """Reference code that returns a lone surrogate on the predicted input: not plain JSON
    (non_json_output), the verified file is written, the summary counts it."""
    parsed, gens, out = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    code = "def main_solution(n):\n    return 'ok' if n == 1 else chr(0xd800)\n"
    write_lines(parsed, [json.dumps({"refcode": code, "ios": [{"input": {"n": 1}, "output": "ok"}]})])
    write_lines(gens, [json.dumps({"itemid": 0, "ioid": 0, "io_pred": "i",
                                   "output": answer({"input": {"n": k}})}) for k in (2, 1)])
    assert run_verify(tmp_path, parsed, gens, out) == 0
    got = read(out)
    assert [r["res"]["status"] for r in got] == [st.NON_JSON, st.SUCCESS]
    assert "surrogate" in got[0]["res"]["message"]
    assert f"{st.NON_JSON}=1" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_model_text_with_a_lone_surrogate_is_judged_and_kept(tmp_path, capsys):
    """Model text is whatever the API returned: a lone surrogate in it (a JSON escape in the
    gens file) gets a verdict and is written back unchanged, not a crash of the step."""
    parsed, gens, out = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    write_lines(parsed, [json.dumps({"refcode": DOUBLE, "ios": [{"input": {"x": 1}, "output": 2}]})])
    rows = [{"itemid": 0, "ioid": 0, "io_pred": "o", "output": "hm \ud800 " + answer({"output": 2})},
            {"itemid": 0, "ioid": 0, "io_pred": "o", "output": answer({"output": "\udc00"})},
            {"itemid": 0, "ioid": 0, "io_pred": "i", "output": answer({"input": {"x": "\ud83d"}})}]
    write_lines(gens, [json.dumps(r) for r in rows])
    assert run_verify(tmp_path, parsed, gens, out) == 0
    got = read(out)
    assert [r["output"] for r in got] == [r["output"] for r in rows]
    assert [r["res"]["status"] for r in got] == [st.SUCCESS, st.NO_ANSWER, st.NO_ANSWER]


def test_the_cache_does_not_keep_large_results():
    """Reference code may return megabytes for a predicted input: those results reach the
    records waiting on them, but the cache keeps small ones only (a later identical
    prediction runs again), so memory does not grow with the number of predictions."""
    import gc
    import weakref
    from concurrent.futures import Future

    from annoy_datasync.executor import JobResult
    from annoy_datasync.verification import ExecCache

    pending, calls = [], []

    def submit(code, kwargs, func):
        calls.append(kwargs)
        pending.append(Future())
        return pending[-1]

    cache = ExecCache(submit, max_weight=100_000)
    big = cache.get(DOUBLE, {"x": 1})
    small = cache.get(DOUBLE, {"x": 2})
    assert cache.get(DOUBLE, {"x": 1}) is big and len(calls) == 2     # shared while running
    pending[0].set_result([JobResult(st.SUCCESS, value=[[0.5] * 1000 for _ in range(1000)])])
    pending[1].set_result([JobResult(st.SUCCESS, value=[4])])
    assert small.result()[0].value == [4]
    assert len(big.result()[0].value) == 1000       # the waiting record gets the whole value
    held = weakref.ref(big.result()[0])
    del big
    pending.clear()
    gc.collect()
    assert held() is None, "the cache still holds a large result"
    assert cache.get(DOUBLE, {"x": 2}).result()[0].value == [4] and len(calls) == 2
    cache.get(DOUBLE, {"x": 1})
    assert len(calls) == 3                          # run again
