"""Assigners checkpoint and resume; the registry builds every assigner without env arguments."""

import numpy as np
import pytest

import creditlab as cl
from creditlab import Episodes
from creditlab.credit import CreditAssigner, LaReAssigner, load_assigner, save_assigner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(seed, n=12):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 9, size=n)
    t = int(lengths.max())
    mask = np.arange(t)[None] < lengths[:, None]
    obs = rng.normal(size=(n, t, 3)).astype(np.float32)
    acts = rng.normal(size=(n, t, 2)).astype(np.float32)
    true = np.where(mask, obs[..., 0] + acts[..., 1], 0.0)
    rewards = np.zeros_like(true)
    rewards[np.arange(n), lengths - 1] = true.sum(1)
    return Episodes.from_padded(rewards, mask, terminated=np.ones(n, bool), observations=obs, actions=acts)


def _phi(s, a):
    return [s[:, 0], a[:, 1]]


SMALL = {
    "uniform": {},
    "ircr": {"capacity_steps": 40},
    "rd": {"hidden": (8,), "batch_episodes": 3},
    "rrd": {"hidden": (8,), "subset_size": 4, "bias_correction": True},
    "rudder": {"hidden_size": 8, "batch_episodes": 3},
    "lare": {"hidden": (8,), "subset_size": 4},
    "spa": {"hidden": 8},  # the observations are its per-turn features
    # multi-agent (rows without group_ids: every row its own team)
    "team_uniform": {},
    "team_rd": {"hidden": (8,), "batch_episodes": 3},
    "team_rrd": {"hidden": (8,), "subset_size": 4, "bias_correction": True},
    "team_lare": {"hidden": (8,), "subset_size": 4, "loss": "rrd"},
}


def test_registry_lists_and_builds_every_assigner():
    # exploration bonuses: their own registry-wide tests (tests/exploration/test_exploration_bonuses.py)
    credit = [m for m in cl.list_methods(kind="assigner") if m.family != "exploration"]
    names = {m.name for m in credit}
    assert {"uniform", "ircr", "rd", "rrd", "rudder", "lare", "spa"} <= names
    assert set(SMALL) == names  # every assigner is checkpoint-tested below
    ep = _batch(0)
    for m in credit:
        assigner = m.factory(**m.params)  # defaults only: no observation/action sizes needed
        assert isinstance(assigner, CreditAssigner)
        assert assigner.scope in ("step", "episode")
        out = m(ep)  # fit on the batch, then assign it
        assert np.asarray(out.rewards).shape == ep.rewards.shape


def test_one_uniform_in_the_registry():
    assert [m.name for m in cl.list_methods() if m.name == "uniform"] == ["uniform"]
    assert cl.get_method("uniform").kind == "assigner"


@pytest.mark.parametrize("name", list(SMALL))
def test_save_load_resume(name, tmp_path):
    factory = cl.get_method(name).factory
    extra = {"features": _phi} if name == "lare" else {}
    a = factory(**SMALL[name], **extra)
    a.fit(_batch(1), num_updates=3)
    path = save_assigner(a, tmp_path / f"{name}.pt")
    b = load_assigner(path, **extra)
    test = _batch(2)
    np.testing.assert_allclose(a.assign(test).rewards, b.assign(test).rewards, rtol=1e-6)
    # Resumed training continues exactly as the original would (model, optimizer, store, RNG).
    a.fit(_batch(3), num_updates=4)
    b.fit(_batch(3), num_updates=4)
    np.testing.assert_allclose(a.assign(test).rewards, b.assign(test).rewards, rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


def test_lare_callable_must_be_passed_again(tmp_path):
    a = LaReAssigner(features=_phi, hidden=(8,))
    a.fit(_batch(0), num_updates=1)
    path = save_assigner(a, tmp_path / "lare.pt")
    with pytest.raises(ValueError, match="pass it again"):
        load_assigner(path)  # a Python callable is not saved
    assert load_assigner(path, features=_phi).guard.num_factors == 2
