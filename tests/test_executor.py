"""The executor against hostile and broken code: each test checks the status, that nothing
the job started is still running, and that its working directory is gone."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from annoy_datasync import executor as executor_mod
from annoy_datasync import status
from annoy_datasync.executor import Executor, ExecutorFailed, JobResult, Limits
from testutil import SRC, cpu_burners

LIMITS = Limits(wall_time=1.5, cpu_time=1.5, memory_mb=1024, nproc=16, fsize_mb=1,
                nofile=32, output_bytes=4096)
SECRET = "sk-test-secret-0123456789"


def _procs() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, real uid) of every process on the machine."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, ValueError, StopIteration, IndexError):
            continue
        out[int(entry)] = (ppid, uid)
    return out


def leftovers(ex: Executor) -> list[int]:
    """Processes of past jobs still alive: descendants of a worker other than the worker's
    own server process, and (as root) anything running under the executor's job uids."""
    procs = _procs()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    found = []
    for w in ex._workers:
        servers = kids.get(w.proc.pid, [])   # the PID-1 server (or none without a pid ns)
        stack = [k for s in servers for k in kids.get(s, [])]
        while stack:
            p = stack.pop()
            found.append(p)
            stack.extend(kids.get(p, []))
    if os.geteuid() == 0:
        found += [p for p, (_, uid) in procs.items()
                  if ex.uid_base <= uid < ex.uid_base + 128]
    return sorted(set(found))


def settle(ex: Executor) -> list[int]:
    """Leftovers once the worker finished its clean-up: it sends SIGKILL to every process of
    the job before answering, then reaps them and removes the directory (within ms)."""
    deadline = time.monotonic() + 10     # a condition, not a clock: a leftover stays for good
    while True:
        left = leftovers(ex)
        if not left and not os.listdir(ex.run_path):
            return []
        if time.monotonic() > deadline:
            return left or os.listdir(ex.run_path)
        time.sleep(0.02)


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = SECRET      # the step's secret: jobs must not see it
    run = tmp_path_factory.mktemp("exec") / "run"
    try:
        with Executor(run_path=str(run), workers=2, limits=LIMITS) as executor:
            yield executor
    finally:
        if old is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = old


def run1(ex: Executor, code: str, inp: dict | None = None, **kw) -> JobResult:
    res = ex.run_calls(textwrap.dedent(code), [inp or {}], **kw).result(timeout=60)
    assert len(res) == 1
    assert settle(ex) == [], "a process of the job is still running"
    assert os.listdir(ex.run_path) == [], "the job's directory was not removed"
    return res[0]


def test_pass_and_wrong_answer_values_come_back(ex):
    code = "def main_solution(a, b):\n    return {'sum': a + b, 'items': [a, b, None, True, 1.5]}\n"
    res = ex.run_calls(code, [{"a": 1, "b": 2}, {"a": 2, "b": 2}]).result(timeout=60)
    assert [r.status for r in res] == [status.SUCCESS, status.SUCCESS]
    assert res[0].value == {"sum": 3, "items": [1, 2, None, True, 1.5]}
    assert res[1].value["sum"] == 4 != 5      # a wrong answer is the caller's comparison
    assert settle(ex) == []


def test_exception_has_type_and_message(ex):
    r = run1(ex, "def main_solution(x):\n    raise ValueError('x must be positive')\n", {"x": -1})
    assert (r.status, r.error_type) == (status.EXCEPTION, "ValueError")
    assert r.message == "ValueError: x must be positive"


def test_not_runnable_code(ex):
    r = run1(ex, "def main_solution(:\n")
    assert (r.status, r.error_type) == (status.NOT_RUNNABLE, "SyntaxError")
    r = run1(ex, "def other():\n    return 1\n")
    assert r.status == status.NOT_RUNNABLE and "main_solution" in r.message
    r = run1(ex, "import no_such_module_xyz\ndef main_solution():\n    return 1\n")
    assert r.status == status.NOT_RUNNABLE and "ModuleNotFoundError" in r.message
    assert r.error_type != status.EXECUTOR_ERROR   # the code's fault, not the executor's


def test_infinite_loop_times_out_and_later_calls_still_run(ex):
    code = """
    def main_solution(n):
        while n > 0:
            pass
        return n
    """
    res = ex.run_calls(textwrap.dedent(code), [{"n": 0}, {"n": 1}, {"n": -2}]).result(timeout=60)
    assert [r.status for r in res] == [status.SUCCESS, status.TIMEOUT, status.SUCCESS]
    assert [res[0].value, res[2].value] == [0, -2]
    assert settle(ex) == []


def test_loop_ignoring_sigterm_and_stopped_child(ex):
    code = """
    import os, signal
    def main_solution():
        if os.fork() == 0:
            os.kill(os.getpid(), signal.SIGSTOP)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            pass
    """
    r = run1(ex, code)
    # the parent computes (a CPU timeout), the stopped child does not hold the job up
    assert (r.status, r.error_type) == (status.TIMEOUT, "cpu")
    assert settle(ex) == []


@pytest.mark.parametrize("code, limit", [
    ("def main_solution():\n    return len(bytearray(8 * 1024 ** 3))\n", "memory"),
    ("import numpy as np\ndef main_solution():\n    return int(np.ones(2 ** 31).sum())\n", "memory"),
    ("def main_solution():\n    open('big', 'wb').write(b'x' * 2 ** 21)\n", "file size"),
    ("def main_solution():\n    return [open('/dev/null') for _ in range(100)]\n", "open files"),
], ids=["memory-bomb", "numpy-memory-bomb", "file-size", "open-files"])
def test_resource_limits(ex, code, limit):
    r = run1(ex, code)
    assert (r.status, r.error_type) == (status.RESOURCE_LIMIT, limit)


def test_bounded_process_flood(ex):
    code = """
    import os, time
    def main_solution():
        for _ in range(100):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        return 'all forked'
    """
    r = run1(ex, code)
    assert (r.status, r.error_type) == (status.RESOURCE_LIMIT, "processes")


def test_double_forked_daemon_is_killed(ex):
    code = """
    import os, time
    def main_solution():
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(120)
            os._exit(0)
        time.sleep(0.2)
        return 'parent done'
    """
    r = run1(ex, code)      # run1 asserts that the sleeping daemon is gone
    assert (r.status, r.value) == (status.SUCCESS, "parent done")


def test_writes_outside_the_run_directory_fail(ex, tmp_path):
    target = tmp_path / "escaped.txt"
    os.chmod(tmp_path, 0o777)
    code = f"""
    import os
    def main_solution():
        errors = []
        for path in [{str(target)!r}, '/usr/escaped', '/etc/escaped', '/root/escaped']:
            try:
                with open(path, 'w') as f:
                    f.write('x')
            except OSError as exc:
                errors.append(type(exc).__name__)
        with open('inside.txt', 'w') as f:   # the job's own directory is writable
            f.write('ok')
        os.chmod('.', 0o500)                 # and removed even when made read-only
        return errors
    """
    r = run1(ex, code)
    assert r.status == status.SUCCESS and len(r.value) == 4
    assert not target.exists() and not os.path.exists("/etc/escaped")
    assert not os.path.exists("/usr/escaped") and not os.path.exists("/root/escaped")


def test_no_network_to_a_local_server(ex):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.05)
    port = server.getsockname()[1]
    try:
        code = f"""
        import socket
        def main_solution():
            socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')
            return 'connected'
        """
        r = run1(ex, code)
        assert r.status == status.EXCEPTION and r.error_type in ("OSError", "ConnectionRefusedError")
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_api_key_is_not_visible(ex):
    assert os.environ["OPENAI_API_KEY"] == SECRET
    code = """
    import os
    def main_solution():
        seen = [repr(dict(os.environ))]
        for pid in ['self', str(os.getppid()), '1'] + os.listdir('/proc'):
            try:
                with open(f'/proc/{pid}/environ', 'rb') as f:
                    seen.append(f.read().decode('latin-1'))
            except OSError:
                pass
        return '\\n'.join(seen)
    """
    r = run1(ex, code)
    assert r.status == status.SUCCESS
    assert SECRET not in r.value and "OPENAI_API_KEY" not in r.value


def test_forged_markers_on_stdout_then_exit_0(ex):
    code = """
    import os, sys, json
    def main_solution():
        print(json.dumps({'status': 'success', 'output': 42}))
        print('__RESULT__ success 42')
        sys.stdout.flush()
        os._exit(0)
    """
    r = run1(ex, code)
    assert r.status == status.CRASHED and r.value is None
    assert "__RESULT__" in r.stdout


def test_forged_frame_on_the_result_fd(ex):
    code = """
    import os, json, struct
    def main_solution():
        body = json.dumps({'t': 'call', 'i': 0, 's': 'success', 'v': 42}).encode()
        for fd in range(3, 20):
            try:
                os.write(fd, struct.pack('>I', len(body)) + body)
            except OSError:
                pass
        os._exit(0)
    """
    r = run1(ex, code)
    assert (r.status, r.error_type) == (status.CRASHED, "bad frame")


def test_sys_exit_is_an_exception(ex):
    r = run1(ex, "import sys\ndef main_solution():\n    sys.exit(0)\n")
    assert (r.status, r.error_type) == (status.EXCEPTION, "SystemExit")


def test_always_equal_object_is_not_json(ex):
    code = """
    class Anything:
        def __eq__(self, other):
            return True
    def main_solution():
        return Anything()
    """
    r = run1(ex, code)
    assert r.status == status.NON_JSON and "Anything" in r.message


@pytest.mark.parametrize("expr,what", [
    ("{1, 2}", "set"), ("float('nan')", "nan"), ("[1.0, float('inf')]", "inf"),
    ("__import__('numpy').arange(3)", "ndarray"), ("10 ** 200", "int"),
    ("__import__('numpy').int64(3)", "int64"), ("{(1, 2): 3}", "tuple"),
    ("{1: 'a', '1': 'b'}", "twice"), ("b'bytes'", "bytes"), ("1j", "complex"),
])
def test_non_json_outputs(ex, expr, what):
    r = run1(ex, f"def main_solution():\n    return {expr}\n")
    assert r.status == status.NON_JSON and what in r.message


def test_json_like_outputs_are_normalised(ex):
    code = """
    import collections, numpy as np
    def main_solution():
        return [(1, 2), {3: 'int key'}, collections.Counter('aab'), np.float64(0.5)]
    """
    r = run1(ex, code)
    assert r.status == status.SUCCESS
    assert r.value == [[1, 2], {"3": "int key"}, {"a": 2, "b": 1}, 0.5]


def test_deep_recursion(ex):
    code = "def main_solution(n=0):\n    return main_solution(n + 1)\n"
    r = run1(ex, code)
    assert (r.status, r.error_type) == (status.EXCEPTION, "RecursionError")
    # recursion in C with the limit lifted overflows the stack: a crash, not a hang
    code = """
    import sys
    def main_solution():
        a = []
        for _ in range(10 ** 5):
            a = [a]
        sys.setrecursionlimit(10 ** 8)
        return repr(a)
    """
    r = run1(ex, code, limits=Limits(wall_time=20, cpu_time=20))
    assert (r.status, r.error_type) == (status.CRASHED, "SIGSEGV")


def test_100_mb_on_stdout_is_capped(ex):
    code = """
    import sys
    def main_solution():
        for _ in range(100):
            sys.stdout.write('x' * 1024 * 1024)
        return 1
    """
    r = run1(ex, code)
    assert (r.status, r.error_type) == (status.RESOURCE_LIMIT, "output size")
    assert len(r.stdout) < LIMITS.output_bytes + 100


def test_small_output_is_captured(ex):
    r = run1(ex, "import sys\ndef main_solution():\n    print('hello')\n    "
                 "print('oops', file=sys.stderr)\n    return 0\n")
    assert (r.status, r.stdout, r.stderr) == (status.SUCCESS, "hello\n", "oops\n")


def test_closed_file_descriptors(ex):
    r = run1(ex, "import os\ndef main_solution():\n    os.closerange(0, 1000)\n    return 1\n")
    assert (r.status, r.error_type) == (status.CRASHED, "result channel")


def test_input_reads_closed_stdin(ex):
    r = run1(ex, "def main_solution():\n    return input()\n")
    assert (r.status, r.error_type) == (status.EXCEPTION, "EOFError")


def test_import_of_a_module_not_preloaded(tmp_path):
    # a tiny preload list: yaml (site-packages) and difflib (stdlib) must load from disk,
    # which as root means the dropped uid must reach the interpreter's directories
    with Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS,
                  preload=("math",)) as ex2:
        code = "import difflib, yaml\ndef main_solution():\n    return yaml.safe_dump({'a': 1})\n"
        r = run1(ex2, code)
    assert (r.status, r.value) == (status.SUCCESS, "a: 1\n")


def test_inputs_are_copies_and_seed_makes_random_reproducible(ex):
    code = """
    import random, numpy as np
    def main_solution(xs):
        xs.append(random.random() + float(np.random.rand()))
        return xs
    """
    inputs = [{"xs": [1]}, {"xs": [1]}]
    res = ex.run_calls(textwrap.dedent(code), inputs, seed=7).result(timeout=60)
    assert inputs == [{"xs": [1]}, {"xs": [1]}]
    assert res[0].value == res[1].value and len(res[0].value) == 2


def test_run_generator_pairs_are_recorded_before_mutation(ex):
    code = "def main_solution(xs):\n    xs.sort()\n    out = xs[-1]\n    xs.clear()\n    return out\n"
    gen = ("import random\ndef input_generator():\n"
           "    return {'xs': [random.randint(0, 9) for _ in range(3)]}\n")
    g1 = ex.run_generator(code, gen, seed=3, max_calls=100, max_pairs=5, budget_s=5).result(60)
    g2 = ex.run_generator(code, gen, seed=3, max_calls=100, max_pairs=5, budget_s=5).result(60)
    assert g1.status == status.SUCCESS and len(g1.pairs) == 5
    assert g1.pairs == g2.pairs
    for p in g1.pairs:
        assert p["output"] == max(p["input"]["xs"])
    assert settle(ex) == []


def test_run_generator_counts_failures_and_stops_on_a_hang(ex):
    code = """
    def main_solution(n):
        if n == 3:
            while True:
                pass
        if n == 1:
            raise ValueError('one')
        if n == 2:
            return {n}
        return n
    """
    gen = "import itertools\nc = itertools.count()\ndef input_generator():\n    return {'n': next(c)}\n"
    g = ex.run_generator(textwrap.dedent(code), gen, seed=0, max_calls=10, max_pairs=10,
                         budget_s=5).result(60)
    assert g.status == status.SUCCESS
    assert g.pairs == [{"input": {"n": 0}, "output": 0}]
    assert g.errors == {status.EXCEPTION: 1, status.NON_JSON: 1, status.TIMEOUT: 1}
    assert settle(ex) == []
    bad = ex.run_generator("def main_solution():\n    return 1\n", "x = 1\n", seed=0,
                           max_calls=5, max_pairs=5, budget_s=1).result(60)
    assert bad.status == status.NOT_RUNNABLE and "input_generator" in bad.message


def test_a_killed_worker_is_replaced(tmp_path):
    with Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS) as ex2:
        outer = ex2._workers[0].proc
        server = [p for p, (ppid, _) in _procs().items() if ppid == outer.pid]
        os.kill(outer.pid, signal.SIGKILL)
        outer.wait()
        for _ in range(200):      # the PID-1 server follows its parent (PR_SET_PDEATHSIG)
            if not set(server) & set(_procs()):
                break
            time.sleep(0.02)
        assert not set(server) & set(_procs())
        first = ex2.run_calls("def main_solution():\n    return 1\n", [{}]).result(60)[0]
        second = ex2.run_calls("def main_solution():\n    return 2\n", [{}]).result(60)[0]
        # killed in the middle of a generator job
        gen = ex2.run_generator("import time\ndef main_solution():\n    return 1\n",
                                "def input_generator():\n    time.sleep(60)\n",
                                seed=0, max_calls=1, max_pairs=1, budget_s=60)
        for _ in range(500):
            if leftovers(ex2):    # the job is running
                break
            time.sleep(0.02)
        ex2._workers[0].proc.kill()
        g = gen.result(60)
        third = ex2.run_calls("def main_solution():\n    return 3\n", [{}]).result(60)[0]
    # the executor's fault, told apart from code that cannot run
    assert (first.status, first.error_type) == (status.NOT_RUNNABLE, status.EXECUTOR_ERROR)
    assert (second.status, second.value) == (status.SUCCESS, 2)
    assert (g.status, g.error_type) == (status.NOT_RUNNABLE, status.EXECUTOR_ERROR)
    assert (third.status, third.value) == (status.SUCCESS, 3)


def test_close_leaves_no_worker(tmp_path):
    ex2 = Executor(run_path=str(tmp_path / "run"), workers=2, limits=LIMITS)
    pids = [w.proc.pid for w in ex2._workers]
    ex2.close()
    alive = _procs()
    assert not [p for p in pids if p in alive]
    assert not [p for p, (ppid, _) in alive.items() if ppid in pids]


def _nobody_python() -> str | None:
    """An interpreter that uid 65534 can run (the one under /root usually is not)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None
    # The interpreter must also be able to start itself again as that uid (the executor
    # launches workers with sys.executable): setpriv may exec a path that a child cannot.
    probe = ("import sys, json, ctypes, select, subprocess; "
             "subprocess.run([sys.executable, '-c', 'pass'], check=True); print(sys.prefix)")
    for py in (sys.executable, "/usr/bin/python3"):
        if not os.path.exists(py):
            continue
        want = subprocess.run([py, "-c", probe], capture_output=True, text=True, timeout=30)
        got = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              py, "-c", probe], capture_output=True, text=True, timeout=30,
                             cwd="/")
        if got.returncode == 0 and got.stdout == want.stdout:
            return py
    return None


@pytest.fixture
def open_tmp():
    """A directory that uid 65534 can use (pytest's tmp_path is inside a 0700 directory)."""
    import tempfile
    path = Path(tempfile.mkdtemp(prefix="executor-user-", dir="/tmp"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_as_an_ordinary_user(open_tmp):
    py = _nobody_python()
    if py is None:
        pytest.skip("needs root, setpriv and an interpreter readable by uid 65534")
    tmp_path = open_tmp
    codes = {
        "ok": "import os, difflib\ndef main_solution():\n    return os.getuid()\n",
        "write": f"def main_solution():\n    open({str(tmp_path / 'x')!r}, 'w')\n",
        "net": "import socket\ndef main_solution():\n"
               "    socket.create_connection(('127.0.0.1', 9), timeout=1)\n",
        "killall": "import os\ndef main_solution():\n    os.kill(-1, 9)\n    return 'alive'\n",
        "loop": "def main_solution():\n    while True: pass\n",
        "sleep": "import time\ndef main_solution():\n    time.sleep(60)\n",
        "burners": "import os, time\ndef main_solution():\n    for _ in range(3):\n"
                   "        if os.fork() == 0:\n            while True: pass\n"
                   "    time.sleep(60)\n",
        "flood": "import os, time\ndef main_solution():\n    for _ in range(100):\n"
                 "        if os.fork() == 0:\n            time.sleep(60)\n",
        "dotenv": f"def main_solution():\n    return open({str(tmp_path / '.env')!r}).read()\n",
        "env": "import os\ndef main_solution():\n    seen = [repr(dict(os.environ))]\n"
               "    for p in os.listdir('/proc'):\n        try:\n"
               "            seen.append(open(f'/proc/{p}/environ').read())\n"
               "        except OSError:\n            pass\n    return seen\n",
    }
    (tmp_path / "codes.json").write_text(json.dumps(codes))
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={SECRET}\n")   # readable by everyone
    (tmp_path / "bin").mkdir(mode=0o755)     # the script's directory is bound back, not cwd
    script = tmp_path / "bin" / "as_user.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(SRC)!r})
        from annoy_datasync.executor import Executor, Limits
        codes = json.load(open({str(tmp_path / "codes.json")!r}))
        out = {{}}
        with Executor(run_path={str(tmp_path / "run")!r}, workers=1,
                      limits=Limits(cpu_time=1, nproc=16), preload=("math",)) as ex:
            for name, code in codes.items():
                r = ex.run_calls(code, [{{}}]).result(60)[0]
                out[name] = [r.status, r.value, r.error_type]
        print(json.dumps(out))
    """))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENAI_API_KEY": SECRET}
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           py, str(script)], capture_output=True, text=True, timeout=120,
                          env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["ok"][:2] == [status.SUCCESS, 65534]
    # /tmp of a job is its own: the write lands there, not in the host's /tmp
    assert out["write"][0] == status.SUCCESS and not (tmp_path / "x").exists()
    assert out["net"][0] == status.EXCEPTION
    # kill(-1) finds nobody to kill outside its own namespace: the step lived on to print
    assert out["killall"][0::2] == [status.EXCEPTION, "ProcessLookupError"]
    assert out["loop"][0::2] == [status.TIMEOUT, "cpu"]
    assert out["sleep"][0::2] == [status.WALL_TIMEOUT, "wall"]
    assert out["burners"][0::2] == [status.TIMEOUT, "cpu"]    # the children's CPU counts
    assert out["flood"][0::2] == [status.RESOURCE_LIMIT, "processes"]
    assert out["env"][0] == status.SUCCESS
    assert SECRET not in json.dumps(out["env"])
    assert out["dotenv"][0::2] == [status.EXCEPTION, "FileNotFoundError"]   # cwd is hidden


def test_an_ordinary_user_without_namespaces_keeps_the_process_limit_of_a_job(open_tmp):
    """RLIMIT_NPROC counts every task of the job's real uid. Without a user namespace of
    the worker's own, an ordinary user's other programs count too: 24 of them used to make
    any fork of a job fail under a limit of 16 (a desktop user has hundreds). The limit is
    what the job itself may start, and a fork flood still hits it."""
    py = _nobody_python()
    if py is None:
        pytest.skip("needs root, setpriv and an interpreter readable by uid 65534")
    tmp_path = open_tmp
    codes = {
        "forks": "import os\ndef main_solution():\n    kids = [os.fork() for _ in range(4)]\n"
                 "    if 0 in kids:\n        os._exit(0)\n"
                 "    return sum(os.waitpid(k, 0)[1] == 0 for k in kids)\n",
        "thread": "import threading\ndef main_solution():\n    t = threading.Thread(target=len, "
                  "args=('x',))\n    t.start()\n    t.join()\n    return 'joined'\n",
        "flood": "import os, time\ndef main_solution():\n    for _ in range(100):\n"
                 "        if os.fork() == 0:\n            time.sleep(60)\n",
    }
    (tmp_path / "codes.json").write_text(json.dumps(codes))
    script = tmp_path / "as_user.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(SRC)!r})
        import annoy_datasync.executor as executor_mod
        from annoy_datasync.executor import Executor, Limits
        executor_mod.USE_NAMESPACES = False
        codes = json.load(open({str(tmp_path / "codes.json")!r}))
        out = {{}}
        with Executor(run_path={str(tmp_path / "run")!r}, workers=1,
                      limits=Limits(cpu_time=2, nproc=16), preload=("math",)) as ex:
            assert ex._workers[0].hello["pidns"] is False
            for name, code in codes.items():
                r = ex.run_calls(code, [{{}}]).result(60)[0]
                out[name] = [r.status, r.value, r.error_type]
        print(json.dumps(out))
    """))
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    others = [subprocess.Popen(as_nobody + ["sleep", "120"]) for _ in range(24)]
    try:
        proc = subprocess.run(as_nobody + [py, str(script)], capture_output=True, text=True,
                              timeout=120, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                              cwd=str(tmp_path))
    finally:
        for p in others:
            p.kill()
            p.wait()
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["forks"][:2] == [status.SUCCESS, 4]
    assert out["thread"][:2] == [status.SUCCESS, "joined"]
    assert out["flood"][0::2] == [status.RESOURCE_LIMIT, "processes"]


def test_hash_seed_is_fixed_per_executor(tmp_path):
    code = "def main_solution():\n    return hash('annoy')\n"
    values = []
    for seed in (0, 0, 1):
        with Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS,
                      preload=("math",), hash_seed=seed) as ex2:
            values.append(ex2.run_calls(code, [{}]).result(60)[0].value)
    assert values[0] == values[1] != values[2]


def test_another_interpreter(tmp_path):
    py = "/usr/bin/python3"
    if not os.path.exists(py) or os.path.realpath(py) == os.path.realpath(sys.executable):
        pytest.skip("no second interpreter at /usr/bin/python3")
    with Executor(python_path=py, run_path=str(tmp_path / "run"), workers=1, limits=LIMITS,
                  preload=("math",)) as ex2:
        r = run1(ex2, "import sys, difflib\ndef main_solution():\n    return sys.executable\n")
    assert (r.status, r.value) == (status.SUCCESS, py)


@pytest.mark.parametrize("made_in, end, namespaces", [
    ("main", "sigkill", True), ("thread", "sigkill", True), ("thread", "exception", True),
    ("thread", "sigkill", False)])
def test_killing_the_step_kills_workers_and_jobs(open_tmp, made_in, end, namespaces):
    """Nothing of the executor outlives the step, also when the Executor was made in a
    thread that ended long before, and when the step ends by an exception without close()."""
    script = open_tmp / "step.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, threading, time
        sys.path.insert(0, {str(SRC)!r})
        import annoy_datasync.executor
        from annoy_datasync.executor import Executor, Limits
        annoy_datasync.executor.USE_NAMESPACES = {namespaces!r}
        def make():
            return Executor(run_path={str(open_tmp / "run")!r}, workers=2, preload=("math",),
                            limits=Limits(wall_time=60, cpu_time=60))
        if {made_in!r} == "thread":
            made = []
            t = threading.Thread(target=lambda: made.append(make()))
            t.start()
            t.join()
            ex = made[0]
        else:
            ex = make()
        code = ("import os, time\\ndef main_solution():\\n    if os.fork() == 0:\\n"
                "        os.setsid()\\n        time.sleep(300)\\n    time.sleep(300)\\n")
        futures = [ex.run_calls(code, [{{}}]) for _ in range(2)]
        print(" ".join(str(w.proc.pid) for w in ex._workers), flush=True)
        sys.stdin.readline()
        raise RuntimeError("the step failed")
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2

        def tree() -> list[int]:
            procs = _procs()
            found, stack = [], list(workers)
            while stack:
                p = stack.pop()
                if p in procs:
                    found.append(p)
                    stack.extend(c for c, (pp, _) in procs.items() if pp == p)
            return found
        per_worker = 4 if namespaces else 3   # (outer,) server, job, daemon
        for _ in range(200):                  # wait until both jobs forked their daemons
            if len(tree()) >= 2 * per_worker:
                break
            time.sleep(0.05)
        assert len(tree()) >= 2 * per_worker
        if end == "exception":
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.wait(timeout=30) == 1 and "the step failed" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    for _ in range(200):
        if not tree():
            break
        time.sleep(0.05)
    assert tree() == []


def test_an_executor_made_in_a_thread_that_ended_keeps_its_workers(tmp_path):
    made = []
    t = threading.Thread(target=lambda: made.append(
        Executor(run_path=str(tmp_path / "run"), workers=2, limits=LIMITS, preload=("math",))))
    t.start()
    t.join()
    for _ in range(500):      # until the OS thread is gone, not only its Python state
        if not os.path.exists(f"/proc/self/task/{t.native_id}"):
            break
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/self/task/{t.native_id}")
    ex2 = made[0]
    pids = [w.proc.pid for w in ex2._workers]
    try:
        code = "def main_solution(x):\n    return x * 2\n"
        res = [ex2.run_calls(code, [{"x": i}]).result(60)[0] for i in range(4)]
        assert [(r.status, r.value) for r in res] == [(status.SUCCESS, 2 * i) for i in range(4)]
        assert [w.proc.pid for w in ex2._workers] == pids     # the same, never restarted
    finally:
        ex2.close()
    alive = _procs()
    assert not [p for p in pids if p in alive]
    assert not [p for p, (ppid, _) in alive.items() if ppid in pids]


def test_pools_start_side_by_side_and_a_failed_start_is_an_error(tmp_path):
    code = "def main_solution():\n    return hash('annoy')\n"
    pools = [Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS,
                      preload=("math",), hash_seed=seed, wait=False) for seed in (1, 2)]
    try:
        assert all(w.proc.poll() is None for ex2 in pools for w in ex2._workers)
        futures = [ex2.run_calls(code, [{}]) for ex2 in pools]   # the first job waits
        values = [f.result(60)[0].value for f in futures]
        assert None not in values and values[0] != values[1]
    finally:
        for ex2 in pools:
            ex2.close()
    # an "interpreter" that answers the path probe but cannot run a worker
    fake = tmp_path / "fake-python"
    fake.write_text(f'#!/bin/sh\nif [ "$2" = "-c" ]; then exec {sys.executable} "$@"; fi\nexit 3\n')
    fake.chmod(0o755)
    lazy = Executor(python_path=str(fake), run_path=str(tmp_path / "run"), workers=2,
                    wait=False)
    for _ in range(2):        # the first job says why, and so does every later one
        with pytest.raises(RuntimeError, match="did not start"):
            lazy.run_calls(code, [{}])
    lazy.close()
    with pytest.raises(RuntimeError, match="did not start"):
        Executor(python_path=str(fake), run_path=str(tmp_path / "run"), workers=2)


def test_without_namespaces_the_tree_is_still_killed(open_tmp, monkeypatch):
    import annoy_datasync.executor as executor_mod
    monkeypatch.setattr(executor_mod, "USE_NAMESPACES", False)
    with Executor(run_path=str(open_tmp / "run"), workers=1, limits=LIMITS) as ex2:
        assert ex2._workers[0].hello["pidns"] is False
        code = """
        import os, time
        def main_solution(wait):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(120)
                os._exit(0)
            while wait:
                pass
            return 'done'
        """
        r = run1(ex2, code, {"wait": False})
        assert (r.status, r.value) == (status.SUCCESS, "done")
        r = run1(ex2, code, {"wait": True})
        assert r.status == status.TIMEOUT


def test_filling_the_job_directory(ex):
    if not ex._workers[0].hello["pidns"]:
        pytest.skip("the job directory is a bounded tmpfs only with namespaces")
    code = """
    def main_solution():
        for i in range(10 ** 4):
            with open(f'f{i}', 'wb') as f:
                f.write(b'x' * 512 * 1024)
        return 'filled'
    """
    r = run1(ex, code, limits=Limits(wall_time=5, disk_mb=8))
    assert (r.status, r.error_type) == (status.RESOURCE_LIMIT, "disk space")


def test_each_job_gets_a_fresh_directory_and_the_last_one_is_gone(tmp_path):
    code = """
    import os
    def main_solution(previous):
        with open('mine.txt', 'w') as f:
            f.write('x')
        gone = previous is None or not os.path.exists(previous)
        return [os.getcwd(), os.listdir('.'), gone]
    """
    with Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS) as ex2:
        previous = None
        for _ in range(3):
            r = run1(ex2, code, {"previous": previous})
            assert r.status == status.SUCCESS
            cwd, listing, gone = r.value
            assert listing == ["mine.txt"] and gone and cwd != previous
            previous = cwd


def test_large_results_come_back_and_oversized_ones_are_a_limit(ex):
    code = "def main_solution(n):\n    return list(range(n))\n"
    res = ex.run_calls(code, [{"n": 200_000}, {"n": 3}],
                       limits=Limits(wall_time=5, result_bytes=2_000_000)).result(60)
    assert res[0].status == status.SUCCESS and res[0].value == list(range(200_000))
    res = ex.run_calls(code, [{"n": 200_000}, {"n": 3}],
                       limits=Limits(wall_time=5, result_bytes=100_000)).result(60)
    assert [(r.status, r.error_type) for r in res] == [
        (status.RESOURCE_LIMIT, "result size"), (status.SUCCESS, None)]
    assert settle(ex) == []


def test_a_missing_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="python_path"):
        Executor(python_path=str(tmp_path / "no-python"), run_path=str(tmp_path / "run"),
                 workers=1)


def test_fresh_calls_see_no_state_of_each_other(ex):
    code = """
    import random, numpy as np
    seen = []
    def main_solution(x):
        seen.append(x)
        return [list(seen), random.random(), float(np.random.rand())]
    """
    inputs = [{"x": 1}, {"x": 2}, {"x": 3}]
    shared = ex.run_calls(textwrap.dedent(code), inputs).result(timeout=60)
    assert [r.value[0] for r in shared] == [[1], [1, 2], [1, 2, 3]]   # one namespace
    res = ex.run_calls(textwrap.dedent(code), inputs, fresh=True).result(timeout=60)
    assert [r.status for r in res] == [status.SUCCESS] * 3
    assert [r.value[0] for r in res] == [[1], [2], [3]]
    # every call starts from the random state of the child's start, as a job of its own
    assert res[0].value[1:] == res[1].value[1:] == res[2].value[1:]
    seeded = ex.run_calls(textwrap.dedent(code), inputs, fresh=True, seed=3).result(timeout=60)
    alone = ex.run_calls(textwrap.dedent(code), inputs[:1], seed=3).result(timeout=60)
    assert seeded[2].value[1:] == alone[0].value[1:]
    assert settle(ex) == []


def test_fresh_calls_fail_alone(ex):
    # the module body fails on its second execution in a child only: that call is not
    # runnable, the others run; a hang and a crash in the middle (the calls after them run
    # in a new child) do not change the verdicts of the rest
    code = """
    import os, builtins
    n = getattr(builtins, "_loads", 0)
    builtins._loads = n + 1
    if n == 1:
        raise ValueError("second load")
    def main_solution(x):
        if x == "hang":
            while True:
                pass
        if x == "die":
            os._exit(3)
        return x
    """
    inputs = [{"x": 0}, {"x": 1}, {"x": "hang"}, {"x": 3}, {"x": 4}, {"x": "die"}, {"x": 6}]
    res = ex.run_calls(textwrap.dedent(code), inputs, fresh=True).result(timeout=60)
    assert [r.status for r in res] == [status.SUCCESS, status.NOT_RUNNABLE, status.TIMEOUT,
                                       status.SUCCESS, status.NOT_RUNNABLE, status.CRASHED,
                                       status.SUCCESS]
    assert "second load" in res[1].message and res[1].error_type == "ValueError"
    assert [res[0].value, res[3].value, res[6].value] == [0, 3, 6]
    assert settle(ex) == []


def test_run_generator_counts_repeated_inputs_even_when_it_then_hangs(ex):
    """Repeats are counted in memory shared with the worker, not sent one frame each: the
    count survives a generator that hangs right after them."""
    gen = ("seq = iter([0, 0, 0, 1, 1, 2, 2])\n"
           "def input_generator():\n"
           "    n = next(seq, None)\n"
           "    while n is None:\n"
           "        pass\n"
           "    return {'n': n}\n")
    code = "def main_solution(n):\n    return n * 10\n"
    g = ex.run_generator(code, gen, seed=0, max_calls=20, max_pairs=10, budget_s=5).result(60)
    assert g.status == status.SUCCESS
    assert g.pairs == [{"input": {"n": n}, "output": 10 * n} for n in (0, 1, 2)]
    assert g.errors == {"duplicate": 4, status.TIMEOUT: 1}
    assert settle(ex) == []
    gen = "seq = iter([5, 5, 6, 5, 6, 7])\ndef input_generator():\n    return {'n': next(seq)}\n"
    done = ex.run_generator(code, gen, seed=0, max_calls=5, max_pairs=10,
                            budget_s=5).result(60)
    assert [p["input"]["n"] for p in done.pairs] == [5, 6]
    assert done.errors == {"duplicate": 3}


def test_unseeded_jobs_do_not_share_random_state(ex):
    """Job children are forked without the interpreter's at-fork hooks (the worker has a
    single thread); `random` is still reseeded in each child whose job does not seed it."""
    code = "import random\n\ndef main_solution():\n    return [random.random() for _ in range(4)]\n"
    values = [ex.run_calls(code, [{}]).result(60)[0].value for _ in range(3)]
    assert len({json.dumps(v) for v in values}) == 3
    seeded = [ex.run_calls(code, [{}], seed=11).result(60)[0].value for _ in range(2)]
    assert seeded[0] == seeded[1]
    assert settle(ex) == []


def test_the_users_files_are_hidden_from_jobs(open_tmp, monkeypatch):
    """A world-readable file of the project the step runs in (a .env with a key, say) is out
    of the job's reach: the directory is covered, with only the run directory bound back."""
    project = open_tmp / "project"
    project.mkdir(mode=0o755)
    secret = project / ".env"
    secret.write_text(f"OPENAI_API_KEY={SECRET}\n")
    os.chmod(secret, 0o644)
    (project / "data").mkdir(mode=0o755)
    monkeypatch.chdir(project)
    code = f"""
    import os
    def main_solution():
        seen = {{}}
        for path in [{str(secret)!r}, 'data']:
            try:
                seen[path] = open(path).read() if path.endswith('.env') else os.listdir(path)
            except OSError as exc:
                seen[path] = type(exc).__name__
        with open('scratch.txt', 'w') as f:       # its own directory still works
            f.write('ok')
        return seen
    """
    with Executor(run_path=str(project / "temp" / "run"), workers=1, limits=LIMITS) as ex:
        r = ex.run_calls(textwrap.dedent(code), [{}]).result(60)[0]
        assert settle(ex) == []
    assert r.status == status.SUCCESS, r.message
    assert r.value == {str(secret): "FileNotFoundError", "data": "FileNotFoundError"}
    assert secret.read_text().startswith("OPENAI_API_KEY=")     # and the file is untouched


# --- time: a CPU budget for everything the job runs, a backstop for code that idles ----

BURN = """
import os, threading, time
def burn(s):
    end = time.thread_time() + s     # CPU time of this thread (of a process's main one too)
    while time.thread_time() < end:
        pass
"""
FORKS = BURN + """
def main_solution(n, s):
    kids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            burn(s)
            os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
    time.sleep(0.1)
    return n
"""
THREADS = BURN + """
def main_solution(n, s):
    ts = [threading.Thread(target=burn, args=(s,)) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return n
"""
# idle allowance far above the budget: only CPU accounting can end these jobs early
CPU_ONLY = Limits(cpu_time=0.5, wall_time=20, nproc=16)


def test_a_loop_is_a_cpu_timeout_and_a_sleeper_a_wall_stop(ex):
    r = run1(ex, "def main_solution():\n    while True:\n        pass\n",
             limits=Limits(cpu_time=0.3, wall_time=20))
    assert (r.status, r.error_type) == (status.TIMEOUT, "cpu")
    assert "0.3 s of CPU time" in r.message
    for code in ("import time\ndef main_solution():\n    time.sleep(60)\n",
                 "import os, signal\ndef main_solution():\n"
                 "    os.kill(os.getpid(), signal.SIGSTOP)\n",
                 "import os\ndef main_solution():\n    os.read(os.pipe()[0], 1)\n"):
        r = run1(ex, code, limits=Limits(cpu_time=20, wall_time=0.3))
        assert (r.status, r.error_type) == (status.WALL_TIMEOUT, "wall"), code
        assert "stopped computing for more than 0.3 s" in r.message


@pytest.mark.parametrize("namespaces", [True, False])
def test_forked_children_cpu_counts(ex, tmp_path, monkeypatch, namespaces):
    """Four children that burn 0.3 s each, under a 0.5 s budget: over it, while the
    job's own process only waits; one child alone fits."""
    if namespaces:
        pool = ex
    else:
        import annoy_datasync.executor as executor_mod
        monkeypatch.setattr(executor_mod, "USE_NAMESPACES", False)
        pool = Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS,
                        preload=("math",))
        assert pool._workers[0].hello["pidns"] is False
    try:
        r = run1(pool, FORKS, {"n": 4, "s": 0.3}, limits=CPU_ONLY)
        assert (r.status, r.error_type) == (status.TIMEOUT, "cpu")
        r = run1(pool, FORKS, {"n": 1, "s": 0.15}, limits=CPU_ONLY)
        assert (r.status, r.value) == (status.SUCCESS, 1)
    finally:
        if pool is not ex:
            pool.close()


def test_threads_cpu_counts(ex):
    r = run1(ex, THREADS, {"n": 3, "s": 0.3}, limits=CPU_ONLY)
    assert (r.status, r.error_type) == (status.TIMEOUT, "cpu")
    r = run1(ex, THREADS, {"n": 1, "s": 0.15}, limits=CPU_ONLY)
    assert (r.status, r.value) == (status.SUCCESS, 1)


def test_budgets_are_per_call(ex):
    """Three calls of 0.3 s CPU each in one job, under a 0.5 s budget: each fits."""
    code = BURN + "\ndef main_solution(s):\n    burn(s)\n    return s\n"
    res = ex.run_calls(code, [{"s": 0.3}] * 3, fresh=True, limits=CPU_ONLY).result(60)
    assert [r.status for r in res] == [status.SUCCESS] * 3


def test_a_process_left_computing_across_short_calls_is_stopped(ex):
    """The first call leaves a detached process (double fork, setsid, SIGTERM and SIGXCPU
    ignored) spinning; every later call returns within 0.1 s, less than the interval of
    the job's full measurement. Its CPU is charged to the call running when it is
    measured: a batch of 40 such calls (4 s) cannot go on computing past the 0.5 s budget."""
    code = """
import os, signal, time
def main_solution(i):
    if i == 0 and os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGXCPU, signal.SIG_IGN)
            while True:
                pass
        os._exit(0)
    time.sleep(0.1)
    return i
"""
    res = ex.run_calls(code, [{"i": i} for i in range(40)], limits=CPU_ONLY).result(120)
    timeouts = [k for k, r in enumerate(res) if r.status == status.TIMEOUT]
    assert timeouts and res[timeouts[0]].error_type == "cpu", [r.status for r in res]
    assert settle(ex) == []


def test_an_ended_child_is_charged_once_not_to_every_later_call(ex):
    """The first call forks a child that burns 0.5 s and ends, never reaped (a zombie that
    outlives the call); each later call burns 0.4 s itself. Every call fits the 0.8 s
    budget, but a later call charged again with the zombie's CPU would not (0.9 s).

    The first call waits for the child's end (without reaping it) rather than a fixed time:
    a child still computing when the call returns is charged to the next call, rightly,
    and a busy machine can make 0.5 s of CPU take any time. It then stays long enough for
    the worker's next full reading of the job, due within 0.3 s (the budget left: a reading
    comes before the job could use it up); a zombie that ends after the last full reading
    is charged once more, by design."""
    code = BURN + """
def main_solution(i):
    if i == 0:
        pid = os.fork()
        if pid == 0:
            burn(0.5)
            os._exit(0)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)   # ended; still a zombie
        time.sleep(0.5)
    else:
        burn(0.4)
        time.sleep(0.3)
    return i
"""
    limits = Limits(cpu_time=0.8, wall_time=20, nproc=16)
    res = ex.run_calls(code, [{"i": i} for i in range(4)], limits=limits).result(120)
    assert [r.status for r in res] == [status.SUCCESS] * 4, [r.error_type for r in res]
    assert settle(ex) == []


@pytest.mark.parametrize("where", ["process", "thread"])
def test_load_slows_a_job_but_does_not_time_it_out(ex, where):
    """Under load a job waits for a CPU: its CPU budget is what it was, and its idle
    allowance does not count the wait (where the kernel reports it), also when the
    computing is done by a thread the main one waits for."""
    if any("schedstat" in n for n in ex._workers[0].hello.get("notes", [])):
        pytest.skip("the kernel does not report the wait for a CPU")
    if where == "process":
        code, inp = BURN + "\ndef main_solution(s):\n    burn(s)\n    return s\n", {"s": 0.6}
    else:
        code, inp = THREADS, {"n": 1, "s": 0.6}
    limits = Limits(cpu_time=1.5, wall_time=0.3)
    with cpu_burners(3):
        r = run1(ex, code, inp, limits=limits)
    # it waited for a CPU for longer than its idle allowance, yet is no wall stop
    assert (r.status, r.value) == (status.SUCCESS, list(inp.values())[0])


def test_a_thread_that_waited_for_a_cpu_and_ended_is_not_charged_idle_time(monkeypatch):
    """The time a job's thread waited for a CPU still counts once the thread has ended (it is
    gone from /proc then). It was lost: under load, a job whose computing thread had waited
    and ended was measured as idle for that long and stopped for idling (seen in CI-like runs
    of test_load_slows_a_job_but_does_not_time_it_out[thread]). On a made-up /proc: job
    process 100, its main thread waiting on a worker thread 101 that waited 0.5 s for a CPU."""
    import types
    from annoy_datasync import sandbox_time

    proc = {"100": {"100": 0, "101": 500_000_000}}     # tid -> run-queue wait (ns)

    def stat(threads):
        fields = ["S", "1"] + ["0"] * 9 + ["40", "10", "0", "0", "0", "0", str(threads), "0"]
        return ("100 (python3) " + " ".join(fields)).encode()

    def fake_open(path, mode="r"):
        parts = path.split("/")             # /proc/<pid>/stat, /proc/<pid>/task/<tid>/schedstat
        if parts[2] not in proc:
            raise FileNotFoundError(path)
        threads = proc[parts[2]]
        if parts[3] == "stat":
            return _BytesFile(stat(len(threads)))
        if parts[4] not in threads:
            raise FileNotFoundError(path)
        return _BytesFile(f"1000 {threads[parts[4]]} 3\n".encode())

    fake_os = types.SimpleNamespace(getpid=lambda: 1, listdir=lambda d: (
        ["1", *proc] if d == "/proc" else list(proc[d.split("/")[2]])))
    monkeypatch.setattr(sandbox_time, "open", fake_open, raising=False)
    monkeypatch.setattr(sandbox_time, "os", fake_os)
    monkeypatch.setattr(sandbox_time.resource, "getrusage",
                        lambda who: types.SimpleNamespace(ru_utime=0.0, ru_stime=0.0))
    clock = sandbox_time.JobClock({})
    clock.pidns = True                      # every process but the worker (pid 1) is the job's
    clock.start_job()
    assert clock.job_usage()[1] == pytest.approx(0.5)
    del proc["100"]["101"]                  # the worker thread ended
    assert clock.job_usage()[1] == pytest.approx(0.5)
    assert clock.job_usage(main=100)[1] == pytest.approx(0.5)      # the quick reading too
    proc["100"]["101"] = 100_000_000        # a new thread took its id: both count
    assert clock.job_usage()[1] == pytest.approx(0.6)
    clock.start_job()                       # the next job starts from nothing
    del proc["100"]["101"]
    assert clock.job_usage()[1] == pytest.approx(0.0)


class _BytesFile(contextlib.AbstractContextManager):
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data

    def __exit__(self, *exc) -> None:
        return None


def test_generator_budget_is_cpu_time(ex):
    """Each input costs 0.1 s of CPU; a 0.25 s budget fits 3 calls, idle or loaded."""
    code = BURN + "\ndef main_solution(n):\n    burn(0.1)\n    return n\n"
    gen = "import itertools\nc = itertools.count()\ndef input_generator():\n    return {'n': next(c)}\n"
    got = []
    for load in (False, True):
        with cpu_burners(3) if load else contextlib.nullcontext():
            g = ex.run_generator(code, gen, seed=0, max_calls=20, max_pairs=20, budget_s=0.25,
                                 limits=Limits(cpu_time=1, wall_time=1)).result(60)
        assert g.status == status.SUCCESS and not g.errors
        got.append(g.pairs)
    assert got[0] == got[1] and [p["output"] for p in got[0]] == [0, 1, 2]


CLOCK_READS = [
    "time.time()", "time.time_ns()", "time.perf_counter()", "time.perf_counter_ns()",
    "time.monotonic()", "time.monotonic_ns()", "time.process_time()", "time.process_time_ns()",
    "time.thread_time()", "time.thread_time_ns()", "time.clock_gettime(time.CLOCK_REALTIME)",
    "time.clock_gettime_ns(time.CLOCK_MONOTONIC)", "time.localtime()", "time.gmtime()",
    "time.ctime()", "time.asctime()", "time.strftime('%Y %j %H')", "datetime.datetime.now()",
    "datetime.datetime.utcnow()", "datetime.datetime.today()", "datetime.date.today()",
    "dt.now()",
]


def test_fresh_calls_report_clock_reads_and_warp_every_clock(ex):
    """Each watched call says whether it read a clock; a warped call reads every clock as
    another instant, and two reads in a row differ even where the real clock stands still
    (the process's CPU clock under RLIMIT_CPU advances only at scheduler ticks)."""
    from annoy_datasync.executor import Call
    code = ("import time, datetime\nfrom datetime import datetime as dt\n\n"
            "def main_solution(expr):\n    a, b = eval(expr), eval(expr)\n"
            "    return [repr(a), repr(b), a == b]\n")
    calls = [Call({"expr": e}, warp_clock=w) for e in CLOCK_READS for w in (False, True)]
    res = ex.run_fresh([code], calls).result(timeout=60)
    assert all(r.status == status.SUCCESS and r.read_clock for r in res), \
        [(c.input, r.message) for c, r in zip(calls, res) if r.status != status.SUCCESS]
    import time
    coarse = ("localtime", "gmtime", "ctime", "asctime", "strftime", "date.today")   # seconds, days
    for expr, real, warped in zip(CLOCK_READS, res[::2], res[1::2]):
        assert warped.value[:2] != real.value[:2], expr       # another instant
        if not any(c in expr for c in coarse):
            assert warped.value[2] is False, expr             # the clock moved between reads
    # wall clocks land in another year; datetime keeps its usual repr
    year = str(time.localtime().tm_year)
    for expr in ("time.ctime()", "time.strftime('%Y %j %H')", "datetime.date.today()"):
        warped = res[2 * CLOCK_READS.index(expr) + 1].value[0]
        assert year in res[2 * CLOCK_READS.index(expr)].value[0] and year not in warped
    assert res[2 * CLOCK_READS.index("dt.now()")].value[0].startswith("datetime.datetime(")
    assert res[2 * CLOCK_READS.index("dt.now()") + 1].value[0].startswith("datetime.datetime(")


def test_fresh_calls_report_random_draws_and_clock_reads_of_the_module_body(ex):
    from annoy_datasync.executor import Call
    codes = ["def main_solution(n):\n    return n\n",
             "import random\nX = random.random()\n\ndef main_solution(n):\n    return n\n",
             "import numpy as np\n\ndef main_solution(n):\n    return float(np.random.rand()) * 0\n",
             "import random\n\ndef main_solution(n):\n    return random.Random(n).random()\n",
             "import time\nT = time.time()\n\ndef main_solution(n):\n    return n\n",
             "def main_solution(n) oops\n"]
    calls = [Call({"n": 1}, code=k) for k in range(len(codes))]
    res = ex.run_fresh(codes, calls, watch=True).result(timeout=60)
    assert [(r.drew_random, r.read_clock) for r in res[:5]] == [
        (False, False), (True, False), (True, False), (False, False), (False, True)]
    assert res[5].status == status.NOT_RUNNABLE and res[5].error_type == "SyntaxError"
    assert [r.value for r in res[:5]] == [1, 1, 0.0, res[3].value, 1]
    unwatched = ex.run_fresh(codes[1:2], calls[:1]).result(timeout=60)
    assert unwatched[0].status == status.SUCCESS and not unwatched[0].drew_random
    assert settle(ex) == []


# -- what executed code sends back: the trusted side checks it --------------------------------
# The child's own frames carry only plain JSON, but the code can find the job's token (it is
# in the memory of the process it runs in) and write frames of its own on fd 3.
FORGER = '''
import os, struct, sys

def _token():
    f = sys._getframe()
    while f is not None:
        s = f.f_locals.get("self")
        if s is not None and hasattr(s, "token") and hasattr(s, "job"):
            return s.token
        f = f.f_back

def _forge(fields):
    text = '{"k": "%s", ' % _token() + fields + "}"
    os.write(3, struct.pack(">I", len(text.encode())) + text.encode())
'''


@pytest.mark.parametrize("fields, expected", [
    # values a real call never sends: NaN, nesting past the limit, a 4000-digit int, a
    # string that is no UTF-8 text
    ('"t": "call", "i": 0, "s": "success", "v": NaN, "d": 0.1', status.CRASHED),
    ('"t": "call", "i": 0, "s": "success", "v": [Infinity], "d": 0.1', status.CRASHED),
    ('"t": "call", "i": 0, "s": "success", "v": ' + "[" * 900 + "]" * 900 + ', "d": 0.1',
     (status.CRASHED, status.NON_JSON)),
    ('"t": "call", "i": 0, "s": "success", "v": ' + "9" * 4000 + ', "d": 0.1', status.NON_JSON),
    ('"t": "call", "i": 0, "s": "success", "v": "a\\ud800", "d": 0.1', status.NON_JSON),
    ('"t": "call", "i": 0, "s": "success", "v": {"\\udc00": 1}, "d": 0.1', status.NON_JSON),
    # fields of the frame itself
    ('"t": "call", "i": 0, "s": "success", "v": 1, "d": 1e999', status.CRASHED),
    ('"t": "call", "i": 0, "s": "exception", "e": {"a": 1}, "m": "x", "d": 0.1', status.CRASHED),
    ('"t": "call", "i": 0, "s": "exception", "e": "E\\ud800", "m": "m\\udfff", "d": 0.1',
     status.EXCEPTION),
    ('"t": "call", "i": 0, "s": "success", "d": 0.1', status.CRASHED),   # success, no value
    ('"t": "fatal", "s": "success", "e": null, "m": "all good"', status.CRASHED),
    # texts of any size: a message is one sentence, shortened by the parent
    ('"t": "call", "i": 0, "s": "exception", "e": "' + "E" * 100_000 + '", "m": "'
     + "m" * 1_000_000 + '", "d": 0.1', status.EXCEPTION),
])
def test_forged_result_frames_are_judged_by_the_trusted_side(ex, fields, expected):
    """Whatever the code writes on the result channel, the job gets a verdict on the code
    (never the executor's fault, which a rerun would retry forever), a value only when it
    is plain JSON, and text that can be written to a UTF-8 file."""
    code = FORGER + f"\ndef main_solution(x):\n    _forge({fields!r})\n    os._exit(0)\n"
    r = run1(ex, code, {"x": 1})
    assert r.error_type != status.EXECUTOR_ERROR, r.message
    assert r.status in (expected if isinstance(expected, tuple) else (expected,)), r
    assert r.status != status.SUCCESS and r.value is None
    assert isinstance(r.message, str) and r.message
    assert r.error_type is None or isinstance(r.error_type, str) and len(r.error_type) <= 100
    assert len(r.message) <= 1000
    json.dumps([r.message, r.error_type], ensure_ascii=False).encode("utf-8")
    # the worker survived it: the next job runs in the same worker
    assert run1(ex, "def main_solution():\n    return [1.5, 'ok']\n").value == [1.5, "ok"]


def test_a_string_that_is_not_text_is_not_json(ex):
    """A lone surrogate cannot be written as UTF-8: returning one is not plain JSON (it
    used to come back as a success and crash the step that wrote it)."""
    code = "def main_solution(k):\n    return [chr(0xd800)] if k == 0 else {chr(0xdfff): 1}\n"
    res = ex.run_calls(code, [{"k": 0}, {"k": 1}, {"k": 2}]).result(timeout=60)
    assert [r.status for r in res] == [status.NON_JSON] * 3
    assert all("surrogate" in r.message for r in res)


def test_forged_generator_frames_are_bounded_and_checked(ex):
    """A generator job's pairs: no more than max_pairs, inputs objects, values plain JSON;
    a forged pair that breaks a rule is never recorded as one."""
    main = FORGER + '''
def main_solution(n):
    if n == 0:
        _forge('"t": "pair", "in": [1], "out": 2')          # an input that is no object
        _forge('"t": "pair", "in": {"n": 5}, "out": "\\\\ud800"')
        _forge('"t": "pair", "in": {"n": 6}, "out": ''' + "1" + "0" * 200 + ''' ')
        for i in range(1000):
            _forge('"t": "pair", "in": {"n": %d}, "out": %d' % (100 + i, i))
    return n
'''
    gen = "import itertools\nc = itertools.count()\ndef input_generator():\n    return {'n': next(c)}\n"
    g = ex.run_generator(main, gen, seed=1, max_calls=20, max_pairs=5, budget_s=5).result(60)
    assert g.error_type != status.EXECUTOR_ERROR
    assert len(g.pairs) <= 5
    for p in g.pairs:
        assert isinstance(p["input"], dict)
        assert p["input"] != {"n": 5} and p["input"] != {"n": 6}
    assert settle(ex) == []


def _kill_worker(ex2: Executor) -> None:
    proc = ex2._workers[0].proc
    proc.kill()
    proc.wait()


ONE = "def main_solution():\n    return 1\n"


@pytest.mark.parametrize("fails", [1, 2])
def test_a_replacement_worker_that_fails_its_handshake(tmp_path, monkeypatch, fails):
    """A failure other than a dead pipe (here a hello that is not JSON) while a worker is
    replaced: the job still gets its answer, and a second start is tried."""
    ex2 = Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS, preload=())
    real, calls = executor_mod._Worker.handshake, []

    def handshake(self):
        calls.append(1)
        if len(calls) <= fails:
            raise ValueError("Expecting value: line 1 column 1 (char 0)")
        real(self)

    monkeypatch.setattr(executor_mod._Worker, "handshake", handshake)
    try:
        _kill_worker(ex2)
        first = ex2.run_calls(ONE, [{}]).result(60)[0]
        assert (first.status, first.error_type) == (status.NOT_RUNNABLE, status.EXECUTOR_ERROR)
        if fails < executor_mod.RESTART_ATTEMPTS:
            again = ex2.run_calls(ONE, [{}]).result(60)[0]
            assert (again.status, again.value) == (status.SUCCESS, 1)
        else:       # given up: queued jobs are answered, later submits raise at once
            with pytest.raises(ExecutorFailed, match="could not be restarted.*Expecting value"):
                ex2.run_calls(ONE, [{}])
    finally:
        ex2.close()
    assert len(calls) == fails + (fails < executor_mod.RESTART_ATTEMPTS)


def test_a_worker_that_cannot_be_replaced_answers_every_queued_job(tmp_path, monkeypatch):
    ex2 = Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS, preload=())

    def handshake(self):
        raise ValueError("not a hello")

    monkeypatch.setattr(executor_mod._Worker, "handshake", handshake)
    _kill_worker(ex2)
    futures = [ex2.run_calls(ONE, [{}, {}]) for _ in range(5)]
    gen = ex2.run_generator(ONE, "def input_generator():\n    return {}\n", seed=0,
                            max_calls=1, max_pairs=1, budget_s=1)
    results = [r for f in futures for r in f.result(60)]
    assert [(r.status, r.error_type) for r in results] == \
        [(status.NOT_RUNNABLE, status.EXECUTOR_ERROR)] * 10
    assert (gen.result(60).status, gen.result().error_type) == \
        (status.NOT_RUNNABLE, status.EXECUTOR_ERROR)
    with pytest.raises(ExecutorFailed, match="could not be restarted.*not a hello"):
        ex2.run_calls(ONE, [{}])
    ex2.close()
    assert ex2._workers[0].proc is None


def test_an_answer_that_is_not_json_replaces_the_worker(tmp_path, monkeypatch):
    with Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS,
                  preload=()) as ex2:
        real, calls = executor_mod._Worker.recv, []
        old = ex2._workers[0].proc

        def recv(self):
            calls.append(1)
            answer = real(self)
            if len(calls) == 1:
                raise json.JSONDecodeError("Expecting value", "x", 0)
            return answer

        monkeypatch.setattr(executor_mod._Worker, "recv", recv)
        bad = ex2.run_calls(ONE, [{}]).result(60)[0]
        good = ex2.run_calls(ONE, [{}]).result(60)[0]
        assert (bad.status, bad.error_type) == (status.NOT_RUNNABLE, status.EXECUTOR_ERROR)
        assert (good.status, good.value) == (status.SUCCESS, 1)
        assert old.poll() is not None and ex2._workers[0].proc is not old


def test_a_submit_racing_close_is_refused_not_lost(tmp_path, monkeypatch):
    """A job submitted while close() runs is either served or refused, never left pending."""
    ex2 = Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS, preload=())
    inside, closed = threading.Event(), threading.Event()
    real = executor_mod._limits_dict

    def limits_dict(limits):      # the submit is past its first checks: close now
        inside.set()
        assert closed.wait(30)
        return real(limits)

    monkeypatch.setattr(executor_mod, "_limits_dict", limits_dict)
    outcome: list = []

    def submit():
        try:
            outcome.append(ex2.run_calls(ONE, [{}]))
        except RuntimeError as exc:
            outcome.append(exc)

    t = threading.Thread(target=submit)
    t.start()
    assert inside.wait(30)
    ex2.close()
    closed.set()
    t.join(30)
    assert len(outcome) == 1
    assert isinstance(outcome[0], RuntimeError) and "closed" in str(outcome[0])


def test_run_generator_leaves_out_pairs_over_pair_bytes(ex):
    """A pair whose input or output is longer than pair_bytes as JSON is counted, not sent;
    it still counts against max_pairs, and the calls after it see the state it left."""
    code = ("seen = []\ndef main_solution(n, pad):\n    seen.append(n)\n"
            "    return 'y' * 200 if n == 3 else [n, len(seen)]\n")
    gen = ("import random\ndef input_generator():\n    n = random.randint(0, 5)\n"
           "    return {'n': n, 'pad': 'x' * (300 if n == 1 else 0)}\n")
    kw = dict(seed=5, max_calls=40, max_pairs=6, budget_s=5)
    whole = ex.run_generator(code, gen, **kw).result(60)
    bounded = ex.run_generator(code, gen, pair_bytes=100, **kw).result(60)
    small = [p for p in whole.pairs if p["input"]["n"] not in (1, 3)]
    assert len(whole.pairs) == 6 and 0 < len(small) < 6
    assert bounded.pairs == small
    assert bounded.errors["too_large"] == 6 - len(small)
    assert {k: v for k, v in bounded.errors.items() if k != "too_large"} == whole.errors
