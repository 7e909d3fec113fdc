"""Report on a run: read the files every step wrote and say what happened.

In: the files of a run (flags below, defaulting to the README's names under ./data; a
file that is absent is reported as absent). The side files `<file>.failed.jsonl`
(inference failures) and `<file>.dropped.jsonl` (parse drops) are found next to their
main file unless named. Out: the report as Markdown (--output_md, also printed) and as
JSON (--output_json): the funnel from raw files to final records with the drop reasons
at each step, turn-1 and turn-2 pass rates for input and output prediction, verifier
statuses, token usage, cost and failed requests, I/O pairs per sample; with --figure, a PNG of
the funnel and the pass rates. Files are streamed: memory does not grow with the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from annoy_datasync import cli
from annoy_datasync.jsonl import atomic_text
from annoy_datasync.report import RunFiles, build_report, render_markdown

# file names of a run named NAME in --run_dir (the README's pattern, NAME = 1k there)
PATTERNS = {
    "raw_code": "rawcode_{name}.jsonl", "transform_msg": "rawcode_{name}_msg.jsonl",
    "unified": "rawcode_{name}_unified.jsonl", "parsed": "rawcode_{name}_parsed.jsonl",
    "spec_msg": "spec_{name}_msg.jsonl", "gens": "spec_{name}_gens.jsonl",
    "verified": "spec_{name}_gens_verified.jsonl", "rev_msg": "spec_{name}_msg_rev.jsonl",
    "rev_gens": "spec_{name}_gens_rev.jsonl",
    "rev_verified": "spec_{name}_gens_rev_verified.jsonl", "final": "spec_{name}_final.jsonl",
}

# flag -> (RunFiles field, default, help)
FILE_FLAGS = (
    ("--raw_code_file", "raw_code", "data/rawcode_1k.jsonl", "raw code (step 1.1 input)"),
    ("--raw_code_msg_file", "transform_msg", "data/rawcode_1k_msg.jsonl", "transform prompts (1.1)"),
    ("--unified_file", "unified", "data/rawcode_1k_unified.jsonl", "unified responses (1.2)"),
    ("--unified_failed_file", "unified_failed", None,
     "failed transform requests (default: next to --unified_file)"),
    ("--parsed_file", "parsed", "data/rawcode_1k_parsed.jsonl", "parsed samples (2)"),
    ("--dropped_file", "parsed_dropped", None,
     "samples dropped by parsing (default: next to --parsed_file)"),
    ("--spec_msg_file", "spec_msg", "data/spec_1k_msg.jsonl", "prediction prompts (3)"),
    ("--gens_file", "gens", "data/spec_1k_gens.jsonl", "turn-1 answers (4)"),
    ("--gens_failed_file", "gens_failed", None,
     "failed turn-1 requests (default: next to --gens_file)"),
    ("--verified_file", "verified", "data/spec_1k_gens_verified.jsonl", "turn-1 verdicts (5)"),
    ("--rev_msg_file", "rev_msg", "data/spec_1k_msg_rev.jsonl", "revision prompts (6.1)"),
    ("--rev_gens_file", "rev_gens", "data/spec_1k_gens_rev.jsonl", "turn-2 answers (6.2)"),
    ("--rev_gens_failed_file", "rev_gens_failed", None,
     "failed turn-2 requests (default: next to --rev_gens_file)"),
    ("--rev_verified_file", "rev_verified", "data/spec_1k_gens_rev_verified.jsonl",
     "turn-2 verdicts (6.3)"),
    ("--final_file", "final", "data/spec_demo_final.jsonl", "final dataset (6.4)"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    files = p.add_argument_group(
        "files of the run",
        "each defaults to the README's name; with --run_dir/--name, to DIR/<pattern with NAME>, "
        "e.g. DIR/spec_NAME_gens_verified.jsonl (a flag given explicitly always wins)")
    files.add_argument("--run_dir", default=None, metavar="DIR",
                       help="directory holding the run's files")
    files.add_argument("--name", default=None,
                       help="the run's name in its file names (1k in rawcode_1k_unified.jsonl)")
    for flag, dest, default, help_ in FILE_FLAGS:
        files.add_argument(flag, dest=dest, default=None, metavar="FILE",
                           help=help_ + (f" [{default}]" if default else ""))
    p.add_argument("--output_md", default=None,
                   help="Markdown report [RUN_DIR/report.md, or data/report.md]")
    p.add_argument("--output_json", default=None,
                   help="JSON report [RUN_DIR/report.json, or data/report.json]")
    p.add_argument("--figure", default=None,
                   help="also draw the funnel and pass rates to this PNG (e.g. figures/run.png)")
    p.add_argument("--title", default="Run report", help="title of the report and figure")
    p.add_argument("--quiet", action="store_true", help="do not print the Markdown")
    args = p.parse_args(argv)
    if args.figure is not None and not args.figure.lower().endswith(".png"):
        p.error(f"--figure {args.figure}: the figure is a PNG; name it *.png")
    if (args.run_dir is None) != (args.name is None):
        p.error("--run_dir and --name go together (e.g. --run_dir data --name 1k)")
    for _, dest, default, _ in FILE_FLAGS:
        if getattr(args, dest) is None:
            if args.run_dir is not None and dest in PATTERNS:
                default = os.path.join(args.run_dir, PATTERNS[dest].format(name=args.name))
            setattr(args, dest, default)
    out_dir = args.run_dir if args.run_dir is not None else "data"
    args.output_md = args.output_md or os.path.join(out_dir, "report.md")
    args.output_json = args.output_json or os.path.join(out_dir, "report.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli.setup_logging()
    files = RunFiles(**{dest: getattr(args, dest) for _, dest, _, _ in FILE_FLAGS})
    report = build_report(files)
    md = render_markdown(report, title=args.title)
    with atomic_text(args.output_json) as fh:     # a reader never sees half a report
        fh.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    with atomic_text(args.output_md) as fh:
        fh.write(md)
    if args.figure:
        from annoy_datasync.report_plot import plot_report  # matplotlib only when asked
        plot_report(report, args.figure, title=args.title)
    if not args.quiet:
        print(md)
    present = sum(1 for info in report["files"].values() if info["present"])
    absent = len(report["files"]) - present
    final = report["final"]["total"]
    print(cli.summary({"files_read": present, "files_absent": absent,
                       "final_records": final or 0}, "report:"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
