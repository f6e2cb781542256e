"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every result, checkpoint, cache entry and report creditlab writes goes through here: the data is
written to a temporary file in the destination folder (named ``.<name>.<random>.tmp``, so sweeps
and tests can recognise and ignore leftovers), flushed to disk, then renamed over the target with
``os.replace`` (atomic on POSIX and Windows within one filesystem). On any error, including
KeyboardInterrupt, the temporary file is removed and the target is left untouched.

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

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "json_default", "write_bytes", "write_text", "write_json"]


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on normal exit it replaces ``path``.

    Creates the parent folders. ``fsync`` (default) flushes the file to disk before the rename,
    so a crash of the machine cannot leave an empty file under the final name.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


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
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, default=default or json_default, ensure_ascii=ensure_ascii)
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
