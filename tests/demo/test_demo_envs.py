"""The demo's text environments and tokenizer: transitions, outcomes, anchors, layouts, errors."""

import numpy as np
import pytest

from creditlab.errors import CreditlabError, RangeError, ShapeError
from creditlab_demo.envs import KeyDoorEnv, SecretEnv, make_env
from creditlab_demo.tokenizer import WordTokenizer


def act(env, state, *words):
    """Step one action per episode given as text, e.g. act(env, s, "go desk", "take key")."""
    tok = env.tokenizer
    return env.step(state, np.array([tok.encode(w) for w in words]))


# ------------------------------------------------------------------------------ tokenizer


def test_tokenizer_roundtrip_and_specials():
    tok = WordTokenizer(["go", "desk", "go"])  # duplicate dropped
    assert tok.words == ("<pad>", "<bos>", "go", "desk")
    assert tok.decode([1, *tok.encode("go desk"), 0]) == "<bos> go desk"
    assert tok.decode([0, 2], skip_pad=False) == "<pad> go"


def test_tokenizer_rejects_unknown_words_and_bad_vocab():
    tok = WordTokenizer(["a"])
    with pytest.raises(RangeError, match="'b' is not in the vocabulary"):
        tok.encode("a b")
    with pytest.raises(RangeError, match="outside the vocabulary"):
        tok.decode([7])
    with pytest.raises(CreditlabError, match="without spaces"):
        WordTokenizer(["two words"])


# ------------------------------------------------------------------------------ key and door


def test_keydoor_hand_played_episode():
    env = KeyDoorEnv(spots=3, pool=4, max_turns=10)
    # places: box (2), desk (0), bed (1); the key is at the desk.
    state, prompt = env.reset({"places": np.array([[2, 0, 1]]), "key": np.array([0])})
    tok = env.tokenizer
    assert tok.decode(prompt[0]) == "<bos> room box desk bed start door sees-nothing no-key"
    assert prompt.shape == (1, env.prompt_len)
    transcript = [
        ("take key", "failed door sees-nothing no-key"),  # no key here
        ("go shelf", "failed door sees-nothing no-key"),  # shelf is in the pool, not in this room
        ("open door", "locked door sees-nothing no-key"),  # the door needs the key
        ("go box", "moved box sees-nothing no-key"),
        ("go desk", "moved desk sees-key no-key"),  # the key becomes visible here
        ("take key", "took desk sees-nothing has-key"),
        ("take key", "failed desk sees-nothing has-key"),  # already taken
        ("open door", "failed desk sees-nothing has-key"),  # not at the door
        ("go door", "moved door sees-nothing has-key"),
    ]
    for words, expected in transcript:
        res = act(env, state, words)
        assert tok.decode(res.obs[0]) == expected, words
        assert not res.done[0]
    res = act(env, state, "open door")
    assert res.done[0] and res.success[0]
    assert state.turn == 10


def test_keydoor_time_limit_is_a_failure_and_finished_episodes_do_not_move():
    env = KeyDoorEnv(spots=2, pool=2, max_turns=2)
    state, _ = env.reset({"places": np.array([[0, 1], [1, 0]]), "key": np.array([0, 1])})
    r1 = act(env, state, "go desk", "go door")
    assert not r1.done.any()
    r2 = act(env, state, "take key", "go bed")
    assert r2.done.all() and not r2.success.any()
    # Episode 0 took the key on its last turn but did not open the door.
    assert state.has_key.tolist() == [True, False]
    loc = state.loc.copy()
    r3 = act(env, state, "go bed", "go desk")  # after the end: nothing changes, done_now is False
    assert (state.loc == loc).all() and not r3.done.any()


def test_keydoor_scripted_policy_solves_every_layout_and_anchors_track_state():
    """Search the listed places in order, take the key, go to the door, open it (vectorized)."""
    env = KeyDoorEnv(spots=4, pool=8, max_turns=7)  # worst case: 4 searches + take + go + open = 7
    rng = np.random.default_rng(0)
    tasks = env.sample_tasks(500, rng)
    tok = env.tokenizer
    state, _ = env.reset(tasks)
    b = 500
    idx = np.zeros(b, dtype=np.int64)
    anchors_seen = []
    for _ in range(env.max_turns):
        anchors_seen.append(env.anchors(state).copy())
        sees = (state.loc == state.key) & ~state.has_key
        at_door = state.loc == env.door
        verb = np.where(state.has_key & at_door, tok.id("open"), np.where(sees, tok.id("take"), tok.id("go")))
        next_place = tok.ids(KeyDoorEnv.PLACES[: env.pool])[tasks["places"][np.arange(b), np.minimum(idx, 3)]]
        where = np.where(state.has_key, tok.id("door"), next_place)
        arg = np.where(verb == tok.id("open"), tok.id("door"), np.where(verb == tok.id("take"), tok.id("key"), where))
        idx += (verb == tok.id("go")) & ~state.has_key
        env.step(state, np.stack([verb, arg], axis=1))
    assert state.success.all() and state.done.all()
    # Anchor = place + (pool + 1) * (sees + 2 * holds): the start anchor is the door, no key.
    assert (anchors_seen[0] == env.door).all()
    assert len(np.unique(np.concatenate(anchors_seen))) <= (env.pool + 1) * 4


def test_keydoor_layouts_are_varied_and_valid():
    env = KeyDoorEnv(spots=4, pool=8)
    tasks = env.sample_tasks(2000, np.random.default_rng(1))
    places, key = tasks["places"], tasks["key"]
    assert all(len(set(row)) == 4 for row in places.tolist())
    assert (places == key[:, None]).any(axis=1).all()
    distinct = {(tuple(p), k) for p, k in zip(places.tolist(), key.tolist())}
    assert len(distinct) > 1500  # out of 6720 layouts
    assert env.num_layouts == 8 * 7 * 6 * 5 * 4
    again = env.sample_tasks(2000, np.random.default_rng(1))
    assert (again["places"] == places).all()


def test_keydoor_bad_input():
    env = KeyDoorEnv(spots=2, pool=3)
    with pytest.raises(RangeError, match="spots <= pool"):
        KeyDoorEnv(spots=5, pool=3)
    with pytest.raises(ShapeError, match=r"expected \(B, 2\)"):
        env.reset({"places": np.array([[0, 1, 2]]), "key": np.array([0])})
    with pytest.raises(RangeError, match="one of that row's places"):
        env.reset({"places": np.array([[0, 1]]), "key": np.array([2])})
    state, _ = env.reset({"places": np.array([[0, 1]]), "key": np.array([0])})
    with pytest.raises(ShapeError, match="actions has shape"):
        env.step(state, np.array([1, 2]))


def test_keydoor_grammar_slots():
    env = KeyDoorEnv()
    tok = env.tokenizer
    verbs = [tok.words[i] for i in np.flatnonzero(env.slot_masks[env.first_slot(0)])]
    assert verbs == ["go", "take", "open"]
    go_args = {tok.words[i] for i in np.flatnonzero(env.slot_masks[env.arg_slot[tok.id("go")]])}
    assert go_args == set(KeyDoorEnv.PLACES[: env.pool]) | {"door"}
    assert np.flatnonzero(env.slot_masks[env.arg_slot[tok.id("take")]]).tolist() == [tok.id("key")]
    assert np.flatnonzero(env.slot_masks[env.arg_slot[tok.id("open")]]).tolist() == [tok.id("door")]


# ------------------------------------------------------------------------------ secret


def test_secret_answers_and_interval_anchor():
    env = SecretEnv(n=8, max_turns=4)
    state, prompt = env.reset({"secret": np.array([5, 0])})
    tok = env.tokenizer
    assert tok.decode(prompt[0]) == "<bos> secret below 8"
    res = act(env, state, "less 4", "less 4")
    assert [tok.decode([o]) for o in res.obs[:, 0]] == ["no", "yes"]
    # secret 5: 5 < 4 is false -> [4, 8); secret 0: 0 < 4 -> [0, 4). anchor = lo * 9 + hi.
    assert env.anchors(state).tolist() == [4 * 9 + 8, 0 * 9 + 4]
    res = act(env, state, "guess 5", "guess 1")
    assert res.done.all() and res.success.tolist() == [True, False]


def test_secret_binary_search_always_wins_and_last_turn_is_a_guess():
    env = SecretEnv(n=16, max_turns=5)
    tok = env.tokenizer
    secrets = np.arange(16)
    state, _ = env.reset({"secret": secrets})
    for t in range(env.max_turns):
        if env.first_slot(t) == 2:  # only "guess" allowed
            verb, k = tok.id("guess"), state.lo
        else:
            verb, k = tok.id("less"), (state.lo + state.hi + 1) // 2
        env.step(state, np.stack([np.full(16, verb), tok.ids([str(v) for v in k])], axis=1))
    assert state.success.all()
    assert [env.first_slot(t) for t in range(5)] == [0, 0, 0, 0, 2]
    assert [tok.words[i] for i in np.flatnonzero(env.slot_masks[0])] == ["less"]
    assert [tok.words[i] for i in np.flatnonzero(SecretEnv(early_guess=True).slot_masks[0])] == ["less", "guess"]


def test_secret_time_limit_and_belief_query():
    env = SecretEnv(n=4, max_turns=2)
    state, _ = env.reset({"secret": np.array([3])})
    act(env, state, "less 2")
    res = act(env, state, "less 3")  # the last turn without a guess ends the episode, failed
    assert res.done[0] and not res.success[0]
    prefix, answer, slot = env.belief_query({"secret": np.array([3, 1])})
    tok = env.tokenizer
    assert tok.decode(prefix) == "guess" and tok.decode(answer) == "3 1"
    assert env.slot_masks[slot][answer].all()
    with pytest.raises(RangeError, match=r"values in \[0, 4\)"):
        env.reset({"secret": np.array([4])})


def test_make_env():
    assert isinstance(make_env("secret", n=4), SecretEnv)
    with pytest.raises(RangeError, match="unknown environment"):
        make_env("maze")
