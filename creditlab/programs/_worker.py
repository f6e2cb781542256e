"""Sandbox worker: runs one untrusted program in its own process (see docs/programs.md, threat model).

This file is executed as a script (``python -I -B _worker.py CONFIG``) by
:mod:`creditlab.programs.sandbox`; it imports nothing from creditlab and nothing outside the
standard library and NumPy, so the untrusted program never shares a process with the caller.

Start-up, in order, before any untrusted byte is compiled:

1. stdin from /dev/null, stdout/stderr to a log file in the private folder (capped by RLIMIT_FSIZE);
2. import NumPy and the modules the protocol needs (later imports are refused);
3. a fresh network namespace (``unshare(CLONE_NEWNET)``: no interface but a down loopback);
4. resource limits: address space, CPU time (per call and for the worker's life), file size,
   open files, processes, core dumps;
5. Landlock (Linux >= 5.13): read-only access to the Python/NumPy install, read-write access to the
   private folder only, no TCP bind/connect, no signals or abstract sockets outside the sandbox;
6. drop root: ``setgroups([])``, ``setresgid``/``setresuid`` to an unprivileged id (nobody);
7. seccomp-BPF (x86_64): fork/exec/socket/ptrace/namespaces/mount/bpf/io_uring/... fail with EPERM,
   ``kill`` only to itself; threads are still allowed;
8. Python guards: an audit hook that refuses file access outside the allowed folders, sockets,
   subprocesses, ctypes, new imports, frame/gc introspection, code-object construction; the program
   runs with a reduced ``__builtins__`` (no open/eval/exec/getattr/__import__ beyond math/numpy) and
   a ``print`` that keeps at most a few KB.

Each layer that could not be applied is reported (``layers`` in the ready message), never silent.

Wire protocol on two pipes: a 4-byte big-endian length, a JSON header, then raw float64/int64
arrays whose sizes follow from the header. The parent never unpickles anything from this process.
"""

from __future__ import annotations

import ctypes
import json
import linecache
import math  # noqa: F401  (pre-imported so the program's `import math` needs no file access)
import os
import resource
import signal
import struct
import sys
import time
import traceback
import warnings

import numpy as np

# Pre-import the NumPy submodules a program may reach, so no import happens after confinement.
import numpy.fft  # noqa: F401
import numpy.linalg  # noqa: F401
import numpy.ma  # noqa: F401
import numpy.polynomial  # noqa: F401
import numpy.random  # noqa: F401

np.seterr(all="ignore")  # floating-point warnings would need frame introspection, which is refused
warnings.simplefilter("ignore")

MAX_HEADER = 1 << 20
ALLOWED_DTYPES = {"float64": np.float64, "float32": np.float32, "int64": np.int64, "bool": np.bool_}

# ----------------------------------------------------------------------------- Linux confinement

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int

CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4

SYS_X86_64 = {
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
    "seccomp": 317,
}

# syscalls refused with EPERM inside the sandbox (x86_64 numbers)
DENY_X86_64 = {
    "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50, "socketpair": 53,
    "accept4": 288, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "ptrace": 101,
    "setpgid": 109, "setsid": 112, "mknod": 133, "mknodat": 259, "personality": 135,
    "pivot_root": 155, "chroot": 161, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "init_module": 175, "delete_module": 176, "finit_module": 313,
    "kexec_load": 246, "kexec_file_load": 320, "add_key": 248, "request_key": 249, "keyctl": 250,
    "unshare": 272, "setns": 308, "perf_event_open": 298, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "process_vm_readv": 310, "process_vm_writev": 311, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsmount": 432, "pidfd_open": 434,
    "pidfd_getfd": 438, "pidfd_send_signal": 424, "rt_sigqueueinfo": 129,
    "rt_tgsigqueueinfo": 297, "memfd_create": 319,
}
SYS_CLONE, SYS_CLONE3 = 56, 435
SELF_SIGNAL_X86_64 = {"kill": 62, "tkill": 200, "tgkill": 234}


def _errno() -> str:
    return os.strerror(ctypes.get_errno())


def _unshare_net() -> str:
    if not hasattr(_libc, "unshare"):
        return "off: libc has no unshare"
    if _libc.unshare(CLONE_NEWNET) == 0:
        return "on"
    err = _errno()
    # Not root: a user namespace grants the right to create a network namespace.
    if _libc.unshare(0x10000000 | CLONE_NEWNET) == 0:  # CLONE_NEWUSER | CLONE_NEWNET
        return "on (user namespace)"
    return f"off: unshare failed ({err})"


def _landlock(read_paths: list[str], write_paths: list[str]) -> str:
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "off: only wired for Linux x86_64"
    nr = SYS_X86_64
    abi = _libc.syscall(nr["landlock_create_ruleset"], None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return f"off: Landlock unavailable ({_errno()})"
    fs_all = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        fs_all |= 1 << 13  # REFER
    if abi >= 3:
        fs_all |= 1 << 14  # TRUNCATE
    if abi >= 5:
        fs_all |= 1 << 15  # IOCTL_DEV
    net_all = 0b11 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP, with no rule: all refused
    scoped = 0b11 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = RulesetAttr(fs_all, net_all, scoped)
    size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
    rfd = _libc.syscall(nr["landlock_create_ruleset"], ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if rfd < 0:
        return f"off: landlock_create_ruleset failed ({_errno()})"
    read_dir = (1 << 0) | (1 << 2) | (1 << 3)  # EXECUTE | READ_FILE | READ_DIR
    file_only = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)
    try:
        for paths, access in ((read_paths, read_dir), (write_paths, fs_all)):
            for p in paths:
                if not os.path.exists(p):
                    continue
                allowed = access & fs_all
                if not os.path.isdir(p):
                    allowed &= file_only
                fd = os.open(p, os.O_PATH | os.O_CLOEXEC)
                try:
                    rule = PathBeneath(allowed, fd)
                    if _libc.syscall(nr["landlock_add_rule"], rfd, 1, ctypes.byref(rule), 0) != 0:
                        return f"off: landlock_add_rule({p}) failed ({_errno()})"
                finally:
                    os.close(fd)
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return f"off: no_new_privs failed ({_errno()})"
        if _libc.syscall(nr["landlock_restrict_self"], rfd, 0) != 0:
            return f"off: landlock_restrict_self failed ({_errno()})"
    finally:
        os.close(rfd)
    parts = ["fs"] + (["tcp"] if net_all else []) + (["signals"] if scoped else [])
    return f"on (ABI {abi}: {', '.join(parts)})"


def _drop_privileges(uid: int, gid: int) -> str:
    if os.geteuid() != 0:
        return "off: not root (already unprivileged)"
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        return f"off: {exc}"
    if os.geteuid() == 0 or os.getuid() == 0:
        return "off: still root after setresuid"
    return f"on (uid {uid})"


def _seccomp() -> str:
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "off: filter only written for Linux x86_64"

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]

    LD_W_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    ALLOW, KILL = 0x7FFF0000, 0x80000000
    EPERM, ENOSYS = 0x00050000 | 1, 0x00050000 | 38
    arch_x86_64 = 0xC000003E
    pid = os.getpid()
    prog: list[tuple[int, int, int, int]] = [
        (LD_W_ABS, 0, 0, 4),  # arch
        (JEQ, 1, 0, arch_x86_64),
        (RET, 0, 0, KILL),
        (LD_W_ABS, 0, 0, 0),  # syscall number
        (JGE, 0, 1, 0x40000000),  # x32 ABI numbers
        (RET, 0, 0, EPERM),
    ]
    for number in sorted(DENY_X86_64.values()):
        prog += [(JEQ, 0, 1, number), (RET, 0, 0, EPERM)]
    prog += [(JEQ, 0, 1, SYS_CLONE3), (RET, 0, 0, ENOSYS)]  # glibc falls back to clone()
    # clone(): threads only (CLONE_THREAD in flags); processes are refused.
    prog += [
        (JEQ, 0, 4, SYS_CLONE),
        (LD_W_ABS, 0, 0, 16),  # args[0], low 32 bits (little-endian)
        (JSET, 0, 1, CLONE_THREAD),
        (RET, 0, 0, ALLOW),
        (RET, 0, 0, EPERM),
    ]
    # kill/tkill/tgkill: only to this process.
    for number in SELF_SIGNAL_X86_64.values():
        prog += [
            (JEQ, 0, 6, number),
            (LD_W_ABS, 0, 0, 20),  # args[0], high 32 bits must be 0
            (JEQ, 0, 2, 0),
            (LD_W_ABS, 0, 0, 16),  # args[0], low 32 bits
            (JEQ, 1, 0, pid),
            (RET, 0, 0, EPERM),
            (RET, 0, 0, ALLOW),
        ]
        # after a failed JEQ on the number, the accumulator still holds the number: fine
    prog.append((RET, 0, 0, ALLOW))
    arr = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    fprog = SockFprog(len(prog), arr)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"off: no_new_privs failed ({_errno()})"
    if _libc.syscall(SYS_X86_64["seccomp"], 1, 0, ctypes.byref(fprog)) != 0:  # SECCOMP_SET_MODE_FILTER
        return f"off: seccomp failed ({_errno()})"
    return f"on ({len(DENY_X86_64) + 3} syscalls restricted)"


def _set_limits(cfg: dict) -> str:
    mb = 1024 * 1024
    applied = []

    def lim(name: str, soft: int, hard: int | None = None) -> None:
        res = getattr(resource, name, None)
        if res is None:
            return
        hard = soft if hard is None else hard
        cur_soft, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(res, (soft, hard))
        applied.append(name[7:].lower())

    lim("RLIMIT_AS", int(cfg["memory_mb"] * mb))
    lim("RLIMIT_CPU", int(math.ceil(cfg["cpu_seconds"])) + 1, int(math.ceil(cfg["total_cpu_seconds"])) + 2)
    lim("RLIMIT_FSIZE", int(cfg["file_mb"] * mb))
    lim("RLIMIT_NOFILE", int(cfg["max_open_files"]))
    lim("RLIMIT_CORE", 0)
    lim("RLIMIT_MEMLOCK", 0)
    # Counted per user: blocks fork once unprivileged (root bypasses it, hence seccomp).
    lim("RLIMIT_NPROC", int(cfg.get("max_processes", 1)))
    return "on (" + ", ".join(applied) + ")"


# ----------------------------------------------------------------------------- Python guards


class CPULimitExceeded(BaseException):
    """Raised in the program when its per-call CPU budget (RLIMIT_CPU soft limit) is spent."""


class GuardViolation(RuntimeError):
    """An operation the sandbox refuses (raised by the audit hook)."""


class OutputLimit(ValueError):
    """The program's result is larger than the caller accepts."""


_state = {"untrusted": False, "allowed_code": set(), "compiling": False}

_BLOCK_PREFIXES = (
    "socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
    "os.system", "os.kill", "os.killpg", "os.startfile", "os.remove", "os.rename", "os.rmdir",
    "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink", "os.truncate", "os.chdir",
    "os.chflags", "os.setxattr", "os.removexattr", "os.utime", "os.putenv", "os.unsetenv",
    "shutil.", "ctypes.", "pty.", "sys._getframe", "sys._current_frames", "sys.settrace",
    "sys.setprofile", "sys._current_exceptions", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "function.__new__", "code.__new__", "marshal.", "pickle.", "urllib.", "http.", "ftplib.",
    "smtplib.", "poplib.", "imaplib.", "nntplib.", "telnetlib.", "webbrowser.", "builtins.input",
    "resource.setrlimit", "resource.prlimit", "signal.", "cpython.", "sqlite3.", "mmap.",
    "socket", "syslog.", "msvcrt.", "winreg.", "object.__getattr__", "object.__setattr__",
    "object.__delattr__", "setopencode", "os.listdir", "os.scandir", "glob.", "fcntl.", "tempfile.",
)
_ALLOWED_IMPORTS = ("math", "numpy", "cmath")


def _install_guards(tmp: str, read_paths: list[str]) -> None:
    tmp_real = os.path.realpath(tmp)
    reads = tuple(os.path.realpath(p) for p in read_paths)

    def under(path: str, roots: tuple[str, ...]) -> bool:
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    def hook(event: str, args: tuple) -> None:
        if not _state["untrusted"]:
            return
        if event == "exec":
            if args and id(args[0]) in _state["allowed_code"]:
                return
            raise GuardViolation("exec of new code is not allowed in the sandbox")
        if event == "compile":
            if _state["compiling"]:
                return
            raise GuardViolation("compile is not allowed in the sandbox")
        if event == "import":
            name = str(args[0]) if args else ""
            if name.split(".")[0] in _ALLOWED_IMPORTS:
                return
            raise GuardViolation(f"import of {name!r} is not allowed (only math and numpy)")
        if event == "open":
            path, mode = args[0], args[1] if len(args) > 1 else "r"
            if isinstance(path, int):
                raise GuardViolation("opening file descriptors is not allowed")
            try:
                p = os.path.realpath(os.fsdecode(path))
            except Exception as exc:  # noqa: BLE001
                raise GuardViolation(f"cannot resolve path {path!r}") from exc
            if under(p, (tmp_real,)):
                return
            writes = isinstance(mode, str) and any(c in mode for c in "wax+")
            if not writes and isinstance(mode, int):
                writes = bool(mode & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            if not writes and under(p, reads):
                return
            raise GuardViolation(f"file access outside the sandbox folder is not allowed: {p}")
        if event.startswith(_BLOCK_PREFIXES):
            raise GuardViolation(f"operation {event!r} is not allowed in the sandbox")

    sys.addaudithook(hook)


def _safe_builtins(printer) -> dict:
    import builtins

    names = [
        "abs", "all", "any", "ascii", "bin", "bool", "bytes", "callable", "chr", "complex", "dict",
        "divmod", "enumerate", "filter", "float", "format", "frozenset", "hash", "hex", "int",
        "isinstance", "issubclass", "iter", "len", "list", "map", "max", "min", "next", "oct", "ord",
        "pow", "range", "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple",
        "zip", "True", "False", "None", "NotImplemented", "Ellipsis",
        "ArithmeticError", "AssertionError", "AttributeError", "Exception", "FloatingPointError",
        "IndexError", "KeyError", "LookupError", "NotImplementedError", "OverflowError",
        "RuntimeError", "StopIteration", "TypeError", "ValueError", "ZeroDivisionError",
    ]
    safe = {n: getattr(builtins, n) for n in names}
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0 or name.split(".")[0] not in _ALLOWED_IMPORTS:
            raise ImportError(f"import of {name!r} is not allowed (only math and numpy)")
        return real_import(name, globals, locals, fromlist, level)

    safe["__import__"] = guarded_import
    safe["print"] = printer
    return safe


class _Printer:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def __call__(self, *args, sep=" ", end="\n", **_ignored) -> None:
        text = str(sep).join(str(a)[: self.limit + 1] for a in args) + str(end)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))

    def take(self) -> str:
        out = "".join(self.parts)
        if self.dropped:
            out += f"\n[... {self.dropped} more characters of output dropped]"
        self.parts, self.size, self.dropped = [], 0, 0
        return out


# ----------------------------------------------------------------------------- protocol


def _read_exact(fd: int, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            raise EOFError("parent closed the pipe")
        got += k
    return buf


def _read_into(fd: int, arr: np.ndarray) -> None:
    view = memoryview(arr).cast("B")
    got, n = 0, view.nbytes
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            raise EOFError("parent closed the pipe")
        got += k


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    sent = 0
    while sent < view.nbytes:
        sent += os.write(fd, view[sent:])


def _send(fd: int, header: dict, arrays: list[np.ndarray] = ()) -> None:
    raw = json.dumps(header).encode()
    head = struct.pack("!I", len(raw)) + raw
    if sum(a.nbytes for a in arrays) <= (1 << 19):  # small replies: one write, one wake-up
        _write_all(fd, b"".join([head] + [np.ascontiguousarray(a).tobytes() for a in arrays]))
        return
    _write_all(fd, head)
    for a in arrays:
        if a.nbytes:
            _write_all(fd, np.ascontiguousarray(a))


def _recv(fd: int) -> tuple[dict, list[np.ndarray]]:
    (n,) = struct.unpack("!I", bytes(_read_exact(fd, 4)))
    if n > MAX_HEADER:
        raise ValueError("header too large")
    header = json.loads(bytes(_read_exact(fd, n)))
    arrays = []
    for spec in header.get("arrays", []):
        arr = np.empty(tuple(int(s) for s in spec["shape"]), dtype=ALLOWED_DTYPES[spec["dtype"]])
        if arr.nbytes:
            _read_into(fd, arr)
        arrays.append(arr)
    return header, arrays


# ----------------------------------------------------------------------------- program runs


def _format_error(exc: BaseException, limit: int = 2000) -> tuple[str, str, str]:
    try:
        etype = type(exc).__name__
        msg = str(exc)[:limit]
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<program>"]
        tb = "".join(traceback.format_list(frames))[-limit:]
        return etype, msg, tb
    except BaseException:  # noqa: BLE001  (a hostile __str__)
        return "Error", "the program raised an exception that could not be formatted", ""


def _as_float_array(x, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be numeric; got dtype {arr.dtype} ({type(x).__name__})")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _normalize(result, mode: str, max_elements: int) -> tuple[list[str], list[np.ndarray], str]:
    names: list[str] = []
    arrays: list[np.ndarray] = []
    if mode == "factors":
        if not isinstance(result, (list, tuple)):
            raise TypeError(f"evaluation_func must return a list of [B, 1] arrays; got {type(result).__name__}")
        if len(result) > 256:
            raise ValueError(f"evaluation_func returned {len(result)} factors; at most 256 are allowed")
        for i, item in enumerate(result):
            names.append(f"factor_{i}")
            arrays.append(_as_float_array(item, f"factor {i}"))
        structure = "list"
    elif mode == "reward":
        comps = {}
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
            total, comps = result
        else:
            total = result
        names.append("reward")
        arrays.append(_as_float_array(total, "the total reward"))
        if len(comps) > 64:
            raise ValueError(f"{len(comps)} reward components; at most 64 are allowed")
        for k, v in comps.items():
            if not isinstance(k, str):
                raise TypeError(f"component names must be strings; got {type(k).__name__}")
            names.append("component:" + k[:64])
            arrays.append(_as_float_array(v, f"component {k[:64]!r}"))
        structure = "tuple" if comps else "array"
    else:
        raise ValueError(f"unknown mode {mode!r}")
    total_el = sum(a.size for a in arrays)
    if total_el > max_elements:
        raise OutputLimit(f"the program returned {total_el} numbers; the limit for this batch is {max_elements}")
    return names, arrays, structure


def main() -> int:
    cfg = json.loads(sys.argv[1])
    in_fd, out_fd, tmp = cfg["in_fd"], cfg["out_fd"], cfg["tmp"]
    limits = cfg["limits"]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past RLIMIT_FSIZE fail with EFBIG instead

    def on_cpu(signum, frame):
        raise CPULimitExceeded("CPU time limit exceeded")

    signal.signal(signal.SIGXCPU, on_cpu)
    os.chdir(tmp)
    layers: dict[str, str] = {}
    want = cfg["layers"]
    layers["network_namespace"] = _unshare_net() if want["network_namespace"] else "off: disabled"
    layers["rlimits"] = _set_limits(limits)
    read_paths = cfg["read_paths"]
    layers["landlock"] = _landlock(read_paths, [tmp]) if want["landlock"] else "off: disabled"
    if want["drop_privileges"]:
        layers["drop_privileges"] = _drop_privileges(cfg["uid"], cfg["gid"])
    else:
        layers["drop_privileges"] = "off: disabled"
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace attach, no /proc/<pid>/mem for peers
    layers["seccomp"] = _seccomp() if want["seccomp"] else "off: disabled"
    printer = _Printer(int(limits["stdout_chars"]))
    if want["python_guards"]:
        _install_guards(tmp, read_paths)
        layers["python_guards"] = "on (audit hook, reduced builtins)"
        builtins_ns = _safe_builtins(printer)
    else:
        import builtins

        layers["python_guards"] = "off: disabled"
        builtins_ns = dict(vars(builtins))
        builtins_ns["print"] = printer
    os.environ.clear()
    _send(out_fd, {"ready": True, "pid": os.getpid(), "layers": layers})

    fn = None
    cpu_per_call = float(limits["cpu_seconds"])
    total_cpu = float(limits["total_cpu_seconds"])
    while True:
        try:
            header, arrays = _recv(in_fd)
        except EOFError:
            return 0
        op = header.get("op")
        if op == "exit":
            return 0
        used = resource.getrusage(resource.RUSAGE_SELF)
        used_cpu = used.ru_utime + used.ru_stime
        soft = int(min(math.ceil(used_cpu + cpu_per_call), math.ceil(total_cpu) + 1))
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.getrlimit(resource.RLIMIT_CPU)[1]))
        except (ValueError, OSError):
            pass
        t0 = time.perf_counter()
        try:
            if op == "load":
                namespace = {"__builtins__": builtins_ns, "__name__": "program"}
                _state["compiling"] = True
                try:
                    code = compile(header["code"], "<program>", "exec")
                finally:
                    _state["compiling"] = False
                _state["allowed_code"] = {id(code)}
                linecache.cache["<program>"] = (len(header["code"]), None, header["code"].splitlines(True), "<program>")
                _state["untrusted"] = True
                try:
                    exec(code, namespace)
                finally:
                    _state["untrusted"] = False
                fn = namespace.get(header["entry"])
                if not callable(fn):
                    raise NameError(f"the program defines no function {header['entry']!r}")
                _send(out_fd, {"ok": True, "seconds": time.perf_counter() - t0, "stdout": printer.take()})
            elif op == "call":
                if fn is None:
                    raise RuntimeError("no program is loaded")
                _state["untrusted"] = True
                try:
                    result = fn(*arrays)
                    names, outs, structure = _normalize(result, header["mode"], int(header["max_elements"]))
                finally:
                    _state["untrusted"] = False
                specs = [{"name": n, "dtype": "float64", "shape": list(a.shape)} for n, a in zip(names, outs)]
                _send(
                    out_fd,
                    {"ok": True, "arrays": specs, "structure": structure, "seconds": time.perf_counter() - t0, "stdout": printer.take()},
                    outs,
                )
            elif op == "ping":
                _send(out_fd, {"ok": True, "layers": layers})
            else:
                raise ValueError(f"unknown op {op!r}")
        except BaseException as exc:  # noqa: BLE001  (every failure of the program is reported)
            _state["untrusted"] = False
            kind = "memory" if isinstance(exc, MemoryError) else "cpu" if isinstance(exc, CPULimitExceeded) else "error"
            if isinstance(exc, GuardViolation):
                kind = "refused"
            elif isinstance(exc, OutputLimit):
                kind = "output"
            etype, msg, tb = _format_error(exc)
            try:
                _send(out_fd, {"ok": False, "kind": kind, "type": etype, "message": msg, "traceback": tb, "stdout": printer.take()})
            except BaseException:  # noqa: BLE001
                return 3


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:  # noqa: BLE001
        code = 4
    os._exit(code)
