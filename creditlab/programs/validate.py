"""Validation of LLM-written programs: static (AST) rules first, then sandboxed probe runs.

Static rules are early feedback for honest mistakes (a clear message for ``import os``), not a
security layer: they are bypassable (modules reachable from NumPy objects hand out ``os`` and the
builtins), and the kernel isolation of the sandbox contains what gets through. They reject:

* imports other than ``math`` and ``numpy`` (and their submodules);
* names that reach files, processes, code evaluation or introspection (``open``, ``exec``,
  ``eval``, ``compile``, ``__import__``, ``getattr``, ``globals``, ``vars``, ``type``, ``object`` ...);
* any attribute starting with ``_`` (``__subclasses__``, ``__globals__``, ``__class__``, ``_wrap_close``...);
* NumPy attributes that read or write files or expose raw memory (``np.load``, ``np.save``,
  ``np.fromfile``, ``tofile``, ``np.memmap``, ``np.lib``, ``ctypes``, ``np.testing``, ...);
* class definitions, ``global``/``nonlocal``, async code, assignments to attributes of imported
  modules (``np.sum = ...``);
* a program without the entry function, or whose entry function takes too few arguments.

Dynamic checks (:func:`check_program`) run the program in a :class:`SandboxedProgram` on a probe
batch and check the result's type and shapes, finiteness, determinism (two identical calls) and
row independence (the batch split in two gives the same rows).
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..errors import RangeError
from .errors import ProgramError
from .sandbox import SandboxConfig, SandboxedProgram

__all__ = [
    "StaticProblem",
    "ValidationReport",
    "check_static",
    "check_program",
    "KINDS",
    "ALLOWED_IMPORTS",
]

ALLOWED_IMPORTS = ("math", "numpy")

FORBIDDEN_NAMES = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "__import__",
        "globals",
        "locals",
        "vars",
        "dir",
        "getattr",
        "setattr",
        "delattr",
        "hasattr",
        "input",
        "breakpoint",
        "help",
        "exit",
        "quit",
        "memoryview",
        "type",
        "object",
        "super",
        "classmethod",
        "staticmethod",
        "property",
        "id",
        "__builtins__",
        "__loader__",
        "__spec__",
        "__file__",
        "__name__",
        "bytearray",
        "license",
        "credits",
        "copyright",
    }
)

FORBIDDEN_ATTRIBUTES = frozenset(
    {
        "load",
        "loads",
        "save",
        "savez",
        "savez_compressed",
        "savetxt",
        "loadtxt",
        "fromfile",
        "tofile",
        "memmap",
        "genfromtxt",
        "fromregex",
        "ctypes",
        "ctypeslib",
        "lib",
        "f2py",
        "distutils",
        "testing",
        "DataSource",
        "dump",
        "dumps",
        "system",
        "popen",
        "setbufsize",
        "seterrcall",
        "show_config",
        "show_runtime",
        "info",
        "lookfor",
        "source",
        "get_include",
        "byte_bounds",
        "__array_interface__",
        "add_docstring",
        "add_newdoc",
        "char",
        "rec",
        "exceptions",
        "typing",
    }
)

#: kind -> (entry function, number of positional arguments, sandbox mode)
KINDS: dict[str, tuple[str, int, str]] = {
    "factors": ("evaluation_func", 2, "factors"),
    "reward": ("compute_reward", 3, "reward"),
}

MAX_CODE_CHARS = 100_000
MAX_AST_NODES = 20_000


class StaticProblem(NamedTuple):
    """A static-rule violation: where and why."""

    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ValidationReport:
    """The outcome of validating one program.

    Attributes:
        ok: True when every check passed.
        stage: the last stage reached: ``static``, ``load``, ``run``, ``checks``.
        problems: why the program was rejected (empty when ``ok``).
        notes: remarks that do not reject (a constant factor, a ``[B]`` factor treated as ``[B, 1]``).
        failure_kind: ``static``, ``timeout``, ``memory``, ``cpu``, ``refused``, ``error``, ``crash``,
            ``output`` or ``invalid`` when rejected, else ``None``.
        num_factors: factors returned (``factors`` programs).
        component_names: reward components returned (``reward`` programs).
        layers: isolation layers active in the sandbox that ran it.
        seconds: time spent validating.
    """

    ok: bool
    stage: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failure_kind: str | None = None
    num_factors: int | None = None
    component_names: list[str] = field(default_factory=list)
    layers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def feedback(self) -> str:
        """The error text sent back to the LLM in a repair round."""
        return "\n".join(self.problems) if self.problems else "no error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stage": self.stage,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "failure_kind": self.failure_kind,
            "num_factors": self.num_factors,
            "component_names": list(self.component_names),
            "layers": dict(self.layers),
            "seconds": self.seconds,
        }


# ---------------------------------------------------------------------- static


def check_static(code: str, *, entry: str | None = None, min_args: int = 0) -> list[StaticProblem]:
    """Static rules on the program's AST; returns the problems found (empty list: passed).

    Example:
        >>> [str(p) for p in check_static("import os\\ndef f(x):\\n    return x.__class__")]
        ["line 1: import of 'os' is not allowed (allowed: math, numpy)", "line 3: attribute '__class__' is not allowed (names starting with '_' reach interpreter internals)"]
    """
    if not isinstance(code, str):
        return [StaticProblem(0, 0, f"the program must be a string of Python source; got {type(code).__name__}")]
    if len(code) > MAX_CODE_CHARS:
        return [StaticProblem(0, 0, f"the program has {len(code)} characters; at most {MAX_CODE_CHARS} are allowed")]
    try:
        tree = ast.parse(code, filename="<program>")
    except SyntaxError as exc:
        return [StaticProblem(exc.lineno or 0, exc.offset or 0, f"SyntaxError: {exc.msg}")]
    except (ValueError, MemoryError, RecursionError) as exc:
        return [StaticProblem(0, 0, f"the program cannot be parsed: {type(exc).__name__}: {exc}")]
    problems: list[StaticProblem] = []
    count = 0

    def add(node: ast.AST, message: str) -> None:
        problems.append(StaticProblem(getattr(node, "lineno", 0), getattr(node, "col_offset", 0), message))

    for node in ast.walk(tree):
        count += 1
        if count > MAX_AST_NODES:
            add(node, f"the program is too large (more than {MAX_AST_NODES} syntax nodes)")
            break
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in ALLOWED_IMPORTS:
                    add(node, f"import of {alias.name!r} is not allowed (allowed: {', '.join(ALLOWED_IMPORTS)})")
                elif any(part in FORBIDDEN_ATTRIBUTES or part.startswith("_") for part in alias.name.split(".")[1:]):
                    add(node, f"import of {alias.name!r} is not allowed (file, memory or test utilities)")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level or mod.split(".")[0] not in ALLOWED_IMPORTS:
                add(
                    node,
                    f"import from {('.' * node.level) + mod!r} is not allowed (allowed: {', '.join(ALLOWED_IMPORTS)})",
                )
            elif any(part in FORBIDDEN_ATTRIBUTES or part.startswith("_") for part in mod.split(".")[1:]):
                add(node, f"import from {mod!r} is not allowed (file, memory or test utilities)")
            for alias in node.names:
                if alias.name == "*":
                    add(node, "'from ... import *' is not allowed; import the names you use")
                elif alias.name in FORBIDDEN_ATTRIBUTES or alias.name.startswith("_"):
                    add(node, f"importing {alias.name!r} is not allowed (it reads/writes files or reaches internals)")
        elif isinstance(node, ast.Name):
            if node.id in FORBIDDEN_NAMES:
                add(node, f"name {node.id!r} is not allowed (files, code evaluation or introspection)")
            elif node.id.startswith("__"):
                add(node, f"name {node.id!r} is not allowed (dunder names reach interpreter internals)")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                add(
                    node,
                    f"attribute {node.attr!r} is not allowed (names starting with '_' reach interpreter internals)",
                )
            elif node.attr in FORBIDDEN_ATTRIBUTES:
                add(
                    node,
                    f"attribute {node.attr!r} is not allowed (it reads/writes files, exposes memory or runs other code)",
                )
        elif isinstance(node, (ast.ClassDef, ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)):
            add(node, f"{type(node).__name__} is not allowed; write plain functions")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            add(node, f"'{type(node).__name__.lower()}' statements are not allowed")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "__" in node.value
            and len(node.value) < 200
        ):
            if any(tok.startswith("__") and tok.endswith("__") for tok in node.value.replace(".", " ").split()):
                add(node, "strings naming dunder attributes are not allowed")
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.update(a.asname or a.name for a in node.names)
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for tgt in targets:
            for sub in ast.walk(tgt):
                if isinstance(sub, ast.Attribute):
                    root = sub.value
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    if isinstance(root, ast.Name) and root.id in modules:
                        add(sub, f"changing attributes of the module {root.id!r} is not allowed")
    if entry is not None:
        fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry]
        if not fns:
            problems.append(StaticProblem(0, 0, f"the program defines no top-level function {entry!r}"))
        else:
            args = fns[-1].args
            n_pos = len(args.posonlyargs) + len(args.args)
            if n_pos < min_args and args.vararg is None:
                problems.append(
                    StaticProblem(
                        fns[-1].lineno, 0, f"{entry} takes {n_pos} positional argument(s); it must accept {min_args}"
                    )
                )
    return problems


# ---------------------------------------------------------------------- dynamic


def _kind(kind: str) -> tuple[str, int, str]:
    if kind not in KINDS:
        raise RangeError(f"kind must be one of {sorted(KINDS)}; got {kind!r}")
    return KINDS[kind]


def check_program(
    code: str,
    kind: str,
    obs: np.ndarray,
    act: np.ndarray,
    *,
    next_obs: np.ndarray | None = None,
    config: SandboxConfig | None = None,
    max_factors: int = 64,
) -> ValidationReport:
    """Validate a program statically, then run it in the sandbox on a probe batch.

    Args:
        code: the program's source.
        kind: ``factors`` (LaRe ``evaluation_func(observation, action) -> list of [B, 1]``) or
            ``reward`` (``compute_reward(observation, action, next_observation) -> (reward[B], {name: [B]})``).
        obs: float[B, obs_dim] -- probe observations (:meth:`TaskSpec.probe_batch` makes them); B >= 2.
        act: float[B, act_dim] -- probe actions.
        next_obs: float[B, obs_dim] -- probe next observations for ``reward`` programs (default:
            ``obs`` shifted by one row).
        config: sandbox limits.
        max_factors: most factors a ``factors`` program may return.

    Returns:
        A :class:`ValidationReport`; never raises for a bad program.
    """
    entry, nargs, mode = _kind(kind)
    obs = np.asarray(obs, dtype=np.float64)
    act = np.asarray(act, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[0] < 2:
        raise RangeError(f"obs must be float[B, obs_dim] with B >= 2; got shape {obs.shape}")
    if act.ndim != 2 or act.shape[0] != obs.shape[0]:
        raise RangeError(f"act must be float[B, act_dim] with B = {obs.shape[0]}; got shape {act.shape}")
    args = [obs, act]
    if nargs == 3:
        nxt = np.roll(obs, -1, axis=0) if next_obs is None else np.asarray(next_obs, dtype=np.float64)
        if nxt.shape != obs.shape:
            raise RangeError(f"next_obs must have the shape of obs {obs.shape}; got {nxt.shape}")
        args.append(nxt)
    t0 = time.perf_counter()
    report = ValidationReport(ok=False, stage="static")
    static = check_static(code, entry=entry, min_args=nargs)
    if static:
        report.problems = [str(p) for p in static]
        report.failure_kind = "static"
        report.seconds = time.perf_counter() - t0
        return report
    b = obs.shape[0]
    per_row_limit = (max_factors + 1) * 8 if kind == "factors" else 66 * 8
    prog = SandboxedProgram(code, entry=entry, mode=mode, config=config)
    try:
        report.stage = "load"
        prog.start()
        report.layers = prog.layers
        report.stage = "run"
        limit = per_row_limit * b + 4096
        first = prog.call(*args, max_output_bytes=limit)
        report.stage = "checks"
        problems, notes, info = _check_outputs(first.outputs, kind, b, max_factors)
        if not problems:
            second = prog.call(*args, max_output_bytes=limit)
            if list(second.outputs) != list(first.outputs) or not all(
                np.array_equal(first.outputs[k], second.outputs[k], equal_nan=True) for k in first.outputs
            ):
                problems.append(
                    "the program is not deterministic: two calls on the same batch gave different results "
                    "(do not use random numbers or state kept between calls)"
                )
        if not problems:
            half = b // 2
            parts = [
                prog.call(*[a[sl] for a in args], max_output_bytes=limit) for sl in (slice(0, half), slice(half, b))
            ]
            for name, full in first.outputs.items():
                try:
                    joined = np.concatenate([p.outputs[name].reshape(-1, *full.shape[1:]) for p in parts], axis=0)
                except (KeyError, ValueError):
                    joined = None
                if (
                    joined is None
                    or joined.shape != full.shape
                    or not np.allclose(joined, full, rtol=1e-6, atol=1e-9, equal_nan=True)
                ):
                    problems.append(
                        f"{_label(name)} depends on other rows of the batch (splitting the batch changes it); "
                        "compute each row from its own observation and action only, with no statistics over the batch"
                    )
                    break
        report.problems = problems
        report.notes = notes
        report.num_factors = info.get("num_factors")
        report.component_names = info.get("component_names", [])
        report.ok = not problems
        if problems:
            report.failure_kind = "invalid"
    except ProgramError as exc:
        report.problems = [exc.reason]
        report.failure_kind = exc.kind
        report.layers = report.layers or prog.layers
    finally:
        prog.close()
        report.seconds = time.perf_counter() - t0
    return report


def _label(name: str) -> str:
    if name.startswith("factor_"):
        return f"factor {name[7:]}"
    if name.startswith("component:"):
        return f"component {name[10:]!r}"
    return "the total reward" if name == "reward" else name


def _check_outputs(
    outputs: dict[str, np.ndarray], kind: str, b: int, max_factors: int
) -> tuple[list[str], list[str], dict]:
    problems: list[str] = []
    notes: list[str] = []
    info: dict[str, Any] = {}
    names = list(outputs)
    if kind == "factors":
        info["num_factors"] = len(names)
        if not names:
            problems.append("evaluation_func returned an empty list; return at least one factor")
        if len(names) > max_factors:
            problems.append(f"evaluation_func returned {len(names)} factors; at most {max_factors} are allowed")
    else:
        info["component_names"] = [n[10:] for n in names if n.startswith("component:")]
    for name in names:
        arr = outputs[name]
        label = _label(name)
        expected = f"[B, 1] = ({b}, 1)" if kind == "factors" else f"[B] = ({b},)"
        if arr.shape in ((b, 1), (b,)):
            if kind == "factors" and arr.shape == (b,):
                notes.append(f"{label} has shape ({b},); treated as ({b}, 1)")
            if kind == "reward" and arr.shape == (b, 1):
                notes.append(f"{label} has shape ({b}, 1); treated as ({b},)")
        else:
            problems.append(f"{label} has shape {arr.shape}; expected {expected} for a batch of B = {b}")
            continue
        bad = ~np.isfinite(arr.reshape(b))
        if bad.any():
            rows = np.nonzero(bad)[0][:5].tolist()
            what = "NaN" if np.isnan(arr).any() else "inf"
            problems.append(
                f"{label} is not finite ({what}) on {int(bad.sum())} of {b} probe rows (rows {rows}); "
                "guard divisions and logarithms (add a small constant, clip)"
            )
        elif b > 2 and np.ptp(arr) == 0:
            notes.append(f"{label} is constant on the probe batch ({float(arr.reshape(-1)[0]):g})")
    return problems, notes, info
