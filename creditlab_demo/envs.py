"""Procedurally generated multi-turn text tasks with an outcome reward only at the end.

Both environments are *batch* environments: one call steps B episodes at once with NumPy
array operations (no Python loop over episodes). They speak token ids of their own
:class:`~creditlab_demo.tokenizer.WordTokenizer`; a turn is one policy response of
``action_len`` = 2 words (``VERB ARG``) followed, unless the episode ended, by ``obs_len``
observation words written by the environment.

The policy's decoding is constrained to the action grammar, as a tool-call schema would be:
the verb of turn ``t`` comes from slot ``first_slot(t)`` and the argument from slot
``arg_slot[verb]``; a slot allows the words ``slot_masks[slot]``. The grammar does not make
actions useful: ``take door`` is a legal string that the world answers with ``nothing``.

* :class:`KeyDoorEnv` -- a one-room text world in the style of ALFWorld. The key is hidden at
  one of the room's places; the agent must ``go`` to places until it sees the key, ``take key``,
  ``go door`` and ``open door`` within ``max_turns`` turns. Layouts differ in the room's
  places, their order and the key's place. Reward 1 if the door was opened, else 0. The anchor
  state of a turn (GiGPO) is (place, key visible, key held).
* :class:`SecretEnv` -- guess the secret number in ``[0, n)``. The agent asks ``less k``
  ("is the secret < k?", answered ``yes`` / ``no``) and ends with ``guess k``; the last turn
  must be a guess. Reward 1 for the right guess. The belief query (IGPO) is the policy's
  probability of ``guess <secret>`` after each turn; the anchor state is the interval of
  secrets still consistent with the answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from creditlab.errors import RangeError, ShapeError

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
    """Batch state of :class:`KeyDoorEnv` (arrays of length B; places are pool indices)."""

    places: np.ndarray  # int[B, spots] -- the room's places, as indices into PLACES
    key: np.ndarray  # int[B] -- place hiding the key
    loc: np.ndarray  # int[B] -- where the agent is (a place index, or len(PLACES) for the door)
    has_key: np.ndarray  # bool[B]
    done: np.ndarray  # bool[B]
    success: np.ndarray  # bool[B]
    turn: int = 0


@dataclass
class KeyDoorEnv:
    """Find the hidden key, take it, walk to the locked door and open it.

    A room has ``spots`` places drawn from a pool of ``pool`` names (``desk``, ``bed``, ...),
    listed in the prompt in random order, and a locked door. The key is hidden at one of the
    places and is only seen when the agent stands there. The agent starts at the door. Layouts
    differ in which places the room has, their order and where the key is.

    Prompt (``6 + spots`` words): ``<bos> room P1 .. Pk start door sees-nothing no-key``.
    After each turn the world answers ``EVENT PLACE SEEN HAND`` (4 words): EVENT is ``moved``,
    ``took``, ``locked`` (the door without the key) or ``failed`` (no such place here, no key
    here, no door here); PLACE is where the agent stands; SEEN is ``sees-key`` or
    ``sees-nothing``; HAND is ``no-key`` or ``has-key``. Actions: ``go PLACE`` (any pool name
    or ``door``), ``take key``, ``open door``. Opening the door with the key ends the episode
    with reward 1; running out of turns gives 0.

    The anchor state of a turn (GiGPO) is (place, key visible, key held): the observation
    without its EVENT word.

    Args:
        spots: places per room (>= 1).
        pool: number of place names to draw from (``spots <= pool <= len(PLACES)``).
        max_turns: turn limit.

    Example:
        >>> import numpy as np
        >>> env = KeyDoorEnv(spots=3, pool=4, max_turns=8)
        >>> state, prompt = env.reset({"places": np.array([[2, 0, 1]]), "key": np.array([0])})
        >>> tok = env.tokenizer
        >>> tok.decode(prompt[0])
        '<bos> room box desk bed start door sees-nothing no-key'
        >>> def act(words):
        ...     return tok.decode(env.step(state, np.array([tok.encode(words)])).obs[0])
        >>> act("go shelf"), act("open door")
        ('failed door sees-nothing no-key', 'locked door sees-nothing no-key')
        >>> act("go desk"), act("take key"), act("go door")
        ('moved desk sees-key no-key', 'took desk sees-nothing has-key', 'moved door sees-nothing has-key')
        >>> res = env.step(state, np.array([tok.encode("open door")]))
        >>> bool(res.done[0]), bool(res.success[0])
        (True, True)
    """

    spots: int = 4
    pool: int = 8
    max_turns: int = 16
    name: str = field(default="keydoor", init=False)

    PLACES = ("desk", "bed", "box", "shelf", "rug", "sofa", "chest", "lamp", "sink", "stool")
    VERBS = ("go", "take", "open")
    EVENTS = ("start", "moved", "took", "locked", "failed")

    def __post_init__(self) -> None:
        self.spots = _positive(self.spots, "spots")
        self.pool = _positive(self.pool, "pool")
        if not self.spots <= self.pool <= len(self.PLACES):
            raise RangeError(f"need spots <= pool <= {len(self.PLACES)}; got spots={self.spots}, pool={self.pool}")
        self.max_turns = _positive(self.max_turns, "max_turns")
        places = self.PLACES[: self.pool]
        words = [
            *self.VERBS,
            *places,
            "door",
            "key",
            *self.EVENTS,
            "room",
            "sees-key",
            "sees-nothing",
            "no-key",
            "has-key",
        ]
        self.tokenizer = WordTokenizer(words)
        tok = self.tokenizer
        v = len(tok)
        # Slot 0: verbs; 1: where to go (places and the door); 2: "key" (after take); 3: "door" (after open).
        self.slot_masks = np.zeros((4, v), dtype=bool)
        self.slot_masks[0, tok.ids(self.VERBS)] = True
        self.slot_masks[1, tok.ids((*places, "door"))] = True
        self.slot_masks[2, tok.id("key")] = True
        self.slot_masks[3, tok.id("door")] = True
        self.arg_slot = np.full(v, -1, dtype=np.int64)
        self.arg_slot[[tok.id("go"), tok.id("take"), tok.id("open")]] = [1, 2, 3]
        self.obs_len = 4
        self.prompt_len = 6 + self.spots
        self.action_len = 2
        self.door = self.pool  # location index of the door
        self._loc_ids = tok.ids((*places, "door"))  # location index -> token id
        self._loc_of = np.full(v, -1, dtype=np.int64)  # token id -> location index
        self._loc_of[self._loc_ids] = np.arange(self.pool + 1)
        self._w = {
            w: tok.id(w)
            for w in (*self.VERBS, *self.EVENTS, "key", "door", "room", "sees-key", "sees-nothing", "no-key", "has-key")
        }

    @property
    def num_layouts(self) -> int:
        """Distinct layouts: ordered choices of places times the key's place."""
        return math.perm(self.pool, self.spots) * self.spots

    def first_slot(self, turn: int) -> int:
        """Grammar slot of the verb at ``turn`` (always slot 0)."""
        return 0

    def sample_tasks(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` random layouts: ``places`` int[n, spots] (pool indices, in prompt order), ``key`` int[n]."""
        places = np.argsort(rng.random((n, self.pool)), axis=1)[:, : self.spots]
        key = places[np.arange(n), rng.integers(0, self.spots, size=n)]
        return {"places": places, "key": key}

    def reset(self, tasks: dict[str, np.ndarray]) -> tuple[KeyDoorState, np.ndarray]:
        """Start B episodes at the door; returns the state and the prompt ids int[B, prompt_len]."""
        places = np.asarray(tasks["places"], dtype=np.int64)
        key = np.asarray(tasks["key"], dtype=np.int64)
        if places.ndim != 2 or places.shape[1] != self.spots:
            raise ShapeError(f"tasks['places'] has shape {places.shape}; expected (B, {self.spots})")
        b = places.shape[0]
        if ((places < 0) | (places >= self.pool)).any():
            raise RangeError(f"tasks['places'] must hold place indices in [0, {self.pool})")
        if key.shape != (b,) or not (places == key[:, None]).any(axis=1).all():
            raise RangeError(f"tasks['key'] must be int[{b}], each one of that row's places")
        state = KeyDoorState(
            places=places.copy(),
            key=key.copy(),
            loc=np.full(b, self.door, dtype=np.int64),
            has_key=np.zeros(b, dtype=bool),
            done=np.zeros(b, dtype=bool),
            success=np.zeros(b, dtype=bool),
        )
        w = self._w
        head = np.stack([np.full(b, self.tokenizer.bos_id), np.full(b, w["room"])], axis=1)
        obs = self._render(state, np.full(b, w["start"]))
        return state, np.concatenate([head, self._loc_ids[places], obs], axis=1).astype(np.int64)

    def _sees_key(self, state: KeyDoorState) -> np.ndarray:
        return (state.loc == state.key) & ~state.has_key

    def anchors(self, state: KeyDoorState) -> np.ndarray:
        """int[B] -- anchor key of the current state: place + (pool + 1) * (sees key + 2 * holds key)."""
        flags = self._sees_key(state).astype(np.int64) + 2 * state.has_key.astype(np.int64)
        return state.loc + (self.pool + 1) * flags

    def step(self, state: KeyDoorState, actions: np.ndarray) -> StepResult:
        """Apply one (verb, arg) action per episode; finished episodes are left unchanged."""
        b = state.loc.shape[0]
        a = _check_actions(actions, b)
        verb, arg = a[:, 0], a[:, 1]
        live = ~state.done
        w = self._w
        target = self._loc_of[arg]
        in_room = (target == self.door) | (state.places == target[:, None]).any(axis=1)
        moved = live & (verb == w["go"]) & (target >= 0) & in_room
        took = live & (verb == w["take"]) & (arg == w["key"]) & self._sees_key(state)
        at_door = state.loc == self.door
        opening = live & (verb == w["open"]) & (arg == w["door"]) & at_door
        opened = opening & state.has_key
        locked = opening & ~state.has_key
        state.loc = np.where(moved, target, state.loc)
        state.has_key = state.has_key | took
        state.turn += 1
        state.success = state.success | opened
        done_now = live & (opened | (state.turn >= self.max_turns))
        state.done = state.done | done_now
        event = np.full(b, w["failed"])
        event = np.where(moved, w["moved"], event)
        event = np.where(took, w["took"], event)
        event = np.where(locked, w["locked"], event)
        return StepResult(self._render(state, event), done_now, state.success.copy())

    def _render(self, state: KeyDoorState, event: np.ndarray) -> np.ndarray:
        w = self._w
        seen = np.where(self._sees_key(state), w["sees-key"], w["sees-nothing"])
        hand = np.where(state.has_key, w["has-key"], w["no-key"])
        return np.stack([event, self._loc_ids[state.loc], seen, hand], axis=1).astype(np.int64)

    def optimal_turns(self, tasks: dict[str, np.ndarray]) -> np.ndarray:
        """int[B] -- turns of the best policy that knows where the key is: go, take, go door, open."""
        return np.full(np.asarray(tasks["key"]).shape[0], 4, dtype=np.int64)


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
            [
                np.full(b, self.tokenizer.bos_id),
                np.full(b, w["secret"]),
                np.full(b, w["below"]),
                np.full(b, self._num[self.n]),
            ],
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
