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
  5. install the system-call filter (sandbox_filter.py) on itself, so that every job and
     all it starts inherit it from the fork: EPERM for new namespaces, mount (but the
     worker's own tmpfs remounts), chroot, pivot_root, ptrace, bpf, perf_event_open,
     io_uring, keyrings, module loading, clock setters ..., ENOSYS for clone3 so that glibc
     uses clone, whose flags the filter checks. Where it cannot be installed (seccomp off
     in the kernel, an architecture without a table) the jobs run without it and the
     hello says so (notes, "syscall_filter"); say hello.
Per job (the child's side is sandbox_job.py, the time accounting sandbox_time.py): fork a
child that starts a session, closes stdin, gets a fresh 0700 directory,
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
import json
import mmap
import os
import select
import signal
import sys
import time

# the namespaces and the file system a job sees (a sibling module: we run as a script)
from sandbox_view import (CLONE_NEWUSER, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, View,
                          enter_namespaces, prctl, remove_tree, unshare)
# the CPU and idle time of a running job, its budgets (also a sibling module)
from sandbox_time import JobClock
# the job's child process: isolation, running the code, the frames it writes (a sibling too)
from sandbox_job import (COUNTER, HEADER, MAX_DEPTH, child_main, recv, send, too_deep,
                         user_tasks)
# the system calls a job may not make (a sibling too)
from sandbox_filter import Filter

# fork(2) for job children, called with the GIL held (see job_fork).
_libc_gil = ctypes.PyDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc_gil.fork.restype = ctypes.c_int
_libc_gil.fork.argtypes = []


def job_fork():
    """fork() for a job child -> (pid, hooks_ran).

    os.fork runs the interpreter's at-fork hooks in the child (threading's bookkeeping of
    the other threads, random's reseed from os.urandom, lock re-initialisation): work and
    copied memory pages in every job (bench/bench_executor.py measures the job rate). They
    exist for processes with other threads; the server has none, so when /proc/self/task
    shows a single thread the child is made by fork(2) itself (GIL held, glibc's own fork
    handlers still run) and reseeds `random` itself where the job does not seed it
    (child_main). With any other thread, os.fork."""
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


def _no_constant(name):
    raise ValueError(f"{name} in a frame")


# ----------------------------------------------------------------- the worker (trusted)
class Worker:
    def __init__(self, cfg):
        self.cfg = cfg
        self.S = cfg["status"]
        self.statuses = set(self.S.values())
        self.run_path = cfg["run_path"]
        self.ids = cfg.get("job_uid")   # None when not root
        self.pidns = False
        self.tasks_at = None      # (when, count) of others_tasks
        self.pending = None
        self.view = None        # sandbox_view.View once the file system view is built
        self.notes = []
        self.n = 0
        self.parent_fd = None   # pidfd of the step: readable once the step has exited
        self.counters = None    # a page shared with the job children (made on first use)
        self.devnull = None     # /dev/null, the stdin of every job
        self.no_new_privs = False   # set on the worker itself: every job inherits it
        self.filter = None      # sandbox_filter.Filter, once installed and in force
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

    def install_filter(self):
        """Install the system-call filter on the worker itself, once its set-up is done (the
        namespaces, the view): every job forked from then on inherits it, so a job pays
        nothing for it (installing a filter costs ~0.1-0.2 ms of kernel time here, about
        8% of the rate of short jobs when done per job: bench/bench_executor.py). The
        worker needs none of the refused calls after its set-up; the filter lets through
        the one it still makes, a tmpfs remount (see sandbox_filter.py). Then a child
        checks that a new user namespace is refused. Where any of this fails, a note says
        why: the jobs then run without the filter, which the executor reports."""
        what = "no system-call filter for jobs"
        if not self.cfg.get("syscall_filter", True):
            self.notes.append(f"{what} (turned off by the caller)")
            return
        filt = Filter()
        if not filt.available:
            self.notes.append(f"{what} ({filt.reason})")
            return
        try:
            if not self.no_new_privs:
                prctl(PR_SET_NO_NEW_PRIVS, 1)
                self.no_new_privs = True
            filt.install()
        except OSError as exc:
            self.notes.append(f"{what} (the kernel refused it: {exc.strerror})")
            return
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                unshare(CLONE_NEWUSER)
                code = 4    # installed, yet not in force
            except OSError as exc:
                code = 0 if exc.errno == errno.EPERM else 4
            finally:
                os._exit(code)
        _, st = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(st)
        if code == 0:
            self.filter = filt
        else:
            self.notes.append(f"{what} (it did not take effect: probe status {code})")

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
        tasks = self.others_tasks()
        pid, hooks_ran = job_fork()
        if pid == 0:
            child_main(self.cfg, job, token, workdir,
                       {"out": out_w, "err": err_w, "res": res_w, "null": self.devnull,
                        "no_new_privs": self.no_new_privs, "tasks": tasks},
                       self.ids, hooks_ran, self.counters)
        for fd in (res_w, out_w, err_w):
            os.close(fd)
        state = {"ready": False, "calls": [], "pairs": [], "errors": {}, "done": False,
                 "end": None, "n": len(job["inputs"]),
                 "max_pairs": job.get("max_pairs", 0), "max_calls": job.get("max_calls", 0)}
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

    def others_tasks(self):
        """Tasks of our uid that RLIMIT_NPROC would count against the job although they are
        not its own: none with a job uid (root) or a user namespace of ours; otherwise the
        user's other programs, recounted at most once a second (a scan of /proc)."""
        if self.ids is not None or self.pidns:
            return 0
        now = time.monotonic()
        if self.tasks_at is None or now - self.tasks_at[0] > 1.0:
            self.tasks_at = (now, user_tasks(os.getuid()))
        return self.tasks_at[1]

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
                # NaN and Infinity: our child code never writes them (and they would make
                # the answer to the executor unwritable)
                msg = json.loads(body, parse_constant=_no_constant)
                # (a frame with fewer brackets than the limit cannot nest deeper)
                deep = body.count(b"[") + body.count(b"{") > MAX_DEPTH
                ok = self.apply(msg, token, state, deep) if isinstance(msg, dict) else False
            except (ValueError, RecursionError, KeyError, TypeError):
                ok = False
            if not ok:
                return "The code wrote to the executor's result channel."
        return None

    def apply(self, msg, token, state, deep=True):
        """Take one frame into `state`; False when it is not one our child code writes (the
        code can learn the token and write frames of its own: these are checked here so
        that the answer stays writable and bounded; the executor judges the values)."""
        if msg.get("k") != token:
            return False
        kind = msg["t"]
        if "s" in msg and msg["s"] not in self.statuses:
            return False
        if not isinstance(msg.get("e"), (str, type(None))) or \
                not isinstance(msg.get("m", ""), str):
            return False
        if deep and any(too_deep(msg[key]) for key in ("v", "in", "out") if key in msg):
            return False
        if kind == "ready":
            state["ready"] = True
        elif kind == "fatal":
            if msg["s"] == self.S["SUCCESS"]:
                return False
            state["end"] = (msg["s"], msg.get("e"), msg["m"])
            state["done"] = True
        elif kind == "call":
            if msg["i"] != len(state["calls"]) or len(state["calls"]) >= state["n"]:
                return False
            d = msg.get("d", 0.0)
            if type(d) not in (int, float) or not 0 <= d < 1e9:
                return False
            if ("v" in msg) != (msg["s"] == self.S["SUCCESS"]):
                return False    # a value comes with success, and only with it
            res = self.result(msg["s"], msg.get("e"), msg.get("m", ""), msg.get("v"), float(d))
            if "r" in msg:      # a watched fresh call: did it draw random numbers, read a clock
                res["random"], res["clock"] = msg["r"] is True, msg["c"] is True
            state["calls"].append(res)
            state["done"] = len(state["calls"]) == state["n"]
        elif kind == "pair":
            if len(state["pairs"]) >= state["max_pairs"] or not isinstance(msg["in"], dict):
                return False
            state["pairs"].append({"input": msg["in"], "output": msg["out"]})
        elif kind in ("err", "big"):
            if sum(state["errors"].values()) >= state["max_calls"]:
                return False
            key = msg["s"] if kind == "err" else "too_large"
            state["errors"][key] = state["errors"].get(key, 0) + 1
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
    worker.install_filter()     # last: the set-up above mounts, pivots and unshares
    # The preloaded modules live as long as the worker: keep them out of garbage collection,
    # so that a collection in a job's child does not walk (and copy, page by page, from
    # the worker) every object of numpy & co.
    gc.freeze()
    send(wr, {"hello": True, "pidns": worker.pidns, "notes": worker.notes,
              "view": worker.view is not None, "syscall_filter": worker.filter is not None,
              "pid": os.getpid()})
    worker.serve(rd, wr)


if __name__ == "__main__":
    main()
