"""The child side of a sandbox worker's job: what runs in the forked process, before and
around the model-written code.

Standard library only, imported by ``sandbox_worker.py`` as a sibling module (the worker is
started as a script under the target interpreter), which forks and calls child_main. Here:
the framing of the worker's pipes (also used by the worker), the isolation of the child
(isolate: session, fds, directory, rlimits, privileges), the strict JSON check of values
(plain), the runner of the code (Job: plain calls, fresh-state calls, a generator's pairs)
and ClockWatch (counts, and can shift, the clock reads of a fresh call). Everything here
runs untrusted once the code is executed: it only reports, on fd 3, in frames the worker
checks; the verdicts are the worker's and the executor's.
"""

import errno
import _signal
import json
import math
import os
import resource
import signal
import struct
import sys
import time

from sandbox_view import PR_SET_NO_NEW_PRIVS, drop_capabilities, prctl

RESULT_FD = 3
MAX_INT = 10 ** 100      # larger ints are not plain JSON for our purposes
MAX_DEPTH = 100          # deeper nesting is not plain JSON either
HEADER = struct.Struct(">I")
COUNTER = struct.Struct("<Q")   # the duplicate count of a generator job, in shared memory


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
        return text_of(x)
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
                key = text_of(k)
            elif isinstance(k, int) and not isinstance(k, bool):
                key = str(int.__index__(k))   # as json.dumps does: {1: x} -> {"1": x}
            else:
                raise NotJSON(f"a dict key of type {type_name(k)}")
            if key in out:
                raise NotJSON(f"the dict key {key!r} twice after conversion to a string")
            out[key] = plain(v, depth + 1)
        return out
    raise NotJSON(f"a value of type {type_name(x)}")


def text_of(s):
    """A str `s` as an exact str, or NotJSON when it holds a lone surrogate: no UTF-8 text
    (and no file the pipeline writes) can hold it."""
    s = str.__str__(s)
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise NotJSON("a string holding a lone surrogate") from None
    return s


def too_deep(value, limit=MAX_DEPTH):
    """Whether a decoded JSON value nests lists / dicts deeper than `limit` (as plain() counts)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)):
            if depth >= limit:   # its items would sit deeper than the limit
                return bool(v)
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return False


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
        # a pair whose input or output is longer than this as JSON is not sent (still
        # called: the calls after it see the state it leaves, as without the bound)
        pair_limit = job.get("pair_bytes") or self.limit
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
            elif len(text) > pair_limit or len(value) > pair_limit:
                self.frame("big")   # too large to record: its values stay here
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


def user_tasks(uid):
    """Tasks (threads of every process) whose real uid is `uid`: what RLIMIT_NPROC counts
    for that uid outside a user namespace of our own."""
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                text = f.read()
        except OSError:
            continue
        real = threads = None
        for line in text.split(b"\n"):
            if line.startswith(b"Uid:"):
                real = int(line.split()[1])
            elif line.startswith(b"Threads:"):
                threads = int(line.split()[1])
                break
        if real == uid and threads:
            n += threads
    return n


def isolate(job, workdir, fds, ids):
    """Session, standard fds, directory, rlimits, privileges (in the child, before the code).

    RLIMIT_NPROC counts every task of the job's real uid in its user namespace. With a uid
    or a user namespace of the worker's own, those are the job's; otherwise (an ordinary
    user where namespaces are refused) they include the user's other programs, counted by
    the worker as ``fds["tasks"]`` and added to the limit, so that the limit still means
    what the job itself may start.

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
                         (resource.RLIMIT_NPROC, (lim["nproc"] + fds.get("tasks", 0),) * 2)):
        resource.setrlimit(which, value)
    if not fds["no_new_privs"]:
        prctl(PR_SET_NO_NEW_PRIVS, 1)   # no setuid binary gives privileges back
    if ids is not None:
        os.setgroups([])
        os.setresgid(ids, ids, ids)
        os.setresuid(ids, ids, ids)
    else:
        drop_capabilities()
    # the system-call filter (sandbox_filter.py) is the worker's own, inherited at the fork
