"""Benchmark of parse_gen_ios.py: samples per second against a fresh interpreter per sample.

Corpus: unified responses built from /work/shared/data/parsed_sample_150.jsonl when present
(else a generated corpus): the real reference code, problem statement and I/O description,
and an input generator that draws from the sample's recorded inputs (10 distinct inputs,
drawn with repeats: realistic for generators over small domains).

Measured in the same run with the same number of workers (medians of --repeats):
  ours      python src/parse_gen_ios.py end to end: generator job in a warm pool, then every
            pair run a second time in a second pool (so main_solution runs twice per pair);
  baseline  one fresh `python -` per sample that imports numpy, execs the code and the
            generator and records up to 10 distinct pairs (the original's method, no re-run).
On the whole corpus, and on its "light" part: samples whose 10 recorded calls take under
--light_ms together (measured in this process first). A few samples compute for seconds;
there the cost is the computation itself, which we pay twice by design (the re-run).
Also: peak RSS of parse_gen_ios.py on inputs of growing size.

    python bench/bench_parse.py            # a few minutes
    python bench/bench_parse.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, os.pardir, "src")
sys.path.insert(0, HERE)

from bench_verify import load_corpus, peak_rss_kib, write_jsonl  # noqa: E402

PARSE = os.path.join(SRC, "parse_gen_ios.py")

GENERATOR = """import copy
import random

RECORDED_INPUTS = {inputs}


def input_generator():
    return copy.deepcopy(random.choice(RECORDED_INPUTS))
"""


def unified_text(sample: dict) -> str:
    gen = GENERATOR.format(inputs=repr([p["input"] for p in sample["ios"]]))
    return (f"## Main Function\n```python\n{sample['refcode']}\n```\n\n"
            f"## Input Output Description\n{sample.get('io_requirements') or 'see code'}\n\n"
            f"## Input Generator\n```python\n{gen}\n```\n\n"
            f"## Problem Statement\n{sample.get('problem_description') or 'see code'}\n")


def compute_ms(sample: dict) -> float:
    """Milliseconds of this process's time to run the sample's recorded calls (5 s cap each)."""
    def alarm(*_):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, alarm)
    ns: dict = {"__name__": "bench"}
    t0 = time.perf_counter()
    try:
        exec(sample["refcode"], ns)
        for pair in sample["ios"]:
            signal.alarm(5)
            try:
                ns["main_solution"](**json.loads(json.dumps(pair["input"])))
            finally:
                signal.alarm(0)
    except BaseException:  # noqa: BLE001 - the corpus's own code; only its time matters
        pass
    finally:
        signal.signal(signal.SIGALRM, old)
    return (time.perf_counter() - t0) * 1000


BASELINE = """import numpy
import copy, json, random
random.seed({seed})
{code}
{gen}
pairs, seen = [], set()
for _ in range(50):
    inp = input_generator()
    key = json.dumps(inp, sort_keys=True)
    if key in seen:
        continue
    seen.add(key)
    try:
        out = main_solution(**copy.deepcopy(inp))
        pairs.append({{"input": inp, "output": out}})
        json.dumps(out)
    except Exception:
        continue
    if len(pairs) >= 10:
        break
print(json.dumps(pairs, default=str))
"""


def baseline_sample(i: int, sample: dict) -> int:
    gen = GENERATOR.format(inputs=repr([p["input"] for p in sample["ios"]]))
    script = BASELINE.format(seed=i, code=sample["refcode"], gen=gen)
    try:
        proc = subprocess.run([sys.executable, "-"], input=script, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return 0
    return 1 if proc.returncode == 0 else 0


def run_baseline(samples: list[tuple[int, dict]], workers: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda x: baseline_sample(*x), samples))
    return time.perf_counter() - t0


def run_ours(tmp: str, inp: str, workers: int, extra: list[str]) -> tuple[float, str]:
    out = os.path.join(tmp, "parsed.jsonl")
    for f in (out, out + ".dropped.jsonl"):
        if os.path.exists(f):
            os.unlink(f)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, PARSE, "--input_file", inp, "--output_file", out,
                           "--run_path", os.path.join(tmp, "run"), "--workers", str(workers), *extra],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"parse_gen_ios.py failed:\n{proc.stderr}")
    return seconds, [x for x in proc.stderr.splitlines() if x.startswith("parse_gen_ios:")][-1]


def write_unified(path: str, samples: list[tuple[int, dict]], copies: int = 1) -> None:
    rows, k = [], 0
    for _ in range(copies):
        for _, s in samples:
            rows.append({"messages": [], "output": unified_text(s), "model": "bench", "index": k})
            k += 1
    write_jsonl(path, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--light_ms", type=float, default=50.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--hash_seeds", type=int, default=None,
                    help="passed to parse_gen_ios.py (0: no hash-seed re-checks, to see their cost)")
    args = ap.parse_args()
    extra = [] if args.hash_seeds is None else ["--hash_seeds", str(args.hash_seeds)]
    if args.quick:
        args.repeats = 1

    corpus, source = load_corpus()
    costs = [compute_ms(s) for s in corpus]
    everything = list(enumerate(corpus))
    light = [(i, s) for (i, s), ms in zip(everything, costs) if ms < args.light_ms]
    heavy_ms = sum(ms for ms in costs if ms >= args.light_ms)
    print(f"corpus: {source}: {len(corpus)} samples; {len(corpus) - len(light)} take "
          f">= {args.light_ms:g} ms for their 10 calls ({heavy_ms / 1000:.1f} s of the "
          f"{sum(costs) / 1000:.1f} s of computation); workers={args.workers}, "
          f"repeats={args.repeats} (medians)")
    with tempfile.TemporaryDirectory(prefix="bench_parse.") as tmp:
        # "x4": the same samples four times under other msgidx (so other generator seeds):
        # the start-up of the two executor pools weighs less, as in a long run
        for name, part, copies in (("light", light, 1), ("light x4", light, 4), ("all", everything, 1)):
            inp = os.path.join(tmp, "unified.jsonl")
            write_unified(inp, part, copies)
            ours, base = [], []
            for _ in range(args.repeats):
                sec, summary = run_ours(tmp, inp, args.workers, extra)
                ours.append(copies * len(part) / sec)
                base.append(len(part) / run_baseline(part, args.workers))
            o, b = statistics.median(ours), statistics.median(base)
            print(f"{name:8s} ({copies * len(part)} samples): ours {o:6.1f} samples/s, baseline "
                  f"{b:5.1f} samples/s, ratio {o / b:5.1f}x  ({summary})")
        for copies in ((1, 10) if args.quick else (2, 20)):
            inp = os.path.join(tmp, f"mem_{copies}.jsonl")
            write_unified(inp, light[:100], copies)
            out = os.path.join(tmp, f"mem_{copies}_out.jsonl")
            rss = peak_rss_kib([sys.executable, PARSE, "--input_file", inp, "--output_file", out,
                                "--run_path", os.path.join(tmp, "run"),
                                "--workers", str(args.workers)])
            print(f"memory: {copies * min(100, len(light)):5d} samples, "
                  f"{os.path.getsize(inp) / 1e6:5.1f} MB input -> peak RSS {rss / 1024:5.1f} MB")


if __name__ == "__main__":
    main()
