"""The only way model-written code runs (API fixed; implementation in progress).

A pool of warm worker processes under ``python_path`` that preload common modules and fork
one sandboxed child per job. Results come back as JSON values on a framed pipe and are
judged by the caller, never by the child.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PRELOAD = ("math", "random", "collections", "itertools", "functools", "heapq",
                   "bisect", "re", "string", "json", "copy", "fractions", "decimal",
                   "statistics", "datetime", "numpy", "numpy.random")


@dataclass(frozen=True)
class Limits:
    wall_time: float = 5.0      # seconds per call (parent SIGKILLs the job's whole tree after)
    cpu_time: float = 5.0       # seconds of CPU per call (RLIMIT_CPU)
    memory_mb: int = 2048       # address space (RLIMIT_AS)
    nproc: int = 32             # processes (RLIMIT_NPROC, as an unprivileged uid)
    fsize_mb: int = 16          # largest file the job may write (RLIMIT_FSIZE)
    nofile: int = 64            # open files (RLIMIT_NOFILE)
    output_bytes: int = 64 * 1024        # stdout / stderr each captured up to this
    result_bytes: int = 8 * 1024 * 1024  # largest JSON result frame


@dataclass
class JobResult:
    status: str                    # annoy_datasync.status: SUCCESS, EXCEPTION, TIMEOUT,
                                   # RESOURCE_LIMIT, CRASHED, NON_JSON, NOT_RUNNABLE
    value: Any = None              # on SUCCESS: the JSON value returned (parsed in the parent)
    error_type: str | None = None  # exception class name, limit name or signal name
    message: str = ""              # one sentence for humans and for model feedback
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0


@dataclass
class GenResult:
    status: str                    # SUCCESS if the job ran (even if some calls failed)
    pairs: list[dict] = field(default_factory=list)   # [{"input": kwargs, "output": value}] in order
    errors: dict[str, int] = field(default_factory=dict)  # per-call failure counts by status
    message: str = ""


class Executor:
    def __init__(self, python_path: str | None = None, run_path: str = "./temp/run",
                 workers: int | None = None, limits: Limits | None = None,
                 preload: tuple[str, ...] = DEFAULT_PRELOAD, hash_seed: int = 0) -> None:
        raise NotImplementedError

    def run_calls(self, code: str, inputs: list[dict], *, func: str = "main_solution",
                  seed: int | None = None, limits: Limits | None = None) -> Future[list[JobResult]]:
        """Exec `code` once in a fresh child, then ``func(**copy_of(kwargs))`` for each input.

        One JobResult per input, in order. The input is a JSON round-trip copy. `seed`, when
        given, seeds ``random`` and ``numpy.random`` before each call.
        """
        raise NotImplementedError

    def run_generator(self, code: str, gen_code: str, *, seed: int, max_calls: int,
                      max_pairs: int, budget_s: float, limits: Limits | None = None) -> Future[GenResult]:
        """Exec `code` + `gen_code`, seed random state with `seed`, then call
        ``input_generator()`` up to `max_calls` times (or until `max_pairs` distinct inputs or
        `budget_s` seconds) and ``main_solution(**copy_of(input))`` on each."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
