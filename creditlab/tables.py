"""Episodes files: Parquet / JSON Lines tables with one row per step, read and written.

The schema (docs/data-format.md): ``episode_id`` and ``step`` on every row; per-step columns
(``reward``, ``value``, ``discount``, ``terminated``, ``truncated``, ``obs``, ``action``,
``next_obs``, ``belief_log_probs``, and any other column as an extra: numbers, fixed-size number
lists, or anything else such as text anchors); per-episode columns (``outcome``,
``outcome.<name>``, ``bootstrap_value``, ``group_id``, ``task_id``, and the token layout
``response_mask`` / ``turn_ids``) repeated on the episode's rows or set on one of them.

This module knows the file format and nothing of the container: :func:`episode_arrays` turns a
table into the padded ``[B, T]`` arrays ``Episodes.from_padded`` takes (plus the source row of
every step), :func:`to_table` turns any Episodes back into rows, and :func:`write_back` adds
per-step results to the source table. :class:`~creditlab.episodes.Episodes` builds on it
(``Episodes.from_table``, ``Episodes.to_table``, ``creditlab.read_episodes``), never the reverse.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import (
    DataFormatError,
    DtypeError,
    EmptyBatchError,
    MissingColumnError,
    NonFiniteError,
    ShapeError,
)

__all__ = [
    "TABLE_SUFFIXES",
    "TOKEN_COLUMNS",
    "StepIndex",
    "TokenLayout",
    "episode_arrays",
    "id_text",
    "read_table",
    "step_records",
    "to_table",
    "token_layout",
    "write_back",
    "write_table",
]

TABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".ndjson")
"""File name endings of episodes files: Parquet, or JSON Lines under any of the other three."""

TOKEN_COLUMNS = ("response_mask", "turn_ids")
"""Episode-level list columns giving an episode's token layout (read by :func:`token_layout`)."""

# Columns of the schema; any other column becomes an extra.
_SCHEMA = (
    "episode_id",
    "step",
    "reward",
    "terminated",
    "truncated",
    "bootstrap_value",
    "discount",
    "value",
    "outcome",
    "group_id",
    "task_id",
    "obs",
    "action",
    "next_obs",
    "belief_log_probs",
    *TOKEN_COLUMNS,
)


# ---------------------------------------------------------------------- files


def read_table(path: str | os.PathLike) -> Any:
    """Read a Parquet or JSON Lines file into a pyarrow Table (no schema check; see :func:`episode_arrays`).

    A file that cannot be read as its type says (empty, truncated, corrupt, a folder given for a
    JSON Lines file) raises :class:`~creditlab.errors.DataFormatError` naming the file; a missing
    file raises ``FileNotFoundError``. A Parquet *folder* (a partitioned dataset) is read whole.
    """
    import pyarrow as pa

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"episodes file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataFormatError(f"{p}: unknown episodes file type {suffix!r}; expected .parquet or .jsonl")
    kind = "Parquet" if suffix == ".parquet" else "JSON Lines (one JSON object per line)"
    if p.is_dir() and suffix != ".parquet":
        raise DataFormatError(f"{p} is a folder; expected a {kind} file")
    if p.is_file() and p.stat().st_size == 0:
        raise DataFormatError(f"{p} is empty (0 bytes); expected a {kind} file with one row per step")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p)
        import pyarrow.json as pj

        return pj.read_json(p)
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DataFormatError(f"{p}: not a readable {kind} file (truncated or corrupt?): {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def write_table(table: Any, path: str | os.PathLike) -> Path:
    """Write a pyarrow Table to Parquet or JSONL atomically (temp file + rename)."""
    import json

    import pyarrow.parquet as pq

    from .atomic import atomic_path, json_default

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataFormatError(f"{p}: unknown output type {suffix!r}; expected .parquet or .jsonl")
    with atomic_path(p) as tmp:
        if suffix == ".parquet":
            pq.write_table(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for row in table.to_pylist():
                    fh.write(json.dumps(row, default=json_default) + "\n")
    return p


# ---------------------------------------------------------------------- table -> padded arrays


class StepIndex(NamedTuple):
    """Where each row of a table goes in the padded ``[B, T]`` layout.

    Episodes are numbered in the order of their first row; ``order`` sorts the rows by
    (episode, step), so ``ep_sorted[k], step_sorted[k]`` is the slot of row ``order[k]``.
    """

    names: np.ndarray  # [B] -- episode ids, in order of first appearance
    ep: np.ndarray  # [N] -- episode of each row
    step: np.ndarray  # [N] -- step of each row
    order: np.ndarray  # [N] -- rows sorted by (episode, step)
    ep_sorted: np.ndarray  # [N]
    step_sorted: np.ndarray  # [N]
    lengths: np.ndarray  # [B]
    row_index: np.ndarray  # int64[B, T] -- source row of each step, -1 on padding

    @property
    def shape(self) -> tuple[int, int]:
        return self.row_index.shape

    @property
    def mask(self) -> np.ndarray:
        return self.row_index >= 0

    def episode(self, e: int) -> str:
        """The id of episode ``e`` for messages."""
        return id_text(self.names[e])

    def scatter(self, row_values: np.ndarray, fill: Any = 0.0, dtype: Any = np.float64) -> np.ndarray:
        """Per-row values ``[N, ...]`` -> ``[B, T, ...]`` with ``fill`` on padding."""
        out = np.full((*self.shape, *row_values.shape[1:]), fill, dtype=dtype)
        out[self.ep_sorted, self.step_sorted] = row_values[self.order]
        return out


def episode_arrays(table: Any, *, source: str = "table") -> dict[str, Any]:
    """The padded arrays of a table with one row per step.

    Returns the keyword arguments of ``Episodes.from_padded`` (``rewards``, ``mask``,
    ``episode_ids``, ``extras`` and whichever optional fields the table has) plus
    ``row_index`` (int64[B, T], the source row of each step, -1 on padding) and
    ``reward_present`` (bool[B, T] where some reward is null, else None). ``source`` names the
    table in error messages. See ``creditlab.read_episodes`` for the schema.

    Example:
        >>> arrays = episode_arrays({"episode_id": ["a", "b", "a"], "step": [0, 0, 1], "reward": [1.0, 2.0, 3.0]})
        >>> arrays["rewards"].tolist(), arrays["row_index"].tolist()
        ([[1.0, 3.0], [2.0, 0.0]], [[0, 2], [1, -1]])
    """
    import pyarrow as pa

    if isinstance(table, Mapping):
        table = pa.table(dict(table))
    cols = set(table.column_names)
    for req in ("episode_id", "step"):
        if req not in cols:
            raise MissingColumnError(
                f"{source} has no {req!r} column (columns: {sorted(cols)}); every row is one step and needs "
                "'episode_id' and 'step' (0-based index within the episode)"
            )
    comp_cols = sorted(c for c in cols if c.startswith("outcome."))
    if "reward" not in cols and "outcome" not in cols and not comp_cols:
        raise MissingColumnError(
            f"{source} has no reward column: expected 'reward' (per step), 'outcome' (per episode) or "
            f"'outcome.<name>' components; columns are {sorted(cols)}"
        )
    if table.num_rows == 0:
        raise EmptyBatchError(f"{source} has no rows")
    idx = index_steps(table, source)
    b = len(idx.names)
    mask = idx.mask
    kw: dict[str, Any] = {"mask": mask, "episode_ids": idx.names}

    got = per_step_column(table, "reward", idx, source)
    kw["reward_present"] = None
    if got is None:
        kw["rewards"] = np.zeros(idx.shape)
    else:
        kw["rewards"], reward_null = got
        if (reward_null & mask).any():
            kw["reward_present"] = mask & ~reward_null

    term, trunc = end_flag(table, "terminated", idx, source), end_flag(table, "truncated", idx, source)
    if term is None:  # without either flag, a complete episode in a file ends in a terminal state
        term = np.ones(b, dtype=bool) if trunc is None else ~trunc
    elif trunc is None:
        trunc = np.zeros(b, dtype=bool)
    kw["terminated"], kw["truncated"] = term, trunc
    boot = per_episode_column(table, "bootstrap_value", idx, source)
    if boot is not None:
        kw["bootstrap_value"] = boot[0]
    disc = per_step_column(table, "discount", idx, source)
    if disc is not None:
        if (disc[1] & mask).any():
            raise DataFormatError(f"{source}: column 'discount' has nulls; give every step a continuation in [0, 1]")
        kw["discounts"] = np.where(mask, disc[0], 0.0)
        kw["terminated"] = kw["truncated"] = None  # the last discount says how each episode ended
    values = per_step_column(table, "value", idx, source)
    if values is not None:
        if (values[1] & mask).any():
            raise DataFormatError(f"{source}: column 'value' has nulls; every step needs V(s_t) when values are given")
        kw["values"] = values[0]
    out = per_episode_column(table, "outcome", idx, source)
    if out is not None:
        kw["outcomes"] = [float(v) if p else None for v, p in zip(out[0], out[1])]
    if comp_cols:
        vals_k, pres_k = zip(*(per_episode_column(table, c, idx, source) for c in comp_cols))
        comp = np.stack(vals_k, axis=1).astype(np.float64)
        pres = np.stack(pres_k, axis=1)
        if pres.all():
            kw["components"] = comp
        else:
            with_none = comp.astype(object)
            with_none[~pres] = None
            kw["components"] = with_none.tolist()
        kw["component_names"] = [c[len("outcome.") :] for c in comp_cols]
    for name, key in (("group_id", "group_ids"), ("task_id", "task_ids")):
        col = per_episode_column(table, name, idx, source)
        if col is not None:
            if not col[1].all():
                raise DataFormatError(
                    f"{source}: episode {idx.episode(int(np.nonzero(~col[1])[0][0]))} has no {name!r}"
                )
            kw[key] = col[0]
    for name, key in (("obs", "observations"), ("action", "actions"), ("next_obs", "next_observations")):
        if name in cols:
            kw[key] = list_column(table, name, idx, source)
    kw["extras"] = extra_columns(
        table, sorted(cols - {*_SCHEMA, *comp_cols}), idx, source, schema=(*_SCHEMA, *comp_cols)
    )
    beliefs = per_step_column(table, "belief_log_probs", idx, source, fill=np.nan, finite=False)
    if beliefs is not None:
        # Row t holds log p(answer | prompt, turns before t); IGPO reads [B, T+1] whose column T_b
        # and beyond are never used: one trailing column of padding.
        vals = np.where(beliefs[1], np.nan, beliefs[0])
        kw["extras"]["belief_log_probs"] = np.concatenate([vals, np.zeros((b, 1))], axis=1)
    kw["row_index"] = idx.row_index
    return kw


def index_steps(table: Any, source: str) -> StepIndex:
    """Check ``episode_id`` / ``step`` (each step 0..T_b-1 exactly once) and place every row."""
    n = table.num_rows
    ep_raw = _column(table, "episode_id")
    if _has_null(ep_raw):
        raise DataFormatError(f"{source}: 'episode_id' has null values")
    ep_key = ep_raw.astype(str) if ep_raw.dtype.kind in "OUS" else ep_raw
    uniq, first, inv = np.unique(ep_key, return_index=True, return_inverse=True)
    order_of_first = np.argsort(first, kind="stable")  # episodes in order of first appearance
    rank = np.empty_like(order_of_first)
    rank[order_of_first] = np.arange(order_of_first.size)
    ep = rank[inv.reshape(-1)]
    names = uniq[order_of_first]
    step_col = _column(table, "step")
    if _has_null(step_col) or step_col.dtype.kind not in "iuf":
        raise DtypeError(f"{source}: 'step' must be integers without nulls")
    step = step_col.astype(np.int64)
    if step_col.dtype.kind == "f" and np.any(step != step_col):
        raise DtypeError(f"{source}: 'step' must be integers; got fractional values")
    lengths = np.bincount(ep, minlength=uniq.size)
    order = np.lexsort((step, ep))
    ep_s, step_s = ep[order], step[order]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    bad = np.nonzero(step_s != np.arange(n) - starts[ep_s])[0]
    if bad.size:
        e = int(ep_s[bad[0]])
        steps = np.sort(step[ep == e])
        raise DataFormatError(
            f"{source}: episode {id_text(names[e])} has steps {steps[:12].tolist()}"
            f"{'...' if steps.size > 12 else ''}; expected 0..{lengths[e] - 1} each exactly once"
        )
    row_index = np.full((uniq.size, int(lengths.max())), -1, dtype=np.int64)
    row_index[ep_s, step_s] = order
    return StepIndex(names, ep, step, order, ep_s, step_s, lengths, row_index)


def per_step_column(
    table: Any, name: str, idx: StepIndex, source: str, *, fill: float = 0.0, finite: bool = True
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(values[B, T]`` with ``fill`` on nulls and padding, ``null[B, T])``, or None without the column.

    ``finite=True``: NaN or inf is an error (null is the way to say "not applicable").
    """
    if name not in table.column_names:
        return None
    return _column_steps(table, name, idx, source, fill=fill, finite=finite)


def _column_steps(
    table: Any, name: str, idx: StepIndex, source: str, *, fill: float, finite: bool
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`per_step_column` of a column the table has."""
    vals, nulls = _numeric_column(table, name, source)
    if finite and not np.isfinite(vals[~nulls]).all():
        raise NonFiniteError(
            _where(table, name, idx, ~nulls & ~np.isfinite(vals), source)
            + "; expected a finite number (use null for 'not applicable')"
        )
    return idx.scatter(np.where(nulls, fill, vals), fill), idx.scatter(nulls, False, bool)


def per_episode_column(table: Any, name: str, idx: StepIndex, source: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(value[B], present[B])`` of an episode-level column, or None without it.

    Rows holding null are ignored; the non-null rows of an episode must agree. String columns
    (``group_id``, ``task_id``) keep their values.
    """
    if name not in table.column_names:
        return None
    b = len(idx.names)
    raw = _column(table, name)
    if raw.dtype.kind in "OUS" and name in ("group_id", "task_id"):
        vals = raw.astype(object)
        present_row = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in vals])
        out = np.empty(b, dtype=object)
        out[:] = None
        for i in np.nonzero(present_row)[0]:  # strings: rare (ids), per-row check is fine
            prev = out[idx.ep[i]]
            if prev is not None and prev != vals[i]:
                raise DataFormatError(
                    f"{source}: column {name!r} has different values within episode {idx.episode(idx.ep[i])}"
                )
            out[idx.ep[i]] = vals[i]
        return out, np.array([v is not None for v in out])
    vals, nulls = _numeric_column(table, name, source)
    if not np.isfinite(vals[~nulls]).all():
        raise NonFiniteError(
            _where(table, name, idx, ~nulls & ~np.isfinite(vals), source)
            + "; expected a finite number (use null for 'not applicable')"
        )
    present_row = ~nulls
    lo = np.full(b, np.inf)
    hi = np.full(b, -np.inf)
    np.minimum.at(lo, idx.ep[present_row], vals[present_row])
    np.maximum.at(hi, idx.ep[present_row], vals[present_row])
    present = np.isfinite(lo) & np.isfinite(hi)
    if np.any(present & (lo != hi)):
        e = int(np.nonzero(present & (lo != hi))[0][0])
        raise DataFormatError(
            f"{source}: episode-level column {name!r} has different values within episode "
            f"{idx.episode(e)} ({lo[e]} and {hi[e]}); put it on one row or repeat the same value"
        )
    return np.where(present, lo, 0.0), present


def end_flag(table: Any, name: str, idx: StepIndex, source: str) -> np.ndarray | None:
    """bool[B] from a ``terminated``/``truncated`` column, or None without it.

    Gymnasium convention: the flag is true on the row of the step that ended the episode; true
    on an earlier step is an error.
    """
    got = per_step_column(table, name, idx, source)
    if got is None:
        return None
    flags = got[0]
    if ((flags != 0) & (flags != 1)).any():
        raise DtypeError(f"{source}: column {name!r} must be true/false (or 0/1)")
    flags = flags != 0
    early = flags & idx.mask & (np.arange(idx.shape[1])[None, :] < (idx.lengths[:, None] - 1))
    if early.any():
        e, st_ = (int(i) for i in np.argwhere(early)[0])
        raise DataFormatError(
            f"{source}: episode {idx.episode(e)} has {name}=true at step {st_} but continues "
            f"to step {idx.lengths[e] - 1}; {name} may only be true on an episode's last step"
        )
    return flags.any(axis=1)


def list_column(table: Any, name: str, idx: StepIndex, source: str) -> np.ndarray:
    """``[B, T, D]`` from a column of fixed-size number lists (or ``[B, T]`` from numbers)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(name).combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        lens = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if col.null_count:
            raise DataFormatError(f"{source}: column {name!r} has null rows")
        if lens.size and (lens != lens[0]).any():
            raise ShapeError(
                f"{source}: column {name!r} holds lists of different lengths {sorted(set(lens.tolist()))[:5]}; expected one fixed size"
            )
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
        vals = flat.reshape(len(col), int(lens[0]) if lens.size else 0)
    else:
        vals = col.to_numpy(zero_copy_only=False)
        if vals.dtype == object:
            raise DtypeError(f"{source}: column {name!r} must be numbers or lists of numbers")
    return idx.scatter(vals, 0, np.float64 if vals.dtype.kind == "f" else vals.dtype)


def extra_columns(
    table: Any, names: list[str], idx: StepIndex, source: str, *, schema: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Columns outside the schema as per-step extras; a near-miss of a schema name warns.

    Numbers and booleans become float ``[B, T]`` (null and padding 0); lists of numbers of one
    fixed size float ``[B, T, D]``; anything else (text such as GiGPO anchors, lists of varying
    size, objects) an object ``[B, T]`` array of the values as Python objects, None on null and
    padding.
    """
    import difflib
    import warnings

    import pyarrow as pa

    from .errors import CreditlabWarning

    extras = {}
    for name in names:
        close = difflib.get_close_matches(name, sorted(set(schema) - {"obs", "action"}), n=1, cutoff=0.8)
        if close:
            warnings.warn(
                f"{source}: column {name!r} is not part of the episodes schema (did you mean {close[0]!r}?); "
                "it is kept as an extra column only",
                CreditlabWarning,
                stacklevel=5,
            )
        col = table.column(name).combine_chunks()
        typ = col.type
        if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ) or pa.types.is_null(typ):
            extras[name] = _column_steps(table, name, idx, source, fill=0.0, finite=False)[0]
        elif _is_fixed_number_list(col):
            extras[name] = list_column(table, name, idx, source)
        else:
            values = np.fromiter(col.to_pylist(), dtype=object, count=len(col))
            extras[name] = idx.scatter(values, None, object)
    return extras


def _is_fixed_number_list(col: Any) -> bool:
    """A list column without nulls whose lists are numbers and all of one length."""
    import pyarrow as pa
    import pyarrow.compute as pc

    typ = col.type
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)):
        return False
    v = typ.value_type
    if not (pa.types.is_integer(v) or pa.types.is_floating(v)) or col.null_count:
        return False
    lens = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    return bool(lens.size) and bool((lens == lens[0]).all()) and col.flatten().null_count == 0


class TokenLayout(NamedTuple):
    """The tokens of each episode (see :func:`token_layout`).

    Attributes:
        turn_ids: int64[B, L] -- turn (step) of each token, -1 on padding; None when the file has
            no ``turn_ids`` column (each run of policy tokens is then one turn).
        response_mask: bool[B, L] -- 1 on tokens the policy generated; False on padding.
        lengths: int64[B] -- tokens per episode (L_b).
    """

    turn_ids: np.ndarray | None
    response_mask: np.ndarray
    lengths: np.ndarray


def token_layout(
    table: Any, row_index: Any, mask: Any, *, source: str = "table", episode_ids: Any = None
) -> TokenLayout | None:
    """An episode's tokens from the episode-level list columns ``response_mask`` and ``turn_ids``.

    ``response_mask`` (required for a token layout) holds, per episode, one 0/1 (or boolean) per
    token of the episode's token row: 1 on tokens the policy generated, 0 on prompt and
    tool/observation tokens. ``turn_ids`` (optional) holds the turn (step) of each token, the
    same length; without it each run of policy tokens is one turn. Like every episode-level
    column, the list is repeated on the episode's rows or given on one row (null elsewhere).

    Args:
        table: pyarrow Table the batch was read from.
        row_index: int64[B, T] -- source row of each step (``Episodes.row_index``), -1 on padding.
        mask: bool[B, T] -- valid steps.
        source: the table's name in messages.
        episode_ids: [B] -- episode ids for messages (default: 0..B-1).

    Returns:
        None without a ``response_mask`` column, else a :class:`TokenLayout` (L = the longest
        token row).

    Example:
        >>> rows, mask = np.array([[0, 1]]), np.array([[True, True]])
        >>> t = {"episode_id": [0, 0], "step": [0, 1], "response_mask": [[0, 1, 1, 0, 1], None]}
        >>> layout = token_layout(t, rows, mask)
        >>> layout.turn_ids is None, layout.response_mask.astype(int).tolist(), layout.lengths.tolist()
        (True, [[0, 1, 1, 0, 1]], [5])
    """
    import pyarrow as pa

    if isinstance(table, Mapping):
        table = pa.table(dict(table))
    if "response_mask" not in table.column_names:
        if "turn_ids" in table.column_names:
            raise MissingColumnError(
                f"{source} has 'turn_ids' but no 'response_mask'; the token layout needs both (or 'response_mask' alone)"
            )
        return None
    rows = _to_numpy(row_index)
    m = _to_numpy(mask).astype(bool)
    ep_of_row = np.full(table.num_rows, -1, dtype=np.int64)
    ep_of_row[rows[m]] = np.nonzero(m)[0]
    names = np.arange(m.shape[0]) if episode_ids is None else np.asarray(episode_ids)
    resp, lengths = _episode_lists(table, "response_mask", ep_of_row, names, source)
    if ((resp != 0) & (resp != 1)).any():
        raise DtypeError(f"{source}: column 'response_mask' must hold 0/1 (or true/false) per token")
    turn = None
    if "turn_ids" in table.column_names:
        turn, t_lengths = _episode_lists(table, "turn_ids", ep_of_row, names, source)
        if np.any(t_lengths != lengths):
            e = int(np.nonzero(t_lengths != lengths)[0][0])
            raise ShapeError(
                f"{source}: episode {id_text(names[e])} has {int(t_lengths[e])} 'turn_ids' but {int(lengths[e])} 'response_mask' entries; "
                "expected one of each per token"
            )
        if np.any(turn != np.round(turn)):
            raise DtypeError(f"{source}: column 'turn_ids' must hold integers")
        valid = np.arange(turn.shape[1])[None, :] < lengths[:, None]
        turn = np.where(valid, turn, -1).astype(np.int64)
    return TokenLayout(turn, resp.astype(bool), lengths)


def _episode_lists(
    table: Any, name: str, ep_of_row: np.ndarray, names: np.ndarray, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """float64[B, L] (0 on padding) and the lengths int64[B] of an episode-level list-of-numbers column.

    The non-null lists of an episode's rows must be equal; every episode needs one. Vectorized
    over rows and tokens: one comparison of each row's list with its episode's first list.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    b = len(names)
    col = table.column(name).combine_chunks()
    typ = col.type
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)):
        raise DtypeError(f"{source}: column {name!r} must hold one list of numbers per episode; got {typ}")
    if not (
        pa.types.is_integer(typ.value_type)
        or pa.types.is_floating(typ.value_type)
        or pa.types.is_boolean(typ.value_type)
    ):
        raise DtypeError(f"{source}: column {name!r} must hold lists of numbers; got {typ}")
    present = ~col.is_null().to_numpy(zero_copy_only=False) & (ep_of_row >= 0)
    lens = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat_col = pc.list_flatten(col)  # values of the non-null lists, in row order
    if flat_col.null_count:
        raise DataFormatError(f"{source}: column {name!r} has null entries inside a list")
    flat = flat_col.to_numpy(zero_copy_only=False).astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    # the first row of each episode holding a list
    first = np.full(b, -1, dtype=np.int64)
    rows_present = np.nonzero(present)[0]
    first[ep_of_row[rows_present[::-1]]] = rows_present[::-1]
    if (first < 0).any():
        e = int(np.nonzero(first < 0)[0][0])
        raise DataFormatError(
            f"{source}: episode {id_text(names[e])} has no {name!r} list; give it on at least one of the episode's rows"
        )
    rep = first[ep_of_row[rows_present]]
    if np.any(lens[rows_present] != lens[rep]):
        r = int(rows_present[np.nonzero(lens[rows_present] != lens[rep])[0][0]])
        raise DataFormatError(
            f"{source}: column {name!r} differs within episode {id_text(names[ep_of_row[r]])} (lists of different lengths)"
        )
    n = lens[rows_present]
    within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    pos_row = np.repeat(starts[rows_present], n) + within
    pos_rep = np.repeat(starts[rep], n) + within
    if np.any(flat[pos_row] != flat[pos_rep]):
        k = int(np.nonzero(flat[pos_row] != flat[pos_rep])[0][0])
        r = int(np.repeat(rows_present, n)[k])
        raise DataFormatError(
            f"{source}: column {name!r} differs within episode {id_text(names[ep_of_row[r]])}; an episode-level list is repeated "
            "unchanged on the episode's rows or given on one row"
        )
    lengths = lens[first]
    out = np.zeros((b, int(lengths.max()) if b else 0), dtype=np.float64)
    ep_idx = np.repeat(np.arange(b), lengths)
    tok = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[ep_idx, tok] = flat[np.repeat(starts[first], lengths) + tok]
    return out, lengths


# ---------------------------------------------------------------------- padded arrays -> table


def to_table(episodes: Any, **step_columns: Any) -> Any:
    """One row per valid step of an :class:`~creditlab.episodes.Episodes` as a pyarrow Table.

    ``step_columns`` are extra ``[B, T]`` columns (e.g. ``advantage=...``).
    """
    import pyarrow as pa

    e = episodes.numpy()
    bi, ti = np.nonzero(e.mask)
    data: dict[str, Any] = {
        "episode_id": np.asarray(e.episode_ids)[bi] if e.episode_ids is not None else bi,
        "step": ti.astype(np.int64),
        "reward": e.rewards[bi, ti],
    }
    last = ti == (e.lengths[bi] - 1)
    data["terminated"] = np.where(last, e.terminated[bi], False)
    data["truncated"] = np.where(last, e.truncated[bi], False)
    if e.values is not None:
        data["value"] = e.values[bi, ti]
    if e.outcomes is not None:
        data["outcome"] = pa.array(
            [float(e.outcomes[b]) if e.outcome_present[b] else None for b in bi], type=pa.float64()
        )
    for j, name in enumerate(e.component_names):
        data[f"outcome.{name}"] = pa.array(
            [float(e.components[b, j]) if e.component_present[b, j] else None for b in bi], type=pa.float64()
        )
    if e.group_ids is not None:
        data["group_id"] = e.group_ids[bi]
    if e.task_ids is not None:
        data["task_id"] = e.task_ids[bi]
    for name, arr in step_columns.items():
        a = _to_numpy(arr)
        if a.shape[:2] != e.mask.shape:
            raise ShapeError(f"column {name!r} has shape {a.shape}; expected [B, T] = {e.mask.shape}")
        data[name] = a[bi, ti]
    for k, v in list(data.items()):
        if isinstance(v, np.ndarray) and v.dtype == object:
            data[k] = pa.array(v.tolist())
    return pa.table(data)


def _step_values(name: str, values: Any, mask: np.ndarray) -> np.ndarray:
    """One value per valid step, in row-major order of ``mask``: from ``[B, T]`` or already flat."""
    a = _to_numpy(values)
    if a.shape == mask.shape:
        return a[mask]
    if a.shape == (int(mask.sum()),):
        return a
    raise ShapeError(
        f"column {name!r} has shape {a.shape}; expected [B, T] = {mask.shape} or one value per valid step ({int(mask.sum())},)"
    )


def write_back(table: Any, row_index: Any, mask: Any, columns: Mapping[str, Any]) -> Any:
    """The source table with per-step result columns added (replacing columns of the same name).

    Args:
        table: pyarrow Table the batch was read from (``Episodes.from_table``).
        row_index: int64[B, T] -- source row of each step (``Episodes.row_index``).
        mask: bool[B, T] -- valid steps.
        columns: name -> float[B, T], or float[S] with one value per valid step in row-major
            order of ``mask`` (``values[mask]``). Rows that are no step of the batch get 0.

    Example:
        >>> import pyarrow as pa
        >>> t = pa.table({"episode_id": [7, 7, 8], "step": [1, 0, 0]})
        >>> rows, mask = np.array([[1, 0], [2, -1]]), np.array([[True, True], [True, False]])
        >>> write_back(t, rows, mask, {"advantage": np.array([[0.5, 1.5], [2.5, 0.0]])})["advantage"].to_pylist()
        [1.5, 0.5, 2.5]
    """
    import pyarrow as pa

    m = _to_numpy(mask).astype(bool)
    rows = _to_numpy(row_index)[m]
    new = table
    for name, values in columns.items():
        flat = np.zeros(table.num_rows, dtype=np.float64)
        flat[rows] = _step_values(name, values, m)
        if name in new.column_names:
            new = new.drop_columns([name])
        new = new.append_column(name, pa.array(flat))
    return new


def step_records(episode_ids: Any, mask: Any, columns: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """One ``{"episode_id", "step", name: value, ...}`` dict per valid step (JSON-ready), row-major.

    ``columns`` as in :func:`write_back`.

    Example:
        >>> list(step_records(["a", "b"], np.array([[1, 1], [1, 0]], bool), {"advantage": np.array([[1.0, 2.0], [3.0, 0.0]])}))
        [{'episode_id': 'a', 'step': 0, 'advantage': 1.0}, {'episode_id': 'a', 'step': 1, 'advantage': 2.0}, {'episode_id': 'b', 'step': 0, 'advantage': 3.0}]
    """
    m = _to_numpy(mask).astype(bool)
    ids = np.asarray(episode_ids)
    flat = {name: _step_values(name, values, m) for name, values in columns.items()}
    bi, ti = np.nonzero(m)
    for k, (b, t) in enumerate(zip(bi.tolist(), ti.tolist())):
        row = {"episode_id": _plain(ids[b]), "step": t}
        row.update({name: float(v[k]) for name, v in flat.items()})
        yield row


# ---------------------------------------------------------------------- helpers


def id_text(x: Any) -> str:
    """An episode id as it reads in a message (``1``, ``'b'``)."""
    return repr(_plain(x))


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _where(table: Any, name: str, idx: StepIndex, bad_rows: np.ndarray, source: str) -> str:
    i = int(np.nonzero(bad_rows)[0][0])
    value = _numeric_column(table, name, source)[0][i]
    return f"{source}: column {name!r} is {value} at episode {idx.episode(idx.ep[i])} step {idx.step[i]}"


def _numeric_column(table: Any, name: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with 0 on nulls, null mask) of a numeric/bool column.

    Distinguishes null ("not applicable") from NaN (an error for reward-like columns).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(name).combine_chunks()
    typ = col.type
    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ) or pa.types.is_null(typ)):
        raise DtypeError(f"{source}: column {name!r} must hold numbers (or null); got {typ}")
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_null(typ):
        return np.zeros(len(col)), nulls
    vals = pc.fill_null(col, False if pa.types.is_boolean(typ) else 0).to_numpy(zero_copy_only=False).astype(np.float64)
    return vals, nulls


def _column(table: Any, name: str) -> np.ndarray:
    col = table.column(name)
    try:
        return col.to_numpy(zero_copy_only=False)
    except Exception:  # pragma: no cover - exotic arrow types
        return np.asarray(col.to_pylist(), dtype=object)


def _has_null(arr: np.ndarray) -> bool:
    if arr.dtype == object:
        return any(v is None for v in arr)
    return arr.dtype.kind == "f" and bool(np.isnan(arr).any())
