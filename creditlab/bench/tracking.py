"""Per-run experiment tracking for ``creditlab bench --track tensorboard,wandb``.

Each run of a sweep gets its own logs beside its results::

    DIR/runs/<task>/<method>/seed<k>/tensorboard/events.out.tfevents...   (bsuite: tensorboard/<setting>/)
    DIR/runs/<task>/<method>/seed<k>/wandb/offline-run-<time>-<id>/       (W&B, offline by default)

so ``tensorboard --logdir DIR/runs`` shows every run, named ``<task>/<method>/seed<k>``, and
``wandb sync DIR/runs/*/*/*/wandb/offline-run-*`` uploads the W&B runs later (set
``WANDB_MODE=online`` to log live instead). What is logged: everything SB3's logger records during
the run (``rollout/*``, ``train/*``, ``eval/*``, ``credit/*``, ``store/*``, ``quality/*``, see
:mod:`creditlab.integrations.sb3.tracking`) at environment steps, then the run's benchmark metrics
under ``bench/*`` (``bench/final_return``, ``bench/auc``, ...) at its last step (W&B: also in the
run's summary).

Where the files are written: a worker that shares the sweep folder's disk (the in-process
executor, a local Ray) writes them in place, so the curves grow while the run trains. On a remote
Ray cluster (``--ray-address``) the worker writes into a temporary folder and returns the files
with its result; the driver writes them into the run folder (results and logs are then written
by the driver only, as for every result). A retried run starts its logs afresh.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import RangeError

__all__ = ["RunTracker", "check_trackers", "LOG_FOLDERS"]

LOG_FOLDERS = ("tensorboard", "wandb")  # per run, beside result.json


def check_trackers(trackers: Sequence[str] | None) -> tuple[str, ...]:
    """Validate tracker names (``tensorboard``, ``wandb``) and that their packages import; named errors otherwise."""
    from ..integrations.sb3.tracking import TRACKERS, require_tracker

    out: list[str] = []
    for name in trackers or ():
        name = str(name).strip().lower()
        if name not in TRACKERS:
            raise RangeError(f"--track must name trackers from {', '.join(TRACKERS)}; got {name!r}")
        require_tracker(name)
        if name not in out:
            out.append(name)
    return tuple(out)


def clear_logs(run_dir: str | os.PathLike) -> None:
    """Remove a run's tracking folders (a retried run starts its curves afresh)."""
    for name in LOG_FOLDERS:
        shutil.rmtree(Path(run_dir) / name, ignore_errors=True)


class RunTracker:
    """The tracking of one run: one SB3 logger per training (bsuite: per setting), one wandb run.

    Args:
        trackers: ``("tensorboard",)``, ``("wandb",)`` or both.
        folder: the run's folder (logs are written in place), or None: a temporary folder whose
            files :meth:`files` returns for the driver to write.
        project, name, group, tags, config: the wandb run's (``name`` is the run id).
    """

    def __init__(
        self,
        trackers: Sequence[str],
        folder: str | os.PathLike | None,
        *,
        project: str,
        name: str,
        group: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
    ):
        self.trackers = check_trackers(trackers)
        self._tmp = None if folder is not None else tempfile.mkdtemp(prefix="creditlab-track-")
        self.folder = Path(folder if folder is not None else self._tmp)
        clear_logs(self.folder)
        self._loggers: list[Any] = []
        self._wandb_writer = None
        self.wandb_run = None
        if "wandb" in self.trackers:
            from ..integrations.sb3.tracking import start_wandb

            self.wandb_run = start_wandb(self.folder, project=project, name=name, group=group, tags=tags, config=config)

    def logger(self, setting: str | None = None) -> Any:
        """An SB3 logger for one training (``setting``: a bsuite setting, logged in its own subfolder)."""
        from ..integrations.sb3.tracking import WandbOutputFormat, make_logger

        sub = self.folder / "tensorboard"
        if setting:
            sub = sub / setting.replace("/", "_")
        formats = ["tensorboard"] if "tensorboard" in self.trackers else []
        logger = make_logger(sub if formats else self.folder, formats)
        if self.wandb_run is not None:
            # one wandb run per benchmark run: later settings continue after the earlier ones' steps
            offset = 0 if self._wandb_writer is None else self._wandb_writer.last_step + 1
            self._wandb_writer = WandbOutputFormat(self.wandb_run, step_offset=offset)
            logger.output_formats.append(self._wandb_writer)
        self._loggers.append(logger)
        return logger

    def finish(self, metrics: Mapping[str, float] | None, *, steps: int | None = None) -> None:
        """Record the run's benchmark metrics (``bench/<key>``) at its last step and close every output.

        ``metrics=None``: the run failed; the wandb run is marked failed (exit code 1).
        """
        scalars = {
            f"bench/{k}": float(v)
            for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        }
        if self._loggers and scalars:
            last = self._loggers[-1]
            for k, v in scalars.items():
                last.record(k, v)
            last.dump(step=int(steps if steps is not None else 0))
        for logger in self._loggers:
            logger.close()
        self._loggers = []
        if self.wandb_run is not None:
            if scalars:
                self.wandb_run.summary.update(scalars)
            self.wandb_run.finish(exit_code=0 if metrics is not None else 1)
            self.wandb_run = None

    def files(self) -> dict[str, bytes]:
        """The log files written into a temporary folder (relative path -> bytes), for the driver; {} in place."""
        if self._tmp is None:
            return {}
        out: dict[str, bytes] = {}
        root = Path(self._tmp)
        for name in LOG_FOLDERS:
            for path in sorted((root / name).rglob("*")):
                if path.is_file():
                    out[path.relative_to(root).as_posix()] = path.read_bytes()
        shutil.rmtree(root, ignore_errors=True)
        self._tmp = None
        return out


def write_files(run_dir: str | os.PathLike, files: Mapping[str, bytes]) -> None:
    """Write the log files a remote worker returned into ``run_dir`` (atomically, each), replacing old ones."""
    from ..atomic import write_bytes

    if not files:
        return
    run_dir = Path(run_dir)
    clear_logs(run_dir)
    for rel, data in files.items():
        target = (run_dir / rel).resolve()
        if not target.is_relative_to(run_dir.resolve()) or rel.split("/")[0] not in LOG_FOLDERS:
            raise RangeError(f"a worker returned a log file outside the run's log folders: {rel!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(target, data)
