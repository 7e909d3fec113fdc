"""Benchmark of scripts/pipeline_check.sh: end to end against its own first verify pass.

Two files, each measured in the same run:
  loops    the predictions of bench_verify's corpus (3 input predictions per sample, a third
           of them wrong) plus genuine infinite loops: --loops distinct executions, each
           predicted twice (as in real data, where 26 lines were 12 executions). Measured:
           verify.py alone (the first pass), then pipeline_check.sh end to end on a fresh
           output (first pass + RETRIES re-check rounds); the ratio, and whether the
           verdicts are the same.
  hostile  one pipeline_check.sh run over predictions of every hostile kind: loops,
           sleepers, a process that stops itself (SIGSTOP), forks that burn CPU, threads
           that burn CPU, a child that blocks on a pipe; its wall time and verdicts.

    python bench/bench_pipeline_check.py            # TIMEOUT=5 as in the method (~2-3 min)
    python bench/bench_pipeline_check.py --quick    # TIMEOUT=1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, os.pardir)
sys.path.insert(0, HERE)

from bench_verify import answer_text, build_gens, load_corpus, write_jsonl  # noqa: E402

VERIFY = os.path.join(ROOT, "src", "verify.py")
SCRIPT = os.path.join(ROOT, "scripts", "pipeline_check.sh")

LOOP = "def main_solution(n, k):\n    while n != k:\n        n = (n * 7 + 1) % 1000003\n    return n\n"
HOSTILE = {
    "loop": "def main_solution(n):\n    while True:\n        n += 1\n",
    "sleep": "import time\n\ndef main_solution(n):\n    time.sleep(3600)\n    return n\n",
    "stop": "import os, signal\n\ndef main_solution(n):\n    os.kill(os.getpid(), signal.SIGSTOP)\n    return n\n",
    "fork_burn": ("import os\n\ndef main_solution(n):\n    for _ in range(4):\n"
                  "        if os.fork() == 0:\n            while True:\n                pass\n"
                  "    os.wait()\n    return n\n"),
    "threads": ("import threading\n\ndef spin():\n    while True:\n        pass\n\n"
                "def main_solution(n):\n    ts = [threading.Thread(target=spin) for _ in range(4)]\n"
                "    for t in ts:\n        t.start()\n    ts[0].join()\n    return n\n"),
    "blocked_child": ("import os\n\ndef main_solution(n):\n    r, w = os.pipe()\n"
                      "    if os.fork() == 0:\n        os.read(r, 1)\n        os._exit(0)\n"
                      "    os.wait()\n    return n\n"),
}


def statuses(path: str) -> list[str]:
    with open(path) as fh:
        return [json.loads(line)["res"]["status"] for line in fh]


def run_verify(tmp: str, parsed: str, gens: str, out: str, workers: int, timeout: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, VERIFY, "--parsed_file", parsed, "--gens_file", gens,
                    "--output_file", out, "--run_path", os.path.join(tmp, "run"),
                    "--workers", str(workers), "--timeout", timeout],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_check(tmp: str, parsed: str, gens: str, out: str, workers: int, timeout: str) -> float:
    if os.path.exists(out):
        os.unlink(out)
    env = {**os.environ, "WORKERS": str(workers), "TIMEOUT": timeout,
           "PIPELINE_PYTHON": sys.executable}
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", SCRIPT, parsed, gens, out, sys.executable,
                           os.path.join(tmp, "run")], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"pipeline_check.sh failed:\n{proc.stderr}")
    return time.perf_counter() - t0


def loops_file(tmp: str, n_loops: int) -> tuple[str, str, int]:
    samples, _ = load_corpus()
    samples = samples[:150]
    rows = [{k: v for k, v in r.items() if k != "pred"} for r in build_gens(samples, 0.0)]
    base = len(samples)
    samples = samples + [{"refcode": LOOP, "ios": [{"input": {"n": 1, "k": 8}, "output": 8}],
                          "meta": {"msgidx": base}}]
    for j in range(n_loops):      # k = -1 - j: never reached, a distinct execution each
        for _ in range(2):
            rows.append({"itemid": base, "ioid": 0, "io_pred": "i",
                         "output": answer_text({"input": {"n": 1, "k": -1 - j}})})
    parsed, gens = os.path.join(tmp, "parsed.jsonl"), os.path.join(tmp, "gens.jsonl")
    write_jsonl(parsed, samples)
    write_jsonl(gens, rows)
    return parsed, gens, len(rows)


def hostile_file(tmp: str, copies: int) -> tuple[str, str, list[str]]:
    samples, rows, kinds = [], [], []
    for i, (kind, code) in enumerate(HOSTILE.items()):
        samples.append({"refcode": code, "ios": [{"input": {"n": 0}, "output": 0}]})
        for c in range(copies):
            rows.append({"itemid": i, "ioid": 0, "io_pred": "i",
                         "output": answer_text({"input": {"n": 1 + c}})})
            kinds.append(kind)
    parsed, gens = os.path.join(tmp, "h_parsed.jsonl"), os.path.join(tmp, "h_gens.jsonl")
    write_jsonl(parsed, samples)
    write_jsonl(gens, rows)
    return parsed, gens, kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", default="5", help="TIMEOUT, the CPU budget (default 5)")
    ap.add_argument("--loops", type=int, default=12, help="distinct looping executions")
    ap.add_argument("--copies", type=int, default=2, help="predictions per hostile kind")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("loops", "hostile"), default=None,
                    help="measure one of the two files only")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.timeout, args.repeats = "1", 1

    with tempfile.TemporaryDirectory(prefix="bench_pipeline_check.") as tmp:
        if args.only != "hostile":
            measure_loops(tmp, args)
        if args.only != "loops":
            measure_hostile(tmp, args)


def measure_loops(tmp: str, args: argparse.Namespace) -> None:
    parsed, gens, n = loops_file(tmp, args.loops)
    first_out, check_out = os.path.join(tmp, "first.jsonl"), os.path.join(tmp, "check.jsonl")
    first, full = [], []
    for _ in range(args.repeats):
        first.append(run_verify(tmp, parsed, gens, first_out, args.workers, args.timeout))
        full.append(run_check(tmp, parsed, gens, check_out, args.workers, args.timeout))
    f, e = statistics.median(first), statistics.median(full)
    same = statuses(first_out) == statuses(check_out)
    print(f"loops file: {n} predictions, {args.loops} looping executions x 2, "
          f"workers={args.workers}, TIMEOUT={args.timeout}, repeats={args.repeats} (medians)")
    print(f"  first verify pass  {f:7.1f} s")
    print(f"  pipeline_check.sh  {e:7.1f} s  = {e / f:.2f}x the first pass "
          f"(verdicts {'the same' if same else 'DIFFERENT'}: "
          f"{dict(Counter(statuses(check_out)))})")


def measure_hostile(tmp: str, args: argparse.Namespace) -> None:
    parsed, gens, kinds = hostile_file(tmp, args.copies)
    out = os.path.join(tmp, "hostile.jsonl")
    sec = run_check(tmp, parsed, gens, out, args.workers, args.timeout)
    got = sorted(Counter(zip(kinds, statuses(out))).items())
    print(f"hostile file: {len(kinds)} predictions ({', '.join(HOSTILE)}, "
          f"{args.copies} each), one pipeline_check.sh run: {sec:.1f} s")
    print("  verdicts: " + ", ".join(f"{k}:{s} x{c}" for (k, s), c in got))


if __name__ == "__main__":
    main()
