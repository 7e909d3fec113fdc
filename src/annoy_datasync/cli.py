"""Small helpers shared by the step scripts: logging set-up, error exit, summary line."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from .jsonl import InputError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )


def summary(counts: Mapping[str, int], prefix: str = "") -> str:
    """One line of counts by reason, most common first: ``kept=10 dropped_x=3``."""
    items = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))
    body = " ".join(f"{k}={v}" for k, v in items) or "nothing"
    return f"{prefix}{body}" if not prefix else f"{prefix} {body}"


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a step's ``main`` turning `InputError` into one line on stderr and exit code 1."""
    try:
        return main(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: what was written so far is kept; rerun to resume", file=sys.stderr)
        return 130


__all__ = ["Counter", "run", "setup_logging", "summary"]
