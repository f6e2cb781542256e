"""Train one run: a stable-baselines3 agent on a task's delayed (or dense) reward, evaluated on the true reward.

``train_run(spec)`` is what a worker executes for one (task, method, seed):

* ``dense``: the agent trains on the original per-step reward (the oracle anchor);
* ``episodic``: on the delayed reward, the episode's sum paid at its last step (the baseline anchor);
* any other name: a registered credit assigner turns the delayed reward into per-step credit through
  the stable-baselines3 integration; it never sees the hidden reward.

Evaluation is always on the true (hidden) reward: ``eval_episodes`` deterministic episodes every
``eval_every`` steps on a separate environment (observation statistics frozen from training).
Training-episode true returns come from a ``Monitor`` placed *under* the delay wrapper.
bsuite tasks train one fresh agent per setting and are scored with bsuite's analysis on the
per-episode training log (online regret), as bsuite defines it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..errors import RangeError
from .suites import ANCHORS, RunSpec, TaskSpec
from .tasks import make_env, task_settings

__all__ = ["RunOutput", "train_run", "curve_metrics", "method_config"]


class RunOutput(NamedTuple):
    """What a run produces.

    Attributes:
        curve: ``{"x": [...], "mean": [...], "std": [...], "x_name": str}`` -- evaluation return
            (true reward) against environment steps (per setting for bsuite tasks).
        metrics: flat dict of floats: ``final_return``, ``auc``, ``time/train_seconds``,
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


# ------------------------------------------------------------------------------ environments


def _delay_wrapper(method: str) -> Callable[[Any], Any] | None:
    """The wrapper that hides the per-step reward (None for the dense anchor)."""
    if method == "dense":
        return None
    from ..integrations.gymnasium import EpisodicReward

    return EpisodicReward


def _vec_env(task: TaskSpec, method: str, seed: int, setting: str | None, n_envs: int, *, monitor: bool):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    def env_fn():
        return make_env(task, seed=seed, setting=setting)

    wrapper = _delay_wrapper(method) if monitor else None
    # make_vec_env puts Monitor directly on the original env and the delay wrapper outside it, so the
    # Monitor's episode returns are true returns whatever the agent trains on.
    return make_vec_env(env_fn, n_envs=n_envs, seed=seed, wrapper_class=wrapper, vec_env_cls=DummyVecEnv)


class _Evaluator:
    """Deterministic evaluation on the true reward with frozen observation normalization."""

    def __init__(self, task: TaskSpec, seed: int, setting: str | None):
        from stable_baselines3.common.vec_env import VecNormalize

        self.task = task
        self.seed = 10_000 + seed
        n = min(task.eval_episodes, 10)  # one episode per env: fewer batched forward passes
        self.env = _vec_env(task, "dense", self.seed, setting, n, monitor=False)
        if task.agent.normalize:
            self.env = VecNormalize(self.env, training=False, norm_obs=True, norm_reward=False)
        self.seconds = 0.0

    def __call__(self, model) -> tuple[float, float]:
        from stable_baselines3.common.evaluation import evaluate_policy
        from stable_baselines3.common.vec_env import VecNormalize

        t0 = time.perf_counter()
        train_env = model.get_env()
        if isinstance(self.env, VecNormalize) and isinstance(train_env, VecNormalize):
            self.env.obs_rms = train_env.obs_rms.copy()
        self.env.seed(self.seed)  # same start states at every checkpoint
        returns, _ = evaluate_policy(model, self.env, n_eval_episodes=self.task.eval_episodes, deterministic=True,
                                     return_episode_rewards=True, warn=False)
        self.seconds += time.perf_counter() - t0
        return float(np.mean(returns)), float(np.std(returns))


def _make_callbacks(task: TaskSpec, spec_method: str, evaluator: _Evaluator | None, state: dict[str, Any]):
    from stable_baselines3.common.callbacks import BaseCallback

    class Recorder(BaseCallback):
        """Evaluation checkpoints, true training-episode returns (and bsuite regrets), reward pairs
        (reward seen by the learner, hidden true reward) for the anchors' credit quality."""

        def __init__(self):
            super().__init__()
            self.next_eval = 0

        def _evaluate(self):
            mean, std = evaluator(self.model)
            state["curve"].append((int(self.num_timesteps), mean, std))

        def _on_rollout_start(self) -> None:
            # The policy only changes between rollouts (in ``train()``), so evaluating here scores the
            # policy trained on exactly ``num_timesteps`` steps (the initial policy at 0).
            if evaluator is not None and self.num_timesteps >= self.next_eval:
                self._evaluate()
                while self.next_eval <= self.num_timesteps:
                    self.next_eval += task.eval_every

        def _on_step(self) -> bool:
            infos = self.locals.get("infos", ())
            for i, info in enumerate(infos):
                ep = info.get("episode")
                if ep is not None:
                    state["episodes"].append((int(self.num_timesteps), float(ep["r"]), int(ep["l"])))
                    if "total_regret" in info:
                        prev = state["regret_seen"].get(i, 0.0)
                        state["regrets"].append(float(info["total_regret"]) - prev)
                        state["regret_seen"][i] = float(info["total_regret"])
            if spec_method == "episodic" and state["quality_left"] > 0:
                self._collect_quality(infos)
            return True

        def _collect_quality(self, infos) -> None:
            """(reward the learner received, hidden true reward) per step, cut into episodes."""
            from ..integrations import TRUE_REWARD_KEY

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

        def _on_training_end(self) -> None:
            if evaluator is not None and (not state["curve"] or state["curve"][-1][0] < self.num_timesteps):
                self._evaluate()

    return Recorder()


# ------------------------------------------------------------------------------ the run


_QUALITY_STEPS = 20_000  # steps of the episodic anchor whose credit quality is measured
_INTEGRATION_PARAMS = ("update_ratio", "reward_scale", "unassigned")  # go to the SB3 integration, not the assigner


class _Credit(NamedTuple):
    """A credit assigner attached to the agent, and how to read its metrics after training."""

    callbacks: list[Any]
    metrics: Callable[[], dict[str, float]]


def _split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    integration = {k: v for k, v in params.items() if k in _INTEGRATION_PARAMS}
    assigner = {k: v for k, v in params.items() if k not in _INTEGRATION_PARAMS}
    return assigner, integration


def _make_assigner(spec: RunSpec):
    from ..registry import get_method

    method = get_method(spec.method)
    if method.kind != "assigner" or method.factory is None:
        raise RangeError(f"benchmark method {spec.method!r} must be an anchor {ANCHORS} or a credit assigner; it is a {method.kind} method")
    params, integration = _split_params(spec.method_params)
    return method.factory(**params), integration


def method_config(spec: RunSpec) -> dict[str, Any]:
    """The effective parameters of the run's method: the assigner's registry defaults plus overrides."""
    if spec.method in ANCHORS:
        return {}
    from ..registry import get_method

    params, integration = _split_params(spec.method_params)
    return {"assigner": {**dict(get_method(spec.method).params), **params}, "integration": integration}


def _history_metrics(history: list[Mapping[str, float]], seconds: float) -> dict[str, float]:
    """Credit quality averaged over training (per-episode Pearson per rollout/fit), and callback time."""
    out: dict[str, float] = {"credit/seconds": float(seconds)}
    for key in ("quality/pearson", "quality/spearman", "quality/decomposition_error", "credit/frac_unassigned", "credit/loss"):
        vals = [float(h[key]) for h in history if key in h and np.isfinite(h[key])]
        if vals:
            out[key] = float(np.mean(vals))
            out[key + "_last"] = float(np.mean(vals[-max(1, len(vals) // 4):]))
    if "quality/pearson" in out:
        out["credit/corr_hidden"] = out["quality/pearson"]
    return out


def _build_model(spec: RunSpec, env) -> tuple[Any, _Credit | None]:
    """The SB3 model, with the run's credit assigner attached through creditlab.integrations.sb3."""
    from stable_baselines3 import PPO, SAC

    task = spec.task
    kwargs = dict(task.agent.hyperparams)
    credit = None
    if spec.method not in ANCHORS:
        from ..integrations.sb3 import CreditAssignmentCallback, CreditMetricsCallback, CreditReplayBuffer

        assigner, integration = _make_assigner(spec)
        if task.agent.algo == "ppo":
            cb = CreditAssignmentCallback(assigner, **integration)
            credit = _Credit([cb], lambda: _history_metrics(cb.history, cb.total_seconds))
        else:
            kwargs["replay_buffer_class"] = CreditReplayBuffer
            kwargs["replay_buffer_kwargs"] = {"assigner": assigner, **integration}
    algo = {"ppo": PPO, "sac": SAC}[task.agent.algo]
    model = algo(task.agent.policy, env, seed=spec.seed, verbose=0, device="cpu", **kwargs)
    if spec.method not in ANCHORS and task.agent.algo == "sac":
        buf = model.replay_buffer
        credit = _Credit([CreditMetricsCallback()], lambda: _history_metrics(getattr(buf, "history", []), buf.metrics.get("credit/seconds", 0.0)))
    return model, credit


def _train_setting(spec: RunSpec, setting: str | None) -> dict[str, Any]:
    from stable_baselines3.common.vec_env import VecNormalize

    task = spec.task
    state: dict[str, Any] = {"curve": [], "episodes": [], "regrets": [], "regret_seen": {}, "quality_streams": {}, "quality_episodes": [],
                             "quality_left": _QUALITY_STEPS}
    env = _vec_env(task, spec.method, spec.seed, setting, task.agent.n_envs, monitor=True)
    if task.agent.normalize:
        env = VecNormalize(env, norm_obs=True, norm_reward=True, gamma=task.agent.gamma)
    evaluator = _Evaluator(task, spec.seed, setting) if task.family != "bsuite" else None
    model, credit = _build_model(spec, env)
    callbacks = [_make_callbacks(task, spec.method, evaluator, state)] + (credit.callbacks if credit else [])
    t0 = time.perf_counter()
    model.learn(total_timesteps=task.steps, callback=callbacks, progress_bar=False)
    total = time.perf_counter() - t0
    eval_seconds = evaluator.seconds if evaluator is not None else 0.0
    if task.family == "bsuite":
        evaluator = _Evaluator(task, spec.seed, setting)
        state["final_eval"] = evaluator(model)
        eval_seconds += evaluator.seconds
    state["steps"] = int(model.num_timesteps)
    state["train_seconds"] = total - (evaluator.seconds if task.family != "bsuite" else 0.0)
    state["eval_seconds"] = eval_seconds
    state["credit_metrics"] = credit.metrics() if credit is not None else {}
    env.close()
    return state


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
    return {"credit/corr_hidden": q["quality/pearson"], "quality/pearson": q["quality/pearson"],
            "quality/spearman": q["quality/spearman"], "quality/decomposition_error": q["quality/decomposition_error"]}


def train_run(spec: RunSpec) -> RunOutput:
    """Train and evaluate one run in this process (one torch thread). See the module docstring."""
    import torch

    torch.set_num_threads(1)
    task = spec.task
    settings = task_settings(task)
    states = [_train_setting(spec, s) for s in settings]
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
        curve = {"x": list(xs), "mean": list(means), "std": list(stds), "x_name": "environment steps"}
        metrics.update(curve_metrics(xs, means, solve_threshold=task.solve_threshold))
        metrics["final_return_std"] = float(stds[-1])
    if train_returns.size:
        last = train_returns[-max(1, min(100, train_returns.size // 10 or 1)):]
        metrics["train_return_last"] = float(np.mean(last))
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
    return {"x": edges[1:].tolist(), "mean": mean.tolist(), "std": std.tolist(), "x_name": "environment steps per setting"}


def _bsuite_metrics(task: TaskSpec, settings, states) -> dict[str, float]:
    from .bsuite_tasks import bsuite_score, episode_log

    logs: dict[str, Mapping[str, Any]] = {}
    for setting, s in zip(settings, states):
        returns = [e[1] for e in s["episodes"]]
        regrets = s["regrets"] if len(s["regrets"]) == len(returns) else None
        logs[setting] = episode_log(returns, regrets)
    out = {"bsuite/score": bsuite_score(task.env_id, logs)}
    out["bsuite/episodes_per_setting"] = float(np.mean([len(s["episodes"]) for s in states]))
    if all("total_regret" in log for log in logs.values()):
        out["bsuite/average_regret"] = float(np.mean([log["total_regret"][-1] / log["episode"][-1] for log in logs.values()]))
    return out
