"""Step 6.4: assemble the final dataset from the verified first and second turns.

Inputs: --result_file_turn1, the verified first-turn predictions (each with "messages",
  "output", "index" and "res": {"status", "message"}); --result_file_turn2, the verified
  second-turn answers (each with "output", "res" and "original_id", the "index" of the
  first-turn record it revises). The two are joined on original_id = index, never by
  line position.
Output (--output_file): JSONL in the released format, in first-turn order:
  {"prompt": the first-turn user prompt, "turn_1": first answer, "feedback_1": the
   verifier's message on it, "turn_2": second answer or null, "feedback_2": its verifier
   message or null, "itemid", "ioid", "io_pred"}.
  As the method assembles it: every turn-1 success and every second-turn record, passed
  or failed. Passed in turn 1: turn_2 and feedback_2 are null. Failed in turn 1: all four
  are set, feedback_2 saying whether the revision passed; a record that failed both turns
  also carries "failed": true (export.py leaves those out unless --keep_failed).
  --drop_failed drops them here instead. A failed first turn with no second-turn record (no model
  answer to revise, a not_runnable verdict) is dropped and counted.
  Only "success" passes, so verified files of the original implementation (statuses
  success, failed, no answer, timeout, exception, error, AssertionError) work as they are.
Written through a temp file: a failed run leaves no partial output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter

from annoy_datasync import cli, status
from annoy_datasync.jsonl import (LineIndex, atomic_write, loads_line, read_jsonl, require,
                                  require_messages, require_type, where)
from annoy_datasync.verification import read_verdict

log = logging.getLogger("annoy_datasync.assemble_spec_demo")

EXTRA_FIELDS = ("itemid", "ioid", "io_pred")


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    cli.add_file_arg(p, "--result_file_turn1", "verified", "verified first-turn predictions")
    cli.add_file_arg(p, "--result_file_turn2", "rev_verified", "verified second-turn answers")
    cli.add_file_arg(p, "--output_file", "final", "output: final dataset JSONL")
    p.add_argument("--drop_failed", action="store_true",
                   help='leave out the samples that failed both turns (by default they are '
                        'kept, marked "failed": true, as the method keeps them)')
    return p


def answer(rec: dict, path: str, lineno: int) -> str:
    require(rec, ["output"], path, lineno)
    require_type(rec["output"], str, "output", path, lineno)
    return rec["output"]


def first_prompt(rec: dict, path: str, lineno: int) -> str:
    """The first user turn: the prompt of the final record."""
    msgs = require_messages(rec, path, lineno, prompt_last=True)
    return next(m["content"] for m in msgs if m["role"] == "user")


def load_turn2(path: str, counts: Counter) -> dict[int, tuple[bool, int]]:
    """original_id -> (passed, lineno) of each second-turn record, every record checked."""
    turn2: dict[int, tuple[bool, int]] = {}
    reader = read_jsonl(path)
    for lineno, rec in reader:
        require(rec, ["original_id"], path, lineno)
        require_type(rec["original_id"], int, "original_id", path, lineno)
        passed = read_verdict(rec, path, lineno).passed
        answer(rec, path, lineno)
        oid = rec["original_id"]
        if oid in turn2:
            log.warning("%s: original_id %d already seen on line %d; keeping the first",
                        where(path, lineno), oid, turn2[oid][1])
            counts["turn2_" + status.DUPLICATE_ID] += 1
            continue
        turn2[oid] = (passed, lineno)
    counts[status.SKIP_BAD_LINE] += len(reader.bad)
    return turn2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging()
    counts: Counter[str] = Counter()
    turn2 = load_turn2(args.result_file_turn2, counts)
    used: set[int] = set()
    seen: set[int] = set()
    path = args.result_file_turn1
    reader = read_jsonl(path)
    with LineIndex(args.result_file_turn2) as lines2, atomic_write(args.output_file) as out:
        for lineno, rec in reader:
            require(rec, ["index"], path, lineno)
            require_type(rec["index"], int, "index", path, lineno)
            idx = rec["index"]
            if idx in seen:
                log.warning("%s: index %d already seen; skipped", where(path, lineno), idx)
                counts["turn1_" + status.DUPLICATE_ID] += 1
                continue
            seen.add(idx)
            verdict1 = read_verdict(rec, path, lineno)
            passed1 = verdict1.passed
            if not passed1 and not isinstance(rec.get("output"), str):
                # a failure without a model answer: verify.py gave it no_answer (null) or
                # not_runnable (another type), build_spec_rev_msg.py skipped it; no turn 2
                counts[status.SKIP_NO_ANSWER_TEXT] += 1
                continue
            final = {"prompt": first_prompt(rec, path, lineno), "turn_1": answer(rec, path, lineno),
                     "feedback_1": verdict1.message, "turn_2": None, "feedback_2": None}
            final.update({k: rec[k] for k in EXTRA_FIELDS if k in rec})
            if passed1:
                counts[status.KEPT_TURN1] += 1
            else:
                second = turn2.get(idx)
                if second is not None:
                    used.add(idx)
                    rec2 = loads_line(lines2.line(second[1]))
                    final["turn_2"] = rec2["output"]
                    final["feedback_2"] = read_verdict(rec2, args.result_file_turn2, second[1]).message
                if second is not None and second[0]:
                    counts[status.KEPT_TURN2] += 1
                elif second is None:
                    counts[status.DROP_NO_TURN2] += 1
                    continue
                elif args.drop_failed:
                    counts[status.DROP_BOTH_FAILED] += 1
                    continue
                else:
                    final["failed"] = True
                    counts[status.KEPT_FAILED] += 1
            out.write(final)
        counts[status.SKIP_BAD_LINE] += len(reader.bad)
        unmatched = sorted(set(turn2) - used)
        if unmatched:
            log.warning("%s: %d record(s) match no failed first-turn index in %s (e.g. original_id %d)",
                        args.result_file_turn2, len(unmatched), path, unmatched[0])
            counts[status.TURN2_UNMATCHED] += len(unmatched)
    print(cli.summary(counts, "assemble_spec_demo:"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
