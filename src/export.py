"""Export the final dataset for training: ShareGPT or OpenAI-messages JSONL.

In (--input_file): the final file of assemble_spec_demo.py, one record per line
  {"prompt", "turn_1", "feedback_1", "turn_2", "feedback_2", ...}.
Out (--output_file): one conversation per line. A record that passed in turn 1 becomes
  one exchange (prompt -> turn_1); a revised one becomes two (prompt -> turn_1, revision
  request -> turn_2), or with --drop_feedback only prompt -> turn_2. --format sharegpt
  writes {"conversations": [{"from": "human"|"gpt", "value"}]}, --format openai writes
  {"messages": [{"role": "user"|"assistant", "content"}]}. The revision request is the
  "revision" template of the prompts (what the model saw in turn 2; --raw_feedback keeps
  the verifier's message alone). --drop_tip cuts the reference-code tip ("refcode_tip"
  template, or the text from --tip_marker on) off the prompts. Records marked
  "failed": true (failed both turns: assemble_spec_demo.py keeps them, as the method does,
  unless --drop_failed) are left out here unless --keep_failed: their last answer is wrong.
Also (--dataset_info): adds an entry for the output to LLaMA-Factory's dataset_info.json
  (created if missing, other entries kept), so `dataset: <name>` works as is.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

from annoy_datasync import cli, layout, status
from annoy_datasync import export as ex
from annoy_datasync.jsonl import InputError, atomic_write, read_jsonl
from annoy_datasync.prompts import load_prompts


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    cli.add_file_arg(p, "--input_file", "final", "final dataset (assemble_spec_demo.py output)")
    p.add_argument("--output_file", default=None,
                   help=f"exported JSONL (default: {default_output('<format>')})")
    p.add_argument("--format", choices=ex.FORMATS, default="sharegpt",
                   help="sharegpt (from/value) or openai (role/content) [%(default)s]")
    p.add_argument("--drop_tip", action="store_true",
                   help="cut the reference-code tip off the prompts")
    p.add_argument("--tip_marker", default=None,
                   help="with --drop_tip: cut each prompt where this text last starts, instead "
                        "of matching the refcode_tip template (for files built with other prompts)")
    p.add_argument("--drop_feedback", action="store_true",
                   help="revised records: keep only prompt -> turn_2 (no turn_1, no feedback)")
    p.add_argument("--raw_feedback", action="store_true",
                   help="second user turn = the verifier's message alone, not the revision template")
    p.add_argument("--keep_failed", action="store_true",
                   help='also export records marked "failed": true (their last answer is '
                        'wrong: not for plain fine-tuning)')
    p.add_argument("--system", default=None, help="a system prompt to put on every conversation")
    p.add_argument("--prompts", metavar="FILE", default=None,
                   help="the prompts file the data was built with (refcode_tip, revision)")
    p.add_argument("--dataset_info", default=None,
                   help="LLaMA-Factory dataset_info.json to add the entry to "
                        "[dataset_info.json next to --output_file]")
    p.add_argument("--dataset_name", default=None,
                   help="name of the entry [the output file name without extension]")
    p.add_argument("--no_dataset_info", action="store_true", help="do not write dataset_info.json")
    return p


def default_output(fmt: str) -> str:
    return os.path.join(layout.DATA_DIR, "export", f"annoy_{fmt}.jsonl")


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of flag combinations; fills in the default --output_file."""
    if args.output_file is None:
        args.output_file = default_output(args.format)
    if os.path.abspath(args.output_file) == os.path.abspath(args.input_file):
        p.error("--output_file must differ from --input_file")
    if args.tip_marker is not None and not args.tip_marker:
        p.error("--tip_marker must not be empty")
    if args.tip_marker and not args.drop_tip:
        p.error("--tip_marker is used only with --drop_tip")
    if args.raw_feedback and args.drop_feedback:
        p.error("--raw_feedback has no effect with --drop_feedback (there is no feedback turn)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    cli.setup_logging()
    prompts = load_prompts(args.prompts)
    tip = None
    if args.drop_tip:
        try:
            tip = (ex.TipRemover(marker=args.tip_marker) if args.tip_marker
                   else ex.TipRemover(template=prompts["refcode_tip"]))
        except ValueError as exc:
            raise InputError(f"{prompts.origin['refcode_tip']}: refcode_tip: {exc} "
                                "(--tip_marker)") from None
    revision = None if args.raw_feedback else prompts.revision

    counts: Counter[str] = Counter()
    reader = read_jsonl(args.input_file)
    with atomic_write(args.output_file) as out:
        for lineno, rec in reader:
            if rec.get("failed") is True and not args.keep_failed:
                counts[status.SKIP_FAILED] += 1
                continue
            turns, kind, removed = ex.conversation(
                rec, args.input_file, lineno, revision=revision,
                drop_feedback=args.drop_feedback, tip=tip)
            if any(not text.strip() for _, text in turns):
                counts[status.SKIP_EMPTY_TEXT] += 1
                continue
            if removed is not None:
                counts[status.TIP_REMOVED if removed else status.TIP_NOT_FOUND] += 1
            out.write(ex.render(turns, args.format, args.system))
            counts[kind] += 1
    counts[status.SKIP_BAD_LINE] += len(reader.bad)

    if not args.no_dataset_info:
        info_path = args.dataset_info or os.path.join(
            os.path.dirname(args.output_file) or ".", "dataset_info.json")
        name = args.dataset_name or os.path.splitext(os.path.basename(args.output_file))[0]
        file_name = os.path.relpath(args.output_file, os.path.dirname(info_path) or ".")
        ex.update_dataset_info(info_path, name,
                               ex.dataset_info_entry(file_name, args.format, bool(args.system)))
        print(f'export: entry "{name}" in {info_path}', file=sys.stderr)
    print(cli.summary(counts, "export:"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
