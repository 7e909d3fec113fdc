"""Sandbox worker: run by ``executor.Executor`` under the target interpreter (stdlib only).

Usage (by the executor, never by hand): ``python sandbox_worker.py CONFIG_JSON``.
Speaks length-prefixed JSON frames: jobs on stdin, one answer per job on stdout.

Start-up, once per worker:
  1. open a pidfd of the parent PROCESS (the step) and die with it: PR_SET_PDEATHSIG would
     fire when the parent THREAD that started us exits, which may be a short-lived one;
  2. enter new mount + network + PID namespaces (plus a user namespace when not root) and
     fork: the grandchild is PID 1 of its namespace and serves the jobs; when it dies the
     kernel kills everything left in the namespace. The outer process only waits: for the
     server (then exits with its status) or for the step's pidfd (then SIGKILLs the server);
     the server dies with the outer process (PR_SET_PDEATHSIG: it is single-threaded) and
     also watches the step's pidfd itself, between jobs and during them;
  3. import the preload modules;
  4. build the file system view of the jobs (sandbox_view.py: an allow-list on a new root
     -- the interpreter, its libraries, a few /dev and /etc files, its own /proc, a private
     /tmp and the run directory on size-limited tmpfs mounts -- everything else absent);
     say hello.
Per job: fork a child that starts a session, closes stdin, gets a fresh 0700 directory,
rlimits, drops privileges (a dedicated uid when root; no capabilities otherwise), execs the
code and writes one frame per call on fd 3 (tagged with a per-job token; a generator job
counts the inputs it skipped as repeats in a page of memory shared with the worker, which
reads it, bounded, after the job). The worker enforces the CPU budget of each call
(counting every process and thread of the job) and the wall-clock backstop for code that
does not compute (sandbox_time.py measures the job and keeps its budgets), caps the
captured output, SIGKILLs everything in the namespace but itself (kill(-1) from PID 1),
answers, then reaps and removes the directory and empties /tmp and /dev/shm.
A fresh-state job (Job.run_fresh) executes its code anew before each call, from the random
state the child started with or a per-call seed, and can run calls of several codes; when
asked, it counts each call's random draws and clock reads (ClockWatch wraps the clocks of
`time` and `datetime` in the child) and makes clocks read other values.
Without namespaces (refused by the kernel) it falls back to a subreaper that kills the
job's processes found by scanning /proc, rlimits and (as root) the dedicated uid.
When the step dies (even by SIGKILL), the worker kills the running job's processes and exits.
"""

import ctypes
import ctypes.util
import errno
import gc
import _signal
import json
import math
import mmap
import os
import resource
import select
import signal
import struct
import sys
import time

# the namespaces and the file system a job sees (a sibling module: we run as a script)
from sandbox_view import (PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, View, drop_capabilities,
                          enter_namespaces, prctl, remove_tree)
# the CPU and idle time of a running job, its budgets (also a sibling module)
from sandbox_time import JobClock

RESULT_FD = 3
MAX_INT = 10 ** 100      # larger ints are not plain JSON for our purposes
MAX_DEPTH = 100          # deeper nesting is not plain JSON either
HEADER = struct.Struct(">I")
COUNTER = struct.Struct("<Q")   # the duplicate count of a generator job, in shared memory

# fork(2) for job children, called with the GIL held (see job_fork).
_libc_gil = ctypes.PyDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc_gil.fork.restype = ctypes.c_int
_libc_gil.fork.argtypes = []


def job_fork():
    """fork() for a job child -> (pid, hooks_ran).

    os.fork runs the interpreter's at-fork hooks in the child (threading's bookkeeping of
    the other threads, random's reseed from os.urandom, lock re-initialisation): about
    0.4 ms and 150 copied pages per job. They exist for processes with other threads; the
    server has none, so when /proc/self/task shows a single thread the child is made by
    fork(2) itself (GIL held, glibc's own fork handlers still run) and reseeds `random`
    itself where the job does not seed it (child_main). With any other thread, os.fork."""
    try:
        single = len(os.listdir("/proc/self/task")) == 1
    except OSError:
        single = False
    if not single:
        return os.fork(), True
    pid = _libc_gil.fork()
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fork: {os.strerror(err)}")
    return pid, False


# ----------------------------------------------------------------------------- framing
def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[n:]


def send(fd, obj):
    body = json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")
    write_all(fd, HEADER.pack(len(body)) + body)


def read_exact(fd, n):
    chunks = []
    while n:
        try:
            b = os.read(fd, min(n, 1 << 20))
        except InterruptedError:
            continue
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def recv(fd):
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    body = read_exact(fd, HEADER.unpack(head)[0])
    return None if body is None else json.loads(body)


# --------------------------------------------------------------- strict JSON (in child)
class NotJSON(Exception):
    pass


def plain(x, depth=0):
    """A copy of `x` made only of exact JSON types, or NotJSON naming what is not."""
    if depth > MAX_DEPTH:
        raise NotJSON(f"nesting deeper than {MAX_DEPTH}")
    if x is None or x is True or x is False:
        return x
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, int) and not isinstance(x, bool):
        v = int.__index__(x)
        if abs(v) >= MAX_INT:
            raise NotJSON("an int with more than 100 digits")
        return v
    if isinstance(x, float):
        v = float(float.__repr__(x))
        if not math.isfinite(v):
            raise NotJSON(f"the float {float.__repr__(x)}")
        return v
    if isinstance(x, (list, tuple)):
        seq = list.__iter__(x) if isinstance(x, list) else tuple.__iter__(x)
        return [plain(v, depth + 1) for v in seq]
    if isinstance(x, dict):
        out = {}
        for k, v in dict.items(x):
            if isinstance(k, str):
                key = str.__str__(k)
            elif isinstance(k, int) and not isinstance(k, bool):
                key = str(int.__index__(k))   # as json.dumps does: {1: x} -> {"1": x}
            else:
                raise NotJSON(f"a dict key of type {type_name(k)}")
            if key in out:
                raise NotJSON(f"the dict key {key!r} twice after conversion to a string")
            out[key] = plain(v, depth + 1)
        return out
    raise NotJSON(f"a value of type {type_name(x)}")


def type_name(x):
    t = type(x)
    mod = getattr(t, "__module__", "")
    return t.__qualname__ if mod in ("builtins", "__main__", "") else f"{mod}.{t.__qualname__}"


# ------------------------------------------------- clocks of a fresh-state job (in child)
# The worker's own timing, bound before a job may replace the functions of `time`.
_perf_counter = time.perf_counter


class ClockWatch:
    """Counts the reads of every clock a job's code can reach (the clocks of `time` and
    their _ns variants, clock_gettime, localtime/gmtime/ctime/asctime/strftime without a
    time argument, datetime.now/utcnow/today, date.today) and, while warped, makes each
    read return SCALE * real + OFFSET + TICK * (reads so far): another instant, durations
    stretched, and a clock that advances between two reads even where the real one does
    not (CLOCK_PROCESS_CPUTIME_ID under RLIMIT_CPU advances only at scheduler ticks).
    Installed once per child, before the code runs, only in jobs that ask for it."""
    SCALE = 3
    OFFSET = 10_000_000.5      # seconds: about 116 days
    TICK = 0.001
    FLOAT = ("time", "perf_counter", "monotonic", "process_time", "thread_time")

    def __init__(self):
        self.reads = 0
        self.warp = False
        self.installed = False

    def start(self, warp):
        self.reads, self.warp = 0, bool(warp)

    def stop(self):
        self.warp = False
        return self.reads > 0

    def value(self, real):
        self.reads += 1
        if not self.warp:
            return real
        return self.SCALE * real + self.OFFSET + self.TICK * self.reads

    def value_ns(self, real):
        self.reads += 1
        if not self.warp:
            return real
        return self.SCALE * real + int(self.OFFSET * 1e9) + int(self.TICK * 1e9) * self.reads

    def install(self):
        if self.installed:
            return
        self.installed = True
        import datetime as dtmod
        t = time
        put = lambda name, fn: (setattr(fn, "__name__", name),  # noqa: E731
                                setattr(fn, "__qualname__", name), setattr(t, name, fn))
        for name in self.FLOAT:
            orig, orig_ns = getattr(t, name, None), getattr(t, name + "_ns", None)
            if orig is not None:
                put(name, lambda *a, _f=orig: self.value(_f(*a)))
            if orig_ns is not None:
                put(name + "_ns", lambda *a, _f=orig_ns: self.value_ns(_f(*a)))
        if hasattr(t, "clock_gettime"):
            gt, gt_ns = t.clock_gettime, t.clock_gettime_ns
            put("clock_gettime", lambda clk, _f=gt: self.value(_f(clk)))
            put("clock_gettime_ns", lambda clk, _f=gt_ns: self.value_ns(_f(clk)))
        now = t.time
        for name in ("localtime", "gmtime", "ctime"):
            orig = getattr(t, name)
            put(name, lambda *a, _f=orig: _f(*a) if a and a[0] is not None else _f(now()))
        local, asctime, strftime = t.localtime, t.asctime, t.strftime
        put("asctime", lambda *a: asctime(*a) if a else asctime(local()))
        put("strftime", lambda fmt, *a: strftime(fmt, *a) if a else strftime(fmt, local()))

        base_dt, base_date = dtmod.datetime, dtmod.date

        class datetime(base_dt):
            @classmethod
            def now(cls, tz=None):
                return cls.fromtimestamp(now(), tz)

            @classmethod
            def utcnow(cls):
                return cls.utcfromtimestamp(now())

            @classmethod
            def today(cls):
                return cls.fromtimestamp(now())

        class date(base_date):
            @classmethod
            def today(cls):
                return cls.fromtimestamp(now())

        for cls, base in ((datetime, base_dt), (date, base_date)):
            # the C type's name, so that repr() and error messages read as without us
            cls.__name__ = f"datetime.{base.__name__}"
            cls.__qualname__, cls.__module__ = base.__name__, "datetime"
            setattr(dtmod, base.__name__, cls)


CLOCKS = ClockWatch()


# ------------------------------------------------------------------ the job (in child)
class Job:
    def __init__(self, cfg, job, token, counters=None):
        self.S = cfg["status"]
        self.job = job
        self.token = token
        self.limit = job["limits"]["result_bytes"]
        self.counters = counters

    def frame(self, kind, **fields):
        fields["k"] = self.token
        fields["t"] = kind
        self._emit(json.dumps(fields, allow_nan=False))

    def value_frame(self, kind, values, **fields):
        """Frame with pre-serialised JSON values spliced in (serialised exactly once)."""
        fields["k"] = self.token
        fields["t"] = kind
        head = json.dumps(fields)[:-1]
        parts = [head] + [f', "{name}": {text}' for name, text in values] + ["}"]
        self._emit("".join(parts))

    def _emit(self, text):
        flush_std()
        write_all(RESULT_FD, HEADER.pack(len(text.encode())) + text.encode())

    def failure(self, exc):
        """(status, error_type, message) for an exception raised by the code."""
        S = self.S
        name = type(exc).__name__
        try:
            detail = " ".join(str(exc).split())
        except BaseException:  # noqa: BLE001 - a broken __str__ must not break us
            detail = ""
        if len(detail) > 300:
            detail = detail[:300] + "..."
        msg = f"{name}: {detail}" if detail else name
        if isinstance(exc, MemoryError):
            return S["RESOURCE_LIMIT"], "memory", f"The code ran out of memory ({msg})."
        if isinstance(exc, OSError):
            which = {errno.EAGAIN: "processes", errno.EMFILE: "open files",
                     errno.ENOSPC: "disk space", errno.EDQUOT: "disk space",
                     errno.ENFILE: "open files", errno.EFBIG: "file size"}.get(exc.errno)
            if which:
                return S["RESOURCE_LIMIT"], which, f"The code hit the {which} limit ({msg})."
        return S["EXCEPTION"], name, msg

    def load(self):
        try:
            self.compiled = compile(self.job["code"], "<code>", "exec")
            gen = None
            if self.job["kind"] == "gen":
                gen = compile(self.job["gen_code"], "<input_generator>", "exec")
        except SyntaxError as exc:
            self.frame("fatal", s=self.S["NOT_RUNNABLE"], e="SyntaxError",
                       m=f"The code has a syntax error at line {exc.lineno}: {exc.msg}.")
            return None
        ns, fail = self.exec_code(gen)
        if fail is not None:
            self.frame("fatal", s=fail[0], e=fail[1], m=fail[2])
            return None
        return ns

    def exec_code(self, gen=None, compiled=None):
        """Run the compiled code (`compiled`, default the job's) in a new module namespace
        -> (namespace, None), or (None, (status, error_type, message)) if loading it failed
        or a function is missing."""
        ns = {"__name__": "__sandbox__", "__builtins__": __builtins__}
        try:
            exec(self.compiled if compiled is None else compiled, ns)
            if gen is not None:
                exec(gen, ns)
        except BaseException as exc:  # noqa: BLE001 - code's own failure becomes a status
            status, etype, msg = self.failure(exc)
            if status == self.S["EXCEPTION"]:
                status, msg = self.S["NOT_RUNNABLE"], f"Loading the code raised {msg}."
            return None, (status, etype, msg)
        names = ["main_solution", "input_generator"] if self.job["kind"] == "gen" \
            else [self.job["func"]]
        for name in names:
            if not callable(ns.get(name)):
                return None, (self.S["NOT_RUNNABLE"], "missing",
                              f"The code defines no function {name}.")
        return ns, None

    @staticmethod
    def random_state():
        """The state of random and numpy.random (to give every fresh call the same start)."""
        import random
        nprand = sys.modules.get("numpy.random")
        return random.getstate(), None if nprand is None else nprand.get_state()

    @staticmethod
    def set_random_state(state):
        import random
        random.setstate(state[0])
        nprand = sys.modules.get("numpy.random")
        if nprand is not None and state[1] is not None:
            nprand.set_state(state[1])

    def seed(self, seed):
        import random
        random.seed(seed)
        nprand = sys.modules.get("numpy.random")
        if nprand is not None:
            nprand.seed(seed % (2 ** 32))

    def call(self, fn, arg):
        """Run fn(**arg) for an object, else fn(arg) -> (status, error_type, message, json_text)."""
        try:
            out = fn(**arg) if isinstance(arg, dict) else fn(arg)
        except BaseException as exc:  # noqa: BLE001 - includes SystemExit, KeyboardInterrupt
            return self.failure(exc) + (None,)
        try:
            text = json.dumps(plain(out), allow_nan=False)
        except NotJSON as exc:
            return self.S["NON_JSON"], "non_json", f"The code returned {exc}, not plain JSON.", None
        except BaseException as exc:  # noqa: BLE001 - e.g. MemoryError while converting
            return self.failure(exc) + (None,)
        if len(text) > self.limit:
            return (self.S["RESOURCE_LIMIT"], "result size",
                    f"The returned value is larger than {self.limit} bytes as JSON.", None)
        return self.S["SUCCESS"], None, "", text

    def run_calls(self, ns):
        """One frame per input, every call in the namespace `ns` (loaded once)."""
        fn = ns[self.job["func"]]
        seed = self.job.get("seed")
        for i, text in enumerate(self.job["inputs"]):
            t0 = _perf_counter()
            if seed is not None:
                self.seed(seed)
            status, etype, msg, value = self.call(fn, json.loads(text))
            self.call_frame(i, status, etype, msg, value, t0)

    def call_frame(self, i, status, etype, msg, value, t0, **flags):
        dt = round(_perf_counter() - t0, 6)
        if value is None:
            self.frame("call", i=i, s=status, e=etype, m=msg, d=dt, **flags)
        else:
            self.value_frame("call", [("v", value)], i=i, s=status, d=dt, **flags)

    def run_fresh(self, start_state):
        """A fresh-state job: every call runs as if it were the only call of a job of its
        own. Before each call ``random`` and ``numpy.random`` get back the state the child
        started with, or the call's seed; then the call's code (one of job["codes"], or
        job["code"]) is executed anew in a new module namespace; then the call. No call sees
        globals or random draws left by another. A failure to load the code fails its call
        alone (with one code, a failure before the first call is the whole job's, as for a
        job that loads once).

        job["plan"], if given: per input [code index, seed or None, warp clock]. With
        job["watch"], each call frame says whether the call (its module body included)
        drew from the global state of random / numpy.random ("r") or read a clock ("c");
        with a plan's warp flag, every clock of time and datetime reads shifted, scaled and
        ticking values during that call (see ClockWatch)."""
        job, S = self.job, self.S
        texts = job.get("codes") or [job["code"]]
        single = len(texts) == 1
        compiled = []
        for text in texts:
            try:
                compiled.append(compile(text, "<code>", "exec"))
            except SyntaxError as exc:
                compiled.append((S["NOT_RUNNABLE"], "SyntaxError",
                                 f"The code has a syntax error at line {exc.lineno}: {exc.msg}."))
        n = len(job["inputs"])
        plan = job.get("plan") or [[0, job.get("seed"), False]] * n
        watch = CLOCKS if job.get("watch") or any(p[2] for p in plan) else None
        if not single:
            self.frame("ready")
        for i, text in enumerate(job["inputs"]):
            t0 = _perf_counter()
            which, seed, warp = plan[i]
            if i > 0:
                self.set_random_state(start_state)
            if seed is not None:
                self.seed(seed)
            if watch is not None:
                watch.start(warp)
                before = self.draw_state()
            code = compiled[which]
            ns, fail = (None, code) if isinstance(code, tuple) else self.exec_code(compiled=code)
            if single and i == 0:
                if fail is not None:
                    self.frame("fatal", s=fail[0], e=fail[1], m=fail[2])
                    return
                self.frame("ready")
            if fail is not None:
                status, etype, msg, value = fail + (None,)
            else:
                status, etype, msg, value = self.call(ns[job["func"]], json.loads(text))
            ns = None
            flags = {}
            if watch is not None:
                flags = {"r": self.draw_state() != before, "c": watch.stop()}
            self.call_frame(i, status, etype, msg, value, t0, **flags)

    @staticmethod
    def draw_state():
        """What a draw from the global random state of random or numpy.random changes."""
        import random
        state = [random.getstate()]
        nprand = sys.modules.get("numpy.random")
        if nprand is not None:
            try:
                key = nprand.get_state()
                state.append((key[1].tobytes(), key[2], key[3], key[4]))
            except BaseException:  # noqa: BLE001 - the code may have broken numpy.random
                state.append(None)
        return state

    def run_gen(self, ns):
        job, S = self.job, self.S
        gen, fn = ns["input_generator"], ns["main_solution"]
        self.seed(job["seed"])
        seen = set()
        dups = 0
        # the sample's budget is CPU time (this process, its threads and the children it
        # reaped), so how many calls fit does not depend on how busy the machine is
        cpu_end = cpu_seconds() + job["budget_s"]
        for _ in range(job["max_calls"]):
            if len(seen) >= job["max_pairs"] or cpu_seconds() > cpu_end:
                break
            try:
                raw = gen()
                if not isinstance(raw, dict):
                    raise NotJSON(f"the generator returned {type_name(raw)}, not a dict")
                inp = plain(raw)
                text = json.dumps(inp, allow_nan=False)
                if len(text) > self.limit:
                    raise NotJSON("an input larger than the result size limit")
            except NotJSON as exc:
                self.frame("err", s=S["NON_JSON"], m=str(exc))
                continue
            except BaseException as exc:  # noqa: BLE001
                status, etype, msg = self.failure(exc)
                self.frame("err", s=status, e=etype, m=f"input_generator raised {msg}")
                continue
            key = json.dumps(inp, sort_keys=True)   # as of its JSON round trip
            if key in seen:
                # counted in memory shared with the worker, not a frame each: ~40 of the
                # 50 draws of a typical generator repeat an input
                dups += 1
                COUNTER.pack_into(self.counters, 0, dups)
                continue
            seen.add(key)
            status, etype, msg, value = self.call(fn, json.loads(text))
            if value is None:
                self.frame("err", s=status, e=etype, m=msg)
            else:
                self.value_frame("pair", [("in", text), ("out", value)])
        self.frame("gdone")


def cpu_seconds():
    """CPU time of this process (all its threads) and of the children it has reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def flush_std():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the code may have replaced or closed them
            pass


def child_main(cfg, job, token, workdir, fds, ids, hooks_ran=True, counters=None):
    """In the forked child: isolate, limit, run. Never returns."""
    code = 71
    try:
        if not hooks_ran and job["kind"] == "calls" and job.get("seed") is None:
            rnd = sys.modules.get("random")   # what os.fork's hook would have done
            if rnd is not None:
                rnd.seed()
        runner = Job(cfg, job, token, counters)
        try:
            isolate(job, workdir, fds, ids)
        except BaseException as exc:  # noqa: BLE001 - say why instead of dying silently
            runner.frame("fatal", s=cfg["status"]["NOT_RUNNABLE"], e="sandbox",
                         m=f"The sandbox could not be set up ({type(exc).__name__}: {exc}).")
            os._exit(72)
        if job.get("fresh"):
            if job.get("watch") or any(p[2] for p in job.get("plan") or ()):
                CLOCKS.install()
            runner.run_fresh(runner.random_state())
        else:
            ns = runner.load()
            if ns is not None:
                runner.frame("ready")
                if job["kind"] == "gen":
                    runner.run_gen(ns)
                else:
                    runner.run_calls(ns)
        flush_std()
        code = 0
    except BaseException:  # noqa: BLE001 - never unwind into the worker's code
        pass
    os._exit(code)


def isolate(job, workdir, fds, ids):
    """Session, standard fds, directory, rlimits, privileges (in the child, before the code).

    Made cheap (it runs once per job, in a process where all its code is cold): signal
    dispositions through _signal (signal.signal converts to and from enums), /dev/null opened
    once by the worker, HOME and TMPDIR set by the worker before the fork, PR_SET_NO_NEW_PRIVS
    inherited from the worker when it could set it on itself (it can never be cleared)."""
    os.setsid()
    os.dup2(fds["null"], 0)
    os.dup2(fds["out"], 1)
    os.dup2(fds["err"], 2)
    os.dup2(fds["res"], RESULT_FD)
    os.closerange(RESULT_FD + 1, 1 << 16)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        _signal.signal(sig, _signal.SIG_DFL)
    _signal.signal(signal.SIGINT, _signal.default_int_handler)
    os.chdir(workdir)
    lim = job["limits"]
    cpu = max(1, math.ceil(job["cpu_s"]))
    mb = 1024 * 1024
    for which, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
                         (resource.RLIMIT_AS, (lim["memory_mb"] * mb,) * 2),
                         (resource.RLIMIT_FSIZE, (lim["fsize_mb"] * mb,) * 2),
                         (resource.RLIMIT_NOFILE, (lim["nofile"],) * 2),
                         (resource.RLIMIT_CORE, (0, 0)),
                         (resource.RLIMIT_NPROC, (lim["nproc"],) * 2)):
        resource.setrlimit(which, value)
    if not fds["no_new_privs"]:
        prctl(PR_SET_NO_NEW_PRIVS, 1)   # no setuid binary gives privileges back
    if ids is not None:
        os.setgroups([])
        os.setresgid(ids, ids, ids)
        os.setresuid(ids, ids, ids)
    else:
        drop_capabilities()


# ----------------------------------------------------------------- the worker (trusted)
class Worker:
    def __init__(self, cfg):
        self.cfg = cfg
        self.S = cfg["status"]
        self.statuses = set(self.S.values())
        self.run_path = cfg["run_path"]
        self.ids = cfg.get("job_uid")   # None when not root
        self.pidns = False
        self.pending = None
        self.view = None        # sandbox_view.View once the file system view is built
        self.notes = []
        self.n = 0
        self.parent_fd = None   # pidfd of the step: readable once the step has exited
        self.counters = None    # a page shared with the job children (made on first use)
        self.devnull = None     # /dev/null, the stdin of every job
        self.no_new_privs = False   # set on the worker itself: every job inherits it
        self.clock = JobClock(self.S)   # the running job's CPU and idle time (sandbox_time.py)

    # -- isolation set-up -------------------------------------------------------------
    def outer_wait(self, pid):
        """The outer process: wait for the server (exit with its status) or for the step's
        end (SIGKILL the server: PID 1, so the kernel kills its whole namespace). Never returns."""
        server = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(server, select.POLLIN)
        poller.register(self.parent_fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self.parent_fd in ready:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os._exit(1)   # the server is killed either way (its PR_SET_PDEATHSIG)
            if server in ready:
                _, st = os.waitpid(pid, 0)
                os._exit(os.waitstatus_to_exitcode(st) & 0xFF)

    def die_with_parent(self, pid=None):
        """The step has exited: kill the running job's processes (if any) and exit."""
        if pid is not None:
            try:
                self.kill_all(pid)
            except OSError:
                pass
        os._exit(1)

    def resize_run_tmpfs(self, mb):
        if self.view is not None:
            self.view.resize(mb)

    def preload(self):
        for name in self.cfg["preload"]:
            try:
                __import__(name)
            except BaseException as exc:  # noqa: BLE001 - a missing module is not fatal
                self.notes.append(f"preload {name} failed ({type(exc).__name__})")

    # -- jobs ---------------------------------------------------------------------------
    def run_job(self, job):
        lim = job["limits"]
        job["inputs"] = [json.dumps(x) for x in job.get("inputs", [])]
        out = {"stdout": b"", "stderr": b""}
        if job["kind"] == "gen":
            job["cpu_s"] = job["budget_s"] + lim["cpu_time"]
            res = self.spawn(job, out)
            answer = self.gen_answer(res)
        else:
            n = len(job["inputs"])
            results = []
            while len(results) < n:
                sub = dict(job, inputs=job["inputs"][len(results):])
                if job.get("plan"):
                    sub["plan"] = job["plan"][len(results):]
                sub["cpu_s"] = lim["cpu_time"] * len(sub["inputs"]) + 1
                res = self.spawn(sub, out)
                got = res["calls"]
                results.extend(got)
                if len(results) >= n:
                    break
                status, etype, msg = res["end"]
                if not res["ready"]:     # died before the first call: all calls share it
                    results.extend([self.result(status, etype, msg, seconds=res["elapsed"])]
                                   * (n - len(results)))
                    break
                results.append(self.result(status, etype, msg, seconds=res["elapsed"]))  # then resume after it
            answer = {"results": results[:n]}
        cap = lim["output_bytes"]
        for k, v in out.items():
            answer[k] = v[:cap].decode("utf-8", "replace") + \
                ("\n[output truncated]" if len(v) > cap else "")
        return answer

    @staticmethod
    def result(status, etype, msg, value=None, seconds=0.0):
        return {"status": status, "error_type": etype, "message": msg, "value": value,
                "seconds": seconds}

    def gen_answer(self, res):
        S = self.S
        if not res["ready"]:
            status, etype, msg = res["end"]
            return {"status": status, "pairs": [], "errors": {}, "message": msg}
        errors = res["errors"]
        if not res["done"]:
            status, _, msg = res["end"]
            errors[status] = errors.get(status, 0) + 1
        return {"status": S["SUCCESS"], "pairs": res["pairs"], "errors": errors,
                "message": "" if res["done"] else f"Stopped early: {msg}"}

    def spawn(self, job, out):
        self.cleanup()
        self.resize_run_tmpfs(job["limits"]["disk_mb"])
        self.n += 1
        workdir = os.path.join(self.run_path, f"job-{self.cfg['worker_id']}-{os.urandom(6).hex()}")
        os.mkdir(workdir, 0o700)
        if self.ids is not None:
            os.chown(workdir, self.ids, self.ids)

        if self.counters is None:
            self.counters = mmap.mmap(-1, mmap.PAGESIZE)
            self.devnull = os.open(os.devnull, os.O_RDONLY)
        # the job's environment: the worker's clean one, HOME and TMPDIR in its directory
        os.environ["HOME"] = os.environ["TMPDIR"] = workdir
        COUNTER.pack_into(self.counters, 0, 0)   # every process of the last job is dead
        token = os.urandom(12).hex()
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self._status = None
        self.clock.start_job()   # the last job's processes are all reaped
        pid, hooks_ran = job_fork()
        if pid == 0:
            child_main(self.cfg, job, token, workdir,
                       {"out": out_w, "err": err_w, "res": res_w, "null": self.devnull,
                        "no_new_privs": self.no_new_privs}, self.ids, hooks_ran, self.counters)
        for fd in (res_w, out_w, err_w):
            os.close(fd)
        state = {"ready": False, "calls": [], "pairs": [], "errors": {}, "done": False,
                 "end": None, "n": len(job["inputs"])}
        try:
            self.watch(pid, job, token, state, {res_r: None, out_r: "stdout", err_r: "stderr"},
                       out)
        finally:
            # SIGKILL now; reaping (the kernel tearing down address spaces) and removing
            # the directory wait until the answer is sent (see cleanup).
            self.pending = (pid, (res_r, out_r, err_r), workdir)
            if self.pidns:
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            else:
                self.cleanup()
        if job["kind"] == "gen":
            # written by the child before its later frames (or before it hung or died);
            # the code could write anything there, so keep it in range
            dups = min(COUNTER.unpack_from(self.counters, 0)[0], job["max_calls"])
            if dups:
                state["errors"]["duplicate"] = state["errors"].get("duplicate", 0) + dups
        return state

    def cleanup(self):
        """Finish the last job: every process of it dead and reaped, its directory gone."""
        if self.pending is None:
            return
        pid, fds, workdir = self.pending
        self.pending = None
        self.kill_all(pid)
        for fd in fds:
            os.close(fd)
        try:
            os.rmdir(workdir)
        except OSError:
            remove_tree(workdir)
        if self.view is not None:
            self.view.clear_scratch()

    def watch(self, pid, job, token, state, fds, out):
        """Relay the job's output and frames until it is done, dies or overruns a limit.

        Time limits are per call (a frame starts the next call's): the job's CPU time (all
        its processes and threads: see sandbox_time.JobClock.job_usage) and its idle time, a
        backstop for code that does not compute (sleeps, blocks, is stopped) which leaves
        out the time the job waited for a CPU (see JobClock.budgets_left). A generator job
        also has totals: the sample's budget plus one call. The job is measured only when a
        limit could have been reached (CPU time grows at most NCPU times as fast as wall
        time) and when a call ends, so a short job is measured at most once."""
        S, lim = self.S, job["limits"]
        t0 = time.monotonic()
        state["t_last"] = t0
        mark = (t0, 0.0, 0.0)   # (monotonic time, CPU, CPU wait) at the current call's start
        # a generator job's own total (the sample's budget plus one call), from its start
        total = (job["budget_s"], t0) if job["kind"] == "gen" else None
        next_check = t0 + self.clock.check_after(lim, total, mark, (t0, 0.0, 0.0))
        hard_out = max(64 * lim["output_bytes"], 1 << 20)
        total_out = 0
        buf = bytearray()
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        for fd in list(fds) + [pidfd, self.parent_fd]:
            poller.register(fd, select.POLLIN)
        open_fds = set(fds)
        killed = None
        exited = None
        try:
            while True:
                now = time.monotonic()
                if now >= next_check:
                    usage = (now,) + self.clock.job_usage()
                    killed = self.clock.over_limit(lim, total, mark, usage)
                    if killed:
                        break
                    next_check = now + self.clock.check_after(lim, total, mark, usage)
                for fd, ev in poller.poll(max(1, int((next_check - now) * 1000) + 1)):
                    if fd == pidfd:
                        exited = True
                        continue
                    if fd == self.parent_fd:
                        self.die_with_parent(pid)
                    data = os.read(fd, 1 << 16) if ev & (select.POLLIN | select.POLLHUP) else b""
                    if not data:
                        poller.unregister(fd)
                        open_fds.discard(fd)
                        continue
                    name = fds[fd]
                    if name is not None:
                        total_out += len(data)
                        if len(out[name]) < lim["output_bytes"] + 1:
                            out[name] += data[:lim["output_bytes"] + 1 - len(out[name])]
                        if total_out > hard_out:
                            killed = (S["RESOURCE_LIMIT"], "output size",
                                      f"The code printed more than {hard_out} bytes.")
                        continue
                    buf += data
                    unread = len(buf)
                    bad = self.frames(buf, token, state, lim)
                    if bad:
                        killed = (S["CRASHED"], "bad frame", bad)
                    elif len(buf) < unread and not state["done"]:
                        # a call ended (or loading did): the next one gets its own budget.
                        # The full measurement is not put off: the job's other processes
                        # (left out of `mark`) are charged only there, so with calls
                        # shorter than the check interval a process left computing across
                        # calls would never be measured.
                        now = time.monotonic()
                        mark = (now,) + self.clock.job_usage(main=pid)
                        state["t_last"] = now
                        next_check = min(next_check,
                                         now + self.clock.check_after(lim, total, mark, mark))
                if killed or state["done"]:
                    break
                if exited:
                    break
        finally:
            os.close(pidfd)
        if not killed and not state["done"]:
            # drain what the child wrote before it exited (grandchildren are killed first)
            self.kill_all(pid)
            for fd in list(open_fds):
                while True:
                    data = os.read(fd, 1 << 16)
                    if not data:
                        break
                    if fds[fd] is None:
                        buf += data
                    elif len(out[fds[fd]]) <= lim["output_bytes"]:
                        out[fds[fd]] += data[:lim["output_bytes"] + 1 - len(out[fds[fd]])]
            bad = self.frames(buf, token, state, lim)
            if bad:
                killed = (S["CRASHED"], "bad frame", bad)
        state["elapsed"] = round(time.monotonic() - state["t_last"], 6)
        if killed:
            state["end"] = killed
        elif not state["done"]:
            if self._status is None:
                self.kill_all(pid)
            state["end"] = self.child_status(job)

    def frames(self, buf, token, state, lim):
        """Consume complete frames from `buf` (a bytearray) into `state`; return an error
        sentence if a frame is not one our child code writes."""
        while len(buf) >= HEADER.size:
            n = HEADER.unpack_from(buf)[0]
            if n > lim["result_bytes"] + 4096:
                return "The code wrote an oversized frame on the executor's result channel."
            if len(buf) < HEADER.size + n:
                break
            body = bytes(buf[HEADER.size:HEADER.size + n])
            del buf[:HEADER.size + n]
            try:
                msg = json.loads(body)
                ok = self.apply(msg, token, state) if isinstance(msg, dict) else False
            except (ValueError, RecursionError, KeyError, TypeError):
                ok = False
            if not ok:
                return "The code wrote to the executor's result channel."
        return None

    def apply(self, msg, token, state):
        if msg.get("k") != token:
            return False
        kind = msg["t"]
        if "s" in msg and msg["s"] not in self.statuses:
            return False
        if kind == "ready":
            state["ready"] = True
        elif kind == "fatal":
            state["end"] = (msg["s"], msg.get("e"), str(msg["m"]))
            state["done"] = True
        elif kind == "call":
            if msg["i"] != len(state["calls"]) or len(state["calls"]) >= state["n"]:
                return False
            res = self.result(msg["s"], msg.get("e"), str(msg.get("m", "")), msg.get("v"),
                              float(msg.get("d", 0.0)))
            if "r" in msg:      # a watched fresh call: did it draw random numbers, read a clock
                res["random"], res["clock"] = msg["r"] is True, msg["c"] is True
            state["calls"].append(res)
            state["done"] = len(state["calls"]) == state["n"]
        elif kind == "pair":
            state["pairs"].append({"input": msg["in"], "output": msg["out"]})
        elif kind == "err":
            state["errors"][msg["s"]] = state["errors"].get(msg["s"], 0) + 1
        elif kind == "gdone":
            state["done"] = True
        else:
            return False
        return True

    def child_status(self, job):
        S, lim = self.S, job["limits"]
        st, usage = self._status
        cpu = usage.ru_utime + usage.ru_stime
        if os.WIFSIGNALED(st):
            sig = os.WTERMSIG(st)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= job["cpu_s"]):
                return S["TIMEOUT"], "cpu", f"The code used more than {lim['cpu_time']:g} s of CPU time."
            if sig == signal.SIGXFSZ:
                return S["RESOURCE_LIMIT"], "file size", \
                    f"The code wrote a file larger than {lim['fsize_mb']} MB."
            name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
            return S["CRASHED"], name, f"The code crashed with {name}."
        code = os.WEXITSTATUS(st) if os.WIFEXITED(st) else -1
        if code == 71:
            return S["CRASHED"], "result channel", \
                "The code closed or broke the executor's result channel."
        return S["CRASHED"], f"exit {code}", \
            f"The code ended its process (exit status {code}) before returning a result."

    def kill_all(self, pid):
        """SIGKILL every process of the job (all but us in the PID namespace) and reap."""
        if self.pidns:
            while True:
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.reap(pid)
                try:
                    os.kill(-1, 0)
                except ProcessLookupError:
                    break
        else:
            self.kill_by_scan(pid)

    def reap(self, pid):
        while True:
            try:
                p, st, usage = os.wait4(-1, 0)
            except ChildProcessError:
                return
            if p == pid:
                self._status = (st, usage)

    def kill_by_scan(self, pid):
        """Without a PID namespace: kill our children (orphans come to us, a subreaper)."""
        me = str(os.getpid())
        while True:
            kids = []
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open(f"/proc/{entry}/stat") as f:
                            ppid = f.read().rsplit(")", 1)[1].split()[1]
                    except (OSError, IndexError):
                        continue
                    if ppid == me:
                        kids.append(int(entry))
            if not kids:
                return
            for k in kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for k in kids:      # their children come to us (subreaper): scan again
                try:
                    _, st, usage = os.wait4(k, 0)
                except ChildProcessError:
                    continue
                if k == pid:
                    self._status = (st, usage)

    def serve(self, rd, wr):
        poller = select.poll()
        poller.register(rd, select.POLLIN)
        poller.register(self.parent_fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self.parent_fd in ready:
                self.die_with_parent()
            job = recv(rd)
            if job is None:
                return
            try:
                answer = self.run_job(job)
            except Exception as exc:  # noqa: BLE001 - report, keep serving
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            send(wr, answer)
            self.cleanup()


def main():
    cfg = json.loads(sys.argv[1])
    try:
        parent_fd = os.pidfd_open(cfg["parent_pid"])
    except OSError:
        os._exit(1)
    if os.getppid() != cfg["parent_pid"]:   # it had exited already (the pid may be reused)
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rd, wr = os.dup(0), os.dup(1)
    os.set_inheritable(rd, False)
    os.set_inheritable(wr, False)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)            # stray prints of preloaded modules must not hit the protocol
    worker = Worker(cfg)
    worker.parent_fd = parent_fd
    try:
        worker.pidns = enter_namespaces(cfg.get("namespaces", True), (rd, wr), worker.notes,
                                        worker.outer_wait)
    except OSError as exc:
        worker.notes.append(f"isolation set-up failed: {exc}")
    try:
        prctl(PR_SET_DUMPABLE, 0)
    except OSError:
        pass
    try:    # the worker never executes a program: no privileges to lose by this
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        worker.no_new_privs = True
    except OSError:
        pass
    worker.clock.probe_proc(worker.pidns, worker.notes)
    worker.preload()
    if worker.pidns:
        # after the preload imports: the libraries they mapped are part of the view
        view = View(cfg["run_path"], cfg["read_paths"], worker.ids, worker.notes)
        try:
            view.build()
            worker.view = view
        except OSError as exc:
            worker.notes.append(f"file system NOT restricted for jobs ({exc})")
    # The preloaded modules live as long as the worker: keep them out of garbage collection,
    # so that a collection in a job's child does not walk (and copy, page by page, from
    # the worker) every object of numpy & co.
    gc.freeze()
    send(wr, {"hello": True, "pidns": worker.pidns, "notes": worker.notes,
              "view": worker.view is not None,
              "pid": os.getpid()})
    worker.serve(rd, wr)


if __name__ == "__main__":
    main()
