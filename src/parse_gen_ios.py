"""Parse unified responses and record true input/output pairs by running their code.

In: --input_file, inference output on the transform prompts (the model's unified response in
"output": main_solution, I/O description, input generator, problem statement). Out:
--output_file, one parsed sample per kept response (refcode, ios, problem_description,
io_requirements, meta.msgidx, input_generator), and --dropped_file (default
<output_file>.dropped.jsonl), one line per dropped response with its reason. Each response's
generator runs in the sandboxed executor seeded from --seed and its msgidx (the record's
"index", else its 0-based line); every pair is run a second time in a fresh namespace of a
second pool (other hash seed, other random seed) and dropped unless its output is the same
JSON; pairs of code that drew random numbers or read a clock are run again with other seeds
and warped clocks, those of code that may depend on set order under --hash_seeds more hash
seeds. Output order follows input order; a rerun skips samples already written to either file.
A sample whose job failed through the executor's fault (a sandbox worker died) is written to
neither file and counted as retry_later: a rerun tries it again.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, wait
from typing import Any

from annoy_datasync import cli, layout
from annoy_datasync import status as st
from annoy_datasync.executor import DEFAULT_PRELOAD, Executor, Limits
from annoy_datasync.generation import Rechecker, SampleTask, GenerationSettings, done_ids
from annoy_datasync.jsonl import Appender, read_jsonl, where

log = logging.getLogger("annoy_datasync.parse_gen_ios")

GEN_HASH_SEED = 0       # PYTHONHASHSEED of the generator pool (and of verify's executor)
CHECK_HASH_SEED = 7919  # a different one for the re-check pool
# Further hash seeds, one small pool each (started when first needed): every pair of code
# that may depend on set order is re-run under each. A pair whose output follows the order
# of a 2-element set of str matches under a random seed with probability 1/2: it survives
# the generator's seed, the re-check's and these with probability 2**-(1 + 8) < 0.2%.
HASH_SEEDS = (17, 4099, 8191, 12289, 16411, 20483, 24593, 28687)


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    p.add_argument("--input_file", required=True, help="unified responses (inference output JSONL)")
    p.add_argument("--output_file", required=True, help="parsed samples (JSONL, appended)")
    p.add_argument("--dropped_file", default=None,
                   help="dropped responses with reasons (default: "
                        f"{layout.side_file('<output_file>', layout.DROPPED)})")
    cli.add_executor_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of input generation (default 0)")
    p.add_argument("--max_ios", type=int, default=10, help="I/O pairs kept per sample (default 10)")
    p.add_argument("--max_calls", type=int, default=50,
                   help="input_generator() calls per sample at most (default 50)")
    p.add_argument("--budget", type=float, default=20.0,
                   help="CPU seconds of generation per sample at most (default 20); CPU "
                        "time, so the pairs a sample keeps do not depend on load")
    p.add_argument("--hash_seeds", type=int, default=len(HASH_SEEDS),
                   help="further hash seeds under which pairs of code that may depend on set "
                        f"order are re-run (0-{len(HASH_SEEDS)}, default {len(HASH_SEEDS)}; each "
                        "pool of workers starts when first needed)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _msgidx(record: dict, lineno: int) -> int:
    idx = record.get("index")
    if isinstance(idx, int) and not isinstance(idx, bool) and idx >= 0:
        return idx
    return lineno - 1


class _Pool:
    """An Executor started on first use (a rerun with nothing left to do starts none).

    Its workers are launched without waiting for them (the first job waits), and
    `start_with` is launched at the same time: the two pools start up side by side.
    """

    def __init__(self, start_with: _Pool | None = None, **kwargs: Any):
        self.kwargs = kwargs
        self.start_with = start_with
        self.executor: Executor | None = None

    def __call__(self) -> Executor:
        if self.executor is None:
            self.executor = Executor(wait=False, **self.kwargs)
            if self.start_with is not None:
                self.start_with()
        return self.executor

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()


def _lock(path: str) -> Any:
    """Wait for an exclusive lock on `path`: a run still writing it (e.g. left over from a
    killed driver script) finishes first, then this one resumes after what it wrote."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fh = open(path, "ab")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.warning("%s: another parse_gen_ios is writing it; waiting for it to finish", path)
        fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.check_executor_args(parser, args)
    for name in ("max_ios", "max_calls"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.max_ios < 2:
        parser.error("--max_ios must be at least 2 (samples with fewer pairs are dropped)")
    if not 0 <= args.hash_seeds <= len(HASH_SEEDS):
        parser.error(f"--hash_seeds must be between 0 and {len(HASH_SEEDS)}")
    if args.budget <= 0:
        parser.error("--budget must be positive")
    dropped_file = args.dropped_file or layout.side_file(args.output_file, layout.DROPPED)
    if os.path.abspath(dropped_file) in (os.path.abspath(args.output_file), os.path.abspath(args.input_file)):
        parser.error("--dropped_file must differ from --input_file and --output_file")

    records = read_jsonl(args.input_file)
    settings = GenerationSettings(seed=args.seed, max_ios=args.max_ios,
                                  spares=max(2, args.max_ios // 2), max_calls=args.max_calls,
                                  budget_s=args.budget)
    limits = Limits(cpu_time=args.timeout)   # and as much idle time (the wall backstop)
    common = dict(python_path=args.python_path, run_path=args.run_path,
                  workers=args.workers, limits=limits, read_paths=args.read_path)
    check_pool = _Pool(hash_seed=CHECK_HASH_SEED, **common)
    gen_pool = _Pool(start_with=check_pool, hash_seed=GEN_HASH_SEED, **common)
    # ceil(workers / 8) workers per seed; without numpy preloaded, which halves their start
    # (few codes that may depend on set order use numpy; their jobs import it)
    per_seed = dict(common, workers=-(-args.workers // len(HASH_SEEDS)),
                    preload=tuple(m for m in DEFAULT_PRELOAD if m.split(".")[0] != "numpy"))
    hash_pools = [_Pool(hash_seed=h, **per_seed) for h in HASH_SEEDS[:args.hash_seeds]]
    for k, pool in enumerate(hash_pools):   # the first use of one starts them all
        pool.start_with = hash_pools[k - 1]
    recheck = Rechecker(check_pool, hash_pools)   # merges the re-check jobs of a few samples

    counts: Counter[str] = Counter()
    seen: set[int] = set()
    # samples with a job running or queued: enough to keep both pools busy. Samples are
    # written in input order, so one that computes for seconds holds back those after it:
    # up to `buffered` finished samples wait for it while new ones keep the workers busy.
    window = 4 * args.workers
    buffered = 64 * args.workers
    pending: deque[SampleTask] = deque()
    lock = _lock(args.output_file)   # held until the end: one writer per output file
    try:
        done = done_ids(args.output_file, dropped_file)   # resume: written by an earlier run
        with Appender(args.output_file) as kept_out, Appender(dropped_file) as drop_out:
            def flush() -> None:
                while pending and pending[0].outcome is not None:
                    task = pending.popleft()
                    out = task.outcome
                    if out.retry:   # the executor failed, not the code: a rerun retries it
                        log.warning("msgidx %d: not recorded, rerun to retry it (%s)",
                                    task.msgidx, out.retry)
                        counts[st.RETRY_LATER] += 1
                        continue
                    counts.update(out.pair_drops)
                    if out.kept is not None:
                        kept_out.write(out.kept)
                        counts[st.KEPT] += 1
                        counts[st.PAIRS_KEPT] += len(out.kept["ios"])
                    else:
                        drop_out.write(out.dropped)
                        counts[out.dropped["reason"]] += 1

            def step(block: bool) -> None:
                waiting = [t.future for t in pending if t.future is not None]
                if block and waiting:
                    if all(recheck.holds(f) for f in waiting):
                        recheck.flush()   # nothing else runs: send what is held now
                    wait(waiting, return_when=FIRST_COMPLETED)
                for task in pending:
                    if task.future is not None and task.future.done():
                        task.advance(recheck)
                flush()

            for lineno, record in records:
                idx = _msgidx(record, lineno)
                if idx in seen:
                    log.warning("%s: msgidx %d seen before in this file; skipped",
                                where(args.input_file, lineno), idx)
                    counts[st.DUPLICATE_ID] += 1
                    continue
                seen.add(idx)
                if idx in done:
                    counts[st.SKIP_DONE] += 1
                    continue
                task = SampleTask(record, idx, settings)
                task.start(gen_pool)
                pending.append(task)
                step(block=False)
                # a re-check held back for merging does not occupy a worker
                while (len(pending) >= buffered or sum(
                        t.future is not None and not recheck.holds(t.future)
                        for t in pending) >= window):
                    step(block=True)
            while pending:
                step(block=True)
    finally:
        for pool in [gen_pool, check_pool, *hash_pools]:
            pool.close()
        lock.close()
    counts[st.SKIP_BAD_LINE] += len(records.bad)
    cli.view_counts(counts, [p.executor for p in (check_pool, gen_pool) if p.executor])
    print(cli.summary(counts, "parse_gen_ios:"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.exit_on_sigterm()
    sys.exit(cli.run(main))
