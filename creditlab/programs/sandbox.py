"""Run untrusted (LLM-written) programs in a separate, confined worker process.

The caller's process never compiles or executes the program. A :class:`SandboxedProgram` owns one
worker process (``creditlab/programs/_worker.py``, started with ``python -I``), loads the program
into it once and then evaluates it on batches of NumPy arrays sent over pipes. Every failure of
the program (exception, timeout, CPU/memory/file limit, refused operation, crash, malformed output)
comes back as a :class:`~creditlab.programs.errors.ProgramError` with a ``kind`` and a ``reason``;
the worker is killed and restarted on the next call when it cannot continue.

The layers (all on by default, each reported in :attr:`SandboxedProgram.layers`):

* separate process, new session, cleaned environment (no inherited variables), private temporary
  working folder that is deleted on close;
* wall-clock timeout per call (enforced here, by killing the process group);
* rlimits: address space, CPU seconds, file size, open files, processes, no core dumps;
* a fresh network namespace, Landlock filesystem/TCP/signal rules, dropping root to ``nobody``,
  a seccomp filter (fork, exec, sockets, ptrace, namespaces, mount ... refused);
* Python guards (audit hook, reduced builtins, capped ``print``).

See docs/programs.md for the threat model: what is contained and what is not.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import select
import shutil
import signal
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
from .errors import ProgramError

__all__ = ["SandboxConfig", "SandboxedProgram", "CallOutput", "probe_layers"]

WORKER = str(Path(__file__).with_name("_worker.py"))
MAX_HEADER = 1 << 20
_MAX_ARRAYS = 300
_F_SETPIPE_SZ = 1031
_COALESCE = 1 << 19


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
        output_mb: largest result accepted from one call.
        file_mb: largest file the program may write in its private folder (RLIMIT_FSIZE).
        max_open_files: RLIMIT_NOFILE of the worker.
        stdout_chars: characters of ``print`` output kept per call (the rest is dropped).
        startup_timeout: seconds allowed for the worker to start (import NumPy, confine itself).
        network_namespace, landlock, seccomp, drop_privileges, python_guards: enable each layer.
            Turning one off is meant for testing the others; every layer is on by default.
        uid, gid: the unprivileged identity a root worker switches to (default ``nobody``).
        temp_root: folder under which private working folders are created (default: the system's).
        python: interpreter for the worker (default: the running one).
    """

    timeout: float = 10.0
    cpu_seconds: float = 10.0
    total_cpu_seconds: float = 3600.0
    memory_mb: float = 1024.0
    output_mb: float = 256.0
    file_mb: float = 16.0
    max_open_files: int = 64
    stdout_chars: int = 4000
    startup_timeout: float = 60.0
    network_namespace: bool = True
    landlock: bool = True
    seccomp: bool = True
    drop_privileges: bool = True
    python_guards: bool = True
    uid: int = 65534
    gid: int = 65534
    temp_root: str | None = None
    python: str | None = None

    def __post_init__(self) -> None:
        for name in ("timeout", "cpu_seconds", "total_cpu_seconds", "memory_mb", "output_mb", "file_mb", "startup_timeout"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise RangeError(f"SandboxConfig.{name} must be a positive number; got {v!r}")
        if self.memory_mb < 256:
            raise RangeError(f"SandboxConfig.memory_mb must be >= 256 (Python + NumPy need ~150 MB); got {self.memory_mb}")
        if self.max_open_files < 16:
            raise RangeError(f"SandboxConfig.max_open_files must be >= 16; got {self.max_open_files}")

    def replace(self, **changes: Any) -> SandboxConfig:
        return dataclasses.replace(self, **changes)


class CallOutput(NamedTuple):
    """Result of one sandboxed call.

    Attributes:
        outputs: name -> float64 array, in the order the program returned them (``factor_0`` ...,
            or ``reward`` then ``component:<name>``).
        structure: ``list`` (factors), ``tuple`` (reward with components) or ``array`` (bare reward).
        stdout: what the program printed (capped).
        seconds: time spent in the worker.
    """

    outputs: dict[str, np.ndarray]
    structure: str
    stdout: str
    seconds: float


def _read_paths() -> list[str]:
    """Folders the worker may read after confinement: the Python standard library and NumPy."""
    import sysconfig

    paths = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
    paths.add(os.path.join(sys.base_prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "lib-dynload"))
    np_dir = os.path.dirname(np.__file__)
    paths.add(np_dir)
    libs = os.path.join(os.path.dirname(np_dir), "numpy.libs")
    if os.path.isdir(libs):
        paths.add(libs)
    paths.update(["/dev/null", "/dev/urandom", "/dev/zero"])
    return sorted(p for p in paths if os.path.exists(p))


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


def _cleanup(res: dict[str, Any]) -> None:
    """Kill the worker's process group, close pipes, delete the private folder. Idempotent."""
    proc, fds, tmp, log = res.get("proc"), res["fds"], res.get("tmp"), res.get("log")
    if proc is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
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
    if tmp and os.path.isdir(tmp):

        def fix(func, path, _exc):  # a program may chmod its files; make them deletable again
            try:
                os.chmod(os.path.dirname(path), 0o700)
                os.chmod(path, 0o700)
                func(path)
            except OSError:
                pass

        if sys.version_info >= (3, 12):
            shutil.rmtree(tmp, onexc=fix)
        else:
            shutil.rmtree(tmp, onerror=fix)


class _Worker:
    """One worker process and its pipes (internal)."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.fds: list[int] = []
        self.tmp: str | None = None
        self.log = None
        self.layers: dict[str, str] = {}
        self._finalizer = None
        self.cpu_used = 0.0
        self.cpu_checked = 0.0

    def start(self) -> None:
        cfg = self.config
        tmp = tempfile.mkdtemp(prefix=f"creditlab-sandbox-{os.getpid()}-", dir=cfg.temp_root)
        self.tmp = tmp
        # Everything created from here on is released by the finalizer, whatever fails next.
        res: dict[str, Any] = {"proc": None, "fds": self.fds, "tmp": tmp, "log": None}
        self._finalizer = weakref.finalize(self, _cleanup, res)
        os.chmod(tmp, 0o700)
        root = os.geteuid() == 0
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
        worker_cfg = {
            "in_fd": to_child_r,
            "out_fd": from_child_w,
            "tmp": tmp,
            "uid": cfg.uid,
            "gid": cfg.gid,
            "read_paths": _read_paths(),
            "limits": {
                "memory_mb": cfg.memory_mb,
                "cpu_seconds": cfg.cpu_seconds,
                "total_cpu_seconds": cfg.total_cpu_seconds,
                "file_mb": cfg.file_mb,
                "max_open_files": cfg.max_open_files,
                "stdout_chars": cfg.stdout_chars,
                "max_processes": 1,
            },
            "layers": {
                "network_namespace": cfg.network_namespace,
                "landlock": cfg.landlock,
                "seccomp": cfg.seccomp,
                "drop_privileges": cfg.drop_privileges,
                "python_guards": cfg.python_guards,
            },
        }
        try:
            self.proc = subprocess.Popen(
                [cfg.python or sys.executable, "-I", "-B", WORKER, json.dumps(worker_cfg)],
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=self.log,
                cwd=tmp,
                env=_clean_env(tmp),
                pass_fds=(to_child_r, from_child_w),
                start_new_session=True,
                close_fds=True,
            )
            res["proc"] = self.proc
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        os.set_blocking(to_child_w, False)
        os.set_blocking(from_child_r, False)
        header, _ = self.receive(time.monotonic() + cfg.startup_timeout, what="start")
        if not header.get("ready"):
            self.close()
            raise ProgramError("startup", f"the sandbox worker sent {header!r} instead of its ready message")
        self.layers = {str(k): str(v)[:200] for k, v in header.get("layers", {}).items()}

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and bool(self.fds)

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

    def receive(self, deadline: float, *, what: str, max_bytes: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
        head = bytearray(4)
        self._read_exact_into(memoryview(head), deadline, what)
        (n,) = struct.unpack("!I", bytes(head))
        if n > MAX_HEADER:
            self.close()
            raise ProgramError("output", f"the worker sent a {n}-byte header (limit {MAX_HEADER}); killed")
        raw = bytearray(n)
        self._read_exact_into(memoryview(raw), deadline, what)
        try:
            header = json.loads(bytes(raw))
            if not isinstance(header, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self.close()
            raise ProgramError("output", f"the worker sent a malformed header ({exc}); killed") from None
        specs = header.get("arrays", [])
        arrays: dict[str, np.ndarray] = {}
        if specs:
            total = 0
            shapes = []
            ok = isinstance(specs, list) and len(specs) <= _MAX_ARRAYS
            for s in specs if ok else []:
                shape = s.get("shape") if isinstance(s, dict) else None
                name = s.get("name") if isinstance(s, dict) else None
                if (
                    not isinstance(name, str)
                    or len(name) > 80
                    or s.get("dtype") != "float64"
                    or not isinstance(shape, list)
                    or len(shape) > 4
                    or not all(isinstance(d, int) and 0 <= d < 2**40 for d in shape)
                ):
                    ok = False
                    break
                size = int(np.prod(shape, dtype=np.int64)) * 8
                total += size
                shapes.append((name, tuple(shape)))
            if not ok:
                self.close()
                raise ProgramError("output", "the worker described its result in a malformed way; killed")
            if total > max_bytes:
                self.close()
                raise ProgramError(
                    "output", f"the program returned {total} bytes; the limit for this call is {max_bytes} bytes"
                )
            for name, shape in shapes:
                arr = np.empty(shape, dtype=np.float64)
                if arr.nbytes:
                    self._read_exact_into(memoryview(arr).cast("B"), deadline, what)
                if name in arrays:
                    self.close()
                    raise ProgramError("output", f"the program returned the output name {name!r} twice")
                arrays[name] = arr
        return header, arrays


class SandboxedProgram:
    """An untrusted program loaded into its own confined worker process.

    Args:
        code: Python source of the program.
        entry: name of the function to call (``evaluation_func``, ``compute_reward``, ...).
        mode: ``factors`` (the function returns a list of arrays) or ``reward`` (it returns a
            total reward array, optionally with a dict of named component arrays).
        config: limits and layers; :class:`SandboxConfig` defaults if omitted.

    The worker starts on the first call (or :meth:`start`) and is restarted after a fatal failure.
    Use it as a context manager or call :meth:`close`; a finalizer also kills the worker and
    deletes its folder when the object is garbage-collected or the interpreter exits.

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
            w.send({"op": "load", "code": self.code, "entry": self.entry}, [], deadline, "load")
            header, _ = w.receive(deadline, what="load")
        except ProgramError:
            w.close()
            raise
        if not header.get("ok"):
            w.close()
            raise _failure(header, "load")
        self.load_stdout = str(header.get("stdout", ""))
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
        """Isolation layers active in the current worker (``on ...`` or ``off: reason``)."""
        return dict(self._worker.layers) if self._worker is not None else {}

    @property
    def pid(self) -> int | None:
        w = self._worker
        return w.proc.pid if w is not None and w.proc is not None else None

    @property
    def temp_dir(self) -> str | None:
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
            header = {
                "op": "call",
                "mode": self.mode,
                "max_elements": limit // 8,
                "arrays": [{"dtype": "float64", "shape": list(a.shape)} for a in batch],
            }
            try:
                w.send(header, batch, deadline, "call")
                reply, outputs = w.receive(deadline, what="call", max_bytes=limit)
            except ProgramError:
                raise
            except BaseException:
                w.close()  # interrupted mid-call (e.g. KeyboardInterrupt): the pipe is out of step
                raise
            now = time.monotonic()
            if now - w.cpu_checked > 1.0:  # the worker's CPU total, for a restart before its hard limit
                w.cpu_checked = now
                try:
                    w.cpu_used = _cpu_of(w.proc.pid)
                except OSError:
                    pass
        if not reply.get("ok"):
            raise _failure(reply, "call")
        structure = reply.get("structure")
        if structure not in ("list", "tuple", "array"):
            raise ProgramError("output", f"the worker reported an unknown result structure {structure!r}")
        return CallOutput(outputs, structure, str(reply.get("stdout", ""))[: self.config.stdout_chars + 200], float(reply.get("seconds", 0.0)))


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _failure(header: dict, what: str) -> ProgramError:
    kind = str(header.get("kind", "error"))[:20]
    if kind not in ("error", "memory", "cpu", "refused", "output"):
        kind = "error"
    etype = str(header.get("type", "Error"))[:100]
    msg = str(header.get("message", ""))[:2000]
    tb = str(header.get("traceback", ""))[:2000]
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
    """Start a worker with a trivial program and report which isolation layers are active here.

    Example:
        >>> layers = probe_layers()
        >>> sorted(layers)  # doctest: +NORMALIZE_WHITESPACE
        ['drop_privileges', 'landlock', 'network_namespace', 'python_guards', 'rlimits', 'seccomp']
    """
    with SandboxedProgram("def f(x):\n    return [x]\n", entry="f", config=config) as prog:
        return prog.layers
