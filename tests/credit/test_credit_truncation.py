"""Time limits: a truncated episode's observed return is a decomposition target by default, and a
reward model that never trained is loud (metrics, `trained`, one UntrainedAssignerWarning)."""

import warnings

import gymnasium as gym
import numpy as np
import pytest

import creditlab as cl
from creditlab import Episodes
from creditlab.credit import RRDAssigner, RUDDERAssigner, UntrainedAssignerWarning, load_assigner, save_assigner
from creditlab.integrations import TRUE_REWARD_KEY
from creditlab.integrations.gymnasium import EpisodicReward
from creditlab.integrations.sb3 import make_assigner
from creditlab.llm import SPAProgressEstimator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    "rd": {"hidden": (8,), "batch_episodes": 3},
    "rrd": {"hidden": (8,), "subset_size": 4},
    "lare": {"hidden": (8,), "subset_size": 4},
    "rudder": {"hidden_size": 8, "batch_episodes": 3},
    "spa": {"hidden": 8},
}


def _time_limited(n=6, t=7, seed=0):
    """Every episode ends at the time limit t (truncated, never terminated), like HalfCheetah:
    0 on every step and the accumulated true reward on the last (what EpisodicReward pays)."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, t, 3)).astype(np.float32)
    acts = rng.normal(size=(n, t, 2)).astype(np.float32)
    true = obs[..., 0] + acts[..., 1]
    rewards = np.zeros((n, t), np.float32)
    rewards[:, -1] = true.sum(1)
    ep = Episodes.from_padded(
        rewards, terminated=np.zeros(n, bool), truncated=np.ones(n, bool), observations=obs, actions=acts
    )
    return ep, true


@pytest.mark.parametrize("name", list(SMALL))
def test_registry_defaults_train_on_a_batch_where_every_episode_truncates(name):
    ep, _ = _time_limited()
    a = make_assigner(name, **SMALL[name])  # no include_truncated: the registry default
    m = a.fit(ep, num_updates=3)
    assert m["credit/updates"] == 3.0 and m["credit/total_updates"] == 3.0
    assert m.get("store/skipped_truncated", 0.0) == 0.0
    if a.store is not None:
        assert m["store/episodes"] == 6.0 and a.store.num_episodes == 6
    assert a.trained and a.num_updates == 3
    assert a.assign(ep).metrics["credit/untrained"] == 0.0


def test_time_limited_env_rollout_gives_exact_targets_and_trains():
    """Pendulum never terminates; every episode ends at its time limit. EpisodicReward pays the
    accumulated true reward on the truncating step, so the stored return is the exact true return
    of the observed steps -- the decomposition target, with no bootstrap added."""
    env = EpisodicReward(gym.make("Pendulum-v1", max_episode_steps=15))
    rng = np.random.default_rng(0)
    rows = []
    for e in range(4):
        obs, _ = env.reset(seed=e)
        o, a, r, true, nxt = [], [], [], [], []
        while True:
            act = rng.uniform(-2, 2, size=1).astype(np.float32)
            obs2, rew, terminated, truncated, info = env.step(act)
            o.append(obs), a.append(act), r.append(rew), true.append(info[TRUE_REWARD_KEY]), nxt.append(obs2)
            obs = obs2
            if terminated or truncated:
                assert truncated and not terminated
                break
        rows.append((o, a, r, true, nxt))
    ep = Episodes.from_lists(
        [x[2] for x in rows],
        observations=[x[0] for x in rows],
        actions=[x[1] for x in rows],
        next_observations=[x[4] for x in rows],
        truncated=[True] * 4,
        terminated=[False] * 4,
    )
    true_returns = np.array([np.sum(x[3]) for x in rows])
    for assigner in (RRDAssigner(hidden=(8,), subset_size=4), RUDDERAssigner(hidden_size=8)):
        m = assigner.fit(ep, num_updates=2)
        assert m["store/skipped_truncated"] == 0.0 and assigner.trained
        np.testing.assert_allclose(assigner.store.returns, true_returns, rtol=1e-5)  # exact observed returns


def test_starved_fit_is_loud_once():
    """Opting out of truncated episodes on a time-limited task leaves nothing to learn from."""
    ep, _ = _time_limited()
    rrd = RRDAssigner(hidden=(8,), subset_size=4, include_truncated=False)
    with pytest.warns(
        UntrainedAssignerWarning, match=r"offered 6 episodes and kept none \(6 truncated \(include_truncated=False"
    ):
        m = rrd.fit(ep, num_updates=3)
    assert m["credit/updates"] == 0.0 and m["credit/total_updates"] == 0.0
    assert m["store/skipped_truncated"] == 6.0 and m["store/episodes"] == 0.0
    assert not rrd.trained and rrd.skipped["truncated"] == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per assigner: no second warning
        rrd.fit(ep, num_updates=3)
        out = rrd.assign(ep)
    assert out.metrics["credit/untrained"] == 1.0 and out.metrics["credit/total_updates"] == 0.0
    assert rrd.skipped["truncated"] == 12


def test_untrained_assign_is_reported_by_metrics_not_warned():
    """Assigning before the first gradient step is legitimate in integrations (SAC scores new
    episodes before fitting them): the metric and `trained` say it, no warning."""
    ep, _ = _time_limited()
    rrd = RRDAssigner(hidden=(8,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = rrd.assign(ep)  # fit never called
        assert out.metrics["credit/untrained"] == 1.0 and out.metrics["credit/total_updates"] == 0.0
        rrd.fit(ep, num_updates=0)  # stored, no gradient step
        assert rrd.assign(ep).metrics["credit/untrained"] == 1.0
    assert not rrd.trained


def test_waiting_for_the_first_complete_episode_is_silent():
    """In training, the first rollouts of long episodes complete none: untrained, but not starved."""
    ep, _ = _time_limited()
    rrd = RRDAssigner(hidden=(8,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rrd.fit(None)["credit/updates"] == 0.0
        out = rrd.assign(ep)
    assert out.metrics["credit/untrained"] == 1.0
    rrd.fit(ep, num_updates=1)
    assert rrd.assign(ep).metrics["credit/untrained"] == 0.0


def test_spa_starved_on_episodes_without_outcomes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 2))
    ep = Episodes.from_padded(np.zeros((4, 3)), outcomes=[None] * 4, observations=x)
    est = SPAProgressEstimator(2, hidden=4)
    with pytest.warns(UntrainedAssignerWarning, match="4 without an outcome"):
        m = est.fit(ep, epochs=2)
    assert m["credit/updates"] == 0.0 and m["store/skipped_no_outcome"] == 4.0 and not est.trained


def test_checkpoint_keeps_the_counters(tmp_path):
    ep, _ = _time_limited()
    rrd = RRDAssigner(hidden=(8,), include_truncated=False)
    with pytest.warns(UntrainedAssignerWarning):
        rrd.fit(ep, num_updates=1)
    back = load_assigner(save_assigner(rrd, tmp_path / "rrd.pt"))
    assert back.skipped == rrd.skipped and back.trained is False


def test_fit_metrics_always_hold_the_skip_counts():
    rrd = RRDAssigner(hidden=(8,))
    m = rrd.fit(None)
    for key in (
        "store/skipped_no_outcome",
        "store/skipped_truncated",
        "store/skipped_too_long",
        "credit/updates",
        "credit/total_updates",
        "store/episodes",
    ):
        assert m[key] == 0.0, key


def test_ppo_on_a_time_limited_task_trains_the_reward_model():
    """SB3 PPO on episodic Pendulum (every episode truncated at 200 steps) with the registry's
    RRD: before the default changed, the store stayed empty and PPO trained on a random network."""
    from stable_baselines3 import PPO

    from creditlab.integrations.sb3 import CreditAssignmentCallback, make_env

    rrd = cl.get_method("rrd").factory(hidden=(16,))
    cb = CreditAssignmentCallback(rrd, update_ratio=1 / 32)
    env = make_env("Pendulum-v1", n_envs=2, reward="episodic", seed=0)
    PPO("MlpPolicy", env, n_steps=256, batch_size=128, n_epochs=1, seed=0, device="cpu").learn(1024, callback=cb)
    assert rrd.trained and rrd.store.num_episodes >= 4
    assert cb.history[-1]["credit/total_updates"] > 0 and cb.history[-1]["store/skipped_truncated"] == 0.0
