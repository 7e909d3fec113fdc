import json
import os
import signal
import subprocess
import sys
import time

from annoy_datasync import layout
from annoy_datasync import status as st
from testutil import ROOT, read

SCRIPT = ROOT / "scripts" / "pipeline_check.sh"

SLEEPY = "import time\n\ndef main_solution(t):\n    time.sleep(t)\n    return t\n"
LOOP = "def main_solution(n):\n    while True:\n        n += 1\n"
DOUBLE = "def main_solution(x):\n    return x * 2\n"
# blocks: lets the test kill the script mid-run
BLOCKS = "import time\n\ndef main_solution(x):\n    time.sleep(60)\n    return x\n"


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def gens_row(itemid, ioid, io_pred, obj, k):
    # the shape the original implementation wrote: messages, ids, the model's output text
    return {"messages": [{"role": "user", "content": f"q{k}"}], "itemid": itemid, "ioid": ioid,
            "io_pred": io_pred, "output": f"So the answer is:\n```json\n{json.dumps(obj)}\n```",
            "model": "deepseek-chat", "index": k}


def make_parsed(path):
    # original format: no input_generator, meta.msgidx only; one I/O pair per sample
    samples = [(DOUBLE, {"x": 2}, 4), (SLEEPY, {"t": 1.2}, 1.2), (LOOP, {"n": 1}, 1),
               (BLOCKS, {"x": 1}, 1)]
    write(path, [{"problem_description": "p", "io_requirements": "r", "refcode": code,
                  "funcname": "main_solution", "ios": [{"input": inp, "output": out}],
                  "category": None, "meta": {"msgidx": k}}
                 for k, (code, inp, out) in enumerate(samples)])


def run_script(tmp_path, parsed, gens, verified, **env):
    full_env = {**os.environ, "WORKERS": "2", "PIPELINE_PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), str(parsed), str(gens), str(verified),
                           sys.executable, str(tmp_path / "run")],
                          env=full_env, capture_output=True, text=True, timeout=120)


def test_verifies_then_rechecks_only_wall_stops(tmp_path):
    parsed, gens, verified = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    make_parsed(parsed)
    write(gens, [
        gens_row(0, 0, "o", {"output": 4}, 0),
        gens_row(1, 0, "i", {"input": {"t": 0.2}}, 1),    # sleeps less than the allowance: runs
        gens_row(0, 0, "i", {"input": {"x": 3}}, 2),
        gens_row(2, 0, "i", {"input": {"n": 0}}, 3),      # computes forever: CPU timeout
        gens_row(1, 0, "i", {"input": {"t": 30}}, 4),     # sleeps: a wall stop
    ])
    proc = run_script(tmp_path, parsed, gens, verified, TIMEOUT="0.5", RETRIES="2")
    assert proc.returncode == 0, proc.stderr
    got = read(verified)
    assert [r["index"] for r in got] == [0, 1, 2, 3, 4]
    assert [r["res"]["status"] for r in got] == [st.SUCCESS, st.WRONG_ANSWER, st.WRONG_ANSWER,
                                                  st.TIMEOUT, st.WALL_TIMEOUT]
    assert "makes main_solution return 0.2" in got[1]["res"]["message"]
    assert got[3]["res"]["limit"] == st.LIMIT_CPU and "0.5 s of CPU time" in got[3]["res"]["message"]
    assert "limit" not in got[4]["res"]
    summaries = [line for line in proc.stderr.splitlines() if line.startswith("verify:")]
    assert len(summaries) == 3 and "timeout=1" in summaries[0]
    # each round runs the wall stop alone, the loop never again
    for line in summaries[1:]:
        assert "reused=4" in line and "executions=1" in line and "wall_timeout=1" in line

    # everything verified: a rerun reuses all verdicts and re-checks only the wall stop
    proc = run_script(tmp_path, parsed, gens, verified, TIMEOUT="0.5", RETRIES="1")
    assert proc.returncode == 0, proc.stderr
    summaries = [line for line in proc.stderr.splitlines() if line.startswith("verify:")]
    assert "reused=5" in summaries[0] and "executions" not in summaries[0]
    assert "reused=4" in summaries[1] and "executions=1" in summaries[1]
    assert [r["res"]["status"] for r in read(verified)][3:] == [st.TIMEOUT, st.WALL_TIMEOUT]


def test_rechecks_timeouts_of_other_implementations(tmp_path):
    """The method's files hold wall-clock timeouts (no res.limit): load could have caused
    them, so they are checked again; ours carry limit "cpu" and are final."""
    parsed, gens, verified = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    make_parsed(parsed)
    rows = [gens_row(0, 0, "i", {"input": {"x": 2}}, 0), gens_row(0, 0, "i", {"input": {"x": 2}}, 1),
            gens_row(0, 0, "i", {"input": {"x": 5}}, 2)]
    write(gens, rows)
    foreign = {"status": st.TIMEOUT, "message": "timeout"}
    ours = {"status": st.TIMEOUT, "message": "ours", "limit": st.LIMIT_CPU}
    write(verified, [{**rows[0], "res": foreign}, {**rows[1], "res": ours},
                     {**rows[2], "res": {"status": st.WALL_TIMEOUT, "message": "slept"}}])
    proc = run_script(tmp_path, parsed, gens, verified, RETRIES="1")
    assert proc.returncode == 0, proc.stderr
    assert [r["res"] for r in read(verified)] == [
        {"status": st.SUCCESS, "message": "Your answer is correct."}, ours,
        {"status": st.WRONG_ANSWER, "message": read(verified)[2]["res"]["message"]}]


def test_kill_leaves_the_old_file_and_a_rerun_resumes(tmp_path):
    parsed, gens, verified = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    make_parsed(parsed)
    rows = [gens_row(0, 0, "o", {"output": 4}, 0), gens_row(0, 0, "i", {"input": {"x": 2}}, 1)]
    write(gens, rows)
    assert run_script(tmp_path, parsed, gens, verified, RETRIES="0").returncode == 0
    old = verified.read_bytes()

    write(gens, [*rows, gens_row(3, 0, "i", {"input": {"x": 2}}, 2)])  # not recorded: runs
    env = {**os.environ, "WORKERS": "1", "TIMEOUT": "30", "RETRIES": "0",
           "PIPELINE_PYTHON": sys.executable}
    proc = subprocess.Popen(["bash", str(SCRIPT), str(parsed), str(gens), str(verified),
                             sys.executable, str(tmp_path / "run")],
                            env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # verify.py writes through a temp file beside VERIFIED: while it exists, verify is
        # mid-run (here: waiting on the job that blocks for 30 s)
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("v.jsonl.*.tmp")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert verified.read_bytes() == old                       # the old file, whole

    proc = run_script(tmp_path, parsed, gens, verified, TIMEOUT="1", RETRIES="0")
    assert proc.returncode == 0, proc.stderr
    got = read(verified)
    assert [r["index"] for r in got] == [0, 1, 2]
    assert [r["res"]["status"] for r in got] == [st.SUCCESS, st.SUCCESS, st.WALL_TIMEOUT]
    assert "reused=2" in proc.stderr


def test_usage_and_missing_files(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "only_one"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr
    proc = run_script(tmp_path, tmp_path / "nope.jsonl", tmp_path / "g.jsonl", tmp_path / "v.jsonl")
    assert proc.returncode == 1 and "nope.jsonl: no such file" in proc.stderr
    assert not (tmp_path / "v.jsonl").exists()


def test_fractional_timeout_and_bad_environment_values(tmp_path):
    parsed, gens, verified = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    make_parsed(parsed)
    write(gens, [gens_row(0, 0, "o", {"output": 4}, 0)])
    # bash arithmetic knows only integers: a fractional TIMEOUT must not stop the script
    proc = run_script(tmp_path, parsed, gens, verified, TIMEOUT="0.5", RETRIES="1")
    assert proc.returncode == 0, proc.stderr
    assert "timeout=0.5s" in proc.stderr and "round 1, workers=1)" in proc.stderr
    assert [r["res"]["status"] for r in read(verified)] == [st.SUCCESS]
    for name, value in [("TIMEOUT", "5s"), ("WORKERS", "two"), ("RETRIES", "-1")]:
        proc = run_script(tmp_path, parsed, gens, verified, **{name: value})
        assert proc.returncode == 2 and f"error: {name}={value}" in proc.stderr, proc.stderr


def test_read_paths_reach_verify(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "v.txt").write_text("alpha\n")
    code = f"def main_solution(name):\n    return open({str(corpus)!r} + '/' + name).read()\n"
    parsed, gens, verified = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    write(parsed, [{"problem_description": "p", "io_requirements": "r", "refcode": code,
                    "funcname": "main_solution",
                    "ios": [{"input": {"name": "w.txt"}, "output": "alpha\n"}],
                    "category": None, "meta": {"msgidx": 0}}])
    write(gens, [gens_row(0, 0, "i", {"input": {"name": "v.txt"}}, 0)])
    proc = run_script(tmp_path, parsed, gens, verified, RETRIES="0",
                      READ_PATHS=f"{tmp_path / 'nothing-here'}:{corpus}")
    assert proc.returncode == 2 and "--read_path" in proc.stderr   # not a directory
    proc = run_script(tmp_path, parsed, gens, verified, RETRIES="0", READ_PATHS=str(corpus))
    assert proc.returncode == 0, proc.stderr
    assert read(verified)[0]["res"]["status"] == st.SUCCESS


def test_defaults_are_the_steps_shared_ones(tmp_path):
    parsed, gens, verified = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    make_parsed(parsed)
    write(gens, [gens_row(0, 0, "i", {"input": {"x": 3}}, 0)])   # runs the code
    env = {k: v for k, v in os.environ.items() if k not in ("TIMEOUT", "RETRIES")}
    proc = subprocess.run(["bash", str(SCRIPT), str(parsed), str(gens), str(verified),
                           sys.executable],   # no RUN_PATH
                          env={**env, "WORKERS": "1", "PIPELINE_PYTHON": sys.executable},
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"timeout={layout.CPU_BUDGET:g}s" in proc.stderr
    assert (tmp_path / layout.RUN_PATH).is_dir()   # relative to where the script runs
    assert read(verified)[0]["res"]["status"] == st.WRONG_ANSWER


def test_without_pipeline_python_the_python_on_path_runs_it_and_reads_the_defaults(tmp_path):
    """PIPELINE_PYTHON unset: `python` on PATH runs the steps. The shared defaults come from
    layout.py, which needs nothing but the standard library: a python without the project's
    packages still reads them, and the run then stops at verify.py naming what is missing."""
    parsed, gens, verified = tmp_path / "parsed.jsonl", tmp_path / "gens.jsonl", tmp_path / "v.jsonl"
    make_parsed(parsed)
    write(gens, [gens_row(0, 0, "i", {"input": {"x": 3}}, 0)])
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIPELINE_PYTHON", "TIMEOUT", "RETRIES", "PYTHONPATH")}
    for kind, flags in (("full", ""), ("bare", " -S")):   # -S: no site-packages, no numpy
        bin_dir = tmp_path / kind
        bin_dir.mkdir()
        (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}"{flags} "$@"\n')
        (bin_dir / "python").chmod(0o755)
        proc = subprocess.run(["bash", str(SCRIPT), str(parsed), str(gens), str(verified),
                               sys.executable, str(tmp_path / "run")],
                              env={**env, "WORKERS": "1", "RETRIES": "0",
                                   "PATH": f"{bin_dir}:{env['PATH']}"},
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert f"timeout={layout.CPU_BUDGET:g}s" in proc.stderr, proc.stderr
        if kind == "full":
            assert proc.returncode == 0, proc.stderr
            assert read(verified)[0]["res"]["status"] == st.WRONG_ANSWER
        else:
            assert proc.returncode != 0 and "No module named" in proc.stderr, proc.stderr
