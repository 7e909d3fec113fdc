"""The only way model-written code runs.

A pool of warm worker processes under ``python_path`` that preload common modules and fork
one sandboxed child per job. Results come back as JSON values on a framed pipe and are
judged by the caller, never by the child. The worker side is ``sandbox_worker.py`` (stdlib
only, so ``python_path`` may be an environment without this package); its docstring
describes the isolation, and ``sandbox_view.py`` the file system a job sees (an allow-list:
the interpreter, its libraries, a private /tmp, the run directory, `read_paths`);
``sandbox_job.py`` is the job's child process, ``sandbox_time.py`` its CPU and idle time,
``sandbox_filter.py`` the system calls it may not make (a seccomp filter).

Workers live as long as the Executor or the PROCESS that made it, whichever ends first (they
watch a pidfd of that process, so an Executor may be made in a short-lived thread). A job
whose worker died or failed comes back NOT_RUNNABLE with ``error_type ==
status.EXECUTOR_ERROR``: the executor's fault, not the code's; running it again may work.
A worker that fails (dies, sends a frame that is not JSON, ...) is replaced; one that cannot
be replaced (RESTART_ATTEMPTS starts failed) breaks the Executor: every job queued or
submitted before gets such a result, and every later submit raises `ExecutorFailed` (a
step stops on it with a one-line message).
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import layout, status
from .compare import json_problem, text
from .sections import MAIN_FUNC

log = logging.getLogger(__name__)

DEFAULT_PRELOAD = ("math", "random", "collections", "itertools", "functools", "heapq",
                   "bisect", "re", "string", "json", "copy", "fractions", "decimal",
                   "statistics", "datetime", "numpy", "numpy.random")

WORKER_SCRIPT = Path(__file__).with_name("sandbox_worker.py")
HEADER = struct.Struct(">I")
# Each Executor gets its own block of job uids when run as root, so that two executors in
# one step (e.g. a reproduction check with another hash seed) never share RLIMIT_NPROC.
JOB_UID_BASE = 100_000
_instances = itertools.count()
# Switch for tests and debugging: False runs workers without namespaces (the fallback used
# when the kernel refuses them).
USE_NAMESPACES = True
# Switch for tests and benchmarks (the A/B of its cost): False runs jobs without the
# system-call filter (sandbox_filter.py), as where the kernel or the architecture has none.
USE_SYSCALL_FILTER = True
# A worker that has not answered this long after a job's own limits is killed and replaced.
WATCHDOG_GRACE_S = 60.0
# Starts of a replacement worker tried before the Executor gives up (ExecutorFailed).
RESTART_ATTEMPTS = 2
_warned: set[str] = set()
# Directories the jobs' view makes itself (sandbox_view.VIEW_DIRS): no read path may hold one.
VIEW_DIRS = ("/etc", "/dev", "/proc", "/tmp")


@dataclass(frozen=True)
class Limits:
    """Bounds of one job. Time is per call (loading the code counts as one), in two kinds:

    - `cpu_time`, the budget: CPU seconds of everything the job runs (all its processes and
      threads). Code that computes longer ends as TIMEOUT (``error_type == "cpu"``): the
      same verdict on any machine at any load, so it is final.
    - `wall_time`, the backstop for code that does not compute: seconds the job may spend
      neither computing nor waiting for a CPU (sleeping, blocked, stopped); default: equal
      to `cpu_time`. Over it the job ends as WALL_TIMEOUT (``error_type == "wall"``), as it
      does (a last resort) after 10 x (cpu_time + wall_time) of plain wall-clock time.
      Where the kernel does not report a task's wait for a CPU (/proc/<pid>/schedstat),
      that wait counts as idle too: a wall stop may then come from load, and is worth a
      re-check with fewer workers (`verification.load_dependent`).
    """
    wall_time: float | None = None  # idle seconds per call (None: the same as cpu_time)
    cpu_time: float = layout.CPU_BUDGET  # CPU seconds per call, all the job's processes and threads
    memory_mb: int = 2048       # address space (RLIMIT_AS)
    nproc: int = 32             # processes (RLIMIT_NPROC, as an unprivileged uid)
    fsize_mb: int = 16          # largest file the job may write (RLIMIT_FSIZE)
    nofile: int = 64            # open files (RLIMIT_NOFILE)
    output_bytes: int = 64 * 1024        # stdout / stderr each captured up to this
    result_bytes: int = 8 * 1024 * 1024  # largest JSON result frame
    disk_mb: int = 64           # files the job may write in total (its directory is on a
                                # tmpfs of this size when namespaces work)


@dataclass
class JobResult:
    status: str                    # annoy_datasync.status: SUCCESS, EXCEPTION, TIMEOUT,
                                   # WALL_TIMEOUT, RESOURCE_LIMIT, CRASHED, NON_JSON,
                                   # NOT_RUNNABLE
    value: Any = None              # on SUCCESS: the JSON value returned (parsed in the parent)
    error_type: str | None = None  # exception class name, limit name or signal name
    message: str = ""              # one sentence for humans and for model feedback
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    drew_random: bool = False      # watched fresh calls (`run_fresh`): the call, module body
    read_clock: bool = False       # included, drew from random / numpy.random, read a clock


@dataclass(frozen=True)
class Call:
    """One call of a fresh-state job (`Executor.run_fresh`)."""
    input: dict                    # keyword arguments (a JSON copy is passed)
    code: int = 0                  # which of the job's codes it runs
    seed: int | None = None        # seeds random and numpy.random before the code is loaded
    warp_clock: bool = False       # every clock reads shifted, scaled, ticking values


@dataclass
class GenResult:
    status: str                    # SUCCESS if the job ran (even if some calls failed)
    pairs: list[dict] = field(default_factory=list)   # [{"input": kwargs, "output": value}] in order
    errors: dict[str, int] = field(default_factory=dict)  # per-call failure counts by status
    message: str = ""
    error_type: str | None = None  # status.EXECUTOR_ERROR when the worker died or failed


# The errors key of a generator job's pairs too large to send (`run_generator`'s pair_bytes).
GEN_TOO_LARGE = "too_large"

_STATUS_NAMES = ("SUCCESS", "EXCEPTION", "TIMEOUT", "WALL_TIMEOUT", "RESOURCE_LIMIT",
                 "CRASHED", "NON_JSON", "NOT_RUNNABLE")


def clean_env(hash_seed: int) -> dict[str, str]:
    """The whole environment of workers and jobs: built from scratch, no secrets."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": str(hash_seed),
        # BLAS thread pools in a process that forks are a deadlock waiting to happen.
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


class WorkerDied(Exception):
    pass


class ExecutorFailed(RuntimeError):
    """The Executor cannot run jobs: a worker did not start, or could not be replaced. A step
    stops on it with its one-line message (`cli.run`). (Not a `jsonl.StepError`: this module
    imports nothing outside the standard library and its siblings, so that it runs under an
    interpreter of the user's choosing.)"""


class _Worker:
    """One sandbox worker process and the parent-side pipe protocol."""

    def __init__(self, ex: Executor, index: int) -> None:
        self.ex, self.index = ex, index
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.launch()
        self.handshake()

    def launch(self) -> None:
        ex = self.ex
        cfg = {
            "worker_id": self.index,
            "parent_pid": os.getpid(),
            "run_path": ex.run_path,
            "preload": list(ex.preload),
            "status": {name: getattr(status, name) for name in _STATUS_NAMES},
            "job_uid": ex.uid_base + self.index if os.geteuid() == 0 else None,
            "read_paths": ex.read_paths,
            "namespaces": USE_NAMESPACES,
            "syscall_filter": ex.syscall_filter,
        }
        self.proc = subprocess.Popen(
            [ex.python_path, "-s", str(WORKER_SCRIPT), json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=clean_env(ex.hash_seed),
            close_fds=True, start_new_session=True, cwd="/")

    def handshake(self) -> None:
        ex = self.ex
        proc = self.proc
        watchdog = threading.Timer(120.0, proc.kill)   # a preload import that hangs
        watchdog.daemon = True
        watchdog.start()
        try:
            hello = self.recv()
        except (WorkerDied, ValueError):   # ValueError: a frame that is not JSON
            hello = None
        finally:
            watchdog.cancel()
        if not isinstance(hello, dict) or not hello.get("hello"):
            raise ExecutorFailed(f"sandbox worker under {ex.python_path} did not start")
        self.hello = hello
        notes = hello.get("notes")
        for note in notes if isinstance(notes, list) else ():
            if isinstance(note, str) and note not in _warned:
                _warned.add(note)
                log.warning("executor: %s", note)

    def send(self, body: bytes) -> None:
        try:
            self.proc.stdin.write(HEADER.pack(len(body)) + body)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerDied(str(exc)) from None

    def recv(self) -> Any:
        head = self.proc.stdout.read(HEADER.size)
        if len(head) < HEADER.size:
            raise WorkerDied("the sandbox worker exited")
        n = HEADER.unpack(head)[0]
        body = self.proc.stdout.read(n)
        if len(body) < n:
            raise WorkerDied("the sandbox worker exited mid-answer")
        return json.loads(body)

    def release(self) -> None:
        """Close the worker's stdin: it finishes its job, if any, and exits."""
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def stop(self) -> None:
        if self.proc is None:
            return
        self.release()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc = None


class Executor:
    """`workers` sandbox worker processes under `python_path`.

    The constructor launches every worker, then (``wait=True``) waits until all have started
    (imports of `preload` done; raises ExecutorFailed, a RuntimeError, if one cannot start). With ``wait=False``
    it returns at once and the first job (or `wait_ready`) waits instead, so several pools
    start up side by side.

    `read_paths`: directories the jobs may read (read-only) besides the interpreter's own;
    ValueError for one that is not a directory or holds /etc, /dev, /proc or /tmp.
    """

    def __init__(self, python_path: str | None = None, run_path: str = layout.RUN_PATH,
                 workers: int | None = None, limits: Limits | None = None,
                 preload: tuple[str, ...] = DEFAULT_PRELOAD, hash_seed: int = 0,
                 wait: bool = True, read_paths: tuple[str, ...] | list[str] = ()) -> None:
        self.python_path = python_path or sys.executable
        if not os.access(self.python_path, os.X_OK):
            raise RuntimeError(f"cannot run --python_path {self.python_path}: "
                               "not an executable file")
        self.run_path = os.path.realpath(run_path)
        os.makedirs(self.run_path, exist_ok=True)
        if os.geteuid() == 0:   # the job uid must reach its directory
            os.chmod(self.run_path, os.stat(self.run_path).st_mode | 0o711)
        self.limits = limits or Limits()
        self.preload = tuple(preload)
        self.hash_seed = hash_seed
        self.syscall_filter = USE_SYSCALL_FILTER   # read once: replaced workers keep it
        self.uid_base = JOB_UID_BASE + ((os.getpid() * 8 + next(_instances)) % 30000) * 128
        # Directories the jobs may read besides the interpreter's own (--read_path); the
        # worker binds them read-only into the jobs' view (sandbox_view.py).
        for p in read_paths:
            problem = read_path_problem(p)
            if problem:
                raise ValueError(f"read path {p}: {problem}")
        self.read_paths = sorted({os.path.realpath(p) for p in read_paths})
        n = workers or os.cpu_count() or 1
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._broken: str | None = None   # why the Executor cannot run jobs any more
        self._deadlines: dict[int, tuple[float, subprocess.Popen | None]] = {}
        self._stop = threading.Event()
        self._workers = [_Worker(self, i) for i in range(min(n, 128))]
        self._threads: list[threading.Thread] = []
        self._ready_lock = threading.Lock()
        self._ready = False
        self._pid = os.getpid()     # the workers are this process's (not a fork's) to stop
        self._start_error: BaseException | None = None
        try:
            for w in self._workers:     # launch all, then wait: start-up overlaps
                w.launch()
        except BaseException:
            for w in self._workers:
                w.stop()
            raise
        _live.add(self)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until every worker has started and the pool serves jobs (the first job does
        this by itself). Raises ExecutorFailed (a RuntimeError), now and on every later job, if
        one could not start."""
        with self._ready_lock:
            if self._ready:
                return
            if self._start_error is not None:
                raise self._start_error
            if self._closed:
                raise RuntimeError("Executor is closed")
            try:
                for w in self._workers:
                    w.handshake()
            except BaseException as exc:
                if isinstance(exc, Exception) and not isinstance(exc, ExecutorFailed):
                    exc = ExecutorFailed(f"sandbox worker under {self.python_path} did not "
                                         f"start ({type(exc).__name__}: {exc})")
                self._start_error = exc
                self._closed = True
                for w in self._workers:
                    _discard(w)
                _live.discard(self)
                raise exc from None
            for w in self._workers:
                t = threading.Thread(target=self._serve, args=(w,), daemon=True,
                                     name=f"executor-{w.index}")
                t.start()
                self._threads.append(t)
            threading.Thread(target=self._watchdog, daemon=True,
                             name="executor-watchdog").start()
            self._ready = True

    @property
    def view_restricted(self) -> bool:
        """True when every worker built the allow-list file system view for its jobs
        (False where the kernel refused namespaces: jobs then see what their uid may read)."""
        if not self._ready and not self._closed:
            self.wait_ready()
        return all(w.hello.get("view", False) for w in self._workers
                   if getattr(w, "hello", None) is not None)

    @property
    def syscalls_filtered(self) -> bool:
        """True when every worker installs the system-call filter in its jobs (False where
        the kernel refused it, on an architecture without a table, or when turned off)."""
        if not self._ready and not self._closed:
            self.wait_ready()
        return all(w.hello.get("syscall_filter", False) for w in self._workers
                   if getattr(w, "hello", None) is not None)

    # -- public API ------------------------------------------------------------------------
    def run_calls(self, code: str, inputs: list, *, func: str = MAIN_FUNC,
                  seed: int | None = None, limits: Limits | None = None,
                  fresh: bool = False) -> Future[list[JobResult]]:
        """Exec `code` once in a fresh child, then call `func` on a copy of each input: with
        its items as keyword arguments when it is a JSON object, else with it as the one
        argument (the method's convention).

        One JobResult per input, in order. The input is a JSON round-trip copy. `seed`, when
        given, seeds ``random`` and ``numpy.random`` before each call. A call that kills the
        child (timeout, crash, os._exit) fails alone: the calls after it run in a new child.
        stdout/stderr of a JobResult are those of the whole job (capped).

        `fresh`: calls must not see each other's state: before every call, ``random`` and
        ``numpy.random`` get back the state the child started with (or are seeded with
        `seed`) and `code` is executed anew in a new module namespace (a failure of that
        fails the call alone, with the status a single-call job would give; before the
        first call, the whole job's). What is still shared: the state of imported modules
        the code changes, files in the job's directory, the child's memory. This is
        `run_fresh` with one code.
        """
        job = {"kind": "calls", "code": code, "inputs": list(inputs), "func": func,
               "seed": seed, "fresh": bool(fresh)}
        return self._submit(job, limits)

    def run_fresh(self, codes: list[str], calls: list[Call], *, func: str = MAIN_FUNC,
                  watch: bool = False, limits: Limits | None = None) -> Future[list[JobResult]]:
        """Calls that each run as if alone, several codes in one sandboxed job.

        For each call in order: ``random`` and ``numpy.random`` get back the state the child
        started with, or are seeded with ``call.seed``; ``codes[call.code]`` is executed anew
        in a new module namespace; then `func` on a copy of ``call.input`` (keyword arguments
        for a JSON object, else the one argument). A code that does not
        load fails its calls alone. One JobResult per call, as `run_calls` gives them.
        (``run_calls(code, inputs, fresh=True)`` is this with one code and no seeds.)

        `watch`: each JobResult says whether its call (module body included) drew from the
        global state of random / numpy.random (``drew_random``) or read a clock
        (``read_clock``). Calls with ``warp_clock`` are watched too, and every clock they read
        (`time`'s, datetime.now ...) gives another instant, stretched durations and a tick per
        read, so that an output computed from a clock comes out different.

        What calls of one job still share: modules a code changes, files in the job's
        directory, the process. Merging the calls of several codes saves a sandboxed fork and
        teardown per code (about as much CPU as the calls of a light sample).
        """
        for c in calls:
            if not 0 <= c.code < len(codes):
                raise ValueError(f"run_fresh: call of code {c.code}, the job has {len(codes)}")
        job = {"kind": "calls", "codes": list(codes), "inputs": [c.input for c in calls],
               "plan": [[c.code, c.seed, c.warp_clock] for c in calls], "func": func,
               "seed": None, "fresh": True, "watch": bool(watch)}
        return self._submit(job, limits)

    def run_generator(self, code: str, gen_code: str, *, seed: int, max_calls: int,
                      max_pairs: int, budget_s: float, limits: Limits | None = None,
                      pair_bytes: int | None = None) -> Future[GenResult]:
        """Exec `code` + `gen_code`, seed random state with `seed`, then call
        ``input_generator()`` up to `max_calls` times (or until `max_pairs` distinct inputs or
        `budget_s` seconds of CPU time) and ``main_solution(**copy_of(input))`` on each.

        Inputs that repeat one already seen (canonical JSON) are skipped and counted in
        ``errors["duplicate"]``; failed calls (generator or main_solution) are
        counted under their status. A call that hangs ends the job: the pairs so far are
        kept, ``errors[TIMEOUT]`` counts it and ``message`` says so.

        `pair_bytes`: a pair whose input or output is longer than this as the child writes
        it (``json.dumps`` with its defaults: ASCII escapes, ", " and ": ") is not sent
        back, only counted in ``errors[GEN_TOO_LARGE]`` (it still counts as a distinct input
        against `max_pairs`); default: the result size limit. So a generator of huge inputs
        costs neither the worker nor this process their JSON.
        """
        job = {"kind": "gen", "code": code, "gen_code": gen_code, "seed": seed,
               "max_calls": max_calls, "max_pairs": max_pairs, "budget_s": budget_s,
               "pair_bytes": pair_bytes}
        return self._submit(job, limits)

    def close(self) -> None:
        """Finish the jobs submitted, then stop the workers."""
        self._shutdown(now=False)

    def _shutdown(self, now: bool) -> None:
        """`now`: cancel the queued jobs and kill the running ones (at interpreter exit
        nobody is left to read their results) instead of finishing them."""
        with self._ready_lock:      # not while workers are being waited for
            if self._closed:
                return
            self._closed = True
        if now:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[1].cancel()
            for w in self._workers:
                proc = w.proc
                if proc is not None:
                    proc.kill()     # its job's future gets an EXECUTOR_ERROR result
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
        self._stop.set()
        for w in self._workers:     # all exit side by side
            w.release()
        for w in self._workers:
            w.stop()
        _live.discard(self)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    def _submit(self, job: dict, limits: Limits | None) -> Future:
        if not self._ready:
            self.wait_ready()
        job["limits"] = _limits_dict(limits or self.limits)
        body = json.dumps(job).encode()   # inputs must be JSON: fail here, in the caller
        fut: Future = Future()
        # under the lock _shutdown closes with: a job is queued before its stop markers or
        # not at all (after them no thread would take it)
        with self._ready_lock:
            if self._broken is not None:
                raise ExecutorFailed(self._broken)
            if self._closed:
                raise RuntimeError("Executor is closed")
            self._queue.put((job, fut, body))
        return fut

    def _serve(self, w: _Worker) -> None:
        """Serve jobs on worker `w` until a stop marker. Every job taken gets an answer,
        whatever fails: the thread never ends before its stop marker."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, fut, body = item
            try:
                self._serve_one(w, job, fut, body)
            except BaseException as exc:  # noqa: BLE001 - never leave a Future pending
                log.exception("executor: serving a job failed")
                if not fut.done():
                    fut.set_exception(exc)

    def _serve_one(self, w: _Worker, job: dict, fut: Future, body: bytes) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        t0 = time.perf_counter()
        failed = False
        proc = w.proc
        if self._broken is not None:
            answer = {"error": self._broken}
        elif proc is None:
            answer = {"error": "no sandbox worker"}
        else:
            lim = job["limits"]
            # the worker's own last resort: 10 x (cpu + idle) per call, or per sample
            per_call = lim["cpu_time"] + lim["wall_time"]
            budget = (10 * (per_call * (len(job.get("inputs", ())) + 1)
                            + job.get("budget_s", 0)) + WATCHDOG_GRACE_S)
            self._deadlines[w.index] = (time.monotonic() + budget, proc)
            try:
                w.send(body)
                answer = w.recv()
                if not isinstance(answer, dict):
                    raise ValueError("an answer that is not a JSON object")
            except WorkerDied as exc:
                answer, failed = {"error": f"the sandbox worker died ({exc})"}, True
            except Exception as exc:  # noqa: BLE001 - e.g. a frame that is not JSON
                answer, failed = {"error": f"the sandbox worker failed ({exc})"}, True
            finally:
                self._deadlines.pop(w.index, None)
        if failed:     # first: whoever sees this job fail finds the worker replaced or
            self._restart(w)    # the Executor broken (its next submit raises)
        try:
            fut.set_result(self._to_result(job, answer, time.perf_counter() - t0))
        except BaseException as exc:  # noqa: BLE001
            fut.set_exception(exc)

    def _watchdog(self) -> None:
        """Kill a worker that overran a job's limits by far (it is then replaced); the
        worker enforces the limits itself, this only guards against a stuck worker."""
        while not self._stop.wait(1.0):
            now = time.monotonic()
            for deadline, proc in list(self._deadlines.values()):
                if now > deadline and proc is not None:
                    log.error("executor: a sandbox worker stopped answering; replacing it")
                    proc.kill()

    def _restart(self, w: _Worker) -> None:
        """Replace worker `w` (dead or not to be trusted). After RESTART_ATTEMPTS failed
        starts the Executor is broken: the jobs queued get EXECUTOR_ERROR results at once
        (the thread goes on taking them) and later submits raise ExecutorFailed."""
        _discard(w)
        if self._closed or self._broken is not None:
            return      # (a job of a closing Executor finds no worker and fails at once)
        problem = ""
        for _ in range(RESTART_ATTEMPTS):
            try:
                w.start()
                return
            except Exception as exc:  # noqa: BLE001 - whatever it is, the worker is unusable
                problem = f"{type(exc).__name__}: {exc}"
                log.error("executor: restarting a sandbox worker failed: %s", problem)
                _discard(w)
        self._broken = f"a sandbox worker failed and could not be restarted ({problem})"
        log.error("executor: %s", self._broken)

    @staticmethod
    def _to_result(job: dict, answer: dict, seconds: float) -> list[JobResult] | GenResult:
        if "error" in answer:   # the worker died or failed: not the code's fault
            msg = f"The code could not be run: {answer['error']}."
            if job["kind"] == "gen":
                return GenResult(status.NOT_RUNNABLE, message=msg,
                                 error_type=status.EXECUTOR_ERROR)
            return [JobResult(status.NOT_RUNNABLE, error_type=status.EXECUTOR_ERROR,
                              message=msg, seconds=seconds) for _ in job["inputs"]]
        if job["kind"] == "gen":
            return _gen_result(job, answer)
        out, err = text(answer["stdout"]), text(answer["stderr"])
        return [_call_result(r, out, err) for r in answer["results"]]


def _discard(w: _Worker) -> None:
    """Stop worker `w`, killing it if need be; its `proc` is None afterwards."""
    proc = w.proc
    try:
        w.stop()
    except Exception:  # noqa: BLE001 - a pipe that fails to close: kill it all the same
        if proc is not None:
            proc.kill()
            proc.wait()
    w.proc = None


_live: weakref.WeakSet[Executor] = weakref.WeakSet()
_KNOWN = frozenset(getattr(status, name) for name in _STATUS_NAMES)
MSG_CHANNEL = "The code wrote to the executor's result channel."
MESSAGE_CHARS = 1000     # longest message of a result (the child's own are shorter)
ERROR_TYPE_CHARS = 100   # longest error type (an exception class name, a limit name)


# The values in an answer are what the job's code made them: its child checked them, but
# the code can write frames of its own (it can read the job's token). So here, in the
# trusted parent, each is judged again: a value that is not plain JSON (compare.json_problem)
# makes its call NON_JSON and its pair dropped; every text is made writable as UTF-8.
def _call_result(r: dict, stdout: str, stderr: str) -> JobResult:
    st, value = r["status"], r.get("value")
    etype, msg = r.get("error_type"), _short(r.get("message", ""), MESSAGE_CHARS)
    etype = _short(etype, ERROR_TYPE_CHARS) if isinstance(etype, str) else None
    if st not in _KNOWN:
        st, etype, msg = status.CRASHED, "bad frame", MSG_CHANNEL
    if st == status.SUCCESS:
        problem = json_problem(value)
        if problem:
            st, etype = status.NON_JSON, "non_json"
            msg = f"The code returned {problem}, not plain JSON."
    seconds = r.get("seconds")
    return JobResult(st, value if st == status.SUCCESS else None, etype, msg, stdout, stderr,
                     float(seconds) if type(seconds) in (int, float) else 0.0,
                     r.get("random") is True, r.get("clock") is True)


def _gen_result(job: dict, answer: dict) -> GenResult:
    st = answer["status"] if answer["status"] in _KNOWN else status.CRASHED
    errors: dict[str, int] = {}
    for key, n in answer["errors"].items():
        if type(n) is int and n > 0:
            key = _short(key, ERROR_TYPE_CHARS)
            errors[key] = errors.get(key, 0) + min(n, job["max_calls"])
    pairs = []
    for p in answer["pairs"]:
        inp, out = p.get("input"), p.get("output")
        if len(pairs) >= job["max_pairs"] or not isinstance(inp, dict) \
                or json_problem(inp) or json_problem(out):
            errors[status.NON_JSON] = errors.get(status.NON_JSON, 0) + 1
            continue
        pairs.append({"input": inp, "output": out})
    return GenResult(st, pairs, errors, _short(answer["message"], MESSAGE_CHARS))


def _short(s: str, limit: int) -> str:
    """`s` as writable text of at most `limit` characters (the code chose its length)."""
    return text(s if len(s) <= limit else s[:limit - 3] + "...")


def read_path_problem(path: str) -> str | None:
    """Why `path` cannot be a read path of the jobs, or None if it can."""
    if not os.path.isdir(path):
        return "not a directory"
    real = os.path.realpath(path)
    if any(d == real or d.startswith(real.rstrip("/") + "/") for d in VIEW_DIRS):
        return ("holds /etc, /dev, /proc or /tmp, of which jobs get private versions; "
                "name a directory inside it")
    return None


@functools.lru_cache(maxsize=64)
def _limits_dict(limits: Limits) -> dict:
    """`limits` as the dict a job carries (the same object for every job: never changed)."""
    d = asdict(limits)
    if d["wall_time"] is None:
        d["wall_time"] = d["cpu_time"]
    return d


@atexit.register
def _close_all() -> None:
    """At interpreter exit (normal end or an exception) without close(): jobs still queued
    are cancelled, running ones killed. (On SIGKILL the workers see the process end.)"""
    for ex in list(_live):
        if ex._pid != os.getpid():
            continue
        try:
            ex._shutdown(now=True)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
