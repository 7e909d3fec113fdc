"""The time accounting of a sandbox worker's jobs: how much CPU and idle time a job has used.

Standard library only, imported by ``sandbox_worker.py`` as a sibling module (the worker is
started as a script under the target interpreter). The worker (trusted, outside the job)
holds one JobClock, starts it when it forks a job and asks it, while relaying the job's
output, whether the job is out of time and when to measure it next; the verdict is the
worker's. What a job is charged: the CPU time of every process and thread of it (the ones
the worker reaped and the live ones, read from /proc), and, as a backstop for code that
does not compute, its idle time (wall time less CPU time less the time it waited for a
CPU); a plain wall-clock limit only for a machine so overloaded that the job hardly runs.
"""

import os
import resource

CLK_TCK = os.sysconf("SC_CLK_TCK")          # unit of the CPU times in /proc/<pid>/stat
NCPU = max(1, len(os.sched_getaffinity(0)))  # a job uses at most this many CPU-seconds per second
MIN_CHECK_S = 0.005     # shortest wait between two measurements of a running job
# Last resort: a call ends after this many times (CPU budget + idle allowance) of wall-clock
# time whatever it did (a job that hardly gets a CPU on an overloaded machine).
STALL_FACTOR = 10


class JobClock:
    """The CPU and idle time of the running job, and its budgets (see job_usage, budgets_left)."""

    def __init__(self, status):
        self.status = status        # the executor's status names (cfg["status"])
        self.pidns = False          # the worker is PID 1 of its own PID namespace
        self.cpu_base = 0.0         # our RUSAGE_CHILDREN CPU time when the running job began
        self.zombies: dict[int, int] = {}   # pid -> CPU ticks of the job's zombies (last scan)
        self.proc_readable = True   # /proc shows the job's live processes (see probe_proc)
        self.schedstat = True       # ... and their run-queue wait
        # run-queue wait (ns) of each thread of the job, as last read: a thread or process
        # that has ended is no longer in /proc, and the time it waited for a CPU must not
        # turn into idle time then (a job whose worker thread waited under load and ended
        # was stopped for idling)
        self.waits: dict[tuple[int, str], int] = {}
        self.ended_wait_ns = 0      # of threads whose id was taken again by a new thread

    def probe_proc(self, pidns, notes):
        """What /proc tells us (as the namespace set it up) about a job's live processes;
        `pidns`: the worker is PID 1 of its own PID namespace. Explanations go to `notes`."""
        self.pidns = pidns
        me = os.getpid()
        self.proc_readable = os.path.exists(f"/proc/{me}/stat")
        self.schedstat = self.proc_readable and os.path.exists(f"/proc/{me}/schedstat")
        if not self.proc_readable:
            notes.append("no /proc: a job's CPU time is bounded per process (RLIMIT_CPU) "
                         "and counted only for its processes that have ended")
        elif not self.schedstat:
            notes.append("no /proc/<pid>/schedstat: the wall-clock backstop also counts "
                         "the time a job waits for a CPU")

    def start_job(self):
        """A job is about to be forked; every process of the last one has been reaped."""
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_base = ru.ru_utime + ru.ru_stime
        self.zombies = {}
        self.waits = {}
        self.ended_wait_ns = 0

    def job_usage(self, main=None):
        """(CPU seconds, seconds spent waiting for a CPU) of the running job so far.

        With `main` (the job's own process), a quick reading at the end of a call: that
        process and the zombies the last full reading found, no scan of /proc. The CPU time
        of the job's other live processes is then charged to the next call too (never less
        than it used, so only code that keeps processes computing across calls is
        short-changed); a zombie is charged once more at most, if it ended after the last
        full reading.

        CPU: the job's processes that we reaped (RUSAGE_CHILDREN since the job began, which
        includes what they had reaped themselves) plus the live ones, read from
        /proc/<pid>/stat (user + system time of all the process's threads and of the
        children it reaped; a zombie still shows its own). With a PID namespace every
        process but us is the job's (orphans come to us, PID 1, and stay zombies until the
        job ends); without one, our descendants (a subreaper). CPU wait: the run-queue delay
        of each live thread, from /proc/<pid>/task/<tid>/schedstat, 0 where the kernel
        does not have it, plus that of the threads and processes of the job that have ended
        (as last read: they are gone from /proc)."""
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = ru.ru_utime + ru.ru_stime - self.cpu_base
        if not self.proc_readable:
            return cpu, 0.0
        me = os.getpid()
        procs = {}
        # A zombie's CPU time is final. Seen by a full scan, it is counted in every reading
        # after it, also in the quick one that marks a call's start: otherwise each later
        # call would be charged again with what an ended process used before it began.
        quick = () if main is None else [str(z) for z in self.zombies]
        for entry in os.listdir("/proc") if main is None else [str(main)] + quick:
            if entry.isdigit() and int(entry) != me:
                try:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        procs[int(entry)] = f.read().rsplit(b")", 1)[1].split()
                except (OSError, IndexError):
                    continue     # gone meanwhile: it was reaped, RUSAGE_CHILDREN has it
        if not self.pidns and main is None:
            procs = descendants(procs, me)
        zombies = {pid: sum(int(x) for x in f[11:15]) for pid, f in procs.items()
                   if f[0] == b"Z" and pid != main}
        if main is None:
            self.zombies = zombies
        else:       # still the zombie seen (not reaped meanwhile, its pid not reused)
            procs = {pid: f for pid, f in procs.items()
                     if pid == main or self.zombies.get(pid) == zombies.get(pid)}
        ticks = 0
        for pid, fields in procs.items():
            ticks += sum(int(x) for x in fields[11:15])   # utime stime cutime cstime
            if not self.schedstat:
                continue
            # per thread: a process's own schedstat is its main thread's only
            tids = (pid,) if fields[17] == b"1" or main is not None else self.threads(pid)
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                        wait = int(f.read().split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                key = (pid, str(tid))
                before = self.waits.get(key, 0)
                if wait < before:           # a new thread with the id of one that ended
                    self.ended_wait_ns += before
                self.waits[key] = wait
        return cpu + ticks / CLK_TCK, (sum(self.waits.values()) + self.ended_wait_ns) / 1e9

    @staticmethod
    def threads(pid):
        try:
            return os.listdir(f"/proc/{pid}/task")
        except OSError:
            return ()

    @staticmethod
    def budgets_left(lim, total, mark, usage):
        """(CPU seconds, idle seconds, wall seconds) the job has left at `usage` = (time,
        CPU, CPU wait): for the current call (since `mark`) and, with a generator's `total`
        = (budget, start), for the job. Idle time is wall time spent neither computing nor
        waiting for a CPU (sleeping, blocked, stopped); where the kernel does not report
        the wait, waiting counts as idle. The plain wall clock is only a last resort
        against a machine so overloaded that the job hardly runs."""
        now, cpu, wait = usage
        used = cpu - mark[1]
        cpu_left = lim["cpu_time"] - used
        idle_left = lim["wall_time"] - ((now - mark[0]) - used - max(0.0, wait - mark[2]))
        wall_left = STALL_FACTOR * (lim["cpu_time"] + lim["wall_time"]) - (now - mark[0])
        if total is not None:
            budget, t0 = total
            cpu_left = min(cpu_left, budget + lim["cpu_time"] - cpu)
            idle_left = min(idle_left, budget + lim["wall_time"] - ((now - t0) - cpu - wait))
            wall_left = min(wall_left, STALL_FACTOR * (budget + lim["cpu_time"] + lim["wall_time"])
                            - (now - t0))
        return cpu_left, idle_left, wall_left

    def over_limit(self, lim, total, mark, usage):
        """(status, error_type, message) when the job is out of CPU, idle or wall time."""
        cpu_left, idle_left, wall_left = self.budgets_left(lim, total, mark, usage)
        if cpu_left <= 0:
            return (self.status["TIMEOUT"], "cpu",
                    f"The code used more than {lim['cpu_time']:g} s of CPU time.")
        if idle_left <= 0:
            return (self.status["WALL_TIMEOUT"], "wall",
                    f"The code stopped computing for more than {lim['wall_time']:g} s "
                    f"(it slept, blocked or was stopped).")
        if wall_left <= 0:
            return (self.status["WALL_TIMEOUT"], "wall",
                    "The code did not finish within "
                    f"{STALL_FACTOR * (lim['cpu_time'] + lim['wall_time']):g} s of wall-clock "
                    "time (the machine may be overloaded).")
        return None

    def check_after(self, lim, total, mark, usage):
        """Seconds until a limit could be reached: CPU time accrues at most NCPU times as
        fast as wall time, idle time at most as fast."""
        cpu_left, idle_left, wall_left = self.budgets_left(lim, total, mark, usage)
        return max(MIN_CHECK_S, min(cpu_left / NCPU, idle_left, wall_left))


def descendants(procs, root):
    """The entries of `procs` (pid -> /proc/<pid>/stat fields after the name) that descend
    from `root`."""
    kids = {}
    for pid, fields in procs.items():
        kids.setdefault(int(fields[1]), []).append(pid)
    found, stack = {}, list(kids.get(root, ()))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found[pid] = procs[pid]
            stack.extend(kids.get(pid, ()))
    return found
