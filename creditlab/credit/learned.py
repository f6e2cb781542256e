"""The base of the learned credit assigners: RD, RRD, LaRe, RUDDER and SPA.

:class:`LearnedAssigner` owns everything these methods have in common:

* the configuration (a frozen :class:`LearnedConfig` subclass per method; keywords or a config
  object, unknown keywords a named error; see :class:`~creditlab.credit.base.AssignerConfig`);
* the random state: ``rng`` (NumPy, draws episodes and steps from the store) and ``torch_rng``
  (a ``torch.Generator`` for models initialized from one); ``build_model`` runs with torch's
  global RNG seeded from ``seed`` and restored afterwards, so building never disturbs the caller;
* the episode store (:class:`~creditlab.credit.store.EpisodeStore`, for configs that are a
  :class:`ReplayConfig`) and which episodes may enter it (complete ones; see
  :mod:`creditlab.credit.base`);
* the input normalizer (:class:`~creditlab.credit._nn.RunningNorm`, updated with every stored
  batch);
* the model's lifecycle (built on the first batch, when the input size is known) and its Adam
  optimizer (``lr``, ``weight_decay``);
* the fit loop (:meth:`LearnedAssigner.fit`: admit the batch's complete episodes, then
  ``num_updates`` gradient steps, each on a batch drawn from the store; :meth:`train_steps` is
  the gradient-step loop itself) and its metrics;
* ``assign``'s bookkeeping (timing, dtype and array kind of the output);
* checkpoints: :meth:`state_dict` / :meth:`load_state_dict` (config, model, optimizer,
  normalizer, store, update count, both random states), which :func:`~creditlab.credit.save_assigner`
  and :func:`~creditlab.credit.load_assigner` write and read.

A method defines only what is its own:

============================  ==================================================================
``Config``                    its config dataclass (fields and defaults)
``build_model(in_dim)``       the model (``init_model()`` to adjust it after the optimizer exists)
``model_inputs(episodes)``    per-step model inputs ``x[N, F]`` of the valid steps (stored once)
``sample()``                  a training batch drawn from ``self.store`` with ``self.rng``
``loss(batch)``               the training loss (a :class:`Loss`)
``credit(episodes, metrics)`` the credit rule: ``(rewards[B, T], present[B, T])``
============================  ==================================================================

and, where it keeps more state, ``extra_state()`` / ``load_extra_state(state)``.

**Which episodes train the model.** The complete ones (see :mod:`creditlab.credit.base`): every
episode with a known return, including -- by default -- episodes cut by a time limit. A
truncated episode's target is the observed return of its observed steps (exact with the
creditlab wrappers, which pay the accumulated sum at the truncating step); no value bootstrap
enters the target: the continuation value after the time limit stays with the agent's critic
(SB3 adds ``gamma * V(s_T)`` at a time-limit truncation and the SB3 integration keeps it).

**An untrained model is loud.** A reward model that has taken no gradient step assigns the output
of a randomly initialized network. So:

* ``trained`` (False until the first gradient step) and ``num_updates`` say it; a benchmark can
  fail a run whose assigner ends with ``trained`` False;
* ``assign``'s metrics always hold ``credit/untrained`` (1.0 or 0.0) and ``credit/total_updates``;
  ``fit``'s hold ``credit/updates``, ``credit/total_updates``, ``store/episodes`` and the
  ``store/skipped_no_outcome`` / ``store/skipped_truncated`` / ``store/skipped_too_long`` counts
  of the episodes it left out;
* an :class:`UntrainedAssignerWarning` is issued, once per assigner, when it is *starved*: it
  was offered episodes, kept none (all truncated with ``include_truncated=False``, without an
  outcome, or longer than the store) and has never trained. Assigning before the first
  gradient step is not warned about by itself: integrations do it legitimately (the first
  rollouts of long episodes complete none; SAC scores episodes before fitting them), so check
  ``trained`` at the end of a run.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from .._arrays import Backend
from ..episodes import Episodes
from ..errors import CreditlabWarning, RangeError, ShapeError
from ..outputs import RewardOutput
from ._nn import RunningNorm, seeded
from .base import (
    AssignerConfig,
    ConfiguredAssigner,
    complete_episodes,
    derive_next_observations,
    encode_actions,
    episode_arrays,
    require_inputs,
    rng_state,
    set_rng_state,
)
from .store import EpisodeStore

__all__ = [
    "LearnedConfig",
    "ReplayConfig",
    "LearnedAssigner",
    "Loss",
    "StepViews",
    "STEP_NEEDS",
    "UntrainedAssignerWarning",
]

STEP_NEEDS = ("observations", "actions", "outcomes|rewards")
"""The Episodes fields a learned assigner over (s, a[, s']) reads (registry ``needs``)."""


class UntrainedAssignerWarning(CreditlabWarning):
    """A learned assigner's reward model never trained: its fit is starved (every episode it was
    offered was left out) or it assigns credit before any gradient step."""


_SKIP_KEYS = ("store/skipped_no_outcome", "store/skipped_truncated", "store/skipped_too_long")


@dataclass(frozen=True, kw_only=True)
class LearnedConfig(AssignerConfig):
    """Parameters of every learned assigner."""

    lr: float = 3e-4
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay (L2 on the model's parameters)."""
    seed: int | None = 0
    """Seeds the model's initialization and every random draw (None: fresh randomness)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("lr", self.lr > 0, "> 0")
        self._check("weight_decay", self.weight_decay >= 0, ">= 0")


@dataclass(frozen=True, kw_only=True)
class ReplayConfig(LearnedConfig):
    """Parameters of the learned assigners that train from an episode store (RD, RRD, LaRe, RUDDER)."""

    batch_episodes: int = 4
    """Stored episodes drawn per gradient step."""
    updates_per_fit: int = 32
    """Gradient steps per :meth:`~LearnedAssigner.fit` call unless ``num_updates`` is given."""
    capacity_steps: int = 300_000
    """Size of the episode store in steps (oldest episodes evicted first)."""
    num_actions: int | None = None
    """Number of discrete actions (one-hot encoded); None: inferred from the first batch."""
    sample_by_length: bool = True
    """Draw stored episodes with probability proportional to their length (RRD's buffer picks a
    random step, then its episode); False: uniformly."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("batch_episodes", self.batch_episodes >= 1, ">= 1")
        self._check("updates_per_fit", self.updates_per_fit >= 0, ">= 0")
        self._check("capacity_steps", self.capacity_steps >= 1, ">= 1")
        self._check("num_actions", self.num_actions is None or self.num_actions >= 1, ">= 1 or None")


class Loss(NamedTuple):
    """A training loss and statistics summed over a fit's gradient steps (see :meth:`LearnedAssigner.fit_extras`)."""

    value: torch.Tensor
    stats: Mapping[str, float] | None = None


class StepViews(NamedTuple):
    """Flat ``[B*T, ...]`` views of a batch's (s, a, s') and the flat indices of its valid steps."""

    obs: np.ndarray  # [B*T, obs]
    actions: np.ndarray  # [B*T] ints or [B*T, act] floats
    next_obs: np.ndarray | None  # [B*T, obs]
    flat_index: np.ndarray  # int64[N] -- valid steps, row-major
    mask: np.ndarray  # bool[B, T]
    num_actions: int | None
    metrics: dict[str, float]


class LearnedAssigner(ConfiguredAssigner):
    """Base class of the learned credit assigners (see the module docstring).

    Attributes:
        config: the frozen config.
        model / optimizer: None until the first batch fixes the input size.
        store: the :class:`EpisodeStore` (None for methods without one, e.g. SPA).
        norm: the input normalizer.
        rng / torch_rng: the random states (NumPy generator, torch generator).
        num_updates: gradient steps taken so far (``trained``: at least one).
        skipped: episodes left out of training so far, by reason (``no_outcome``, ``truncated``,
            ``too_long``).
    """

    Config: ClassVar[type[LearnedConfig]] = LearnedConfig
    model_fields: ClassVar[tuple[str, ...]] = ()
    """Config fields that fix the model's architecture (a checkpoint must agree on them)."""

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        cfg = self.config
        self.rng = np.random.default_rng(cfg.seed)
        self.torch_rng = torch.Generator()
        if cfg.seed is None:
            self.torch_rng.seed()
        else:
            self.torch_rng.manual_seed(int(cfg.seed))
        self.store = EpisodeStore(cfg.capacity_steps) if isinstance(cfg, ReplayConfig) else None
        self.norm = self.make_norm()
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.num_updates = 0
        self.skipped = {key.removeprefix("store/skipped_"): 0 for key in _SKIP_KEYS}
        self._fit_calls = 0
        self._offered = 0
        self._warned = False
        self._in_dim: int | None = None
        self._dims: dict[str, Any] | None = None

    @property
    def trained(self) -> bool:
        """True once the reward model has taken a gradient step."""
        return self.num_updates > 0

    # ---------------------------------------------------------------- what a method defines

    def make_norm(self) -> Any:
        """The input normalizer (``update`` / ``normalize`` / ``state_dict`` / ``load_state_dict``)."""
        return RunningNorm()

    def build_model(self, in_dim: int) -> torch.nn.Module:
        raise NotImplementedError

    def init_model(self) -> None:
        """Adjust a freshly built model (called after the optimizer exists)."""

    def model_inputs(self, episodes: Episodes) -> tuple[np.ndarray, dict[str, float]]:
        """``(x[N, F], metrics)``: model inputs of the valid steps of ``episodes``, row-major."""
        raise NotImplementedError

    def sample(self) -> Any:
        """A training batch drawn from the store with ``self.rng``."""
        raise NotImplementedError

    def loss(self, batch: Any) -> Loss:
        raise NotImplementedError

    def credit(self, episodes: Episodes, metrics: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """``(rewards float64[B, T] (0 on padding), present bool[B, T])``; may add to ``metrics``."""
        raise NotImplementedError

    def store_targets(self, episodes: Episodes) -> tuple[np.ndarray, np.ndarray]:
        """``(lengths int64[E], returns float64[E])`` of the stored episodes that the steps of the
        complete batch ``episodes`` (row-major, as :meth:`model_inputs` returns them) form: one per
        row here; the multi-agent assigners store one per team (its agents' steps, agent after agent)."""
        sa = episode_arrays(episodes)
        return sa.lengths, sa.returns

    def after_admit(self) -> None:
        """Called after new episodes entered the store."""

    def fit_extras(self, stats: Mapping[str, float]) -> dict[str, float]:
        """Extra fit metrics; ``stats`` holds the :class:`Loss` stats summed over this fit's steps
        (empty when no step was taken)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        return None

    # ---------------------------------------------------------------- model lifecycle

    def _build(self, in_dim: int) -> None:
        """Build the model for inputs of ``in_dim`` features and its optimizer."""
        cfg = self.config
        with seeded(cfg.seed):
            self.model = self.build_model(int(in_dim))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._in_dim = int(in_dim)
        self.init_model()

    @property
    def built_model(self) -> torch.nn.Module:
        """``model``, which exists once :meth:`_build` ran (first batch, or a loaded checkpoint)."""
        assert self.model is not None, f"{type(self).__name__}: the model is built on the first batch"
        return self.model

    @property
    def episode_store(self) -> EpisodeStore:
        """``store``, which every method whose config is a :class:`ReplayConfig` has."""
        assert self.store is not None, (
            f"{type(self).__name__} keeps no episode store (its config is not a ReplayConfig)"
        )
        return self.store

    # ---------------------------------------------------------------- step inputs

    def step_views(self, episodes: Episodes, *, next_observations: bool) -> StepViews:
        """Flat views of (s, a[, s']) of ``episodes``; the observation and action sizes are checked
        against the ones the model was built for (the first batch's)."""
        who = type(self).__name__
        require_inputs(episodes, who)
        e = episodes.numpy() if episodes.is_torch else episodes
        mask = np.asarray(e.mask, dtype=bool)
        b, t = mask.shape
        obs = np.asarray(e.observations).reshape(b, t, -1)
        acts = np.asarray(e.actions)
        metrics: dict[str, float] = {}
        if acts.dtype.kind in "iub" and acts.ndim == 2:
            n_act = self.config.num_actions
            if n_act is None and self._dims is not None:
                n_act = self._dims["num_actions"]
            if n_act is None:
                n_act = int(acts[mask].max()) + 1 if mask.any() else 1
            act_dim = n_act
            acts_flat = acts.reshape(b * t)
        else:
            n_act = None
            acts_flat = acts.reshape(b * t, -1)
            act_dim = acts_flat.shape[1]
        nobs: np.ndarray | None = None
        if next_observations:
            if e.next_observations is not None:
                nobs = np.asarray(e.next_observations).reshape(b, t, -1)
            else:
                nobs = derive_next_observations(obs, mask.sum(1))
                metrics["credit/derived_next_observations"] = 1.0
            nobs = nobs.reshape(b * t, -1)
        dims = {"obs_dim": obs.shape[2], "action_dim": act_dim, "num_actions": n_act}
        if self._dims is None:
            self._dims = dims
        else:
            if dims["obs_dim"] != self._dims["obs_dim"]:
                raise ShapeError(
                    f"observations have {dims['obs_dim']} values per step but this {who} was built for "
                    f"{self._dims['obs_dim']} (the size seen on its first fit/assign); use one assigner per environment"
                )
            if dims["action_dim"] != self._dims["action_dim"]:
                raise ShapeError(
                    f"actions have {dims['action_dim']} values per step (one-hot for discrete actions) but this "
                    f"{who} was built for {self._dims['action_dim']}; pass num_actions= for discrete actions"
                )
        return StepViews(
            obs.reshape(b * t, -1), acts_flat, nobs, np.flatnonzero(mask.reshape(-1)), mask, n_act, metrics
        )

    @staticmethod
    def step_arrays(v: StepViews, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """float32 (s, a one-hot or continuous, s') of the flat steps ``idx``."""
        o = v.obs[idx].astype(np.float32, copy=False)
        a = encode_actions(v.actions[idx], v.num_actions)
        n = None if v.next_obs is None else v.next_obs[idx].astype(np.float32, copy=False)
        return o, a, n

    # ---------------------------------------------------------------- the fit loop

    def complete_rows(self, episodes: Episodes) -> tuple[np.ndarray, dict[str, float]]:
        """``keep[B]``: which rows may serve as decomposition targets, and the ``store/skipped_*`` counts."""
        return complete_episodes(episode_arrays(episodes), include_truncated=self.config.include_truncated)

    def complete(self, episodes: Episodes) -> tuple[Episodes | None, dict[str, float]]:
        """The batch's complete episodes (None if there is none) and the ``store/skipped_*`` counts."""
        keep, metrics = self.complete_rows(episodes)
        self._offered += int(keep.shape[0])
        self._count_skipped(metrics)
        if not keep.any():
            return None, metrics
        return (episodes if keep.all() else episodes.select(np.nonzero(keep)[0])), metrics

    def admit(self, episodes: Episodes) -> dict[str, float]:
        """Store the batch's complete episodes (inputs computed once) and update the normalizer."""
        sub, metrics = self.complete(episodes)
        if sub is not None:
            x, m = self.model_inputs(sub)
            metrics.update(m)
            lengths, returns = self.store_targets(sub)
            self.norm.update(x)
            added = self.episode_store.add(x, lengths=lengths, returns=returns)
            self._count_skipped({"store/skipped_too_long": added["store/skipped_too_long"]})
            metrics.update(added)
            self.after_admit()
        return metrics

    def _count_skipped(self, metrics: Mapping[str, float]) -> None:
        for key in _SKIP_KEYS:
            self.skipped[key.removeprefix("store/skipped_")] += int(metrics.get(key, 0))

    def _stored_episodes(self) -> int:
        return 0 if self.store is None else self.store.num_episodes

    # ---------------------------------------------------------------- untrained / starved

    def _skip_reasons(self) -> str:
        s = self.skipped
        parts = []
        if s["truncated"]:
            parts.append(
                f"{s['truncated']} truncated (include_truncated=False; see creditlab.credit.base on time limits)"
            )
        if s["no_outcome"]:
            parts.append(f"{s['no_outcome']} without an outcome")
        if s["too_long"]:
            parts.append(f"{s['too_long']} longer than the store's capacity_steps={self.config.capacity_steps}")
        return ", ".join(parts) or "none"

    def _check_starved(self, depth: int = 0) -> None:
        """Warn (once) if every episode offered so far was left out and the model never trained.
        ``depth``: calls between the public method and this one (for the warning's stack level)."""
        if self._warned or self._stored_episodes() or self.trained or not sum(self.skipped.values()):
            return
        self._warned = True
        warnings.warn(
            f"{type(self).__name__}: fit was offered {self._offered} episodes and kept none ({self._skip_reasons()}); "
            f"the reward model cannot train, and assign returns the output of an untrained network",
            UntrainedAssignerWarning,
            stacklevel=3 + depth,
        )

    def _check_untrained(self, metrics: dict[str, float]) -> None:
        """On assign: the ``credit/untrained`` and ``credit/total_updates`` metrics; warns (once)
        only if the assigner is starved. Assigning before the first gradient step is otherwise
        legitimate (the first rollouts of long episodes; SAC scoring episodes before fitting them),
        so it is reported by the metric and by ``trained``, not by a warning."""
        metrics["credit/untrained"] = float(not self.trained)
        metrics["credit/total_updates"] = float(self.num_updates)
        if not self.trained:
            self._check_starved(depth=1)

    def train_steps(self, batches: Iterable[Any]) -> tuple[list[float], dict[str, float]]:
        """One Adam step on :meth:`loss` of each batch; returns the losses and the summed stats."""
        assert self.model is not None and self.optimizer is not None
        losses: list[float] = []
        stats: dict[str, float] = {}
        for batch in batches:
            out = self.loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            out.value.backward()
            self.optimizer.step()
            self.num_updates += 1
            losses.append(float(out.value.detach()))
            for k, v in (out.stats or {}).items():
                stats[k] = stats.get(k, 0.0) + float(v)
        return losses, stats

    def fit(self, episodes: Episodes | None = None, *, num_updates: int | None = None) -> dict[str, float]:
        """Store the batch's complete episodes, then take ``num_updates`` gradient steps (default
        ``updates_per_fit``) on batches drawn from the store.

        Returns metrics: ``credit/loss`` (mean over the steps), ``credit/updates``,
        ``credit/total_updates``, ``credit/fit_seconds``, ``store/episodes``, ``store/steps`` and
        the ``store/skipped_*`` counts of this batch's episodes left out (no outcome, truncated
        with ``include_truncated=False``, longer than the store). Warns
        (:class:`UntrainedAssignerWarning`, once) when every episode offered so far was left out.
        """
        t0 = time.perf_counter()
        self._fit_calls += 1
        metrics: dict[str, float] = dict.fromkeys(_SKIP_KEYS, 0.0)
        if episodes is not None:
            metrics.update(self.admit(episodes))
        n = self.config.updates_per_fit if num_updates is None else int(num_updates)
        losses: list[float] = []
        stats: dict[str, float] = {}
        store = self.episode_store
        if n > 0 and store.num_episodes > 0:
            if self.model is None:
                self._build(store.feature_dim or 0)
            losses, stats = self.train_steps(self.sample() for _ in range(n))
        metrics.update(
            {
                "credit/loss": float(np.mean(losses)) if losses else float("nan"),
                "credit/updates": float(len(losses)),
                "credit/total_updates": float(self.num_updates),
                **self.fit_extras(stats),
                "store/episodes": float(store.num_episodes),
                "store/steps": float(store.num_steps),
                "credit/fit_seconds": time.perf_counter() - t0,
            }
        )
        self._check_starved()
        return metrics

    # ---------------------------------------------------------------- assign

    def assign(self, episodes: Episodes) -> RewardOutput:
        """Per-step rewards for every valid step (see the method's :meth:`credit` rule).

        Returns:
            RewardOutput(rewards[B, T] (0 on padding; the float dtype of ``episodes.rewards``,
            float32 for integer rewards, as NumPy or torch like them), metrics, present[B, T]).
            The metrics hold ``credit/untrained`` (1.0 while no gradient step was taken; see the
            module docstring for when it also warns) and ``credit/total_updates``.
        """
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        rewards, present = self.credit(episodes, metrics)
        self._check_untrained(metrics)
        metrics["credit/assign_seconds"] = time.perf_counter() - t0
        return _reward_output(episodes, rewards, present, metrics)

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: config, model, optimizer, normalizer, store,
        update count and both random states (copies: later training does not change them)."""
        return {
            "config": self.saved_config(),
            "dims": self._dims,
            "in_dim": self._in_dim,
            "model": None if self.model is None else copy.deepcopy(self.model.state_dict()),
            "optimizer": None if self.optimizer is None else copy.deepcopy(self.optimizer.state_dict()),
            "norm": copy.deepcopy(self.norm.state_dict()),
            "store": None if self.store is None else self.store.state_dict(),
            "num_updates": self.num_updates,
            "counters": {"skipped": dict(self.skipped), "fit_calls": self._fit_calls, "offered": self._offered},
            "rng": rng_state(self.rng),
            "torch_rng": self.torch_rng.get_state(),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (of an assigner with the same architecture fields)."""
        missing = sorted(
            {
                "config",
                "dims",
                "in_dim",
                "model",
                "optimizer",
                "norm",
                "store",
                "num_updates",
                "counters",
                "rng",
                "torch_rng",
                "extra",
            }
            - set(state)
        )
        if missing:
            raise RangeError(
                f"state is missing keys {missing}; expected the dict from {type(self).__name__}.state_dict()"
            )
        self._adopt_model_fields(state["config"])
        self._dims = None if state["dims"] is None else dict(state["dims"])
        self.norm.load_state_dict(state["norm"])
        if self.store is not None and state["store"] is not None:
            self.store.load_state_dict(state["store"])
        self.num_updates = int(state["num_updates"])
        counters = state["counters"]
        self.skipped = {k: int(v) for k, v in counters["skipped"].items()}
        self._fit_calls, self._offered = int(counters["fit_calls"]), int(counters["offered"])
        self.model = None
        self.optimizer = None
        self._in_dim = None
        if state["model"] is not None:
            self._build(int(state["in_dim"]))
            assert self.model is not None and self.optimizer is not None
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        # the random states last: building the model may draw from torch_rng
        set_rng_state(self.rng, state["rng"])
        self.torch_rng.set_state(state["torch_rng"])
        self.load_extra_state(state["extra"])

    def _adopt_model_fields(self, saved: Mapping[str, Any]) -> None:
        """Check the saved architecture fields against ours; a field we left None takes the saved value."""
        adopt, differ = {}, []
        for name in self.model_fields:
            mine, theirs = getattr(self.config, name), saved.get(name)
            if mine is None:
                adopt[name] = theirs
            elif theirs is not None and _norm_value(mine) != _norm_value(theirs):
                differ.append(f"{name}={theirs!r} (this one: {mine!r})")
        if differ:
            raise ShapeError(
                f"state was saved from a {type(self).__name__} with {', '.join(differ)}; build it with the same "
                f"architecture or use load_assigner(path)"
            )
        if adopt:
            self.config = dataclasses.replace(self.config, **adopt)

    def __repr__(self) -> str:
        store = (
            "" if self.store is None else f"store={self.store.num_episodes} episodes / {self.store.num_steps} steps, "
        )
        return f"{type(self).__name__}({store}updates={self.num_updates})"


def _norm_value(v: Any) -> Any:
    return tuple(v) if isinstance(v, (list, tuple)) else v


def _reward_output(
    episodes: Episodes, rewards: np.ndarray, present: np.ndarray, metrics: dict[str, float]
) -> RewardOutput:
    """Rewards in the float dtype and array kind of ``episodes.rewards`` (float32 for integers)."""
    dtype: type[np.floating] | np.dtype
    if episodes.is_torch:
        dtype = _TORCH_FLOATS.get(episodes.rewards.dtype, np.float32)
    else:
        given = np.asarray(episodes.rewards).dtype
        dtype = given if given.kind == "f" else np.float32
    backend = Backend.of(episodes.rewards)
    return RewardOutput(
        backend.out(torch.from_numpy(np.ascontiguousarray(rewards, dtype=dtype))),
        metrics,
        backend.out(torch.from_numpy(np.array(present, dtype=bool))),
    )


_TORCH_FLOATS: dict[Any, type[np.floating]] = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
}
