"""Registry entries of the turn-level methods run on Episodes and agree with the functions."""

from __future__ import annotations

import numpy as np
import pytest

import creditlab as cl
from creditlab.llm import SPAProgressEstimator, TurnBatch, gigpo, igpo, oprl_advantages, process_turn_rewards, turn_rloo


def _batch():
    rng = np.random.default_rng(0)
    trajs = []
    for g in range(3):
        for _ in range(4):
            t = int(rng.integers(1, 5))
            trajs.append(
                {
                    "rewards": list(rng.normal(size=t).round(2)),
                    "group_id": g,
                    "anchors": [f"s{int(v)}" for v in rng.integers(0, 3, size=t)],
                    "outcome": float(rng.integers(0, 2)),
                    "features": rng.normal(size=(t, 3)),
                }
            )
    return TurnBatch.from_trajectories(trajs)


def test_llm_methods_are_listed():
    names = {m.name for m in cl.list_methods(family="llm")}
    # spa (an assigner) registers beside its class in creditlab.llm.spa
    assert {"gigpo", "turn_rloo", "igpo", "oprl", "process_turn_rewards"} <= names


def test_registry_runs_match_the_functions():
    tb = _batch()
    ep = tb.to_episodes()
    out = cl.get_method("gigpo")(ep)
    ref = gigpo(tb.outcomes, tb.rewards, tb.anchors, tb.group_ids, mask=tb.mask)
    np.testing.assert_allclose(out.advantages, ref.advantages)
    out = cl.get_method("turn_rloo")(ep, gamma=0.9)
    np.testing.assert_allclose(
        out.advantages, turn_rloo(tb.rewards, tb.group_ids, mask=tb.mask, gamma=0.9, outcomes=tb.outcomes).advantages
    )
    out = cl.get_method("oprl")(ep)
    np.testing.assert_allclose(
        out.advantages, oprl_advantages(tb.rewards, tb.outcomes, tb.group_ids, mask=tb.mask).advantages
    )
    out = cl.get_method("process_turn_rewards")(ep, transform="clip", eta=0.0)
    np.testing.assert_allclose(
        out.rewards, process_turn_rewards(tb.rewards, tb.outcomes, mask=tb.mask, transform="clip", eta=0.0).rewards
    )
    lp = np.log(np.random.default_rng(1).uniform(0.1, 1.0, size=(tb.num_trajectories, tb.mask.shape[1] + 1)))
    ep2 = cl.Episodes.from_padded(
        tb.rewards, tb.mask, outcomes=tb.outcomes, group_ids=tb.group_ids, extras={"belief_log_probs": lp}
    )
    np.testing.assert_allclose(
        cl.get_method("igpo")(ep2).advantages, igpo(lp, tb.outcomes, tb.group_ids, mask=tb.mask).advantages
    )
    with pytest.raises(cl.MissingColumnError, match="anchors"):
        cl.get_method("gigpo")(ep2)


def test_spa_fits_on_episodes():
    tb = _batch()
    est = SPAProgressEstimator(hidden=8)
    metrics = est.fit(tb.to_episodes(), epochs=5)
    assert np.isfinite(metrics["spa/loss"])
    assert est.assign(tb.to_episodes()).rewards.shape == tb.mask.shape
    with pytest.raises(cl.RangeError, match="not been trained"):
        SPAProgressEstimator().contributions(tb.features, mask=tb.mask)


def test_llm_public_names_import_and_are_documented():
    import inspect

    import creditlab.integrations.trl as trl_adapter
    import creditlab.integrations.verl as verl_adapter
    import creditlab.llm as llm

    for module in (llm, trl_adapter, verl_adapter):
        for name in module.__all__:
            if module is trl_adapter and name == "CreditlabGRPOTrainer":
                pytest.importorskip("trl")
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"
    for name in (
        "gigpo",
        "igpo",
        "turn_rloo",
        "gigpo_rows",
        "prime_advantages",
        "oprl_advantages",
        "process_turn_rewards",
    ):
        doc = getattr(llm, name).__doc__
        assert "[B" in doc or "[N]" in doc, f"{name} docstring does not state shapes"
