"""Verify model predictions against the parsed samples.

In: --parsed_file (parse_gen_ios output) and --gens_file (inference output on spec messages:
lines with "itemid", "ioid", "io_pred" and the model's "output"). Out: --output_file, every
gens line that is a JSON object, in the same order, plus "res": {"status", "message"};
"success" is the only pass. A non-blank line that is not a JSON object cannot carry a verdict:
it goes to --rejects_file (its line number, why, and its text), so lines in = lines out +
lines rejected; the summary line names the rejects file when there are any.
The answer is read by --answer_rule: "method" (default) takes the last JSON object of the
answer (in the last ```json block if any), which must hold "output"/"input", else no answer;
"lenient" takes the last object holding the key and reads Python literals too (README).
Output predictions are compared as JSON with the recorded output (floats within a relative
1e-3); input predictions call the sample's function (its "funcname", main_solution when
absent) on the predicted input in the sandboxed executor, f(**input) for an object and
f(input) otherwise, and compare what it returns (a predicted input that is one of the
sample's recorded inputs gets the recorded output without running, unless --always_run);
the executions of one sample's code may run together in one sandboxed job (--batch), each
call in a fresh module namespace and random state, a call that hangs or crashes failing
alone. The output file is written whole through a temp file and renamed at the end, so it
may be the gens file itself: with --recheck load, lines whose "res" load could have caused
(a wall_timeout, or a timeout without "limit": "cpu" written under a wall-clock limit by
another implementation) are checked again and the others are copied as they are. A timeout
verdict of ours (the code used its --timeout of CPU time) carries "limit": "cpu" and is
final. Verdicts written by the original implementation (success, failed, no answer,
timeout, exception, error, AssertionError) are kept by --recheck and --resume_from as ours
are; those of other tools are checked again.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

from annoy_datasync import answers, cli, layout
from annoy_datasync import status as st
from annoy_datasync.executor import Executor, Limits
from annoy_datasync.jsonl import InputError, atomic_write, open_lines, read_jsonl, where, write_jsonl
from annoy_datasync.verification import CallBatcher, ParsedIndex, Verifier, identity, reusable

log = logging.getLogger("annoy_datasync.verify")


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    p.add_argument("--parsed_file", required=True, help="parsed samples (parse_gen_ios output)")
    p.add_argument("--gens_file", required=True, help="predictions to verify (JSONL)")
    p.add_argument("--output_file", required=True, help="verified predictions (JSONL)")
    p.add_argument("--rejects_file", default=None,
                   help="lines of the gens file that are not JSON objects, with their line "
                        f"numbers (default: {layout.side_file('<output_file>', layout.REJECTS)}); "
                        "written only when there are some, removed otherwise")
    p.add_argument("--answer_rule", choices=answers.RULES, default=answers.METHOD,
                   help="how the answer is read from the model's text: method (default; the "
                        "last JSON object, which must hold the key) or lenient (the last object "
                        "holding the key, Python literals accepted)")
    cli.add_executor_args(p)
    p.add_argument("--recheck", default="",
                   help="comma-separated statuses (e.g. 'wall_timeout') or 'load': the gens "
                        "file is already verified; check again only lines whose res.status is "
                        "one of these, or with 'load' one that load on the machine could have "
                        "caused (wall_timeout, and timeout without \"limit\": \"cpu\", "
                        "written by another tool under a wall-clock limit), or that have no "
                        "res, and copy the rest")
    p.add_argument("--resume_from", default=None,
                   help="an earlier verified file of the same gens file: its verdicts are reused "
                        "for lines that are identical at the same position (not_runnable and "
                        "statuses listed in --recheck are checked again)")
    p.add_argument("--always_run", action="store_true",
                   help="run the code even on a predicted input that is one of the sample's "
                        "recorded inputs (by default such a prediction gets the recorded output)")
    p.add_argument("--window", type=int, default=0,
                   help="predictions waiting on an execution at once (default: 64 per worker); "
                        "up to 8 times as many checked ones wait behind a slow one, to be "
                        "written in order")
    p.add_argument("--batch", type=int, default=None,
                   help="executions of one sample's code run in one sandboxed job at most "
                        "when the workers are busy, each as if alone; 1 = a job per execution "
                        "(default: 16 with --always_run, else 1: the few inputs that are then "
                        "run are often the slow ones, better run side by side)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _items(gens: Any, previous: Any, recheck: set[str], own_res: bool) -> Iterator[tuple]:
    """(file:line, record, verdict to reuse) for each gens record."""
    prev_iter = iter(previous) if previous is not None else None
    first = True
    for lineno, rec in gens:
        here = where(gens.path, lineno)
        if first and not any(k in rec for k in ("itemid", "ioid", "io_pred")):
            # a wrong file (parsed, messages ...) would get not_runnable on every line
            keys = ", ".join(sorted(rec)) or "none"
            raise InputError(f'{here}: no "itemid", "ioid" or "io_pred" field (keys: {keys}); '
                             "is this the predictions file (inference output on "
                             "build_spec_msg.py prompts)?")
        first = False
        reuse = None
        if own_res:
            reuse = reusable(rec.get("res"), recheck)
            rec = {k: v for k, v in rec.items() if k != "res"}
        elif prev_iter is not None:
            _, old = next(prev_iter, (None, None))
            if old is not None and identity(old) == identity(rec):
                # not_runnable may be passing (a worker that died, a record fixed since):
                # checking it again is cheap
                reuse = reusable(old.get("res"), recheck | {st.NOT_RUNNABLE})
        yield here, rec, reuse


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    cli.check_executor_args(parser, args)
    if args.batch is None:
        args.batch = 16 if args.always_run else 1
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    recheck = {s.strip() for s in args.recheck.split(",") if s.strip()}
    unknown = recheck - set(st.VERDICTS) - set(st.ORIGINAL_VERDICTS) - {st.RECHECK_LOAD}
    if unknown:
        parser.error(f"--recheck: unknown status {', '.join(sorted(unknown))} "
                     f"(known: {', '.join(st.VERDICTS)}; or {st.RECHECK_LOAD})")

    gens = read_jsonl(args.gens_file)
    if (recheck and not args.resume_from and os.path.exists(args.output_file)
            and os.path.samefile(args.output_file, args.gens_file)):
        # re-checking a verified file in place: leave it untouched when nothing qualifies
        statuses: Counter[str] = Counter()
        for _, rec in gens:
            prev = reusable(rec.get("res"), recheck)
            statuses[prev["status"] if prev else "to_recheck"] += 1
        if not statuses["to_recheck"]:
            print(cli.summary(statuses, "verify: nothing to re-check:"), file=sys.stderr)
            return 0
        gens = read_jsonl(args.gens_file)
    parsed = ParsedIndex(args.parsed_file)
    previous = read_jsonl(args.resume_from) if args.resume_from and os.path.exists(args.resume_from) else None
    own_res = bool(recheck) and previous is None
    limits = Limits(cpu_time=args.timeout)   # and as much idle time (the wall backstop)

    executor: Executor | None = None

    def run_calls(code: str, inputs: list, func: str):
        nonlocal executor
        if executor is None:  # started on the first input prediction only
            executor = Executor(python_path=args.python_path, run_path=args.run_path,
                                workers=args.workers, limits=limits, read_paths=args.read_path)
        # several predictions of one sample in one job, each call as if it ran alone
        return executor.run_calls(code, inputs, func=func, fresh=True)

    batcher = CallBatcher(run_calls, max_calls=args.batch, parallel=args.workers)
    verifier = Verifier(parsed, batcher.submit, timeout_s=args.timeout,
                        window=args.window or 64 * args.workers,
                        use_recorded=not args.always_run, flush=batcher.flush,
                        answer_rule=args.answer_rule)
    try:
        with atomic_write(args.output_file) as out:
            for rec in verifier.run(_items(gens, previous, recheck, own_res)):
                out.write(rec)
    finally:
        if executor is not None:
            executor.close()
        parsed.close()

    rejects = args.rejects_file or layout.side_file(args.output_file, layout.REJECTS)
    write_rejects(args.gens_file, gens.bad, rejects)
    counts = Counter(verifier.counts)
    counts[st.REJECTED] += len(gens.bad)
    counts[st.EXECUTIONS] = verifier.cache.runs
    counts[st.CACHE_HITS] = verifier.cache.hits
    counts[st.RECORDED_HITS] = verifier.recorded_hits
    cli.view_counts(counts, [executor] if executor is not None else [])
    line = cli.summary(counts, cli.summary_head("verify", answer_rule=args.answer_rule))
    if gens.bad:
        line += f" (rejected lines in {rejects})"
    print(line, file=sys.stderr)
    return 0


def write_rejects(gens_path: str, bad: list[tuple[int, str]], rejects_path: str) -> None:
    """Write the gens lines that are not JSON objects to `rejects_path` ({"line", "reason",
    "text"} each), or remove an old rejects file when there are none."""
    if not bad:
        if os.path.exists(rejects_path):
            os.remove(rejects_path)
        return
    why = dict(bad)
    rows = []
    with open_lines(gens_path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno in why:
                rows.append({"file": gens_path, "line": lineno, "reason": why[lineno],
                             "text": raw.decode("utf-8", "replace").rstrip("\r\n")})
    write_jsonl(rejects_path, rows)


if __name__ == "__main__":
    cli.exit_on_sigterm()
    sys.exit(cli.run(main))
