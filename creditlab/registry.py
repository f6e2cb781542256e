"""One registry of named methods, shared by the CLI, the benchmark and the integrations.

A :class:`Method` says what it is (family, one-line summary, paper), which :class:`Episodes`
fields it needs, its default parameters, and how to run it on a batch:

* ``kind="advantages"``: ``run(episodes, **params) -> AdvantageOutput`` with per-step
  ``advantages[B, T]`` (group estimators broadcast their per-episode value to every step);
* ``kind="rewards"``: ``run(episodes, **params) -> RewardOutput`` with per-step ``rewards[B, T]``
  (reward transforms and stateless credit assignment);
* ``kind="assigner"``: ``factory(**params)`` builds a credit assigner object with
  ``fit``/``assign``/``state_dict`` (learned return decomposition; see ``creditlab.credit``).

Registration happens beside each definition, with the :func:`register_method` decorator (or
:func:`register` for a ready :class:`Method`). The registry never imports the modules that
register: it loads *providers*, the modules named in the ``creditlab.methods`` entry-point group
(creditlab's own packages are listed in its ``pyproject.toml``; a third-party package lists its own
the same way), the first time a method is looked up. A provider that fails to import raises
:class:`~creditlab.errors.PluginError`; nothing is swallowed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import PluginError, RangeError, UnknownMethodError

__all__ = ["Method", "register", "register_method", "get_method", "list_methods", "method_names", "load_providers"]

PROVIDER_GROUP = "creditlab.methods"

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


def register_method(
    name: str,
    *,
    family: str,
    summary: str,
    needs: tuple[str, ...] | list[str],
    kind: Kind,
    params: Mapping[str, Any] | None = None,
    source: str = "",
    replace: bool = False,
) -> Callable[[Any], Any]:
    """Decorator: register the object it decorates, beside its definition, and return it unchanged.

    * ``kind="advantages"`` / ``"rewards"``: decorate the adapter ``run(episodes, **params)``;
    * ``kind="assigner"``: decorate the assigner class (or a factory); ``creditlab methods`` and
      the CLI run it as "fit on the batch, then assign" (:func:`fit_assign`).

    ``params`` defaults to the keyword defaults of the decorated callable (for an assigner class
    with a ``Config`` dataclass: the dataclass's field defaults).

    Example:
        >>> @register_method("my_double", family="shaping", summary="twice the reward", needs=("rewards",),
        ...                  kind="rewards", replace=True)
        ... def run(episodes, *, scale=2.0):
        ...     ...
        >>> get_method("my_double").params
        {'scale': 2.0}
    """

    def deco(obj: Any) -> Any:
        defaults = dict(params) if params is not None else default_params(obj)
        if kind == "assigner":
            method = Method(
                name, family, summary, tuple(needs), kind, defaults, source, run=fit_assign(obj), factory=obj
            )
        else:
            method = Method(name, family, summary, tuple(needs), kind, defaults, source, run=obj)
        register(method, replace=replace)
        return obj

    return deco


def default_params(obj: Any) -> dict[str, Any]:
    """Keyword defaults of a callable, or the field defaults of ``obj.Config`` (a dataclass)."""
    import dataclasses
    import inspect

    config = getattr(obj, "Config", None)
    if config is not None and dataclasses.is_dataclass(config):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(config):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out
    sig = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    return {
        n: p.default
        for n, p in sig.parameters.items()
        if n != "self" and p.default is not inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def fit_assign(factory: Callable[..., Any]) -> Callable[..., Any]:
    """``run(episodes, **params)`` for an assigner: build it, fit it on the batch, assign the batch."""
    from .outputs import RewardOutput

    def run(episodes: Any, **params: Any) -> Any:
        assigner = factory(**params)
        fit_metrics = assigner.fit(episodes)
        out = assigner.assign(episodes)
        return RewardOutput(out.rewards, {**fit_metrics, **out.metrics}, getattr(out, "present", None))

    run.__name__ = f"fit_assign_{getattr(factory, '__name__', 'assigner')}"
    return run


_LOADED = False


def load_providers() -> None:
    """Import every module of the ``creditlab.methods`` entry-point group (once).

    Raises :class:`~creditlab.errors.PluginError` naming the entry point if one fails to import.
    """
    global _LOADED
    if _LOADED:
        return
    from importlib.metadata import entry_points

    _LOADED = True  # set first: a provider may call get_method while it is being imported
    for ep in sorted(entry_points(group=PROVIDER_GROUP), key=lambda e: e.name):
        try:
            ep.load()
        except Exception as exc:
            _LOADED = False
            raise PluginError(
                f"method provider {ep.name!r} ({ep.value}) of entry-point group {PROVIDER_GROUP!r} failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def get_method(name: str) -> Method:
    """Look a method up by name; the error lists close matches."""
    load_providers()
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
    load_providers()
    out = [m for m in _REGISTRY.values() if (family is None or m.family == family) and (kind is None or m.kind == kind)]
    return sorted(out, key=lambda m: (m.family, m.name))


def method_names(**filters: Any) -> list[str]:
    """Names of the registered methods (same filters as :func:`list_methods`)."""
    return [m.name for m in list_methods(**filters)]
