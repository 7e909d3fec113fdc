"""Benchmark of the response cache (annoy_datasync/cache.py): lookups per second in a
small cache and in one of --entries entries, in the same run; and the file's size.

    python bench/bench_cache.py                   # 1,000,000 entries, about a minute
    python bench/bench_cache.py --entries 200000  # quicker

The keys are those of real requests (a JSON body of a few hundred bytes hashed), the
answers 1 KB. Half the lookups hit, half miss. Read the ratio: a B-tree lookup grows with
the log of the size, and the OS page cache holds the file here.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))

from annoy_datasync.cache import ResponseCache, cache_key  # noqa: E402


def key(i: int) -> bytes:
    params = {"model": "bench-model", "temperature": 0.7, "max_tokens": 4096,
              "messages": [{"role": "user", "content": f"Question {i}: " + "x" * 300}]}
    return cache_key("self-hosted", params, 0)


def fill(cache: ResponseCache, n: int) -> float:
    answer = {"output": "y" * 1000, "reasoning": None, "finish_reason": "stop",
              "usage": {"prompt_tokens": 100, "completion_tokens": 250, "total_tokens": 350}}
    t = time.perf_counter()
    for start in range(0, n, 10_000):
        for i in range(start, min(n, start + 10_000)):
            cache.put(key(i), answer)
        cache.flush()
    return n / (time.perf_counter() - t)


def lookups(cache: ResponseCache, n: int, count: int) -> float:
    rng = random.Random(1)
    keys = [key(rng.randrange(n)) if j % 2 else key(n + rng.randrange(n)) for j in range(count)]
    t = time.perf_counter()
    hits = sum(cache.get(k) is not None for k in keys)
    wall = time.perf_counter() - t
    assert hits == count // 2, hits
    return count / wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--lookups", type=int, default=50_000)
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_cache_")
    try:
        small = ResponseCache(os.path.join(tmp, "small", "responses.sqlite3"))
        fill(small, 1000)
        small_rate = lookups(small, 1000, a.lookups)
        big_path = os.path.join(tmp, "big", "responses.sqlite3")
        big = ResponseCache(big_path)
        put_rate = fill(big, a.entries)
        big_rate = lookups(big, a.entries, a.lookups)
        size = sum(os.path.getsize(os.path.join(os.path.dirname(big_path), f))
                   for f in os.listdir(os.path.dirname(big_path)))
        print(f"writes: {put_rate:,.0f} entries/s (batches of 10,000)")
        print(f"lookups, 1,000 entries: {small_rate:,.0f}/s; {a.entries:,} entries: "
              f"{big_rate:,.0f}/s ({big_rate / small_rate:.2f}x); file {size / 1e6:,.0f} MB")
        small.close()
        big.close()
    finally:
        for root, dirs, files in os.walk(tmp, topdown=False):
            for f in files:
                os.unlink(os.path.join(root, f))
            for d in dirs:
                os.rmdir(os.path.join(root, d))
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
