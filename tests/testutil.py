"""Helpers shared by the step tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from annoy_datasync import cli

ROOT = Path(__file__).resolve().parent.parent   # the repository
SRC = ROOT / "src"                              # the step scripts, and the library beneath
FIXTURES = ROOT / "tests" / "fixtures"


def read(path) -> list:
    """The records of a JSONL file written by a step (the file must exist)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# lines of a messages file that are not a request
NOT_JSON = "{not json"
NO_MESSAGES = '{"content": "no messages here"}'


def write_requests(path, n: int, bad_lines: Mapping[int, str] | Iterable[int] = ()) -> str:
    """A messages file of `n` chat requests ("question <i>", "itemid": i); a line in
    `bad_lines` holds the text it maps to, or a record without "messages"."""
    bad = bad_lines if isinstance(bad_lines, Mapping) else dict.fromkeys(bad_lines, NO_MESSAGES)
    with open(path, "w") as fh:
        for i in range(n):
            fh.write((bad[i] if i in bad else json.dumps(
                {"messages": [{"role": "user", "content": f"question {i}"}], "itemid": i})) + "\n")
    return str(path)


def run_step(main, argv, capsys) -> tuple[int, str]:
    """Run a step's `main` as the command line would (errors become exit codes); returns
    its exit code and what it printed on stderr."""
    rc = cli.run(main, [str(a) for a in argv])
    return rc, capsys.readouterr().err


def assert_bad_input_refused(main, capsys, inp: Path, lines: list[str] | None,
                             flags: tuple[str, str], expect: str) -> None:
    """A step given `lines` as its input file `inp` (None: no such file) and out.jsonl beside
    it as its output (`flags`: the two flags) exits 1 with one line ``error: <inp>...``
    holding `expect`, and leaves nothing but its input behind."""
    if lines is not None:
        inp.write_text("\n".join(lines) + "\n")
    rc, err = run_step(main, [flags[0], inp, flags[1], inp.parent / "out.jsonl"], capsys)
    assert rc == 1
    assert err.startswith(f"error: {inp}") and expect in err, err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in inp.parent.iterdir()) == ([inp.name] if lines is not None else [])


@contextlib.contextmanager
def cpu_burners(per_cpu: int = 2):
    """Every CPU busy with other work while the block runs: `per_cpu` busy-looping
    processes per CPU, killed at the end."""
    n = per_cpu * (len(os.sched_getaffinity(0)) or 1)
    procs = [subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"],
                              stdin=subprocess.DEVNULL) for _ in range(n)]
    try:
        time.sleep(0.2)     # running before the work starts
        yield n
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


# --- a hung step says where it waits ------------------------------------------------------------
def with_stack_dumps(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with PYTHONFAULTHANDLER=1: a Python process then prints
    every thread's stack on stderr when it gets SIGABRT (see `abort_with_stacks`)."""
    return {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"}


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (children first)."""
    kids: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                kids.setdefault(int(fh.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    found, stack = [], list(kids.get(pid, []))
    while stack:
        p = stack.pop(0)
        found.append(p)
        stack.extend(kids.get(p, []))
    return found


def abort_with_stacks(proc: subprocess.Popen) -> None:
    """End a hung step so that it shows where it waited: each of it and its child processes
    (started with `with_stack_dumps`) prints its threads' stacks on its stderr. All are frozen
    first and given SIGABRT, then let go children first: the step sees no child die before it
    has printed, and the children are not killed with it before they have."""
    import signal
    procs = [*reversed(descendants(proc.pid)), proc.pid]
    for sig in (signal.SIGSTOP, signal.SIGABRT):
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    for pid in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        if pid != proc.pid:
            time.sleep(0.2)     # its stacks are written before the next one goes
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_or_show_stacks(cmd: list[str], timeout: float, env: Mapping[str, str] | None = None,
                       **kw) -> subprocess.CompletedProcess:
    """subprocess.run with stdout and stderr captured as text; a run that outlives `timeout`
    fails the test with the stacks of the step and its child processes (not only a timeout)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=with_stack_dumps(env), **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        abort_with_stacks(proc)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(map(str, cmd))[:300]} still ran after {timeout:g} s; "
                             f"its stderr, with the stacks of where it waited:\n{err[-20000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
