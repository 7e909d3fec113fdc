"""Small helpers shared by the step scripts: the parser and the flags several steps share
(files of a run, the executor's flags, --prompts, the price flags), logging set-up, error
exit, summary line, and the read-convert-write loop of the steps that only rewrite records."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from . import layout, status
from .executor import ExecutorFailed, read_path_problem
from .jsonl import StepError, atomic_write, read_jsonl


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )


def summary(counts: Mapping[str, int], prefix: str = "") -> str:
    """One line of counts by reason, most common first: ``kept=10 dropped_x=3`` (spaces in a
    reason, as in the original implementation's "no answer", become ``_``)."""
    merged: dict[str, int] = {}
    for k, v in counts.items():
        if v:
            key = k.replace(" ", "_")
            merged[key] = merged.get(key, 0) + v
    items = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
    body = " ".join(f"{k}={v}" for k, v in items) or "nothing"
    return f"{prefix}{body}" if not prefix else f"{prefix} {body}"


def summary_head(step: str, **settings: object) -> str:
    """The start of a step's summary line: its name, then the settings that decide what its
    counts mean (``verify: answer_rule=method``)."""
    return " ".join([f"{step}:", *(f"{k}={v}" for k, v in settings.items())])


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a step's ``main`` turning a `StepError` (an `InputError` too) or an
    `ExecutorFailed` (its sandbox workers did not start or could not be replaced) into one
    line on stderr and exit code 1."""
    try:
        return main(argv)
    except (StepError, ExecutorFailed) as exc:
        # a message may carry text from elsewhere (a YAML parser, a server's error body)
        # that spans lines; a log or a driver reads one line per error
        one_line = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        print(f"error: {one_line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: what was written so far is kept; rerun to resume", file=sys.stderr)
        return 130


def new_parser(doc: str | None) -> argparse.ArgumentParser:
    """A step's parser: its module docstring, kept as written, is the --help text."""
    return argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_file_arg(parser: argparse.ArgumentParser, flag: str, role: str, about: str) -> None:
    """A file flag whose default is the file of `role` in the method README's run
    (`layout.DEFAULTS`)."""
    parser.add_argument(flag, default=layout.DEFAULTS[role], metavar="FILE",
                        help=f"{about} (default: %(default)s)")


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    """The flags of the steps that run model-written code in the sandboxed executor;
    `check_executor_args` checks them after parsing."""
    parser.add_argument("--python_path", default=None,
                        help="interpreter that runs the model-written code (default: this one)")
    parser.add_argument("--run_path", default=layout.RUN_PATH,
                        help="where each execution gets its own scratch directory "
                             "(default: %(default)s)")
    parser.add_argument("--read_path", action="append", default=[], metavar="DIR",
                        help="a directory the executed code may read (read-only; repeatable), "
                             "e.g. a corpus or nltk_data; nothing else of the machine is visible")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes per executor pool (default: the number of CPUs)")
    parser.add_argument("--timeout", type=float, default=layout.CPU_BUDGET,
                        help="CPU budget in seconds per execution, counting every process and "
                             "thread of it (default %(default)g): code computing longer is a "
                             "timeout, the same on any machine; code that stops computing "
                             "(sleeps, blocks) for as long is stopped too (wall_timeout)")


def check_executor_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors for the flags of `add_executor_args`; resolves --python_path."""
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    args.python_path = _python_path(parser, args.python_path)
    args.read_path = _read_paths(parser, args.read_path)


def _python_path(parser: argparse.ArgumentParser, value: str | None) -> str | None:
    """--python_path as given, or a bare name ("python") looked up on our PATH: the
    executed code gets a minimal PATH of its own. Unknown names are a usage error."""
    if not value or os.sep in value:
        return value
    found = shutil.which(value)
    if found is None:
        parser.error(f"--python_path {value}: not found on PATH")
    return found


def _read_paths(parser: argparse.ArgumentParser, values: Sequence[str]) -> list[str]:
    """--read_path values, each an existing directory (else a usage error)."""
    for value in values:
        problem = read_path_problem(value)
        if problem:
            parser.error(f"--read_path {value}: {problem}")
    return list(values)


def view_counts(counts: Counter, executors: Iterable[object]) -> None:
    """Count, once each, that jobs saw the whole file system (the kernel refused namespaces)
    and that they ran without the system-call filter (no seccomp, another architecture)."""
    executors = list(executors)
    if any(getattr(ex, "view_restricted", True) is False for ex in executors):
        counts[status.VIEW_UNRESTRICTED] = 1
    if any(getattr(ex, "syscalls_filtered", True) is False for ex in executors):
        counts[status.SYSCALLS_UNFILTERED] = 1


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that `finally` blocks and context managers run
    (temp files removed, executor workers closed) as on Ctrl-C."""
    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def add_price_args(parser: argparse.ArgumentParser,
                   discount_to: argparse._ActionsContainer | None = None) -> None:
    """--prices and --batch_discount, the same for the inference step (its summary's cost)
    and the report (the run's cost); `check_price_args` checks them after parsing.
    `discount_to`: the argument group listing --batch_discount (default: `parser`)."""
    parser.add_argument("--prices", default=None, metavar="FILE",
                        help="YAML price table to use instead of src/annoy_datasync/prices.yaml")
    (discount_to or parser).add_argument(
        "--batch_discount", metavar="F", type=float, default=None,
        help="share of the listed price that an answer through a Batch API saves, for every "
             "model (default: the price table's batch_discount of the model, else 0.5)")


def check_price_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.batch_discount is not None and not 0 <= args.batch_discount <= 1:
        parser.error("--batch_discount is a share of the price, between 0 and 1 (0.5: half)")


def add_prompts_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", metavar="FILE",
                        help="YAML file overriding prompt templates (default: the built-in ones)")


def convert_file(input_file: str | os.PathLike, output_file: str | os.PathLike,
                 convert: Callable[[int, dict, Counter], Iterable[dict]], name: str,
                 **settings: object) -> Counter:
    """Stream `input_file` through ``convert(lineno, record, counts)``, which yields the
    output records of one input record, into `output_file`, written whole through a temp
    file (an error leaves no partial output). Torn or invalid lines are skipped and
    counted; the summary line ``name: settings counts`` (`summary_head`) goes to stderr.
    Returns the counts."""
    counts: Counter[str] = Counter()
    reader = read_jsonl(input_file)
    with atomic_write(output_file) as out:
        for lineno, rec in reader:
            for new in convert(lineno, rec, counts):
                out.write(new)
    counts[status.SKIP_BAD_LINE] += len(reader.bad)
    print(summary(counts, summary_head(name, **settings)), file=sys.stderr)
    return counts


__all__ = ["add_executor_args", "add_file_arg", "add_price_args", "add_prompts_arg",
           "check_executor_args", "check_price_args",
           "convert_file", "exit_on_sigterm", "new_parser", "run", "setup_logging", "summary",
           "summary_head", "view_counts"]
