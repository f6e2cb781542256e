"""Benchmark suites: tasks, agents and their hyperparameters as validated, frozen dataclasses.

A :class:`Suite` lists :class:`TaskSpec` s (a delayed version of a real environment plus the
agent that trains on it), method names (registry names plus the two anchors ``episodic`` and
``dense``) and seeds. :func:`expand_runs` turns a suite into one :class:`RunSpec` per
(task, method, seed), the unit the runner schedules and the results store keeps.

The built-in suites are YAML files (``creditlab/bench/configs/*.yaml``, loaded by
:mod:`creditlab.bench.config`); a user's suite is such a file too (``creditlab bench --config FILE``).

Anchors:
    ``episodic``: the agent trains on the delayed reward as is (the baseline every method must beat).
    ``dense``: the agent trains on the task's original per-step reward (the oracle, an upper anchor).

Every other method name is a registered credit assigner (``creditlab methods``), attached to the
same agent through the stable-baselines3 integration; it sees only the delayed reward.

Example:
    >>> from creditlab.bench.config import get_suite
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
    "expand_runs",
]

ANCHORS = ("episodic", "dense")
_ALGOS = ("ppo", "sac")
_FAMILIES = ("gymnasium", "minigrid", "bsuite", "pettingzoo")
_STATE_KEYS = ("pos", "pos_dir", "full", "obs")
METHOD_FAMILIES = ("credit", "multiagent", "exploration")
"""Registry families a benchmark method may come from (besides the anchors)."""


def _freeze(mapping: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON-plain copy (tuples become lists) so configs hash and round-trip identically."""
    return json.loads(json.dumps(dict(mapping or {}), sort_keys=True))


def parse_reward_mode(mode: str, *, where: str = "reward") -> tuple[str, int | None]:
    """``"episodic"`` -> ("episodic", None); ``"delayed:K"`` -> ("delayed", K) with K >= 1.

    Example:
        >>> parse_reward_mode("delayed:20")
        ('delayed', 20)
    """
    if mode == "episodic":
        return "episodic", None
    if isinstance(mode, str) and mode.startswith("delayed:"):
        k = mode.split(":", 1)[1]
        if k.isdigit() and int(k) >= 1:
            return "delayed", int(k)
    raise RangeError(f"{where} must be 'episodic' or 'delayed:K' with an integer K >= 1; got {mode!r}")


@dataclass(frozen=True)
class AgentConfig:
    """The RL agent of a task: a stable-baselines3 algorithm and its recorded hyperparameters.

    Attributes:
        algo: "ppo" or "sac".
        hyperparams: keyword arguments of the SB3 constructor (``gamma``, ``n_steps``, ``ent_coef``,
            ``policy_kwargs``...). ``gamma`` is required: the discount is part of the task's protocol
            (an end-of-episode payout with gamma < 1 makes early termination look good).
        n_envs: environments batched in one ``DummyVecEnv``.
        normalize: wrap the training envs in ``VecNormalize``: ``True`` (observations and rewards),
            ``"obs"`` (observations only, e.g. under an exploration bonus, which has its own scale)
            or ``False``.
        policy: SB3 policy name.
    """

    algo: str = "ppo"
    hyperparams: Mapping[str, Any] = field(default_factory=lambda: {"gamma": 0.99})
    n_envs: int = 8
    normalize: bool | str = False
    policy: str = "MlpPolicy"

    def __post_init__(self) -> None:
        if self.algo not in _ALGOS:
            raise RangeError(f"AgentConfig.algo must be one of {_ALGOS}; got {self.algo!r}")
        if self.normalize not in (True, False, "obs"):
            raise RangeError(f"AgentConfig.normalize must be true, false or 'obs'; got {self.normalize!r}")
        if not isinstance(self.n_envs, int) or self.n_envs < 1:
            raise RangeError(f"AgentConfig.n_envs must be an int >= 1; got {self.n_envs!r}")
        hp = _freeze(self.hyperparams)
        gamma = hp.get("gamma")
        if not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
            raise RangeError(
                f"AgentConfig.hyperparams['gamma'] must be a number in [0, 1] (record the task's discount); got {gamma!r}"
            )
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
        family: "gymnasium", "minigrid", "bsuite" or "pettingzoo" (a team; see :mod:`creditlab.bench.multiagent`).
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
        reward: how the task hides its per-step reward from the learner: ``"episodic"`` (the episode's
            sum paid at its last step) or ``"delayed:K"`` (the sum of the last K steps paid every K steps
            and at the episode's end). The ``episodic`` anchor trains on this reward as is.
        imports: modules imported (in every worker) before the environment is made, e.g. the module
            that registers a custom Gymnasium id. ``env_id`` may also be ``"module:Class"`` or
            ``"module:factory"`` (a zero-argument callable or a class taking ``env_kwargs``).
        contexts: for procedurally generated MiniGrid tasks, the number of distinct levels each run
            trains on (drawn from the run seed; :class:`~creditlab.exploration.wrappers.ContextSetWrapper`);
            None: a fresh level every episode.
        state_key: the state key an exploration bonus counts (``"pos"``, ``"pos_dir"``, ``"full"``,
            ``"obs"``; :mod:`creditlab.exploration.keys`), put into ``info`` by the environment;
            None: bonuses key on a hash of the observation.
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
    reward: str = "episodic"
    imports: tuple[str, ...] = ()
    contexts: int | None = None
    state_key: str | None = None

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
        object.__setattr__(self, "imports", tuple(self.imports))
        parse_reward_mode(self.reward, where=f"task {self.name!r}: reward")
        if self.contexts is not None:
            if isinstance(self.contexts, bool) or not isinstance(self.contexts, int) or self.contexts < 1:
                raise RangeError(
                    f"TaskSpec.contexts must be an int >= 1 or None (unlimited); got {self.contexts!r} for task {self.name!r}"
                )
            if self.family != "minigrid":
                raise RangeError(
                    f"TaskSpec.contexts is for procedurally generated MiniGrid tasks; task {self.name!r} is {self.family!r}"
                )
        if self.state_key is not None and self.state_key not in _STATE_KEYS:
            raise RangeError(
                f"TaskSpec.state_key must be one of {_STATE_KEYS} or None; got {self.state_key!r} for task {self.name!r}"
            )
        if not isinstance(self.env_id, str) or not self.env_id:
            raise RangeError(
                f"TaskSpec.env_id must be a Gymnasium id or 'module:Class'; got {self.env_id!r} for task {self.name!r}"
            )
        if self.family == "bsuite":
            if not self.bsuite_settings:
                raise RangeError(f"bsuite task {self.name!r} needs bsuite_settings (e.g. ('{self.env_id}/0',))")
            bad = [s for s in self.bsuite_settings if not s.startswith(self.env_id + "/")]
            if bad:
                raise RangeError(f"bsuite task {self.name!r}: settings {bad} are not ids of experiment {self.env_id!r}")
        elif self.bsuite_settings:
            raise RangeError(
                f"TaskSpec.bsuite_settings is only for bsuite tasks; task {self.name!r} is {self.family!r}"
            )

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
    """One (task, method, seed) run: everything a worker needs, JSON round-trippable.

    Attributes:
        task: the task.
        method: the method's name in this sweep (an anchor, a registry name, or a variant's own name).
        seed: the run seed.
        method_params: keyword parameters of the method (suite-wide and per-task overrides merged).
        base_method: the registry name a variant runs (None: ``method`` itself).
    """

    task: TaskSpec
    method: str
    seed: int
    method_params: Mapping[str, Any] = field(default_factory=dict)
    base_method: str | None = None

    @property
    def registry_name(self) -> str:
        """The registered method this run uses (``base_method`` or ``method``)."""
        return self.base_method or self.method

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
        task["imports"] = tuple(task.get("imports", ()))
        return cls(
            task=TaskSpec(**task),
            method=data["method"],
            seed=data["seed"],
            method_params=data.get("method_params", {}),
            base_method=data.get("base_method"),
        )

    def canonical(self) -> dict[str, Any]:
        """The configuration that decides the result: ``to_dict()`` without free text (``notes``) and
        without fields at their default, so adding a field with a default never changes old hashes."""
        data = self.to_dict()
        task = _drop_defaults(data["task"], TaskSpec)
        task.pop("notes", None)
        task["agent"] = _drop_defaults(data["task"]["agent"], AgentConfig)
        out = _drop_defaults(data, RunSpec)
        out["task"] = task
        return out

    def config_hash(self) -> str:
        """Hash of :meth:`canonical`: a stored run counts for a request only if these match."""
        text = json.dumps(self.canonical(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _drop_defaults(data: Mapping[str, Any], cls: type) -> dict[str, Any]:
    import dataclasses

    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    plain = json.loads(json.dumps(defaults, default=list))
    data = json.loads(json.dumps(dict(data), default=list))
    return {k: v for k, v in data.items() if not (k in plain and v == plain[k])}


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
        variants: method name -> registry name, for a method run under its own name with its own
            parameters (``rrd_unbiased`` -> ``rrd`` with ``bias_correction: true``).
        task_params: method -> task -> parameters that override ``method_params`` on that task
            (e.g. LaRe's feature program per task).
        only_tasks: method -> the tasks it runs on (default: every task).
    """

    name: str
    description: str
    tasks: tuple[TaskSpec, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    method_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    expected_minutes: float | None = None
    variants: Mapping[str, str] = field(default_factory=dict)
    task_params: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    only_tasks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "methods", tuple(dict.fromkeys(self.methods)))
        object.__setattr__(self, "seeds", tuple(dict.fromkeys(self.seeds)))
        object.__setattr__(self, "method_params", {k: _freeze(v) for k, v in dict(self.method_params).items()})
        object.__setattr__(self, "variants", dict(self.variants))
        object.__setattr__(
            self,
            "task_params",
            {m: {t: _freeze(p) for t, p in dict(v).items()} for m, v in dict(self.task_params).items()},
        )
        object.__setattr__(self, "only_tasks", {m: tuple(v) for m, v in dict(self.only_tasks).items()})
        bad = [v for v in self.variants if v in ANCHORS]
        if bad:
            raise RangeError(f"suite {self.name!r}: the anchors {list(ANCHORS)} cannot be variants; got {bad}")
        if not self.tasks:
            raise RangeError(f"suite {self.name!r} has no tasks")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RangeError(f"suite {self.name!r} has duplicate task names {dupes}")
        missing = [a for a in ANCHORS if a not in self.methods]
        if missing:
            raise RangeError(
                f"suite {self.name!r}: the anchors {list(ANCHORS)} are always part of a sweep; missing {missing}"
            )
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
        check_method_names([suite.variants.get(m, m) for m in suite.methods])
    runs = []
    for task in suite.tasks:
        for method in suite.methods:
            if method == "dense" and not task.dense_twin:
                continue
            if method in suite.only_tasks and task.name not in suite.only_tasks[method]:
                continue
            params = {**suite.method_params.get(method, {}), **suite.task_params.get(method, {}).get(task.name, {})}
            for seed in suite.seeds:
                runs.append(RunSpec(task, method, seed, params, suite.variants.get(method)))
    return runs


def check_method_names(methods: Sequence[str]) -> None:
    """Raise :class:`UnknownMethodError` for a name that is neither an anchor nor a registered assigner."""
    from ..registry import list_methods

    # credit assigners over Gymnasium episodes and PettingZoo teams (family "multiagent"), exploration bonuses; LLM-side assigners (family
    # "llm") need turn data
    assigners = {m.name for f in METHOD_FAMILIES for m in list_methods(family=f, kind="assigner")}
    unknown = [m for m in methods if m not in ANCHORS and m not in assigners]
    if unknown:
        raise UnknownMethodError(
            f"method(s) {unknown} are neither anchors {list(ANCHORS)} nor registered credit assigners or exploration "
            f"bonuses; registered: {sorted(assigners) or 'none'} (see `creditlab methods --family credit` / `--family exploration`)"
        )
