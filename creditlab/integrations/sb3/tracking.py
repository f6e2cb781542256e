"""Where SB3's logger writes: TensorBoard event files and Weights & Biases runs.

Everything the credit integration measures is recorded through SB3's logger (``self.logger.record``):
``credit/*`` (the reward model's loss, updates, timings), ``store/*`` (the episode store),
``quality/*`` (assigned vs hidden reward), next to SB3's own ``rollout/*``, ``train/*`` and the
runner's ``eval/*``. So any output format of SB3's logger shows them:

* TensorBoard: ``PPO(..., tensorboard_log="runs/tb")`` or ``RunConfig(tensorboard_log=...)`` (needs
  the ``tensorboard`` package: the ``rl`` extra), or :func:`make_logger` with ``"tensorboard"``.
* Weights & Biases: :class:`WandbOutputFormat` writes every dump of the logger to a wandb run;
  :func:`start_wandb` starts one (``mode="offline"`` needs no network: ``wandb sync FOLDER``
  uploads it later).

Example:
    >>> import tempfile
    >>> logger = make_logger(tempfile.mkdtemp(), ["csv"])
    >>> logger.record("credit/loss", 0.5); logger.dump(step=64)
    >>> logger.close()
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.logger import KVWriter, Logger, make_output_format

from ...errors import PluginError, RangeError

__all__ = ["WandbOutputFormat", "make_logger", "start_wandb", "TRACKERS", "require_tracker"]

TRACKERS = ("tensorboard", "wandb")
_INSTALL = {
    "tensorboard": "pip install tensorboard (part of creditlab's `rl` extra: from the repository, pip install -e '.[rl]')",
    "wandb": "pip install wandb (creditlab's `wandb` extra: from the repository, pip install -e '.[wandb]')",
}


def require_tracker(name: str) -> None:
    """Raise a named error unless tracker ``name`` ("tensorboard" or "wandb") is known and importable.

    Example:
        >>> require_tracker("mlflow")
        Traceback (most recent call last):
        ...
        creditlab.errors.RangeError: tracker must be one of ('tensorboard', 'wandb'); got 'mlflow'
    """
    if name not in TRACKERS:
        raise RangeError(f"tracker must be one of {TRACKERS}; got {name!r}")
    import importlib

    module = "torch.utils.tensorboard" if name == "tensorboard" else "wandb"
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise PluginError(
            f"tracking with {name} needs the {name} package, which is not installed ({exc}): {_INSTALL[name]}"
        ) from exc


class WandbOutputFormat(KVWriter):
    """An SB3 logger output that sends each dump to a wandb run (``run.log(values, step=num_timesteps)``).

    Numbers go as they are; strings, arrays, videos and figures are skipped (TensorBoard keeps
    those). A key excluded for ``"wandb"`` (SB3's ``exclude`` argument of ``logger.record``) is
    skipped too. The writer never finishes the run: whoever started it does.

    Args:
        run: a started wandb run.
        step_offset: added to SB3's step (wandb steps must increase: a second training logged
            into the same run starts after the first one's last step).
    """

    def __init__(self, run: Any, *, step_offset: int = 0):
        self.run = run
        self.step_offset = int(step_offset)
        self.last_step = self.step_offset

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        out: dict[str, float] = {}
        for key, value in key_values.items():
            excluded = key_excluded.get(key)
            if excluded is not None and "wandb" in excluded:
                continue
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                continue
            value = float(value)
            if math.isfinite(value):
                out[key] = value
        if out:
            self.last_step = max(self.last_step, int(step) + self.step_offset)
            self.run.log(out, step=self.last_step)

    def close(self) -> None:
        pass


def make_logger(
    folder: str | os.PathLike, formats: Sequence[str] = ("tensorboard",), *, wandb_run: Any = None
) -> Logger:
    """An SB3 :class:`~stable_baselines3.common.logger.Logger` writing into ``folder`` (give it to
    ``model.set_logger`` or to :func:`~creditlab.integrations.sb3.train` as ``logger=``).

    Args:
        folder: where file outputs go; TensorBoard's event files are written directly into it.
        formats: SB3 format names (``"tensorboard"``, ``"csv"``, ``"json"``, ``"log"``, ``"stdout"``).
        wandb_run: a started wandb run (:func:`start_wandb`); adds a :class:`WandbOutputFormat`.
    """
    folder = os.fspath(folder)
    if "tensorboard" in formats:
        require_tracker("tensorboard")
    os.makedirs(folder, exist_ok=True)
    outputs: list[KVWriter] = [make_output_format(f, folder) for f in formats]
    if wandb_run is not None:
        outputs.append(WandbOutputFormat(wandb_run))
    return Logger(folder, outputs)


def start_wandb(
    folder: str | os.PathLike,
    *,
    project: str,
    name: str,
    group: str | None = None,
    config: Mapping[str, Any] | None = None,
    mode: str | None = None,
    tags: Sequence[str] = (),
) -> Any:
    """Start a wandb run whose files go under ``folder`` (``folder/wandb/...``).

    Args:
        folder: the run's folder; wandb writes ``wandb/offline-run-<time>-<id>/`` (offline) or
            ``wandb/run-<time>-<id>/`` there.
        project, name, group, tags: as in ``wandb.init``.
        config: the run's configuration (shown in wandb's table).
        mode: ``"offline"`` (default unless ``WANDB_MODE`` says otherwise: no network; upload later
            with ``wandb sync``), ``"online"`` or ``"disabled"``.

    Returns:
        The run; call ``run.finish()`` when done.
    """
    require_tracker("wandb")
    import wandb

    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    if mode not in ("offline", "online", "disabled"):
        raise RangeError(f"wandb mode must be 'offline', 'online' or 'disabled'; got {mode!r}")
    os.makedirs(folder, exist_ok=True)
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True)
    return wandb.init(
        dir=os.fspath(folder),
        project=project,
        name=name,
        group=group,
        config=dict(config or {}),
        mode=mode,
        tags=list(tags),
        settings=settings,
        reinit="create_new",
    )
