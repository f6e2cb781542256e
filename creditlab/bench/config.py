"""Suites as YAML (or JSON) files: tasks, agents, methods with parameters, seeds.

A suite file is what ``creditlab bench --config FILE`` runs; the built-in suites (``--suite NAME``)
are such files inside the package (``creditlab bench --show-config NAME`` prints one to copy).
Every key is checked: an unknown key, a wrong type or a bad value is a :class:`ConfigError` that
names the key's path (``tasks[1].agent.algo``), what is allowed and what was found.

Schema (``?`` = optional, default after ``=``)::

    name: my-suite
    description?: one paragraph for the report
    seeds: 5                        # a count (0..4) or a list [0, 3, 7]
    agents?:                        # named agents that tasks refer to
      ppo_mujoco: {algo: ppo, n_envs: 8, normalize: true, policy?: MlpPolicy,
                   hyperparams: {gamma: 0.99, n_steps: 256, batch_size: 64, ...}}
    tasks:
      - name: hopper                # [A-Za-z0-9_-]
        env: Hopper-v5              # Gymnasium id, or "module:Class" / "module:factory"
        family?: gymnasium          # gymnasium | minigrid | bsuite | pettingzoo (a team: creditlab.bench.multiagent)
        reward?: episodic           # episodic | delayed:K
        steps: 300000               # environment steps per run
        eval_every: 15000
        eval_episodes?: 10
        agent: ppo_mujoco           # a name from `agents`, or an inline mapping as above
        env_kwargs?: {}
        imports?: []                # modules to import first (they register custom env ids)
        dense_twin?: true           # false for natively sparse tasks (no dense oracle)
        solve_threshold?: null
        bsuite_settings?: []        # bsuite tasks: ids such as umbrella_length/3
        contexts?: null             # MiniGrid: number of distinct levels per run (null: unlimited)
        state_key?: null            # what exploration bonuses count: pos | pos_dir | full | obs
        notes?: ""
    methods:                        # the anchors episodic and dense are always added
      - rrd                         # a registered credit assigner (`creditlab methods --family credit`)
      - name: rrd_unbiased          # a variant under its own name
        method: rrd
        params: {bias_correction: true}
      - name: lare
        params: {}
        tasks: {hopper: {features: Hopper-v5}}   # per-task parameter overrides
        only_tasks: [hopper]        # run this method on these tasks only (default: all)

Example:
    >>> suite = suite_from_dict({"name": "s", "seeds": 2, "methods": ["uniform"],
    ...     "tasks": [{"name": "cp", "env": "CartPole-v1", "steps": 1000, "eval_every": 500,
    ...                "agent": {"algo": "ppo", "hyperparams": {"gamma": 0.99}}}]})
    >>> suite.methods, suite.seeds
    (('episodic', 'dense', 'uniform'), (0, 1))
    >>> suite_from_dict({"name": "s", "seeds": 1, "methods": [], "tasks": [{"name": "cp", "env": "CartPole-v1",
    ...     "steps": 10, "eval_every": 5, "agent": {"algo": "dqn", "hyperparams": {"gamma": 0.9}}}]})
    Traceback (most recent call last):
    ...
    creditlab.bench.config.ConfigError: tasks[0].agent.algo: expected one of 'ppo', 'sac'; got 'dqn'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import CreditlabError
from .suites import _ALGOS, _FAMILIES, ANCHORS, AgentConfig, Suite, TaskSpec, parse_reward_mode

__all__ = [
    "ConfigError",
    "get_suite",
    "list_suites",
    "load_suite",
    "suite_from_dict",
    "suite_to_dict",
    "dump_suite",
    "builtin_suites",
    "builtin_suite_path",
]


class ConfigError(CreditlabError, ValueError):
    """A suite file is malformed: the message names the key path, what is allowed and what was found."""


_SUITE_KEYS = {"name", "description", "seeds", "agents", "tasks", "methods", "expected_minutes"}
_AGENT_KEYS = {"algo", "hyperparams", "n_envs", "normalize", "policy"}
_TASK_KEYS = {
    "name",
    "env",
    "family",
    "reward",
    "steps",
    "eval_every",
    "eval_episodes",
    "agent",
    "env_kwargs",
    "imports",
    "dense_twin",
    "solve_threshold",
    "bsuite_settings",
    "notes",
    "contexts",
    "state_key",
}
_METHOD_KEYS = {"name", "method", "params", "tasks", "only_tasks"}


def _keys(data: Any, allowed: set[str], path: str, required: Sequence[str] = ()) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path or 'the suite'}: expected a mapping with keys {', '.join(sorted(allowed))}; got {type(data).__name__}"
        )
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{_join(path, unknown[0])}: unknown key; allowed keys here: {', '.join(sorted(allowed))}")
    for key in required:
        if key not in data:
            raise ConfigError(f"{_join(path, key)}: required key is missing")
    return data


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _typed(value: Any, kinds: tuple[type, ...], path: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"{path}: expected {what}; got {value!r}")
    if not isinstance(value, kinds):
        raise ConfigError(f"{path}: expected {what}; got {value!r}")
    return value


def _int(value: Any, path: str, minimum: int = 1) -> int:
    _typed(value, (int,), path, f"an integer >= {minimum}")
    if value < minimum:
        raise ConfigError(f"{path}: expected an integer >= {minimum}; got {value!r}")
    return int(value)


def _agent(data: Any, path: str, named: Mapping[str, AgentConfig]) -> AgentConfig:
    if isinstance(data, str):
        if data not in named:
            raise ConfigError(
                f"{path}: no agent named {data!r}; define it under `agents` (defined: {', '.join(sorted(named)) or 'none'})"
            )
        return named[data]
    d = _keys(data, _AGENT_KEYS, path, required=("algo", "hyperparams"))
    algo = d["algo"]
    if algo not in _ALGOS:
        raise ConfigError(f"{_join(path, 'algo')}: expected one of {', '.join(repr(a) for a in _ALGOS)}; got {algo!r}")
    hp = _typed(
        d["hyperparams"],
        (Mapping,),
        _join(path, "hyperparams"),
        "a mapping of SB3 constructor arguments (gamma required)",
    )
    gamma = hp.get("gamma")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
        raise ConfigError(
            f"{_join(path, 'hyperparams.gamma')}: expected a number in [0, 1] (the task's discount is part of its "
            f"protocol); got {gamma!r}"
        )
    n_envs = _int(d.get("n_envs", 8), _join(path, "n_envs"))
    normalize = d.get("normalize", False)
    if normalize not in (True, False, "obs"):
        raise ConfigError(
            f"{_join(path, 'normalize')}: expected true (observations and rewards), false or 'obs'; got {normalize!r}"
        )
    policy = _typed(d.get("policy", "MlpPolicy"), (str,), _join(path, "policy"), "an SB3 policy name")
    return _wrap(path, lambda: AgentConfig(algo, dict(hp), n_envs=n_envs, normalize=normalize, policy=policy))


def _wrap(path: str, build):
    try:
        return build()
    except ConfigError:
        raise
    except CreditlabError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _task(data: Any, path: str, named: Mapping[str, AgentConfig]) -> TaskSpec:
    d = _keys(data, _TASK_KEYS, path, required=("name", "env", "steps", "eval_every", "agent"))
    name = _typed(d["name"], (str,), _join(path, "name"), "a task name ([A-Za-z0-9_-])")
    env = _typed(d["env"], (str,), _join(path, "env"), "a Gymnasium id or 'module:Class'")
    family = d.get("family", "gymnasium")
    if family not in _FAMILIES:
        raise ConfigError(
            f"{_join(path, 'family')}: expected one of {', '.join(repr(f) for f in _FAMILIES)}; got {family!r}"
        )
    reward = d.get("reward", "episodic")
    try:
        parse_reward_mode(reward, where=_join(path, "reward"))
    except CreditlabError as exc:
        raise ConfigError(str(exc)) from None
    steps = _int(d["steps"], _join(path, "steps"))
    eval_every = _int(d["eval_every"], _join(path, "eval_every"))
    eval_episodes = _int(d.get("eval_episodes", 10), _join(path, "eval_episodes"))
    agent = _agent(d["agent"], _join(path, "agent"), named)
    env_kwargs = _typed(
        d.get("env_kwargs", {}), (Mapping,), _join(path, "env_kwargs"), "a mapping of gymnasium.make arguments"
    )
    imports = _typed(d.get("imports", []), (list, tuple), _join(path, "imports"), "a list of module names")
    for i, mod in enumerate(imports):
        _typed(mod, (str,), f"{_join(path, 'imports')}[{i}]", "a module name")
    dense_twin = _typed(d.get("dense_twin", True), (bool,), _join(path, "dense_twin"), "true or false")
    solve = d.get("solve_threshold")
    if solve is not None:
        _typed(solve, (int, float), _join(path, "solve_threshold"), "a number or null")
    settings = _typed(
        d.get("bsuite_settings", []), (list, tuple), _join(path, "bsuite_settings"), "a list of bsuite ids"
    )
    notes = _typed(d.get("notes", ""), (str,), _join(path, "notes"), "text")
    contexts = d.get("contexts")
    if contexts is not None:
        contexts = _int(contexts, _join(path, "contexts"))
    state_key = d.get("state_key")
    if state_key is not None:
        _typed(state_key, (str,), _join(path, "state_key"), "one of pos, pos_dir, full, obs")
    return _wrap(
        path,
        lambda: TaskSpec(
            name,
            env,
            family,
            steps,
            eval_every,
            agent,
            eval_episodes=eval_episodes,
            env_kwargs=dict(env_kwargs),
            dense_twin=dense_twin,
            solve_threshold=None if solve is None else float(solve),
            bsuite_settings=tuple(settings),
            notes=notes,
            reward=reward,
            imports=tuple(imports),
            contexts=contexts,
            state_key=state_key,
        ),
    )


def suite_from_dict(data: Any, *, check_methods: bool = True) -> Suite:
    """Build and validate a :class:`Suite` from a parsed suite file (see the module docstring)."""
    d = _keys(data, _SUITE_KEYS, "", required=("name", "seeds", "tasks", "methods"))
    name = _typed(d["name"], (str,), "name", "a suite name")
    seeds_raw = d["seeds"]
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool):
        seeds = tuple(range(_int(seeds_raw, "seeds")))
    else:
        _typed(seeds_raw, (list, tuple), "seeds", "a count or a list of integers >= 0")
        seeds = tuple(_int(s, f"seeds[{i}]", minimum=0) for i, s in enumerate(seeds_raw))
    agents_raw = _typed(d.get("agents", {}), (Mapping,), "agents", "a mapping of agent name -> agent")
    agents = {str(k): _agent(v, f"agents.{k}", {}) for k, v in agents_raw.items()}
    tasks_raw = _typed(d["tasks"], (list, tuple), "tasks", "a list of tasks")
    tasks = tuple(_task(t, f"tasks[{i}]", agents) for i, t in enumerate(tasks_raw))
    task_names = {t.name for t in tasks}
    methods: list[str] = list(ANCHORS)
    params: dict[str, dict[str, Any]] = {}
    variants: dict[str, str] = {}
    per_task: dict[str, dict[str, dict[str, Any]]] = {}
    only_tasks: dict[str, tuple[str, ...]] = {}
    methods_raw = _typed(d["methods"], (list, tuple), "methods", "a list of method names or mappings")
    for i, m in enumerate(methods_raw):
        path = f"methods[{i}]"
        if isinstance(m, str):
            if m not in methods:
                methods.append(m)
            continue
        md = _keys(m, _METHOD_KEYS, path, required=("name",))
        mname = _typed(md["name"], (str,), _join(path, "name"), "a method name")
        if mname in ANCHORS:
            raise ConfigError(
                f"{_join(path, 'name')}: the anchors {', '.join(ANCHORS)} take no parameters; got {mname!r}"
            )
        if mname in methods:
            raise ConfigError(f"{_join(path, 'name')}: method {mname!r} is listed twice")
        methods.append(mname)
        base = md.get("method")
        if base is not None:
            variants[mname] = _typed(base, (str,), _join(path, "method"), "a registered method name")
        params[mname] = dict(_typed(md.get("params", {}), (Mapping,), _join(path, "params"), "a mapping of parameters"))
        tp = _typed(md.get("tasks", {}), (Mapping,), _join(path, "tasks"), "a mapping task name -> parameters")
        for tname, tparams in tp.items():
            if tname not in task_names:
                raise ConfigError(
                    f"{_join(path, 'tasks')}.{tname}: no such task; tasks are {', '.join(sorted(task_names))}"
                )
            _typed(tparams, (Mapping,), f"{_join(path, 'tasks')}.{tname}", "a mapping of parameters")
        per_task[mname] = {str(k): dict(v) for k, v in tp.items()}
        if "only_tasks" in md:
            only = _typed(md["only_tasks"], (list, tuple), _join(path, "only_tasks"), "a list of task names")
            for j, tname in enumerate(only):
                if tname not in task_names:
                    raise ConfigError(
                        f"{_join(path, 'only_tasks')}[{j}]: no task named {tname!r}; tasks are {', '.join(sorted(task_names))}"
                    )
            only_tasks[mname] = tuple(only)
    description = _typed(d.get("description", ""), (str,), "description", "text")
    minutes = d.get("expected_minutes")
    suite = _wrap(
        "",
        lambda: Suite(
            name,
            description,
            tasks=tasks,
            methods=tuple(methods),
            seeds=seeds,
            method_params=params,
            expected_minutes=minutes,
            variants=variants,
            task_params=per_task,
            only_tasks=only_tasks,
        ),
    )
    if check_methods:
        from .suites import check_method_names

        try:
            check_method_names([variants.get(m, m) for m in suite.methods])
        except CreditlabError as exc:
            raise ConfigError(f"methods: {exc}") from None
    return suite


def load_suite(path: str | os.PathLike, *, check_methods: bool = True) -> Suite:
    """Read a suite file (``.yaml``/``.yml`` or ``.json``) and validate it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read suite file {p}: {exc.strerror or exc}") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    try:
        return suite_from_dict(data, check_methods=check_methods)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def get_suite(name: str) -> Suite:
    """A built-in suite by name: the YAML file ``creditlab/bench/configs/NAME.yaml``."""
    return load_suite(builtin_suite_path(name))


def list_suites() -> list[str]:
    """Names of the built-in suites."""
    return builtin_suites()


def builtin_suite_path(name: str) -> Path:
    """The packaged YAML file of a built-in suite."""
    path = Path(str(resources.files("creditlab.bench") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        raise ConfigError(
            f"no built-in suite named {name!r}; choose one of {', '.join(builtin_suites())} or pass --config FILE"
        )
    return path


def builtin_suites() -> list[str]:
    """Names of the built-in suites, in the order of their ``order`` comment-free file names."""
    folder = Path(str(resources.files("creditlab.bench") / "configs"))
    order = ["smoke", "standard", "long", "full"]
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    return [n for n in order if n in names] + [n for n in names if n not in order]


def suite_to_dict(suite: Suite) -> dict[str, Any]:
    """The suite file form of a :class:`Suite` (agents written inline)."""
    tasks = []
    for t in suite.tasks:
        agent = {
            "algo": t.agent.algo,
            "n_envs": t.agent.n_envs,
            "normalize": t.agent.normalize,
            "hyperparams": dict(t.agent.hyperparams),
        }
        if t.agent.policy != "MlpPolicy":
            agent["policy"] = t.agent.policy
        task: dict[str, Any] = {
            "name": t.name,
            "env": t.env_id,
            "family": t.family,
            "reward": t.reward,
            "steps": t.steps,
            "eval_every": t.eval_every,
            "eval_episodes": t.eval_episodes,
            "agent": agent,
        }
        if t.env_kwargs:
            task["env_kwargs"] = dict(t.env_kwargs)
        if t.imports:
            task["imports"] = list(t.imports)
        if not t.dense_twin:
            task["dense_twin"] = False
        if t.solve_threshold is not None:
            task["solve_threshold"] = t.solve_threshold
        if t.bsuite_settings:
            task["bsuite_settings"] = list(t.bsuite_settings)
        if t.contexts is not None:
            task["contexts"] = t.contexts
        if t.state_key is not None:
            task["state_key"] = t.state_key
        if t.notes:
            task["notes"] = t.notes
        tasks.append(task)
    methods: list[Any] = []
    for m in suite.methods:
        if m in ANCHORS:
            continue
        if m in suite.variants or suite.method_params.get(m) or suite.task_params.get(m) or m in suite.only_tasks:
            entry: dict[str, Any] = {"name": m}
            if m in suite.variants:
                entry["method"] = suite.variants[m]
            if suite.method_params.get(m):
                entry["params"] = dict(suite.method_params[m])
            if suite.task_params.get(m):
                entry["tasks"] = {k: dict(v) for k, v in suite.task_params[m].items()}
            if m in suite.only_tasks:
                entry["only_tasks"] = list(suite.only_tasks[m])
            methods.append(entry)
        else:
            methods.append(m)
    seeds: Any = len(suite.seeds) if suite.seeds == tuple(range(len(suite.seeds))) else list(suite.seeds)
    out: dict[str, Any] = {
        "name": suite.name,
        "description": suite.description,
        "seeds": seeds,
        "tasks": tasks,
        "methods": methods,
    }
    if suite.expected_minutes is not None:
        out["expected_minutes"] = suite.expected_minutes
    return out


def dump_suite(suite: Suite) -> str:
    """YAML text of a suite (what ``creditlab bench --show-config`` prints)."""
    import yaml

    return yaml.safe_dump(suite_to_dict(suite), sort_keys=False, width=120)
