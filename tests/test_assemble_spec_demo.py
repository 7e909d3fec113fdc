"""assemble_spec_demo.py: verified turns 1 and 2 -> released format."""

import json
import subprocess
import sys

import pytest

import assemble_spec_demo as step
from testutil import FIXTURES, SRC, read, run_step

TURN1 = FIXTURES / "steps_verified_turn1.jsonl"
TURN2 = FIXTURES / "steps_verified_turn2.jsonl"
RELEASED = {"prompt", "turn_1", "feedback_1", "turn_2", "feedback_2"}


def run(argv, capsys):
    return run_step(step.main, argv, capsys)


def test_released_format_joined_by_original_id(tmp_path, capsys):
    out = tmp_path / "final.jsonl"
    rc, err = run(["--result_file_turn1", TURN1, "--result_file_turn2", TURN2, "--output_file", out,
                   "--drop_failed"], capsys)
    assert rc == 0
    t1 = read(TURN1)
    got = read(out)
    assert len(got) == 4
    for r in got:
        assert RELEASED <= set(r) and set(r) - RELEASED == {"itemid", "ioid", "io_pred"}
    by_prompt = {r["prompt"]: r for r in got}
    # turn-1 passes: turn 2 empty
    for i in (0, 4):
        r = by_prompt[t1[i]["messages"][0]["content"]]
        assert r["turn_1"] == t1[i]["output"] and r["feedback_1"] == "Your answer is correct."
        assert r["turn_2"] is None and r["feedback_2"] is None
    # turn-1 failures fixed in turn 2: joined by id although turn 2 is in another order
    for i in (1, 3):
        r = by_prompt[t1[i]["messages"][0]["content"]]
        assert r["feedback_1"] == t1[i]["res"]["message"]
        assert r["turn_2"] == f"second answer for {i}" and r["feedback_2"] == "Your answer is correct."
        assert (r["itemid"], r["ioid"], r["io_pred"]) == (t1[i]["itemid"], t1[i]["ioid"], t1[i]["io_pred"])
    assert [r["prompt"] for r in got] == [t1[i]["messages"][0]["content"] for i in (0, 1, 3, 4)]
    assert err.strip().splitlines()[-1] == ("assemble_spec_demo: kept_turn1_pass=2 kept_turn2_pass=2 "
                                            "dropped_both_failed=1 dropped_no_turn2=1")


def test_by_default_every_second_turn_is_kept_as_the_method_does(tmp_path, capsys):
    out = tmp_path / "final.jsonl"
    rc, err = run(["--result_file_turn1", TURN1, "--result_file_turn2", TURN2, "--output_file", out],
                  capsys)
    assert rc == 0
    got = read(out)
    assert len(got) == 5    # all but the failure that has no second turn
    failed = [r for r in got if r.get("failed")]
    assert len(failed) == 1 and failed[0]["failed"] is True
    assert failed[0]["turn_2"] == "second answer for 2"
    assert failed[0]["feedback_2"] == "Your predicted input [1] makes main_solution return 2, not 3."
    assert not any("failed" in r for r in got if r not in failed)
    assert err.strip().splitlines()[-1] == ("assemble_spec_demo: kept_turn1_pass=2 kept_turn2_pass=2 "
                                            "dropped_no_turn2=1 kept_turn2_failed=1")


def test_original_vocabulary_only_success_passes(tmp_path, capsys):
    # verified files of the original implementation: its statuses as they are
    t1, t2 = tmp_path / "t1.jsonl", tmp_path / "t2.jsonl"
    t1.write_text("\n".join([
        t1rec(index=0, res={"status": "success"}),
        t1rec(index=1, res={"status": "failed", "message": "wrong"}),
        t1rec(index=2, res={"status": "no answer"}),
        t1rec(index=3, res={"status": "AssertionError"}),
        t1rec(index=4, res={"status": "error"}),
    ]) + "\n")
    t2.write_text("\n".join([
        t2rec(original_id=1, res={"status": "success"}),
        t2rec(original_id=2, res={"status": "no answer"}),
        t2rec(original_id=3, res={"status": "timeout"}),
    ]) + "\n")
    out = tmp_path / "final.jsonl"
    rc, err = run(["--result_file_turn1", t1, "--result_file_turn2", t2, "--output_file", out], capsys)
    assert rc == 0, err
    got = read(out)
    assert [r.get("failed", False) for r in got] == [False, False, True, True]
    assert [r["feedback_2"] for r in got] == [None, "", "", ""]
    assert err.strip().splitlines()[-1] == ("assemble_spec_demo: kept_turn2_failed=2 "
                                            "dropped_no_turn2=1 kept_turn1_pass=1 kept_turn2_pass=1")


def test_unmatched_and_duplicate_second_turns_are_counted(tmp_path, capsys):
    lines = TURN2.read_text().splitlines()
    extra = json.loads(lines[0])
    extra["original_id"] = 99                      # no such first-turn record
    passed = json.loads(lines[0])
    passed["original_id"] = 0                      # first turn already passed
    t2 = tmp_path / "t2.jsonl"
    t2.write_text("\n".join(lines + [lines[1], json.dumps(extra), json.dumps(passed)]) + "\n")
    out = tmp_path / "final.jsonl"
    rc, err = run(["--result_file_turn1", TURN1, "--result_file_turn2", t2, "--output_file", out], capsys)
    assert rc == 0 and len(read(out)) == 5
    summary = err.strip().splitlines()[-1]
    assert "turn2_unmatched=2" in summary and "turn2_skipped_duplicate_id=1" in summary


def t1rec(**over):
    r = {"messages": [{"role": "user", "content": "p"}], "output": "a", "index": 0,
         "res": {"status": "success", "message": "ok"}}
    r.update(over)
    return json.dumps({k: v for k, v in r.items() if v is not ...})


def t2rec(**over):
    r = {"output": "b", "original_id": 0, "res": {"status": "success", "message": "ok"}}
    r.update(over)
    return json.dumps({k: v for k, v in r.items() if v is not ...})


@pytest.mark.parametrize("which, lines, expect", [
    (1, None, "no such file"),
    (2, None, "no such file"),
    (1, ["garbage"], ":1: not valid JSON"),
    (2, ["{'single': 'quotes'}"], ":1: not valid JSON"),
    (1, [t1rec(), t1rec(index=...)], ':2: no "index" field'),
    (1, [t1rec(index="0")], ':1: "index" should be int, got str'),
    (1, [t1rec(res=...)], ':1: no "res" field'),
    (1, [t1rec(output=...)], ':1: no "output" field'),
    (1, [t1rec(messages=[{"role": "system", "content": "s"}])],
     ':1: messages should end with a user turn (the prompt the model answered), not "system"'),
    (2, [t2rec(), t2rec(original_id=...)], ':2: no "original_id" field'),
    (2, [t2rec(res={"status": 1})], ':1: "res.status" should be str, got int'),
])
def test_bad_input_exits_1_with_file_line_and_leaves_no_output(tmp_path, capsys, which, lines, expect):
    good1, good2 = tmp_path / "t1.jsonl", tmp_path / "t2.jsonl"
    good1.write_text(t1rec() + "\n")
    good2.write_text(t2rec() + "\n")
    bad = good1 if which == 1 else good2
    if lines is None:
        bad.unlink()
    else:
        bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "final.jsonl"
    rc, err = run(["--result_file_turn1", good1, "--result_file_turn2", good2, "--output_file", out], capsys)
    assert rc == 1
    assert err.startswith(f"error: {bad}") and expect in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("final.jsonl.*"))


def test_help_describes_input_and_output():
    script = SRC / "assemble_spec_demo.py"
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True)
    assert "Input" in res.stdout and "Output" in res.stdout


def test_failed_first_turn_without_an_answer_is_dropped_not_fatal(tmp_path, capsys):
    # verify.py gives such lines no_answer / not_runnable and build_spec_rev_msg.py skips
    # them, so the last step must not stop on them either
    t1 = tmp_path / "t1.jsonl"
    t1.write_text("\n".join([
        t1rec(),
        t1rec(index=1, output=None, res={"status": "no_answer", "message": "m"}),
        t1rec(index=2, output=..., res={"status": "no_answer", "message": "m"}),
        t1rec(index=3, output=7, res={"status": "not_runnable", "message": "m"}),
    ]) + "\n")
    t2 = tmp_path / "t2.jsonl"
    t2.write_text(t2rec(original_id=0) + "\n")
    out = tmp_path / "final.jsonl"
    rc, err = run(["--result_file_turn1", t1, "--result_file_turn2", t2, "--output_file", out],
                  capsys)
    assert rc == 0, err
    assert [r["turn_1"] for r in read(out)] == ["a"]
    assert "skipped_no_model_output=3" in err
    # a passed record must have its answer: that stays an error
    t1.write_text(t1rec(output=None) + "\n")
    rc, err = run(["--result_file_turn1", t1, "--result_file_turn2", t2, "--output_file", out], capsys)
    assert rc == 1 and '"output" should be str, got NoneType' in err
