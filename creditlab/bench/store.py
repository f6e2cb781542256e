"""The results store: one folder per run, written atomically, so a sweep loses nothing.

Layout under the sweep folder ``DIR``::

    DIR/sweep.json                           the manifest: every run id requested so far, with its config hash
    DIR/runs/<task>/<method>/seed<k>/
        result.json                          written last (temp file + os.replace): its presence marks the run finished
        curve.csv                            the learning curve (x, mean, std), also inside result.json
        error.json                           a crashed attempt: traceback, time, config (removed when a retry succeeds)

A run counts as finished only when ``result.json`` parses, says ``status: ok`` and carries the
requested configuration hash. Temporary files (``.*.tmp``, see :mod:`creditlab.atomic`) from an interrupted write are never
read. Re-running the same sweep therefore skips finished runs and never counts a run twice (one
``result.json`` per run folder).

Example:
    >>> import tempfile
    >>> from creditlab.bench.config import get_suite
    >>> from creditlab.bench.suites import expand_runs
    >>> store = ResultsStore(tempfile.mkdtemp())
    >>> run = expand_runs(get_suite("smoke"))[0]
    >>> store.status(run)
    'missing'
    >>> _ = store.write_result(run, {"status": "ok", "metrics": {"final_return": 1.0}, "curve": {"x": [0], "mean": [1.0], "std": [0.0]}})
    >>> store.status(run), len(store.load_results())
    ('done', 1)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import write_json, write_text
from ..errors import CreditlabError
from .suites import RunSpec

__all__ = [
    "ResultsStore",
    "PackedResults",
    "read_packed",
    "ConfigMismatchError",
    "atomic_write_text",
    "atomic_write_json",
]


class ConfigMismatchError(CreditlabError, ValueError):
    """The sweep folder already holds a finished run with the same id but another configuration."""


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the folder, fsync, ``os.replace``)."""
    write_text(path, text)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    write_json(path, data, indent=1, sort_keys=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


class ResultsStore:
    """Reads and writes one sweep folder (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- paths
    def run_dir(self, run: RunSpec | str) -> Path:
        run_id = run if isinstance(run, str) else run.run_id
        return self.root / "runs" / run_id

    @property
    def manifest_path(self) -> Path:
        return self.root / "sweep.json"

    # -- status
    def status(self, run: RunSpec) -> str:
        """ "done" (finished with this config), "failed" (last attempt crashed), "mismatch"
        (finished with another config) or "missing"."""
        folder = self.run_dir(run)
        result = _read_json(folder / "result.json")
        if result is not None and result.get("status") == "ok":
            return "done" if result.get("config_hash") == run.config_hash() else "mismatch"
        if (folder / "error.json").exists():
            return "failed"
        return "missing"

    def check_configs(self, runs: Iterable[RunSpec]) -> None:
        """Raise :class:`ConfigMismatchError` if a finished run in this folder has another config."""
        bad = [r.run_id for r in runs if self.status(r) == "mismatch"]
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise ConfigMismatchError(
                f"{self.root} already holds finished runs {shown} with a different configuration (budget, "
                "hyperparameters or method parameters); use another --out folder to keep both"
            )

    # -- writing
    def write_manifest(self, runs: Iterable[RunSpec], meta: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``runs`` into ``DIR/sweep.json`` (run id -> config hash), keeping earlier requests."""
        old = _read_json(self.manifest_path) or {}
        entries = dict(old.get("runs", {}))
        for r in runs:
            entries[r.run_id] = {
                "config_hash": r.config_hash(),
                "task": r.task.name,
                "method": r.method,
                "seed": r.seed,
            }
        manifest = {**old, **dict(meta), "runs": entries, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        manifest.setdefault("created", manifest["updated"])
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    def write_result(self, run: RunSpec, payload: Mapping[str, Any]) -> Path:
        """Record a finished run (``payload["status"] == "ok"``) or a crash (anything else).

        The curve CSV is written first and ``result.json`` last, both atomically; a crash goes to
        ``error.json`` and never touches an existing ``result.json``.
        """
        folder = self.run_dir(run)
        record = {
            **dict(payload),
            "run_id": run.run_id,
            "config_hash": run.config_hash(),
            "config": run.to_dict(),
            "task": run.task.name,
            "method": run.method,
            "seed": run.seed,
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if payload.get("status") == "ok":
            curve = payload.get("curve") or {}
            rows = ["x,mean,std"] + [
                f"{x},{m!r},{s!r}" for x, m, s in zip(curve.get("x", []), curve.get("mean", []), curve.get("std", []))
            ]
            atomic_write_text(folder / "curve.csv", "\n".join(rows) + "\n")
            atomic_write_json(folder / "result.json", record)
            try:
                (folder / "error.json").unlink()
            except FileNotFoundError:
                pass
            return folder / "result.json"
        record["status"] = "failed"
        atomic_write_json(folder / "error.json", record)
        return folder / "error.json"

    # -- reading
    def load_results(self, *, only_manifest: bool = True) -> list[dict[str, Any]]:
        """Every finished run (parsed ``result.json``), sorted by run id.

        With ``only_manifest`` (default) a run counts only if the manifest lists it with the same
        config hash, so a folder reused with another configuration never mixes results.
        """
        manifest = (_read_json(self.manifest_path) or {}).get("runs") if only_manifest else None
        out = []
        for path in sorted((self.root / "runs").glob("*/*/*/result.json")):
            data = _read_json(path)
            if data is None or data.get("status") != "ok":
                continue
            if manifest is not None:
                entry = manifest.get(data.get("run_id"))
                if entry is None or entry.get("config_hash") != data.get("config_hash"):
                    continue
            out.append(data)
        return out

    def load_failures(self) -> list[dict[str, Any]]:
        """Crashed runs that have not succeeded since (parsed ``error.json``)."""
        out = []
        for path in sorted((self.root / "runs").glob("*/*/*/error.json")):
            data = _read_json(path)
            if data is not None and not (path.parent / "result.json").exists():
                out.append(data)
        return out

    def manifest(self) -> dict[str, Any]:
        return _read_json(self.manifest_path) or {}

    # -- one table per sweep
    def pack(self, path: str | os.PathLike) -> Path:
        """Write the sweep as one JSON-lines table: a manifest line, then one line per finished run
        (its ``result.json``, curve included) and per crashed run (its ``error.json``).

        What ``creditlab report FILE.jsonl`` reads; what the repository keeps instead of hundreds of
        run folders. :func:`read_packed` reads it back.
        """
        return pack_rows(path, self.manifest(), self.load_results(), self.load_failures())


class PackedResults:
    """A packed sweep (see :meth:`ResultsStore.pack`) with the reading side of :class:`ResultsStore`."""

    def __init__(self, path: str | os.PathLike):
        self.root = Path(path)
        self._manifest: dict[str, Any] = {}
        self._results: list[dict[str, Any]] = []
        self._failures: list[dict[str, Any]] = []
        try:
            text = self.root.read_text(encoding="utf-8")
        except OSError as exc:
            raise CreditlabError(f"cannot read packed results {self.root}: {exc.strerror or exc}") from None
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CreditlabError(f"{self.root}:{i}: not a JSON line ({exc.msg})") from None
            kind = row.pop("kind", None) if isinstance(row, dict) else None
            if kind == "manifest":
                self._manifest = row
            elif kind == "result":
                self._results.append(row)
            elif kind == "failure":
                self._failures.append(row)
            else:
                raise CreditlabError(f"{self.root}:{i}: expected a line with kind manifest, result or failure")

    def load_results(self) -> list[dict[str, Any]]:
        return list(self._results)

    def load_failures(self) -> list[dict[str, Any]]:
        return list(self._failures)

    def manifest(self) -> dict[str, Any]:
        return dict(self._manifest)


def only_tasks(
    manifest: dict[str, Any], results: list[dict[str, Any]], failures: list[dict[str, Any]], tasks: Collection[str]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The manifest (its requested runs), results and failures of the named tasks only."""
    keep = set(tasks)
    runs = {k: v for k, v in (manifest.get("runs") or {}).items() if k.split("/", 1)[0] in keep}
    return (
        {**manifest, "runs": runs} if "runs" in manifest else dict(manifest),
        [r for r in results if r.get("task") in keep],
        [f for f in failures if f.get("task") in keep],
    )


def pack_rows(
    path: str | os.PathLike,
    manifest: dict[str, Any],
    results: list[dict[str, Any]],
    failures: list[dict[str, Any]],
) -> Path:
    """Write a packed table (see :meth:`ResultsStore.pack`) from its rows."""
    lines = [json.dumps({"kind": "manifest", **manifest}, sort_keys=True)]
    lines += [json.dumps({"kind": "result", **r}, sort_keys=True) for r in results]
    lines += [json.dumps({"kind": "failure", **f}, sort_keys=True) for f in failures]
    return write_text(path, "\n".join(lines) + "\n")


def read_packed(path: str | os.PathLike) -> PackedResults:
    """Read a table written by :meth:`ResultsStore.pack`."""
    return PackedResults(path)
