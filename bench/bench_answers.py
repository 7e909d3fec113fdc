"""Benchmark of the answer rules: answers read per second, the method's rule against the
original's reading of the same rule and against the lenient rule, in the same run.

Corpus: the prediction answers of data/demo/answers.jsonl (fenced, prose, \\boxed{}, Python
literals, no JSON), each also padded with a long reasoning text before it (real answers run
to thousands of characters), repeated to --n answers.

  method    answers.method_answer (the default of verify.py)
  original  a re-statement of the original's reading, for timing only: the last ```json
            block if any, else the last balanced {...} by plain brace counting, newlines
            deleted, json.loads, one retry with True/False/None replaced
  lenient   answers.extract_json_answer (verify.py --answer_rule lenient)

    python bench/bench_answers.py            # a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, os.pardir)
sys.path.insert(0, os.path.join(ROOT, "src"))

from annoy_datasync.answers import extract_json_answer, method_answer  # noqa: E402

_JSON_BLOCK = re.compile(r"```json(.*?)```", re.S)


def original_rule(text: str, key: str):
    blocks = _JSON_BLOCK.findall(text)
    if blocks:
        candidate = blocks[-1]
    else:
        depth, start, candidate = 0, None, None
        for i, c in enumerate(text):
            if c == "{":
                if depth == 0:
                    start = i
                depth += 1
            elif c == "}" and depth:
                depth -= 1
                if depth == 0:
                    candidate = text[start:i + 1]
        if candidate is None:
            return None
    candidate = candidate.replace("\n", "")
    for attempt in (candidate, candidate.replace("True", "true").replace("False", "false")
                    .replace("None", "null")):
        try:
            value = json.loads(attempt)
        except ValueError:
            continue
        return value if isinstance(value, dict) and key in value else None
    return None


def corpus(n: int) -> list[tuple[str, str]]:
    base = []
    with open(os.path.join(ROOT, "data", "demo", "answers.jsonl")) as fh:
        for line in fh:
            rec = json.loads(line)
            text = rec["output"] or ""
            if "## Main Function" in text:      # a transform answer, not a prediction
                continue
            base.append((text, "input" if "input" in text[-300:] else "output"))
    padding = "Let me think step by step. " * 150
    texts = base + [(padding + t, k) for t, k in base]
    return (texts * (n // len(texts) + 1))[:n]


def rate(fn, texts, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for text, key in texts:
            fn(text, key)
        runs.append(len(texts) / (time.perf_counter() - t0))
    return statistics.median(runs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4000, help="answers per timing run")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    texts = corpus(args.n)
    rates = {name: rate(fn, texts, args.repeats) for name, fn in
             (("method", method_answer), ("original", original_rule), ("lenient", extract_json_answer))}
    print(f"{len(texts)} answers, median of {args.repeats} runs, answers/s:")
    for name, r in rates.items():
        print(f"  {name:<9} {r:>10,.0f}   {r / rates['original']:.2f}x the original's rule")
    return 0


if __name__ == "__main__":
    sys.exit(main())
