"""Helpers shared by the step tests."""

from __future__ import annotations

import json
from pathlib import Path

from annoy_datasync import cli


def read(path) -> list:
    """The records of a JSONL file written by a step (the file must exist)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def run_step(main, argv, capsys) -> tuple[int, str]:
    """Run a step's `main` as the command line would (errors become exit codes); returns
    its exit code and what it printed on stderr."""
    rc = cli.run(main, [str(a) for a in argv])
    return rc, capsys.readouterr().err
