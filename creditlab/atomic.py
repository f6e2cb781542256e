"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every result, checkpoint, cache entry and report creditlab writes goes through here: the data is
written to a temporary file in the destination folder (named ``.<name>.<pid>-<host>.<random>.tmp``,
so sweeps and tests can recognise and ignore leftovers), flushed to disk, given the permissions a
plain ``open(path, "w")`` would give (``0o666`` minus the umask: ``tempfile.mkstemp`` creates
``0o600``), then renamed over the target with ``os.replace`` (atomic on POSIX and Windows within one
filesystem). On any error, including KeyboardInterrupt, the temporary file is removed and the
target is left untouched.

A process killed mid-write (SIGKILL, power loss) cannot remove its temporary file. The next
successful write of the same target removes such leftovers (:func:`remove_stale_temp_files`): only
files of our naming pattern for that target, and only when their writer is gone (same host, its
pid no longer exists) or they are older than :data:`STALE_SECONDS`. A write in progress in another
live process is never touched.

Example:
    >>> import json, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> p = write_json(folder / "runs" / "result.json", {"return": 1.5})
    >>> json.loads(p.read_text())
    {'return': 1.5}
    >>> with atomic_path(folder / "plot.png") as tmp:   # for writers that want a file name
    ...     _ = tmp.write_bytes(b"png")
    >>> sorted(x.name for x in folder.iterdir())
    ['plot.png', 'runs']
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "STALE_SECONDS",
    "atomic_path",
    "file_mode",
    "json_default",
    "remove_stale_temp_files",
    "write_bytes",
    "write_json",
    "write_text",
]

STALE_SECONDS = 24 * 3600.0
"""A temporary file of ours older than this (by modification time) is a leftover whatever its pid."""


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on normal exit it replaces ``path``.

    Creates the parent folders. ``fsync`` (default) flushes the file to disk before the rename,
    so a crash of the machine cannot leave an empty file under the final name.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{_writer_tag()}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    remove_stale_temp_files(target)


def file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open(path, "w")`` gives a new file.

    Read from ``/proc/self/status`` where it is available (Linux), which leaves the umask alone;
    elsewhere the umask is read by setting and restoring it under a lock.

    Example:
        >>> old = os.umask(0o022)
        >>> oct(file_mode())
        '0o644'
        >>> _ = os.umask(old)
    """
    return 0o666 & ~_umask()


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # pragma: no cover - non-Linux
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
_RANDOM = "[a-z0-9_]{8}"  # tempfile's random part


def _writer_tag() -> str:
    """``<pid>-<host>``: who writes a temporary file (the host as 6 hex digits of its name's SHA-1)."""
    return f"{os.getpid()}-{_HOST}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists under another user, or cannot tell: keep the file
        return True
    return True


def remove_stale_temp_files(target: str | os.PathLike, *, stale_seconds: float = STALE_SECONDS) -> list[Path]:
    """Remove leftover temporary files of ``target`` from killed writes; returns what was removed.

    A file is removed only when all of these hold: its name is ``.<target name>.<pid>-<host>.
    <random>.tmp`` (or the older ``.<target name>.<random>.tmp``), it is a regular file (never a
    link or a folder), and either it was written on this host by a pid that no longer exists, or
    it was last modified more than ``stale_seconds`` ago. Errors (a file vanishing, permissions)
    are ignored: cleaning up never fails a write.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> leftover = folder / f".result.json.999999999-{_HOST}.k2j4h5g6.tmp"   # this host, no such pid
        >>> _ = leftover.write_text("half a fi")
        >>> remove_stale_temp_files(folder / "result.json") == [leftover]
        True
    """
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:(\d+)-([0-9a-f]{{6}})\.)?{_RANDOM}\.tmp")
    prefix = f".{target.name}."
    removed: list[Path] = []
    now = time.time()
    try:
        entries = [e for e in os.scandir(target.parent) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            pid, host = m.group(1), m.group(2)
            writer_gone = pid is not None and host == _HOST and not _pid_alive(int(pid))
            if writer_gone or now - st.st_mtime > stale_seconds:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(
    path: str | os.PathLike,
    data: Any,
    *,
    indent: int | None = 1,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
    ensure_ascii: bool = True,
    fsync: bool = True,
) -> Path:
    """Serialize ``data`` as JSON (NumPy scalars and arrays included) and write it atomically.

    The text is built before the file is opened, so a value JSON cannot encode raises without
    touching ``path``.
    """
    text = json.dumps(
        data, indent=indent, sort_keys=sort_keys, default=default or json_default, ensure_ascii=ensure_ascii
    )
    return write_text(path, text + "\n", fsync=fsync)


def json_default(x: Any) -> Any:
    """``json.dumps(default=...)`` for the values creditlab records: NumPy and torch scalars and
    arrays, dates and durations, decimals, bytes, paths, objects with ``to_dict`` / ``_asdict``;
    anything else is written as ``str(x)`` rather than losing the whole record."""
    import datetime
    import decimal

    if isinstance(x, (datetime.date, datetime.datetime, datetime.time)):
        return x.isoformat()
    if isinstance(x, datetime.timedelta):
        return x.total_seconds()
    if isinstance(x, decimal.Decimal):
        return float(x)
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if hasattr(x, "_asdict"):
        return x._asdict()
    if hasattr(x, "tolist"):  # NumPy / torch arrays and scalars (a 0-d tolist() is the scalar)
        return x.tolist()
    return str(x)
