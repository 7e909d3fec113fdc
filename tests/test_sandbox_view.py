"""The file system a job sees (sandbox_view.py): an allow-list, the same as root and as an
ordinary user. Secrets planted where a shared machine keeps other people's files must be
absent for the job, not merely unreadable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from annoy_datasync import status
from annoy_datasync.executor import Executor, Limits
from test_executor import LIMITS, _nobody_python, open_tmp, settle  # noqa: F401 - fixture
from testutil import ROOT, SRC

sys.path.insert(0, str(SRC / "annoy_datasync"))
import sandbox_view  # noqa: E402 - the worker's sibling module, stdlib only

PROBE = """
import os
def main_solution(paths):
    seen = {}
    for path in paths:
        try:
            if os.path.isdir(path) or path.endswith('/'):
                seen[path] = os.listdir(path)
            else:
                with open(path) as f:
                    seen[path] = f.read()
        except OSError as exc:
            seen[path] = type(exc).__name__
    listings = {}
    for d in ['/', '/tmp', '/etc', '/dev', '/dev/shm']:
        try:
            listings[d] = sorted(os.listdir(d))
        except OSError as exc:
            listings[d] = type(exc).__name__
    return [seen, listings]
"""


def _beside(prefix: str) -> str:
    """A directory next to the interpreter's installation (its parent is not exposed)."""
    parent = os.path.dirname(os.path.realpath(prefix))
    return parent if parent != "/" else "/usr"


@pytest.fixture
def planted():
    """World-readable secrets in /tmp, /var/tmp, /dev/shm, /etc, /opt and beside the
    interpreter(s): {path of file or directory: the secret}. Removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("planting files in /etc and /opt needs root")
    name = f"annoy-secret-{uuid.uuid4().hex[:10]}"
    secret = f"the secret {uuid.uuid4().hex}"
    places = ["/tmp", "/var/tmp", "/dev/shm", "/etc", "/opt", _beside(sys.prefix),
              _beside(sys.base_prefix), _beside("/usr/bin")]
    made = []
    paths = []
    try:
        for place in dict.fromkeys(places):
            if not os.path.isdir(place):
                continue
            d = os.path.join(place, name)
            os.mkdir(d, 0o755)
            made.append(d)
            os.chmod(d, 0o755)
            f = os.path.join(d, "secret.txt")
            Path(f).write_text(secret)
            os.chmod(f, 0o644)
            paths += [d, f]
        yield name, secret, paths
    finally:
        import shutil
        for d in made:
            shutil.rmtree(d, ignore_errors=True)


def _allowed_tops(run_path: str) -> set[str]:
    """The names that may appear in a job's /: the fixed ones, the top directories of the
    interpreter and of its libraries, the host's top-level links, the run directory's."""
    tops = {"dev", "etc", "proc", "tmp"}
    dirs = sandbox_view.interpreter_dirs() | sandbox_view.mapped_dirs() | {run_path}
    dirs |= {os.path.realpath(d) for d in dirs}
    tops |= {d.split("/")[1] for d in dirs}
    tops |= {n for n in os.listdir("/") if os.path.islink("/" + n)}
    return tops


def _check_view(seen, listings, name, secret, run_path):
    assert secret not in json.dumps([seen, listings])
    assert set(seen.values()) == {"FileNotFoundError"}, seen      # absent, not unreadable
    assert name not in json.dumps(listings)
    root = set(listings["/"])
    assert root <= _allowed_tops(run_path), root - _allowed_tops(run_path)
    for gone in ("var", "srv", "mnt", "media", "home", "sys", "boot", "run"):
        assert gone not in root
    assert set(listings["/etc"]) <= {"ld.so.cache", "localtime", "passwd", "group", "hosts"}
    assert set(listings["/dev"]) == {"null", "zero", "random", "urandom", "shm", "fd",
                                     "stdin", "stdout", "stderr"}
    assert listings["/dev/shm"] == []


def test_planted_secrets_are_absent_as_root(planted, tmp_path):
    name, secret, paths = planted
    with Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS) as ex:
        if not ex.view_restricted:
            pytest.skip("the kernel refused namespaces")
        r = ex.run_calls(textwrap.dedent(PROBE), [{"paths": paths}]).result(60)[0]
        assert settle(ex) == []
    assert r.status == status.SUCCESS, r.message
    seen, listings = r.value
    _check_view(seen, listings, name, secret, ex.run_path)
    assert "opt" not in listings["/"]


def test_planted_secrets_are_absent_as_an_ordinary_user(planted, open_tmp):  # noqa: F811
    py = _nobody_python()
    if py is None:
        pytest.skip("needs root, setpriv and an interpreter readable by uid 65534")
    name, secret, paths = planted
    (open_tmp / "job.json").write_text(json.dumps({"code": textwrap.dedent(PROBE),
                                                   "paths": paths}))
    script = open_tmp / "probe.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(SRC)!r})
        from annoy_datasync.executor import Executor, Limits
        job = json.load(open({str(open_tmp / "job.json")!r}))
        with Executor(run_path={str(open_tmp / "run")!r}, workers=1, preload=("math",),
                      limits=Limits(wall_time=5)) as ex:
            r = ex.run_calls(job["code"], [{{"paths": job["paths"]}}]).result(60)[0]
            print(json.dumps([ex.view_restricted, r.status, r.value, r.message, ex.run_path]))
    """))
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           py, str(script)], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"}, cwd=str(open_tmp))
    assert proc.returncode == 0, proc.stderr
    restricted, st, value, message, run_path = json.loads(proc.stdout.splitlines()[-1])
    assert restricted and st == status.SUCCESS, message
    seen, listings = value
    # the interpreter of this test may differ from the one of the user's run
    tops = set(listings["/"])
    for gone in ("var", "srv", "opt", "mnt", "media", "home", "sys", "boot", "run"):
        assert gone not in tops
    assert secret not in json.dumps(value) and name not in json.dumps(listings)
    assert set(seen.values()) == {"FileNotFoundError"}, seen
    assert listings["/dev/shm"] == []
    assert "root" not in tops or os.path.realpath(py).startswith("/root/")


WRITES = """
import os
def main_solution(token):
    done = {}
    for path in ['here.txt', f'/tmp/{token}', f'/dev/shm/{token}', f'/etc/{token}',
                 f'/usr/{token}', f'/{token}', '/dev/null']:
        try:
            with open(path, 'w') as f:
                f.write('x')
            done[path] = 'written'
        except OSError as exc:
            done[path] = type(exc).__name__
    os.makedirs(f'/tmp/d-{token}/e', exist_ok=True)
    return [done, sorted(os.listdir('/tmp')), sorted(os.listdir('/dev/shm'))]
"""


def test_writes_land_only_in_the_run_directory_and_private_tmp(tmp_path):
    tokens = [f"annoy-write-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS) as ex:
        if not ex.view_restricted:
            pytest.skip("the kernel refused namespaces")
        first, second = [ex.run_calls(textwrap.dedent(WRITES), [{"token": t}]).result(60)[0]
                         for t in tokens]
        assert settle(ex) == []
        assert os.listdir(ex.run_path) == []
    assert first.status == second.status == status.SUCCESS, first.message
    token = tokens[0]
    done, tmp_listing, shm_listing = first.value
    assert done[f"/tmp/{token}"] == done[f"/dev/shm/{token}"] == "written"
    assert done["here.txt"] == done["/dev/null"] == "written"
    for path in (f"/etc/{token}", f"/usr/{token}", f"/{token}"):
        assert done[path] in ("OSError", "PermissionError", "FileNotFoundError"), done
        assert not os.path.exists(path)
    for path in (f"/tmp/{token}", f"/dev/shm/{token}", f"/tmp/d-{token}"):
        assert not os.path.exists(path)          # not on the host's /tmp and /dev/shm
    assert shm_listing == [token] and {token, f"d-{token}"} <= set(tmp_listing)
    # the second job finds nothing of the first in /tmp and /dev/shm
    _, tmp2, shm2 = second.value
    assert shm2 == [tokens[1]]
    assert set(tmp2) - {tokens[1], f"d-{tokens[1]}"} == set(tmp_listing) - {token, f"d-{token}"}


def test_a_read_path_is_readable_and_not_writable(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "words.txt").write_text("alpha beta\n")
    (tmp_path / "beside.txt").write_text("not for jobs\n")
    for p in (tmp_path, corpus):
        os.chmod(p, 0o755)
    os.chmod(corpus / "words.txt", 0o644)
    os.chmod(tmp_path / "beside.txt", 0o644)
    code = f"""
    import os
    def main_solution():
        out = {{'read': open({str(corpus / 'words.txt')!r}).read(),
                'list': os.listdir({str(corpus)!r})}}
        for name, path in [('write', {str(corpus / 'new.txt')!r}),
                           ('overwrite', {str(corpus / 'words.txt')!r}),
                           ('beside', {str(tmp_path / 'beside.txt')!r})]:
            try:
                with open(path, 'a' if name != 'beside' else 'r') as f:
                    out[name] = f.write('x') if name != 'beside' else f.read()
            except OSError as exc:
                out[name] = type(exc).__name__
        return out
    """
    with Executor(run_path=str(tmp_path / "run"), workers=1, limits=LIMITS,
                  read_paths=[str(corpus)]) as ex:
        if not ex.view_restricted:
            pytest.skip("the kernel refused namespaces")
        r = ex.run_calls(textwrap.dedent(code), [{}]).result(60)[0]
    assert r.status == status.SUCCESS, r.message
    assert r.value["read"] == "alpha beta\n" and r.value["list"] == ["words.txt"]
    assert r.value["write"] in ("OSError", "PermissionError")
    assert r.value["overwrite"] in ("OSError", "PermissionError")
    assert r.value["beside"] == "FileNotFoundError"
    assert sorted(os.listdir(corpus)) == ["words.txt"]
    assert (corpus / "words.txt").read_text() == "alpha beta\n"


def test_a_read_path_must_be_a_directory_outside_the_views_own(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        Executor(run_path=str(tmp_path / "run"), workers=1, read_paths=[str(tmp_path / "no")])
    for bad in ("/", "/etc", "/tmp", "/dev"):   # bound, they would be written over
        with pytest.raises(ValueError, match="holds /etc"):
            Executor(run_path=str(tmp_path / "run"), workers=1, read_paths=[bad])
    assert sandbox_view.covers_view_dirs("/") and sandbox_view.covers_view_dirs("/etc")
    assert not sandbox_view.covers_view_dirs("/etc/ssl")
    assert not sandbox_view.covers_view_dirs(str(tmp_path))


WORKS = """
import json, locale, os, tempfile, time
def main_solution():
    import numpy as np, scipy.linalg, scipy.special, scipy.optimize, sympy
    out = {}
    out['numpy'] = float(np.linalg.det(np.array([[2.0, 0.0], [0.0, 3.0]])))
    out['scipy'] = [float(scipy.special.gamma(5)), float(scipy.linalg.det([[1, 2], [3, 4]])),
                    round(float(scipy.optimize.brentq(lambda x: x * x - 2, 0, 2)), 6)]
    x = sympy.Symbol('x')
    out['sympy'] = str(sympy.factor(x ** 2 - 1))
    out['localtime'] = time.localtime(0).tm_year
    out['strftime'] = time.strftime('%Y', time.gmtime(0))
    out['locale'] = locale.setlocale(locale.LC_ALL, '')
    with tempfile.TemporaryDirectory() as d, open(os.path.join(d, 'f'), 'w') as f:
        out['tempfile'] = f.write('abc')
    with tempfile.NamedTemporaryFile(dir='/tmp') as f:
        out['tmp'] = f.name.startswith('/tmp/')
    import multiprocessing as mp
    with mp.Pool(2) as pool:
        out['pool'] = pool.map(abs, [-1, -2, -3])
    lock = mp.Lock()
    with lock:
        out['lock'] = True
    try:
        import zoneinfo
        out['zone'] = zoneinfo.ZoneInfo('Europe/Paris').utcoffset(
            __import__('datetime').datetime(2020, 1, 1)).seconds
    except Exception as exc:   # no time-zone data on this machine
        out['zone'] = type(exc).__name__
    import pwd, getpass
    out['user'] = [pwd.getpwuid(os.getuid()).pw_name, getpass.getuser()]
    return out
"""


def test_scientific_modules_and_runtime_services_work(tmp_path):
    with Executor(run_path=str(tmp_path / "run"), workers=1, preload=("math",),
                  limits=Limits(wall_time=60, cpu_time=60, nproc=16)) as ex:
        if not ex.view_restricted:
            pytest.skip("the kernel refused namespaces")
        r = ex.run_calls(textwrap.dedent(WORKS), [{}]).result(120)[0]
    assert r.status == status.SUCCESS, (r.message, r.stderr)
    v = r.value
    assert v["numpy"] == 6.0 and v["scipy"] == [24.0, -2.0, 1.414214]
    assert v["sympy"] == "(x - 1)*(x + 1)"
    assert v["localtime"] in (1969, 1970) and v["strftime"] == "1970"
    assert v["locale"] == "C.UTF-8" and v["tempfile"] == 3 and v["tmp"] is True
    assert v["pool"] == [1, 2, 3] and v["lock"] is True
    if os.path.isdir("/usr/share/zoneinfo/Europe"):
        assert v["zone"] == 3600
    assert v["user"][0] == v["user"][1] == "sandbox"


def test_requirements_exec_modules_import(tmp_path):
    req = ROOT / "requirements-exec.txt"
    names = []
    for line in req.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split(">")[0].split("=")[0].split("<")[0].strip().lower())
    assert names, "requirements-exec.txt lists no module"
    code = ("import importlib\ndef main_solution(names):\n"
            "    return [importlib.import_module(n).__name__ for n in names]\n")
    with Executor(run_path=str(tmp_path / "run"), workers=1, preload=("math",),
                  limits=Limits(wall_time=60, cpu_time=60)) as ex:
        r = ex.run_calls(code, [{"names": names}]).result(120)[0]
    assert r.status == status.SUCCESS, r.message
    assert r.value == names


def test_an_unmappable_user_namespace_leaves_the_worker_able_to_fork(open_tmp):  # noqa: F811
    """Where an unprivileged user namespace is created but its uid map may not be written
    (Ubuntu's AppArmor restriction), the worker carries on without namespaces: it must not
    already be in a new PID namespace, where the first job's child is PID 1 and no process
    can be forked once it has ended."""
    py = _nobody_python()
    if py is None:
        pytest.skip("needs root, setpriv and an interpreter readable by uid 65534")
    script = open_tmp / "unmapped.py"
    script.write_text(textwrap.dedent(f"""
        import builtins, json, os, sys
        sys.path.insert(0, {str(SRC / "annoy_datasync")!r})
        import sandbox_view

        def refusing_open(path, *args, **kw):
            if str(path).endswith(("uid_map", "gid_map", "setgroups")):
                raise PermissionError(1, "Operation not permitted")
            return builtins.open(path, *args, **kw)

        sandbox_view.open = refusing_open
        notes = []
        try:
            entered = sandbox_view.enter_namespaces(True, (), notes, lambda pid: os._exit(3))
        except OSError as exc:      # what the worker does with a failed set-up
            entered = "raised " + type(exc).__name__
        forks = []
        for _ in range(3):
            try:
                pid = os.fork()
            except OSError as exc:
                forks.append(type(exc).__name__)
                continue
            if pid == 0:
                os._exit(0)
            forks.append(os.waitpid(pid, 0)[1])
        print(json.dumps([entered, forks, notes]))
    """))
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           py, str(script)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"}, cwd=str(open_tmp))
    assert proc.returncode == 0, proc.stderr
    entered, forks, notes = json.loads(proc.stdout.splitlines()[-1])
    assert entered is False and forks == [0, 0, 0], (entered, forks)
    assert any("no namespaces" in n for n in notes)
