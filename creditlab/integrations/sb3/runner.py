"""The one SB3 training + evaluation path: :func:`train` with a :class:`RunConfig`.

``train(config)`` builds the training env (:func:`~creditlab.integrations.sb3.envs.make_env`:
the reward protocol, ``Monitor`` under the delay wrapper, optional VecNormalize), the evaluation
env (:class:`~creditlab.integrations.sb3.evaluation.Evaluator`), the algorithm (PPO or SAC) and
the credit assigner (the PPO callback or the SAC replay buffer), trains, evaluates on a schedule
and returns a :class:`RunResult`. ``creditlab bench``, the reward-program trainer
(:class:`creditlab.programs.training.PPOTrainAndScore`) and the evidence scripts all run it.

Callback order (PPO): evaluation (at rollout starts), the training-episode log, the credit
relabel, the user's ``callbacks`` (reward editors such as exploration bonuses edit the relabeled
rewards), and -- when anything edited the rewards -- one GAE recomputation
(:class:`~creditlab.integrations.sb3.callbacks.RecomputeAdvantages`).

Hooks for what plugs in later: ``callbacks`` (any SB3 callbacks; a reward editor declares
``edits_rollout_rewards = True``), ``vec_env_wrapper`` (a ``VecEnv -> VecEnv`` wrapper of the
training env, e.g. a sandboxed reward program), ``on_evaluation`` (called after each evaluation),
``tensorboard_log`` / ``verbose`` / ``progress_bar`` (SB3's logger and progress bar), ``logger`` (an SB3
logger of your own, e.g. :func:`~creditlab.integrations.sb3.tracking.make_logger` with TensorBoard
and a wandb run).

Logging: everything goes through SB3's logger, dumped after each rollout (PPO) or every
``log_interval`` episodes (SAC) at ``num_timesteps``: SB3's ``rollout/*`` (``rollout/ep_rew_mean``
is the *true* training return: the ``Monitor`` sits under the delay wrapper) and ``train/*``,
``eval/mean_reward`` / ``eval/mean_ep_length`` (the evaluations on the true reward), and the credit
integration's ``credit/*`` (``credit/loss`` of the reward model, updates, timings), ``store/*`` and
``quality/*`` (assigned vs hidden reward). ``tensorboard_log="runs/tb"`` gives TensorBoard curves
of all of them (``tensorboard --logdir runs/tb``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from ...credit.base import CreditAssigner
from ...errors import RangeError
from .callbacks import CreditAssignmentCallback, CreditMetricsCallback, RecomputeAdvantages, make_assigner
from .envs import EnvSource, make_env, reward_wrapper
from .evaluation import Evaluation, EvaluationCallback, Evaluator
from .replay import CreditReplayBuffer

__all__ = ["RunConfig", "RunResult", "SB3RunConfig", "SB3RunResult", "train", "history_metrics"]

_ALGOS = ("ppo", "sac")
# Constructor arguments the config sets itself; in ``algo_kwargs`` they would be ambiguous.
_OWN_KWARGS = ("policy", "env", "gamma", "seed", "device", "verbose", "tensorboard_log")


@dataclass
class RunConfig:
    """One SB3 training run: task, reward protocol, algorithm, credit assigner, budget, evaluation.

    Attributes:
        env_id: the task: a Gymnasium id (``"Hopper-v5"``), a ``"module:Class"`` /
            ``"module:factory"`` string, or a zero-argument callable returning a ``gymnasium.Env``.
        algo: ``"ppo"`` or ``"sac"``.
        reward: what the agent is paid: ``"episodic"`` (the sum at the last step), ``"delayed:K"``
            (released every K steps) or ``"dense"`` (the task's own reward, the oracle).
        assigner: registry name of a credit assigner, or None (train on the reward as paid).
            ``train(config, assigner=...)`` passes an assigner object instead.
        assigner_params: keyword arguments of the assigner's factory; ``seed`` defaults to ``seed``.
        update_ratio: reward-model gradient steps per env step (None: 1/32 for PPO, 1.0 for SAC).
        reward_scale: PPO: ``"running"`` / ``"none"`` / a float factor; SAC: a float (a string means 1.0).
        unassigned: PPO: reward of steps the assigner cannot credit yet, ``"mean"`` or ``"observed"``.
        total_timesteps: environment steps of training.
        n_envs: parallel training envs (``DummyVecEnv``).
        seed: seeds the training envs (env i: ``seed + i``), the algorithm and the assigner;
            evaluation uses ``seed + 10_000``.
        gamma: discount of the algorithm (and of VecNormalize's return statistics).
        normalize_observations: VecNormalize observations (evaluation uses the frozen statistics).
        normalize_rewards: VecNormalize rewards (no effect on credit runs: the credit callback and
            buffer read the raw rewards and replace them).
        policy: SB3 policy name.
        algo_kwargs: further SB3 constructor arguments (PPO default ``n_steps = 2048 // slots``,
            a 2,048-step rollout; slots = ``n_envs``, or ``n_envs x N`` agents for a PettingZoo team).
        eval_every: env steps between evaluations on the true reward (0: none during training).
        eval_episodes: deterministic evaluation episodes per evaluation.
        eval_at_start: also evaluate the initial policy (step 0), for learning curves and their area.
        eval_trajectories: keep each evaluation episode's trajectory (``Evaluation.episodes``).
        torch_threads: ``torch.set_num_threads`` during the run (restored afterwards).
        device: torch device of the algorithm.
        tensorboard_log: SB3 ``tensorboard_log`` folder (None: no TensorBoard output).
        verbose: SB3 verbosity (0: silent).
        progress_bar: SB3's progress bar (needs ``tqdm`` and ``rich``).
        env_kwargs: constructor keyword arguments of the environment.

    Example:
        >>> RunConfig("CartPole-v1", reward="delayed:0")
        Traceback (most recent call last):
        ...
        creditlab.errors.RangeError: reward must be 'dense', 'episodic' or 'delayed:K' with an integer K >= 1; got 'delayed:0'
    """

    env_id: EnvSource
    algo: str = "ppo"
    reward: str = "episodic"
    assigner: str | None = None
    assigner_params: dict[str, Any] = field(default_factory=dict)
    update_ratio: float | None = None
    reward_scale: str | float = "running"
    unassigned: str = "mean"
    total_timesteps: int = 100_000
    n_envs: int = 8
    seed: int = 0
    gamma: float = 0.99
    normalize_observations: bool = False
    normalize_rewards: bool = False
    policy: str = "MlpPolicy"
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_every: int = 0
    eval_episodes: int = 10
    eval_at_start: bool = True
    eval_trajectories: bool = False
    torch_threads: int = 1
    device: str = "cpu"
    tensorboard_log: str | None = None
    verbose: int = 0
    progress_bar: bool = False
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.algo not in _ALGOS:
            raise RangeError(f"RunConfig.algo must be one of {_ALGOS}; got {self.algo!r}")
        reward_wrapper(self.reward)  # raises for an unknown protocol
        for name in ("total_timesteps", "n_envs", "eval_episodes", "torch_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RangeError(f"RunConfig.{name} must be an int >= 1; got {value!r}")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise RangeError(f"RunConfig.eval_every must be an int >= 0 (0: only at the end); got {self.eval_every!r}")
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise RangeError(f"RunConfig.gamma must be in [0, 1]; got {self.gamma!r}")
        if self.update_ratio is not None and not float(self.update_ratio) >= 0:
            raise RangeError(f"RunConfig.update_ratio must be >= 0 or None; got {self.update_ratio!r}")
        if not (
            self.reward_scale in ("running", "none")
            or (isinstance(self.reward_scale, (int, float)) and not isinstance(self.reward_scale, bool))
        ):
            raise RangeError(f"RunConfig.reward_scale must be 'running', 'none' or a number; got {self.reward_scale!r}")
        if self.unassigned not in ("mean", "observed"):
            raise RangeError(f"RunConfig.unassigned must be 'mean' or 'observed'; got {self.unassigned!r}")
        clash = sorted(set(self.algo_kwargs) & set(_OWN_KWARGS))
        if clash:
            raise RangeError(f"RunConfig.algo_kwargs must not set {clash}: use the RunConfig fields of the same name")

    def to_dict(self) -> dict[str, Any]:
        """The config as a dict (a callable ``env_id`` is kept as is)."""
        return dataclasses.asdict(self)


@dataclass
class SB3RunConfig(RunConfig):
    """:class:`RunConfig` with the older spelling ``reward="delayed", delay=K`` (same as ``reward="delayed:K"``).

    Attributes:
        delay: release period for ``reward="delayed"``.
    """

    delay: int = 10

    def __post_init__(self) -> None:
        if self.reward == "delayed":
            self.reward = f"delayed:{self.delay}"
        super().__post_init__()


class RunResult(NamedTuple):
    """What :func:`train` measured.

    Attributes:
        eval_timesteps: env steps at each evaluation.
        eval_returns: mean true return of the deterministic policy at each evaluation.
        eval_stds: standard deviation over the evaluation's episodes.
        final_eval_return: mean true return of the last evaluation (at the end of training).
        final_eval_std: its standard deviation over episodes.
        train_return: mean true return of the last (up to 100) training episodes.
        credit: per-rollout (PPO) / per-fit (SAC) credit metrics (``callback.history``).
        metrics: summary (see :func:`train`).
        model: the trained SB3 model.
        assigner: the credit assigner (None for plain runs).
        train_episodes: ``(timesteps at its end, true return, length)`` of every training episode.
        evaluations: every :class:`~creditlab.integrations.sb3.evaluation.Evaluation` (with
            trajectories if ``config.eval_trajectories``).
    """

    eval_timesteps: list[int]
    eval_returns: list[float]
    eval_stds: list[float]
    final_eval_return: float
    final_eval_std: float
    train_return: float
    credit: list[dict[str, float]]
    metrics: dict[str, float]
    model: Any
    assigner: Any
    train_episodes: list[tuple[int, float, int]]
    evaluations: list[Evaluation]

    def record(self) -> dict[str, Any]:
        """The JSON-plain part (no model, assigner, credit history or trajectories), for result files."""
        return {
            "final_eval_return": self.final_eval_return,
            "final_eval_std": self.final_eval_std,
            "train_return": self.train_return,
            "eval_timesteps": list(self.eval_timesteps),
            "eval_returns": list(self.eval_returns),
            "eval_stds": list(self.eval_stds),
            "metrics": dict(self.metrics),
        }


SB3RunResult = RunResult

# Credit-history keys averaged into a run's metrics (mean over training and over its last quarter).
_HISTORY_KEYS = (
    "quality/pearson",
    "quality/spearman",
    "quality/pearson_pooled",
    "quality/decomposition_error",
    "credit/frac_unassigned",
    "credit/loss",
)


def history_metrics(history: Sequence[Mapping[str, float]], seconds: float) -> dict[str, float]:
    """Credit quality and reward-model signals averaged over training, as ``creditlab bench`` reports them.

    For each key of ``_HISTORY_KEYS`` present: the mean of its finite values over all entries
    (rollouts for PPO, fits for SAC) and ``<key>_last``, the mean over the last quarter;
    ``credit/corr_hidden`` = ``quality/pearson``; ``credit/updates`` = reward-model updates in
    all; ``credit/seconds`` = ``seconds``.

    Example:
        >>> m = history_metrics([{"quality/pearson": 0.2, "credit/updates": 4.0}, {"quality/pearson": float("nan")},
        ...                      {"quality/pearson": 0.4, "credit/updates": 4.0}, {"quality/pearson": 0.6}], 1.5)
        >>> round(m["quality/pearson"], 6), m["quality/pearson_last"], m["credit/updates"]   # (0.2+0.4+0.6)/3; last 3//4=0 -> 1 value
        (0.4, 0.6, 8.0)
    """
    out: dict[str, float] = {"credit/seconds": float(seconds)}
    for key in _HISTORY_KEYS:
        vals = [float(h[key]) for h in history if key in h and np.isfinite(h[key])]
        if vals:
            out[key] = float(np.mean(vals))
            out[key + "_last"] = float(np.mean(vals[-max(1, len(vals) // 4) :]))
    if "quality/pearson" in out:
        out["credit/corr_hidden"] = out["quality/pearson"]
    updates = [float(h["credit/updates"]) for h in history if "credit/updates" in h]
    if updates:
        out["credit/updates"] = float(np.sum(updates))
    return out


class _EpisodeLog(BaseCallback):
    """``(num_timesteps, true return, length)`` of every finished training episode (from the Monitor)."""

    def __init__(self) -> None:
        super().__init__(0)
        self.episodes: list[tuple[int, float, int]] = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            ep = info.get("episode")
            if ep is not None:
                self.episodes.append((int(self.num_timesteps), float(ep["r"]), int(ep["l"])))
        return True


def _config_assigner(config: RunConfig) -> CreditAssigner | None:
    if config.assigner is None:
        return None
    from ...registry import get_method

    params = dict(config.assigner_params)
    if "seed" in get_method(config.assigner).params and "seed" not in params:
        params["seed"] = config.seed
    return make_assigner(config.assigner, **params)


def _build_model(
    config: RunConfig, env: VecEnv, assigner: CreditAssigner | None
) -> tuple[Any, CreditAssignmentCallback | None, list[BaseCallback]]:
    """The SB3 model with the credit assigner attached: (model, PPO credit callback or None, credit callbacks)."""
    from stable_baselines3 import PPO, SAC

    kwargs = dict(config.algo_kwargs)
    common = dict(
        gamma=config.gamma,
        seed=config.seed,
        verbose=config.verbose,
        device=config.device,
        tensorboard_log=config.tensorboard_log,
    )
    if config.algo == "ppo":
        # 2,048-step rollouts: env.num_envs slots (n_envs, or n_envs x N agents for a team env)
        kwargs.setdefault("n_steps", max(2048 // env.num_envs, 1))
        credit_cb = None
        if assigner is not None:
            ratio = 1 / 32 if config.update_ratio is None else config.update_ratio
            credit_cb = CreditAssignmentCallback(
                assigner,
                update_ratio=ratio,
                reward_scale=config.reward_scale,
                unassigned=config.unassigned,
                recompute_advantages=False,
                torch_threads=config.torch_threads,
            )
        model = PPO(config.policy, env, **common, **kwargs)
        return model, credit_cb, [credit_cb] if credit_cb is not None else []
    cbs: list[BaseCallback] = []
    if assigner is not None:
        if "replay_buffer_class" in kwargs:
            raise RangeError("RunConfig.algo_kwargs sets replay_buffer_class, but a credit run uses CreditReplayBuffer")
        ratio = 1.0 if config.update_ratio is None else config.update_ratio
        scale = 1.0 if isinstance(config.reward_scale, str) else float(config.reward_scale)
        kwargs["replay_buffer_class"] = CreditReplayBuffer
        kwargs["replay_buffer_kwargs"] = {
            "assigner": assigner,
            "update_ratio": ratio,
            "reward_scale": scale,
            "torch_threads": config.torch_threads,
        }
        cbs.append(CreditMetricsCallback())
    return SAC(config.policy, env, **common, **kwargs), None, cbs


def train(
    config: RunConfig,
    *,
    assigner: CreditAssigner | None = None,
    callbacks: Iterable[BaseCallback] = (),
    vec_env_wrapper: Callable[[VecEnv], VecEnv] | None = None,
    on_evaluation: Callable[[Evaluation, Any], None] | None = None,
    logger: Any = None,
    envs: Any | None = None,
) -> RunResult:
    """Train one SB3 agent on ``config.reward`` with an optional credit assigner; evaluate on the true reward.

    Args:
        config: the run.
        assigner: a credit assigner object; overrides ``config.assigner`` (e.g. LaRe with a Python
            feature function).
        callbacks: further SB3 callbacks, run after the credit relabel; one that edits rollout
            rewards declares ``edits_rollout_rewards = True`` and GAE is recomputed once after it.
        vec_env_wrapper: ``VecEnv -> VecEnv`` applied to the training ``DummyVecEnv`` (under VecNormalize).
        on_evaluation: ``(evaluation, model) -> None`` after each evaluation.
        logger: an SB3 ``Logger`` used instead of the one SB3 configures from
            ``config.tensorboard_log`` and ``config.verbose`` (e.g.
            :func:`~creditlab.integrations.sb3.tracking.make_logger`); the caller closes it.
        envs: builds the environments instead of :func:`make_env` / :class:`Evaluator`: an object
            with ``train_env(config, vec_env_wrapper) -> VecEnv`` and ``evaluator(config)`` (an
            :class:`Evaluator`-like callable), e.g.
            :class:`creditlab.integrations.pettingzoo.PettingZooEnvs` for PettingZoo teams.

    Returns:
        :class:`RunResult`. ``metrics``: ``time/wall_seconds`` (all of ``train``),
        ``time/learn_seconds`` (SB3's ``learn``), ``time/eval_seconds`` (every evaluation),
        ``time/train_seconds`` (``learn`` minus the evaluations inside it), ``credit/seconds``
        (all callback/buffer work of the assigner, with the GAE recomputation it needs), ``credit/overhead_pct`` (``credit/seconds`` as
        a % of ``time/train_seconds``), ``steps``, and for credit runs :func:`history_metrics`
        (quality and ``credit/loss`` averaged over training, ``credit/updates``).

    Example:
        >>> cfg = RunConfig("CartPole-v1", assigner="uniform", total_timesteps=512, n_envs=2, eval_every=256,
        ...                 algo_kwargs={"n_steps": 128, "batch_size": 64, "n_epochs": 1}, eval_episodes=2)
        >>> res = train(cfg)
        >>> res.eval_timesteps, res.final_eval_return > 0, "credit/overhead_pct" in res.metrics
        ([0, 256, 512], True, True)
    """
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    env = evaluator = None
    try:
        if envs is not None:
            env = envs.train_env(config, vec_env_wrapper)
            evaluator = envs.evaluator(config)
        else:
            env = make_env(
                config.env_id,
                n_envs=config.n_envs,
                reward=config.reward,
                seed=config.seed,
                env_kwargs=config.env_kwargs,
                normalize_observations=config.normalize_observations,
                normalize_rewards=config.normalize_rewards,
                gamma=config.gamma,
                vec_env_wrapper=vec_env_wrapper,
            )
            evaluator = Evaluator(
                config.env_id,
                episodes=config.eval_episodes,
                seed=config.seed + 10_000,
                env_kwargs=config.env_kwargs,
                normalize_observations=config.normalize_observations,
                trajectories=config.eval_trajectories,
            )
        if assigner is None:
            assigner = _config_assigner(config)
        model, credit_cb, credit_cbs = _build_model(config, env, assigner)
        if logger is not None:
            model.set_logger(logger)
        eval_cb = EvaluationCallback(
            evaluator, config.eval_every, at_start=config.eval_at_start, on_evaluation=on_evaluation
        )
        log_cb = _EpisodeLog()
        user = list(callbacks)
        cbs: list[BaseCallback] = [eval_cb, log_cb, *credit_cbs, *user]
        recompute = None
        if config.algo == "ppo" and (
            credit_cb is not None or any(getattr(cb, "edits_rollout_rewards", False) for cb in user)
        ):
            for cb in user:  # editors leave GAE to the one recomputation after all of them
                if getattr(cb, "edits_rollout_rewards", False) and hasattr(cb, "recompute_advantages"):
                    cb.recompute_advantages = False
            recompute = RecomputeAdvantages()
            cbs.append(recompute)
        t_learn = time.perf_counter()
        model.learn(config.total_timesteps, callback=cbs, progress_bar=config.progress_bar)
        learn_seconds = time.perf_counter() - t_learn
        # SB3 dumps its logger during training only: write what was recorded after the last dump
        # (the final evaluation, the last rollout's credit metrics of SAC) at the final step.
        model.logger.dump(step=model.num_timesteps)
    finally:
        torch.set_num_threads(threads)
        for e in (env, evaluator):
            if e is not None:
                e.close()
    if credit_cb is not None:
        history, credit_seconds = credit_cb.history, credit_cb.total_seconds + recompute.seconds
    elif assigner is not None:
        history, credit_seconds = model.replay_buffer.history, model.replay_buffer.total_seconds
    else:
        history, credit_seconds = [], 0.0
    train_seconds = learn_seconds - evaluator.seconds  # learn() minus the evaluations inside it
    metrics: dict[str, float] = {
        "time/wall_seconds": time.perf_counter() - t_start,
        "time/learn_seconds": learn_seconds,
        "time/eval_seconds": evaluator.seconds,
        "time/train_seconds": train_seconds,
        "credit/seconds": credit_seconds,
        "credit/overhead_pct": 100.0 * credit_seconds / train_seconds if train_seconds > 0 else float("nan"),
        "steps": float(model.num_timesteps),
    }
    if assigner is not None:
        metrics.update(history_metrics(history, credit_seconds))
    evals = eval_cb.evaluations
    returns = [r for _, r, _ in log_cb.episodes[-100:]]
    return RunResult(
        eval_timesteps=[e.timesteps for e in evals],
        eval_returns=[e.mean for e in evals],
        eval_stds=[e.std for e in evals],
        final_eval_return=evals[-1].mean,
        final_eval_std=evals[-1].std,
        train_return=float(np.mean(returns)) if returns else math.nan,
        credit=history,
        metrics=metrics,
        model=model,
        assigner=assigner,
        train_episodes=log_cb.episodes,
        evaluations=evals,
    )
