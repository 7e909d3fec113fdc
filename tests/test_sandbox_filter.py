"""The system-call filter of jobs (sandbox_filter.py): in force in every job and everything
it starts, refusing new namespaces, mounts and ptrace with EPERM, while threads, fork,
subprocess, multiprocessing, numpy and scipy keep working; the same as root and as an
ordinary user. Jobs without it are reported, never silently unfiltered."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from annoy_datasync import cli, status
from annoy_datasync import executor as executor_mod
from annoy_datasync.executor import Executor, Limits
from test_executor import _nobody_python, open_tmp, settle  # noqa: F401 - fixture
from testutil import SRC

sys.path.insert(0, str(SRC / "annoy_datasync"))
import sandbox_filter  # noqa: E402 - the worker's sibling module, stdlib only

LIMITS = Limits(cpu_time=10, wall_time=10)

# What a hostile job tries. Each attempt runs in a forked child, so that one that works
# (without the filter) changes nothing for the next; the result is "ok" or the errno's name.
DENIED = r'''
import ctypes, errno, os

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
NR = {"x86_64": {"clone": 56, "clone3": 435, "process_vm_readv": 310},
      "aarch64": {"clone": 220, "clone3": 435, "process_vm_readv": 270}}[os.uname().machine]


def unshare(flags):
    if hasattr(os, "unshare"):      # Python 3.12+
        os.unshare(flags)
    elif libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare")


def in_child(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            fn()
            out = "ok"
        except OSError as exc:
            out = errno.errorcode.get(exc.errno, str(exc.errno))
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    out = os.read(r, 100).decode()
    os.waitpid(pid, 0)
    return out


def check(ret):
    if ret != 0:
        raise OSError(ctypes.get_errno(), "call")


def userns_then_mount():
    unshare(CLONE_NEWUSER | CLONE_NEWNS)
    check(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))


def main_solution():
    with open("/proc/self/status") as f:
        seccomp = re.search(r"^Seccomp:\s*(\d+)", f.read(), re.M).group(1)
    return {
        "seccomp": seccomp,
        "unshare_user": in_child(lambda: unshare(CLONE_NEWUSER)),
        "userns_then_mount": in_child(userns_then_mount),
        "mount": in_child(lambda: check(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))),
        # let through by the filter for the worker; the kernel refuses it to the job
        "remount": in_child(lambda: check(libc.mount(None, b"/tmp", None, 32 | 2 | 4,
                                                     b"size=4g"))),
        "ptrace_traceme": in_child(lambda: check(libc.ptrace(0, 0, None, None))),
        "clone_newuser": in_child(lambda: os.waitpid(clone_newuser(), 0)),
        "clone3": in_child(lambda: check(libc.syscall(NR["clone3"], None, 0))),
        "process_vm_readv": in_child(lambda: check(min(0, libc.syscall(
            NR["process_vm_readv"], os.getpid(), None, 0, None, 0, 0)))),
    }


def clone_newuser():
    # clone(CLONE_NEWUSER | SIGCHLD) as fork: the child exits at once
    pid = libc.syscall(NR["clone"], CLONE_NEWUSER | 17, None, None, None, None)
    if pid < 0:
        raise OSError(ctypes.get_errno(), "clone")
    if pid == 0:
        os._exit(0)
    return pid
'''.replace("import ctypes, errno, os", "import ctypes, errno, os, re")

# What ordinary snippets do; each part reports the Seccomp field of the process or thread
# that did it (2: a filter in force), so the test fails without the filter.
ALLOWED = r'''
import multiprocessing, os, re, subprocess, sys, threading, types


def seccomp(path="/proc/self/status"):
    with open(path) as f:
        return re.search(r"^Seccomp:\s*(\d+)", f.read(), re.M).group(1)


def square(x):
    return [x * x, seccomp()]


STATUS = "import re; print(re.search(r'^Seccomp:\\s*(\\d+)', open('/proc/self/status').read(), re.M).group(1))"


def main_solution():
    out = {"seccomp": seccomp()}
    seen = []
    t = threading.Thread(target=lambda: seen.append(seccomp("/proc/thread-self/status")))
    t.start()
    t.join()
    out["thread"] = seen
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, seccomp().encode())
        os._exit(7)
    os.close(w)
    _, st = os.waitpid(pid, 0)
    out["fork"] = [os.read(r, 10).decode(), os.waitstatus_to_exitcode(st)]
    p = subprocess.run([sys.executable, "-c", STATUS], capture_output=True, text=True)
    out["python"] = [p.returncode, p.stdout.strip()]
    # the job's module is not importable by name: make `square` picklable for the pool
    sys.modules[__name__] = types.SimpleNamespace(square=square)
    with multiprocessing.Pool(2) as pool:
        out["pool"] = pool.map(square, [1, 2, 3])
    try:
        import numpy as np
        import scipy.linalg
        import scipy.optimize
    except ImportError:     # an interpreter without them (the one uid 65534 can run)
        out["numpy"] = out["scipy"] = "absent"
        return out
    a = np.array([[4.0, 1.0], [2.0, 3.0]])
    out["numpy"] = [round(float(np.linalg.det(a)), 9),
                    sorted(round(float(x), 9) for x in np.linalg.eigvals(a))]
    out["scipy"] = [round(float(scipy.linalg.det(a)), 9),
                    round(float(scipy.optimize.brentq(lambda x: x * x - 2, 0, 2)), 9)]
    return out
'''


def _run(code: str, run_path: Path, filtered: bool, monkeypatch) -> tuple[bool, object]:
    monkeypatch.setattr(executor_mod, "USE_SYSCALL_FILTER", filtered)
    with Executor(run_path=str(run_path), workers=1, limits=LIMITS, preload=("math",)) as ex:
        r = ex.run_calls(textwrap.dedent(code), [{}]).result(120)[0]
        assert settle(ex) == []
        assert r.status == status.SUCCESS, (r.message, r.stderr)
        return ex.syscalls_filtered, r.value


EPERM = errno.errorcode[errno.EPERM]
DENIED_FILTERED = {"seccomp": "2", "unshare_user": EPERM, "userns_then_mount": EPERM,
                   "mount": EPERM, "remount": EPERM, "ptrace_traceme": EPERM, "clone_newuser": EPERM,
                   "clone3": errno.errorcode[errno.ENOSYS], "process_vm_readv": EPERM}
ALLOWED_FILTERED = {"seccomp": "2", "thread": ["2"], "fork": ["2", 7],
                    "python": [0, "2"], "pool": [[1, "2"], [4, "2"], [9, "2"]],
                    "numpy": [10.0, [2.0, 5.0]], "scipy": [10.0, round(2 ** 0.5, 9)]}


def _check_unfiltered(got: dict) -> None:
    """Without the filter the same job gets through where the kernel lets it: what makes
    the difference above is the filter."""
    assert got["seccomp"] == "0"
    assert got["ptrace_traceme"] == "ok"
    assert got["clone3"] != "ENOSYS"
    if got["unshare_user"] == "ok":     # user namespaces allowed on this kernel
        assert got["clone_newuser"] == "ok"
        assert got["userns_then_mount"] == "ok"


def test_jobs_cannot_make_namespaces_mount_or_ptrace(tmp_path, monkeypatch):
    filtered, got = _run(DENIED, tmp_path / "run", True, monkeypatch)
    assert filtered is True
    assert got == DENIED_FILTERED
    filtered, got = _run(DENIED, tmp_path / "run2", False, monkeypatch)
    assert filtered is False
    _check_unfiltered(got)


def test_threads_fork_subprocess_multiprocessing_numpy_scipy_work(tmp_path, monkeypatch):
    pytest.importorskip("scipy")
    filtered, got = _run(ALLOWED, tmp_path / "run", True, monkeypatch)
    assert filtered is True
    assert got == ALLOWED_FILTERED


def test_the_same_as_an_ordinary_user(open_tmp):  # noqa: F811
    py = _nobody_python()
    if py is None:
        pytest.skip("needs root, setpriv and an interpreter readable by uid 65534")
    (open_tmp / "codes.json").write_text(json.dumps({"denied": DENIED, "allowed": ALLOWED}))
    script = open_tmp / "as_user.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(SRC)!r})
        import annoy_datasync.executor as executor_mod
        from annoy_datasync.executor import Executor, Limits
        codes = json.load(open({str(open_tmp / "codes.json")!r}))
        out = {{}}
        for filtered in (True, False):
            executor_mod.USE_SYSCALL_FILTER = filtered
            with Executor(run_path={str(open_tmp / "run")!r}, workers=1, preload=("math",),
                          limits=Limits(cpu_time=10, wall_time=10)) as ex:
                for name, code in codes.items():
                    if name == "allowed" and not filtered:
                        continue
                    r = ex.run_calls(code, [{{}}]).result(120)[0]
                    out[f"{{name}} {{filtered}}"] = [ex.syscalls_filtered, r.status, r.value,
                                                   r.message, r.stderr[-2000:]]
        print(json.dumps(out))
    """))
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           py, str(script)], capture_output=True, text=True, timeout=240,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                          cwd=str(open_tmp))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    allowed = dict(ALLOWED_FILTERED)
    if subprocess.run([py, "-c", "import numpy, scipy"], capture_output=True).returncode:
        allowed["numpy"] = allowed["scipy"] = "absent"
    for key, want in (("denied True", DENIED_FILTERED), ("allowed True", allowed)):
        filtered, st, value, msg, err = out[key]
        assert (filtered, st) == (True, status.SUCCESS), (key, msg, err)
        assert value == want, key
    filtered, st, value, msg, err = out["denied False"]
    assert (filtered, st) == (False, status.SUCCESS), (msg, err)
    _check_unfiltered(value)


def test_jobs_without_the_filter_are_reported(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(executor_mod, "USE_SYSCALL_FILTER", False)
    monkeypatch.setattr(executor_mod, "_warned", set())
    with Executor(run_path=str(tmp_path / "run"), workers=1, preload=("math",)) as ex:
        assert ex.syscalls_filtered is False
        counts: Counter = Counter()
        cli.view_counts(counts, [ex])
    assert counts[status.SYSCALLS_UNFILTERED] == 1
    assert any("no system-call filter for jobs" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(executor_mod, "USE_SYSCALL_FILTER", True)
    with Executor(run_path=str(tmp_path / "run"), workers=1, preload=("math",)) as ex:
        counts = Counter()
        cli.view_counts(counts, [ex])
    assert status.SYSCALLS_UNFILTERED not in counts


def test_another_architecture_has_no_filter_and_says_so(monkeypatch):
    assert sandbox_filter.program("ppc64le") is None
    real = os.uname()
    fake = os.uname_result((real.sysname, real.nodename, real.release, real.version,
                            "riscv64"))
    monkeypatch.setattr(sandbox_filter.os, "uname", lambda: fake)
    filt = sandbox_filter.Filter()
    assert filt.available is False
    assert "riscv64" in filt.reason


# ----------------------------------------------------------------- the program itself
def _header_numbers(path: str, pattern: str) -> dict[str, int]:
    text = Path(path).read_text()
    return {m.group(1): int(m.group(2)) for m in re.finditer(pattern, text, re.M)}


@pytest.mark.parametrize("machine, header, pattern", [
    ("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
     r"^#define __NR_(\w+)\s+(\d+)\s*$"),
    ("aarch64", "/usr/include/asm-generic/unistd.h",
     r"^#define __NR(?:3264)?_(\w+)\s+(\d+)\s*$"),
])
def test_numbers_match_the_kernel_headers(machine, header, pattern):
    if not os.path.exists(header):
        pytest.skip(f"no {header}")
    numbers = _header_numbers(header, pattern)
    table = sandbox_filter.ARCHES[machine][1]
    assert set(sandbox_filter.DENIED) | {"mount", "clone", "clone3", "personality"} <= set(table)
    for name, nr in table.items():
        if name in numbers:        # an old header may lack the newest calls
            assert numbers[name] == nr, name


def _emulate(prog, arch: int, nr: int, arg0: int = 0, arg3: int = 0) -> int:
    """Run a program of our five opcodes on one seccomp_data."""
    data = {sandbox_filter.OFF_NR: nr & 0xFFFFFFFF, sandbox_filter.OFF_ARCH: arch,
            sandbox_filter.OFF_ARG0_LOW: arg0 & 0xFFFFFFFF,
            sandbox_filter.OFF_ARG3_LOW: arg3 & 0xFFFFFFFF}
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == sandbox_filter.LD_ABS:
            acc = data[k]
            pc += 1
        elif code == sandbox_filter.RET:
            return k
        else:
            hit = {sandbox_filter.JEQ: acc == k, sandbox_filter.JGE: acc >= k,
                   sandbox_filter.JSET: bool(acc & k)}[code]
            pc += 1 + (jt if hit else jf)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_decisions_of_the_program(machine):
    prog = sandbox_filter.program(machine)
    arch, nrs = sandbox_filter.ARCHES[machine]
    eperm = sandbox_filter.RET_ERRNO | errno.EPERM
    allow = sandbox_filter.RET_ALLOW
    for name in sandbox_filter.DENIED:
        assert _emulate(prog, arch, nrs[name]) == eperm, name
    assert _emulate(prog, arch, nrs["clone3"]) == sandbox_filter.RET_ERRNO | errno.ENOSYS
    fork_flags = 0x01200000 | 17      # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
    thread_flags = 0x003D0F00         # what pthread_create passes
    assert _emulate(prog, arch, nrs["clone"], fork_flags) == allow
    assert _emulate(prog, arch, nrs["clone"], thread_flags) == allow
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                 0x40000000):
        assert _emulate(prog, arch, nrs["clone"], fork_flags | flag) == eperm, hex(flag)
    # mount: only the worker's remount of its tmpfs options (a bind remount could make a
    # read-only mount writable); the kernel still asks for CAP_SYS_ADMIN, which no job has
    assert _emulate(prog, arch, nrs["mount"], arg3=0) == eperm
    assert _emulate(prog, arch, nrs["mount"], arg3=sandbox_filter.MS_BIND) == eperm
    assert _emulate(prog, arch, nrs["mount"], arg3=32 | 2 | 4) == allow     # the worker's resize
    assert _emulate(prog, arch, nrs["mount"], arg3=32 | 4096 | 1) == eperm
    assert _emulate(prog, arch, nrs["personality"], 0xFFFFFFFF) == allow
    assert _emulate(prog, arch, nrs["personality"], 0) == allow
    assert _emulate(prog, arch, nrs["personality"], 0x0040000) == eperm   # ADDR_NO_RANDOMIZE
    special = {nrs[n] for n in sandbox_filter.DENIED} | {nrs["clone"], nrs["clone3"],
                                                        nrs["mount"]}
    for nr in range(600):       # every other number is allowed (clone's arg 0 is 0 here)
        if nr not in special and nr != nrs["personality"]:
            assert _emulate(prog, arch, nr) == allow, nr
    assert _emulate(prog, 0x40000003, 20) == eperm       # an i386 call: a foreign ABI
    x32 = _emulate(prog, arch, 0x40000000 | 39)
    assert x32 == (eperm if machine == "x86_64" else allow)
    assert all(0 <= jt < 256 and 0 <= jf < 256 for _, jt, jf, _ in prog)
