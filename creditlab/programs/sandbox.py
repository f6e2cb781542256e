"""Run untrusted (LLM-written) programs in a separate worker process isolated by the kernel.

The caller's process never compiles or executes the program. A :class:`SandboxedProgram` owns one
worker process (``creditlab/programs/_worker.py``), loads the program into it once and then
evaluates it on batches of NumPy arrays sent over pipes. Every failure of the program (exception,
timeout, CPU/memory/file limit, refused operation, crash, malformed or forged reply) comes back as a
:class:`~creditlab.programs.errors.ProgramError` with a ``kind`` and a ``reason``; the worker is
killed and restarted on the next call when it cannot continue.

The security boundary is the kernel (see docs/programs.md, threat model):

* **bubblewrap** starts the worker in fresh user, pid, ipc, net, mount, uts and cgroup namespaces,
  with a read-only view of the interpreter, the standard library, NumPy and the shared libraries
  they load (nothing else of the host: no ``/proc``, no ``/dev``, no site-packages), a private
  size-limited tmpfs as its only writable folder, ``no_new_privs``, all capabilities dropped, a new
  session, and an unprivileged uid (65534 inside; as root, also 65534 on the host);
* an **allow-list seccomp filter** compiled by libseccomp (``pyseccomp``): one applied by
  bubblewrap before the interpreter starts, a stricter one (no ``execve``, no ``prctl``) loaded by
  the worker before the program's first byte is compiled;
* **rlimits** (address space, CPU, file size, open files, processes), **Landlock** where the kernel
  has it, the wall-clock timeout enforced here;
* a **parent that never trusts the worker**: replies are framed, sizes are checked with Python
  integers against the configured caps before anything is allocated, the JSON header has depth
  and length caps and a fixed schema; anything else is a ``ProgramError`` of kind ``protocol``.

Python guards inside the worker (an audit hook, reduced builtins) only give early, clear feedback
for honest mistakes; the program can reach them, so nothing depends on them.

When bubblewrap or libseccomp is missing, the sandbox refuses to start
(:class:`~creditlab.programs.errors.SandboxUnavailableError`, naming what is missing) unless the
config accepts a degraded mode (``allow_degraded=True``); :func:`probe_layers` reports each layer.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import fcntl
import functools
import json
import math
import os
import re
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import RangeError
from .errors import ProgramError, SandboxUnavailableError

__all__ = ["SandboxConfig", "SandboxedProgram", "CallOutput", "probe_layers", "remove_tree"]

WORKER = str(Path(__file__).with_name("_worker.py"))
SANDBOX_SITE = "/sandbox/site"
SANDBOX_WORKER = "/sandbox/worker.py"
SANDBOX_TMP = "/tmp"
_MAX_ARRAYS = 300
_MAX_NDIM = 4
_MAX_DIM = 1 << 40
_JSON_DEPTH = 8
_F_SETPIPE_SZ = 1031
_COALESCE = 1 << 19
_KINDS = ("error", "memory", "cpu", "refused", "output")
_STRUCTURES = ("list", "tuple", "array")
# lib-dynload modules whose libraries are not mounted (GUI, terminal, databases, TLS, NIS): they
# cannot be imported in the sandbox; everything else of the standard library can.
_DYNLOAD_SKIP = re.compile(r"^(_tkinter|_curses|_curses_panel|readline|_dbm|_gdbm|_sqlite3|_ssl|_hashlib|nis|_crypt)\.")


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation layers of a sandbox worker.

    Attributes:
        timeout: wall-clock seconds allowed for one call (load or evaluate) before the worker is killed.
        cpu_seconds: CPU seconds allowed for one call (RLIMIT_CPU soft limit, reset per call).
        total_cpu_seconds: CPU seconds for the worker's whole life (hard limit); the worker is
            restarted transparently when it gets close.
        memory_mb: address-space limit of the worker (RLIMIT_AS), including Python and NumPy
            (about 150 MB on their own).
        output_mb: largest result accepted from one call (checked before reading it).
        file_mb: largest file the program may write (RLIMIT_FSIZE).
        tmpfs_mb: size of the private tmpfs, the only folder the program can write (bubblewrap).
        max_open_files: RLIMIT_NOFILE of the worker.
        stdout_chars: characters of ``print`` output kept per call (the rest is dropped).
        header_kb: largest reply header accepted (JSON, before the arrays); a longer one is a
            protocol error.
        startup_timeout: seconds allowed for the worker to start (import NumPy, confine itself).
        namespaces: run the worker under bubblewrap (namespaces, read-only view, tmpfs, uid mapping).
        seccomp: the allow-list seccomp filters.
        landlock: Landlock filesystem/TCP/signal rules (an extra layer where the kernel has it).
        drop_privileges: as root, map the sandbox to the unprivileged ``uid``/``gid`` on the host too.
        python_guards: audit hook, reduced builtins (early feedback only, not a security layer).
        allow_degraded: run even when ``namespaces`` or ``seccomp`` is off or unavailable. The
            default refuses (:class:`SandboxUnavailableError`); turning a layer off is meant for
            testing the others.
        uid, gid: the unprivileged identity of the program (default ``nobody``).
        bwrap: path of the bubblewrap executable (default: ``bwrap`` on ``PATH``, then /usr/bin/bwrap).
        temp_root: folder for the private folder in degraded mode (default: the system's).
        python: interpreter for the worker (default: the running one).
    """

    timeout: float = 10.0
    cpu_seconds: float = 10.0
    total_cpu_seconds: float = 3600.0
    memory_mb: float = 1024.0
    output_mb: float = 256.0
    file_mb: float = 16.0
    tmpfs_mb: float = 64.0
    max_open_files: int = 64
    stdout_chars: int = 4000
    header_kb: int = 64
    startup_timeout: float = 60.0
    namespaces: bool = True
    seccomp: bool = True
    landlock: bool = True
    drop_privileges: bool = True
    python_guards: bool = True
    allow_degraded: bool = False
    uid: int = 65534
    gid: int = 65534
    bwrap: str | None = None
    temp_root: str | None = None
    python: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "timeout",
            "cpu_seconds",
            "total_cpu_seconds",
            "memory_mb",
            "output_mb",
            "file_mb",
            "tmpfs_mb",
            "startup_timeout",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
                raise RangeError(f"SandboxConfig.{name} must be a positive number; got {v!r}")
        if self.memory_mb < 256:
            raise RangeError(
                f"SandboxConfig.memory_mb must be >= 256 (Python + NumPy need ~150 MB); got {self.memory_mb}"
            )
        for name, low in (("max_open_files", 16), ("stdout_chars", 0), ("header_kb", 4)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise RangeError(f"SandboxConfig.{name} must be an int >= {low}; got {v!r}")
        for name in ("uid", "gid"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**32 - 1:
                raise RangeError(f"SandboxConfig.{name} must be a non-root id; got {v!r}")

    def replace(self, **changes: Any) -> SandboxConfig:
        return dataclasses.replace(self, **changes)


class CallOutput(NamedTuple):
    """Result of one sandboxed call.

    Attributes:
        outputs: name -> float64 array, in the order the program returned them (``factor_0`` ...,
            or ``reward`` then ``component:<name>``).
        structure: ``list`` (factors), ``tuple`` (reward with components) or ``array`` (bare reward).
        stdout: what the program printed (capped).
        seconds: time spent in the worker (as the worker reports it).
    """

    outputs: dict[str, np.ndarray]
    structure: str
    stdout: str
    seconds: float


# ---------------------------------------------------------------------------------------- host probes


class _View(NamedTuple):
    """What the worker sees: (host path, sandbox path) read-only binds, and the interpreter."""

    python: str
    binds: tuple[tuple[str, str], ...]
    hide: tuple[str, ...]  # folders inside a bind hidden by an empty read-only tmpfs
    read_paths: tuple[str, ...]  # sandbox paths the worker may read (Landlock)
    libraries: int


@functools.lru_cache(maxsize=8)
def _view(python: str | None) -> _View:
    """The minimal read-only filesystem view: interpreter, stdlib, NumPy and their shared libraries."""
    exe = os.path.realpath(python or sys.executable)
    if not os.path.isfile(exe):
        raise FileNotFoundError(f"the sandbox interpreter {exe!r} does not exist")
    query = (
        "import json, sys, sysconfig; print(json.dumps([sysconfig.get_paths()['stdlib'], "
        "sysconfig.get_config_var('DESTSHARED') or '', sys.version_info[:2]]))"
    )
    out = subprocess.run([exe, "-I", "-S", "-c", query], capture_output=True, text=True, timeout=60, check=True)
    stdlib, dynload, version = json.loads(out.stdout)
    if tuple(version) != sys.version_info[:2]:
        raise RangeError(
            f"the sandbox interpreter {exe} is Python {version[0]}.{version[1]}; NumPy here is built for "
            f"{sys.version_info[0]}.{sys.version_info[1]}"
        )
    np_dir = os.path.dirname(np.__file__)
    np_libs = os.path.join(os.path.dirname(np_dir), "numpy.libs")
    elf = [exe]
    for root, _dirs, files in os.walk(np_dir):
        elf += [os.path.join(root, f) for f in files if ".so" in f]
    if os.path.isdir(np_libs):
        elf += [os.path.join(np_libs, f) for f in os.listdir(np_libs)]
    if dynload and os.path.isdir(dynload):
        elf += [
            os.path.join(dynload, f)
            for f in sorted(os.listdir(dynload))
            if f.endswith(".so") and not _DYNLOAD_SKIP.match(f)
        ]
    libs = _shared_libraries(elf)
    binds: list[tuple[str, str]] = [(exe, exe), (stdlib, stdlib)]
    if dynload and not dynload.startswith(stdlib.rstrip("/") + "/"):
        binds.append((dynload, dynload))
    binds += [(np_dir, SANDBOX_SITE + "/numpy")]
    if os.path.isdir(np_libs):
        binds.append((np_libs, SANDBOX_SITE + "/numpy.libs"))
    inside = (exe, stdlib, dynload, np_dir, np_libs)
    for lib in sorted(libs):
        if not any(lib == p or lib.startswith(p.rstrip("/") + "/") for p in inside if p):
            binds.append((lib, lib))
    if os.path.isfile("/etc/ld.so.cache"):
        binds.append(("/etc/ld.so.cache", "/etc/ld.so.cache"))
    binds.append((WORKER, SANDBOX_WORKER))
    hide = tuple(
        os.path.join(stdlib, d) for d in ("site-packages", "dist-packages") if os.path.isdir(os.path.join(stdlib, d))
    )
    reads = tuple(
        dict.fromkeys(
            dst if dst != SANDBOX_SITE + "/numpy" else SANDBOX_SITE
            for _, dst in binds
            if not dst.startswith(SANDBOX_SITE + "/numpy.libs")
        )
    )
    return _View(exe, tuple(binds), hide, reads, len(libs))


def _shared_libraries(files: list[str]) -> set[str]:
    """The shared libraries ``files`` load (their ``ldd`` closure, as resolved on this host)."""
    ldd = shutil.which("ldd") or ("/usr/bin/ldd" if os.path.exists("/usr/bin/ldd") else None)
    if ldd is None:
        raise SandboxUnavailableError("the sandbox needs `ldd` (Debian: libc-bin) to find the libraries NumPy loads")
    out = subprocess.run(
        [ldd, *files], capture_output=True, text=True, timeout=120, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}
    )
    libs: set[str] = set()
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            path = line.split("=>", 1)[1].split("(", 1)[0].strip()
        elif line.startswith("/") and "(" in line:
            path = line.split("(", 1)[0].strip()
        else:
            continue
        if path.startswith("/") and os.path.exists(path):
            libs.add(path)
    return libs


@functools.lru_cache(maxsize=4)
def _bubblewrap(path: str | None) -> tuple[str | None, str]:
    """(bwrap path, "bubblewrap X.Y") if bubblewrap works here, else (None, why not)."""
    exe = path or shutil.which("bwrap") or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None)
    if exe is None or not os.path.exists(exe):
        return None, "bubblewrap (bwrap) not found: install it (Debian/Ubuntu: apt-get install bubblewrap)"
    true = shutil.which("true") or "/bin/true"
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        probe = subprocess.run(
            [
                exe,
                "--unshare-all",
                "--unshare-user",
                "--uid",
                "65534",
                "--gid",
                "65534",
                "--die-with-parent",
                "--ro-bind",
                "/",
                "/",
                "--",
                true,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"bubblewrap at {exe} does not run: {exc}"
    if probe.returncode != 0:
        msg = (probe.stderr.strip() or f"exit code {probe.returncode}")[-300:]
        return None, (
            f"bubblewrap cannot create namespaces here ({msg}); unprivileged user namespaces may be disabled "
            "(sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces, or an AppArmor policy)"
        )
    return exe, version or "bubblewrap"


# Syscalls the worker needs (x86_64 and aarch64 names; libseccomp skips the ones an arch lacks).
# Run time: Python + NumPy computing, files in the private folder, the two pipes, signals to itself.
_RUNTIME_SYSCALLS = (
    "read",
    "readv",
    "pread64",
    "preadv",
    "preadv2",
    "write",
    "writev",
    "pwrite64",
    "close",
    "lseek",
    "fstat",
    "newfstatat",
    "stat",
    "lstat",
    "statx",
    "fstatfs",
    "statfs",
    "access",
    "faccessat",
    "faccessat2",
    "openat",
    "open",
    "getdents64",
    "getcwd",
    "readlink",
    "readlinkat",
    "mkdir",
    "mkdirat",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "chdir",
    "fchdir",
    "ftruncate",
    "fsync",
    "fdatasync",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "pipe2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "brk",
    "mincore",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "rt_sigpending",
    "rt_sigtimedwait",
    "getpid",
    "gettid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getgroups",
    "getresuid",
    "getresgid",
    "getrusage",
    "getrlimit",
    "times",
    "sysinfo",
    "uname",
    "getrandom",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "gettimeofday",
    "nanosleep",
    "time",
    "futex",
    "futex_waitv",
    "set_robust_list",
    "get_robust_list",
    "sched_yield",
    "sched_getaffinity",
    "exit",
    "exit_group",
    "restart_syscall",
)
# Start-up only (bubblewrap's filter): exec of the interpreter, the worker's own confinement steps.
_STARTUP_SYSCALLS = _RUNTIME_SYSCALLS + (
    "execve",
    "arch_prctl",
    "set_tid_address",
    "rseq",
    "prctl",
    "seccomp",
    "chdir",
    "close_range",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "setrlimit",
    "wait4",
    "waitid",  # bubblewrap's pid-1 reaper runs under this filter too
    "setgroups",
    "setresuid",
    "setresgid",
    "capget",
    "capset",  # the switch from ns root to the sandbox uid
)
_LIBSECCOMP_HINT = "pip install pyseccomp (and the libseccomp2 library: apt-get install libseccomp2)"


@functools.lru_cache(maxsize=2)
def _seccomp_filters() -> tuple[bytes | None, bytes | None, str]:
    """(start-up BPF, run-time BPF, description) compiled by libseccomp, or (None, None, why not)."""
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError, OSError) as exc:
        try:
            import seccomp as sc  # Debian's python3-seccomp: the same API
        except ImportError:
            return None, None, f"libseccomp unavailable ({exc}): {_LIBSECCOMP_HINT}"
    try:
        out = []
        for names in (_STARTUP_SYSCALLS, _RUNTIME_SYSCALLS):
            f = sc.SyscallFilter(sc.ERRNO(errno.EPERM))
            f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
            allowed = 0
            for name in names:
                try:
                    f.add_rule(sc.ALLOW, name)
                    allowed += 1
                except (RuntimeError, ValueError, OSError):
                    pass  # not a syscall of this architecture
            # Only on itself: kill/tgkill to pid 0/own pid is enforced by the pid namespace; rlimits
            # of pid 0 (itself) only -- never another process, namespace or not.
            f.add_rule(sc.ALLOW, "prlimit64", sc.Arg(0, sc.EQ, 0))
            f.add_rule(sc.ALLOW, "tgkill")
            f.add_rule(sc.ALLOW, "tkill")
            # ioctl: only the terminal query Python makes on every open (TCGETS) and FIONBIO/FIOCLEX.
            for req in (0x5401, 0x5421, 0x5451):
                f.add_rule(sc.ALLOW, "ioctl", sc.Arg(1, sc.EQ, req))
            # clone3 -> ENOSYS, so libc falls back to clone(), which is refused (no threads, no processes).
            f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
            with tempfile.TemporaryFile() as fh:
                f.export_bpf(fh)
                fh.seek(0)
                out.append(fh.read())
            count = allowed + 6
        version = getattr(sc, "__version__", "")
        return (
            out[0],
            out[1],
            f"on (allow-list of {count} syscalls compiled by libseccomp{' via pyseccomp ' + version if version else ''}; EPERM otherwise)",
        )
    except Exception as exc:  # noqa: BLE001  (a broken libseccomp install)
        return None, None, f"libseccomp failed to compile the filter ({type(exc).__name__}: {exc}): {_LIBSECCOMP_HINT}"


def _cgroup_layer() -> str:
    return "off: not used; memory, CPU time and processes are bounded by rlimits (RLIMIT_AS, RLIMIT_CPU, RLIMIT_NPROC + seccomp)"


def _plan(cfg: SandboxConfig) -> tuple[dict[str, str], list[str]]:
    """Parent-side layers and what is missing (refused unless ``allow_degraded``)."""
    layers: dict[str, str] = {}
    missing: list[str] = []
    if cfg.namespaces:
        exe, info = _bubblewrap(cfg.bwrap)
        if exe is None:
            layers["namespaces"] = f"off: {info}"
            missing.append(f"namespaces ({info})")
        else:
            layers["namespaces"] = f"on ({info}: user, pid, ipc, net, mount, uts, cgroup)"
    else:
        layers["namespaces"] = "off: disabled in the config"
        missing.append("namespaces (disabled in the config)")
    if cfg.seccomp:
        startup, runtime, info = _seccomp_filters()
        layers["seccomp"] = info if startup is not None else f"off: {info}"
        if startup is None:
            missing.append(f"seccomp ({info})")
    else:
        layers["seccomp"] = "off: disabled in the config"
        missing.append("seccomp (disabled in the config)")
    return layers, missing


def _refusal(missing: list[str]) -> SandboxUnavailableError:
    return SandboxUnavailableError(
        "the sandbox refuses to run untrusted code without its kernel isolation; missing: "
        + "; ".join(missing)
        + ". Install what is missing (scripts/install.sh does), or accept a weaker sandbox explicitly with "
        "SandboxConfig(allow_degraded=True) (see docs/programs.md, threat model)"
    )


def _clean_env(tmp: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": tmp,
        "TMPDIR": tmp,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
    }


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


# ---------------------------------------------------------------------------------------- cleanup


def remove_tree(path: str | os.PathLike, *, max_depth: int = 64) -> bool:
    """Delete the folder ``path`` and everything in it; True when nothing is left.

    Safe against what a hostile program may have left in it: it never recurses (an explicit
    stack; subtrees deeper than ``max_depth`` are first moved up to ``path`` itself, so 10^5
    nested folders need no more than ``max_depth`` open descriptors), never follows a symlink
    (every step is ``openat(..., O_NOFOLLOW)`` relative to a folder already opened), never leaves
    the file system of ``path``, and changes the mode only of folders it opened inside ``path``
    (a program may have made them unreadable). Files are unlinked, never opened.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    path = os.fspath(path)
    try:
        root = os.open(path, flags)
    except FileNotFoundError:
        return True
    except OSError:
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return False  # the private folder itself was swapped for a symlink: touch nothing
        except OSError:
            return not os.path.lexists(path)
        try:
            root = _open_dir(None, path)
        except OSError:
            return False
    dev = os.fstat(root).st_dev
    moved = 0
    stack: list[int] = [root]
    try:
        while stack:
            fd = stack[-1]
            try:
                entries = list(os.scandir(fd))
            except PermissionError:
                os.chmod(f"/proc/self/fd/{fd}", 0o700)  # the very folder we opened: fchmod without a read fd
                entries = list(os.scandir(fd))
            child = None
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if not is_dir:
                    try:
                        os.unlink(entry.name, dir_fd=fd)
                    except FileNotFoundError:
                        pass
                    continue
                try:
                    os.rmdir(entry.name, dir_fd=fd)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EACCES, errno.EPERM):
                        raise
                if len(stack) >= max_depth:
                    moved += 1
                    os.rename(entry.name, f".creditlab-deep-{moved}", src_dir_fd=fd, dst_dir_fd=root)
                    break  # rescan: the moved subtree is now a child of the root
                child = _open_dir(fd, entry.name)
                if os.fstat(child).st_dev != dev:
                    os.close(child)
                    raise OSError(errno.EXDEV, f"a mount point inside {path}")
                break
            else:
                # every entry gone: remove this folder from its parent
                stack.pop()
                if stack:
                    name = _name_in(stack[-1], fd)
                    os.close(fd)
                    if name is not None:
                        os.rmdir(name, dir_fd=stack[-1])
                continue
            if child is not None:
                stack.append(child)
    except OSError:
        for fd in stack:
            os.close(fd)
        stack = []
        return False
    finally:
        for fd in stack:
            os.close(fd)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _open_dir(parent: int | None, name: str) -> int:
    """openat(parent, name) as a folder without following symlinks; makes it readable if needed."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=parent)
    except PermissionError:
        pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            if not stat.S_ISDIR(os.fstat(pfd).st_mode):
                raise
            os.chmod(f"/proc/self/fd/{pfd}", 0o700)  # this inode, not whatever the name points to now
        finally:
            os.close(pfd)
        return os.open(name, flags, dir_fd=parent)


def _name_in(parent: int, child: int) -> str | None:
    """The name under which the folder ``child`` sits in ``parent`` (by inode, not by path)."""
    st = os.fstat(child)
    for entry in os.scandir(parent):
        try:
            if entry.inode() == st.st_ino and entry.is_dir(follow_symlinks=False):
                return entry.name
        except OSError:
            continue
    return None


def _cleanup(res: dict[str, Any]) -> None:
    """Kill the sandbox, close pipes, delete the private folder. Idempotent; never raises."""
    proc, fds, tmp, log = res.get("proc"), res["fds"], res.get("tmp"), res.get("log")
    if proc is not None:
        for pid in (proc.pid, res.get("init_pid")):
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL) if pid == proc.pid else os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError, OSError):
                    pass
        try:
            proc.kill()
        except (ProcessLookupError, OSError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kernel that does not reap SIGKILL
            pass
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()
    if log is not None:
        try:
            log.close()
        except OSError:
            pass
    if tmp:
        res["tmp_removed"] = remove_tree(tmp)
        res["tmp"] = None


# ---------------------------------------------------------------------------------------- reply parsing


class _Protocol(Exception):
    """A malformed reply (internal; becomes ProgramError('protocol'))."""


def _json_depth(raw: bytes) -> int:
    """Deepest nesting of ``[``/``{`` outside strings (strings removed first, so cost is linear)."""
    text = re.sub(rb'"(?:[^"\\]|\\.)*"', b"", raw)
    depth = best = 0
    for ch in re.sub(rb"[^\[\]{}]", b"", text):
        if ch in (0x5B, 0x7B):
            depth += 1
            best = max(best, depth)
        else:
            depth -= 1
    return best


def _no_constants(name: str) -> Any:
    raise _Protocol(f"non-finite number {name} in the reply")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Protocol("a key appears twice in the reply")
    return out


def _parse_header(raw: bytes) -> dict[str, Any]:
    if _json_depth(raw) > _JSON_DEPTH:
        raise _Protocol(f"the reply's JSON is nested deeper than {_JSON_DEPTH} levels")
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_no_constants, object_pairs_hook=_unique)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _Protocol(f"the reply is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise _Protocol("the reply is not a JSON object")
    return header


def _field(header: dict, name: str, kind: type | tuple, *, limit: int | None = None, required: bool = True) -> Any:
    if name not in header:
        if required:
            raise _Protocol(f"the reply has no {name!r}")
        return None
    v = header[name]
    if isinstance(v, bool) and kind is not bool:
        raise _Protocol(f"{name!r} has the wrong type")
    if not isinstance(v, kind):
        raise _Protocol(f"{name!r} has the wrong type ({type(v).__name__})")
    if limit is not None and len(v) > limit:
        raise _Protocol(f"{name!r} is longer than {limit}")
    if isinstance(v, float) and not math.isfinite(v):
        raise _Protocol(f"{name!r} is not finite")
    return v


def _check_keys(header: dict, allowed: set[str]) -> None:
    extra = set(header) - allowed
    if extra:
        raise _Protocol(f"unexpected fields in the reply: {sorted(extra)[:5]}")


# ---------------------------------------------------------------------------------------- the worker


class _Worker:
    """One sandboxed worker process and its pipes (internal)."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.fds: list[int] = []
        self.tmp: str | None = None
        self.log = None
        self.layers: dict[str, str] = {}
        self.degraded: list[str] = []
        self._finalizer = None
        self._res: dict[str, Any] = {}
        self.cpu_used = 0.0
        self.seq = 0
        self.init_pid: int | None = None

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        cfg = self.config
        layers, missing = _plan(cfg)
        if missing and not cfg.allow_degraded:
            raise _refusal(missing)
        self.degraded = missing
        use_bwrap = layers["namespaces"].startswith("on")
        startup_bpf, runtime_bpf = (None, None)
        if layers["seccomp"].startswith("on"):
            startup_bpf, runtime_bpf, _ = _seccomp_filters()
        view = _view(cfg.python) if use_bwrap else None
        if not use_bwrap and cfg.python and not os.path.exists(cfg.python):
            raise FileNotFoundError(f"the sandbox interpreter {cfg.python!r} does not exist")
        res: dict[str, Any] = {"proc": None, "fds": self.fds, "tmp": None, "log": None, "init_pid": None}
        self._res = res
        # Everything created from here on is released by the finalizer, whatever fails next.
        self._finalizer = weakref.finalize(self, _cleanup, res)
        root = os.geteuid() == 0
        if use_bwrap:
            tmp = SANDBOX_TMP
        else:
            tmp = tempfile.mkdtemp(prefix=f"creditlab-sandbox-{os.getpid()}-", dir=cfg.temp_root)
            self.tmp = res["tmp"] = tmp
            os.chmod(tmp, 0o700)
            if root and cfg.drop_privileges:
                os.chown(tmp, cfg.uid, cfg.gid)
        self.log = res["log"] = tempfile.TemporaryFile()  # anonymous: the program cannot swap it for a symlink
        to_child_r, to_child_w = os.pipe()
        self.fds.append(to_child_w)
        from_child_r, from_child_w = os.pipe()
        self.fds.append(from_child_r)
        for fd in (to_child_w, from_child_r):
            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass
        worker_cfg: dict[str, Any] = {
            "in_fd": to_child_r,
            "out_fd": from_child_w,
            "tmp": tmp,
            "site": SANDBOX_SITE if use_bwrap else None,
            "uid": cfg.uid,
            "gid": cfg.gid,
            "read_paths": list(view.read_paths) if view else _host_read_paths(),
            "seccomp_bpf": base64.b64encode(runtime_bpf).decode() if runtime_bpf else "",
            "limits": {
                "memory_mb": cfg.memory_mb,
                "cpu_seconds": cfg.cpu_seconds,
                "total_cpu_seconds": cfg.total_cpu_seconds,
                "file_mb": min(cfg.file_mb, cfg.tmpfs_mb),
                "max_open_files": cfg.max_open_files,
                "stdout_chars": cfg.stdout_chars,
                "max_processes": 1,
            },
            "layers": {
                "network_namespace": (not use_bwrap) and cfg.namespaces,  # bubblewrap missing: best effort
                "landlock": cfg.landlock,
                "seccomp": runtime_bpf is not None,
                "drop_privileges": (not use_bwrap) and cfg.drop_privileges,
                "python_guards": cfg.python_guards,
            },
        }
        child_fds = [to_child_r, from_child_w]
        parent_ends: list[int] = []
        try:
            if use_bwrap:
                assert view is not None
                argv, extra_child, extra_parent, uid_layer = self._bwrap_argv(view, worker_cfg, startup_bpf, root)
                child_fds += extra_child
                parent_ends += extra_parent
                layers["filesystem"] = (
                    f"on (read-only: interpreter, stdlib, NumPy, {view.libraries} shared libraries; "
                    f"private {cfg.tmpfs_mb:g} MB tmpfs; no /proc, no /dev)"
                )
                layers["uid"] = uid_layer
                layers["no_new_privs"] = "on (bubblewrap; all capabilities dropped)"
                env = None
                cwd = "/"
            else:
                argv = [cfg.python or sys.executable, "-I", "-B", WORKER, json.dumps(worker_cfg)]
                layers["filesystem"] = "off: the host's (only Landlock and file permissions limit it)"
                layers["uid"] = "see drop_privileges"
                env = _clean_env(tmp)
                cwd = tmp
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=self.log,
                cwd=cwd,
                env=env,
                pass_fds=tuple(child_fds),
                start_new_session=True,
                close_fds=True,
            )
            res["proc"] = self.proc
        finally:
            for fd in child_fds:
                os.close(fd)
        deadline = time.monotonic() + cfg.startup_timeout
        if use_bwrap:
            self._finish_bwrap_start(parent_ends, root and cfg.drop_privileges, deadline)
        os.set_blocking(to_child_w, False)
        os.set_blocking(from_child_r, False)
        header, _ = self.receive(deadline, what="start")
        if header.get("ready") is not True:
            self.close()
            raise ProgramError("protocol", "the sandbox worker did not send its ready message")
        reported = header.get("layers")
        if not isinstance(reported, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in reported.items()
        ):
            self.close()
            raise ProgramError("protocol", "the sandbox worker sent a malformed ready message")
        worker_layers = {k[:40]: v[:200] for k, v in list(reported.items())[:16]}
        if "seccomp_runtime" in worker_layers and layers["seccomp"].startswith("on"):
            rt = worker_layers.pop("seccomp_runtime")
            if not rt.startswith("on"):
                layers["seccomp"] = f"off: the worker could not load its filter ({rt})"
        worker_layers.pop("seccomp_runtime", None)
        if use_bwrap and "drop_privileges" in worker_layers:
            dropped = worker_layers.pop("drop_privileges")
            if not dropped.startswith("on"):
                self.close()
                raise ProgramError("startup", f"the sandbox worker could not switch to uid {cfg.uid}: {dropped}")
        layers.update(worker_layers)
        layers["cgroup"] = _cgroup_layer()
        if self.degraded:
            layers["degraded"] = "accepted by allow_degraded=True; missing: " + "; ".join(self.degraded)
        self.layers = layers

    def _bwrap_argv(self, view: _View, worker_cfg: dict, startup_bpf: bytes | None, root: bool):
        cfg = self.config
        exe, _ = _bubblewrap(cfg.bwrap)
        map_ids = root and cfg.drop_privileges
        # As root, bubblewrap would map the sandbox's uid to host root. Instead it waits while we write
        # the maps (ns 0 = host 0 for the mount set-up only, ns uid = host uid for the program); the
        # worker starts as ns root with only CAP_SETUID/CAP_SETGID and switches to uid/gid before any
        # untrusted byte, which clears every capability (the runtime filter has no set*id calls).
        ids = ["--uid", "0", "--gid", "0"] if map_ids else ["--uid", str(cfg.uid), "--gid", str(cfg.gid)]
        caps = ["--cap-drop", "ALL"] + (["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"] if map_ids else [])
        argv = [
            exe,
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            *ids,
            "--hostname",
            "sandbox",
            "--die-with-parent",
            "--new-session",
            *caps,
            "--clearenv",
        ]
        for k, v in _clean_env(SANDBOX_TMP).items():
            argv += ["--setenv", k, v]
        parents = sorted(
            {str(q) for _, dst in view.binds for q in Path(dst).parents if str(q) != "/"},
            key=lambda d: (d.count("/"), d),
        )
        for folder in parents:  # bubblewrap would create the parents of file mounts as 0700
            argv += ["--perms", "0755", "--dir", folder]
        for src, dst in view.binds:
            argv += ["--ro-bind", src, dst]
        for folder in view.hide:
            argv += ["--perms", "0555", "--size", "4096", "--tmpfs", folder, "--remount-ro", folder]
        # the private tmpfs: owned by the sandbox uid, or (as root, created by ns root) writable by it
        argv += [
            "--perms",
            "1777" if map_ids else "0700",
            "--size",
            str(int(cfg.tmpfs_mb * 1024 * 1024)),
            "--tmpfs",
            SANDBOX_TMP,
            "--chdir",
            SANDBOX_TMP,
        ]
        child: list[int] = []
        parent: list[int] = []
        if startup_bpf is not None:
            r, w = os.pipe()
            os.write(w, startup_bpf)  # < 64 KB: fits in the pipe buffer
            os.close(w)
            child.append(r)
            argv += ["--seccomp", str(r)]
        info_r, info_w = os.pipe()
        child.append(info_w)
        parent.append(info_r)
        self.fds.append(info_r)
        argv += ["--info-fd", str(info_w)]
        if map_ids:
            worker_cfg["layers"]["drop_privileges"] = True
            block_r, block_w = os.pipe()
            child.append(block_r)
            parent.append(block_w)
            self.fds.append(block_w)
            argv += ["--userns-block-fd", str(block_r)]
            uid_layer = f"on (uid {cfg.uid} in the sandbox = host uid {cfg.uid}; user namespace mapped by the parent)"
        elif root:
            uid_layer = f"off: uid {cfg.uid} in the sandbox is host root (drop_privileges disabled)"
        else:
            uid_layer = f"on (uid {cfg.uid} in the sandbox = host uid {os.geteuid()}, unprivileged user namespace)"
        argv += ["--", view.python, "-I", "-S", "-B", SANDBOX_WORKER, json.dumps(worker_cfg)]
        return argv, child, parent, uid_layer

    def _finish_bwrap_start(self, parent_ends: list[int], map_ids: bool, deadline: float) -> None:
        """Read bubblewrap's info (the sandbox's pid), write the uid/gid maps as root, let it go on."""
        info_r = parent_ends[0]
        buf = b""
        os.set_blocking(info_r, False)
        while True:
            try:
                chunk = os.read(info_r, 4096)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                break
            if chunk:
                buf += chunk
                try:
                    info = json.loads(buf)
                    break
                except ValueError:
                    pass
                continue
            self._wait(info_r, deadline, False, "start")
        try:
            info = json.loads(buf)
            pid = int(info["child-pid"])
        except (ValueError, KeyError, TypeError):
            raise self._dead("start") from None
        self.init_pid = self._res["init_pid"] = pid
        if map_ids:
            cfg = self.config
            try:
                with open(f"/proc/{pid}/uid_map", "w") as fh:
                    fh.write(f"0 0 1\n{cfg.uid} {cfg.uid} 1\n")
                with open(f"/proc/{pid}/gid_map", "w") as fh:
                    fh.write(f"0 0 1\n{cfg.gid} {cfg.gid} 1\n")
            except OSError as exc:
                self.close()
                raise ProgramError("startup", f"could not map the sandbox's user namespace: {exc}") from None
            block_w = parent_ends[1]
            os.write(block_w, b"1")
            self.fds.remove(block_w)
            os.close(block_w)
        self.fds.remove(info_r)
        os.close(info_r)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and len(self.fds) >= 2

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self.proc = None

    def log_tail(self, n: int = 2000) -> str:
        if self.log is None or self.log.closed:
            return ""
        try:
            size = os.fstat(self.log.fileno()).st_size
            data = os.pread(self.log.fileno(), n, max(0, size - n))
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()

    # ------------------------------------------------------------------ pipes with deadlines

    def _dead(self, what: str) -> ProgramError:
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
        tail = self.log_tail()
        self.close()
        if code is not None and code < 0:
            sig = _signal_name(code)
            kind = "cpu" if sig in ("SIGXCPU", "SIGKILL") and what == "call" else "crash"
            if sig == "SIGXCPU":
                reason = "the program exceeded its CPU time limit and was killed"
            elif sig == "SIGSYS":
                reason = "the program made a forbidden system call and was killed (seccomp)"
                kind = "refused"
            elif sig == "SIGKILL":
                reason = f"the sandbox worker was killed by SIGKILL during {what} (CPU hard limit or out of memory)"
            else:
                reason = f"the sandbox worker was killed by {sig} during {what}"
        else:
            kind = "startup" if what == "start" else "crash"
            reason = f"the sandbox worker exited (code {code}) during {what}"
            if code == 128 + signal.SIGKILL and what == "call":  # bubblewrap reports its child's signal as 128+n
                kind, reason = (
                    "cpu",
                    f"the sandbox worker was killed by SIGKILL during {what} (CPU hard limit or out of memory)",
                )
            elif code == 128 + signal.SIGXCPU and what == "call":
                kind, reason = "cpu", "the program exceeded its CPU time limit and was killed"
        if tail:
            reason += f"; worker output: {tail[-600:]}"
        return ProgramError(kind, reason)

    def _wait(self, fd: int, deadline: float, write: bool, what: str) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            self._timeout(what)
        poller = select.poll()  # poll, not select: file descriptors may exceed 1024 in big processes
        poller.register(fd, select.POLLOUT if write else select.POLLIN)
        if not poller.poll(max(1, int(left * 1000))):
            if time.monotonic() >= deadline:
                self._timeout(what)

    def _timeout(self, what: str) -> None:
        self.close()
        limit = self.config.startup_timeout if what == "start" else self.config.timeout
        kind = "startup" if what == "start" else "timeout"
        raise ProgramError(kind, f"the program did not finish {what} within {limit:g} s wall-clock time and was killed")

    def send(self, header: dict, arrays: list[np.ndarray], deadline: float, what: str) -> None:
        raw = json.dumps(header).encode()
        chunks = [struct.pack("!I", len(raw)) + raw] + [memoryview(a).cast("B") for a in arrays if a.nbytes]
        if sum(len(c) if isinstance(c, bytes) else c.nbytes for c in chunks) <= _COALESCE:
            chunks = [b"".join(chunks)]  # one write: one wake-up of the worker
        fd = self.fds[0]
        for chunk in chunks:
            view = memoryview(chunk).cast("B") if not isinstance(chunk, memoryview) else chunk
            sent = 0
            while sent < view.nbytes:
                try:
                    sent += os.write(fd, view[sent:])
                except BlockingIOError:
                    self._wait(fd, deadline, True, what)
                except (BrokenPipeError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno not in (errno.EPIPE, errno.EBADF):
                        raise
                    raise self._dead(what) from None

    def _read_exact_into(self, view: memoryview, deadline: float, what: str) -> None:
        fd = self.fds[1]
        got = 0
        while got < view.nbytes:
            try:
                k = os.readv(fd, [view[got:]])
            except BlockingIOError:
                self._wait(fd, deadline, False, what)
                continue
            if k == 0:
                raise self._dead(what)
            got += k

    def _pending(self) -> bool:
        """True when the worker wrote more than one reply (a forged frame)."""
        poller = select.poll()
        poller.register(self.fds[1], select.POLLIN)
        return any(ev & select.POLLIN for _, ev in poller.poll(0))

    def receive(
        self, deadline: float, *, what: str, max_bytes: int = 0, seq: int = 0
    ) -> tuple[dict, dict[str, np.ndarray]]:
        """Read one reply; anything malformed kills the worker and raises ``ProgramError('protocol')``."""
        try:
            return self._receive(deadline, what, max_bytes, seq)
        except _Protocol as exc:
            self.close()
            raise ProgramError(
                "protocol", f"the sandbox worker sent a malformed reply during {what} ({exc}); it was killed"
            ) from None
        except ProgramError:
            raise
        except (
            ValueError,
            TypeError,
            KeyError,
            OverflowError,
            MemoryError,
            RecursionError,
            UnicodeError,
            struct.error,
            IndexError,
        ) as exc:
            self.close()
            raise ProgramError(
                "protocol",
                f"the sandbox worker sent a malformed reply during {what} ({type(exc).__name__}); it was killed",
            ) from None

    def _receive(self, deadline: float, what: str, max_bytes: int, seq: int) -> tuple[dict, dict[str, np.ndarray]]:
        cfg = self.config
        head = bytearray(4)
        self._read_exact_into(memoryview(head), deadline, what)
        n = int.from_bytes(head, "big")
        cap = cfg.header_kb * 1024
        if n > cap:
            raise _Protocol(f"a {n}-byte header; the limit is {cap}")
        raw = bytearray(n)
        self._read_exact_into(memoryview(raw), deadline, what)
        header = _parse_header(bytes(raw))
        got_seq = _field(header, "seq", int)
        if got_seq != seq:
            raise _Protocol(f"reply number {got_seq} to request {seq}")
        if what == "start":
            _check_keys(header, {"ready", "seq", "layers"})
            _field(header, "ready", bool)
            layers = _field(header, "layers", dict)
            if len(layers) > 16:
                raise _Protocol("too many layers")
            return header, {}
        ok = _field(header, "ok", bool)
        _field(header, "cpu", (int, float))
        _field(header, "stdout", str, limit=cfg.stdout_chars + 200)
        if not ok:
            _check_keys(header, {"seq", "ok", "kind", "type", "message", "traceback", "cpu", "stdout"})
            if _field(header, "kind", str) not in _KINDS:
                raise _Protocol("unknown failure kind")
            _field(header, "type", str, limit=100)
            _field(header, "message", str, limit=2000)
            _field(header, "traceback", str, limit=2000)
            if self._pending():
                raise _Protocol("more than one reply to one request")
            return header, {}
        _field(header, "seconds", (int, float))
        if what == "load":
            _check_keys(header, {"seq", "ok", "seconds", "cpu", "stdout"})
            if self._pending():
                raise _Protocol("more than one reply to one request")
            return header, {}
        _check_keys(header, {"seq", "ok", "arrays", "structure", "seconds", "cpu", "stdout"})
        if _field(header, "structure", str) not in _STRUCTURES:
            raise _Protocol("unknown result structure")
        specs = _field(header, "arrays", list)
        if len(specs) > _MAX_ARRAYS:
            raise _Protocol(f"{len(specs)} arrays (at most {_MAX_ARRAYS})")
        total = 0
        plan: list[tuple[str, tuple[int, ...]]] = []
        for spec in specs:
            if not isinstance(spec, dict):
                raise _Protocol("an array description is not an object")
            _check_keys(spec, {"name", "shape"})
            name = _field(spec, "name", str, limit=80)
            shape = _field(spec, "shape", list, limit=_MAX_NDIM)
            if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < _MAX_DIM for d in shape):
                raise _Protocol("an array shape is not a list of non-negative integers")
            total += math.prod(shape) * 8  # Python integers: no overflow
            plan.append((name, tuple(shape)))
        if len({name for name, _ in plan}) != len(plan):
            raise _Protocol("two arrays with the same name")
        if total > max_bytes:
            raise _Protocol(f"a {total}-byte result; the limit for this call is {max_bytes} bytes")
        arrays: dict[str, np.ndarray] = {}
        for name, shape in plan:
            arr = np.empty(shape, dtype=np.float64)
            if arr.nbytes:
                self._read_exact_into(memoryview(arr).cast("B"), deadline, what)
            arrays[name] = arr
        if self._pending():
            raise _Protocol("more than one reply to one request")
        return header, arrays


def _host_read_paths() -> list[str]:
    """Degraded mode (no bubblewrap): what Landlock lets the worker read on the host."""
    import sysconfig

    paths = {sysconfig.get_paths()["stdlib"]}
    dynload = sysconfig.get_config_var("DESTSHARED")
    if dynload:
        paths.add(dynload)
    np_dir = os.path.dirname(np.__file__)
    paths.add(np_dir)
    libs = os.path.join(os.path.dirname(np_dir), "numpy.libs")
    if os.path.isdir(libs):
        paths.add(libs)
    for p in ("/usr/lib", "/lib", "/lib64", "/etc/ld.so.cache", "/dev/null", "/dev/urandom", WORKER):
        paths.add(p)
    return sorted(p for p in paths if os.path.exists(p))


# ---------------------------------------------------------------------------------------- public API


class SandboxedProgram:
    """An untrusted program loaded into its own isolated worker process.

    Args:
        code: Python source of the program.
        entry: name of the function to call (``evaluation_func``, ``compute_reward``, ...).
        mode: ``factors`` (the function returns a list of arrays) or ``reward`` (it returns a
            total reward array, optionally with a dict of named component arrays).
        config: limits and layers; :class:`SandboxConfig` defaults if omitted.

    The worker starts on the first call (or :meth:`start`) and is restarted after a fatal failure.
    Use it as a context manager or call :meth:`close`; a finalizer also kills the worker and
    deletes its folder when the object is garbage-collected or the interpreter exits.

    Raises:
        SandboxUnavailableError: (on start) bubblewrap or libseccomp is missing and the config does
            not accept a degraded mode.

    Example:
        >>> code = "import numpy as np\\ndef evaluation_func(obs, act):\\n    return [obs[:, :1] * 2.0]"
        >>> with SandboxedProgram(code, entry="evaluation_func", mode="factors") as prog:
        ...     out = prog.call(np.ones((3, 2)), np.zeros((3, 1)))
        >>> out.outputs["factor_0"].ravel().tolist()
        [2.0, 2.0, 2.0]
    """

    def __init__(self, code: str, *, entry: str, mode: str = "factors", config: SandboxConfig | None = None) -> None:
        if not isinstance(code, str):
            raise TypeError(f"code must be a str of Python source; got {type(code).__name__}")
        if mode not in ("factors", "reward"):
            raise RangeError(f"mode must be 'factors' or 'reward'; got {mode!r}")
        self.code = code
        self.entry = entry
        self.mode = mode
        self.config = config or SandboxConfig()
        self._worker: _Worker | None = None
        self._lock = threading.Lock()
        self.load_stdout = ""
        self.restarts = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SandboxedProgram:
        """Start the worker and load the program; raises :class:`ProgramError` if loading fails."""
        with self._lock:
            self._ensure()
        return self

    def _ensure(self) -> _Worker:
        w = self._worker
        if w is not None and w.alive and w.cpu_used < 0.9 * self.config.total_cpu_seconds:
            return w
        if w is not None:
            w.close()
            self.restarts += 1
        w = _Worker(self.config)
        self._worker = w
        try:
            w.start()
            deadline = time.monotonic() + self.config.timeout
            w.seq += 1
            w.send({"op": "load", "seq": w.seq, "code": self.code, "entry": self.entry}, [], deadline, "load")
            header, _ = w.receive(deadline, what="load", seq=w.seq)
        except BaseException:
            w.close()
            raise
        if not header["ok"]:
            w.close()
            raise _failure(header, "load")
        w.cpu_used = float(header["cpu"])
        self.load_stdout = str(header["stdout"])
        return w

    def close(self) -> None:
        """Kill the worker and delete its private folder (idempotent)."""
        with self._lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None

    def __enter__(self) -> SandboxedProgram:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def layers(self) -> dict[str, str]:
        """Isolation layers of the current worker (``on ...`` or ``off: reason``)."""
        return dict(self._worker.layers) if self._worker is not None else {}

    @property
    def pid(self) -> int | None:
        """Host pid of the sandbox (bubblewrap's process, or the worker itself in degraded mode)."""
        w = self._worker
        return w.proc.pid if w is not None and w.proc is not None else None

    @property
    def sandbox_pid(self) -> int | None:
        """Host pid of the first process inside the sandbox's pid namespace (``None`` without bubblewrap)."""
        return self._worker.init_pid if self._worker is not None else None

    @property
    def temp_dir(self) -> str | None:
        """The private folder on the host (degraded mode only; with bubblewrap it is a tmpfs inside the sandbox)."""
        return self._worker.tmp if self._worker is not None else None

    # ------------------------------------------------------------------ calls

    def call(self, *arrays: Any, max_output_bytes: int | None = None) -> CallOutput:
        """Call the program's entry function on float64 copies of ``arrays`` in the worker.

        Raises:
            ProgramError: the program failed (kind and reason say how); the caller is unaffected.
        """
        batch = [np.ascontiguousarray(np.asarray(a, dtype=np.float64)) for a in arrays]
        limit = int(self.config.output_mb * 1024 * 1024)
        if max_output_bytes is not None:
            limit = min(limit, int(max_output_bytes))
        with self._lock:
            w = self._ensure()
            deadline = time.monotonic() + self.config.timeout
            w.seq += 1
            header = {
                "op": "call",
                "seq": w.seq,
                "mode": self.mode,
                "max_elements": limit // 8,
                "arrays": [{"shape": list(a.shape)} for a in batch],
            }
            try:
                w.send(header, batch, deadline, "call")
                reply, outputs = w.receive(deadline, what="call", max_bytes=limit, seq=w.seq)
            except ProgramError:
                raise
            except BaseException:
                w.close()  # interrupted mid-call (e.g. KeyboardInterrupt): the pipe is out of step
                raise
            w.cpu_used = float(reply["cpu"])  # only schedules a restart; the kernel enforces the limit
        if not reply["ok"]:
            raise _failure(reply, "call")
        return CallOutput(outputs, reply["structure"], reply["stdout"], float(reply["seconds"]))


def _failure(header: dict, what: str) -> ProgramError:
    kind = header["kind"]
    etype = header["type"]
    msg = header["message"]
    tb = header["traceback"]
    if kind == "memory":
        reason = f"the program ran out of memory during {what} (MemoryError: {msg or 'limit reached'})"
    elif kind == "cpu":
        reason = f"the program exceeded its CPU time limit during {what}"
    elif kind == "refused":
        reason = f"the sandbox refused an operation during {what}: {msg}"
    elif kind == "output":
        reason = f"the program's result is too large: {msg}"
    else:
        reason = f"{etype}: {msg}" if msg else etype
    if tb:
        reason += f"\nTraceback (program frames):\n{tb.rstrip()}"
    return ProgramError(kind, reason)


def probe_layers(config: SandboxConfig | None = None) -> dict[str, str]:
    """Report which isolation layers are active here, without running untrusted code.

    When a required layer (namespaces, seccomp) is missing and the config does not accept a
    degraded mode, no worker is started and the missing layers say why (``off: ...``). Otherwise a
    worker is started with a trivial program and its layers are returned.

    Example:
        >>> layers = probe_layers()
        >>> sorted(layers)  # doctest: +NORMALIZE_WHITESPACE
        ['cgroup', 'filesystem', 'landlock', 'namespaces', 'no_new_privs', 'python_guards', 'rlimits', 'seccomp', 'uid']
    """
    cfg = config or SandboxConfig()
    layers, missing = _plan(cfg)
    if missing and not cfg.allow_degraded:
        layers["degraded"] = "refused: " + "; ".join(missing) + " (SandboxConfig(allow_degraded=True) accepts it)"
        return layers
    with SandboxedProgram("def f(x):\n    return [x]\n", entry="f", config=cfg) as prog:
        return prog.layers
