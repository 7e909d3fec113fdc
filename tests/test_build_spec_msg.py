"""build_spec_msg.py: parsed samples (original format) -> prediction prompts."""

import json
import subprocess
import sys
from collections import Counter

import pytest

import build_spec_msg as step
from annoy_datasync.prompts import load_prompts
from testutil import FIXTURES, SRC, assert_bad_input_refused, read, run_step

PARSED = FIXTURES / "steps_parsed_orig.jsonl"


def run(argv, capsys):
    return run_step(step.main, argv, capsys)


def test_original_format_round_trip_six_prompts_per_sample(tmp_path, capsys):
    out = tmp_path / "spec_msg.jsonl"
    rc, err = run(["--input_file", PARSED, "--output_file", out], capsys)
    assert rc == 0
    recs = read(out)
    # exactly the original's fields, nothing else
    assert all(set(r) == {"messages", "itemid", "ioid", "io_pred"} for r in recs)
    assert all(len(r["messages"]) == 1 and r["messages"][0]["role"] == "user" for r in recs)
    # itemid = 0-based line: 4 ios -> 6, 2 ios -> 4, no ios -> none, 3 ios -> 6
    assert Counter(r["itemid"] for r in recs) == {0: 6, 1: 4, 3: 6}
    assert [(r["ioid"], r["io_pred"]) for r in recs if r["itemid"] == 0] == [
        (0, "i"), (0, "o"), (1, "i"), (1, "o"), (2, "i"), (2, "o")]
    assert err.strip().splitlines()[-1] == (
        "build_spec_msg: prompts=16 samples=3 samples_with_fewer_ios=1 skipped_no_ios=1")


def test_prompt_text_matches_the_sample_and_pair(tmp_path, capsys):
    out = tmp_path / "spec_msg.jsonl"
    assert run(["--input_file", PARSED, "--output_file", out], capsys)[0] == 0
    samples = read(PARSED)
    p = load_prompts()
    for r in read(out):
        s = samples[r["itemid"]]
        want = p.prediction(r["io_pred"], problem=s["problem_description"],
                            io_requirements=s["io_requirements"], io=s["ios"][r["ioid"]],
                            refcode=s["refcode"])
        assert r["messages"][0]["content"] == want
    o_prompt = next(r for r in read(out) if r["itemid"] == 1 and r["ioid"] == 1 and r["io_pred"] == "o")
    assert '{"w": "café{}"}' in o_prompt["messages"][0]["content"]     # JSON input, braces intact
    i_prompt = next(r for r in read(out) if r["itemid"] == 1 and r["ioid"] == 0 and r["io_pred"] == "i")
    assert '{"repeated": ["a", "n"]}' in i_prompt["messages"][0]["content"]


def test_no_refcode_and_num_ios(tmp_path, capsys):
    out = tmp_path / "spec_msg.jsonl"
    rc, _ = run(["--input_file", PARSED, "--output_file", out, "--no_refcode", "--num_ios", "1"], capsys)
    assert rc == 0
    recs = read(out)
    assert Counter(r["itemid"] for r in recs) == {0: 2, 1: 2, 3: 2}
    assert {r["ioid"] for r in recs} == {0}
    assert all("reference code" not in r["messages"][0]["content"] for r in recs)
    assert all("def main_solution" not in r["messages"][0]["content"] for r in recs)


def test_no_refcode_does_not_need_a_refcode_field(tmp_path, capsys):
    inp = tmp_path / "p.jsonl"
    inp.write_text(json.dumps({"problem_description": "P", "io_requirements": "R",
                               "ios": [{"input": {"a": 1}, "output": 2}]}) + "\n")
    out = tmp_path / "o.jsonl"
    assert run(["--input_file", inp, "--output_file", out, "--no_refcode"], capsys)[0] == 0
    assert len(read(out)) == 2
    rc, err = run(["--input_file", inp, "--output_file", out], capsys)
    assert rc == 1 and ':1: no "refcode" field' in err


def test_seeded_choice_is_deterministic_and_within_range(tmp_path, capsys):
    inp = tmp_path / "p.jsonl"
    ios = [{"input": {"n": k}, "output": k * k} for k in range(10)]
    inp.write_text("".join(json.dumps({"problem_description": "P", "io_requirements": "R",
                                       "refcode": "c", "ios": ios}) + "\n" for _ in range(5)))
    picks = []
    for seed in ("7", "7", "8"):
        out = tmp_path / f"o{len(picks)}.jsonl"
        assert run(["--input_file", inp, "--output_file", out, "--seed", seed], capsys)[0] == 0
        recs = read(out)
        assert len(recs) == 5 * 6
        picks.append([(r["itemid"], r["ioid"]) for r in recs])
    assert picks[0] == picks[1]          # same seed, same pairs
    assert picks[0] != picks[2]          # another seed, another choice
    for item in range(5):
        chosen = sorted({i for it, i in picks[0] if it == item})
        assert len(chosen) == 3 and all(0 <= i < 10 for i in chosen)
    assert step.choose_ios(10, 3, None, 0) == [0, 1, 2]
    assert step.choose_ios(2, 3, 5, 0) == [0, 1]


def test_prompts_override_changes_only_output_prediction(tmp_path, capsys):
    out = tmp_path / "spec_msg.jsonl"
    rc, _ = run(["--input_file", PARSED, "--output_file", out,
                 "--prompts", FIXTURES / "steps_prompts_override.yaml"], capsys)
    assert rc == 0
    recs = read(out)
    o = [r["messages"][0]["content"] for r in recs if r["io_pred"] == "o"]
    i = [r["messages"][0]["content"] for r in recs if r["io_pred"] == "i"]
    assert all(t.startswith("OVERRIDDEN. Problem:") for t in o)
    assert not any("OVERRIDDEN" in t for t in i)
    assert o[0].startswith('OVERRIDDEN. Problem: A frog') and 'Input: {"n": 10, "k": 3}' in o[0]


def test_a_torn_line_is_skipped_and_counted(tmp_path, capsys):
    lines = PARSED.read_text().splitlines()
    inp = tmp_path / "p.jsonl"
    inp.write_text("\n".join([lines[0], '{"problem_description": "cut', lines[1]]) + "\n")
    out = tmp_path / "o.jsonl"
    rc, err = run(["--input_file", inp, "--output_file", out], capsys)
    assert rc == 0
    assert Counter(r["itemid"] for r in read(out)) == {0: 6, 2: 4}   # itemid stays the line
    assert "skipped_bad_line=1" in err.strip().splitlines()[-1]


def sample(**over):
    rec = {"problem_description": "P", "io_requirements": "R", "refcode": "c",
           "ios": [{"input": {"a": 1}, "output": 2}]}
    rec.update(over)
    return json.dumps(rec)


@pytest.mark.parametrize("lines, expect", [
    (None, "no such file"),
    (["[1, 2, 3]"], ":1: a JSON list, not an object"),
    ([sample(), json.dumps({"problem_description": "P", "refcode": "c", "ios": []})],
     ':2: no "io_requirements" field'),
    ([sample(ios={"input": {}})], ':1: "ios" should be list, got dict'),
    ([sample(), sample(), sample(ios=[{"input": {"a": 1}, "output": 2}, [1, 2]])],
     ":3: ios[1] should be"),
    ([sample(ios=[{"input": [1], "output": 2}])], ':1: ios[0]["input"] should be an object'),
    ([sample(problem_description=None)], ':1: "problem_description" should be str, got NoneType'),
])
def test_bad_input_exits_1_with_file_line_and_leaves_no_output(tmp_path, capsys, lines, expect):
    assert_bad_input_refused(step.main, capsys, tmp_path / "parsed.jsonl", lines,
                             ("--input_file", "--output_file"), expect)


def test_a_failed_run_keeps_the_previous_output_untouched(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text('{"old": true}\n')
    inp = tmp_path / "parsed.jsonl"
    inp.write_text(sample() + "\n" + json.dumps({"nothing": 1}) + "\n")
    rc, _ = run(["--input_file", inp, "--output_file", out], capsys)
    assert rc == 1 and out.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "parsed.jsonl"]


def test_num_ios_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exc:
        step.main(["--num_ios", "0"])
    assert exc.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_help_describes_input_and_output():
    script = SRC / "build_spec_msg.py"
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True)
    assert "Input" in res.stdout and "Output" in res.stdout
