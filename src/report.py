"""Report on a run: read the files every step wrote and say what happened.

In: the files of a run (flags below, defaulting to the README's names under ./data; a
file that is absent is reported as absent). The side files `<file>.failed.jsonl`
(inference failures) and `<file>.dropped.jsonl` (parse drops) are found next to their
main file unless named. Out: the report as Markdown (--output_md, also printed) and as
JSON (--output_json): the funnel from raw files to final records with the drop reasons
at each step, turn-1 and turn-2 pass rates for input and output prediction, verifier
statuses, token usage, cost (at the prices of --prices, else the built-in table) and
failed requests, I/O pairs per sample; with --figure, a PNG of the funnel and the pass
rates. Files are streamed: memory does not grow with the run.
With --funnel_of REPORT_JSON it only prints the funnel of an earlier report in a few lines,
as scripts/run_pipeline.sh does at its end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from annoy_datasync import cli, layout
from annoy_datasync.jsonl import InputError, atomic_text
from annoy_datasync.report import RunFiles, build_report, render_funnel, render_markdown

# flag -> (RunFiles field, help): a flag per role of the run's layout (--<role>_file; the
# transform prompts keep build_transform_msg.py's flag), then the side files
FILE_FLAGS = {
    **{("--raw_code_msg_file" if role == "transform_msg" else f"--{role}_file"): (role, about)
       for role, (_, about) in layout.FILES.items()},
    "--unified_failed_file": ("unified_failed", "failed transform requests"),
    "--dropped_file": ("parsed_dropped", "samples dropped by parsing"),
    "--gens_failed_file": ("gens_failed", "failed turn-1 requests"),
    "--rev_gens_failed_file": ("rev_gens_failed", "failed turn-2 requests"),
}


def funnel_of(path: str, replay: bool) -> str:
    """The funnel lines of the report an earlier run wrote with --output_json."""
    try:
        with open(path, encoding="utf-8") as fh:
            r = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: no report to read ({exc}); src/report.py writes it "
                         "(--output_json)") from None
    try:
        return render_funnel(r, replay=replay)
    except (KeyError, TypeError, AttributeError) as exc:   # JSON of another shape
        raise InputError(f"{path}: not a report of src/report.py (--output_json) as this "
                         f"version writes it ({type(exc).__name__}: {exc}); write it again "
                         "with src/report.py") from None


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    files = p.add_argument_group(
        "files of the run",
        "each defaults to the README's name; with --run_dir/--name, to DIR/<pattern with NAME>, "
        f"e.g. DIR/{layout.file_name('verified', 'NAME')} (a flag given explicitly always wins)")
    files.add_argument("--run_dir", default=None, metavar="DIR",
                       help="directory holding the run's files")
    files.add_argument("--name", default=None,
                       help=f"the run's name in its file names ({layout.METHOD_NAME} in "
                            f"{layout.file_name('unified', layout.METHOD_NAME)})")
    for flag, (dest, about) in FILE_FLAGS.items():
        default = layout.DEFAULTS.get(dest, "next to its main file")
        files.add_argument(flag, dest=dest, default=None, metavar="FILE",
                           help=f"{about} [{default}]")
    p.add_argument("--output_md", default=None,
                   help=f"Markdown report [RUN_DIR/report.md, or {layout.DATA_DIR}/report.md]")
    p.add_argument("--output_json", default=None,
                   help=f"JSON report [RUN_DIR/report.json, or {layout.DATA_DIR}/report.json]")
    p.add_argument("--figure", default=None,
                   help="also draw the funnel and pass rates to this PNG (e.g. figures/run.png)")
    p.add_argument("--title", default="Run report", help="title of the report and figure")
    p.add_argument("--quiet", action="store_true", help="do not print the Markdown")
    p.add_argument("--funnel_of", default=None, metavar="REPORT_JSON",
                   help="only print the funnel summary of an earlier report (its --output_json) "
                        "and stop: the lines scripts/run_pipeline.sh ends with")
    cli.add_price_args(p)
    p.add_argument("--replay", action="store_true",
                   help="with --funnel_of: the answers came from the replay server; warn when "
                        "it had no answer for some requests")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of flag combinations; fills in every file the flags leave unnamed."""
    if args.replay and args.funnel_of is None:
        p.error("--replay goes with --funnel_of")
    cli.check_price_args(p, args)
    if args.figure is not None and not args.figure.lower().endswith(".png"):
        p.error(f"--figure {args.figure}: the figure is a PNG; name it *.png")
    if (args.run_dir is None) != (args.name is None):
        p.error("--run_dir and --name go together (e.g. --run_dir data --name 1k)")
    if args.run_dir is not None:
        try:
            run = layout.run_files(args.run_dir, args.name)
        except ValueError as exc:
            p.error(f"--name: {exc}")
    else:
        run = layout.DEFAULTS
    for dest, _ in FILE_FLAGS.values():
        if getattr(args, dest) is None:
            setattr(args, dest, run.get(dest))
    out_dir = args.run_dir if args.run_dir is not None else layout.DATA_DIR
    args.output_md = args.output_md or os.path.join(out_dir, "report.md")
    args.output_json = args.output_json or os.path.join(out_dir, "report.json")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    cli.setup_logging()
    if args.funnel_of is not None:
        print(funnel_of(args.funnel_of, args.replay), end="")
        return 0
    files = RunFiles(**{dest: getattr(args, dest) for dest, _ in FILE_FLAGS.values()})
    report = build_report(files, args.prices, args.batch_discount)
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
