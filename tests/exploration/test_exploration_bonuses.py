"""Exploration bonus objects: hand-computed streams, episodic resets, slow references, checkpoints, registry."""

import copy
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl
from creditlab.errors import DtypeError, RangeError, ShapeError
from creditlab.exploration import (
    CombinedBonus,
    E3BBonus,
    EpisodicCountBonus,
    GlobalCountBonus,
    NovelDBonus,
    RNDBonus,
    make_bonus,
    make_transitions,
    noveld_bonus,
    observation_keys,
    transitions_from_episodes,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stream(keys_per_env, starts_per_env):
    """Transitions from per-env key sequences s_0, s_1, ..., s_T (keys double as 1-D observations)."""
    k = np.asarray(keys_per_env, dtype=np.int64).T  # [T + 1, E]
    s = np.asarray(starts_per_env, dtype=bool).T  # [T, E]
    return make_transitions(
        starts=s, keys=k[:-1], next_keys=k[1:], observations=k[:-1, :, None], next_observations=k[1:, :, None]
    )


# ------------------------------------------------------------------------------ counts


def test_episodic_count_by_hand_and_reset_at_every_start():
    # env 0: s_0..s_5 = a b a c | a b   (a new episode starts at s_4: the step before ended it)
    # episode 1 (s_0 = a counted at its start): b 1, a 2, c 1 -> 1, 0, 1
    # step 3 reaches s_4 = a while episode 1 is still running: a 3 -> 0
    # episode 2 starts at s_4 = a (memory cleared, a counted): b 1 -> 1
    a, b, c = 1, 2, 3
    tr = _stream([[a, b, a, c, a, b]], [[1, 0, 0, 0, 1]])
    assert EpisodicCountBonus().compute(tr).bonus[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    # without the reset at s_4, b would be a revisit: the start flag is what clears the memory
    tr_no_reset = _stream([[a, b, a, c, a, b]], [[1, 0, 0, 0, 0]])
    assert EpisodicCountBonus().compute(tr_no_reset).bonus[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]
    # inv_sqrt: counts 1, 2, 1, 3, 1 -> 1, 1/sqrt(2), 1, 1/sqrt(3), 1
    np.testing.assert_allclose(
        EpisodicCountBonus(mode="inv_sqrt").compute(tr).bonus[:, 0], [1, 2**-0.5, 1, 3**-0.5, 1], rtol=1e-6
    )


def test_global_count_by_hand_shared_by_envs_and_never_reset():
    # two envs, both start in a and go a -> b -> a; visits in time order, env 0 then env 1:
    # starts: a(1), a(2); t=0: b env0 -> 1, b env1 -> 2; t=1: a env0 -> 3, a env1 -> 4
    a, b = 1, 2
    g = GlobalCountBonus()
    out = g.compute(_stream([[a, b, a], [a, b, a]], [[1, 0], [1, 0]]))
    np.testing.assert_allclose(out.bonus, [[1, 2**-0.5], [3**-0.5, 0.5]], rtol=1e-6)
    assert g.table == {a: 4, b: 2} and out.metrics["exploration/unique_states"] == 2.0
    # a new episode does not reset it: env 0 reaches b a third time -> 1/sqrt(3)
    out2 = g.compute(_stream([[a, b], [a, a]], [[1], [1]]))
    assert out2.bonus[0, 0] == pytest.approx(3**-0.5)


def test_streaming_continues_episodes_across_calls():
    # splitting a stream into two compute calls gives the same bonuses as one call
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 4, size=(3, 13))
    starts = rng.random((3, 12)) < 0.2
    starts[:, 0] = True
    whole = _stream(keys, starts)
    for bonus_cls in (EpisodicCountBonus, GlobalCountBonus, CombinedBonus):
        one = bonus_cls().compute(whole).bonus
        split = bonus_cls()
        first = split.compute(_stream(keys[:, :6], starts[:, :5])).bonus
        second = split.compute(_stream(keys[:, 5:], starts[:, 5:])).bonus
        np.testing.assert_array_equal(np.concatenate([first, second]), one)


def test_first_call_starts_every_episode():
    # starts[0] False on a fresh bonus still inserts s_0: returning to it is not a first visit
    tr = _stream([[1, 2, 1]], [[0, 0]])
    assert EpisodicCountBonus().compute(tr).bonus[:, 0].tolist() == [1.0, 0.0]


def test_masked_steps_pay_nothing_and_change_nothing():
    tr = _stream([[1, 2, 2]], [[1, 0]])
    masked = tr._replace(mask=np.array([[True], [False]]))
    g = GlobalCountBonus()
    assert g.compute(masked).bonus[:, 0].tolist() == [1.0, 0.0]
    assert g.table == {1: 1, 2: 1}


def test_keys_default_to_observation_hashes():
    obs = np.array([[[0.0]], [[1.0]], [[0.0]]], dtype=np.float32)  # a, b, a
    tr = make_transitions(starts=[[1], [0]], observations=obs[:2], next_observations=obs[1:])
    assert EpisodicCountBonus().compute(tr).bonus[:, 0].tolist() == [1.0, 0.0]
    with pytest.raises(ShapeError, match="next_keys or next_observations"):
        EpisodicCountBonus().compute(make_transitions(starts=[[1]]))


# ------------------------------------------------------------------------------ E3B


def _e3b_reference(bonus: E3BBonus, tr) -> np.ndarray:
    """Slow reference: per env, per step, the direct inverse of lambda I + sum of the episode's phi phi^T."""
    t_len, e_len = tr.shape
    lam = bonus.config.ridge
    out = np.zeros((t_len, e_len))
    for e in range(e_len):
        cov = None
        for t in range(t_len):
            if tr.starts[t, e] or cov is None:
                phi0 = bonus.embed(tr.observations[t, e][None])[0].double().numpy()
                cov = lam * np.eye(phi0.size) + np.outer(phi0, phi0)
            phi = bonus.embed(tr.next_observations[t, e][None])[0].double().numpy()
            out[t, e] = phi @ np.linalg.solve(cov, phi)
            cov = cov + np.outer(phi, phi)
    return out


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), e=st.integers(1, 3), t=st.integers(1, 7))
def test_e3b_batched_equals_per_env_direct_inverse(seed, e, t):
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(t + 1, e, 3)).astype(np.float32)
    starts = rng.random((t, e)) < 0.3
    # a state reached at an episode end is followed by a new episode's first state (a reset)
    first = np.where(
        starts, rng.normal(size=(t, e, 3)).astype(np.float32).transpose(2, 0, 1), obs[:-1].transpose(2, 0, 1)
    ).transpose(1, 2, 0)
    tr = make_transitions(starts=starts, observations=first, next_observations=obs[1:])
    bonus = E3BBonus(embed_dim=4, hidden=(8,), ridge=0.5, normalize_observations=False, seed=seed)
    got = bonus.compute(tr).bonus
    np.testing.assert_allclose(
        got,
        _e3b_reference(bonus, tr._replace(starts=np.vstack([np.ones((1, e), bool), starts[1:]]))),
        rtol=2e-3,
        atol=1e-4,
    )


def test_e3b_resets_at_each_episode_start():
    # the same episode twice (second starts at step 3): with the reset both get the same bonuses
    obs = np.array([[0, 0], [1, 0], [0, 1]], dtype=np.float32)  # a, b, c
    seq = [obs[0], obs[1], obs[2], obs[0]]  # s_0..s_3 of episode 1 (a b c a)
    x0 = np.array([seq[0], seq[1], seq[2], seq[0], seq[1], seq[2]])[:, None]
    x1 = np.array([seq[1], seq[2], seq[3], seq[1], seq[2], seq[3]])[:, None]
    starts = np.array([[1], [0], [0], [1], [0], [0]], bool)
    bonus = (
        E3BBonus(embed_dim=3, hidden=(), normalize_observations=False)
        .compute(make_transitions(starts=starts, observations=x0, next_observations=x1))
        .bonus[:, 0]
    )
    np.testing.assert_allclose(bonus[:3], bonus[3:], rtol=1e-6)
    assert bonus[2] < bonus[0]  # returning to a is cheaper than reaching b
    no_reset = (
        E3BBonus(embed_dim=3, hidden=(), normalize_observations=False)
        .compute(
            make_transitions(
                starts=np.array([[1], [0], [0], [0], [0], [0]], bool), observations=x0, next_observations=x1
            )
        )
        .bonus[:, 0]
    )
    assert no_reset[3] < bonus[3]  # without the reset, b is no longer new


def test_e3b_fit_trains_inverse_dynamics_discrete_and_continuous():
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 5, size=(65, 4, 1)).astype(np.float32)
    acts = rng.integers(0, 2, size=(64, 4))
    nxt = obs[:-1] + np.where(acts == 1, 1.0, -1.0)[..., None]  # the action moves the state up or down
    tr = make_transitions(starts=np.eye(64, 4, dtype=bool), observations=obs[:-1], next_observations=nxt, actions=acts)
    e3b = E3BBonus(embed_dim=8, hidden=(32,), inverse_hidden=(32,), lr=1e-2)
    first = e3b.fit(tr, num_updates=1)
    assert e3b.num_actions == 2  # inferred from the batch: largest action + 1
    last = e3b.fit(tr, num_updates=150)
    assert last["exploration/embedding_loss"] < first["exploration/embedding_loss"]
    assert last["exploration/inverse_dynamics_accuracy"] > 0.9
    with pytest.raises(RangeError, match="actions must lie"):
        e3b.fit(tr._replace(actions=acts + 5))
    with pytest.raises(RangeError, match="discrete"):
        e3b.fit(tr._replace(actions=acts[..., None].astype(np.float32)))
    # continuous actions (an extension of the paper): the inverse model regresses the action vector
    cont = rng.normal(size=(64, 4, 2)).astype(np.float32)
    tr_c = make_transitions(
        starts=np.eye(64, 4, dtype=bool),
        observations=obs[:-1],
        next_observations=obs[:-1] + cont[..., :1],
        actions=cont,
    )
    e3c = E3BBonus(embed_dim=8, hidden=(32,), inverse_hidden=(32,), lr=1e-2)
    c_first = e3c.fit(tr_c, num_updates=1)["exploration/embedding_loss"]
    c_last = e3c.fit(tr_c, num_updates=150)["exploration/embedding_loss"]
    assert e3c.action_dim == 2 and c_last < 0.8 * c_first
    with pytest.raises(RangeError, match="discrete"):
        e3c.set_num_actions(3)


# ------------------------------------------------------------------------------ RND and NovelD


def test_rnd_fit_makes_trained_states_less_novel_than_unseen_ones():
    rng = np.random.default_rng(0)
    seen = rng.normal(size=(128, 2, 4)).astype(np.float32)
    unseen = rng.normal(loc=4.0, size=(128, 2, 4)).astype(np.float32)
    rnd = RNDBonus(hidden=(64,), out_dim=16, lr=3e-3, normalize_observations=False)
    tr = make_transitions(starts=np.eye(128, 2, dtype=bool), next_observations=seen)
    before = rnd.novelty(seen.reshape(-1, 4)).mean()
    metrics = rnd.fit(tr, num_updates=300)
    assert metrics["exploration/rnd_loss"] > 0
    after_seen = rnd.novelty(seen.reshape(-1, 4)).mean()
    after_unseen = rnd.novelty(unseen.reshape(-1, 4)).mean()
    assert after_seen < 0.5 * before and after_unseen > 2 * after_seen


def test_noveld_equals_the_pure_function_on_rnd_novelty_with_the_gate():
    rng = np.random.default_rng(3)
    states = rng.integers(0, 3, size=(9, 2)).astype(np.float32)  # 3 distinct values: revisits happen
    obs = states[:, :, None]
    tr = make_transitions(
        starts=np.array([[1, 1]] + [[0, 0]] * 7, bool), observations=obs[:-1], next_observations=obs[1:]
    )
    nov = NovelDBonus(hidden=(16,), out_dim=8)
    got = nov.compute(tr).bonus
    n1 = nov.model.novelty(obs[1:].reshape(-1, 1)).reshape(8, 2)
    n0 = nov.model.novelty(obs[:-1].reshape(-1, 1)).reshape(8, 2)
    gate = EpisodicCountBonus().compute(tr.with_keys()).bonus == 1
    np.testing.assert_allclose(got, noveld_bonus(n1, n0, alpha=0.5, first_visit=gate), rtol=1e-6)
    assert (got[~gate] == 0).all() and gate.sum() < gate.size  # some revisits were gated
    ungated = NovelDBonus(hidden=(16,), out_dim=8, gate="none", alpha=0.1).compute(tr).bonus
    np.testing.assert_allclose(ungated, noveld_bonus(n1, n0, alpha=0.1), rtol=1e-6)


# ------------------------------------------------------------------------------ combination


def test_combined_equals_its_components_combined():
    rng = np.random.default_rng(2)
    keys = rng.integers(0, 5, size=(2, 21))
    starts = rng.random((2, 20)) < 0.15
    tr = _stream(keys, starts)
    ep = EpisodicCountBonus().compute(tr).bonus
    gl = GlobalCountBonus().compute(tr).bonus
    np.testing.assert_allclose(CombinedBonus().compute(tr).bonus, ep * gl)
    np.testing.assert_allclose(CombinedBonus(combine="sum", weight=0.3).compute(tr).bonus, ep + 0.3 * gl, rtol=1e-6)
    e3b_noveld = CombinedBonus(
        episodic="e3b",
        global_="noveld",
        episodic_params={"embed_dim": 4, "hidden": ()},
        global_params={"alpha": 0.1, "gate": "none", "hidden": (8,), "out_dim": 4},
    )
    assert e3b_noveld.compute(tr).bonus.shape == (20, 2)
    with pytest.raises(RangeError, match="not an exploration bonus"):
        CombinedBonus(episodic="gae")
    with pytest.raises(RangeError, match="combine"):
        CombinedBonus(combine="max")


# ------------------------------------------------------------------------------ checkpoints


def _all_bonuses():
    small = {"hidden": (16,), "out_dim": 8}
    return [
        EpisodicCountBonus(),
        GlobalCountBonus(),
        RNDBonus(**small),
        NovelDBonus(**small),
        E3BBonus(embed_dim=4, hidden=(8,), num_actions=3),
        CombinedBonus(
            episodic="e3b",
            global_="rnd",
            episodic_params={"embed_dim": 4, "hidden": (8,), "num_actions": 3},
            global_params=small,
        ),
    ]


@pytest.mark.parametrize("index", range(6))
def test_state_dict_round_trip_continues_identically(index):
    rng = np.random.default_rng(index)
    keys = rng.integers(0, 6, size=(2, 31))
    acts = rng.integers(0, 3, size=(30, 2))
    starts = rng.random((2, 30)) < 0.2
    tr = _stream(keys, starts)._replace(actions=acts)
    first, second = (
        tr._replace(
            **{
                f: getattr(tr, f)[:15]
                for f in ("next_observations", "observations", "next_keys", "keys", "actions", "starts")
            }
        ),
        tr._replace(
            **{
                f: getattr(tr, f)[15:]
                for f in ("next_observations", "observations", "next_keys", "keys", "actions", "starts")
            }
        ),
    )
    a = _all_bonuses()[index]
    a.compute(first)
    a.fit(first, num_updates=3)
    state = pickle.loads(pickle.dumps(a.state_dict()))
    b = _all_bonuses()[index]
    b.load_state_dict(state)
    np.testing.assert_allclose(b.compute(second).bonus, a.compute(second).bonus, rtol=1e-6)
    assert a.fit(second, num_updates=2) == pytest.approx(b.fit(second, num_updates=2))


def test_load_state_dict_rejects_other_configs_and_bonuses():
    with pytest.raises(RangeError, match="mode"):
        EpisodicCountBonus().load_state_dict(EpisodicCountBonus(mode="inv_sqrt").state_dict())
    with pytest.raises(RangeError, match="global_count"):
        EpisodicCountBonus().load_state_dict(GlobalCountBonus().state_dict())


# ------------------------------------------------------------------------------ Episodes API and registry


def _episodes():
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 3, size=(3, 5, 2)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], bool)
    return cl.Episodes.from_padded(np.zeros((3, 5)), mask, observations=obs, actions=rng.integers(0, 3, size=(3, 5)))


def test_assign_on_episodes_zero_padding_fresh_episodes():
    ep = _episodes()
    out = EpisodicCountBonus().assign(ep)
    assert out.rewards.shape == (3, 5) and (out.rewards[~np.asarray(ep.mask)] == 0).all()
    # each row is its own episode: the result of a row does not depend on the other rows
    alone = EpisodicCountBonus().assign(ep.select([1]))
    np.testing.assert_array_equal(alone.rewards[0, :3], out.rewards[1, :3])
    # state keys given as extras are used instead of observation hashes: all states equal -> only revisits
    keyed = cl.Episodes.from_padded(
        np.zeros((1, 3)),
        observations=np.arange(3.0)[None, :, None],
        extras={"state_keys": np.zeros((1, 3), np.int64), "next_state_keys": np.zeros((1, 3), np.int64)},
    )
    assert EpisodicCountBonus().assign(keyed).rewards.tolist() == [[0.0, 0.0, 0.0]]
    tr = transitions_from_episodes(ep)
    assert tr.shape == (5, 3) and tr.starts[0].all() and not tr.starts[1:].any()


def test_assign_keeps_torch_batches_torch():
    out = GlobalCountBonus().assign(_episodes().torch())
    assert isinstance(out.rewards, torch.Tensor)


@pytest.mark.parametrize(
    "name", ["episodic_count", "global_count", "rnd", "noveld", "e3b", "episodic_x_global", "episodic_plus_global"]
)
def test_every_bonus_is_registered_and_runs_on_an_episodes_batch(name):
    method = cl.get_method(name)
    assert method.family == "exploration" and method.kind == "assigner"
    params = {"num_actions": 3} if name == "e3b" else {}
    out = method(_episodes(), **params)
    assert out.rewards.shape == (3, 5) and np.isfinite(out.rewards).all()
    assert isinstance(make_bonus(name, **params), type(method.factory(**params)))


def test_sum_registration_builds_a_sum():
    assert make_bonus("episodic_plus_global").config.combine == "sum"
    assert make_bonus("episodic_x_global").config.combine == "product"
    with pytest.raises(RangeError, match="not an exploration bonus"):
        make_bonus("gae")


def test_bad_configuration_is_a_named_error():
    with pytest.raises(RangeError, match="parameters are"):
        EpisodicCountBonus(mod="first_visit")
    with pytest.raises(RangeError, match="ridge"):
        E3BBonus(ridge=0)
    with pytest.raises(RangeError, match="gate"):
        NovelDBonus(gate="sometimes")
    with pytest.raises(DtypeError):
        EpisodicCountBonus(GlobalCountBonus.Config())
    with pytest.raises(ShapeError):
        make_transitions(starts=[[1, 0]], next_keys=[[1]])
    with pytest.raises(DtypeError):
        make_transitions(starts=[[1]], actions=[["left"]])
    assert make_transitions(starts=[[1]], actions=[[0.5]]).actions.dtype == np.float32  # continuous
    assert make_transitions(starts=[[1]], actions=[[2]]).actions.dtype == np.int64  # discrete


def test_observation_keys_distinguish_rows():
    x = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    k = observation_keys(x)
    assert k[0] == k[1] != k[2] and k.dtype == np.int64


def test_state_dict_is_a_deep_copy():
    g = GlobalCountBonus()
    g.compute(_stream([[1, 2]], [[1]]))
    state = g.state_dict()
    g.compute(_stream([[1, 2]], [[1]]))
    assert state["table"] == {1: 1, 2: 1}
    assert copy.deepcopy(state) == state
