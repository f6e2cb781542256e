"""SPA progress estimator: planted per-turn contributions are recovered and sum to the outcome."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import creditlab as cl
from creditlab.llm import SPAProgressEstimator

torch.set_num_threads(1)


def _planted(rng, b, t_max, d):
    """Turn features x_t ~ N(0, I); planted contribution c_t = tanh(w . x_t) + 0.3 x_t0^2 - 0.3;
    outcome = sum_t c_t + small noise; 1..t_max turns."""
    w = np.linspace(-1.0, 1.0, d)
    x = rng.normal(size=(b, t_max, d))
    lengths = rng.integers(1, t_max + 1, size=b)
    mask = np.arange(t_max)[None, :] < lengths[:, None]
    c = np.tanh(x @ w) + 0.3 * x[..., 0] ** 2 - 0.3
    c = np.where(mask, c, 0.0)
    outcome = c.sum(1) + rng.normal(scale=0.05, size=b)
    return x, mask, c, outcome


def test_recovers_planted_contributions_better_than_uniform():
    rng = np.random.default_rng(0)
    x, mask, c, outcome = _planted(rng, 512, 6, 5)
    xt, mt, ct, ot = _planted(rng, 256, 6, 5)
    est = SPAProgressEstimator(5, hidden=32, num_layers=2, lr=1e-2, seed=0)
    fit = est.fit(x, outcome, mask=mask, epochs=200)
    assert fit["spa/r2"] > 0.95
    pred = est.contributions(xt, mask=mt)
    r = np.corrcoef(pred[mt], ct[mt])[0, 1]
    uniform = np.where(mt, (ot / mt.sum(1))[:, None], 0.0)
    r_uniform = np.corrcoef(uniform[mt], ct[mt])[0, 1]
    assert r > 0.95, r
    assert r_uniform < 0.8 and r > r_uniform + 0.2
    # decomposition: contributions sum to the held-out outcome (95% of its variance explained)
    assert np.mean((pred.sum(1) - ot) ** 2) < 0.05 * ot.var()
    assert np.all(pred[~mt] == 0)


def test_single_turn_trajectories_get_the_outcome():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 1, 2))
    outcome = 2.0 * x[:, 0, 0] - x[:, 0, 1]
    est = SPAProgressEstimator(2, hidden=0, lr=0.05, seed=1)
    est.fit(x, outcome, mask=np.ones((200, 1), bool), epochs=300)
    np.testing.assert_allclose(est.contributions(x, mask=np.ones((200, 1), bool))[:, 0], outcome, atol=1e-2)


def test_grounding_term_and_state_dict_round_trip():
    rng = np.random.default_rng(2)
    x, mask, _, outcome = _planted(rng, 64, 3, 2)
    est = SPAProgressEstimator(2, hidden=8, seed=0, grounding_weight=0.5)
    est.fit(x, outcome, mask=mask, epochs=5)
    g = (rng.uniform(size=mask.shape) < 0.5).astype(float)
    base = est.contributions(x, mask=mask)
    out = est.assign(x, mask=mask, grounding=g)
    np.testing.assert_allclose(out.rewards, np.where(mask, base + 0.5 * g, 0.0), atol=1e-6)
    with pytest.raises(cl.RangeError, match="grounding"):
        est.assign(x, mask=mask, grounding=g * 2)
    clone = SPAProgressEstimator(2, hidden=8, seed=123, grounding_weight=0.5)
    clone.load_state_dict(est.state_dict())
    np.testing.assert_array_equal(clone.contributions(x, mask=mask), base)
    # training resumes identically from the saved state
    est.update(x, outcome, mask=mask)
    clone.update(x, outcome, mask=mask)
    np.testing.assert_allclose(clone.contributions(x, mask=mask), est.contributions(x, mask=mask), atol=1e-7)
    with pytest.raises(cl.ShapeError, match="saved from"):
        SPAProgressEstimator(2, hidden=4).load_state_dict(est.state_dict())


def test_episodes_input_and_torch():
    rng = np.random.default_rng(3)
    x, mask, _, outcome = _planted(rng, 32, 4, 3)
    ep = cl.Episodes.from_padded(np.zeros(mask.shape), mask, outcomes=outcome, observations=x)
    est = SPAProgressEstimator(3, hidden=8)
    metrics = est.fit(ep, epochs=3)
    assert {"spa/loss", "spa/r2", "spa/epochs", "credit/updates", "credit/total_updates"} <= set(metrics)
    assert metrics["credit/updates"] == 3.0  # 3 epochs of one whole-batch step
    out = est.assign(ep)
    assert out.rewards.shape == mask.shape
    t = est.contributions(torch.from_numpy(x), mask=torch.from_numpy(mask))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    with pytest.raises(cl.ShapeError, match="feature_dim"):
        est.contributions(np.zeros((2, 3, 5)), mask=None)
    with pytest.raises(cl.RangeError, match="outcomes"):
        est.update(x, None, mask=mask)
