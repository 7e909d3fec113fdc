"""The system calls a job may not make: a seccomp-BPF filter every job inherits.

Standard library only, imported by ``sandbox_worker.py`` as a sibling module (the worker
is started as a script under the target interpreter).

A deny-list, not an allow-list: jobs run arbitrary Python (numpy, scipy, sympy, threads,
subprocess, multiprocessing), and nothing of what that needs is refused. What is refused
(with EPERM, so Python raises a clean OSError; the job carries on) is what no snippet of
this pipeline needs and what would let a job undo its isolation or reach rarely exercised
parts of the kernel:
  - new namespaces: unshare, setns, clone with any CLONE_NEW* flag (a user namespace would
    give the job capabilities over new mount namespaces: mount, chroot inside the view);
    clone3 answers ENOSYS, since its flags live in memory a filter cannot read: glibc then
    falls back to clone (threads, fork, posix_spawn keep working);
  - mounts and roots: mount, umount2, pivot_root, chroot, the new mount API (open_tree,
    move_mount, fsopen, fsconfig, fsmount, fspick, mount_setattr). One mount gets through:
    a remount of a mount's own options without MS_BIND, which the worker makes to resize
    the tmpfs of its jobs; the kernel refuses it to a job (no CAP_SYS_ADMIN, and no way to
    get it in a new user namespace);
  - other processes' memory and control: ptrace, process_vm_readv/writev;
  - kernel attack surface: bpf, perf_event_open, userfaultfd, io_uring_*, keyrings
    (add_key, request_key, keyctl), name_to_handle_at/open_by_handle_at;
  - the machine's state: modules, kexec, reboot, swap, acct, quotactl, syslog, clock and
    time setters, sethostname/setdomainname; personality other than reading it (or
    setting PER_LINUX);
  - another system-call ABI: a foreign ``seccomp_data.arch`` (i386 calls on x86_64, arm32
    on aarch64) and x32 calls (number with bit 0x40000000) are all refused.
The numbers are those of the kernel headers (asm/unistd_64.h for x86_64,
asm-generic/unistd.h for aarch64). On another architecture there is no table and no
filter: ``program()`` returns None and the worker says so (see sandbox_worker.py).

The worker installs it on itself once its set-up (namespaces, pivot_root, the view) is
done; every job is forked from it and inherits it, and so does everything a job starts
(threads, forks, exec'ed programs); it can never be removed. Not per job: installing a
filter costs ~0.1-0.2 ms of kernel time on this machine (bench/bench_filter.py), about 8%
of the rate of short jobs (bench/bench_executor.py).
"""

import ctypes
import ctypes.util
import errno
import os
import struct

# seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little-endian here)
OFF_NR, OFF_ARCH, OFF_ARG0_LOW = 0, 4, 16
# BPF opcodes (linux/filter.h)
LD_ABS = 0x20          # BPF_LD | BPF_W | BPF_ABS
JEQ = 0x15             # BPF_JMP | BPF_JEQ | BPF_K
JGE = 0x35             # BPF_JMP | BPF_JGE | BPF_K
JSET = 0x45            # BPF_JMP | BPF_JSET | BPF_K
RET = 0x06             # BPF_RET | BPF_K
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
X32_BIT = 0x40000000
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET. (CLONE_NEWTIME, 0x80,
# exists for clone3 and unshare only: in clone's flags that byte is the exit signal.)
CLONE_NEW_MASK = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | \
    0x20000000 | 0x40000000
PER_LINUX, PER_QUERY = 0, 0xFFFFFFFF
OFF_ARG3_LOW = 16 + 3 * 8      # mount's flags
MS_REMOUNT, MS_BIND = 32, 4096
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
SECCOMP_SET_MODE_FILTER = 1
# Where the kernel still turns on the speculative-store-bypass mitigation for a process
# with a filter (before 5.16), the job's code would run slower; it protects the process
# from its own code, which here is the untrusted party.
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2

# refused whatever their arguments (mount, clone and personality are decided by theirs)
DENIED = ("unshare", "setns", "umount2", "pivot_root", "chroot", "open_tree",
          "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
          "ptrace", "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open",
          "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
          "add_key", "request_key", "keyctl", "name_to_handle_at", "open_by_handle_at",
          "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
          "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog",
          "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "sethostname",
          "setdomainname")

# machine -> (AUDIT_ARCH_*, {name: number}); the numbers of DENIED plus mount, clone,
# clone3, personality and seccomp
ARCHES = {
    "x86_64": (0xC000003E, {
        "clone": 56, "clone3": 435, "personality": 135, "seccomp": 317,
        "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
        "chroot": 161, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "add_key": 248,
        "request_key": 249, "keyctl": 250, "name_to_handle_at": 303,
        "open_by_handle_at": 304, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "reboot": 169,
        "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179, "quotactl_fd": 443,
        "syslog": 103, "settimeofday": 164, "clock_settime": 227, "adjtimex": 159,
        "clock_adjtime": 305, "sethostname": 170, "setdomainname": 171}),
    "aarch64": (0xC00000B7, {
        "clone": 220, "clone3": 435, "personality": 92, "seccomp": 277,
        "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41,
        "chroot": 51, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "bpf": 280,
        "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "add_key": 217,
        "request_key": 218, "keyctl": 219, "name_to_handle_at": 264,
        "open_by_handle_at": 265, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294, "reboot": 142,
        "swapon": 224, "swapoff": 225, "acct": 89, "quotactl": 60, "quotactl_fd": 443,
        "syslog": 116, "settimeofday": 170, "clock_settime": 112, "adjtimex": 171,
        "clock_adjtime": 266, "sethostname": 161, "setdomainname": 162}),
}

INSN = struct.Struct("=HBBI")   # struct sock_filter: code, jt, jf, k


def program(machine=None):
    """The filter for `machine` (default: this one) as a list of (code, jt, jf, k), or None
    when there is no table for it.

    Layout: check the arch, load the number, refuse x32; then a binary search (JGE) over
    the sorted special numbers down to runs of at most three JEQs, the last of which goes
    to ALLOW when it misses; the JEQs jump to the shared returns at the end (EPERM, ENOSYS) or to the checks
    of clone's and personality's first argument. Why a search and not one JEQ per number:
    when a filter is installed the kernel runs it once per system-call number and ABI
    (it caches which calls are always allowed), so its cost grows with the path length;
    a linear list of 50 doubled the time of the seccomp(2) call (measured: bench/)."""
    machine = machine or os.uname().machine
    arch, nrs = ARCHES.get(machine, (None, None))
    if arch is None:
        return None
    body = []            # (code, jt, jf, k), jt/jf a label (str) or an offset
    labels = {}

    def emit(code, jt=0, jf=0, k=0, label=None):
        if label is not None:
            labels[label] = len(body)
        body.append((code, jt, jf, k))

    emit(LD_ABS, k=OFF_ARCH)
    emit(JEQ, 0, "deny", arch)          # a foreign ABI: refuse everything
    emit(LD_ABS, k=OFF_NR)
    if machine == "x86_64":
        emit(JSET, "deny", 0, X32_BIT)
    special = sorted([(nrs[name], "deny") for name in DENIED] +
                     [(nrs["clone3"], "enosys"), (nrs["clone"], "clone"),
                      (nrs["personality"], "personality"), (nrs["mount"], "mount")])

    def search(items, label=None):
        if len(items) <= 3:     # (never empty) the last JEQ's miss goes to ALLOW
            for i, (nr, target) in enumerate(items):
                emit(JEQ, target, "allow" if i == len(items) - 1 else 0, nr,
                     label=label if i == 0 else None)
            return
        mid = len(items) // 2
        upper = f"ge{items[mid][0]}"
        emit(JGE, upper, 0, items[mid][0], label=label)
        search(items[:mid])
        search(items[mid:], upper)

    search(special)
    # jumps only go forward: the tail holds every target
    emit(LD_ABS, k=OFF_ARG0_LOW, label="clone")
    emit(JSET, "deny", "allow", CLONE_NEW_MASK)
    # mount: only a remount of a mount's own options (the worker resizes the tmpfs of its
    # jobs); any other mount, a bind remount (read-only to writable) included, is refused
    emit(LD_ABS, k=OFF_ARG3_LOW, label="mount")
    emit(JSET, "deny", 0, MS_BIND)
    emit(JSET, "allow", "deny", MS_REMOUNT)
    emit(LD_ABS, k=OFF_ARG0_LOW, label="personality")
    emit(JEQ, "allow", 0, PER_QUERY)
    emit(JEQ, "allow", "deny", PER_LINUX)
    emit(RET, k=RET_ALLOW, label="allow")
    emit(RET, k=RET_ERRNO | errno.EPERM, label="deny")
    emit(RET, k=RET_ERRNO | errno.ENOSYS, label="enosys")
    out = []
    for i, (code, jt, jf, k) in enumerate(body):
        # a jump's offsets count the instructions skipped after the jump itself
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        if not (0 <= jt < 256 and 0 <= jf < 256):   # BPF jumps forward, by a byte
            raise ValueError("filter jump out of range")
        out.append((code, jt, jf, k))
    return out


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Filter:
    """The filter of this machine; ``install`` puts it on the calling thread (the worker's
    only one) and everything forked from it later. ``available`` is False (and
    ``reason`` says why) where there is no table for the architecture."""

    def __init__(self):
        self.machine = os.uname().machine
        insns = program()
        self.available = insns is not None
        self.reason = "" if self.available else f"no system-call table for {self.machine}"
        if not self.available:
            return
        self._code = ctypes.create_string_buffer(b"".join(INSN.pack(*i) for i in insns))
        self._prog = _SockFprog(len(insns), ctypes.addressof(self._code))
        self._nr_seccomp = ARCHES[self.machine][1]["seccomp"]
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self._libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                                     ctypes.c_ulong, ctypes.c_ulong]

    def install(self):
        """Install the filter on the calling thread; needs PR_SET_NO_NEW_PRIVS or
        CAP_SYS_ADMIN. OSError when the kernel refuses."""
        prog = ctypes.addressof(self._prog)
        ret = self._libc.syscall(ctypes.c_long(self._nr_seccomp),
                                 ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
                                 ctypes.c_ulong(SECCOMP_FILTER_FLAG_SPEC_ALLOW),
                                 ctypes.c_void_p(prog))
        if ret == 0:
            return
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS):   # before 4.17 (the flag) or 3.17 (the call)
            if self._libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog, 0, 0) == 0:
                return
            err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter: {os.strerror(err)}")
