"""The offline main job: scripts/run_pipeline.sh on the first demo files, through the replay server.

The demo's recorded answers (data/demo/answers.jsonl) are matched by the exact prompt text,
so these tests also catch answers that went stale after a change to the prompts or to the
I/O pairs: re-run `python data/demo/make_answers.py` then.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from annoy_datasync import status
from testutil import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "run_pipeline.sh")
LIMIT = "8"   # the manifest's first eight files cover most branches (see data/demo/authored)
ENV = {**os.environ, "PYTHON": sys.executable}   # the steps run under this test's interpreter
STEPS = ["subset", "transform_msg", "transform_inference", "parse", "spec_msg",
         "spec_inference", "check_turn1", "rev_msg", "rev_inference", "check_turn2", "assemble"]


def _records(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _run(out_dir, *extra, timeout=300, path=None):
    env = ENV if path is None else {**ENV, "PATH": path}
    return subprocess.run(["bash", SCRIPT, "--limit", LIMIT, "--out_dir", str(out_dir), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _funnel_printed(stdout: str) -> dict[str, int]:
    block = stdout[stdout.index("funnel:"):]
    return {m.group(1).strip(): int(m.group(2))
            for m in re.finditer(r"^  ([a-z0-9 -]+?)\s+(\d+)$", block, re.M)}


def _funnel_on_disk(out):
    def passed(name):
        return sum(r["res"]["status"] == status.SUCCESS for r in _records(out / name))
    return {
        "raw files": len(_records(out / "rawcode_demo.jsonl")),
        "unified": len(_records(out / "rawcode_demo_unified.jsonl")),
        "parsed": len(_records(out / "rawcode_demo_parsed.jsonl")),
        "prompts": len(_records(out / "spec_demo_msg.jsonl")),
        "turn-1 successes": passed("spec_demo_gens_verified.jsonl"),
        "turn-2 answers": len(_records(out / "spec_demo_gens_rev_verified.jsonl")),
        "turn-2 successes": passed("spec_demo_gens_rev_verified.jsonl"),
        "final records": len(_records(out / "spec_demo_final.jsonl")),
    }


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    # every step must run under $PYTHON: a python / python3 first on PATH that is another
    # interpreter (here one that always fails) must not be picked up by any step
    fake = tmp_path_factory.mktemp("fake_bin")
    for name in ("python", "python3"):
        (fake / name).write_text("#!/bin/sh\necho 'not the pipeline interpreter' >&2\nexit 97\n")
        (fake / name).chmod(0o755)
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = _run(out, path=f"{fake}{os.pathsep}{os.environ.get('PATH', '')}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not the pipeline interpreter" not in proc.stderr
    return out, proc


def test_demo_subset_final_file_has_the_released_format(demo_run):
    out, _ = demo_run
    final = _records(out / "spec_demo_final.jsonl")
    assert final, "no final record"
    verified = {(r["itemid"], r["ioid"], r["io_pred"]): r for r in _records(out / "spec_demo_gens_verified.jsonl")}
    for rec in final:
        assert {"prompt", "turn_1", "feedback_1", "turn_2", "feedback_2"} <= set(rec)
        assert isinstance(rec["prompt"], str) and isinstance(rec["turn_1"], str)
        assert isinstance(rec["feedback_1"], str)
        turn1 = verified[(rec["itemid"], rec["ioid"], rec["io_pred"])]
        assert rec["turn_1"] == turn1["output"] and rec["prompt"] == turn1["messages"][0]["content"]
        if turn1["res"]["status"] == status.SUCCESS:
            assert rec["turn_2"] is None and rec["feedback_2"] is None
        else:   # kept with its revision, passed or failed (as the method keeps them)
            assert isinstance(rec["turn_2"], str) and isinstance(rec["feedback_2"], str)
            assert rec.get("failed", False) is (rec["feedback_2"] != "Your answer is correct.")
    assert any(r["turn_2"] is None for r in final) and any(r["turn_2"] is not None for r in final)
    assert any(r.get("failed") for r in final)


def test_demo_subset_prints_the_funnel_of_the_files_on_disk(demo_run):
    out, proc = demo_run
    printed = _funnel_printed(proc.stdout)
    assert printed == _funnel_on_disk(out)
    # the funnel narrows honestly: every stage loses something
    assert printed["raw files"] == int(LIMIT)
    assert printed["unified"] < printed["raw files"]
    assert 0 < printed["parsed"] < printed["unified"]
    assert 0 < printed["turn-1 successes"] < printed["prompts"]
    # the method's final data: every turn-1 success and every second-turn answer
    assert printed["final records"] == printed["turn-1 successes"] + printed["turn-2 answers"]


def test_demo_subset_exercises_every_branch_and_every_request_was_recorded(demo_run):
    out, _ = demo_run
    # every request found a recorded answer: only the deliberate truncations failed
    for name in ("rawcode_demo_unified.jsonl", "spec_demo_gens.jsonl", "spec_demo_gens_rev.jsonl"):
        failed_path = out / (name + ".failed.jsonl")
        failed = _records(failed_path) if failed_path.exists() else []
        reasons = {f["reason"] for f in failed}
        assert reasons <= {status.FAIL_LENGTH}, (
            f"{name}: requests the replay server could not answer ({reasons}); "
            "the demo answers are stale: run python data/demo/make_answers.py")
    assert [f["reason"] for f in _records(out / "rawcode_demo_unified.jsonl.failed.jsonl")] == [status.FAIL_LENGTH]
    assert [f["reason"] for f in _records(out / "spec_demo_gens.jsonl.failed.jsonl")] == [status.FAIL_LENGTH]
    drops = {d["reason"] for d in _records(out / "rawcode_demo_parsed.jsonl.dropped.jsonl")}
    assert {status.DROP_NO_MAIN, status.DROP_NO_GENERATOR, status.DROP_FEW_IOS} <= drops
    turn1 = {r["res"]["status"] for r in _records(out / "spec_demo_gens_verified.jsonl")}
    assert {status.SUCCESS, status.WRONG_ANSWER, status.NO_ANSWER, status.EXCEPTION} <= turn1
    turn2 = [r["res"]["status"] for r in _records(out / "spec_demo_gens_rev_verified.jsonl")]
    assert status.SUCCESS in turn2 and any(s != status.SUCCESS for s in turn2)


def test_rerun_of_a_finished_run_skips_every_step(demo_run):
    out, _ = demo_run
    before = {s: os.stat(out / ".done" / s).st_mtime_ns for s in STEPS}
    final_before = (out / "spec_demo_final.jsonl").read_bytes()
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(f"[skip] {s}" in proc.stderr for s in STEPS)
    assert "[replay]" not in proc.stderr   # nothing left to ask: the server is not even started
    assert {s: os.stat(out / ".done" / s).st_mtime_ns for s in STEPS} == before
    assert (out / "spec_demo_final.jsonl").read_bytes() == final_before
    assert _funnel_printed(proc.stdout) == _funnel_on_disk(out)


def test_killed_half_way_then_rerun_finishes_without_redoing_finished_steps(tmp_path, demo_run):
    out = tmp_path / "run"
    proc = subprocess.Popen(["bash", SCRIPT, "--limit", LIMIT, "--out_dir", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=ENV)
    marker = out / ".done" / "transform_inference"   # then parsing starts: kill it there
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the pipeline never finished its first inference"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)   # the script, its current step and the replay server
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in (out / ".done").iterdir()}
    assert "transform_inference" in finished and "check_turn1" not in finished

    rerun = _run(out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for name, mtime in finished.items():
        assert f"[skip] {name}" in rerun.stderr
        assert (out / ".done" / name).stat().st_mtime_ns == mtime
    # the same data, byte for byte, as an uninterrupted run
    ref_out, _ = demo_run
    assert (out / "spec_demo_final.jsonl").read_bytes() == (ref_out / "spec_demo_final.jsonl").read_bytes()
    assert _funnel_printed(rerun.stdout) == _funnel_on_disk(out)


def test_a_failing_step_stops_the_run_with_its_message(tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_text('{"path": "x.py", "code": "print(1)"}\n')
    proc = subprocess.run(["bash", SCRIPT, "--raw_code_file", str(raw), "--out_dir", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 1
    assert 'no "content" field' in proc.stderr
    assert "step 'transform_msg' failed" in proc.stderr
    assert not (tmp_path / "o" / ".done" / "transform_msg").exists()
    assert not (tmp_path / "o" / "rawcode_raw_unified.jsonl").exists()
    assert "funnel:" not in proc.stdout


def test_files_are_named_after_the_run_and_limit_never_overwrites_the_raw_file(tmp_path):
    demo = os.path.join(ROOT, "data", "demo", "rawcode_demo.jsonl")
    raw = tmp_path / "rawcode_tiny.jsonl"   # the run name is "tiny", as in the method's README
    with open(demo) as src:
        raw.write_text(next(src))
    out = tmp_path / "run"
    proc = subprocess.run(["bash", SCRIPT, "--raw_code_file", str(raw), "--out_dir", str(out),
                           "--answers", os.path.join(ROOT, "data", "demo", "answers.jsonl")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("rawcode_tiny_msg.jsonl", "rawcode_tiny_unified.jsonl", "rawcode_tiny_parsed.jsonl",
                 "spec_tiny_msg.jsonl", "spec_tiny_gens.jsonl", "spec_tiny_gens_verified.jsonl",
                 "spec_tiny_msg_rev.jsonl", "spec_tiny_gens_rev.jsonl",
                 "spec_tiny_gens_rev_verified.jsonl", "spec_tiny_final.jsonl", "report.json"):
        assert (out / name).is_file(), name
    assert f"final data: {out / 'spec_tiny_final.jsonl'}" in proc.stdout
    # --limit copies the first lines to <out_dir>/rawcode_<name>.jsonl: never over the input
    before = raw.read_bytes()
    proc = subprocess.run(["bash", SCRIPT, "--raw_code_file", str(raw), "--out_dir", str(tmp_path),
                           "--limit", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=ENV)
    assert proc.returncode == 1 and "--limit would overwrite the raw code file" in proc.stderr
    assert raw.read_bytes() == before
    assert not (tmp_path / ".done").exists()


def test_an_out_dir_written_under_other_names_is_refused_with_what_to_do(tmp_path):
    out = tmp_path / "old"
    (out / ".done").mkdir(parents=True)
    for step in ("transform_msg", "transform_inference"):   # the names of an older driver
        (out / ".done" / step).touch()
    (out / "rawcode_msg.jsonl").write_text("")
    proc = subprocess.run(["bash", SCRIPT, "--out_dir", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=ENV)
    assert proc.returncode == 1
    assert f"{out} holds a run written under other file names" in proc.stderr
    assert f"remove {out}" in proc.stderr and "[run]" not in proc.stderr


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd[:120]}")
    return found


def test_sigterm_to_the_script_stops_its_step_and_the_replay_server(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(["bash", SCRIPT, "--limit", LIMIT, "--out_dir", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=ENV)
    deadline = time.monotonic() + 240
    while not (out / ".done" / "transform_inference").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the pipeline never finished its first inference"
        time.sleep(0.02)
    proc.terminate()                       # the script only, not its process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted; rerun the same command to resume" in err
    assert not (out / ".done" / "parse").exists()
    deadline = time.monotonic() + 30       # the step's sandbox workers notice their parent is gone
    while _processes_mentioning(str(out)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(str(out)) == []


def test_own_endpoint_mode_uses_the_given_base_url_and_model_and_key_from_the_environment(tmp_path):
    from annoy_datasync.chat_server import ChatServer
    from annoy_datasync.replay import load_answers, make_responder

    seen = []
    replay = make_responder(load_answers([os.path.join(ROOT, "data", "demo", "answers.jsonl")]))

    def responder(req):
        seen.append((req.model, req.headers.get("authorization")))
        return replay(req)

    out = tmp_path / "run"
    with ChatServer(responder) as server:
        proc = subprocess.run(["bash", SCRIPT, "--limit", "2", "--out_dir", str(out),
                               "--base_url", server.url, "--model", "my-model"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**ENV, "OPENAI_API_KEY": "sk-test-123"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[replay]" not in proc.stderr and "sk-test-123" not in proc.stderr + proc.stdout
    assert seen and set(seen) == {("my-model", "Bearer sk-test-123")}
    printed = _funnel_printed(proc.stdout)
    assert printed == _funnel_on_disk(out)
    assert printed["raw files"] == 2 and printed["parsed"] == 1 and printed["final records"] >= 1


def test_stale_answers_stop_the_run_at_the_inference_step_with_a_hint(tmp_path):
    # only the transform answers: every prediction request is unknown to the replay server
    answers = tmp_path / "transform_only.jsonl"
    n_raw = len(_records(os.path.join(ROOT, "data", "demo", "rawcode_demo.jsonl")))
    with open(os.path.join(ROOT, "data", "demo", "answers.jsonl")) as src:   # transform answers first
        answers.write_text("".join(line for _, line in zip(range(n_raw), src)))
    out = tmp_path / "run"
    proc = _run(out, "--answers", str(answers))
    failed = _records(out / "spec_demo_gens.jsonl.failed.jsonl")
    assert {f["reason"] for f in failed} == {status.FAIL_BAD_REQUEST}
    assert "no recorded answer for this request" in failed[0]["error"]
    assert "python data/demo/make_answers.py" in proc.stdout + proc.stderr
    if proc.returncode == 1:   # the client gave up early: every request so far was refused
        assert "step 'spec_inference' failed" in proc.stderr
        assert (out / ".done" / "parse").exists() and not (out / ".done" / "spec_inference").exists()
    else:                      # or it went on, listing them all as failed requests
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "warning: the replay server had no recorded answer" in proc.stdout
