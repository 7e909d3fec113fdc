"""build_spec_rev_msg.py: failed first-turn predictions -> revision conversations."""

import json
import subprocess
import sys

import pytest

import build_spec_rev_msg as step
from annoy_datasync.prompts import load_prompts
from testutil import FIXTURES, SRC, assert_bad_input_refused, read, run_step

TURN1 = FIXTURES / "steps_verified_turn1.jsonl"


def run(argv, capsys):
    return run_step(step.main, argv, capsys)


def test_only_failures_with_an_answer_become_conversations(tmp_path, capsys):
    out = tmp_path / "rev.jsonl"
    rc, err = run(["--input_file", TURN1, "--output_file", out], capsys)
    assert rc == 0
    src = {r["index"]: r for r in read(TURN1)}
    got = read(out)
    # index 0 and 4 passed; index 5 failed but has an empty answer
    assert [r["original_id"] for r in got] == [1, 2, 3]
    for r in got:
        first = src[r["original_id"]]
        assert first["res"]["status"] != "success"
        assert set(r) == {"messages", "itemid", "ioid", "io_pred", "retry_count",
                          "history_errors", "original_id"}
        assert (r["itemid"], r["ioid"], r["io_pred"]) == (first["itemid"], first["ioid"], first["io_pred"])
        assert r["retry_count"] == 1 and r["history_errors"] == [first["res"]]
        assert [m["role"] for m in r["messages"]] == ["user", "assistant", "user"]
        assert r["messages"][0] == first["messages"][0]
        assert r["messages"][1]["content"] == first["output"]
        assert r["messages"][2]["content"] == load_prompts().revision(first["res"]["message"])
    assert err.strip().splitlines()[-1] == ("build_spec_rev_msg: answer_rule=method skipped_passed=2 "
                                            "included_exception=1 included_no_answer=1 "
                                            "included_wrong_answer=1 skipped_no_model_output=1")
    # the rule that read the answers heads the line, as in verify.py's
    rc, err = run(["--input_file", TURN1, "--output_file", out, "--answer_rule", "lenient"], capsys)
    assert rc == 0 and err.strip().splitlines()[-1].startswith(
        "build_spec_rev_msg: answer_rule=lenient skipped_passed=2 ")


def test_a_second_round_accumulates_history_and_keeps_the_first_id(tmp_path, capsys):
    out = tmp_path / "rev3.jsonl"
    rc, _ = run(["--input_file", FIXTURES / "steps_verified_turn2.jsonl", "--output_file", out],
                capsys)
    assert rc == 0
    (r,) = read(out)                              # only original_id 2 failed again
    assert r["original_id"] == 2 and r["retry_count"] == 2
    assert [e["message"] for e in r["history_errors"]] == [
        "x", "Your predicted input [1] makes main_solution return 2, not 3."]
    assert [m["role"] for m in r["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert r["messages"][3]["content"] == "second answer for 2"


def test_unknown_fields_are_kept_and_per_turn_fields_dropped(tmp_path, capsys):
    rec = json.loads(TURN1.read_text().splitlines()[1])
    rec["my_tag"] = {"batch": 7}
    inp = tmp_path / "v.jsonl"
    inp.write_text(json.dumps(rec) + "\n")
    out = tmp_path / "r.jsonl"
    assert run(["--input_file", inp, "--output_file", out], capsys)[0] == 0
    (r,) = read(out)
    assert r["my_tag"] == {"batch": 7}
    assert not {"output", "index", "model", "reasoning", "finish_reason", "usage", "res"} & set(r)


def test_prompts_override_changes_the_feedback_wording(tmp_path, capsys):
    out = tmp_path / "rev.jsonl"
    rc, _ = run(["--input_file", TURN1, "--output_file", out,
                 "--prompts", FIXTURES / "steps_prompts_override.yaml"], capsys)
    assert rc == 0
    first = read(out)[0]
    assert first["messages"][-1]["content"] == (
        'OVERRIDDEN feedback: Given the input {"n": 10, "k": 3}, your predicted output 3 is wrong.')


def rec(**over):
    r = {"messages": [{"role": "user", "content": "p"}], "itemid": 0, "ioid": 0, "io_pred": "o",
         "output": "ans", "index": 0, "res": {"status": "wrong_answer", "message": "no"}}
    r.update(over)
    return json.dumps({k: v for k, v in r.items() if v is not ...})


@pytest.mark.parametrize("lines, expect", [
    (None, "no such file"),
    (["not json at all"], ":1: not valid JSON"),
    ([rec(), rec(res=...)], ':2: no "res" field'),
    ([rec(res={"message": "m"})], ':1: no "status" field'),
    ([rec(res="wrong")], ':1: "res" should be dict, got str'),
    ([rec(index=...)], ':1: no "index" field'),
    ([rec(output=42)], ':1: "output" should be str, got int'),
    ([rec(messages=[{"role": "user", "content": "p"}, {"role": "assistant", "content": "a"}])],
     ":1: messages should end with a user turn"),
    ([rec(messages="p")], ':1: "messages" should be a non-empty list, got str; is this a messages file?'),
    ([rec(messages=[{"role": "user", "content": None}])], ':1: messages[0]["content"] should be str, got NoneType'),
    # fields of an earlier round: a wrong type is an error, never carried on or split
    ([rec(retry_count="x")], ':1: "retry_count" should be int, got str'),
    ([rec(history_errors="oops")], ':1: "history_errors" should be list, got str'),
    ([rec(original_id="7")], ':1: "original_id" should be int, got str'),
])
def test_bad_input_exits_1_with_file_line_and_leaves_no_output(tmp_path, capsys, lines, expect):
    assert_bad_input_refused(step.main, capsys, tmp_path / "verified.jsonl", lines,
                             ("--input_file", "--output_file"), expect)


def test_missing_output_or_empty_message_are_handled(tmp_path, capsys):
    inp = tmp_path / "v.jsonl"
    inp.write_text("\n".join([rec(output=...), rec(output=None), rec(res={"status": "timeout"})]) + "\n")
    out = tmp_path / "o.jsonl"
    rc, err = run(["--input_file", inp, "--output_file", out], capsys)
    assert rc == 0
    (r,) = read(out)
    assert r["messages"][-1]["content"].startswith("Your answer was not accepted (timeout).")
    assert "skipped_no_model_output=2" in err and "included_timeout=1" in err


def test_help_describes_input_and_output():
    script = SRC / "build_spec_rev_msg.py"
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True)
    assert "Input" in res.stdout and "Output" in res.stdout


def test_not_runnable_verdicts_are_skipped_with_a_count(tmp_path, capsys):
    # not_runnable is the pipeline's fault (e.g. a gens line whose itemid has no sample):
    # a revision turn would ask the model to fix what it did not break
    first = read(TURN1)[1]
    bad = dict(first, index=7, res={"status": "not_runnable", "message": "no sample 99"})
    src = tmp_path / "verified.jsonl"
    src.write_text(json.dumps(first) + "\n" + json.dumps(bad) + "\n")
    out = tmp_path / "rev.jsonl"
    rc, err = run(["--input_file", src, "--output_file", out], capsys)
    assert rc == 0
    assert [r["original_id"] for r in read(out)] == [first["index"]]
    assert "skipped_not_runnable=1" in err.strip().splitlines()[-1]
