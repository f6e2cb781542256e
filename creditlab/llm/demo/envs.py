"""Procedurally generated multi-turn text tasks with an outcome reward only at the end.

Both environments are *batch* environments: one call steps B episodes at once with NumPy
array operations (no Python loop over episodes). They speak token ids of their own
:class:`~creditlab.llm.demo.tokenizer.WordTokenizer`; a turn is one policy response of
``action_len`` = 2 words (``VERB ARG``) followed, unless the episode ended, by ``obs_len``
observation words written by the environment.

The policy's decoding is constrained to the action grammar, as a tool-call schema would be:
the verb of turn ``t`` comes from slot ``first_slot(t)`` and the argument from slot
``arg_slot[verb]``; a slot allows the words ``slot_masks[slot]``. The grammar does not make
actions useful: ``take door`` is a legal string that the world answers with ``nothing``.

* :class:`KeyDoorEnv` -- a grid text world. The agent must walk to the key, ``take key``, walk
  to the door and ``open door`` within ``max_turns`` turns. Start, key and door cells are drawn
  at random per layout (``c (c-1) (c-2)`` layouts for ``c`` cells). Reward 1 if the door was
  opened, else 0. The anchor state of a turn (GiGPO) is (cell, holding key).
* :class:`SecretEnv` -- guess the secret number in ``[0, n)``. The agent asks ``less k``
  ("is the secret < k?", answered ``yes`` / ``no``) and ends with ``guess k``; the last turn
  must be a guess. Reward 1 for the right guess. The belief query (IGPO) is the policy's
  probability of ``guess <secret>`` after each turn; the anchor state is the interval of
  secrets still consistent with the answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ...errors import RangeError, ShapeError
from .tokenizer import WordTokenizer

__all__ = ["StepResult", "KeyDoorEnv", "SecretEnv", "make_env", "ENVS"]


class StepResult(NamedTuple):
    """What a batch environment returns after one turn.

    Attributes:
        obs: int[B, obs_len] -- observation token ids (meaningless where ``done``).
        done: bool[B] -- the episode ended with this turn (success, final guess or time limit).
        success: bool[B] -- the outcome; only read where ``done``.
    """

    obs: np.ndarray
    done: np.ndarray
    success: np.ndarray


def _check_actions(actions: np.ndarray, batch: int) -> np.ndarray:
    a = np.asarray(actions)
    if a.shape != (batch, 2):
        raise ShapeError(f"actions has shape {a.shape}; expected ({batch}, 2) -- one (verb, arg) id pair per episode")
    return a.astype(np.int64)


def _positive(value: int, name: str, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise RangeError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------ key and door


@dataclass
class KeyDoorState:
    """Batch state of :class:`KeyDoorEnv` (arrays of length B)."""

    pos: np.ndarray  # int[B, 2] -- agent (x, y)
    key: np.ndarray  # int[B, 2] -- key cell
    door: np.ndarray  # int[B, 2] -- door cell
    has_key: np.ndarray  # bool[B]
    done: np.ndarray  # bool[B]
    success: np.ndarray  # bool[B]
    turn: int = 0


@dataclass
class KeyDoorEnv:
    """Find the key, then open the door, on a ``width x height`` grid of rooms.

    The prompt (10 words) gives the layout: ``<bos> key KX KY door DX DY start X Y``. After
    each turn the world answers with 5 words, ``EVENT at X Y HAND``: EVENT is ``moved``,
    ``blocked`` (walked into the outer wall), ``took`` (picked up the key), ``locked`` (tried
    the door without the key) or ``nothing`` (an action that does nothing here); HAND is
    ``no-key`` or ``has-key``. ``go east`` increases X, ``go north`` increases Y. Actions are
    ``go north|south|east|west`` and ``take|open key|door``.

    Args:
        width: grid width (>= 1).
        height: grid height (>= 1); ``width * height`` must be at least 3.
        max_turns: turn limit; running out is a failure.

    Example:
        >>> import numpy as np
        >>> env = KeyDoorEnv(width=3, height=2, max_turns=6)
        >>> tasks = {"start": np.array([[0, 0]]), "key": np.array([[1, 0]]), "door": np.array([[1, 1]])}
        >>> state, prompt = env.reset(tasks)
        >>> env.tokenizer.decode(prompt[0])
        '<bos> key 1 0 door 1 1 start 0 0'
        >>> tok = env.tokenizer
        >>> res = env.step(state, np.array([[tok.id("go"), tok.id("east")]]))
        >>> tok.decode(res.obs[0])
        'moved at 1 0 no-key'
        >>> res = env.step(state, np.array([[tok.id("take"), tok.id("key")]]))
        >>> tok.decode(res.obs[0])
        'took at 1 0 has-key'
        >>> res = env.step(state, np.array([[tok.id("go"), tok.id("north")]]))
        >>> res = env.step(state, np.array([[tok.id("open"), tok.id("door")]]))
        >>> bool(res.done[0]), bool(res.success[0])
        (True, True)
    """

    width: int = 3
    height: int = 3
    max_turns: int = 12
    name: str = field(default="keydoor", init=False)

    VERBS = ("go", "take", "open")
    DIRECTIONS = ("north", "south", "east", "west")
    OBJECTS = ("key", "door")
    EVENTS = ("moved", "blocked", "took", "locked", "nothing")

    def __post_init__(self) -> None:
        self.width = _positive(self.width, "width")
        self.height = _positive(self.height, "height")
        if self.width * self.height < 3:
            raise RangeError(f"the grid needs at least 3 cells for start, key and door; got {self.width}x{self.height}")
        self.max_turns = _positive(self.max_turns, "max_turns")
        numbers = [str(i) for i in range(max(self.width, self.height))]
        words = [*self.VERBS, *self.DIRECTIONS, *self.OBJECTS, *self.EVENTS, "start", "at", "no-key", "has-key", *numbers]
        self.tokenizer = WordTokenizer(words)
        tok = self.tokenizer
        v = len(tok)
        # Slot 0: verbs; slot 1: directions (after "go"); slot 2: objects (after "take"/"open").
        self.slot_masks = np.zeros((3, v), dtype=bool)
        self.slot_masks[0, tok.ids(self.VERBS)] = True
        self.slot_masks[1, tok.ids(self.DIRECTIONS)] = True
        self.slot_masks[2, tok.ids(self.OBJECTS)] = True
        self.arg_slot = np.full(v, -1, dtype=np.int64)
        self.arg_slot[tok.id("go")] = 1
        self.arg_slot[tok.ids(("take", "open"))] = 2
        self.obs_len = 5
        self.prompt_len = 10
        self.action_len = 2
        self._num = tok.ids(numbers)
        self._event = {e: tok.id(e) for e in self.EVENTS}
        self._w = {w: tok.id(w) for w in (*self.VERBS, *self.DIRECTIONS, *self.OBJECTS, "start", "at", "no-key", "has-key")}
        # Moves indexed by token id: north (0, +1), south (0, -1), east (+1, 0), west (-1, 0).
        self._moves = np.zeros((v, 2), dtype=np.int64)
        for word, d in (("north", (0, 1)), ("south", (0, -1)), ("east", (1, 0)), ("west", (-1, 0))):
            self._moves[tok.id(word)] = d
        self._is_dir = np.zeros(v, dtype=bool)
        self._is_dir[tok.ids(self.DIRECTIONS)] = True
        self._shape = np.array([self.width, self.height])

    @property
    def num_layouts(self) -> int:
        """Distinct (start, key, door) layouts."""
        c = self.width * self.height
        return c * (c - 1) * (c - 2)

    def first_slot(self, turn: int) -> int:
        """Grammar slot of the verb at ``turn`` (always the verb slot 0)."""
        return 0

    def sample_tasks(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` random layouts: distinct start, key and door cells, as int[n, 2] (x, y) arrays."""
        c = self.width * self.height
        # Three distinct cells per layout without a Python loop: rank random keys per row.
        cells = np.argsort(rng.random((n, c)), axis=1)[:, :3]
        xy = np.stack([cells % self.width, cells // self.width], axis=-1)
        return {"start": xy[:, 0], "key": xy[:, 1], "door": xy[:, 2]}

    def reset(self, tasks: dict[str, np.ndarray]) -> tuple[KeyDoorState, np.ndarray]:
        """Start B episodes; returns the state and the prompt ids int[B, prompt_len]."""
        start = np.asarray(tasks["start"], dtype=np.int64)
        if start.ndim != 2 or start.shape[1] != 2:
            raise ShapeError(f"tasks['start'] has shape {start.shape}; expected (B, 2) cells (x, y)")
        b = start.shape[0]
        state = KeyDoorState(
            pos=start.copy(),
            key=np.asarray(tasks["key"], dtype=np.int64).copy(),
            door=np.asarray(tasks["door"], dtype=np.int64).copy(),
            has_key=np.zeros(b, dtype=bool),
            done=np.zeros(b, dtype=bool),
            success=np.zeros(b, dtype=bool),
        )
        for name, cell in (("start", state.pos), ("key", state.key), ("door", state.door)):
            if cell.shape != (b, 2) or ((cell < 0) | (cell >= self._shape)).any():
                raise RangeError(f"tasks[{name!r}] must be int[{b}, 2] cells inside the {self.width}x{self.height} grid")
        num, w = self._num, self._w
        cols = [
            np.full(b, self.tokenizer.bos_id),
            np.full(b, w["key"]),
            num[state.key[:, 0]],
            num[state.key[:, 1]],
            np.full(b, w["door"]),
            num[state.door[:, 0]],
            num[state.door[:, 1]],
            np.full(b, w["start"]),
            num[state.pos[:, 0]],
            num[state.pos[:, 1]],
        ]
        return state, np.stack(cols, axis=1).astype(np.int64)

    def anchors(self, state: KeyDoorState) -> np.ndarray:
        """int[B] -- anchor key of the current state: cell index + cells * holding key."""
        c = self.width * self.height
        return state.pos[:, 0] + self.width * state.pos[:, 1] + c * state.has_key.astype(np.int64)

    def step(self, state: KeyDoorState, actions: np.ndarray) -> StepResult:
        """Apply one (verb, arg) action per episode; finished episodes are left unchanged."""
        b = state.pos.shape[0]
        a = _check_actions(actions, b)
        verb, arg = a[:, 0], a[:, 1]
        live = ~state.done
        w = self._w
        go = live & (verb == w["go"]) & self._is_dir[arg]
        target = state.pos + self._moves[arg]
        inside = ((target >= 0) & (target < self._shape)).all(axis=1)
        moved = go & inside
        blocked = go & ~inside
        at_key = (state.pos == state.key).all(axis=1)
        at_door = (state.pos == state.door).all(axis=1)
        took = live & (verb == w["take"]) & (arg == w["key"]) & at_key & ~state.has_key
        opening = live & (verb == w["open"]) & (arg == w["door"]) & at_door
        opened = opening & state.has_key
        locked = opening & ~state.has_key
        state.pos = np.where(moved[:, None], target, state.pos)
        state.has_key = state.has_key | took
        state.turn += 1
        out_of_time = live & (state.turn >= self.max_turns)
        state.success = state.success | opened
        done_now = live & (opened | out_of_time)
        state.done = state.done | done_now
        e = self._event
        event = np.full(b, e["nothing"])
        event = np.where(moved, e["moved"], event)
        event = np.where(blocked, e["blocked"], event)
        event = np.where(took, e["took"], event)
        event = np.where(locked, e["locked"], event)
        return StepResult(self._render(state, event), done_now, state.success.copy())

    def _render(self, state: KeyDoorState, event: np.ndarray) -> np.ndarray:
        num, w = self._num, self._w
        b = state.pos.shape[0]
        hand = np.where(state.has_key, w["has-key"], w["no-key"])
        cols = [event, np.full(b, w["at"]), num[state.pos[:, 0]], num[state.pos[:, 1]], hand]
        return np.stack(cols, axis=1).astype(np.int64)

    def optimal_turns(self, tasks: dict[str, np.ndarray]) -> np.ndarray:
        """int[B] -- fewest turns that solve each layout (walk, take, walk, open)."""
        d1 = np.abs(tasks["start"] - tasks["key"]).sum(axis=1)
        d2 = np.abs(tasks["key"] - tasks["door"]).sum(axis=1)
        return d1 + d2 + 2


# ------------------------------------------------------------------------------ guess the secret


@dataclass
class SecretState:
    """Batch state of :class:`SecretEnv`."""

    secret: np.ndarray  # int[B]
    lo: np.ndarray  # int[B] -- smallest secret consistent with the answers so far
    hi: np.ndarray  # int[B] -- one past the largest
    done: np.ndarray  # bool[B]
    success: np.ndarray  # bool[B]
    turn: int = 0


@dataclass
class SecretEnv:
    """Guess the secret number in ``[0, n)`` after asking ``less K`` questions.

    The prompt is ``<bos> secret below N``; each question ``less K`` is answered ``yes`` if
    the secret is smaller than K, else ``no``; ``guess K`` ends the episode (reward 1 if K is
    the secret). The last turn must be a guess. Binary search needs ``ceil(log2 n)``
    questions, so ``max_turns = ceil(log2 n) + 1`` leaves no slack. With
    ``early_guess=False`` (default) every turn but the last is a question, so an episode is
    always ``max_turns - 1`` questions and one guess; with ``early_guess=True`` the agent may
    guess at any turn.

    Args:
        n: number of possible secrets (>= 2).
        max_turns: turn limit (the last turn is a forced guess).
        early_guess: allow ``guess`` before the last turn.

    Example:
        >>> import numpy as np
        >>> env = SecretEnv(n=8, max_turns=4)
        >>> state, prompt = env.reset({"secret": np.array([5])})
        >>> tok = env.tokenizer
        >>> tok.decode(prompt[0])
        '<bos> secret below 8'
        >>> tok.decode(env.step(state, np.array([[tok.id("less"), tok.id("4")]])).obs[0])
        'no'
        >>> (int(state.lo[0]), int(state.hi[0]))
        (4, 8)
        >>> res = env.step(state, np.array([[tok.id("guess"), tok.id("5")]]))
        >>> bool(res.done[0]), bool(res.success[0])
        (True, True)
    """

    n: int = 8
    max_turns: int = 4
    early_guess: bool = False
    name: str = field(default="secret", init=False)

    def __post_init__(self) -> None:
        self.n = _positive(self.n, "n", 2)
        self.max_turns = _positive(self.max_turns, "max_turns")
        numbers = [str(i) for i in range(max(self.n, 1) + 1)]
        self.tokenizer = WordTokenizer(["less", "guess", "yes", "no", "secret", "below", *numbers])
        tok = self.tokenizer
        v = len(tok)
        # Slot 0: question verbs; slot 1: numbers (the argument of both verbs); slot 2: "guess" only (last turn).
        self.slot_masks = np.zeros((3, v), dtype=bool)
        self.slot_masks[0, tok.ids(("less", "guess") if self.early_guess else ("less",))] = True
        self.slot_masks[1, tok.ids(numbers[: self.n])] = True
        self.slot_masks[2, tok.id("guess")] = True
        self.arg_slot = np.full(v, -1, dtype=np.int64)
        self.arg_slot[tok.ids(("less", "guess"))] = 1
        self.obs_len = 1
        self.prompt_len = 4
        self.action_len = 2
        self._num = tok.ids(numbers)
        self._value = np.full(v, -1, dtype=np.int64)  # token id -> number
        self._value[self._num] = np.arange(len(numbers))
        self._w = {w: tok.id(w) for w in ("less", "guess", "yes", "no", "secret", "below")}

    @property
    def num_layouts(self) -> int:
        """Distinct tasks (secrets)."""
        return self.n

    def first_slot(self, turn: int) -> int:
        """Grammar slot of the verb at ``turn``: slot 2 (``guess`` only) at the last turn, else 0."""
        return 2 if turn >= self.max_turns - 1 else 0

    def sample_tasks(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` random secrets, int[n]."""
        return {"secret": rng.integers(0, self.n, size=n)}

    def reset(self, tasks: dict[str, np.ndarray]) -> tuple[SecretState, np.ndarray]:
        secret = np.asarray(tasks["secret"], dtype=np.int64)
        if secret.ndim != 1 or ((secret < 0) | (secret >= self.n)).any():
            raise RangeError(f"tasks['secret'] must be int[B] with values in [0, {self.n}); got {secret!r}")
        b = secret.shape[0]
        state = SecretState(
            secret=secret.copy(),
            lo=np.zeros(b, dtype=np.int64),
            hi=np.full(b, self.n, dtype=np.int64),
            done=np.zeros(b, dtype=bool),
            success=np.zeros(b, dtype=bool),
        )
        w = self._w
        prompt = np.stack(
            [np.full(b, self.tokenizer.bos_id), np.full(b, w["secret"]), np.full(b, w["below"]), np.full(b, self._num[self.n])],
            axis=1,
        )
        return state, prompt.astype(np.int64)

    def anchors(self, state: SecretState) -> np.ndarray:
        """int[B] -- the interval of consistent secrets, ``lo * (n + 1) + hi``."""
        return state.lo * (self.n + 1) + state.hi

    def belief_query(self, tasks: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
        """IGPO's pseudo-answer: prefix ids int[P] (``guess``), answer ids int[B], answer slot."""
        secret = np.asarray(tasks["secret"], dtype=np.int64)
        return np.array([self._w["guess"]], dtype=np.int64), self._num[secret], 1

    def step(self, state: SecretState, actions: np.ndarray) -> StepResult:
        b = state.secret.shape[0]
        a = _check_actions(actions, b)
        verb, k = a[:, 0], self._value[a[:, 1]]
        live = ~state.done
        w = self._w
        guess = live & (verb == w["guess"])
        ask = live & (verb == w["less"]) & (k >= 0)
        yes = state.secret < k
        state.hi = np.where(ask & yes, np.minimum(state.hi, k), state.hi)
        state.lo = np.where(ask & ~yes, np.maximum(state.lo, k), state.lo)
        state.turn += 1
        state.success = state.success | (guess & (k == state.secret))
        done_now = live & (guess | (state.turn >= self.max_turns))
        state.done = state.done | done_now
        obs = np.where(yes, w["yes"], w["no"])[:, None].astype(np.int64)
        return StepResult(obs, done_now, state.success.copy())


ENVS = {"keydoor": KeyDoorEnv, "secret": SecretEnv}


def make_env(name: str, **kwargs) -> KeyDoorEnv | SecretEnv:
    """Build an environment by name (``keydoor`` or ``secret``) with keyword settings."""
    if name not in ENVS:
        raise RangeError(f"unknown environment {name!r}; expected one of {sorted(ENVS)}")
    return ENVS[name](**kwargs)
