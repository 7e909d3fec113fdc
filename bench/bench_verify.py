"""Benchmark of verify.py: input-prediction checks per second against a fresh interpreter per check.

Corpus: the parsed samples of /work/shared/data/parsed_sample_150.jsonl when present (else a
generated corpus of small numeric samples), 3 input predictions per sample as
build_spec_msg picks them (ioid 0-2), each answer a model-style text ending in a ```json
block; a third of the predictions are wrong (an integer argument shifted by one, which runs
the code on an input nobody recorded). --dup_rate adds repeats of earlier predictions of the
same sample (several model samples per prompt agree often); it is 0 by default.

Measured in the same run, with the same number of parallel workers:
  ours      python src/verify.py on the whole gens file, end to end (start-up included);
  baseline  for each check a fresh `python -` that imports numpy, execs the reference code,
            calls main_solution on the predicted input and prints the result as JSON
            (the original's method); the parent compares.
Also: peak RSS of verify.py on an output-prediction file N times larger (memory vs file size).

    python bench/bench_verify.py              # ~2 minutes
    python bench/bench_verify.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, os.pardir, "src")
sys.path.insert(0, SRC)

from annoy_datasync.compare import json_equal  # noqa: E402

VERIFY = os.path.join(SRC, "verify.py")
SHARED = "/work/shared/data/parsed_sample_150.jsonl"


def generated_corpus(n: int = 150) -> list[dict]:
    rng = random.Random(0)
    codes = [
        "import numpy as np\n\ndef main_solution(n, k):\n    return int(np.sum(np.arange(n) % (k + 1)))\n",
        "def main_solution(n, k):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, (a + b) % (k + 7)\n    return a\n",
        "import math\n\ndef main_solution(n, k):\n    return round(math.comb(n + k, k) ** 0.5, 6)\n",
    ]
    out = []
    for i in range(n):
        code = codes[i % len(codes)]
        ns: dict = {}
        exec(code, ns)
        ios = []
        for _ in range(10):
            inp = {"n": rng.randint(1, 60), "k": rng.randint(1, 9)}
            ios.append({"input": inp, "output": ns["main_solution"](**inp)})
        out.append({"refcode": code, "ios": ios, "meta": {"msgidx": i}})
    return out


def load_corpus() -> tuple[list[dict], str]:
    if os.path.exists(SHARED):
        with open(SHARED) as fh:
            return [json.loads(line) for line in fh if line.strip()], SHARED
    return generated_corpus(), "generated"


def perturb(inp: dict, rng: random.Random) -> dict:
    out = json.loads(json.dumps(inp))
    ints = [k for k, v in out.items() if isinstance(v, int) and not isinstance(v, bool)]
    if ints:
        out[rng.choice(ints)] += 1
    return out


def answer_text(obj: dict) -> str:
    return ("Let me work backwards from the output. The function computes the value step by "
            "step, so an input that produces it is:\n\n```json\n" + json.dumps(obj) + "\n```")


def build_gens(samples: list[dict], dup_rate: float, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for itemid, s in enumerate(samples):
        for ioid in range(min(3, len(s["ios"]))):
            inp = s["ios"][ioid]["input"]
            pred = perturb(inp, rng) if rng.random() < 1 / 3 else inp
            rows.append({"itemid": itemid, "ioid": ioid, "io_pred": "i",
                         "output": answer_text({"input": pred}), "pred": pred})
            while rng.random() < dup_rate:
                rows.append(dict(rows[-1]))
    for k, r in enumerate(rows):
        r["index"] = k
    return rows


def write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def run_ours(tmp: str, parsed: str, gens: str, workers: int, *extra: str) -> tuple[float, str]:
    """Seconds and summary line of one verify.py run."""
    out = os.path.join(tmp, "verified.jsonl")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, VERIFY, "--parsed_file", parsed, "--gens_file", gens,
                             "--output_file", out, "--run_path", os.path.join(tmp, "run"),
                             "--workers", str(workers), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"verify.py failed:\n{err}")
    summary = [line for line in err.splitlines() if line.startswith("verify:")][-1]
    return seconds, summary


BASELINE_TEMPLATE = """import numpy
import json
{code}

print("@@RESULT@@" + json.dumps(main_solution(**json.loads({inp!r}))))
"""


def baseline_check(sample: dict, pred: dict, expected) -> bool:
    script = BASELINE_TEMPLATE.format(code=sample["refcode"], inp=json.dumps(pred))
    try:
        proc = subprocess.run([sys.executable, "-"], input=script, capture_output=True,
                              text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return False
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json_equal(expected, json.loads(line[len("@@RESULT@@"):]))
    return False


def run_baseline(samples: list[dict], rows: list[dict], workers: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ok = sum(pool.map(lambda r: baseline_check(samples[r["itemid"]], r["pred"],
                                                   samples[r["itemid"]]["ios"][r["ioid"]]["output"]),
                          rows))
    return time.perf_counter() - t0, ok


def peak_rss_kib(cmd: list[str]) -> int:
    """Peak RSS (VmHWM) of the step's own process, not of the executor workers it starts."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return peak


def memory_vs_size(tmp: str, parsed: str, samples: list[dict], sizes: list[int]) -> list[tuple]:
    """Peak RSS of verify.py on output-prediction files of growing size."""
    rows = []
    for n in sizes:
        gens = os.path.join(tmp, f"mem_{n}.jsonl")
        with open(gens, "w") as fh:
            for k in range(n):
                itemid = k % len(samples)
                out = samples[itemid]["ios"][0]["output"]
                fh.write(json.dumps({"itemid": itemid, "ioid": 0, "io_pred": "o", "index": k,
                                     "output": "Reasoning ... " * 40 + "\n```json\n"
                                               + json.dumps({"output": out}) + "\n```"}) + "\n")
        size = os.path.getsize(gens)
        rss = peak_rss_kib([sys.executable, VERIFY, "--parsed_file", parsed, "--gens_file", gens,
                            "--output_file", gens + ".v", "--run_path", os.path.join(tmp, "run")])
        rows.append((n, size, rss))
        os.unlink(gens)
        os.unlink(gens + ".v")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline_every", type=int, default=3,
                    help="the (slow) baseline runs a random 1/n of the checks (default 3)")
    ap.add_argument("--dup_rate", type=float, default=0.0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.baseline_every = 1, 8

    samples, source = load_corpus()
    rows = build_gens(samples, args.dup_rate)
    with tempfile.TemporaryDirectory(prefix="bench_verify.") as tmp:
        parsed = os.path.join(tmp, "parsed.jsonl")
        write_jsonl(parsed, samples)
        gens = os.path.join(tmp, "gens.jsonl")
        write_jsonl(gens, [{k: v for k, v in r.items() if k != "pred"} for r in rows])
        sub = random.Random(1).sample(rows, len(rows) // args.baseline_every)

        ours, always, base = [], [], []
        for _ in range(args.repeats):
            sec, summary = run_ours(tmp, parsed, gens, args.workers)
            ours.append(len(rows) / sec)
            sec, summary_always = run_ours(tmp, parsed, gens, args.workers, "--always_run")
            always.append(len(rows) / sec)
            bsec, _ = run_baseline(samples, sub, args.workers)
            base.append(len(sub) / bsec)
        o, a, b = (statistics.median(x) for x in (ours, always, base))
        print(f"corpus: {source}: {len(samples)} samples, {len(rows)} input predictions, "
              f"workers={args.workers}, dup_rate={args.dup_rate}, repeats={args.repeats} (medians)")
        print(f"ours:              {o:8.1f} checks/s  {o / b:6.1f}x  ({summary})")
        print(f"ours --always_run: {a:8.1f} checks/s  {a / b:6.1f}x  ({summary_always})")
        print(f"baseline:          {b:8.1f} checks/s  (fresh python + numpy per check, "
              f"a random 1/{args.baseline_every} of the checks: {len(sub)})")
        sizes = [2_000, 20_000] if args.quick else [5_000, 50_000]
        for n, size, rss in memory_vs_size(tmp, parsed, samples, sizes):
            print(f"memory:   {n:6d} output predictions, {size / 1e6:6.1f} MB file -> peak RSS {rss / 1024:6.1f} MB")


if __name__ == "__main__":
    main()
