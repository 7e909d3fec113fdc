"""Verified files written by the original implementation, through every step that reads
them: its statuses (success, failed, no answer, timeout, exception, error, AssertionError)
keep the meaning they have there: only "success" passes, "timeout" is re-checked."""

import json
import os
import subprocess
import sys
from collections import Counter

import assemble_spec_demo
import build_spec_rev_msg
import report
from annoy_datasync import status as st
from testutil import ROOT, read, run_step

DOUBLE = "def main_solution(x):\n    return x * 2\n"

# (status, message or None, io_pred, the model's answer)
TURN1 = [
    ("success", "", "o", '```json\n{"output": 4}\n```'),
    ("failed", "", "o", '```json\n{"output": 5}\n```'),
    ("no answer", None, "o", "It is {'output': 4}"),         # a Python dict: no answer
    ("timeout", "", "i", '```json\n{"input": {"x": 2}}\n```'),  # correct: passes when re-run
    ("exception", "", "i", '```json\n{"input": {"y": 2}}\n```'),
    ("error", "", "i", '```json\n{"input": {"x": 2}}\n```'),
    ("AssertionError", "", "o", '```json\n{"output": 4}\n```'),
]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def turn1_rows():
    rows = []
    for k, (status, message, io_pred, output) in enumerate(TURN1):
        res = {"status": status} if message is None else {"status": status, "message": message}
        rows.append({"messages": [{"role": "user", "content": f"prompt {k}"}], "itemid": 0,
                     "ioid": 0, "io_pred": io_pred, "output": output, "index": k, "res": res})
    return rows


def test_original_files_through_rev_msg_assemble_and_report(tmp_path, capsys):
    v1, rev, v2, final = (tmp_path / n for n in ("v1.jsonl", "rev.jsonl", "v2.jsonl", "final.jsonl"))
    write(v1, turn1_rows())

    # second-turn prompts: every verdict but success, "no answer" asking for the format
    rc, err = run_step(build_spec_rev_msg.main, ["--input_file", v1, "--output_file", rev], capsys)
    assert rc == 0, err
    revs = read(rev)
    assert [r["original_id"] for r in revs] == [1, 2, 3, 4, 5, 6]
    asked = revs[1]["messages"][-1]["content"]
    assert '{"output": ...}' in asked and "cannot be read" in asked
    assert "included_no_answer=1" in err and "skipped_passed=1" in err

    # second turn, verified by the original: two pass, the rest fail again
    t2_status = {1: "success", 2: "no answer", 3: "timeout", 4: "failed", 5: "success",
                 6: "AssertionError"}
    write(v2, [{**r, "output": f"second {r['original_id']}", "index": 100 + r["original_id"],
                "res": {"status": t2_status[r["original_id"]], "message": ""}} for r in revs])

    # the final file as the method assembles it: all second turns, passed or not
    rc, err = run_step(assemble_spec_demo.main, ["--result_file_turn1", v1, "--result_file_turn2",
                                                 v2, "--output_file", final], capsys)
    assert rc == 0, err
    got = read(final)
    assert len(got) == 7
    assert [r.get("failed", False) for r in got] == [False, False, True, True, True, False, True]
    assert err.strip().splitlines()[-1] == ("assemble_spec_demo: kept_turn2_failed=4 "
                                            "kept_turn2_pass=2 kept_turn1_pass=1")

    # the report counts the original's verdicts as they are; only success passes
    js = tmp_path / "report.json"
    assert report.main(["--verified_file", str(v1), "--rev_verified_file", str(v2),
                        "--final_file", str(final), "--output_json", str(js), "--quiet"]) == 0
    r = json.loads(js.read_text())
    assert r["verify"]["turn_1"]["statuses"] == dict(Counter(s for s, *_ in TURN1))
    assert r["pass_rates"]["turn_1"]["all"]["passed"] == 1
    assert r["pass_rates"]["turn_2"]["all"]["passed"] == 2
    assert r["pass_rates"]["after_turn_2"]["all"]["passed"] == 3
    assert r["final"]["total"] == 7


def test_pipeline_check_resume_rechecks_only_the_original_timeouts(tmp_path):
    parsed, gens, verified = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    write(parsed, [{"problem_description": "p", "io_requirements": "r", "refcode": DOUBLE,
                    "funcname": "main_solution", "ios": [{"input": {"x": 2}, "output": 4}],
                    "category": None, "meta": {"msgidx": 0}}])
    rows = turn1_rows()
    write(gens, [{k: v for k, v in r.items() if k != "res"} for r in rows])
    write(verified, rows)
    env = {**os.environ, "WORKERS": "1", "TIMEOUT": "2", "RETRIES": "1",
           "PIPELINE_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "pipeline_check.sh"), str(parsed),
                           str(gens), str(verified), sys.executable, str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = read(verified)
    assert [r["index"] for r in got] == list(range(len(TURN1)))
    statuses = [r["res"]["status"] for r in got]
    # the timeout ran again (and passes); every other verdict is the original's, kept as
    # written, even those a re-check would change ("failed"/"error" on a correct answer)
    assert statuses[3] == st.SUCCESS
    assert statuses[:3] + statuses[4:] == [s for s, *_ in TURN1[:3] + TURN1[4:]]
    summaries = [ln for ln in proc.stderr.splitlines() if ln.startswith("verify:")]
    assert "reused=7" in summaries[0] and "no_answer=1" in summaries[0]
    assert "reused=6" in summaries[1] and "success=2" in summaries[1]    # one re-checked
