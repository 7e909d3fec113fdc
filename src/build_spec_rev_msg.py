"""Step 6.1: turn every failed prediction into a revision conversation for a second turn.

Input  (--input_file): verified JSONL (verify.py / scripts/pipeline_check.sh): a prediction
  prompt record plus the model's "output", the inference "index" and
  "res": {"status", "message"}.
Output (--output_file): JSONL, one line per input record whose res.status is not
  "success":
  {"messages": [<the prompt turn(s)>, {"role": "assistant", "content": <the answer>},
                {"role": "user", "content": <revision prompt wrapping res.message>}],
   "itemid", "ioid", "io_pred" (kept), "retry_count": 1,
   "history_errors": [<res of the failed turn>], "original_id": <"index" of the failed
   turn-1 record>, ...other unknown fields kept}.
The fields written by inference and verification (output, index, model, reasoning,
finish_reason, usage, res) are not copied: they now live in messages, history_errors and
original_id, and the next inference and verification write their own. Fed a verified
second-turn file, it builds a third turn: retry_count grows, history_errors accumulates and
original_id stays the first turn's. Passed records are skipped, and so are failed records
without a model answer to revise and "not_runnable" verdicts, which are the pipeline's
fault, not the model's (all counted). Written through a temp file: a failed run
leaves no partial output. --prompts FILE replaces the "revision" template.

Verified files of the original implementation work too: its statuses (success, failed,
no answer, timeout, exception, error, AssertionError) mean what they mean there: only
"success" passes. A no-answer verdict without a message (the original writes none) gets
the feedback verify would give, from the answer read by --answer_rule (method, the
default, or lenient): it asks for the answer's format.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator

from annoy_datasync import answers, cli, status
from annoy_datasync.jsonl import require, require_messages, require_type
from annoy_datasync.prompts import load_prompts
from annoy_datasync.verification import Verdict, msg_no_answer, read_verdict

# written by batched_api_inference.py and verify.py for one turn; not carried to the next
PER_TURN_FIELDS = ("output", "index", "model", "reasoning", "finish_reason", "usage", "res")


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    cli.add_file_arg(p, "--input_file", "verified", "verified predictions JSONL")
    cli.add_file_arg(p, "--output_file", "rev_msg", "output: revision conversations JSONL")
    p.add_argument("--answer_rule", choices=answers.RULES, default=answers.METHOD,
                   help="how an answer is read when a no-answer verdict has no message to "
                        "reuse (default: %(default)s; see verify.py)")
    cli.add_prompts_arg(p)
    return p


def check_history(rec: dict, path: str, lineno: int) -> None:
    """The fields a revision carries on: the first turn's id and the earlier rounds."""
    if rec.get("original_id") is None:
        require(rec, ["index"], path, lineno)
        require_type(rec["index"], int, "index", path, lineno)
    else:
        require_type(rec["original_id"], int, "original_id", path, lineno)
    for field, typ in (("retry_count", int), ("history_errors", list)):
        if rec.get(field) is not None:
            require_type(rec[field], typ, field, path, lineno)


def answer_text(rec: dict, path: str, lineno: int) -> str | None:
    """The model's answer, or None when the record has none (missing, null or blank)."""
    out = rec.get("output")
    if out is None:
        return None
    require_type(out, str, "output", path, lineno)
    return out if out.strip() else None


def revise(rec: dict, res: dict, msgs: list, answer: str, feedback: str) -> dict:
    new = {k: v for k, v in rec.items() if k not in PER_TURN_FIELDS}
    new["messages"] = msgs + [{"role": "assistant", "content": answer},
                              {"role": "user", "content": feedback}]
    new["retry_count"] = (rec.get("retry_count") or 0) + 1
    new["history_errors"] = list(rec.get("history_errors") or []) + [res]
    new["original_id"] = rec["original_id"] if rec.get("original_id") is not None else rec["index"]
    return new


def default_feedback(rec: dict, verdict: Verdict, answer: str, rule: str) -> str:
    """Feedback for a verdict that came without a message: for no answer, what verify says
    (why no answer could be read, and the format to use); else the verdict named."""
    if verdict.no_answer:
        key = "input" if rec.get("io_pred") == "i" else "output"
        return msg_no_answer(key, answers.extract_answer(answer, key, rule).reason)
    return f"Your answer was not accepted ({verdict.status})."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging()
    prompts = load_prompts(args.prompts)
    path = args.input_file

    def convert(lineno: int, rec: dict, counts: Counter) -> Iterator[dict]:
        verdict = read_verdict(rec, path, lineno)
        if verdict.passed:
            counts[status.SKIP_PASSED] += 1
            return
        if verdict.status == status.NOT_RUNNABLE:
            # the pipeline's fault (record without a sample, code that cannot run), not
            # the model's: asking it to revise would teach it nothing
            counts[status.SKIP_NOT_RUNNABLE] += 1
            return
        msgs = require_messages(rec, path, lineno, prompt_last=True)
        check_history(rec, path, lineno)
        answer = answer_text(rec, path, lineno)
        if answer is None:
            counts[status.SKIP_NO_ANSWER_TEXT] += 1
            return
        # an empty verifier message still gets a revision turn, naming the verdict
        feedback = verdict.message or default_feedback(rec, verdict, answer, args.answer_rule)
        counts[f"included_{verdict.status.replace(' ', '_')}"] += 1
        yield revise(rec, verdict.res, msgs, answer, prompts.revision(feedback))

    cli.convert_file(path, args.output_file, convert, "build_spec_rev_msg",
                     answer_rule=args.answer_rule)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
