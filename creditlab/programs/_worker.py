"""Sandbox worker: runs one untrusted program in its own process (see docs/programs.md, threat model).

This file is executed as a script by :mod:`creditlab.programs.sandbox`, normally inside a
bubblewrap sandbox (``python -I -S -B /sandbox/worker.py CONFIG``: fresh user, pid, ipc, net,
mount, uts and cgroup namespaces, a read-only view of the interpreter, the standard library and
NumPy, a private tmpfs, an allow-list seccomp filter applied before this script starts). It
imports nothing from creditlab and nothing outside the standard library and NumPy.

Start-up, in order, before any untrusted byte is compiled:

1. import NumPy and the modules the protocol needs (later imports of other modules are refused
   by the Python guards, and would find no file outside the read-only view anyway);
2. degraded mode only (no bubblewrap): a fresh network namespace if possible;
3. resource limits: address space, CPU time (per call and for the worker's life), file size,
   open files, processes, core dumps;
4. Landlock (Linux >= 5.13): read-only access to the interpreter, the stdlib and NumPy, read-write
   access to the private folder only, no TCP bind/connect, no signals or abstract sockets outside;
5. degraded mode only, as root: ``setgroups([])``, ``setresgid``/``setresuid`` to nobody;
6. not dumpable; every file descriptor but the two pipes and the log is closed;
7. the run-time seccomp allow-list (compiled by libseccomp in the parent, loaded here with
   ``prctl``): stricter than the start-up filter (no execve, no prctl, no new filters);
8. Python guards (an audit hook, reduced builtins, a capped ``print``). These only give early,
   clear feedback for honest mistakes: the program can reach and switch them off, so no security
   decision depends on them.

Each layer that could not be applied is reported (``layers`` in the ready message), never silent.

Wire protocol on two pipes: a 4-byte big-endian length, a JSON header, then raw float64 arrays
whose sizes follow from the header. The parent validates every reply (sizes checked before
allocation, JSON depth and length caps, typed fields, the request's sequence number echoed) and
never unpickles anything from this process.
"""

from __future__ import annotations

import json
import os
import sys

_CFG = json.loads(sys.argv[1]) if __name__ == "__main__" and len(sys.argv) > 1 else {}
if _CFG.get("site"):
    sys.path.insert(0, _CFG["site"])  # the read-only copy of NumPy inside the sandbox (python -S: no site-packages)

import base64  # noqa: E402
import ctypes  # noqa: E402
import linecache  # noqa: E402
import math  # noqa: E402,F401  (pre-imported so the program's `import math` needs no file access)
import resource  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

# Pre-import the NumPy submodules a program may reach, so no import happens after confinement.
import numpy.fft  # noqa: E402,F401
import numpy.linalg  # noqa: E402,F401
import numpy.ma  # noqa: E402,F401
import numpy.polynomial  # noqa: E402,F401
import numpy.random  # noqa: E402,F401

np.seterr(all="ignore")  # floating-point warnings would need frame introspection, which is refused
warnings.simplefilter("ignore")

MAX_HEADER = 1 << 24  # requests come from the trusted parent; this only bounds a corrupted pipe

# ----------------------------------------------------------------------------- Linux confinement

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
LANDLOCK_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}  # create_ruleset, add_rule, restrict_self


def _errno() -> str:
    return os.strerror(ctypes.get_errno())


def _unshare_net() -> str:
    if not hasattr(_libc, "unshare"):
        return "off: libc has no unshare"
    if _libc.unshare(CLONE_NEWNET) == 0:
        return "on (network namespace only)"
    err = _errno()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:  # not root: a user namespace grants the right
        return "on (user + network namespace)"
    return f"off: unshare failed ({err})"


def _landlock(read_paths: list[str], write_paths: list[str]) -> str:
    machine = os.uname().machine
    if sys.platform != "linux" or machine not in LANDLOCK_SYSCALLS:
        return f"off: not wired for {sys.platform} {machine}"
    create, add_rule, restrict = LANDLOCK_SYSCALLS[machine]
    abi = _libc.syscall(create, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
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
    rfd = _libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), 0)
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
                    if _libc.syscall(add_rule, rfd, 1, ctypes.byref(rule), 0) != 0:
                        return f"off: landlock_add_rule({p}) failed ({_errno()})"
                finally:
                    os.close(fd)
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return f"off: no_new_privs failed ({_errno()})"
        if _libc.syscall(restrict, rfd, 0) != 0:
            return f"off: landlock_restrict_self failed ({_errno()})"
    finally:
        os.close(rfd)
    parts = ["fs"] + (["tcp"] if net_all else []) + (["signals"] if scoped else [])
    return f"on (ABI {abi}: {', '.join(parts)})"


def _drop_privileges(uid: int, gid: int) -> str:
    if os.geteuid() != 0:
        return f"off: not root (runs as uid {os.geteuid()})"
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        return f"off: {exc}"
    if os.geteuid() == 0 or os.getuid() == 0:
        return "off: still root after setresuid"
    return f"on (uid {uid})"


def _load_seccomp(bpf: bytes) -> str:
    """Install a BPF program compiled by libseccomp in the parent (8-byte sock_filter records)."""
    if not bpf or len(bpf) % 8:
        return "off: no filter"

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"off: no_new_privs failed ({_errno()})"
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        return f"off: prctl(PR_SET_SECCOMP) failed ({_errno()})"
    return f"on ({len(bpf) // 8} BPF instructions)"


def _close_other_fds(keep: set[int]) -> None:
    """Close every inherited descriptor but ``keep``: nothing the program could use to reach outside."""
    last = 2
    for fd in sorted(keep):
        if fd > last + 1:
            os.closerange(last + 1, fd)
        last = max(last, fd)
    os.closerange(last + 1, 1 << 16)


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
    lim("RLIMIT_MSGQUEUE", 0)
    # Counted per user (per user namespace): blocks fork once unprivileged (seccomp refuses it too).
    lim("RLIMIT_NPROC", int(cfg.get("max_processes", 1)))
    return "on (" + ", ".join(applied) + ")"


# ----------------------------------------------------------------------------- Python guards (not a security layer)


class CPULimitExceeded(BaseException):
    """Raised in the program when its per-call CPU budget (RLIMIT_CPU soft limit) is spent."""


class GuardViolation(RuntimeError):
    """An operation the Python guards refuse (raised by the audit hook)."""


class OutputLimit(ValueError):
    """The program's result is larger than the caller accepts."""


_state = {"untrusted": False, "allowed_code": set(), "compiling": False}

_BLOCK_PREFIXES = (
    "socket.",
    "subprocess.",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.forkpty",
    "os.system",
    "os.kill",
    "os.killpg",
    "os.startfile",
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.chdir",
    "os.chflags",
    "os.setxattr",
    "os.removexattr",
    "os.utime",
    "os.putenv",
    "os.unsetenv",
    "shutil.",
    "ctypes.",
    "pty.",
    "sys._getframe",
    "sys._current_frames",
    "sys.settrace",
    "sys.setprofile",
    "sys._current_exceptions",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "function.__new__",
    "code.__new__",
    "marshal.",
    "pickle.",
    "urllib.",
    "http.",
    "ftplib.",
    "smtplib.",
    "poplib.",
    "imaplib.",
    "nntplib.",
    "telnetlib.",
    "webbrowser.",
    "builtins.input",
    "resource.setrlimit",
    "resource.prlimit",
    "signal.",
    "cpython.",
    "sqlite3.",
    "mmap.",
    "socket",
    "syslog.",
    "msvcrt.",
    "winreg.",
    "object.__getattr__",
    "object.__setattr__",
    "object.__delattr__",
    "setopencode",
    "os.listdir",
    "os.scandir",
    "glob.",
    "fcntl.",
    "tempfile.",
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
        "abs",
        "all",
        "any",
        "ascii",
        "bin",
        "bool",
        "bytes",
        "callable",
        "chr",
        "complex",
        "dict",
        "divmod",
        "enumerate",
        "filter",
        "float",
        "format",
        "frozenset",
        "hash",
        "hex",
        "int",
        "isinstance",
        "issubclass",
        "iter",
        "len",
        "list",
        "map",
        "max",
        "min",
        "next",
        "oct",
        "ord",
        "pow",
        "range",
        "repr",
        "reversed",
        "round",
        "set",
        "slice",
        "sorted",
        "str",
        "sum",
        "tuple",
        "zip",
        "True",
        "False",
        "None",
        "NotImplemented",
        "Ellipsis",
        "ArithmeticError",
        "AssertionError",
        "AttributeError",
        "Exception",
        "FloatingPointError",
        "IndexError",
        "KeyError",
        "LookupError",
        "NotImplementedError",
        "OverflowError",
        "RuntimeError",
        "StopIteration",
        "TypeError",
        "ValueError",
        "ZeroDivisionError",
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
        self.parts, self.size, self.dropped = [], 0, 0
        return out[: self.limit]


# ----------------------------------------------------------------------------- protocol


def _read_into(fd: int, view: memoryview) -> None:
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
    raw = json.dumps(header, allow_nan=False).encode()
    head = struct.pack("!I", len(raw)) + raw
    if sum(a.nbytes for a in arrays) <= (1 << 19):  # small replies: one write, one wake-up
        _write_all(fd, b"".join([head] + [np.ascontiguousarray(a).tobytes() for a in arrays]))
        return
    _write_all(fd, head)
    for a in arrays:
        if a.nbytes:
            _write_all(fd, np.ascontiguousarray(a))


def _recv(fd: int) -> tuple[dict, list[np.ndarray]]:
    head = bytearray(4)
    _read_into(fd, memoryview(head))
    (n,) = struct.unpack("!I", bytes(head))
    if n > MAX_HEADER:
        raise ValueError("header too large")
    raw = bytearray(n)
    _read_into(fd, memoryview(raw))
    header = json.loads(bytes(raw))
    arrays = []
    for spec in header.get("arrays", []):
        arr = np.empty(tuple(int(s) for s in spec["shape"]), dtype=np.float64)
        if arr.nbytes:
            _read_into(fd, memoryview(arr).cast("B"))
        arrays.append(arr)
    return header, arrays


# ----------------------------------------------------------------------------- program runs


def _text(obj, limit: int) -> str:
    try:
        return str(obj)[:limit]
    except BaseException:  # noqa: BLE001  (a hostile __str__)
        return "<unprintable>"


def _format_error(exc: BaseException, limit: int = 2000) -> tuple[str, str, str]:
    try:
        etype = type(exc).__name__
        if not isinstance(etype, str):
            etype = "Error"
        msg = _text(exc, limit)
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<program>"]
        tb = "".join(traceback.format_list(frames))[-limit:]
        return etype[:100], msg, tb
    except BaseException:  # noqa: BLE001
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
            names.append("component:" + str.__str__(k)[:64])
            arrays.append(_as_float_array(v, f"component {str.__str__(k)[:64]!r}"))
        structure = "tuple" if comps else "array"
    else:
        raise ValueError(f"unknown mode {mode!r}")
    if len(set(names)) != len(names):
        raise ValueError("two reward components have the same name (after truncation to 64 characters)")
    for a in arrays:
        if a.ndim > 4:
            raise ValueError(f"a returned array has {a.ndim} dimensions; at most 4 are allowed")
    total_el = sum(a.size for a in arrays)
    if total_el > max_elements:
        raise OutputLimit(f"the program returned {total_el} numbers; the limit for this batch is {max_elements}")
    return names, arrays, structure


def _cpu_seconds() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return float(used.ru_utime + used.ru_stime)


def main() -> int:
    cfg = _CFG
    in_fd, out_fd, tmp = cfg["in_fd"], cfg["out_fd"], cfg["tmp"]
    limits = cfg["limits"]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past RLIMIT_FSIZE fail with EFBIG instead

    def on_cpu(signum, frame):
        raise CPULimitExceeded("CPU time limit exceeded")

    signal.signal(signal.SIGXCPU, on_cpu)
    os.chdir(tmp)
    layers: dict[str, str] = {}
    want = cfg["layers"]
    if want.get("network_namespace"):
        layers["network_namespace"] = _unshare_net()
    layers["rlimits"] = _set_limits(limits)
    read_paths = cfg["read_paths"]
    layers["landlock"] = _landlock(read_paths, [tmp]) if want["landlock"] else "off: disabled"
    if want.get("drop_privileges"):
        layers["drop_privileges"] = _drop_privileges(cfg["uid"], cfg["gid"])
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace attach, no /proc/<pid>/mem for peers
    _close_other_fds({0, 1, 2, in_fd, out_fd})
    bpf = base64.b64decode(cfg.get("seccomp_bpf") or "")
    if want["seccomp"]:
        layers["seccomp_runtime"] = _load_seccomp(bpf)
    printer = _Printer(int(limits["stdout_chars"]))
    if want["python_guards"]:
        _install_guards(tmp, read_paths)
        layers["python_guards"] = "on (audit hook, reduced builtins; early feedback, not a security layer)"
        builtins_ns = _safe_builtins(printer)
    else:
        import builtins

        layers["python_guards"] = "off: disabled"
        builtins_ns = dict(vars(builtins))
        builtins_ns["print"] = printer
    os.environ.clear()
    _send(out_fd, {"ready": True, "seq": 0, "layers": layers})

    fn = None
    cpu_per_call = float(limits["cpu_seconds"])
    total_cpu = float(limits["total_cpu_seconds"])
    while True:
        try:
            header, arrays = _recv(in_fd)
        except EOFError:
            return 0
        op = header.get("op")
        seq = int(header.get("seq", 0))
        if op == "exit":
            return 0
        soft = int(min(math.ceil(_cpu_seconds() + cpu_per_call), math.ceil(total_cpu) + 1))
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
                reply = {
                    "seq": seq,
                    "ok": True,
                    "seconds": time.perf_counter() - t0,
                    "cpu": _cpu_seconds(),
                    "stdout": printer.take(),
                }
                _send(out_fd, reply)
            elif op == "call":
                if fn is None:
                    raise RuntimeError("no program is loaded")
                _state["untrusted"] = True
                try:
                    result = fn(*arrays)
                    names, outs, structure = _normalize(result, header["mode"], int(header["max_elements"]))
                finally:
                    _state["untrusted"] = False
                specs = [{"name": n, "shape": list(a.shape)} for n, a in zip(names, outs)]
                reply = {
                    "seq": seq,
                    "ok": True,
                    "arrays": specs,
                    "structure": structure,
                    "seconds": time.perf_counter() - t0,
                    "cpu": _cpu_seconds(),
                    "stdout": printer.take(),
                }
                _send(out_fd, reply, outs)
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
                _send(
                    out_fd,
                    {
                        "seq": seq,
                        "ok": False,
                        "kind": kind,
                        "type": etype,
                        "message": msg,
                        "traceback": tb,
                        "cpu": _cpu_seconds(),
                        "stdout": printer.take(),
                    },
                )
            except BaseException:  # noqa: BLE001
                return 3


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:  # noqa: BLE001
        code = 4
    os._exit(code)
