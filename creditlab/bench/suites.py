"""Benchmark suites: tasks, agents and their hyperparameters as validated, frozen dataclasses.

A :class:`Suite` lists :class:`TaskSpec` s (a delayed version of a real environment plus the
agent that trains on it), method names (registry names plus the two anchors ``episodic`` and
``dense``) and seeds. :func:`expand_runs` turns a suite into one :class:`RunSpec` per
(task, method, seed), the unit the runner schedules and the results store keeps.

Anchors:
    ``episodic``: the agent trains on the delayed reward as is (the baseline every method must beat).
    ``dense``: the agent trains on the task's original per-step reward (the oracle, an upper anchor).

Every other method name is a registered credit assigner (``creditlab methods``), attached to the
same agent through the stable-baselines3 integration; it sees only the delayed reward.

Example:
    >>> suite = get_suite("smoke")
    >>> runs = expand_runs(suite)
    >>> len(runs) == len(suite.tasks) * len(suite.methods) * len(suite.seeds)
    True
    >>> runs[0].run_id
    'cartpole/episodic/seed0'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import RangeError, UnknownMethodError

__all__ = [
    "ANCHORS",
    "AgentConfig",
    "TaskSpec",
    "Suite",
    "RunSpec",
    "SUITES",
    "get_suite",
    "list_suites",
    "expand_runs",
]

ANCHORS = ("episodic", "dense")
_ALGOS = ("ppo", "sac")
_FAMILIES = ("gymnasium", "minigrid", "bsuite")


def _freeze(mapping: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON-plain copy (tuples become lists) so configs hash and round-trip identically."""
    return json.loads(json.dumps(dict(mapping or {}), sort_keys=True))


@dataclass(frozen=True)
class AgentConfig:
    """The RL agent of a task: a stable-baselines3 algorithm and its recorded hyperparameters.

    Attributes:
        algo: "ppo" or "sac".
        hyperparams: keyword arguments of the SB3 constructor (``gamma``, ``n_steps``, ``ent_coef``,
            ``policy_kwargs``...). ``gamma`` is required: the discount is part of the task's protocol
            (an end-of-episode payout with gamma < 1 makes early termination look good).
        n_envs: environments batched in one ``DummyVecEnv``.
        normalize: wrap the training envs in ``VecNormalize`` (observations and rewards).
        policy: SB3 policy name.
    """

    algo: str = "ppo"
    hyperparams: Mapping[str, Any] = field(default_factory=lambda: {"gamma": 0.99})
    n_envs: int = 8
    normalize: bool = False
    policy: str = "MlpPolicy"

    def __post_init__(self) -> None:
        if self.algo not in _ALGOS:
            raise RangeError(f"AgentConfig.algo must be one of {_ALGOS}; got {self.algo!r}")
        if not isinstance(self.n_envs, int) or self.n_envs < 1:
            raise RangeError(f"AgentConfig.n_envs must be an int >= 1; got {self.n_envs!r}")
        hp = _freeze(self.hyperparams)
        gamma = hp.get("gamma")
        if not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
            raise RangeError(f"AgentConfig.hyperparams['gamma'] must be a number in [0, 1] (record the task's discount); got {gamma!r}")
        object.__setattr__(self, "hyperparams", hp)

    @property
    def gamma(self) -> float:
        return float(self.hyperparams["gamma"])


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task: a delayed version of a real environment and the agent trained on it.

    Attributes:
        name: short unique name used in paths and tables (``hopper``).
        env_id: Gymnasium id (``Hopper-v5``), MiniGrid id, or a bsuite experiment (``umbrella_length``).
        family: "gymnasium", "minigrid" or "bsuite".
        steps: training budget in environment steps per run (per bsuite setting for bsuite tasks).
        eval_every: evaluation period in environment steps (gymnasium/minigrid tasks).
        eval_episodes: deterministic evaluation episodes on the true reward at each checkpoint.
        agent: the :class:`AgentConfig`.
        env_kwargs: keyword arguments of ``gymnasium.make``.
        dense_twin: whether a hidden per-step reward exists (False for natively sparse tasks such as
            MiniGrid-DoorKey: the ``dense`` anchor is skipped and the normalized score is not defined).
        solve_threshold: eval return that counts as solved (reported as steps-to-solve), or None.
        bsuite_settings: for bsuite tasks, the bsuite ids run in every run (``umbrella_length/3``).
        notes: free text shown in the report (why these hyperparameters).
    """

    name: str
    env_id: str
    family: str
    steps: int
    eval_every: int
    agent: AgentConfig
    eval_episodes: int = 10
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    dense_twin: bool = True
    solve_threshold: float | None = None
    bsuite_settings: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise RangeError(f"TaskSpec.name must be a non-empty [A-Za-z0-9_-] string; got {self.name!r}")
        if self.family not in _FAMILIES:
            raise RangeError(f"TaskSpec.family must be one of {_FAMILIES}; got {self.family!r}")
        for attr in ("steps", "eval_every", "eval_episodes"):
            value = getattr(self, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RangeError(f"TaskSpec.{attr} must be an int >= 1; got {value!r} for task {self.name!r}")
        if not isinstance(self.agent, AgentConfig):
            raise RangeError(f"TaskSpec.agent must be an AgentConfig; got {type(self.agent).__name__}")
        object.__setattr__(self, "env_kwargs", _freeze(self.env_kwargs))
        object.__setattr__(self, "bsuite_settings", tuple(self.bsuite_settings))
        if self.family == "bsuite":
            if not self.bsuite_settings:
                raise RangeError(f"bsuite task {self.name!r} needs bsuite_settings (e.g. ('{self.env_id}/0',))")
            bad = [s for s in self.bsuite_settings if not s.startswith(self.env_id + "/")]
            if bad:
                raise RangeError(f"bsuite task {self.name!r}: settings {bad} are not ids of experiment {self.env_id!r}")
        elif self.bsuite_settings:
            raise RangeError(f"TaskSpec.bsuite_settings is only for bsuite tasks; task {self.name!r} is {self.family!r}")

    def with_steps(self, steps: int) -> TaskSpec:
        """The same task with another budget; the evaluation period scales with it (>= 1)."""
        if not isinstance(steps, int) or steps < 1:
            raise RangeError(f"steps must be an int >= 1; got {steps!r}")
        period = max(1, round(self.eval_every * steps / self.steps))
        return replace(self, steps=steps, eval_every=period)

    @property
    def total_steps(self) -> int:
        """Environment steps of one run (bsuite runs train once per setting)."""
        return self.steps * max(1, len(self.bsuite_settings))


@dataclass(frozen=True)
class RunSpec:
    """One (task, method, seed) run: everything a worker needs, JSON round-trippable."""

    task: TaskSpec
    method: str
    seed: int
    method_params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise RangeError(f"RunSpec.seed must be an int >= 0; got {self.seed!r}")
        object.__setattr__(self, "method_params", _freeze(self.method_params))

    @property
    def run_id(self) -> str:
        """``task/method/seedN``: also the run's folder under ``DIR/runs``."""
        return f"{self.task.name}/{self.method}/seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        task = dict(data["task"])
        task["agent"] = AgentConfig(**task["agent"])
        task["bsuite_settings"] = tuple(task.get("bsuite_settings", ()))
        return cls(task=TaskSpec(**task), method=data["method"], seed=data["seed"], method_params=data.get("method_params", {}))

    def config_hash(self) -> str:
        """Hash of the full configuration: a stored run counts for a request only if these match."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Suite:
    """A named benchmark: tasks x methods x seeds.

    Attributes:
        name: "smoke", "standard", "full" or your own.
        description: one paragraph for the report.
        tasks: the tasks.
        methods: method names; must include both anchors ("episodic", "dense").
        seeds: run seeds.
        method_params: per-method keyword parameters of the credit assigner's factory.
        expected_minutes: wall time measured on the reference machine (2 cores), for the docs.
    """

    name: str
    description: str
    tasks: tuple[TaskSpec, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    method_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    expected_minutes: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "methods", tuple(dict.fromkeys(self.methods)))
        object.__setattr__(self, "seeds", tuple(dict.fromkeys(self.seeds)))
        object.__setattr__(self, "method_params", {k: _freeze(v) for k, v in dict(self.method_params).items()})
        if not self.tasks:
            raise RangeError(f"suite {self.name!r} has no tasks")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RangeError(f"suite {self.name!r} has duplicate task names {dupes}")
        missing = [a for a in ANCHORS if a not in self.methods]
        if missing:
            raise RangeError(f"suite {self.name!r}: the anchors {list(ANCHORS)} are always part of a sweep; missing {missing}")
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise RangeError(f"suite {self.name!r}: seeds must be a non-empty list of ints >= 0; got {self.seeds!r}")

    def select(
        self,
        *,
        methods: Sequence[str] | None = None,
        tasks: Sequence[str] | None = None,
        seeds: Sequence[int] | int | None = None,
        steps: int | None = None,
    ) -> Suite:
        """A narrowed copy (CLI ``--methods/--tasks/--seeds/--steps``). The anchors are always kept.

        ``seeds`` as an int means ``range(seeds)``; ``steps`` replaces every task's budget.
        """
        out = self
        if tasks is not None:
            known = {t.name: t for t in self.tasks}
            unknown = [t for t in tasks if t not in known]
            if unknown:
                raise RangeError(f"suite {self.name!r} has no task(s) {unknown}; its tasks are {sorted(known)}")
            out = replace(out, tasks=tuple(known[t] for t in dict.fromkeys(tasks)))
        if methods is not None:
            out = replace(out, methods=tuple(ANCHORS) + tuple(m for m in methods if m not in ANCHORS))
        if seeds is not None:
            seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
            out = replace(out, seeds=seeds)
        if steps is not None:
            out = replace(out, tasks=tuple(t.with_steps(steps) for t in out.tasks))
        return out


def expand_runs(suite: Suite, *, check_methods: bool = True) -> list[RunSpec]:
    """One :class:`RunSpec` per (task, method, seed), anchors first; ``dense`` is skipped on tasks
    without a dense twin. With ``check_methods`` every non-anchor name must be a registered assigner."""
    if check_methods:
        check_method_names(suite.methods)
    runs = []
    for task in suite.tasks:
        for method in suite.methods:
            if method == "dense" and not task.dense_twin:
                continue
            for seed in suite.seeds:
                runs.append(RunSpec(task, method, seed, suite.method_params.get(method, {})))
    return runs


def check_method_names(methods: Sequence[str]) -> None:
    """Raise :class:`UnknownMethodError` for a name that is neither an anchor nor a registered assigner."""
    from ..registry import list_methods

    # credit assigners over Gymnasium episodes; LLM-side assigners (family "llm") need turn data
    assigners = {m.name for m in list_methods(family="credit", kind="assigner")}
    unknown = [m for m in methods if m not in ANCHORS and m not in assigners]
    if unknown:
        raise UnknownMethodError(
            f"method(s) {unknown} are neither anchors {list(ANCHORS)} nor registered credit assigners; "
            f"registered assigners: {sorted(assigners) or 'none'} (see `creditlab methods`)"
        )


# ------------------------------------------------------------------------------ the suites
#
# PPO hyperparameters follow research/bench-feasibility.md (measured on this machine): 8 DummyVecEnv
# envs x n_steps 256 = 2048-step rollouts, batch 64, 10 epochs, one torch thread per run;
# VecNormalize on MuJoCo; DoorKey needs ent_coef 0.01 + VecNormalize. gamma is fixed per task.

_PPO = {"n_steps": 256, "batch_size": 64, "n_epochs": 10, "learning_rate": 3e-4, "gae_lambda": 0.95, "gamma": 0.99}
_PPO_MUJOCO = AgentConfig("ppo", _PPO, n_envs=8, normalize=True)
_PPO_CLASSIC = AgentConfig("ppo", _PPO, n_envs=8, normalize=False)
_PPO_LUNAR = AgentConfig(
    "ppo",
    {**_PPO, "gamma": 0.999, "gae_lambda": 0.98, "n_epochs": 4, "ent_coef": 0.01},
    n_envs=8,
    normalize=False,
)
_PPO_DOORKEY = AgentConfig("ppo", {**_PPO, "n_steps": 128, "ent_coef": 0.01}, n_envs=8, normalize=True)
# bsuite: short rollouts so 1-step episodes still give many updates.
_PPO_BSUITE = AgentConfig("ppo", {**_PPO, "n_steps": 32, "batch_size": 64, "n_epochs": 4}, n_envs=8, normalize=False)

_SAC_MUJOCO = AgentConfig(
    "sac",
    {"gamma": 0.99, "learning_rate": 3e-4, "buffer_size": 1_000_000, "batch_size": 256, "learning_starts": 10_000, "tau": 0.005},
    n_envs=1,
    normalize=False,
)

_GAMMA_NOTE = (
    "gamma 0.99: with an end-of-episode payout and gamma < 1 ending early looks good to the episodic "
    "baseline (part of its gap is this discounting artefact, which any dense redistribution removes)."
)


def _cartpole(steps: int, every: int) -> TaskSpec:
    return TaskSpec("cartpole", "CartPole-v1", "gymnasium", steps, every, _PPO_CLASSIC, notes=_GAMMA_NOTE)


def _mujoco(name: str, env_id: str, steps: int, every: int, agent: AgentConfig = _PPO_MUJOCO, eval_episodes: int = 5) -> TaskSpec:
    notes = "VecNormalize(obs, reward); eval uses the frozen observation statistics."
    if name != "halfcheetah":
        notes += " " + _GAMMA_NOTE
    else:
        notes += " No early termination: the cleanest delayed-reward task."
    return TaskSpec(name, env_id, "gymnasium", steps, every, agent, eval_episodes=eval_episodes, notes=notes)


def _lunar(steps: int, every: int) -> TaskSpec:
    return TaskSpec("lunarlander", "LunarLander-v3", "gymnasium", steps, every, _PPO_LUNAR, solve_threshold=200.0,
                    notes="rl-zoo-style PPO (gamma 0.999, gae_lambda 0.98, ent_coef 0.01, 4 epochs).")


def _doorkey(env_id: str, steps: int, every: int) -> TaskSpec:
    return TaskSpec(
        "doorkey", env_id, "minigrid", steps, every, _PPO_DOORKEY, dense_twin=False, solve_threshold=0.9,
        notes="Natively sparse (reward only on success): no dense twin, so the score is steps-to-solve "
        "(first evaluation with mean return >= 0.9). Image observation flattened; ent_coef 0.01 + VecNormalize.",
    )


def _umbrella(settings: Sequence[int], steps: int) -> TaskSpec:
    return TaskSpec(
        "umbrella_length", "umbrella_length", "bsuite", steps, steps, _PPO_BSUITE, eval_episodes=20,
        bsuite_settings=tuple(f"umbrella_length/{i}" for i in settings),
        notes="bsuite credit-assignment diagnostic: only the first action matters, +/-1 at the end, "
        "+/-1 noise on every step. Scored by bsuite's analysis (fraction of settings with average regret < 0.5).",
    )


def _discounting(settings: Sequence[int], steps: int) -> TaskSpec:
    return TaskSpec(
        "discounting_chain", "discounting_chain", "bsuite", steps, steps, _PPO_BSUITE, eval_episodes=5,
        bsuite_settings=tuple(f"discounting_chain/{i}" for i in settings),
        notes="bsuite diagnostic: the first action picks a chain paying 1 after 1/3/10/30/100 steps, one pays 1.1. "
        "Scored by bsuite's analysis (clip(1 - 10 (1.1 - average return), 0, 1)).",
    )


# The return-decomposition assigners of creditlab.credit. LaRe is left out: without LLM-written
# latent features (creditlab.programs) it is RRD on raw (s, a).
_DECOMPOSITION = ("uniform", "ircr", "rd", "rrd", "rudder")

# bsuite ids: umbrella_length/k has chain length (1..10, 12, 14, 17, 20, 25, 30, ..., 100)[k];
# discounting_chain/k has mapping_seed k (the 1.1 chain is k % 5).
SUITES: dict[str, Suite] = {
    "smoke": Suite(
        "smoke",
        "Minutes on 2 cores, for the README and CI: CartPole at 30k PPO steps and a short umbrella_length, "
        "2 seeds, the two anchors and the cheapest credit assigners.",
        tasks=(
            _cartpole(30_000, 6_000),
            _umbrella((0, 4, 9), 2_048),
        ),
        methods=("episodic", "dense", "uniform", "rrd"),
        seeds=(0, 1),
        expected_minutes=None,
    ),
    "standard": Suite(
        "standard",
        "About 1-2 hours on a shared 2-core machine: every task at a short PPO budget (30k-60k steps, where the "
        "dense-vs-episodic gap is already large), the return-decomposition methods, 3 seeds.",
        tasks=(
            # informative and cheap first: a sweep interrupted early has finished whole tasks
            _mujoco("halfcheetah", "HalfCheetah-v5", 60_000, 12_000),
            _cartpole(30_000, 6_000),
            _umbrella((0, 2, 4, 9, 13), 2_048),
            _discounting((0, 1, 2, 3, 4), 6_144),
            _mujoco("hopper", "Hopper-v5", 60_000, 12_000),
            _doorkey("MiniGrid-DoorKey-6x6-v0", 60_000, 12_000),
            _mujoco("walker2d", "Walker2d-v5", 50_000, 10_000),
            _lunar(50_000, 10_000),
        ),
        methods=("episodic", "dense") + _DECOMPOSITION,
        seeds=(0, 1, 2),
        expected_minutes=None,
    ),
    "full": Suite(
        "full",
        "For a Ray cluster: MuJoCo at 1M PPO steps plus SAC variants, DoorKey-8x8, the full bsuite sweeps' settings, 5 seeds.",
        tasks=(
            _cartpole(200_000, 10_000),
            _lunar(1_000_000, 50_000),
            _mujoco("hopper", "Hopper-v5", 1_000_000, 50_000, eval_episodes=10),
            _mujoco("halfcheetah", "HalfCheetah-v5", 1_000_000, 50_000, eval_episodes=10),
            _mujoco("walker2d", "Walker2d-v5", 1_000_000, 50_000, eval_episodes=10),
            _mujoco("hopper_sac", "Hopper-v5", 1_000_000, 50_000, agent=_SAC_MUJOCO, eval_episodes=10),
            _mujoco("halfcheetah_sac", "HalfCheetah-v5", 1_000_000, 50_000, agent=_SAC_MUJOCO, eval_episodes=10),
            _doorkey("MiniGrid-DoorKey-8x8-v0", 500_000, 25_000),
            _umbrella(tuple(range(23)), 100_000),
            _discounting(tuple(range(20)), 100_000),
        ),
        methods=("episodic", "dense") + _DECOMPOSITION,
        seeds=(0, 1, 2, 3, 4),
        expected_minutes=None,
    ),
}


def get_suite(name: str) -> Suite:
    """A built-in suite by name."""
    try:
        return SUITES[name]
    except KeyError:
        raise RangeError(f"no suite named {name!r}; choose one of {sorted(SUITES)}") from None


def list_suites() -> list[str]:
    return list(SUITES)
