"""Benchmark of the batch mode's offline pair: rows per second against a bare JSON pass.

A generated input of --rows chat requests (about 2 KB of prompt each) and a vLLM-format
result file for it (answers of about 1 KB, in reverse order, as a batch returns them).
Measured in the same run, medians of --repeats:
  write     batched_api_inference.py --write_batch_file (split at 50,000 requests / 200 MB)
  write_bl  read every input line, json.loads, json.dumps a request line, write it
  read      batched_api_inference.py --read_batch_output (join on custom_id, classify,
            write output rows; a fresh output each time)
  read_bl   json.loads every result line into a dict by custom_id, then stream the input
            and write input line + answer for each
The baselines are the least any converter must do (no validation, no resume, no failures
file), so the ratios say what the checks and the resumability cost.

    python bench/bench_batch.py [--rows 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src")
sys.path.insert(0, SRC)

import batched_api_inference as bai  # noqa: E402


def make_files(d: str, rows: int) -> tuple[str, str]:
    inp, res = os.path.join(d, "in.jsonl"), os.path.join(d, "results.jsonl")
    pad = "x = compute(y)\n" * 130
    with open(inp, "w") as fh:
        for i in range(rows):
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"task {i}\n{pad}"}],
                                 "id": i}) + "\n")
    answer = "The answer is " + "z" * 1000
    with open(res, "w") as fh:
        for i in reversed(range(rows)):
            body = {"id": f"c{i}", "object": "chat.completion", "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": answer}}],
                    "usage": {"prompt_tokens": 500, "completion_tokens": 300, "total_tokens": 800}}
            fh.write(json.dumps({"id": f"v{i}", "custom_id": f"row-{i}", "error": None,
                                 "response": {"status_code": 200, "request_id": f"r{i}",
                                              "body": body}}) + "\n")
    return inp, res


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def write_baseline(inp: str, out: str) -> None:
    with open(inp) as src, open(out, "w") as dst:
        for i, line in enumerate(src):
            rec = json.loads(line)
            dst.write(json.dumps({"custom_id": f"row-{i}", "method": "POST",
                                  "url": "/v1/chat/completions",
                                  "body": {"model": "m", "messages": rec["messages"]}}) + "\n")


def read_baseline(inp: str, res: str, out: str) -> None:
    by_id = {}
    with open(res) as fh:
        for line in fh:
            r = json.loads(line)
            by_id[int(r["custom_id"][4:])] = r
    with open(inp) as src, open(out, "w") as dst:
        for i, line in enumerate(src):
            rec = json.loads(line)
            body = by_id[i]["response"]["body"]
            rec.update(output=body["choices"][0]["message"]["content"], index=i)
            dst.write(json.dumps(rec) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        inp, res = make_files(d, a.rows)
        times: dict[str, list[float]] = {k: [] for k in ("write", "write_bl", "read", "read_bl")}
        for r in range(a.repeats):
            common = ["--input", inp, "--model", "m", "--base_url", "http://127.0.0.1:9/v1"]
            times["write"].append(timed(lambda: bai.main(
                common + ["--output", os.path.join(d, f"w{r}.jsonl"),
                          "--write_batch_file", os.path.join(d, f"req{r}.jsonl")])))
            times["write_bl"].append(timed(lambda: write_baseline(inp, os.path.join(d, "wb.jsonl"))))
            times["read"].append(timed(lambda: bai.main(
                common + ["--output", os.path.join(d, f"o{r}.jsonl"), "--read_batch_output", res])))
            times["read_bl"].append(timed(lambda: read_baseline(inp, res, os.path.join(d, "rb.jsonl"))))
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in ("write", "read"):
            ours, base = a.rows / med[k], a.rows / med[k + "_bl"]
            print(f"{k:5s}: {ours:,.0f} rows/s, baseline {base:,.0f} rows/s, "
                  f"ratio {ours / base:.2f}x (medians of {a.repeats})")


if __name__ == "__main__":
    main()
