"""RUDDER: redistribution by prediction differences, residual correction, the LSTM assigner."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditlab import Episodes
from creditlab.credit import RUDDERAssigner, credit_quality, rudder_redistribution
from creditlab.errors import RangeError, ShapeError
from tests.helpers.strategies import padded_batches

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_redistribution_hand_computed():
    # g = [2, 5, 4], R = 6: differences [2 - 0, 5 - 2, 4 - 5] = [2, 3, -1]; residual 6 - 4 = 2.
    g = np.array([[2.0, 5.0, 4.0], [1.0, 0.0, 0.0]])
    m = np.array([[True, True, True], [True, False, False]])
    R = np.array([6.0, 3.0])
    last = rudder_redistribution(g, R, m, residual="last").rewards
    np.testing.assert_allclose(last, [[2.0, 3.0, 1.0], [3.0, 0.0, 0.0]])  # episode 1: g_0 = 1 + residual 2
    uni = rudder_redistribution(g, R, m, residual="uniform").rewards
    np.testing.assert_allclose(uni, [[2 + 2 / 3, 3 + 2 / 3, -1 + 2 / 3], [3.0, 0.0, 0.0]])
    none = rudder_redistribution(g, R, m, residual=None).rewards
    np.testing.assert_allclose(none, [[2.0, 3.0, -1.0], [1.0, 0.0, 0.0]])  # sums to g_{T-1}


def test_redistribution_without_return_has_no_residual():
    g = np.array([[2.0, 5.0]])
    out = rudder_redistribution(g, np.array([100.0]), np.ones((1, 2), bool), has_return=[False])
    np.testing.assert_allclose(out.rewards, [[2.0, 3.0]])


@settings(max_examples=60, deadline=None)
@given(batch=padded_batches(general_discounts=False), residual=st.sampled_from(["last", "uniform"]))
def test_redistribution_sums_to_return(batch, residual):
    m = batch["mask"]
    rng = np.random.default_rng(0)
    g = rng.normal(size=m.shape) * 5
    R = rng.normal(size=m.shape[0]) * 3
    out = rudder_redistribution(g, R, m, residual=residual).rewards
    np.testing.assert_allclose(out.sum(1), R, rtol=1e-9, atol=1e-9)
    assert (out[~m] == 0).all()
    # Without the correction the sum telescopes to the last prediction.
    tele = rudder_redistribution(g, R, m, residual=None).rewards
    np.testing.assert_allclose(tele.sum(1), g[np.arange(m.shape[0]), m.sum(1) - 1], rtol=1e-9, atol=1e-9)


def test_redistribution_rejects_bad_input():
    with pytest.raises(ShapeError):
        rudder_redistribution(np.zeros((2, 3)), np.zeros(3), np.ones((2, 3), bool))
    with pytest.raises(RangeError, match="residual"):
        rudder_redistribution(np.zeros((1, 1)), np.zeros(1), np.ones((1, 1), bool), residual="first")


def _key_task(n, seed, t=12):
    """A delayed-reward task RUDDER is made for: the return (+1/-1) is decided by the action at a
    random 'key' step flagged in the observation; every other step is worth 0."""
    rng = np.random.default_rng(seed)
    key = rng.integers(0, t, size=n)
    obs = np.zeros((n, t, 2), np.float32)
    obs[np.arange(n), key, 0] = 1.0  # the key step is visible
    obs[..., 1] = rng.normal(size=(n, t))  # distractor
    acts = rng.integers(0, 2, size=(n, t))
    true = np.zeros((n, t))
    true[np.arange(n), key] = np.where(acts[np.arange(n), key] == 1, 1.0, -1.0)
    rewards = np.zeros((n, t))
    rewards[:, -1] = true.sum(1)
    ep = Episodes.from_padded(rewards, terminated=np.ones(n, bool), observations=obs, actions=acts)
    return ep, true


def test_rudder_sums_to_return_and_locates_the_key_step():
    train, _ = _key_task(400, seed=0)
    test, true = _key_task(100, seed=1)
    rudder = RUDDERAssigner(hidden_size=16, lr=1e-2, batch_episodes=32, num_actions=2, seed=0)
    rudder.fit(train, num_updates=150)
    out = rudder.assign(test)
    np.testing.assert_allclose(out.rewards.sum(1), true.sum(1), atol=1e-4)  # residual correction
    q = credit_quality(out.rewards, true, test.mask)
    assert q.metrics["quality/pearson"] >= 0.8, q.metrics
    # The largest |reward| sits on the key step for most episodes.
    hit = np.argmax(np.abs(out.rewards), axis=1) == np.argmax(np.abs(true), axis=1)
    assert hit.mean() >= 0.8
    assert rudder.quality > 0.5


def test_rudder_prefix_of_running_episode():
    train, _ = _key_task(50, seed=0)
    rudder = RUDDERAssigner(hidden_size=8, num_actions=2)
    rudder.fit(train, num_updates=3)
    # Outcome unknown: differences of predictions only, summing to the last prediction.
    prefix = train.select([0]).replace(outcomes=np.array([0.0]), outcome_present=np.array([False]))
    g = rudder.predict_returns(prefix)
    out = rudder.assign(prefix)
    assert out.rewards.sum() == pytest.approx(g[0, -1], abs=1e-5)
    assert out.present.all()


def test_rudder_quality_gate_falls_back_to_observed_rewards():
    train, _ = _key_task(20, seed=0)
    rudder = RUDDERAssigner(hidden_size=8, num_actions=2, min_quality=0.99)
    rudder.fit(train, num_updates=1)
    out = rudder.assign(train)
    assert out.metrics["credit/gated"] == 1.0
    np.testing.assert_allclose(out.rewards, train.rewards)


def test_rudder_dims_checked():
    train, _ = _key_task(5, seed=0)
    rudder = RUDDERAssigner(hidden_size=8, num_actions=2)
    rudder.fit(train, num_updates=1)
    wide = train.replace(observations=np.zeros((5, 12, 3), np.float32))
    with pytest.raises(ShapeError, match="RUDDERAssigner"):
        rudder.assign(wide)
