"""Small helpers shared by the step scripts: logging set-up, error exit, summary line,
the --prompts flag, and the read-convert-write loop of the steps that only rewrite records."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from . import status
from .executor import read_path_problem
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


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a step's ``main`` turning a `StepError` (an `InputError` too) into one line on
    stderr and exit code 1."""
    try:
        return main(argv)
    except StepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: what was written so far is kept; rerun to resume", file=sys.stderr)
        return 130


def python_path_arg(parser: argparse.ArgumentParser, value: str | None) -> str | None:
    """--python_path as given, or a bare name ("python") looked up on our PATH: the
    executed code gets a minimal PATH of its own. Unknown names are a usage error."""
    if not value or os.sep in value:
        return value
    found = shutil.which(value)
    if found is None:
        parser.error(f"--python_path {value}: not found on PATH")
    return found


def add_read_path_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--read_path", action="append", default=[], metavar="DIR",
                        help="a directory the executed code may read (read-only; repeatable), "
                             "e.g. a corpus or nltk_data; nothing else of the machine is visible")


def read_paths_arg(parser: argparse.ArgumentParser, values: Sequence[str]) -> list[str]:
    """--read_path values, each an existing directory (else a usage error)."""
    for value in values:
        problem = read_path_problem(value)
        if problem:
            parser.error(f"--read_path {value}: {problem}")
    return list(values)


def view_counts(counts: Counter, executors: Iterable[object]) -> None:
    """Count, once, that jobs saw the whole file system (the kernel refused namespaces)."""
    if any(getattr(ex, "view_restricted", True) is False for ex in executors):
        counts[status.VIEW_UNRESTRICTED] = 1


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that `finally` blocks and context managers run
    (temp files removed, executor workers closed) as on Ctrl-C."""
    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def add_prompts_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", metavar="FILE",
                        help="YAML file overriding prompt templates (default: the built-in ones)")


def convert_file(input_file: str | os.PathLike, output_file: str | os.PathLike,
                 convert: Callable[[int, dict, Counter], Iterable[dict]], name: str) -> Counter:
    """Stream `input_file` through ``convert(lineno, record, counts)``, which yields the
    output records of one input record, into `output_file`, written whole through a temp
    file (an error leaves no partial output). Torn or invalid lines are skipped and
    counted; the summary line ``name: counts`` goes to stderr. Returns the counts."""
    counts: Counter[str] = Counter()
    reader = read_jsonl(input_file)
    with atomic_write(output_file) as out:
        for lineno, rec in reader:
            for new in convert(lineno, rec, counts):
                out.write(new)
    counts[status.SKIP_BAD_LINE] += len(reader.bad)
    print(summary(counts, f"{name}:"), file=sys.stderr)
    return counts


__all__ = ["Counter", "add_prompts_arg", "add_read_path_arg", "convert_file", "exit_on_sigterm",
           "python_path_arg", "read_paths_arg", "run", "setup_logging", "summary", "view_counts"]
