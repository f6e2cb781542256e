"""Uniform and IRCR credit: hand-computed examples and invariants."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditlab import Episodes
from creditlab.credit import IRCRAssigner, UniformAssigner, ircr_rewards, uniform_rewards
from creditlab.errors import DtypeError, ShapeError
from tests.helpers.strategies import padded_batches

# ------------------------------------------------------------------------------ uniform


def test_uniform_hand_computed_episodic():
    # Episodic protocol: 0 on every step, the sum on the last one.
    # Episode 0: R = 6 over T = 3 -> 2 per step; episode 1: R = -1 over T = 4 -> -0.25 per step;
    # episode 2: one step, R = 5 -> 5.
    ep = Episodes.from_lists([[0.0, 0.0, 6.0], [0.0, 0.0, 0.0, -1.0], [5.0]])
    out = UniformAssigner().assign(ep)
    np.testing.assert_allclose(
        out.rewards,
        [[2.0, 2.0, 2.0, 0.0], [-0.25, -0.25, -0.25, -0.25], [5.0, 0.0, 0.0, 0.0]],
    )
    assert out.present.tolist() == ep.mask.tolist()


def test_uniform_uses_outcome_and_marks_missing():
    # Outcomes override step rewards: R = 3 over T = 2 -> 1.5; the second outcome is None (the
    # episode is still running): no credit, present False.
    ep = Episodes.from_lists([[0.0, 0.0], [0.0, 0.0, 0.0]], outcomes=[3.0, None])
    out = UniformAssigner().assign(ep)
    np.testing.assert_allclose(out.rewards, [[1.5, 1.5, 0.0], [0.0, 0.0, 0.0]])
    assert out.present.tolist() == [[True, True, False], [False, False, False]]
    assert out.metrics["credit/num_no_outcome"] == 1.0


def test_uniform_keeps_torch_and_dtype():
    import torch

    ep = Episodes.from_lists([[0.0, 4.0]]).torch()
    out = UniformAssigner().assign(ep)
    assert isinstance(out.rewards, torch.Tensor)
    torch.testing.assert_close(out.rewards, torch.tensor([[2.0, 2.0]], dtype=torch.float64))


@settings(max_examples=60, deadline=None)
@given(batch=padded_batches(general_discounts=False))
def test_uniform_sums_to_return_and_zero_padding(batch):
    r, m = batch["rewards"].astype(np.float64), batch["mask"]
    ret = r.sum(1)
    out = uniform_rewards(ret, m)
    np.testing.assert_allclose(out.rewards.sum(1), ret, rtol=1e-9, atol=1e-9)
    assert (out.rewards[~m] == 0).all()
    # Constant within each episode.
    for b in range(r.shape[0]):
        vals = out.rewards[b, m[b]]
        assert np.allclose(vals, vals[0])


def test_uniform_rejects_bad_input():
    with pytest.raises(ShapeError, match="must be"):
        uniform_rewards(np.zeros(3), np.ones((2, 4), bool))
    with pytest.raises(DtypeError, match="creditlab.Episodes"):
        UniformAssigner().assign(np.zeros((2, 3)))


# ------------------------------------------------------------------------------ IRCR


def test_ircr_hand_computed_with_buffer_and_heap():
    # Buffer (capacity 5 steps): episodes seen by fit, credits c = R / T:
    #   A: R = 2, T = 2 -> c = 1 ; B: R = 9, T = 3 -> c = 3  (5 steps: both fit)
    # then C: R = 0, T = 1 -> c = 0 evicts A (6 steps > 5). The heap (K = 1) keeps the
    # highest-return episode, B (c = 3). Range over buffer {3, 0} and heap {3}: [0, 3].
    ircr = IRCRAssigner(capacity_steps=5, top_k=1)
    ircr.fit(Episodes.from_lists([[0.0, 2.0], [0.0, 0.0, 9.0]]))
    ircr.fit(Episodes.from_lists([[0.0]]))
    assert ircr.credit_range() == (0.0, 3.0)
    # New episode: R = 3 over T = 2 -> c = 1.5 -> (1.5 - 0) / (3 - 0) = 0.5 on both steps.
    out = ircr.assign(Episodes.from_lists([[1.0, 2.0]]))
    np.testing.assert_allclose(out.rewards, [[0.5, 0.5]])


def test_ircr_pays_for_length_when_the_worst_credit_is_negative():
    # IRCR's summed guidance over an episode is (R - T c_min) / (c_max - c_min): not the return,
    # the return plus T |c_min| / span when c_min < 0. Buffer credits {-3, 1} (R = -6 over 2 steps,
    # R = 1 over 1 step): span 4. Two new episodes with the same return R = -2:
    #   T = 2: c = -1 -> (-1 + 3) / 4 = 0.5 per step, sum 1.0 = (-2 + 2 * 3) / 4
    #   T = 8: c = -0.25 -> 0.6875 per step, sum 5.5 = (-2 + 8 * 3) / 4
    # so the longer episode earns 5.5x the guidance for the same return (uniform credit: -2 both).
    ircr = IRCRAssigner()
    ircr.fit(Episodes.from_lists([[0.0, -6.0], [1.0]]))
    out = ircr.assign(Episodes.from_lists([[0.0, -2.0], [0.0] * 7 + [-2.0]]))
    sums = out.rewards.sum(1)
    np.testing.assert_allclose(sums, [1.0, 5.5])
    np.testing.assert_allclose(sums, (np.array([-2.0, -2.0]) - np.array([2, 8]) * -3.0) / 4.0)
    uni = UniformAssigner().assign(Episodes.from_lists([[0.0, -2.0], [0.0] * 7 + [-2.0]]))
    np.testing.assert_allclose(uni.rewards.sum(1), [-2.0, -2.0])


def test_ircr_heap_keeps_best_after_fifo_eviction():
    # The best episode (R = 100, T = 10, c = 10) is evicted from the 10-step FIFO by later
    # episodes but stays in the heap, so c_max stays 10.
    ircr = IRCRAssigner(capacity_steps=10, top_k=2)
    ircr.fit(Episodes.from_lists([[0.0] * 9 + [100.0]]))
    ircr.fit(Episodes.from_lists([[0.0, 2.0]] * 5))  # five episodes of c = 1: 10 steps
    assert ircr.state_dict()["credits"].tolist() == [1.0] * 5
    # A new episode with c = 5.5: (5.5 - 1) / (10 - 1) = 0.5
    out = ircr.assign(Episodes.from_lists([[0.0, 11.0]]))
    np.testing.assert_allclose(out.rewards, [[0.5, 0.5]])


def test_ircr_degenerate_range_gives_half():
    # A single episode: c_min = c_max, guard -> 0.5 on every step.
    out = IRCRAssigner().assign(Episodes.from_lists([[0.0, 0.0, 3.0]]))
    np.testing.assert_allclose(out.rewards, [[0.5, 0.5, 0.5]])
    assert out.metrics["credit/ircr_degenerate"] == 1.0


def test_ircr_keeps_truncated_by_default_and_skips_missing_outcomes():
    # credits c = R / T: 1 / 2 = 0.5 (terminated), 50 / 2 = 25 (truncated by a time limit: its
    # observed return is the target), None (no outcome: never buffered)
    ep = Episodes.from_lists(
        [[0.0, 1.0], [0.0, 50.0], [0.0, 7.0]], outcomes=[1.0, 50.0, None], truncated=[False, True, False]
    )
    ircr = IRCRAssigner()
    m = ircr.fit(ep)
    assert m["store/skipped_truncated"] == 0.0 and m["store/skipped_no_outcome"] == 1.0
    assert ircr.state_dict()["credits"].tolist() == [0.5, 25.0]
    opt_out = IRCRAssigner(include_truncated=False)
    assert opt_out.fit(ep)["store/skipped_truncated"] == 1.0
    assert opt_out.state_dict()["credits"].tolist() == [0.5]
    out = ircr.assign(ep)
    # Assign still credits the truncated episode (its return is known); None gets nothing.
    assert out.present[:, 0].tolist() == [True, True, False]
    np.testing.assert_allclose(out.rewards[:2], [[0.0, 0.0], [1.0, 1.0]])  # c in [0.5, 25]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_fit=st.integers(0, 5))
def test_ircr_in_unit_interval_and_order_preserving(seed, n_fit):
    rng = np.random.default_rng(seed)
    ircr = IRCRAssigner(capacity_steps=int(rng.integers(1, 40)), top_k=int(rng.integers(0, 4)))

    def batch(n):
        lengths = rng.integers(1, 8, size=n)
        return Episodes.from_lists([list(rng.normal(size=k)) for k in lengths])

    for _ in range(n_fit):
        ircr.fit(batch(int(rng.integers(1, 5))))
    ep = batch(int(rng.integers(1, 6)))
    out = ircr.assign(ep)
    first = out.rewards[:, 0]
    assert ((first >= 0) & (first <= 1)).all()
    credits = ep.rewards.sum(1) / ep.lengths
    order = np.argsort(credits, kind="stable")
    assert (np.diff(first[order]) >= -1e-12).all()  # higher credit, higher guidance reward


def test_ircr_rewards_function_rejects_shapes():
    with pytest.raises(ShapeError):
        ircr_rewards(np.zeros(2), np.ones((3, 2), bool), c_min=0.0, c_max=1.0)
