"""One registry of named methods, shared by the CLI, the benchmark and the integrations.

A :class:`Method` says what it is (family, one-line summary, paper), which :class:`Episodes`
fields it needs, its default parameters, and how to run it on a batch:

* ``kind="advantages"``: ``run(episodes, **params) -> AdvantageOutput`` with per-step
  ``advantages[B, T]`` (group estimators broadcast their per-episode value to every step);
* ``kind="rewards"``: ``run(episodes, **params) -> RewardOutput`` with per-step ``rewards[B, T]``
  (reward transforms and stateless credit assignment);
* ``kind="assigner"``: ``factory(**params)`` builds a credit assigner object with
  ``fit``/``assign``/``state_dict`` (learned return decomposition; see ``creditlab.credit``).

Third-party code registers its own methods with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import UnknownMethodError

__all__ = ["Method", "register", "get_method", "list_methods", "method_names"]

Kind = Literal["advantages", "rewards", "assigner"]


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        name: unique lower_snake name (CLI ``--method NAME``).
        family: "advantage", "normalization", "shaping", "credit", "exploration", ...
        summary: one line for ``creditlab methods``.
        needs: Episodes fields (or extras keys, written ``extras.<key>``) the method reads.
        kind: "advantages", "rewards" or "assigner" (see module docstring).
        params: default keyword parameters.
        source: paper or reference.
        run: callable for "advantages"/"rewards" kinds.
        factory: callable for the "assigner" kind.
    """

    name: str
    family: str
    summary: str
    needs: tuple[str, ...]
    kind: Kind
    params: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    run: Callable[..., Any] | None = None
    factory: Callable[..., Any] | None = None

    def __call__(self, episodes: Any, **params: Any) -> Any:
        """Run on an :class:`~creditlab.episodes.Episodes` with defaults overridden by ``params``."""
        if self.run is None:
            raise TypeError(f"method {self.name!r} is a {self.kind}; build it with .factory(**params)")
        for need in self.needs:
            check_need(episodes, need, self.name)
        unknown = set(params) - set(self.params)
        if unknown:
            from .errors import RangeError

            raise RangeError(
                f"method {self.name!r} has no parameter(s) {sorted(unknown)}; its parameters are {sorted(self.params)}"
            )
        return self.run(episodes, **{**self.params, **params})


def check_need(episodes: Any, need: str, method: str) -> None:
    """Check one entry of ``Method.needs`` against an Episodes batch.

    Forms: ``field`` (required), ``field?`` (optional), ``a|b`` (at least one of),
    ``extras.key`` (a per-step column kept in ``episodes.extras``), and combinations
    (``extras.length?``).
    """
    from .errors import MissingColumnError

    if need.endswith("?"):
        return
    options = need.split("|")

    def present(option: str) -> bool:
        if option.startswith("extras."):
            return option[len("extras.") :] in episodes.extras
        return getattr(episodes, option, None) is not None

    if any(present(o) for o in options):
        return
    if len(options) == 1:
        if need.startswith("extras."):
            key = need[len("extras.") :]
            raise MissingColumnError(f"method {method!r} needs a {key!r} column (episodes.extras[{key!r}])")
        episodes.require(need, method=method)
    raise MissingColumnError(f"method {method!r} needs one of episodes.{' / episodes.'.join(options)}")


_REGISTRY: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add a method to the registry (``replace=True`` to overwrite an existing name)."""
    if method.name in _REGISTRY and not replace:
        raise ValueError(f"a method named {method.name!r} is already registered")
    if method.kind in ("advantages", "rewards") and method.run is None:
        raise ValueError(f"method {method.name!r} of kind {method.kind!r} needs a run callable")
    if method.kind == "assigner" and method.factory is None:
        raise ValueError(f"method {method.name!r} of kind 'assigner' needs a factory")
    _REGISTRY[method.name] = method
    return method


def _ensure_builtins() -> None:
    from . import methods  # noqa: F401  (registers the built-in methods on import)


def get_method(name: str) -> Method:
    """Look a method up by name; the error lists close matches."""
    _ensure_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "."
        raise UnknownMethodError(
            f"no method named {name!r}{hint} Run `creditlab methods` for the list ({len(_REGISTRY)} methods)."
        ) from None


def list_methods(family: str | None = None, kind: str | None = None) -> list[Method]:
    """Registered methods sorted by (family, name), optionally filtered by family and kind."""
    _ensure_builtins()
    out = [m for m in _REGISTRY.values() if (family is None or m.family == family) and (kind is None or m.kind == kind)]
    return sorted(out, key=lambda m: (m.family, m.name))


def method_names(**filters: Any) -> list[str]:
    """Names of the registered methods (same filters as :func:`list_methods`)."""
    return [m.name for m in list_methods(**filters)]

