import json

import pytest

import parse_gen_ios
from annoy_datasync import cli
from annoy_datasync import status as st
from annoy_datasync.compare import canonical
from annoy_datasync.executor import Executor
from annoy_datasync.generation import Bounds, derive_seed
from testutil import read


def unified(main, gen, desc="Input:\n  `n` (int): a number\nOutput:\n  `return` (int)",
            problem="Compute the thing described by the code."):
    return (f"Some preamble.\n\n## Main Function\n```python\n{main}\n```\n\n"
            f"## Input Output Description\n{desc}\n\n"
            f"## Input Generator\n```python\n{gen}\n```\n\n"
            f"## Problem Statement\n{problem}\n")


GEN_N = "import random\n\ndef input_generator():\n    return {'n': random.randint(0, 1000)}\n"
GEN_LETTERS = ("import random, string\n\ndef input_generator():\n"
               "    return {'s': ''.join(random.sample(string.ascii_lowercase[:20], 2))}\n")

SAMPLES = {
    "plain": unified("def main_solution(n):\n    return sum(range(n))\n", GEN_N),
    # sorts and extends its argument: the recorded input must be the one passed in
    "mutating": unified(
        "def main_solution(nums):\n    nums.sort()\n    nums.append(-1)\n    return nums[0]\n",
        "import random\n\ndef input_generator():\n"
        "    return {'nums': [random.randint(0, 99) for _ in range(6)]}\n"),
    # the output depends on chance: no pair can be recorded
    "random": unified(
        "import random\n\ndef main_solution(n):\n    return n + random.randint(0, 10**9)\n", GEN_N),
    # random, but a re-run often matches by luck: the maximum of n draws is 99 a third of the time
    "lucky": unified(
        "import random\n\ndef main_solution(n):\n"
        "    return max(random.randrange(100) for _ in range(n))\n",
        "import random\n\ndef input_generator():\n    return {'n': random.randint(30, 50)}\n"),
    # a counter kept between calls: only a first call in a fresh process is true
    "stateful": unified(
        "calls = []\n\ndef main_solution(n):\n    calls.append(n)\n    return n + len(calls)\n", GEN_N),
    # a memo shared between calls that does not change any answer: all pairs are true
    "memo": unified(
        "memo = {}\n\ndef main_solution(n):\n    if n not in memo:\n        memo[n] = n * n % 97\n"
        "    return memo[n]\n", GEN_N),
    # set order depends on the hash seed
    "set_order": unified(
        "def main_solution(words):\n    return list(set(words))\n",
        "import random, string\n\ndef input_generator():\n"
        "    return {'words': [''.join(random.choices(string.ascii_lowercase, k=5)) for _ in range(8)]}\n"),
    "numpy": unified(
        "import numpy as np\n\ndef main_solution(n):\n    rng = np.random.default_rng(n)\n"
        "    return float(np.round(rng.normal(), 6))\n", GEN_N),
    "no_generator": "## Main Function\n```python\ndef main_solution(n):\n    return n\n```\n\n"
                    "## Input Output Description\nx\n\n## Problem Statement\ny\n",
    "no_problem": unified("def main_solution(n):\n    return n\n", GEN_N, problem=""),
    "generator_raises": unified("def main_solution(n):\n    return n\n",
                                "def input_generator():\n    raise RuntimeError('nope')\n"),
    "too_large": unified("def main_solution(xs):\n    return len(xs)\n",
                         "import random\n\ndef input_generator():\n"
                         "    return {'xs': [random.random() for _ in range(200)]}\n"),
    "syntax_error": unified("def main_solution(n):\n    return n +\n", GEN_N),
    # the order of a 2-letter set follows the hash seed: it matches under another seed half
    # the time, so each of these would keep pairs after a single re-check
    "letters_join": unified("def main_solution(s):\n    return ''.join(set(s))\n", GEN_LETTERS),
    "letters_comp": unified("def main_solution(s):\n    return [c for c in {*s}]\n", GEN_LETTERS),
    "letters_frozen": unified("def main_solution(s):\n    return '-'.join(frozenset(s.upper()))\n",
                              GEN_LETTERS),
    "letters_keys": unified("def main_solution(s):\n    return list(dict.fromkeys(s).keys() | {'z'})\n",
                            GEN_LETTERS),
    # small ints hash to themselves, whatever the seed: the set's order is always the same
    "int_set": unified(
        "def main_solution(nums):\n    return list(set(nums))\n",
        "import random\n\ndef input_generator():\n"
        "    return {'nums': [random.randint(0, 40) for _ in range(5)]}\n"),
    # a duration: 0.0 inside a job (CPU clock under RLIMIT_CPU) in both runs, and a date
    "clock_duration": unified(
        "import time\n\ndef main_solution(n):\n    t0 = time.process_time()\n"
        "    s = sum(range(n))\n    return [s, round(time.process_time() - t0, 3)]\n", GEN_N),
    "clock_date": unified(
        "import datetime\n\ndef main_solution(n):\n    return n + datetime.date.today().year\n",
        GEN_N),
    # reads clocks, but its output does not depend on them
    "clock_harmless": unified(
        "import time\nfrom datetime import datetime\nSTART = time.time()\n\n"
        "def main_solution(n):\n    t0 = time.perf_counter_ns()\n    stamp = datetime.now()\n"
        "    r = n * n\n    spent = time.perf_counter_ns() - t0\n    return r\n", GEN_N),
}
EXPECTED_DROPS = {
    "random": st.DROP_FEW_IOS, "lucky": st.DROP_FEW_IOS, "stateful": st.DROP_FEW_IOS, "set_order": st.DROP_FEW_IOS,
    "no_generator": st.DROP_NO_GENERATOR, "no_problem": st.DROP_MISSING_SECTION,
    "generator_raises": st.DROP_FEW_IOS, "too_large": st.DROP_FEW_IOS,
    "syntax_error": st.DROP_GEN_FAILED, "no_output": st.DROP_NO_OUTPUT,
    "letters_join": st.DROP_FEW_IOS, "letters_comp": st.DROP_FEW_IOS,
    "letters_frozen": st.DROP_FEW_IOS, "letters_keys": st.DROP_FEW_IOS,
    "clock_duration": st.DROP_FEW_IOS, "clock_date": st.DROP_FEW_IOS,
}


def write_input(path, names):
    rows = []
    for i, name in enumerate(names):
        row = {"messages": [{"role": "user", "content": "transform " + name}], "name": name,
               "model": "m", "index": i}
        if name != "no_output":
            row["output"] = SAMPLES[name]
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


ALL = [*SAMPLES, "no_output"]


def run(tmp_path, inp, out, *extra):
    return parse_gen_ios.main(["--input_file", str(inp), "--output_file", str(out),
                               "--run_path", str(tmp_path / "run"), "--timeout", "3", *extra])


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parse")
    inp = tmp / "unified.jsonl"
    rows = write_input(inp, ALL)
    out = tmp / "parsed.jsonl"
    assert run(tmp, inp, out, "--workers", "2") == 0
    return tmp, inp, out, rows


def test_kept_and_dropped_with_reasons(full_run):
    tmp, _, out, rows = full_run
    kept = read(out)
    dropped = read(tmp / "parsed.jsonl.dropped.jsonl")
    name = {i: r["name"] for i, r in enumerate(rows)}
    assert [name[r["meta"]["msgidx"]] for r in kept] == ["plain", "mutating", "memo", "numpy",
                                                         "int_set", "clock_harmless"]
    assert {name[d["msgidx"]]: d["reason"] for d in dropped} == EXPECTED_DROPS
    by_name = {name[d["msgidx"]]: d for d in dropped}
    assert by_name["random"]["pair_drops"][st.PAIR_NOT_REPRODUCIBLE] >= 9
    assert by_name["lucky"]["pair_drops"][st.PAIR_NOT_REPRODUCIBLE] >= 9
    assert by_name["stateful"]["pair_drops"][st.PAIR_NOT_REPRODUCIBLE] >= 9
    assert by_name["set_order"]["pair_drops"][st.PAIR_NOT_REPRODUCIBLE] >= 9
    for sample in ("letters_join", "letters_comp", "letters_frozen", "letters_keys",
                   "clock_duration", "clock_date"):
        assert by_name[sample]["pair_drops"][st.PAIR_NOT_REPRODUCIBLE] >= 14, sample
    assert by_name["generator_raises"]["pair_drops"][st.PAIR_ERROR] == 50
    assert by_name["too_large"]["pair_drops"][st.PAIR_TOO_LARGE] >= 10
    for rec in kept:
        assert rec["funcname"] == "main_solution" and len(rec["ios"]) == 10
        assert rec["problem_description"] and rec["io_requirements"] and rec["input_generator"]
        assert len({canonical(p["input"]) for p in rec["ios"]}) == 10        # distinct inputs
        assert all(Bounds().violation(p["input"]) is None for p in rec["ios"])
    mutating = kept[1]
    for pair in mutating["ios"]:   # recorded input is what was passed in, not the mutated list
        assert len(pair["input"]["nums"]) == 6 and pair["output"] == min(pair["input"]["nums"])
    assert any(p["input"]["nums"] != sorted(p["input"]["nums"]) for p in mutating["ios"])


def test_every_recorded_pair_reproduces_in_a_fresh_process(full_run):
    tmp, _, out, _ = full_run
    kept = read(out)
    # a third hash seed and other random state, one fresh child per pair (as verify runs it)
    with Executor(run_path=str(tmp / "run2"), workers=2, hash_seed=4242) as ex:
        futures = [(p, ex.run_calls(rec["refcode"], [p["input"]], seed=99))
                   for rec in kept for p in rec["ios"]]
        for pair, fut in futures:
            [job] = fut.result()
            assert job.status == st.SUCCESS and canonical(job.value) == canonical(pair["output"])


def test_rerun_is_byte_identical_whatever_the_workers(full_run, tmp_path):
    tmp, inp, out, _ = full_run
    out1 = tmp_path / "one.jsonl"
    assert run(tmp_path, inp, out1, "--workers", "1") == 0
    assert out1.read_bytes() == out.read_bytes()
    assert (tmp_path / "one.jsonl.dropped.jsonl").read_bytes() == \
        (tmp / "parsed.jsonl.dropped.jsonl").read_bytes()


def test_other_seed_other_inputs(full_run, tmp_path):
    tmp, inp, out, _ = full_run
    out2 = tmp_path / "seed1.jsonl"
    assert run(tmp_path, inp, out2, "--seed", "1", "--workers", "2") == 0
    assert [r["ios"] for r in read(out2)] != [r["ios"] for r in read(out)]
    assert derive_seed(0, 3, "generate") != derive_seed(1, 3, "generate")


def test_resume_skips_done_samples(full_run, tmp_path, capsys):
    tmp, inp, out, rows = full_run
    part = tmp_path / "part.jsonl"
    part.write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    res = tmp_path / "resumed.jsonl"
    assert run(tmp_path, part, res) == 0
    with open(res, "ab") as fh:   # a killed writer's torn last line
        fh.write(b'{"problem_description": "half')
    capsys.readouterr()
    assert run(tmp_path, inp, res, "--workers", "2") == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "skipped_done=6" in summary
    assert res.read_bytes() == out.read_bytes()
    assert sorted(d["msgidx"] for d in read(tmp_path / "resumed.jsonl.dropped.jsonl")) == \
        sorted(d["msgidx"] for d in read(tmp / "parsed.jsonl.dropped.jsonl"))


def test_summary_counts_samples_and_pairs(tmp_path, capsys):
    inp = tmp_path / "u.jsonl"
    write_input(inp, ["plain", "random", "no_generator"])
    assert run(tmp_path, inp, tmp_path / "p.jsonl", "--workers", "1") == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith("parse_gen_ios:")
    for key in ("kept=1", "pairs_kept=10", f"{st.DROP_FEW_IOS}=1", f"{st.DROP_NO_GENERATOR}=1",
                f"{st.PAIR_NOT_REPRODUCIBLE}="):
        assert key in summary


HEAVY = unified(
    "import time\n\ndef main_solution(n):\n    end = time.thread_time() + 0.1\n"
    "    while time.thread_time() < end:\n        pass\n    return n * 3\n", GEN_N)


def test_output_is_the_same_idle_and_under_load(tmp_path):
    """Every call of the heavy sample costs 0.1 s of CPU: its 0.45 s budget fits 5 calls
    (so 5 pairs), however long they take on a busy machine."""
    from testutil import cpu_burners
    inp = tmp_path / "u.jsonl"
    rows = [{"messages": [{"role": "user", "content": "t"}], "output": text, "index": k}
            for k, text in enumerate([SAMPLES["plain"], HEAVY, SAMPLES["random"]])]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outs = []
    for load in (False, True):
        out = tmp_path / f"p{int(load)}.jsonl"
        argv = [inp, out, "--workers", "2", "--timeout", "1", "--budget", "0.45"]
        if load:
            with cpu_burners(2):
                assert run(tmp_path, *argv) == 0
        else:
            assert run(tmp_path, *argv) == 0
        outs.append((out.read_bytes(), (tmp_path / f"p{int(load)}.jsonl.dropped.jsonl").read_bytes()))
    assert outs[0] == outs[1]
    kept = [json.loads(line) for line in outs[0][0].decode().splitlines()]
    assert [len(r["ios"]) for r in kept] == [10, 5]


def test_bad_input(tmp_path, capsys):
    csv = tmp_path / "u.csv"
    csv.write_text("a,b\n1,2\n")
    argv = ["--input_file", str(csv), "--output_file", str(tmp_path / "p.jsonl"),
            "--run_path", str(tmp_path / "run")]
    assert cli.run(parse_gen_ios.main, argv) == 1
    assert "u.csv:1" in capsys.readouterr().err
    argv[1] = str(tmp_path / "missing.jsonl")
    assert cli.run(parse_gen_ios.main, argv) == 1
    assert "no such file" in capsys.readouterr().err
    for bad in (["--max_ios", "1"], ["--workers", "0"], ["--dropped_file", str(tmp_path / "p.jsonl")],
                ["--read_path", str(tmp_path / "no-such-dir")]):
        with pytest.raises(SystemExit) as exc:
            parse_gen_ios.main([*argv, *bad])
        assert exc.value.code == 2


def test_a_second_writer_waits_then_resumes_after_the_first(tmp_path):
    """A run left over from a killed driver may still be writing: a new run on the same
    output waits for it, then skips what it wrote (no sample twice)."""
    import fcntl
    import subprocess
    import sys
    from pathlib import Path

    inp = tmp_path / "u.jsonl"
    write_input(inp, ["plain", "memo"])
    out = tmp_path / "p.jsonl"
    script = Path(parse_gen_ios.__file__)
    with open(out, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)   # stands for the other writer
        proc = subprocess.Popen([sys.executable, str(script), "--input_file", str(inp),
                                 "--output_file", str(out), "--run_path", str(tmp_path / "run"),
                                 "--workers", "1"], stderr=subprocess.PIPE, text=True)
        assert "waiting for it to finish" in proc.stderr.readline()
        # the other writer finishes sample 0 while the new run waits
        held.write((json.dumps({"refcode": "x", "ios": [], "meta": {"msgidx": 0}}) + "\n").encode())
        held.flush()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert [r["meta"]["msgidx"] for r in read(out)] == [0, 1]
    assert "skipped_done=1" in err


def test_an_executor_failure_is_retried_by_a_rerun(tmp_path, monkeypatch, capsys):
    """A dead sandbox worker is not the code's fault: the sample is written to neither file
    (summary retry_later) and the next run records it."""
    from concurrent.futures import Future

    from annoy_datasync.executor import GenResult, JobResult

    def failed(result):
        fut = Future()
        fut.set_result(result)
        return fut

    died = "The code could not be run: the sandbox worker died (test)."
    real_gen, real_fresh = Executor.run_generator, Executor.run_fresh

    def run_generator(self, code, gen_code, **kw):      # "plain" fails in its generator job
        if "sum(range(n))" in code:
            return failed(GenResult(st.NOT_RUNNABLE, message=died, error_type=st.EXECUTOR_ERROR))
        return real_gen(self, code, gen_code, **kw)

    def run_fresh(self, codes, calls, **kw):            # "memo" fails in its re-check job
        if any("memo[n] = n * n % 97" in code for code in codes):
            return failed([JobResult(st.NOT_RUNNABLE, error_type=st.EXECUTOR_ERROR, message=died)
                           for _ in calls])
        return real_fresh(self, codes, calls, **kw)

    inp = tmp_path / "u.jsonl"
    write_input(inp, ["plain", "memo", "no_generator"])
    out = tmp_path / "p.jsonl"
    dropped = tmp_path / "p.jsonl.dropped.jsonl"
    monkeypatch.setattr(Executor, "run_generator", run_generator)
    monkeypatch.setattr(Executor, "run_fresh", run_fresh)
    assert run(tmp_path, inp, out, "--workers", "1") == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{st.RETRY_LATER}=2" in summary and "kept=" not in summary
    assert out.read_text() == ""
    assert [d["reason"] for d in read(dropped)] == [st.DROP_NO_GENERATOR]
    monkeypatch.undo()
    assert run(tmp_path, inp, out, "--workers", "1") == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "kept=2" in summary and "skipped_done=1" in summary and st.RETRY_LATER not in summary
    assert sorted(r["meta"]["msgidx"] for r in read(out)) == [0, 1]


def test_a_worker_that_cannot_be_replaced_stops_the_step(tmp_path, monkeypatch, capsys):
    """Through the real executor: the generator pool's worker dies on its first job and
    every start of a replacement fails (a hello that is not JSON). The step stops with one
    line instead of hanging; nothing of the samples it could not run is written, and a
    rerun records them all."""
    from annoy_datasync import executor as executor_mod

    real_send, real_handshake = executor_mod._Worker.send, executor_mod._Worker.handshake
    died: list[int] = []

    def send(self, body):
        if not died:
            died.append(1)
            self.proc.kill()
            self.proc.wait()
        real_send(self, body)

    def handshake(self):
        if died:
            raise ValueError("Expecting value: line 1 column 1 (char 0)")
        real_handshake(self)

    names = ["plain", "memo", "mutating", "numpy", "clock_harmless", "int_set", "plain",
             "memo", "no_generator"]
    inp = tmp_path / "u.jsonl"
    write_input(inp, names)
    out = tmp_path / "p.jsonl"
    argv = ["--input_file", str(inp), "--output_file", str(out), "--run_path",
            str(tmp_path / "run"), "--timeout", "3", "--workers", "1", "--hash_seeds", "0"]
    monkeypatch.setattr(executor_mod._Worker, "send", send)
    monkeypatch.setattr(executor_mod._Worker, "handshake", handshake)
    assert cli.run(parse_gen_ios.main, argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: a sandbox worker failed and could not be restarted "
                              "(ValueError: Expecting value")
    assert out.read_text() == ""
    monkeypatch.undo()
    assert cli.run(parse_gen_ios.main, argv) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert st.RETRY_LATER not in summary and "skipped_done" not in summary
    assert sorted(r["meta"]["msgidx"] for r in read(out)) == [0, 1, 2, 3, 4, 5, 6, 7]


RECHECK_CODES = [
    # seeded random: the merged job must give each call its own sample's seed
    "import random\n\ndef main_solution(n):\n    return [random.randint(0, 10**6) for _ in range(n)]\n",
    # changes a module other samples use, and keeps state between calls of its namespace
    "import math\ncalls = []\n\ndef main_solution(n):\n    math.tau = 1.0\n"
    "    calls.append(n)\n    return n + len(calls)\n",
    # set order depends on the hash seed, the same in a merged job as alone
    "def main_solution(n):\n    return list({str(i) * 3 for i in range(n)})\n",
    "import math\n\ndef main_solution(n):\n    return round(math.tau * n, 6)\n",
    "def main_solution(n):\n    raise ValueError(f'no {n}')\n",
]


def test_merged_rechecks_give_what_separate_jobs_give(tmp_path):
    """Re-check jobs of several samples merged into one sandboxed job: every call still runs
    from a fresh namespace with its own sample's seed, so each result equals that of the
    sample's own job. (What merged samples share is the process: a module one of them
    changes, here math.tau, stays changed for the next; so the reader comes first.)"""
    import math
    import random

    from annoy_datasync.executor import Call
    from annoy_datasync.generation import Rechecker

    codes = [RECHECK_CODES[3]] + RECHECK_CODES[:3] + RECHECK_CODES[4:]
    calls = [[Call({"n": n}, seed=100 + k) for n in (3, 5)] for k in range(len(codes))]
    calls[1].append(Call({"n": 4}, seed=77))
    with Executor(run_path=str(tmp_path / "run"), workers=1, hash_seed=7) as ex:
        jobs = []
        real = ex.run_fresh

        def counted(codes, calls, **kw):
            jobs.append(len({c.code for c in calls}))
            return real(codes, calls, **kw)

        ex.run_fresh = counted
        alone = [Rechecker(None, max_samples=1).run(lambda: ex, c, x).result(60)
                 for c, x in zip(codes, calls)]
        rc = Rechecker(None, max_samples=3)
        pool = lambda: ex  # noqa: E731
        futs = [rc.run(pool, c, x) for c, x in zip(codes, calls)]
        assert [rc.holds(f) for f in futs] == [False] * 3 + [True] * 2
        rc.flush()
        merged = [f.result(60) for f in futs]
    assert jobs == [1] * len(codes) + [3, 2]     # alone, then 3 samples in one job, then 2
    for a, m in zip(alone, merged):
        assert [(r.status, r.value, r.error_type, r.drew_random) for r in a] == \
               [(r.status, r.value, r.error_type, r.drew_random) for r in m]
    # each call of the random sample drew from its own sample's seed (or its reseed)
    draws = [(random.Random(s), n) for s, n in ((101, 3), (101, 5), (77, 4))]
    want = [[rng.randint(0, 10**6) for _ in range(n)] for rng, n in draws]
    assert [r.value for r in merged[1]] == want and merged[1][0].drew_random
    assert not any(r.drew_random or r.read_clock for r in merged[0])
    assert merged[4][0].status == st.EXCEPTION
    assert merged[0][0].value == round(math.tau * 3, 6)


def test_a_merged_recheck_that_fails_in_the_executor_is_rerun_sample_by_sample():
    from concurrent.futures import Future

    from annoy_datasync.executor import Call, JobResult
    from annoy_datasync.generation import Rechecker

    jobs = []

    class Pool:
        def run_fresh(self, codes, calls, watch):
            which = sorted({c.code for c in calls})
            jobs.append((len(which), len(calls)))
            fut = Future()
            if len(which) > 1:               # the merged job: its worker died
                fut.set_result([JobResult(st.NOT_RUNNABLE, error_type=st.EXECUTOR_ERROR)
                                for _ in calls])
            else:
                fut.set_result([JobResult(st.SUCCESS, c.seed) for c in calls])
            return fut

    pool = Pool()
    rc = Rechecker(None, max_samples=2)
    get = lambda: pool  # noqa: E731 - merged: the same pool
    a = rc.run(get, "code a", [Call({}, seed=1)] * 2)
    b = rc.run(get, "code b", [Call({}, seed=2)])
    assert [r.value for r in a.result(5)] == [1] * 2
    assert [r.value for r in b.result(5)] == [2]
    assert jobs == [(2, 3), (1, 2), (1, 1)]


@pytest.mark.parametrize("code, suspect", [
    ("def main_solution(s):\n    return ''.join(set(s))\n", True),
    ("def main_solution(s):\n    return list({c for c in s})\n", True),
    ("def main_solution(s):\n    return sorted({1, 2} | {3})\n", False),
    ("def main_solution(s):\n    for c in set(s):\n        return c\n", True),
    ("def main_solution(s):\n    seen = set(s)\n    t = seen | {'a'}\n    return list(t)\n", True),
    ("class A:\n    def __init__(self):\n        self.seen = set()\n\n"
     "def main_solution(s):\n    a = A()\n    a.seen.add(s)\n    return [*a.seen]\n", True),
    ("from collections import defaultdict\n\ndef main_solution(s):\n"
     "    d = defaultdict(set)\n    return d\n", True),
    ("def main_solution(s):\n    seen = set()\n    for c in s:\n        if c in seen:\n"
     "            return c\n        seen.add(c)\n    return len(seen) == len(set(s)) and max({1})\n",
     False),
    ("class A:\n    def __init__(self):\n        self.seen = set()\n\n"
     "def main_solution(s):\n    a = A()\n    a.seen.add(s)\n    return s in a.seen\n", False),
    ("def main_solution(s):\n    return list(frozenset(s))\n", True),
    ("def main_solution(s):\n    return hash(s) % 7\n", True),
    ("def main_solution(d):\n    return list(d.keys() - {'a'})\n", True),
    ("def main_solution(d):\n    return list(d.keys() - d2.keys())\n", True),
    ("import sympy\n\ndef main_solution(x):\n    return str(sympy.factor(x))\n", True),
    ("from sympy import symbols\n\ndef main_solution(x):\n    return x\n", True),
    ("def main_solution(s):\n    return sorted(dict.fromkeys(s))\n", False),
    ("import numpy as np\n\ndef main_solution(n):\n    return int(np.arange(n).sum())\n", False),
    ("def main_solution(n):\n    d = {'a': 1}\n    return [k for k in d] + [n - 1]\n", False),
    ("def main_solution(n) broken\n", False),
])
def test_what_may_depend_on_hash_order(code, suspect):
    from annoy_datasync.generation import may_depend_on_hash_order
    assert may_depend_on_hash_order(code) is suspect


def test_values_no_file_can_hold_are_dropped_not_a_crash(tmp_path, capsys):
    """Outputs and inputs with a lone surrogate (no UTF-8 file can hold one) are not plain
    JSON: the pairs are dropped and counted; the step ends normally with the other samples."""
    names = {"surrogate_out": unified("def main_solution(n):\n    return chr(0xd800) + str(n)\n",
                                      GEN_N),
             "surrogate_in": unified("def main_solution(s):\n    return len(s)\n",
                                     "import random\n\ndef input_generator():\n"
                                     "    return {'s': chr(0xdc00) * random.randint(1, 9)}\n")}
    SAMPLES.update(names)
    try:
        inp = tmp_path / "u.jsonl"
        write_input(inp, [*names, "plain"])
        out = tmp_path / "p.jsonl"
        assert run(tmp_path, inp, out, "--workers", "1") == 0
    finally:
        for name in names:
            del SAMPLES[name]
    assert [r["meta"]["msgidx"] for r in read(out)] == [2]
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "kept=1" in summary and f"{st.DROP_FEW_IOS}=2" in summary, summary
    assert f"{st.PAIR_NON_JSON}=" in summary


@pytest.mark.parametrize("value", [
    {"s": "\U0001F600" * 300}, {"s": "\u00e9\u4e2d" * 300}, {"xs": [[] for _ in range(600)]},
    {str(i): i for i in range(300)}, {"s": "\u2028\n\t\"" * 300}, {"f": [1e-7, -0.0, 2**60] * 99}])
def test_what_the_generator_job_leaves_out_bounds_would_drop(value):
    """The generator job leaves out pairs longer than SEND_FACTOR x max_bytes as it writes
    them (json.dumps defaults); canonical JSON is never under a third of that text, so each
    such pair is over the 1024-byte bound too (and the rule itself stays in the parent)."""
    from annoy_datasync.generation import SEND_FACTOR

    text = json.dumps(value)
    assert len(text) <= 3 * len(canonical(value).encode("utf-8"))
    cut = SEND_FACTOR * Bounds().max_bytes
    assert 3 * (Bounds().max_bytes + 1) <= cut


def test_pairs_left_out_by_the_generator_job_change_no_file_and_no_count(tmp_path, capsys,
                                                                          monkeypatch):
    """The same run with the generator job's early bound and without it (a factor so large
    that it sends every pair, as before the bound): the same files, the same summary."""
    from annoy_datasync import executor as executor_mod
    from annoy_datasync import generation

    left_out = []
    real_gen_result = executor_mod._gen_result

    def gen_result(job, answer):
        left_out[-1] += answer["errors"].get(executor_mod.GEN_TOO_LARGE, 0)
        return real_gen_result(job, answer)

    monkeypatch.setattr(executor_mod, "_gen_result", gen_result)
    mixed = unified(
        "import random\n\ndef main_solution(n, xs):\n    random.random()\n"
        "    return 'z' * n if n % 3 == 0 else sum(xs) + n\n",
        "import random\n\ndef input_generator():\n    n = random.randint(0, 3000)\n"
        "    return {'n': n, 'xs': [random.random() for _ in range(n % 400)]}\n")
    names = ["too_large", "plain", "mutating", "memo"]
    results = []
    for factor in (generation.SEND_FACTOR, 10**6):
        monkeypatch.setattr(generation, "SEND_FACTOR", factor)
        left_out.append(0)
        d = tmp_path / str(factor)
        d.mkdir()
        write_input(d / "u.jsonl", names)
        with open(d / "u.jsonl", "a") as f:
            f.write(json.dumps({"messages": [], "output": mixed, "index": 9}) + "\n")
        assert run(d, d / "u.jsonl", d / "p.jsonl", "--workers", "2") == 0
        summary = capsys.readouterr().err.strip().splitlines()[-1]
        results.append(((d / "p.jsonl").read_bytes(),
                        (d / "p.jsonl.dropped.jsonl").read_bytes(), summary))
    assert results[0] == results[1]
    assert left_out[0] >= 5 and left_out[1] == 0
    assert "pair_too_large=" in results[0][2] and b'"msgidx": 9' in results[0][0]
