"""Task spec files: what an LLM is told about a task (YAML or JSON).

A spec names the goal in natural language and describes the observation and action vectors
dimension by dimension, as LaRe's environment prompt does. Example (YAML)::

    name: reacher
    goal: Move the fingertip of a two-joint arm to a target that appears at a random place.
    observation:
      - {dims: 0-1, name: cos_angles, description: cosine of the two joint angles, low: -1, high: 1}
      - {dims: 2-3, name: sin_angles, description: sine of the two joint angles, low: -1, high: 1}
      - {dims: 4-5, name: target, description: target x and y, low: -0.2, high: 0.2}
    action:
      - {dims: 0-1, name: torques, description: torques on the two joints, low: -1, high: 1}
    constraints:
      - keep the torques small
    episode: Episodes last 50 steps; the return is only revealed at the last step.

Fields: ``name``, ``goal`` (required); ``observation`` and ``action`` (required lists of blocks with
``dims`` -- an int, ``"a-b"`` (inclusive) or ``[a, b]`` -- plus ``name``, ``description``, optional
``low``/``high``); ``obs_dim``/``act_dim`` (default: one past the largest described dim);
``action_type`` (``continuous`` or ``discrete``; discrete actions are one integer with ``num_actions``
values); ``constraints`` (list of str); ``episode``, ``success`` (str); ``env_id`` (a Gymnasium id used
by the default trainer); ``notes`` (str).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SpecError

__all__ = ["TaskSpec", "DimBlock", "load_spec"]


@dataclass(frozen=True)
class DimBlock:
    """A block of consecutive dimensions ``[start, stop)`` of the observation or action vector."""

    start: int
    stop: int
    name: str
    description: str = ""
    low: float | None = None
    high: float | None = None

    def label(self, var: str) -> str:
        idx = f"{var}[:, {self.start}]" if self.stop - self.start == 1 else f"{var}[:, {self.start}:{self.stop}]"
        rng = ""
        if self.low is not None or self.high is not None:
            rng = f" (range {self.low if self.low is not None else '-inf'} to {self.high if self.high is not None else 'inf'})"
        desc = f": {self.description}" if self.description else ""
        return f"{idx} -- {self.name}{desc}{rng}"


@dataclass(frozen=True)
class TaskSpec:
    """A task described for an LLM: goal, observation and action semantics, constraints.

    Build it with :func:`load_spec` (file) or :meth:`from_dict`.
    """

    name: str
    goal: str
    observation: tuple[DimBlock, ...]
    action: tuple[DimBlock, ...]
    obs_dim: int
    act_dim: int
    action_type: str = "continuous"
    num_actions: int | None = None
    constraints: tuple[str, ...] = ()
    episode: str = ""
    success: str = ""
    env_id: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction

    @staticmethod
    def from_dict(data: Any, *, source: str = "spec") -> TaskSpec:
        """Validate a parsed spec (dict) and build a :class:`TaskSpec`.

        Example:
            >>> spec = TaskSpec.from_dict({"name": "t", "goal": "reach", "observation": [{"dims": "0-1", "name": "pos"}],
            ...                            "action": [{"dims": 0, "name": "force"}]})
            >>> spec.obs_dim, spec.act_dim
            (2, 1)
        """
        if not isinstance(data, dict):
            raise SpecError(f"{source}: a spec must be a mapping (YAML/JSON object); got {type(data).__name__}")
        known = {
            "name",
            "goal",
            "observation",
            "action",
            "obs_dim",
            "act_dim",
            "action_type",
            "num_actions",
            "constraints",
            "episode",
            "success",
            "env_id",
            "notes",
            "extra",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"{source}: unknown field(s) {unknown}; known fields are {sorted(known)}")
        for key in ("name", "goal"):
            if not isinstance(data.get(key), str) or not data[key].strip():
                raise SpecError(f"{source}: field {key!r} must be a non-empty string; got {data.get(key)!r}")
        action_type = data.get("action_type", "continuous")
        if action_type not in ("continuous", "discrete"):
            raise SpecError(f"{source}: action_type must be 'continuous' or 'discrete'; got {action_type!r}")
        obs = _blocks(data.get("observation"), "observation", source)
        act = _blocks(data.get("action"), "action", source)
        obs_dim = _dim(data.get("obs_dim"), obs, "obs_dim", source)
        act_dim = _dim(data.get("act_dim"), act, "act_dim", source)
        num_actions = data.get("num_actions")
        if action_type == "discrete":
            if not isinstance(num_actions, int) or num_actions < 2:
                raise SpecError(
                    f"{source}: a discrete action_type needs num_actions (an int >= 2); got {num_actions!r}"
                )
            if act_dim != 1:
                raise SpecError(f"{source}: a discrete action is one integer (act_dim 1); got act_dim {act_dim}")
        constraints = data.get("constraints", []) or []
        if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
            raise SpecError(f"{source}: constraints must be a list of strings; got {constraints!r}")
        for key in ("episode", "success", "notes"):
            if not isinstance(data.get(key, ""), str):
                raise SpecError(f"{source}: field {key!r} must be a string; got {type(data[key]).__name__}")
        env_id = data.get("env_id")
        if env_id is not None and not isinstance(env_id, str):
            raise SpecError(f"{source}: env_id must be a string (a Gymnasium id); got {env_id!r}")
        extra = data.get("extra", {}) or {}
        if not isinstance(extra, dict):
            raise SpecError(f"{source}: extra must be a mapping; got {type(extra).__name__}")
        return TaskSpec(
            name=data["name"].strip(),
            goal=data["goal"].strip(),
            observation=obs,
            action=act,
            obs_dim=obs_dim,
            act_dim=act_dim,
            action_type=action_type,
            num_actions=num_actions,
            constraints=tuple(c.strip() for c in constraints),
            episode=data.get("episode", "").strip(),
            success=data.get("success", "").strip(),
            env_id=env_id,
            notes=data.get("notes", "").strip(),
            extra=dict(extra),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict that :meth:`from_dict` reads back."""
        d = asdict(self)

        def block(b: dict) -> dict:
            out = {"dims": [b["start"], b["stop"] - 1], "name": b["name"], "description": b["description"]}
            if b["low"] is not None:
                out["low"] = b["low"]
            if b["high"] is not None:
                out["high"] = b["high"]
            return out

        d["observation"] = [block(b) for b in d["observation"]]
        d["action"] = [block(b) for b in d["action"]]
        d["constraints"] = list(self.constraints)
        return {k: v for k, v in d.items() if v not in (None, "", [], {}) or k in ("name", "goal")}

    # ------------------------------------------------------------------ prompt helpers

    def describe_observation(self, var: str = "observation") -> str:
        lines = [f"  {b.label(var)}" for b in self.observation]
        described = {i for b in self.observation for i in range(b.start, b.stop)}
        missing = [i for i in range(self.obs_dim) if i not in described]
        if missing:
            lines.append(f"  {var}[:, {_ranges(missing)}] -- not described (do not rely on them)")
        return "\n".join(lines)

    def describe_action(self, var: str = "action") -> str:
        if self.action_type == "discrete":
            b = self.action[0]
            return f"  {var}[:, 0] -- {b.name}: integer in 0..{self.num_actions - 1} (stored as float){': ' + b.description if b.description else ''}"
        return "\n".join(f"  {b.label(var)}" for b in self.action)

    def describe_values(self, obs: Any, var: str = "observation", digits: int = 3) -> str:
        """One vector as named values, e.g. ``pos=[0.1, -0.2]; vel=0.5`` (for per-transition prompts)."""
        x = np.asarray(obs, dtype=np.float64).ravel()
        blocks = self.observation if var.startswith("obs") else self.action
        parts = []
        for b in blocks:
            vals = np.round(x[b.start : b.stop], digits).tolist()
            parts.append(f"{b.name}={vals[0] if len(vals) == 1 else vals}")
        return "; ".join(parts)

    def probe_batch(self, n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A batch of plausible inputs ``(obs[n, obs_dim], act[n, act_dim])`` for validation runs.

        Dims with ``low``/``high`` are drawn uniformly in range, others from N(0, 1); the first row
        is all zeros (clipped into range) and the second sits on the upper bounds, to expose
        divisions by zero and edge cases.
        """
        rng = np.random.default_rng(seed)
        obs = _sample(self.observation, self.obs_dim, n, rng)
        if self.action_type == "discrete":
            act = rng.integers(0, self.num_actions, size=(n, 1)).astype(np.float64)
            act[0] = 0
        else:
            act = _sample(self.action, self.act_dim, n, rng)
        return obs, act


def load_spec(path: str | Path) -> TaskSpec:
    """Read a task spec from a YAML (``.yaml``/``.yml``) or JSON (``.json``) file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"spec file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - pyyaml is in the llm extra
            raise SpecError("reading YAML specs needs pyyaml: pip install 'creditlab[llm]'") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"{p}: not valid YAML: {exc}") from exc
    elif p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{p}: not valid JSON: {exc}") from exc
    else:
        raise SpecError(f"{p}: unknown spec file type {p.suffix!r}; expected .yaml, .yml or .json")
    return TaskSpec.from_dict(data, source=str(p))


# ---------------------------------------------------------------------- helpers


def _parse_dims(d: Any, where: str) -> tuple[int, int]:
    if isinstance(d, bool):
        raise SpecError(f"{where}: dims must be an int, 'a-b' or [a, b]; got {d!r}")
    if isinstance(d, int):
        lo, hi = d, d
    elif isinstance(d, str) and re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", d):
        parts = [int(x) for x in d.split("-")]
        lo, hi = parts[0], parts[-1]
    elif (
        isinstance(d, (list, tuple)) and len(d) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in d)
    ):
        lo, hi = d
    else:
        raise SpecError(f"{where}: dims must be an int, 'a-b' (inclusive) or [a, b]; got {d!r}")
    if lo < 0 or hi < lo:
        raise SpecError(f"{where}: dims {d!r} must satisfy 0 <= a <= b")
    return lo, hi + 1


def _blocks(raw: Any, field_name: str, source: str) -> tuple[DimBlock, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"{source}: {field_name!r} must be a non-empty list of dimension blocks; got {raw!r}")
    out = []
    taken: dict[int, str] = {}
    for i, item in enumerate(raw):
        where = f"{source}: {field_name}[{i}]"
        if not isinstance(item, dict):
            raise SpecError(f"{where} must be a mapping with dims/name/description; got {item!r}")
        dims = item.get("dims", item.get("dim"))
        if dims is None:
            raise SpecError(f"{where} has no 'dims'")
        start, stop = _parse_dims(dims, where)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f"{where} needs a non-empty 'name'")
        bad = sorted(set(item) - {"dims", "dim", "name", "description", "low", "high"})
        if bad:
            raise SpecError(f"{where} has unknown key(s) {bad}")
        lo, hi = item.get("low"), item.get("high")
        for key, v in (("low", lo), ("high", hi)):
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v)):
                raise SpecError(f"{where}: {key} must be a finite number; got {v!r}")
        if lo is not None and hi is not None and lo > hi:
            raise SpecError(f"{where}: low {lo} is above high {hi}")
        for j in range(start, stop):
            if j in taken:
                raise SpecError(f"{where}: dim {j} is already described by {taken[j]!r}")
            taken[j] = name
        out.append(
            DimBlock(
                start,
                stop,
                name.strip(),
                str(item.get("description", "")).strip(),
                None if lo is None else float(lo),
                None if hi is None else float(hi),
            )
        )
    return tuple(sorted(out, key=lambda b: b.start))


def _dim(value: Any, blocks: tuple[DimBlock, ...], name: str, source: str) -> int:
    needed = max(b.stop for b in blocks)
    if value is None:
        return needed
    if not isinstance(value, int) or isinstance(value, bool) or value < needed:
        raise SpecError(f"{source}: {name} must be an int >= {needed} (the described dims); got {value!r}")
    return value


def _ranges(idx: list[int]) -> str:
    parts, start = [], idx[0]
    for a, b in zip(idx, idx[1:] + [None]):
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}:{a + 1}")
            start = b
    return ", ".join(parts)


def _sample(blocks: tuple[DimBlock, ...], dim: int, n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    lo = np.full(dim, -np.inf)
    hi = np.full(dim, np.inf)
    for b in blocks:
        if b.low is not None:
            lo[b.start : b.stop] = b.low
        if b.high is not None:
            hi[b.start : b.stop] = b.high
    both = np.isfinite(lo) & np.isfinite(hi)
    x[:, both] = rng.uniform(lo[both], hi[both], size=(n, int(both.sum())))
    x = np.clip(x, lo, hi)
    x[0] = np.clip(0.0, lo, hi)
    if n > 1:
        x[1] = np.where(np.isfinite(hi), hi, 1.0)
    return x
