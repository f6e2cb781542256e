"""Train one run: a stable-baselines3 agent on a task's delayed (or dense) reward, evaluated on the true reward.

``train_run(spec)`` is what a worker executes for one (task, method, seed):

* ``dense``: the agent trains on the original per-step reward (the oracle anchor);
* ``episodic``: on the task's delayed reward as is (``task.reward``: the episode's sum paid at its
  last step, or every K steps for ``delayed:K``; the baseline anchor);
* any other name: a registered credit assigner turns the delayed reward into per-step credit through
  the stable-baselines3 integration; it never sees the hidden reward.

Training and evaluation are the SB3 runner's (:func:`creditlab.integrations.sb3.train`; this
module maps a :class:`~creditlab.bench.suites.RunSpec` to its :func:`run_config`). Evaluation is
always on the true (hidden) reward: ``eval_episodes`` deterministic episodes every ``eval_every``
steps on a separate environment (observation statistics frozen from training, the same start
states at every checkpoint). Training-episode true returns come from a ``Monitor`` placed *under*
the delay wrapper. What is benchmark-specific stays here: bsuite tasks train one fresh agent per
setting and are scored with bsuite's analysis on the per-episode training log (online regret), as
bsuite defines it; the episodic anchor's credit quality (the delayed reward it trains on against
the hidden one); curve metrics.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ..errors import RangeError
from .suites import ANCHORS, RunSpec, TaskSpec
from .tasks import make_env, run_envs, task_settings

__all__ = ["RunOutput", "train_run", "curve_metrics", "method_config", "run_config", "UntrainedModelError"]


class RunOutput(NamedTuple):
    """What a run produces.

    Attributes:
        curve: ``{"x": [...], "mean": [...], "std": [...], "x_name": str}`` -- evaluation return
            (true reward) against environment steps (per setting for bsuite tasks).
        metrics: flat dict of floats: ``final_return``, ``auc``, ``time/train_seconds``,
            ``final_length`` (mean length of the final evaluation episodes), ``train_length_last``,
            ``credit/...``, ``bsuite/score``...
    """

    curve: dict[str, Any]
    metrics: dict[str, float]


# ------------------------------------------------------------------------------ metrics


def curve_metrics(x, y, *, solve_threshold: float | None = None) -> dict[str, float]:
    """Final return, normalized area under the curve and steps-to-solve of one learning curve.

    ``auc`` is the trapezoid area divided by the x range: the average return over training, in
    return units, comparable across budgets.

    Example:
        >>> m = curve_metrics([0, 10, 20], [0.0, 1.0, 1.0], solve_threshold=1.0)
        >>> m["final_return"], m["auc"], m["steps_to_solve"]
        (1.0, 0.75, 10.0)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size == 0 or x.shape != y.shape:
        raise RangeError(f"curve needs equal non-empty x and y; got {x.shape} and {y.shape}")
    keep = np.isfinite(y)  # bsuite curves have no value before the first finished episode
    if not keep.any():
        return {"final_return": float("nan"), "auc": float("nan")}
    x, y = x[keep], y[keep]
    span = x[-1] - x[0]
    auc = float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 / span) if span > 0 else float(y[-1])
    out = {"final_return": float(y[-1]), "auc": auc}
    if solve_threshold is not None:
        hit = np.nonzero(y >= solve_threshold)[0]
        out["steps_to_solve"] = float(x[hit[0]]) if hit.size else float("nan")
    return out


# ------------------------------------------------------------------------------ the run


_QUALITY_STEPS = 20_000  # steps of the episodic anchor whose credit quality is measured
_INTEGRATION_PARAMS = ("update_ratio", "reward_scale", "unassigned")  # go to the SB3 integration, not the assigner


def _split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    integration = {k: v for k, v in params.items() if k in _INTEGRATION_PARAMS}
    assigner = {k: v for k, v in params.items() if k not in _INTEGRATION_PARAMS}
    return assigner, integration


class UntrainedModelError(RuntimeError):
    """A run whose learned reward model never took a gradient step: its result is not a result."""


def _assigner_params(spec: RunSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(assigner parameters, SB3-integration parameters) of the run: the suite's values, and the
    assigner's ``seed`` = the run seed unless the suite sets one (so seeds vary the reward model too)."""
    from ..registry import get_method

    params, integration = _split_params(spec.method_params)
    if "seed" in get_method(spec.registry_name).params and "seed" not in params:
        params["seed"] = spec.seed
    return params, integration


def _make_assigner(spec: RunSpec):
    """The run's assigner (registry defaults plus the suite's overrides) and what must be closed after the run.

    A ``features`` parameter naming a program folder or file (e.g. ``examples/programs/hopper_factors``)
    is loaded as a LaRe feature function that runs in the sandbox; relative paths are taken from the
    current folder, then from the creditlab checkout. ``lare`` without a feature source is an error
    (without one it would silently be RRD on raw inputs).
    """
    from ..registry import get_method

    method = get_method(spec.registry_name)
    if method.kind != "assigner" or method.factory is None:
        raise RangeError(
            f"benchmark method {spec.method!r} must be an anchor {ANCHORS} or a credit assigner; it is a {method.kind} method"
        )
    params, integration = _assigner_params(spec)
    closers: list[Any] = []
    if spec.registry_name == "lare" and params.get("features") is None:
        raise RangeError(
            f"method {spec.method!r} (lare) on task {spec.task.name!r} needs a feature source: set "
            "`features` (a program folder, an env id with hand-written factors, or 'module:function') "
            "in the suite's method parameters"
        )
    features = params.get("features")
    if isinstance(features, str) and _program_path(features) is not None:
        from ..programs.loaders import lare_features

        phi = lare_features(str(_program_path(features)))
        closers.append(phi)
        params["features"] = phi
    return method.factory(**params), integration, closers


def _program_path(spec: str):
    """A program folder / ``.py`` file named by ``spec`` (cwd first, then the creditlab checkout), or None."""
    from pathlib import Path

    if ":" in spec and not Path(spec).exists():
        return None  # "module:function"
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        p = base / spec
        if (p.is_dir() and (p / "program.py").exists()) or (p.suffix == ".py" and p.is_file()):
            return p
    return None


def method_config(spec: RunSpec) -> dict[str, Any]:
    """The effective parameters of the run's method: the assigner's registry defaults plus overrides."""
    if spec.method in ANCHORS:
        return {}
    from ..registry import get_method

    if _family(spec) == "exploration":
        bonus = dict(spec.method_params)
        callback = {k: bonus.pop(k) for k in list(bonus) if k in _BONUS_PARAMS}
        return {
            "bonus": {**dict(get_method(spec.registry_name).params), **bonus},
            "callback": callback,
            **({"method": spec.base_method} if spec.base_method else {}),
        }
    params, integration = _assigner_params(spec)
    out: dict[str, Any] = {
        "assigner": {**dict(get_method(spec.registry_name).params), **params},
        "integration": integration,
    }
    if spec.base_method:
        out["method"] = spec.base_method
    features = params.get("features")
    if isinstance(features, str) and _program_path(features) is not None:
        from ..programs.program import load_program

        out["program_sha256"] = load_program(str(_program_path(features))).sha256
    return out


def run_config(spec: RunSpec, setting: str | None = None, integration: Mapping[str, Any] | None = None):
    """The :class:`~creditlab.integrations.sb3.RunConfig` of one run (one bsuite setting).

    The ``dense`` anchor trains on the task's reward, every other method on the episodic reward;
    VecNormalize (observations and rewards) when the agent normalizes; evaluation every
    ``task.eval_every`` steps from step 0 (bsuite: once, at the end; its curve is the training log).
    """
    from ..integrations.sb3 import RunConfig

    task = spec.task
    hyper = dict(task.agent.hyperparams)
    gamma = hyper.pop("gamma")
    bsuite = task.family == "bsuite"
    return RunConfig(
        env_id=functools.partial(make_env, task, seed=spec.seed, setting=setting),
        algo=task.agent.algo,
        reward="dense" if spec.method == "dense" else task.reward,
        total_timesteps=task.steps,
        n_envs=task.agent.n_envs,
        seed=spec.seed,
        gamma=gamma,
        normalize_observations=bool(task.agent.normalize),
        normalize_rewards=task.agent.normalize is True,
        policy=task.agent.policy,
        algo_kwargs=hyper,
        eval_every=0 if bsuite else task.eval_every,
        eval_at_start=not bsuite,
        eval_episodes=task.eval_episodes,
        torch_threads=1,
        device="cpu",
        **dict(integration or {}),
    )


def _callbacks(spec: RunSpec, state: dict[str, Any]) -> list[Any]:
    """What the benchmark records beside the runner: bsuite regrets, the episodic anchor's reward pairs."""
    from stable_baselines3.common.callbacks import BaseCallback

    from ..integrations import TRUE_REWARD_KEY

    class BsuiteRegrets(BaseCallback):
        """Per-episode regret from bsuite's cumulative ``total_regret`` (in the order episodes finish)."""

        def _on_step(self) -> bool:
            for i, info in enumerate(self.locals["infos"]):
                if "episode" in info and "total_regret" in info:
                    prev = state["regret_seen"].get(i, 0.0)
                    state["regrets"].append(float(info["total_regret"]) - prev)
                    state["regret_seen"][i] = float(info["total_regret"])
                if "episode" in info and "total_bad_episodes" in info:  # deep_sea: did the agent leave the optimal path
                    prev = state["bad_seen"].get(i, 0.0)
                    state["bad"].append(float(info["total_bad_episodes"]) > prev)
                    state["bad_seen"][i] = float(info["total_bad_episodes"])
            return True

    class AnchorRewardPairs(BaseCallback):
        """(reward the learner received, hidden true reward) per step, cut into episodes, for the
        episodic anchor's credit quality (its first ``_QUALITY_STEPS`` steps)."""

        def _on_step(self) -> bool:
            if state["quality_left"] <= 0:
                return True
            infos = self.locals["infos"]
            env = self.model.get_env()
            seen = env.get_original_reward() if hasattr(env, "get_original_reward") else self.locals["rewards"]
            dones = self.locals["dones"]
            streams = state["quality_streams"]
            for i, info in enumerate(infos):
                if TRUE_REWARD_KEY not in info:
                    continue
                streams.setdefault(i, []).append((float(seen[i]), float(info[TRUE_REWARD_KEY])))
                state["quality_left"] -= 1
                if dones[i]:
                    state["quality_episodes"].append(streams.pop(i))
            return True

    out: list[Any] = []
    if spec.task.family == "bsuite":
        out.append(BsuiteRegrets())
    if spec.method == "episodic":
        out.append(AnchorRewardPairs())
    return out


def _train_setting(spec: RunSpec, setting: str | None, tracker: Any = None) -> dict[str, Any]:
    from ..integrations.sb3 import train

    state: dict[str, Any] = {
        "regrets": [],
        "regret_seen": {},
        "bad": [],
        "bad_seen": {},
        "quality_streams": {},
        "quality_episodes": [],
        "quality_left": _QUALITY_STEPS,
    }
    assigner, integration, closers, bonus_cb = None, {}, [], None
    if _family(spec) == "exploration":
        bonus_cb = _make_bonus_callback(spec)
    elif spec.method not in ANCHORS:
        assigner, integration, closers = _make_assigner(spec)
    callbacks = _callbacks(spec, state) + ([bonus_cb] if bonus_cb is not None else [])
    try:
        res = train(
            run_config(spec, setting, integration),
            assigner=assigner,
            callbacks=callbacks,
            envs=run_envs(spec.task),
            logger=tracker.logger(setting) if tracker is not None else None,
        )
    finally:
        for c in closers:
            c.close()
    if assigner is not None and getattr(assigner, "trained", True) is False:
        raise UntrainedModelError(
            f"the reward model of {spec.method!r} never trained on task {spec.task.name!r} "
            f"(updates 0; store skipped {dict(getattr(assigner, 'skipped', {}))}): this run is not a result"
        )
    state["curve"] = list(zip(res.eval_timesteps, res.eval_returns, res.eval_stds))
    state["final_eval"] = (res.final_eval_return, res.final_eval_std)
    state["final_lengths"] = list(res.evaluations[-1].lengths) if res.evaluations else []
    state["episodes"] = res.train_episodes
    state["steps"] = int(res.model.num_timesteps)
    state["train_seconds"] = res.metrics["time/train_seconds"]
    state["eval_seconds"] = res.metrics["time/eval_seconds"]
    state["credit_metrics"] = (
        {k: v for k, v in res.metrics.items() if k.startswith(("credit/", "quality/"))} if assigner is not None else {}
    )
    if assigner is not None and hasattr(assigner, "num_updates"):
        state["credit_metrics"]["credit/total_updates"] = float(assigner.num_updates)
    if bonus_cb is not None:
        state["credit_metrics"] = _bonus_metrics(bonus_cb)
    return state


_BONUS_PARAMS = ("beta", "normalize", "num_updates", "clip_reward")  # go to the SB3 bonus callback, not the bonus


def _family(spec: RunSpec) -> str:
    """The registry family of the run's method ("anchor" for the anchors)."""
    if spec.method in ANCHORS:
        return "anchor"
    from ..registry import get_method

    return get_method(spec.registry_name).family


def _make_bonus_callback(spec: RunSpec):
    """An exploration bonus (registry defaults plus the suite's overrides; its ``seed`` follows the run
    seed) added to the rollout by :class:`~creditlab.integrations.sb3.ExplorationBonusCallback`
    (``beta``, ``normalize``, ``num_updates``, ``clip_reward`` are the callback's parameters). With
    a task ``state_key`` the bonus counts the key the environment puts into ``info``."""
    from ..integrations.sb3.exploration import ExplorationBonusCallback
    from ..registry import get_method

    method = get_method(spec.registry_name)
    params = dict(spec.method_params)
    callback = {k: params.pop(k) for k in list(params) if k in _BONUS_PARAMS}
    if "seed" in method.params and "seed" not in params:
        params["seed"] = spec.seed
    return ExplorationBonusCallback(method.factory(**params), key="info" if spec.task.state_key else "auto", **callback)


def _bonus_metrics(cb) -> dict[str, float]:
    """Means over the run of the bonus callback's per-rollout metrics, plus the last values of the
    cumulative ones (unique states, time share)."""
    out: dict[str, float] = {}
    hist = cb.history
    if not hist:
        return out
    for key in (
        "exploration/bonus_mean",
        "exploration/intrinsic_mean",
        "exploration/episode_unique_states",
        "exploration/loss",
    ):
        vals = [float(h[key]) for h in hist if key in h and np.isfinite(h[key])]
        if vals:
            out[key] = float(np.mean(vals))
    for key in ("exploration/unique_states", "exploration/time_share", "exploration/seconds"):
        if key in hist[-1] and np.isfinite(hist[-1][key]):
            out[key] = float(hist[-1][key])
    return out


def _anchor_credit(method: str, episodes: list[list[tuple[float, float]]]) -> dict[str, float]:
    """Credit quality of the anchors: the reward the learner trained on vs the hidden reward."""
    if method == "dense":
        return {}
    if not episodes:
        return {}
    from ..credit.quality import credit_quality

    lengths = np.array([len(e) for e in episodes])
    seen = np.zeros((len(episodes), lengths.max()))
    true = np.zeros_like(seen)
    for b, ep in enumerate(episodes):
        arr = np.asarray(ep, dtype=np.float64)
        seen[b, : len(ep)] = arr[:, 0]
        true[b, : len(ep)] = arr[:, 1]
    mask = np.arange(seen.shape[1])[None, :] < lengths[:, None]
    q = credit_quality(seen, true, mask).metrics
    return {
        "credit/corr_hidden": q["quality/pearson"],
        "quality/pearson": q["quality/pearson"],
        "quality/spearman": q["quality/spearman"],
        "quality/decomposition_error": q["quality/decomposition_error"],
    }


def train_run(spec: RunSpec, *, tracker: Any = None) -> RunOutput:
    """Train and evaluate one run in this process (one torch thread). See the module docstring.

    ``tracker``: a :class:`~creditlab.bench.tracking.RunTracker` whose SB3 loggers record the
    training (``creditlab bench --track``); the caller finishes it.
    """
    import torch

    torch.set_num_threads(1)
    task = spec.task
    settings = task_settings(task)
    states = [_train_setting(spec, s, tracker) for s in settings]
    metrics: dict[str, float] = {
        "time/train_seconds": float(sum(s["train_seconds"] for s in states)),
        "time/eval_seconds": float(sum(s["eval_seconds"] for s in states)),
        "steps": float(sum(s["steps"] for s in states)),
        "episodes": float(sum(len(s["episodes"]) for s in states)),
        "gamma": task.agent.gamma,
    }
    train_returns = np.concatenate([[e[1] for e in s["episodes"]] for s in states]) if states else np.zeros(0)
    if task.family == "bsuite":
        curve = _bsuite_curve(states, task.steps)
        metrics.update(curve_metrics(curve["x"], curve["mean"]))
        metrics["final_return"] = float(np.mean([s["final_eval"][0] for s in states]))
        metrics.update(_bsuite_metrics(task, settings, states))
    else:
        (state,) = states
        xs, means, stds = zip(*state["curve"])
        x_name = "environment steps"
        if task.family == "pettingzoo":  # budgets and curves count agent-steps
            from .multiagent import X_NAME as x_name
        curve = {"x": list(xs), "mean": list(means), "std": list(stds), "x_name": x_name}
        metrics.update(curve_metrics(xs, means, solve_threshold=task.solve_threshold))
        metrics["final_return_std"] = float(stds[-1])
    if train_returns.size:
        last = train_returns[-max(1, min(100, train_returns.size // 10 or 1)) :]
        metrics["train_return_last"] = float(np.mean(last))
    train_lengths = np.concatenate([[e[2] for e in s["episodes"]] for s in states]) if states else np.zeros(0)
    if train_lengths.size:  # episode lengths: a method that changes them (survival bonuses) shows here
        metrics["train_length_last"] = float(np.mean(train_lengths[-max(1, min(100, train_lengths.size // 10 or 1)) :]))
    final_lengths = [n for s in states for n in s["final_lengths"]]
    if final_lengths:
        metrics["final_length"] = float(np.mean(final_lengths))
    if task.family == "minigrid":
        metrics.update(_success_metrics(states))
    credit: dict[str, list[float]] = {}
    for s in states:
        m = s["credit_metrics"] or _anchor_credit(spec.method, s["quality_episodes"])
        for k, v in m.items():
            credit.setdefault(k, []).append(float(v))
    for k, v in credit.items():
        finite = [x for x in v if np.isfinite(x)]
        metrics[k] = float(np.mean(finite)) if finite else float("nan")
    return RunOutput(curve, metrics)


def _bsuite_curve(states, steps: int, bins: int = 10) -> dict[str, Any]:
    """Training true return against steps within a setting, averaged over settings, in ``bins`` bins."""
    edges = np.linspace(0, steps, bins + 1)
    per_setting = []
    for s in states:
        if not s["episodes"]:
            continue
        end = np.array([e[0] for e in s["episodes"]], dtype=np.float64)
        ret = np.array([e[1] for e in s["episodes"]], dtype=np.float64)
        idx = np.clip(np.searchsorted(edges, end, side="left") - 1, 0, bins - 1)
        sums = np.bincount(idx, weights=ret, minlength=bins)
        counts = np.bincount(idx, minlength=bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts
        # carry the last value into bins without a finished episode (long chains, few episodes)
        for b in range(bins):
            if counts[b] == 0:
                means[b] = means[b - 1] if b > 0 else np.nan
        per_setting.append(means)
    arr = np.array(per_setting)
    with warnings.catch_warnings():  # a bin without any finished episode in every setting stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(arr, axis=0)
        std = np.nanstd(arr, axis=0)
    return {
        "x": edges[1:].tolist(),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "x_name": "environment steps per setting",
    }


def _success_metrics(states) -> dict[str, float]:
    """Natively sparse tasks (MiniGrid pays > 0 only on success): the success rate of the last 10 %
    of training episodes and the steps until half of the last 100 training episodes succeed."""
    from .exploration_tasks import steps_to_success

    (state,) = states
    eps = state["episodes"]
    if not eps:
        return {}
    steps = np.array([e[0] for e in eps], dtype=np.float64)
    returns = np.array([e[1] for e in eps], dtype=np.float64)
    last = returns[int(returns.size * 0.9) :]
    return {
        "success_rate_last": float((last > 0).mean()) if last.size else float("nan"),
        "steps_to_success": float(steps_to_success(steps, returns)),
    }


def _bsuite_metrics(task: TaskSpec, settings, states) -> dict[str, float]:
    from .bsuite_tasks import bsuite_score, episode_log

    logs: dict[str, Mapping[str, Any]] = {}
    for setting, s in zip(settings, states):
        returns = [e[1] for e in s["episodes"]]
        regrets = s["regrets"] if len(s["regrets"]) == len(returns) else None
        logs[setting] = episode_log(returns, regrets)
    if task.env_id == "deep_sea":
        # bsuite 0.3.6's deep_sea analysis calls pandas.Series.append (gone in pandas 2): the same score
        # from creditlab.bench.exploration_tasks, checked against bsuite's function in the tests
        from .exploration_tasks import deep_sea_score, deep_sea_size

        out = {"bsuite/score": deep_sea_score({deep_sea_size(st): s["bad"] for st, s in zip(settings, states)})}
    else:
        out = {"bsuite/score": bsuite_score(task.env_id, logs)}
    out["bsuite/episodes_per_setting"] = float(np.mean([len(s["episodes"]) for s in states]))
    if all("total_regret" in log for log in logs.values()):
        out["bsuite/average_regret"] = float(
            np.mean([log["total_regret"][-1] / log["episode"][-1] for log in logs.values()])
        )
    return out
