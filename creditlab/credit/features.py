"""Latent-factor functions phi(s, a) for LaRe: the guard around them and hand-written examples.

LaRe (Qu et al., AAAI 2025, arXiv 2412.11120) encodes each step into a few interpretable
factors with a function written by an LLM, ``evaluation_func(observation, action)``, and learns
a small decoder from the factors to a reward. Any Python callable works here; this module holds

* :class:`FeatureGuard`, which calls the function on a batch, checks what comes back (a list of
  ``[N]``/``[N, 1]`` factor arrays, or one ``[N, d]`` array), keeps ``d`` fixed across calls, and
  replaces NaN/inf factors (or raises, with ``on_nonfinite="raise"``);
* hand-written feature functions for the evidence tasks (``HAND_WRITTEN``), standing in for the
  LLM-generated ones of a later issue.

A feature function receives ``observations[N, obs]`` and ``actions[N, act]`` (float32 NumPy
arrays; discrete actions one-hot) and, if it sets ``needs_next_observations = True`` (or the
assigner is built with ``use_next_observations=True``), ``next_observations[N, obs]`` as a
third argument. It must not read anything else (in particular not the hidden reward).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..errors import CreditlabWarning, DtypeError, NonFiniteError, RangeError, ShapeError


class FeatureValueWarning(CreditlabWarning):
    """A feature function returned values that were replaced (NaN/inf) or clipped (beyond ``clip``)."""


__all__ = [
    "FeatureGuard",
    "FeatureValueWarning",
    "HAND_WRITTEN",
    "resolve_features",
    "hopper_features",
    "cartpole_features",
]


class FeatureGuard:
    """Validate and sanitize the output of a feature function phi.

    Args:
        fn: ``fn(observations, actions[, next_observations]) -> factors``.
        on_nonfinite: ``"guard"`` (default) replaces NaN by 0 and +/-inf by +/-``clip`` and counts
            the replaced entries in ``credit/nonfinite_factors``; ``"raise"`` raises
            :class:`~creditlab.errors.NonFiniteError`.
        clip: factors are clipped to ``[-clip, clip]`` (guards absurd scales before normalization).
            Clipped finite values are counted in ``credit/clipped_factors`` (NaN/inf separately in
            ``credit/nonfinite_factors``); the first call that replaces or clips anything warns
            once (:class:`~creditlab.errors.FeatureValueWarning`), so a program that behaved on
            its probe batch and returns 1e300 later is not clipped silently.
        use_next_observations: pass ``next_observations`` as a third argument.

    Example:
        >>> guard = FeatureGuard(lambda s, a: [s[:, 0], np.where(s[:, 1] > 0, s[:, 1], -np.inf)])
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     x, m = guard(np.array([[1.0, 1.0], [2.0, 0.0]], np.float32), np.zeros((2, 1), np.float32))
        >>> x.tolist(), m["credit/nonfinite_factors"], m["credit/clipped_factors"]      # -inf -> -clip
        ([[1.0, 1.0], [2.0, -1000000.0]], 1.0, 0.0)
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        on_nonfinite: str = "guard",
        clip: float = 1e6,
        use_next_observations: bool = False,
    ):
        if not callable(fn):
            raise DtypeError(
                f"features must be callable phi(observations, actions) -> factors; got {type(fn).__name__}"
            )
        if on_nonfinite not in ("guard", "raise"):
            raise RangeError(f"on_nonfinite must be 'guard' or 'raise'; got {on_nonfinite!r}")
        self.fn = fn
        self.on_nonfinite = on_nonfinite
        self.clip = float(clip)
        self.use_next = bool(use_next_observations or getattr(fn, "needs_next_observations", False))
        self.num_factors: int | None = None
        self.name = getattr(fn, "__name__", type(fn).__name__)
        self.warned = False

    def __call__(
        self, observations: np.ndarray, actions: np.ndarray, next_observations: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        n = observations.shape[0]
        if self.use_next:
            if next_observations is None:
                raise ShapeError(
                    f"feature function {self.name!r} needs next_observations, which the episodes do not provide"
                )
            raw = self.fn(observations, actions, next_observations)
        else:
            raw = self.fn(observations, actions)
        x = self._stack(raw, n)
        if self.num_factors is None:
            self.num_factors = x.shape[1]
        elif x.shape[1] != self.num_factors:
            raise ShapeError(
                f"feature function {self.name!r} returned {x.shape[1]} factors per step but {self.num_factors} on its first call; "
                "it must return the same number of factors every time"
            )
        bad = ~np.isfinite(x)
        n_bad = int(bad.sum())
        if n_bad:
            if self.on_nonfinite == "raise":
                i, j = (int(v) for v in np.argwhere(bad)[0])
                raise NonFiniteError(
                    f"feature function {self.name!r} returned {x[i, j]} for factor {j} of step {i} ({n_bad} non-finite entries); "
                    "fix the function (e.g. guard divisions) or build the assigner with on_nonfinite='guard'"
                )
            x = np.nan_to_num(x, nan=0.0, posinf=self.clip, neginf=-self.clip)
        n_clip = int((np.abs(x) > self.clip).sum())
        np.clip(x, -self.clip, self.clip, out=x)
        if (n_bad or n_clip) and not self.warned:
            self.warned = True
            warnings.warn(
                f"feature function {self.name!r} returned {n_bad} non-finite value(s) (replaced) and {n_clip} value(s) "
                f"beyond +/-{self.clip:g} (clipped) in a batch of {n} steps; counted in credit/nonfinite_factors and "
                "credit/clipped_factors (warned once)",
                FeatureValueWarning,
                stacklevel=3,
            )
        return x.astype(np.float32), {"credit/nonfinite_factors": float(n_bad), "credit/clipped_factors": float(n_clip)}

    def _stack(self, raw: Any, n: int) -> np.ndarray:
        def arr(v: Any, what: str) -> np.ndarray:
            if isinstance(v, torch.Tensor):
                v = v.detach().cpu().numpy()
            a = np.asarray(v)
            if a.dtype == object or a.dtype.kind not in "fiub":
                raise DtypeError(f"feature function {self.name!r} returned {what} of dtype {a.dtype}; expected numbers")
            return a.astype(np.float64)  # checked and clipped in float64: 1e300 is a clipped value, not an inf

        if isinstance(raw, (list, tuple)):
            if len(raw) == 0:
                raise ShapeError(f"feature function {self.name!r} returned an empty list; expected at least one factor")
            cols = []
            for j, f in enumerate(raw):
                a = arr(f, f"factor {j}")
                if a.ndim == 0:
                    a = np.full(n, float(a), dtype=np.float64)
                if a.shape not in ((n,), (n, 1)):
                    raise ShapeError(
                        f"feature function {self.name!r} returned factor {j} with shape {a.shape}; expected ({n},) or ({n}, 1) "
                        f"for a batch of {n} steps"
                    )
                cols.append(a.reshape(n))
            return np.stack(cols, axis=1)
        a = arr(raw, "an array")
        if a.ndim == 1 and a.shape[0] == n:
            return a.reshape(n, 1)
        if a.ndim == 2 and a.shape[0] == n:
            return np.ascontiguousarray(a)
        raise ShapeError(
            f"feature function {self.name!r} returned shape {a.shape}; expected [N, d] (or a list of [N] factors) with N = {n} steps"
        )


# ------------------------------------------------------------------------------ hand-written factors


def hopper_features(observations: np.ndarray, actions: np.ndarray, next_observations: np.ndarray) -> list[np.ndarray]:
    """Hand-written latent factors for Hopper-v5 (default observation, 11 values).

    Factors: forward velocity before and after the step (``obs[5]`` is the torso's x velocity),
    the squared action norm (control effort), and whether the next state is healthy (torso
    height above 0.7, torso angle within +/-0.2 rad, every other state value below 100 in
    magnitude). Hopper's reward is ``healthy + x_velocity - 0.001 |a|^2``, so these factors
    contain it up to how the step's average velocity relates to the two sampled velocities.
    """
    v0 = observations[:, 5]
    v1 = next_observations[:, 5]
    effort = np.sum(actions**2, axis=1)
    z, angle = next_observations[:, 0], next_observations[:, 1]
    healthy = (z > 0.7) & (np.abs(angle) < 0.2) & np.all(np.abs(next_observations[:, 1:]) < 100.0, axis=1)
    return [v0, v1, effort, healthy.astype(np.float32)]


setattr(hopper_features, "needs_next_observations", True)  # noqa: B010 (a function attribute mypy cannot see)


def cartpole_features(observations: np.ndarray, actions: np.ndarray) -> list[np.ndarray]:
    """Hand-written latent factors for CartPole-v1: distance of the cart from the centre and
    pole tilt (both small while balancing). CartPole pays +1 on every step, so a constant is the
    answer; the decoder's bias carries it and the factors must not get in the way."""
    return [np.abs(observations[:, 0]), np.abs(observations[:, 2])]


HAND_WRITTEN: dict[str, Callable[..., Any]] = {
    "Hopper-v5": hopper_features,
    "CartPole-v1": cartpole_features,
}


def resolve_features(spec: Any) -> Callable[..., Any] | None:
    """A feature function from a callable, a ``HAND_WRITTEN`` key (an env id) or ``"module:attr"``."""
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        if spec in HAND_WRITTEN:
            return HAND_WRITTEN[spec]
        if ":" in spec:
            mod, _, attr = spec.partition(":")
            try:
                fn = getattr(importlib.import_module(mod), attr)
            except (ImportError, AttributeError) as exc:
                raise RangeError(f"features {spec!r}: cannot import {attr!r} from module {mod!r} ({exc})") from exc
            if not callable(fn):
                raise DtypeError(f"features {spec!r} is not callable")
            return fn
        raise RangeError(
            f"features {spec!r} is neither a hand-written set ({sorted(HAND_WRITTEN)}) nor an import path 'module:function'"
        )
    raise DtypeError(
        f"features must be a callable, an env id of a hand-written set or 'module:function'; got {type(spec).__name__}"
    )
