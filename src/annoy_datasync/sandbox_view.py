"""What a job sees of the machine: the namespaces and the file system of a sandbox worker.

Standard library only, imported by ``sandbox_worker.py`` as a sibling module (the worker is
started as a script under the target interpreter). Everything that decides what executed
code can reach on disk is in this file.

The view is an allow-list. The worker builds a new root on an empty tmpfs inside its own
mount namespace, binds into it only what is listed below, then makes it its root with
pivot_root(2) and detaches the old one: whatever is not listed does not exist for a job
(ENOENT, not EACCES); there is no path back to it.

What a job sees (read-only unless said otherwise):
  - the interpreter's installation: sys.prefix, sys.base_prefix, sys.exec_prefix, the
    directory of the binary, every directory of the worker's sys.path (site-packages and
    what .pth files add) and the sysconfig install paths. Whole directories, so a module
    first imported by the job (scipy, sympy) is found as well. A prefix shared with other
    software (/usr, /usr/local, /opt, ...: a system interpreter) is not bound whole, only
    the interpreter's own directories below it;
  - the directories of the shared libraries the worker has mapped once its preload modules
    are imported (/proc/self/maps: libc, libm, libz, libffi, ...), so that a library a job
    loads later from the same directory is found too; the program interpreter (ld.so)
    under the name the binary asks for; the host's top-level links (/lib -> usr/lib, ...);
  - the time-zone and locale data: zoneinfo.TZPATH directories, /usr/lib/locale;
  - /etc with only: ld.so.cache (the loader's index: how dlopen finds libc & co. by name),
    localtime (time.localtime, datetime.now().astimezone()), and passwd, group, hosts
    written here (a line for root and for the job's uid, so that pwd/getpass answer;
    localhost, which is all the job's network namespace has);
  - /dev with null, zero, random, urandom (bound from the host), fd/stdin/stdout/stderr
    links into /proc/self, and a private /dev/shm (multiprocessing's semaphores): writable;
  - /proc of the worker's PID namespace (the worker and the job's processes only);
  - /tmp: a private tmpfs, writable, emptied after every job (so is /dev/shm);
  - the run directory: a private tmpfs, writable, holding the job's own directory (its
    working directory, removed after the job);
  - the directories given with --read_path (``read_paths`` of the Executor).
Nothing else: no host /tmp, /var, /srv, /opt, /mnt, /media, /home, /root, /sys, /run, no
other file of /etc, no other project directory. The sizes of the writable tmpfs mounts
follow the job's ``disk_mb`` limit.

When the kernel refuses namespaces, none of this happens: the worker says so in its notes
and the Executor reports ``view_restricted == False`` (steps print it in their summary).
"""

import ctypes
import ctypes.util
import errno
import os
import shutil
import signal
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
MS_MOVE = 8192
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
# pivot_root has no libc wrapper; its number by architecture (the generic table is 41)
SYS_PIVOT_ROOT = {"x86_64": 155, "i386": 217, "i686": 217, "aarch64": 41, "riscv64": 41,
                  "ppc64le": 203, "s390x": 217}
SHARED_PREFIXES = frozenset({"/", "/usr", "/usr/local", "/opt", "/var", "/srv", "/home"})
VIEW_DIRS = ("/etc", "/dev", "/proc", "/tmp")     # made by the view, never bound from the host
DEVICES = ("null", "zero", "random", "urandom")
# /etc files bound from the host (see the module docstring for why each)
ETC_FILES = ("ld.so.cache", "localtime")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option, arg=0):
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def unshare(flags):
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
           f"mount {target}")


def pivot_root(new_root, put_old):
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown on {os.uname().machine}")
    _check(_libc.syscall(ctypes.c_long(number), os.fsencode(new_root), os.fsencode(put_old)),
           "pivot_root")


def drop_capabilities():
    """capset(2) with empty sets: no capability left in our user namespace."""
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]
    data = (Data * 2)()
    _check(_libc.capset(ctypes.byref(Header(0x20080522, 0)), data), "capset")


# ----------------------------------------------------------------------------- namespaces
def enter_namespaces(allowed, proto_fds, notes, outer_wait):
    """New mount + network + PID + IPC namespaces (and a user namespace when not root), then
    fork: the child returns True and is PID 1 of the new PID namespace; the parent closes
    `proto_fds` and calls ``outer_wait(child_pid)``, which never returns. Returns False (and
    makes us a subreaper) when namespaces are refused or not `allowed`."""
    root = os.geteuid() == 0
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC
    uid, gid = os.getuid(), os.getgid()
    try:
        if not allowed:
            raise OSError(errno.EPERM, "turned off by the caller")
        if not root:
            # The user namespace first, and alone: where it is created but may not be
            # mapped (Ubuntu's AppArmor restriction of unprivileged user namespaces), the
            # other namespaces are then refused too, and we carry on without any. Created
            # together, the PID namespace would already hold our next child, and once that
            # first job ended, no process could be forked any more.
            unshare(CLONE_NEWUSER)
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        unshare(flags)
    except OSError as exc:
        notes.append(f"no namespaces ({exc.strerror}): no network isolation, whole-tree "
                     "kill by process scan, the file system NOT restricted (jobs see "
                     "everything the job's uid may read)")
        try:
            prctl(PR_SET_CHILD_SUBREAPER, 1)
        except OSError:
            pass
        return False
    pid = os.fork()
    if pid:   # stay as the namespace's parent
        for fd in proto_fds:
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        outer_wait(pid)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)   # the outer process has a single thread
    return True


# --------------------------------------------------------------------- what to expose
def interpreter_dirs():
    """Directories of the interpreter's installation (real paths, outermost only are kept
    later) and the names under which the interpreter refers to them."""
    import sysconfig
    spelled = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    spelled.update(p for p in sys.path[1:] if p)      # [0]: the worker's own directory
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            spelled.add(sysconfig.get_path(name))
        except KeyError:
            pass
    spelled.add(os.path.dirname(os.path.realpath(sys.executable)))
    try:
        import zoneinfo
        spelled.update(zoneinfo.TZPATH)
    except ImportError:
        pass
    spelled.add("/usr/lib/locale")
    # a system interpreter's prefix is shared with all other software: only its own
    # directories below it (stdlib, dist-packages, bin) come in, not the whole of /usr
    return {p for p in spelled if p and os.path.isdir(p)
            and os.path.realpath(p) not in SHARED_PREFIXES}


def in_child(fn):
    """fn() (a set of str) computed in a short-lived child: the modules it imports
    (sysconfig, zoneinfo) stay out of the worker, whose size every job's fork pays for."""
    import json
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            data = json.dumps(sorted(fn())).encode()
            while data:
                data = data[os.write(w, data):]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, st = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(st) != 0:
        raise OSError(errno.EIO, "could not list the interpreter's directories")
    return set(json.loads(b"".join(chunks)))


def mapped_dirs():
    """Directories of the files this process maps (shared libraries, the loader)."""
    found = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/") and \
                    not parts[5].startswith(("/dev/", "/proc/", "/memfd:")):
                path = parts[5].rstrip("\n")
                # shared objects only: the loader also maps /etc/ld.so.cache, and /etc
                # must not come in whole that way
                if ".so" in os.path.basename(path) and not path.endswith(" (deleted)"):
                    found.add(os.path.dirname(path))
    return found


def elf_interpreter(path):
    """The program interpreter (PT_INTERP) an ELF binary names, e.g. /lib64/ld-linux-x86-64.so.2."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or len(head) < 64:
                return None
            end = "<" if head[5] == 1 else ">"
            wide = head[4] == 2
            if wide:
                phoff, = struct.unpack_from(end + "Q", head, 32)
                size, count = struct.unpack_from(end + "HH", head, 54)
            else:
                phoff, = struct.unpack_from(end + "I", head, 28)
                size, count = struct.unpack_from(end + "HH", head, 42)
            f.seek(phoff)
            table = f.read(size * count)
            for i in range(count):
                if struct.unpack_from(end + "I", table, i * size)[0] != 3:   # PT_INTERP
                    continue
                if wide:
                    off, = struct.unpack_from(end + "Q", table, i * size + 8)
                    length, = struct.unpack_from(end + "Q", table, i * size + 32)
                else:
                    off, = struct.unpack_from(end + "I", table, i * size + 4)
                    length, = struct.unpack_from(end + "I", table, i * size + 16)
                f.seek(off)
                return os.fsdecode(f.read(length).rstrip(b"\0"))
    except (OSError, struct.error):
        return None
    return None


def outermost(paths):
    """`paths` without those inside another one of them."""
    out = []
    for p in sorted(paths, key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def covers_view_dirs(path):
    """True if `path` is, or holds, a directory the view makes itself (/etc, /dev, ...)."""
    return any(inside(d, [path]) for d in VIEW_DIRS)


def inside(path, tops):
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in tops)


# ----------------------------------------------------------------------------- the view
class View:
    """The worker's file system view. ``build`` once (PID 1 of the namespaces, after the
    preload imports), ``resize`` when a job's disk limit changes, ``clear_scratch`` after
    every job."""

    def __init__(self, run_path, read_paths, job_uid, notes):
        self.run = os.path.realpath(run_path)
        self.read_paths = [os.path.realpath(p) for p in read_paths if os.path.isdir(p)]
        self.job_uid = job_uid
        self.notes = notes
        self.disk_mb = 64
        self.writable = []      # tmpfs mounts sized by the job's disk limit
        self.scratch = []       # emptied after every job
        self.mount_points = []  # inside the scratch directories: kept
        self.restricted = False

    def build(self):
        mount(None, "/", None, MS_REC | MS_PRIVATE)   # nothing we mount leaks out
        spelled = in_child(interpreter_dirs) | set(self.read_paths)
        binds = outermost({os.path.realpath(p) for p in spelled | mapped_dirs()} - {"/"})
        binds = [b for b in binds if b != self.run and os.path.isdir(b)]
        for b in [b for b in binds if covers_view_dirs(b)]:
            # the view's own /etc, /dev, /proc, /tmp are made here: a host directory bound
            # over them would be written to (and emptied, for /tmp) by the code below
            self.notes.append(f"{b} not exposed to jobs: it holds the view's own directories")
            binds.remove(b)
        links = set(spelled)
        links.add(sys.executable)
        interp = elf_interpreter(os.path.realpath(sys.executable))
        if interp:
            links.add(interp)
        # sources opened before anything is covered (the new root hides the host's /tmp)
        fds = {b: os.open(b, os.O_PATH | os.O_CLOEXEC) for b in binds}
        files = {f"/dev/{d}": f"/dev/{d}" for d in DEVICES}
        files.update({f"/etc/{e}": os.path.realpath(f"/etc/{e}") for e in ETC_FILES})
        file_fds = {}
        for target, source in files.items():
            try:
                file_fds[target] = os.open(source, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                pass     # e.g. no /etc/localtime: UTC
        run_fd = os.open(self.run, os.O_PATH | os.O_CLOEXEC)
        new = "/tmp" if os.path.isdir("/tmp") else "/mnt"
        mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=755")
        try:
            self._populate(new, binds, fds, files, file_fds, run_fd, links)
        finally:
            for fd in list(fds.values()) + list(file_fds.values()) + [run_fd]:
                os.close(fd)
        os.chdir(new)
        try:
            pivot_root(".", ".")        # the old root ends up stacked on the new one...
            _check(_libc.umount2(b".", MNT_DETACH), "umount old root")   # ...and is gone
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            # the host's root is the initial ramfs (pivot_root refuses it): move the new
            # root over / instead; the old one stays below, out of reach without privileges
            mount(".", "/", None, MS_MOVE)
            os.chroot(".")
        os.chdir("/")
        self.mount_points = [m for m in binds + [self.run] if inside(m, self.scratch)]
        self.read_only(keep={self.run, "/tmp", "/dev/shm"})
        self.restricted = True

    def _populate(self, new, binds, fds, files, file_fds, run_fd, links):
        # writable scratch first: a bound directory or the run directory under the host's
        # /tmp then sits inside the private /tmp (and is kept when /tmp is emptied)
        for path in ("/tmp", "/dev/shm"):
            os.makedirs(new + path, mode=0o755, exist_ok=True)
            mount("tmpfs", new + path, "tmpfs", MS_NOSUID | MS_NODEV, self.options(1777))
            self.writable.append(path)
            self.scratch.append(path)
        for b in binds:
            os.makedirs(new + b, mode=0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fds[b]}", new + b, None, MS_BIND | MS_REC)
        for name in ("dev", "etc", "proc"):
            os.makedirs(f"{new}/{name}", mode=0o755, exist_ok=True)
        for target, fd in file_fds.items():
            with open(new + target, "w"):
                pass
            mount(f"/proc/self/fd/{fd}", new + target, None, MS_BIND)
        for name, dest in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                           ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(dest, f"{new}/dev/{name}")
        self._write_etc(new)
        # the host's top-level links (/lib -> usr/lib, ...) and the paths the interpreter
        # names through links (a venv's bin/python, the loader /lib64/ld-linux...)
        for name in os.listdir("/"):
            if os.path.islink("/" + name) and not os.path.lexists(f"{new}/{name}"):
                os.symlink(os.readlink("/" + name), f"{new}/{name}")
        for p in sorted(links):
            self._mirror(new, p, binds)
        # writable: the run directory, /tmp, /dev/shm (private tmpfs mounts, size-limited)
        run_target = new + self.run
        if not inside(self.run, binds):
            os.makedirs(run_target, mode=0o755, exist_ok=True)
        try:
            mount("tmpfs", run_target, "tmpfs", MS_NOSUID | MS_NODEV, self.options(711))
            self.writable.append(self.run)
        except OSError as exc:
            self.notes.append(f"job directories on disk, size unbounded ({exc.strerror})")
            mount(f"/proc/self/fd/{run_fd}", run_target, None, MS_BIND)
        # /proc of our PID namespace, mounted while the host's /proc is still visible (an
        # unprivileged proc mount needs a fully visible one in the namespace)
        try:
            mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as exc:
            self.notes.append(f"no /proc for jobs ({exc.strerror})")

    def _mirror(self, new, path, binds, depth=0):
        """Make `path` resolve in the new root as on the host: the directories on the way
        and the symbolic links met, up to the first bound directory."""
        if depth > 20 or not path.startswith("/"):
            return
        cur = ""
        comps = [c for c in path.split("/") if c]
        for i, comp in enumerate(comps):
            cur += "/" + comp
            if inside(cur, binds):
                return
            dst = new + cur
            if os.path.islink(cur):
                target = os.readlink(cur)
                if not os.path.lexists(dst):
                    os.symlink(target, dst)
                rest = "/".join(comps[i + 1:])
                resolved = os.path.normpath(os.path.join(os.path.dirname(cur), target, rest))
                self._mirror(new, resolved, binds, depth + 1)
                return
            if not os.path.isdir(cur):
                return
            if not os.path.lexists(dst):
                os.mkdir(dst, 0o755)

    def _write_etc(self, new):
        uid = self.job_uid if self.job_uid is not None else os.getuid()
        gid = self.job_uid if self.job_uid is not None else os.getgid()
        users = {0: "root", uid: "sandbox"}
        groups = {0: "root", gid: "sandbox"}
        with open(f"{new}/etc/passwd", "w") as f:
            for u, name in users.items():
                g = 0 if u == 0 else gid
                f.write(f"{name}:x:{u}:{g}:{name}:/tmp:/usr/sbin/nologin\n")
        with open(f"{new}/etc/group", "w") as f:
            for g, name in groups.items():
                f.write(f"{name}:x:{g}:\n")
        with open(f"{new}/etc/hosts", "w") as f:
            f.write("127.0.0.1 localhost\n::1 localhost\n")

    def options(self, mode):
        mb = self.disk_mb
        return f"size={mb}m,nr_inodes={max(1024, mb * 64)},mode={mode}"

    def resize(self, mb):
        if mb == self.disk_mb:
            return
        self.disk_mb = mb
        for path in self.writable:
            mode = 711 if path == self.run else 1777
            mount(None, path, None, MS_REMOUNT | MS_NOSUID | MS_NODEV, self.options(mode))

    def clear_scratch(self):
        """Empty /tmp and /dev/shm: what a job left there is gone before the next one.
        Mount points inside them (the run directory or a read path under the host's /tmp)
        and the directories leading to them stay."""
        for path in self.scratch:
            self._clear(path)

    def _clear(self, path):
        for name in os.listdir(path):
            full = os.path.join(path, name)
            if full in self.mount_points:
                continue
            if any(m.startswith(full + "/") for m in self.mount_points):
                self._clear(full)
            elif os.path.isdir(full) and not os.path.islink(full):
                remove_tree(full)
            else:
                try:
                    os.unlink(full)
                except FileNotFoundError:
                    pass

    def read_only(self, keep):
        """Remount every mount but `keep` (and /proc) read-only, one by one (MS_BIND: the
        mount, never the file system), keeping the flags the kernel locked on them."""
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
        keepflags = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                     "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
                     "relatime": MS_RELATIME}
        for line in lines:
            fields = line.split()
            mp = fields[4].encode().decode("unicode_escape")
            opts = fields[5].split(",")
            if mp in keep or "ro" in opts or mp == "/proc" or mp.startswith("/proc/"):
                continue
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY
            for o in opts:
                flags |= keepflags.get(o, 0)
            try:
                mount(None, mp, None, flags)
            except OSError as exc:
                self.notes.append(f"{mp} stays writable ({exc.strerror})")


def remove_tree(path):
    """Remove a directory even if the job made parts of it unreadable."""
    def fix(func, p, _exc):
        try:
            parent = os.path.dirname(p)
            os.chmod(parent, 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=fix)
    if os.path.lexists(path):
        for root, dirs, _ in os.walk(path):
            for d in dirs:
                full = os.path.join(root, d)
                if not os.path.islink(full):
                    try:
                        os.chmod(full, 0o700)
                    except OSError:
                        pass
        shutil.rmtree(path, ignore_errors=True)
