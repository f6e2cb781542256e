"""TRL adapter: reward functions that honor TRL's contract, and GRPO with creditlab's per-token advantages.

**Reward functions.** TRL's ``GRPOTrainer`` calls each reward function with keyword arguments
(``prompts``, ``completions``, ``completion_ids``, every dataset column, ``trainer_state``,
``log_extra``, ``log_metric``, ...) and expects ``list[float | None]`` (None = "does not apply";
TRL turns it into NaN and leaves it out). The classes below are picklable callables with a stable
``__name__`` (TRL logs ``rewards/{__name__}/mean``):

* :class:`PARReward` -- Preference As Reward around any reward function or column;
* :class:`OverlongPenalty` -- DAPO's soft overlong penalty from ``completion_ids``;
* :class:`GroupLengthPenalty` -- length penalty relative to the completions of the same prompt;
* :class:`GatedReward` -- gated components: a level counts only if every earlier level passed.

A *source* is either a callable with TRL's reward signature or the name of a column (a dataset
column, or an extra field a ``rollout_func`` returned).

**Per-token advantages.** TRL's ``GRPOTrainer`` has no public hook for custom advantages, but
its loss accepts advantages of shape ``(B, T)`` ("to support subclasses", ``_compute_loss``).
:class:`CreditlabGRPOTrainer` overrides two methods, narrowly:

* ``_calculate_rewards``: calls TRL's, and keeps the gathered ``rewards_per_func`` and the inputs;
* ``_generate_and_score_completions``: calls TRL's (with ``mask_truncated_completions`` applied
  after the turns are read, exactly as TRL applies it), then replaces ``output["advantages"]``
  with ``advantage_fn(batch)`` broadcast to the completion tokens (turn by turn: the
  ``rollout_func``'s ``turn_ids`` column, else each run of model tokens in
  ``completion_mask * tool_mask``; tool/environment tokens get 0).

Everything else (generation, tools, ``rollout_func``/``env_mask``, clipping, loss types, logging)
is TRL's. The two overridden methods are private in TRL, so the trainer checks the installed TRL
against :data:`TRL_VERSIONS_TESTED` (the range creditlab's ``llm`` extra pins) and refuses another
one with :class:`~creditlab.errors.DependencyVersionError`. docs/llm.md documents the
``rollout_func`` contract, scaling and logging.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import (
    CreditlabWarning,
    DataFormatError,
    DependencyVersionError,
    MissingColumnError,
    RangeError,
    ShapeError,
)
from ..shaping import gated_levels, group_length_penalty, overlong_penalty, par

__all__ = [
    "CreditlabGRPOTrainer",  # noqa: F822  (built on first access, see __getattr__)
    "GatedReward",
    "GiGPOAdvantage",
    "GroupLengthPenalty",
    "OverlongPenalty",
    "PARReward",
    "RolloutBatch",
    "TRL_VERSIONS_TESTED",
    "TurnRLOOAdvantage",
    "check_trl_version",
    "outcome_from_rewards",
    "scale_turn_advantages",
]

Source = Callable[..., Sequence[float | None]] | str


# ---------------------------------------------------------------------------------- reward functions


def _evaluate(source: Source, kwargs: dict[str, Any]) -> list[float | None]:
    """Run a reward function (TRL signature) or read a column; None stays None, NaN becomes None."""
    if isinstance(source, str):
        if source not in kwargs:
            raise KeyError(f"column {source!r} is not among the reward function's keyword arguments {sorted(kwargs)}")
        values = kwargs[source]
    else:
        values = source(**kwargs)
    out: list[float | None] = []
    for v in values:
        if v is None:
            out.append(None)
        else:
            f = float(v)
            out.append(None if math.isnan(f) else f)
    return out


def _n(kwargs: dict[str, Any]) -> int:
    for key in ("completions", "completion_ids", "prompts"):
        if key in kwargs and kwargs[key] is not None:
            return len(kwargs[key])
    raise KeyError("the reward function needs 'completions', 'completion_ids' or 'prompts' (TRL passes all three)")


def _as_list(values: Any, present: Any = None) -> list[float | None]:
    arr = np.asarray(values, dtype=np.float64)
    keep = np.ones(arr.shape, bool) if present is None else np.asarray(present, bool)
    return [float(v) if p else None for v, p in zip(arr.tolist(), keep.tolist())]


def _name(source: Source) -> str:
    if isinstance(source, str):
        return source
    return getattr(source, "__name__", type(source).__name__)


class PARReward:
    """Preference As Reward (Fu et al. 2025): ``mean_m sigmoid(k * (r - r_ref_m))`` in (0, 1).

    Args:
        reward: the raw reward -- a TRL reward function or a column name.
        reference_column: column with the scores of M reference responses to the same prompt
            (a list of M floats per sample, or one float), sampled once from the reference policy.
        k: sigmoid slope (paper: 1).
        name: ``__name__`` (default ``par_<reward name>``).

    Returns per sample a float in (0, 1), or None where the reward or every reference is missing.
    """

    def __init__(
        self, reward: Source, *, reference_column: str = "reference_rewards", k: float = 1.0, name: str | None = None
    ):
        self.reward = reward
        self.reference_column = reference_column
        self.k = float(k)
        self.__name__ = name or f"par_{_name(reward)}"

    def __call__(self, **kwargs: Any) -> list[float | None]:
        raw = _evaluate(self.reward, kwargs)
        refs = kwargs.get(self.reference_column)
        if refs is None:
            raise KeyError(f"PARReward needs the reference scores in column {self.reference_column!r}")
        rows = [list(r) if isinstance(r, (list, tuple, np.ndarray)) else [r] for r in refs]
        width = max((len(r) for r in rows), default=1)
        ref = [
            [(None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)) for v in r]
            + [None] * (width - len(r))
            for r in rows
        ]
        out = par(raw, ref, k=self.k)
        return _as_list(out.rewards, out.present)


class OverlongPenalty:
    """DAPO soft overlong penalty from the completion's token count: 0, a ramp to -1, then -1.

    Args:
        max_length: the generation budget (``max_completion_length``).
        cache_length: width of the soft window before ``max_length``.
        name: ``__name__`` (default ``overlong_penalty``).
    """

    def __init__(self, max_length: int, cache_length: int, *, name: str = "overlong_penalty"):
        self.max_length = int(max_length)
        self.cache_length = int(cache_length)
        self.__name__ = name

    def __call__(self, *, completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        lengths = [len(c) for c in completion_ids]
        out = overlong_penalty(
            np.asarray(lengths, dtype=np.float64), max_length=self.max_length, cache_length=self.cache_length
        )
        return _as_list(out.rewards)


class GroupLengthPenalty:
    """Length penalty relative to the completions of the same prompt (Kimi k1.5).

    Groups are the completions whose prompts are equal (TRL repeats each prompt
    ``num_generations`` times), so a group split across processes is handled per process.

    Args:
        correctness: source of correctness (> 0 = correct); None = all correct.
        coef: scale; the reward lies in ``[-coef/2, coef/2]``.
        reference: "group" or "correct" (lengths judged against the group's correct answers).
        name: ``__name__`` (default ``group_length_penalty``).
    """

    def __init__(
        self,
        *,
        correctness: Source | None = None,
        coef: float = 1.0,
        reference: str = "group",
        name: str = "group_length_penalty",
    ):
        self.correctness = correctness
        self.coef = float(coef)
        self.reference = reference
        self.__name__ = name

    def __call__(self, **kwargs: Any) -> list[float | None]:
        lengths = [len(c) for c in kwargs["completion_ids"]]
        keys = [repr(p) for p in kwargs["prompts"]]
        _, groups = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
        correct = None
        if self.correctness is not None:
            c = _evaluate(self.correctness, kwargs)
            correct = [None if v is None else float(v > 0) for v in c]
        out = group_length_penalty(
            np.asarray(lengths, float), groups.reshape(-1), correct=correct, coef=self.coef, reference=self.reference
        )
        return _as_list(out.rewards)


class GatedReward:
    """Gated components: ``r = sum_k w_k s_k prod_{j<k} 1[s_j >= gate_j]``.

    Level 0 has the highest priority (e.g. "the answer parses"); later levels count only when every
    earlier level passed its gate. A missing (None) level closes every later gate; a sample whose
    levels are all missing returns None.

    Args:
        levels: K sources, by priority.
        gates: K - 1 thresholds.
        weights: K weights (default 1).
        name: ``__name__`` (default ``gated_<first level>``).
    """

    def __init__(
        self,
        levels: Sequence[Source],
        gates: Sequence[float],
        *,
        weights: Sequence[float] | None = None,
        name: str | None = None,
    ):
        if len(levels) < 1 or len(gates) != len(levels) - 1:
            raise ValueError(
                f"GatedReward needs K >= 1 levels and K - 1 gates; got {len(levels)} levels and {len(gates)} gates"
            )
        self.levels = list(levels)
        self.gates = [float(g) for g in gates]
        self.weights = None if weights is None else [float(w) for w in weights]
        self.__name__ = name or f"gated_{_name(levels[0])}"

    def __call__(self, **kwargs: Any) -> list[float | None]:
        cols = [_evaluate(src, kwargs) for src in self.levels]
        n = _n(kwargs)
        rows = [[col[i] for col in cols] for i in range(n)]
        out = gated_levels(rows, gates=self.gates, weights=self.weights)
        any_present = [any(v is not None for v in row) for row in rows]
        return _as_list(out.rewards, any_present)


# ---------------------------------------------------------------------------------- advantages

SCALES = ("trl", "none", "group", "batch")


@dataclass
class RolloutBatch:
    """What an advantage function sees: the whole generation batch, gathered over processes.

    Attributes:
        rewards: float[N, K] -- TRL's ``rewards_per_func`` (NaN where a function returned None).
        reward_names: the K reward function names.
        reward_weights: float[K] -- ``GRPOConfig.reward_weights`` (1 each by default).
        group_ids: int64[N] -- TRL's groups: consecutive blocks of ``num_generations``.
        turn_mask: bool[N, T] -- valid turns. Turns are the ``turn_ids`` column when the
            ``rollout_func`` returns one, else each run of model tokens (``env_mask == 1``) in the
            completion; a completion without model tokens counts as one empty turn. A completion
            that ``mask_truncated_completions`` masks out keeps its turns here (it still counts in
            its group's baselines) and trains on none of its tokens.
        num_turns: int64[N].
        columns: per-sample extra fields (dataset columns and ``rollout_func`` extras), one list
            of N values per name.
        prompts, completions: the N prompts and decoded completions.
        scale_rewards: ``GRPOConfig.scale_rewards`` ("group", "batch" or "none"), for advantage
            functions that follow TRL's choice (``TurnRLOOAdvantage(scale="trl")``).
        truncated: bool[N] -- completions masked out by ``mask_truncated_completions`` (all False
            when it is off).
    """

    rewards: torch.Tensor
    reward_names: list[str]
    reward_weights: torch.Tensor
    group_ids: torch.Tensor
    turn_mask: torch.Tensor
    num_turns: torch.Tensor
    columns: dict[str, list[Any]] = field(default_factory=dict)
    prompts: list[Any] = field(default_factory=list)
    completions: list[Any] = field(default_factory=list)
    scale_rewards: str = "group"
    truncated: torch.Tensor | None = None


def outcome_from_rewards(batch: RolloutBatch) -> tuple[np.ndarray, np.ndarray]:
    """TRL's scalar reward per sample: the weighted sum of the present components (``nansum``).

    Returns ``(outcome float[N], present bool[N])``; a sample whose every component is None is
    not present.
    """
    r = batch.rewards.detach().cpu().double().numpy()
    w = batch.reward_weights.detach().cpu().double().numpy()
    present = ~np.isnan(r).all(axis=1)
    return np.nansum(r * w[None, :], axis=1), present


def _turn_rewards(batch: RolloutBatch, column: str | None) -> np.ndarray:
    n, t = batch.turn_mask.shape
    out = np.zeros((n, t))
    if column is None:
        return out
    if column not in batch.columns:
        raise MissingColumnError(f"per-turn reward column {column!r} not found; have {sorted(batch.columns)}")
    mask = batch.turn_mask.cpu().numpy()
    for i, row in enumerate(batch.columns[column]):
        vals = [0.0 if v is None else float(v) for v in (row or [])]
        k = int(mask[i].sum())
        if len(vals) > k:
            raise ShapeError(
                f"sample {i} has {len(vals)} per-turn rewards in {column!r} but {k} turns of model tokens "
                "(turns are runs of env_mask == 1 unless the rollout returns a 'turn_ids' column)"
            )
        out[i, : len(vals)] = vals
    return out


def scale_turn_advantages(
    advantages: np.ndarray, valid: np.ndarray, group_ids: np.ndarray, scale: str, *, eps: float = 1e-4
) -> tuple[np.ndarray, dict[str, float]]:
    """Divide per-turn advantages by their spread, as GRPO divides by the reward std.

    Args:
        advantages: float[N, T] -- per-turn advantages (0 off ``valid``).
        valid: bool[N, T] -- turns that count (valid turns of scored samples).
        group_ids: int[N].
        scale: "none" (unchanged), "group" (each group's advantages divided by the unbiased std of
            that group's valid turn advantages) or "batch" (by the std over the whole batch).
        eps: added to the std (TRL: 1e-4).

    For one turn per sample and an outcome reward, RLOO's advantage is ``G/(G-1)`` times the
    group-centred reward, so ``"group"`` gives exactly TRL's GRPO advantage
    ``(r - mean) / (std + eps)`` up to where ``eps`` enters. A group whose advantages are all 0
    stays 0.

    Example (one group of two one-turn samples, RLOO advantages +1 and -1; std = sqrt(2)):
        >>> a, _ = scale_turn_advantages(np.array([[1.0], [-1.0]]), np.ones((2, 1), bool), np.array([0, 0]), "group", eps=0.0)
        >>> a.round(4).ravel().tolist()
        [0.7071, -0.7071]
    """
    from .._arrays import as_group_index
    from ..segments import group_stats

    if scale not in ("none", "group", "batch"):
        raise RangeError(f"scale must be 'none', 'group' or 'batch'; got {scale!r}")
    if scale == "none":
        return advantages, {}
    adv = np.asarray(advantages, dtype=np.float64)
    valid = np.asarray(valid, bool)
    if scale == "group":
        groups = np.repeat(np.asarray(group_ids).reshape(-1, 1), adv.shape[1], axis=1)
    else:
        groups = np.zeros(adv.shape, np.int64)
    index = as_group_index(
        torch.from_numpy(np.ascontiguousarray(groups.reshape(-1))), "group_ids", adv.size, device=torch.device("cpu")
    )
    stats = group_stats(torch.as_tensor(adv.reshape(-1)), torch.as_tensor(valid.reshape(-1)), index, unbiased=True)
    std = stats.std.numpy()[index.index.numpy()].reshape(adv.shape)
    out = np.where(valid, adv / (std + eps), 0.0)
    used = stats.std.numpy()[stats.count.numpy() > 0]
    return out, {"advantages/scale_std_mean": float(used.mean()) if used.size else 0.0}


class TurnRLOOAdvantage:
    """Advantage function for :class:`CreditlabGRPOTrainer`: :func:`creditlab.llm.turn_rloo`.

    Per-turn rewards come from ``turn_reward_column`` (a list per sample, e.g. returned by a
    ``rollout_func``); TRL's weighted reward (:func:`outcome_from_rewards`) is added on each
    completion's last turn. Samples whose every reward is None get advantage 0.

    Args:
        turn_reward_column: column of per-turn rewards (None: TRL's reward only).
        gamma: discount between turns.
        baseline: "turn" or "episode" (see :func:`creditlab.llm.turn_rloo`).
        scale: "trl" (default: follow ``GRPOConfig.scale_rewards``), "none", "group" or "batch"
            (see :func:`scale_turn_advantages`). TRL's own ``scale_rewards`` acts only on the
            advantages TRL computes and the trainer then replaces; this is the scaling that trains.
        eps: added to the std when scaling (TRL's 1e-4).
    """

    def __init__(
        self,
        *,
        turn_reward_column: str | None = None,
        gamma: float = 1.0,
        baseline: str = "turn",
        scale: str = "trl",
        eps: float = 1e-4,
    ):
        if scale not in SCALES:
            raise RangeError(f"TurnRLOOAdvantage scale must be one of {SCALES}; got {scale!r}")
        self.turn_reward_column = turn_reward_column
        self.gamma = float(gamma)
        self.baseline = baseline
        self.scale = scale
        self.eps = float(eps)
        self.__name__ = "turn_rloo"

    def __call__(self, batch: RolloutBatch):
        from ..llm import turn_rloo

        outcome, present = outcome_from_rewards(batch)
        r = _turn_rewards(batch, self.turn_reward_column)
        mask = batch.turn_mask.cpu().numpy()
        groups = batch.group_ids.cpu().numpy()
        out = turn_rloo(
            r, groups, mask=mask, gamma=self.gamma, outcomes=np.where(present, outcome, 0.0), baseline=self.baseline
        )
        adv = np.where(present[:, None], out.advantages, 0.0)
        scale = batch.scale_rewards if self.scale == "trl" else self.scale
        adv, extra = scale_turn_advantages(adv, mask & present[:, None], groups, scale, eps=self.eps)
        return out._replace(advantages=adv, metrics={**out.metrics, **extra})


class GiGPOAdvantage:
    """Advantage function for :class:`CreditlabGRPOTrainer`: :func:`creditlab.llm.gigpo`.

    Anchors come from ``anchor_column`` (one hashable key per turn and sample); per-turn rewards
    from ``turn_reward_column`` (None: TRL's reward on the last turn only). The episode reward is
    TRL's weighted reward (None where every reward function returned None). GiGPO normalizes by
    its own ``mode`` ("mean_std_norm" divides both terms by their group std, "mean_norm" only
    centres them); TRL's ``scale_rewards`` does not change it.
    """

    def __init__(
        self,
        *,
        anchor_column: str = "anchors",
        turn_reward_column: str | None = None,
        gamma: float = 0.95,
        step_weight: float = 1.0,
        mode: str = "mean_std_norm",
        similarity: float | None = None,
    ):
        self.anchor_column = anchor_column
        self.turn_reward_column = turn_reward_column
        self.kw = dict(gamma=float(gamma), step_weight=float(step_weight), mode=mode, similarity=similarity)
        self.__name__ = "gigpo"

    def __call__(self, batch: RolloutBatch):
        from ..llm import gigpo

        outcome, present = outcome_from_rewards(batch)
        mask = batch.turn_mask.cpu().numpy()
        r = _turn_rewards(batch, self.turn_reward_column)
        if self.turn_reward_column is None:
            r[np.arange(len(outcome)), mask.sum(1) - 1] = np.where(present, outcome, 0.0)
        if self.anchor_column not in batch.columns:
            raise MissingColumnError(f"anchor column {self.anchor_column!r} not found; have {sorted(batch.columns)}")
        anchors = [list(a) for a in batch.columns[self.anchor_column]]
        return gigpo(
            [float(o) if p else None for o, p in zip(outcome, present)],
            r,
            anchors,
            batch.group_ids.cpu().numpy(),
            mask=mask,
            **self.kw,
        )


# ---------------------------------------------------------------------------------- the trainer

TRL_VERSIONS_TESTED = ">=1.16.0,<1.17"
"""TRL releases :class:`CreditlabGRPOTrainer` is tested with (it overrides two private methods);
the same range pins ``trl`` in creditlab's ``llm`` extra."""


def check_trl_version(version: str | None = None, *, allow_untested: bool = False) -> str:
    """Check that the installed TRL is in :data:`TRL_VERSIONS_TESTED` and has the two methods
    :class:`CreditlabGRPOTrainer` overrides.

    Raises:
        DependencyVersionError: an untested TRL (unless ``allow_untested``, which warns instead),
            or a TRL whose ``GRPOTrainer`` lacks ``_calculate_rewards`` /
            ``_generate_and_score_completions`` (always).
    """
    import inspect

    import trl
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    version = version or trl.__version__
    from trl import GRPOTrainer

    expected = {
        "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
        "_generate_and_score_completions": ["self", "inputs"],
    }
    for name, params in expected.items():
        fn = getattr(GRPOTrainer, name, None)
        if fn is None or list(inspect.signature(fn).parameters) != params:
            raise DependencyVersionError(
                f"trl {version}: GRPOTrainer.{name} is missing or its signature changed (expected {tuple(params)}); "
                f"CreditlabGRPOTrainer needs trl{TRL_VERSIONS_TESTED}: pip install 'trl{TRL_VERSIONS_TESTED}'"
            )
    if Version(version) not in SpecifierSet(TRL_VERSIONS_TESTED):
        message = (
            f"CreditlabGRPOTrainer overrides two private methods of trl.GRPOTrainer and is tested with "
            f"trl{TRL_VERSIONS_TESTED}; trl {version} is installed. Install a tested version "
            f"(pip install 'trl{TRL_VERSIONS_TESTED}') or pass allow_untested_trl=True to try it anyway."
        )
        if not allow_untested:
            raise DependencyVersionError(message)
        warnings.warn(message, CreditlabWarning, stacklevel=3)
    return version


def _explicit_turn_ids(
    rows: Sequence[Any], structure: torch.Tensor, lengths: Sequence[int], column: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn ids from a ``rollout_func``'s per-token column: ``int64[B, L]`` (-1 off the model
    tokens) and turns per row. Each row has one id per completion token; on the model tokens
    (``structure``) the ids must number the turns 0, 1, 2, ... in order (each id used, never
    decreasing); the ids of environment tokens are ignored."""
    b, width = structure.shape
    out = torch.full((b, width), -1, dtype=torch.int64)
    turns = torch.zeros(b, dtype=torch.int64)
    on_all = structure.cpu()
    for i, row in enumerate(rows):
        if row is None or isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
            raise DataFormatError(
                f"sample {i}: {column!r} must be a list of turn indices, one per completion token; got {row!r}"
            )
        ids = torch.as_tensor([-1 if v is None else int(v) for v in row], dtype=torch.int64)
        if ids.numel() != lengths[i]:
            raise ShapeError(
                f"sample {i}: {column!r} has {ids.numel()} entries; expected one per completion token ({lengths[i]})"
            )
        on = on_all[i, : lengths[i]]
        model_ids = ids[on]
        if model_ids.numel():
            steps = torch.diff(model_ids)
            if int(model_ids[0]) != 0 or bool(((steps != 0) & (steps != 1)).any()):
                raise DataFormatError(
                    f"sample {i}: {column!r} on the model tokens (env_mask == 1) must number the turns 0, 1, 2, ... in "
                    f"order; got {model_ids.unique_consecutive().tolist()}"
                )
            turns[i] = int(model_ids[-1]) + 1
        out[i, : lengths[i]] = torch.where(on, ids, torch.full_like(ids, -1))
    return out.to(structure.device), turns.to(structure.device)


def _build_trainer_class():
    from trl import GRPOTrainer

    class CreditlabGRPOTrainer(GRPOTrainer):
        """``trl.GRPOTrainer`` whose advantages come from a creditlab advantage function.

        Args:
            advantage_fn: ``f(RolloutBatch) -> float[N] | float[N, T] | AdvantageOutput``: one
                advantage per sample (as TRL) or per turn (broadcast to the turn's model tokens).
            advantage_columns: per-sample fields to hand to ``advantage_fn`` in
                ``RolloutBatch.columns`` (default: every non-prompt field).
            turn_ids_column: a ``rollout_func`` column with one turn index per completion token
                (ids on environment tokens are ignored); without it, each run of model tokens
                (``env_mask == 1``) is a turn, so two model turns with no environment token
                between them are one turn.
            allow_untested_trl: warn instead of failing on a TRL outside
                :data:`TRL_VERSIONS_TESTED`.
            *args, **kwargs: ``trl.GRPOTrainer``'s.

        After each generation step ``self.creditlab_last`` holds the batch, the per-turn and the
        per-token advantages (for inspection and tests); metrics go to TRL's logs under
        ``creditlab/...``; TRL's completion table (``log_completions``) shows the advantages
        trained on: ``advantage`` is each sample's mean over its trained tokens, and per-turn
        advantages add a ``turn_advantages`` column.
        """

        def __init__(
            self,
            *args: Any,
            advantage_fn: Callable[[RolloutBatch], Any],
            advantage_columns: Sequence[str] | None = None,
            turn_ids_column: str | None = "turn_ids",
            allow_untested_trl: bool = False,
            **kwargs: Any,
        ):
            check_trl_version(allow_untested=allow_untested_trl)
            super().__init__(*args, **kwargs)
            self.advantage_fn = advantage_fn
            self.advantage_columns = None if advantage_columns is None else list(advantage_columns)
            self.turn_ids_column = turn_ids_column
            self._creditlab_stash: tuple | None = None
            self.creditlab_last: dict[str, Any] = {}

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._creditlab_stash = (inputs, prompts, completions, completion_ids_list, rewards_per_func)
            return rewards_per_func

        def _generate_and_score_completions(self, inputs):
            # TRL's mask_truncated_completions zeroes a truncated sample's masks before anything
            # else sees them, which erases its turns. Let TRL run without it, read the turns from
            # the real masks, then apply exactly TRL's masking to the output.
            mask_truncated = self.mask_truncated_completions
            self.mask_truncated_completions = False
            try:
                output = super()._generate_and_score_completions(inputs)
            finally:
                self.mask_truncated_completions = mask_truncated
            if self._creditlab_stash is None:  # pragma: no cover - TRL changed its call order
                raise RuntimeError(
                    f"CreditlabGRPOTrainer: rewards were not computed; tested with trl{TRL_VERSIONS_TESTED}"
                )
            stash, self._creditlab_stash = self._creditlab_stash, None
            output["advantages"] = self._creditlab_advantages(output, *stash, mask_truncated=mask_truncated)
            return output

        def _creditlab_advantages(
            self, output, local_inputs, prompts, completions, completion_ids_list, rewards_per_func, *, mask_truncated
        ):
            from accelerate.utils import gather_object

            from ..advantage.tokens import broadcast_to_tokens
            from ..llm.tokens import turn_ids_from_response_mask

            device = self.accelerator.device
            mode = "train" if self.model.training else "eval"
            num_generations = self.num_generations if mode == "train" else self.num_generations_eval
            tool_mask = output.get("tool_mask")
            structure = output["completion_mask"].bool()
            if tool_mask is not None:
                structure = structure & tool_mask.bool()
            column = self.turn_ids_column
            if column is not None and local_inputs and column in local_inputs[0]:
                lengths = [len(ids) for ids in completion_ids_list]
                turn_ids, local_turns = _explicit_turn_ids(
                    [x.get(column) for x in local_inputs], structure, lengths, column
                )
            else:
                turn_ids, local_turns = turn_ids_from_response_mask(structure)
            local_turns = local_turns.clamp(min=1)
            truncated = torch.zeros(len(completion_ids_list), dtype=torch.bool, device=device)
            if mask_truncated:  # TRL's masking, on the output
                eos_and_pad = [*self.eos_token_ids, self._tokenizer.pad_token_id]
                truncated = torch.tensor(
                    [len(ids) > 0 and ids[-1] not in eos_and_pad for ids in completion_ids_list], device=device
                )
                keep = (~truncated).unsqueeze(1).int()
                output["completion_mask"] = output["completion_mask"] * keep
                loss_mask = output["completion_mask"]
                if tool_mask is not None:
                    output["tool_mask"] = tool_mask * keep
                    loss_mask = loss_mask * output["tool_mask"]
                output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
            model_mask = structure & ~truncated[:, None]
            num_turns = self.accelerator.gather(local_turns.to(device))
            n = num_turns.shape[0]
            t = int(num_turns.max())
            keys = self.advantage_columns
            if keys is None:
                keys = [
                    k
                    for k in (local_inputs[0] if local_inputs else {})
                    if k not in ("prompt", "completion", "completion_ids")
                ]
            columns = {k: gather_object([x.get(k) for x in local_inputs]) for k in keys}
            batch = RolloutBatch(
                rewards=rewards_per_func,
                reward_names=list(self.reward_func_names),
                reward_weights=self.reward_weights.detach().clone(),
                group_ids=torch.arange(n, device=device) // num_generations,
                turn_mask=torch.arange(t, device=device)[None, :] < num_turns[:, None],
                num_turns=num_turns,
                columns=columns,
                prompts=gather_object(list(prompts)),
                completions=gather_object(list(completions)),
                scale_rewards=str(self.scale_rewards),
                truncated=self.accelerator.gather(truncated),
            )
            result = self.advantage_fn(batch)
            metrics = getattr(result, "metrics", None) or {}
            adv = getattr(result, "advantages", result)
            adv = torch.as_tensor(
                np.asarray(adv) if not isinstance(adv, torch.Tensor) else adv, dtype=torch.float32, device=device
            )
            if adv.ndim not in (1, 2) or adv.shape[0] != n:
                raise ShapeError(
                    f"advantage_fn returned shape {tuple(adv.shape)}; expected ({n},) or ({n}, turns): one row per sample"
                )
            adv = torch.nan_to_num(adv, nan=0.0)
            start = self.accelerator.process_index * len(prompts)
            local = adv[start : start + len(prompts)]
            if local.ndim == 1:
                tokens = local
                per_turn = local[:, None]
                logged = local
            else:
                if local.shape[1] < int(local_turns.max()):
                    raise ShapeError(f"advantage_fn returned {local.shape[1]} turns; the batch has up to {t}")
                per_turn = local
                tokens = broadcast_to_tokens(local, turn_ids, model_mask).to(torch.float32)
                count = model_mask.sum(1)
                logged = torch.where(
                    count > 0,
                    (tokens * model_mask).sum(1) / count.clamp(min=1),
                    torch.zeros_like(count, dtype=tokens.dtype),
                )
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(float(value)):
                    self._metrics[mode][f"creditlab/{key}"].append(float(value))
            on = tokens[model_mask] if tokens.ndim == 2 else tokens
            self._metrics[mode]["creditlab/advantage_mean"].append(float(on.mean()) if on.numel() else 0.0)
            self._metrics[mode]["creditlab/turns_mean"].append(float(num_turns.float().mean()))
            self._log_trained_advantages(logged, per_turn if local.ndim == 2 else None, local_turns)
            self.creditlab_last = {
                "batch": batch,
                "turn_advantages": per_turn,
                "token_advantages": tokens,
                "turn_ids": turn_ids,
                "model_mask": model_mask,
            }
            return tokens

        def _log_trained_advantages(self, logged, per_turn, local_turns):
            """Replace the advantages TRL just queued for its completion table with the trained ones."""
            from accelerate.utils import gather_object

            values = self.accelerator.gather(logged.detach().float()).tolist()
            queue = self._logs["advantages"]
            k = min(len(values), len(queue))
            for j in range(k):
                queue[len(queue) - k + j] = values[len(values) - k + j]
            if per_turn is not None:
                rows = [per_turn[i, : int(local_turns[i])].tolist() for i in range(per_turn.shape[0])]
                self._logs["extra"]["turn_advantages"].extend(gather_object(rows))

    CreditlabGRPOTrainer.__module__ = __name__
    return CreditlabGRPOTrainer


_TRAINER = None


def __getattr__(name: str):
    # Build the GRPOTrainer subclass on first use, so the reward functions import without TRL.
    global _TRAINER
    if name == "CreditlabGRPOTrainer":
        if _TRAINER is None:
            _TRAINER = _build_trainer_class()
        return _TRAINER
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
