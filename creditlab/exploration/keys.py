"""State keys for count bonuses: every state becomes one int64 id.

Which states count as "the same" decides what a count bonus rewards:

=========  ================================================  =======================================
kind       key                                               aliasing
=========  ================================================  =======================================
pos        MiniGrid ``agent_pos`` (x, y)                     one key per cell, shared across layouts
                                                             (e3b's ``counts-pos``)
pos_dir    (x, y, agent_dir)                                 as ``pos``, four headings per cell
full       ``env.unwrapped.hash()`` (grid, position,         distinguishes door/key state and layouts
           direction; MiniGrid)
obs        a hash of the observation's bytes                 what the agent sees (egocentric view)
callable   ``fn(env) -> int | str | bytes | tuple | array``  your choice
=========  ================================================  =======================================

Position keys alias across procedurally generated layouts: that is the structure a *global*
count can exploit when contexts repeat. Keys are hashed with BLAKE2b (8 bytes) where they are not
already small integers, so they are stable across processes (unlike Python's ``hash`` of a
string).

Example:
    >>> observation_keys(np.zeros((2, 3), dtype=np.float32)).tolist() == [observation_keys(np.zeros((1, 3), np.float32))[0]] * 2
    True
    >>> to_key((1, 2)) == to_key((1, 2)), to_key(7)
    (True, 7)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..errors import DtypeError, RangeError

__all__ = ["KEY_KINDS", "to_key", "observation_keys", "position_key", "full_state_key", "state_key_function"]

KEY_KINDS = ("pos", "pos_dir", "full", "obs")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def to_key(value: Any) -> int:
    """An int64 id for a state key: ints in int64 range as they are, anything else hashed.

    Accepted: ``int`` (also NumPy integers), ``str``, ``bytes``, NumPy arrays (dtype, shape and
    bytes are hashed) and tuples/lists of these (hashed through their ``repr``).
    """
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if not _INT64_MIN <= v <= _INT64_MAX:
            return _digest(str(v).encode())
        return v
    if isinstance(value, str):
        return _digest(value.encode())
    if isinstance(value, bytes):
        return _digest(value)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        return _digest(f"{arr.dtype.str}{arr.shape}".encode() + arr.tobytes())
    if isinstance(value, (tuple, list)):
        return _digest(repr(tuple(_plain(v) for v in value)).encode())
    raise DtypeError(
        f"a state key must be an int, str, bytes, array or tuple of these; got {type(value).__name__}. "
        "Return one of these from your key function."
    )


def _plain(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return tuple(v.tolist())
    if isinstance(v, (tuple, list)):
        return tuple(_plain(x) for x in v)
    return v


def observation_keys(observations: Any) -> np.ndarray:
    """int64[N] ids of N observations ``[N, ...]`` (BLAKE2b of each row's bytes).

    Rows are hashed as they are stored: the same observation as uint8 and as float32 gets two
    different keys, so hash one representation throughout a run.
    """
    x = observations.detach().cpu().numpy() if isinstance(observations, torch.Tensor) else np.asarray(observations)
    if x.ndim == 0:
        raise RangeError("observations must be [N, ...] (one row per state); got a scalar")
    rows = np.ascontiguousarray(x.reshape(x.shape[0], -1))
    return np.fromiter((_digest(r.tobytes()) for r in rows), dtype=np.int64, count=rows.shape[0])


def _unwrapped(env: Any) -> Any:
    return getattr(env, "unwrapped", env)


def position_key(env: Any, *, direction: bool = False) -> int:
    """MiniGrid position key: ``x * 65536 + y`` (times 4 plus ``agent_dir`` with ``direction``).

    Works for any environment whose ``unwrapped`` has ``agent_pos`` (and ``agent_dir``).
    """
    u = _unwrapped(env)
    pos = getattr(u, "agent_pos", None)
    if pos is None:
        raise DtypeError(
            f"position keys need env.unwrapped.agent_pos (MiniGrid); {type(u).__name__} has none. Use key='obs'."
        )
    x, y = int(pos[0]), int(pos[1])
    key = x * 65536 + y
    if direction:
        key = key * 4 + int(u.agent_dir)
    return key


def full_state_key(env: Any) -> int:
    """MiniGrid full-state key: ``env.unwrapped.hash()`` (16 hex digits of a sha256 of the grid
    encoding, position and direction) as an int64."""
    u = _unwrapped(env)
    fn = getattr(u, "hash", None)
    if not callable(fn):
        raise DtypeError(
            f"full-state keys need env.unwrapped.hash() (MiniGrid); {type(u).__name__} has none. Use key='obs'."
        )
    h = fn()
    return int(np.array(int(h, 16) & (2**64 - 1), dtype=np.uint64).view(np.int64)) if isinstance(h, str) else to_key(h)


def state_key_function(kind: str | Callable[[Any], Any]) -> Callable[[Any, Any], int]:
    """``fn(env, observation) -> int`` for a key kind (see the module table) or a user function.

    A user function receives the environment (``fn(env)``) and may return anything
    :func:`to_key` accepts.
    """
    if callable(kind):
        user = kind
        return lambda env, obs: to_key(user(env))
    if kind == "pos":
        return lambda env, obs: position_key(env)
    if kind == "pos_dir":
        return lambda env, obs: position_key(env, direction=True)
    if kind == "full":
        return lambda env, obs: full_state_key(env)
    if kind == "obs":
        return lambda env, obs: int(observation_keys(np.asarray(obs)[None])[0])
    raise RangeError(f"key must be one of {KEY_KINDS} or a function env -> key; got {kind!r}")
