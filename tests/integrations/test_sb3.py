"""Stable-Baselines3 integration: exact relabeling, GAE recomputation, timeout bootstrap, SAC
relabeling at sampling time, and smoke runs of every assigner."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import TimeLimit
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

import creditlab as cl
from creditlab.credit import RRDAssigner, UniformAssigner
from creditlab.integrations import TRUE_REWARD_KEY
from creditlab.integrations.gymnasium import EpisodicReward
from creditlab.integrations.sb3 import CreditAssignmentCallback, CreditReplayBuffer, SB3RunConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Chain(gym.Env):
    """Observation (t, 100); reward 1 per step (or -|a| for continuous actions); ends after ``length``."""

    def __init__(self, length=7, continuous=False, terminate=True):
        self.length = length
        self.terminate = terminate
        self.continuous = continuous
        self.observation_space = gym.spaces.Box(-1e6, 1e6, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32) if continuous else gym.spaces.Discrete(2)

    def _obs(self):
        return np.array([self.t, 100.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        r = -float(np.abs(action).sum()) if self.continuous else 1.0
        return self._obs(), r, self.terminate and self.t >= self.length, False, {}


def _venv(n_envs=2, **kw):
    limit = kw.pop("time_limit", None)

    def make():
        env = Chain(**kw)
        return TimeLimit(env, limit) if limit else env

    return make_vec_env(make, n_envs=n_envs, seed=0, wrapper_class=EpisodicReward)


class Recorder(BaseCallback):
    """Runs after the credit callback: snapshots the buffer and the values SB3 used."""

    def __init__(self):
        super().__init__()
        self.snapshots = []
        self.terminal = []

    def _on_rollout_start(self):
        self.terminal = []

    def _on_step(self):
        # V(terminal obs) with the rollout's policy, computed independently of SB3's own bootstrap.
        for i, info in enumerate(self.locals["infos"]):
            if self.locals["dones"][i] and info.get("TimeLimit.truncated"):
                obs = self.model.policy.obs_to_tensor(info["terminal_observation"])[0]
                with torch.no_grad():
                    v = self.model.policy.predict_values(obs)[0].item()
                self.terminal.append((int(self.model.rollout_buffer.pos), i, v))
        return True

    def _on_rollout_end(self):
        buf = self.model.rollout_buffer
        self.snapshots.append(
            dict(
                rewards=buf.rewards.copy(),
                advantages=buf.advantages.copy(),
                values=buf.values.copy(),
                starts=buf.episode_starts.copy(),
                last_values=self.locals["values"].clone().numpy().flatten(),
                dones=self.locals["dones"].copy(),
                terminal=list(self.terminal),
            )
        )


def _gae_reference(s, gamma, lam):
    """SB3's recursion written out (a slow reference, independent of the buffer method)."""
    r, v, starts = s["rewards"], s["values"], s["starts"]
    n = r.shape[0]
    adv = np.zeros_like(r)
    last = np.zeros(r.shape[1])
    for t in reversed(range(n)):
        nonterm = 1.0 - (s["dones"].astype(float) if t == n - 1 else starts[t + 1])
        nv = s["last_values"] if t == n - 1 else v[t + 1]
        delta = r[t] + gamma * nv * nonterm - v[t]
        last = delta + gamma * lam * nonterm * last
        adv[t] = last
    return adv


def test_ppo_uniform_relabels_exactly_and_recomputes_gae():
    # Episodes of 7 steps paying 1 per step; the wrapper pays 7 at the end. Rollouts of 5 steps
    # per env, so episodes span rollouts. Uniform credit is R / T = 1 on every step of a complete
    # episode (the dense reward exactly), but a step can only be relabeled while its rollout is in
    # the buffer: steps of an episode still running at the rollout's end keep the observed 0.
    #   rollout 1, steps 0-4: episode 1 running              -> 0 0 0 0 0
    #   rollout 2, steps 5-9: episode 1 ends at step 6        -> 1 1, then episode 2 running 0 0 0
    #   rollout 3, steps 10-14: episode 2 ends at step 13     -> 1 1 1 1, then episode 3 running 0
    cb = CreditAssignmentCallback(UniformAssigner(), reward_scale="none", unassigned="observed")
    rec = Recorder()
    model = PPO("MlpPolicy", _venv(), n_steps=5, batch_size=10, n_epochs=1, gamma=0.9, gae_lambda=0.8, seed=0)
    model.learn(30, callback=[cb, rec])
    assert len(rec.snapshots) == 3
    full = np.concatenate([s["rewards"] for s in rec.snapshots])  # [15, 2]
    expected = np.array([0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0], float)
    np.testing.assert_array_equal(full, np.stack([expected, expected], axis=1))
    for s in rec.snapshots:
        np.testing.assert_allclose(s["advantages"], _gae_reference(s, 0.9, 0.8), rtol=1e-5, atol=1e-5)
    h = cb.history[-1]
    assert h["quality/decomposition_error"] == 0.0  # assigned sums equal the returns
    assert np.isnan(h["quality/pearson"])  # true reward constant: correlation undefined, not faked


def test_ppo_keeps_timeout_bootstrap():
    # Never terminates; a 3-step time limit truncates. SB3 adds gamma * V(terminal obs) to the
    # stored reward at a truncation; after relabeling that term must still be there:
    # stored = 1 (uniform credit 3 / 3) + gamma * V(terminal obs).
    cb = CreditAssignmentCallback(UniformAssigner(), reward_scale="none")
    rec = Recorder()
    model = PPO(
        "MlpPolicy", _venv(terminate=False, time_limit=3), n_steps=6, batch_size=12, n_epochs=1, gamma=0.9, seed=0
    )
    model.learn(6, callback=[cb, rec])
    s = rec.snapshots[0]
    r = s["rewards"]
    boot = {(t, e): v for t, e, v in s["terminal"]}
    assert sorted(boot) == [(2, 0), (2, 1), (5, 0), (5, 1)]  # truncations at steps 3 and 6
    for t in range(6):
        for e in range(2):
            expected = 1.0 + 0.9 * boot[(t, e)] if (t, e) in boot else 1.0
            assert r[t, e] == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_ppo_episodes_span_rollouts_and_store_sees_raw_observations():
    # VecNormalize normalizes what the policy sees; the reward model must get raw observations.
    rrd = RRDAssigner(hidden=(8,), subset_size=4)
    cb = CreditAssignmentCallback(rrd, update_ratio=0.1)
    env = VecNormalize(_venv(), norm_obs=True, norm_reward=True)
    PPO("MlpPolicy", env, n_steps=5, batch_size=10, n_epochs=1, seed=0).learn(50, callback=cb)
    assert (rrd.store.lengths == 7).all()  # stitched across 5-step rollouts
    x = rrd.store.all_inputs()
    # inputs = (s, a one-hot, s' - s) with raw s = (t, 100): t in 0..6, the constant 100, and s'-s = (1, 0)
    np.testing.assert_array_equal(np.sort(np.unique(x[:, 0])), np.arange(7.0))
    np.testing.assert_array_equal(x[:, 1], 100.0)
    # (terminal observations pass through VecNormalize's normalize/unnormalize: float32 round-off)
    np.testing.assert_allclose(x[:, 4:], np.tile([1.0, 0.0], (x.shape[0], 1)), atol=1e-5)
    assert all(h["credit/frac_unassigned"] == 0.0 for h in cb.history)  # a step model credits every step
    # 0.1 updates per env step = 1 per 10-step rollout; none in rollout 1 (no complete episode yet)
    assert rrd.num_updates == 4


def test_uniform_fallback_mean_for_unfinished_episodes():
    cb = CreditAssignmentCallback(UniformAssigner(), reward_scale="none", unassigned="mean")
    rec = Recorder()
    PPO("MlpPolicy", _venv(), n_steps=5, batch_size=10, n_epochs=1, seed=0).learn(30, callback=[cb, rec])
    full = np.concatenate([s["rewards"] for s in rec.snapshots])
    # Rollout 1: nothing has been credited yet, the running mean starts at 0. From rollout 2 on,
    # steps of unfinished episodes get the mean assigned reward so far, 1.0 (= the dense reward).
    np.testing.assert_array_equal(full[:5], 0.0)
    np.testing.assert_array_equal(full[5:], 1.0)
    assert cb.history[-1]["credit/frac_unassigned"] > 0


# ------------------------------------------------------------------------------ SAC


def _sac(assigner, buffer_size=10_000, length=5, **kw):
    env = _venv(n_envs=1, length=length, continuous=True)
    return SAC(
        "MlpPolicy",
        env,
        learning_starts=20,
        batch_size=16,
        buffer_size=buffer_size,
        seed=0,
        policy_kwargs=dict(net_arch=[16]),
        replay_buffer_class=CreditReplayBuffer,
        replay_buffer_kwargs=dict(assigner=assigner, **kw),
    )


def test_sac_uniform_relabels_sampled_batches():
    # Reward -|a| per step; the wrapper pays the sum at step 5. Uniform: every sampled transition
    # gets its episode's R / 5, and only transitions of complete episodes are drawn.
    model = _sac(UniformAssigner())
    model.learn(60)
    buf = model.replay_buffer
    samples = buf.sample(64)
    r = samples.rewards.numpy().reshape(-1)
    idx = np.flatnonzero(buf.valid)
    per_episode = {int(i): buf._ep_return[i] / buf._ep_len[i] for i in np.unique(buf.ep_ids.reshape(-1)[idx])}
    allowed = np.array(list(per_episode.values()))
    assert np.isclose(r[:, None], allowed[None, :], atol=1e-6).any(axis=1).all()
    assert (buf._ep_len[np.unique(buf.ep_ids.reshape(-1)[idx])] == 5).all()


def test_sac_step_assigner_relabels_with_model_and_trains():
    rrd = RRDAssigner(hidden=(8,), subset_size=3)
    model = _sac(rrd, update_ratio=0.5)
    model.learn(60)
    np.random.seed(0)
    samples = model.replay_buffer.sample(8)
    eps = cl.Episodes.from_padded(
        np.zeros((8, 1), np.float32),
        observations=samples.observations.numpy()[:, None],
        actions=samples.actions.numpy()[:, None],
        next_observations=samples.next_observations.numpy()[:, None],
    )
    np.testing.assert_allclose(samples.rewards.numpy()[:, 0], rrd.assign(eps).rewards[:, 0], rtol=1e-5)
    assert rrd.num_updates >= 15  # 0.5 per env step once sampling starts
    assert "quality/decomposition_error" in model.replay_buffer.metrics


def test_sac_small_buffer_excludes_overwritten_episodes():
    # A 12-step buffer holding 5-step episodes: after wrapping, only whole episodes are drawn.
    model = _sac(UniformAssigner(), buffer_size=12)
    model.learn(80)
    buf = model.replay_buffer
    ids = np.unique(buf.ep_ids[buf.valid])
    assert len(ids) and not buf._ep_broken[ids].any()
    for i in ids:
        assert (buf.ep_ids == i).sum() == 5


# ------------------------------------------------------------------------------ smoke


ASSIGNER_SMOKE = {
    "uniform": {},
    "ircr": {},
    "rd": {"hidden": (16,)},
    "rrd": {"hidden": (16,), "subset_size": 8},
    "rudder": {"hidden_size": 8},
    "lare": {"hidden": (16,), "subset_size": 8},
}


@pytest.mark.parametrize("name", list(ASSIGNER_SMOKE))
def test_ppo_smoke_every_assigner_cartpole(name):
    params = dict(ASSIGNER_SMOKE[name], **({"features": "CartPole-v1"} if name == "lare" else {}))
    cfg = SB3RunConfig(
        "CartPole-v1",
        assigner=name,
        assigner_params=params,
        total_timesteps=256,
        n_envs=2,
        algo_kwargs={"n_steps": 64, "batch_size": 64, "n_epochs": 1},
        eval_episodes=1,
    )
    res = train(cfg)
    assert res.credit and np.isfinite(res.final_eval_return)
    assert all(np.isfinite(h["credit/seconds"]) for h in res.credit)
    assert "credit/overhead_pct" in res.metrics


@pytest.mark.parametrize("name", list(ASSIGNER_SMOKE))
def test_sac_smoke_every_assigner(name):
    params = dict(ASSIGNER_SMOKE[name], include_truncated=True) if name != "uniform" else {}
    if name == "lare":
        params["features"] = lambda s, a: [s[:, 0], np.sum(a**2, axis=1)]
    assigner = cl.get_method(name).factory(**params)
    model = _sac(assigner, length=8)
    model.learn(120)
    assert model.replay_buffer.history
    assert np.isfinite(model.replay_buffer.sample(4).rewards.numpy()).all()


def test_train_dense_and_episodic_baselines_and_vecnormalize():
    base = dict(
        total_timesteps=256, n_envs=2, algo_kwargs={"n_steps": 64, "batch_size": 64, "n_epochs": 1}, eval_episodes=1
    )
    for reward in ("dense", "episodic", "delayed"):
        res = train(
            SB3RunConfig("CartPole-v1", reward=reward, normalize_observations=True, normalize_rewards=True, **base)
        )
        assert res.credit == [] and res.metrics["credit/seconds"] == 0.0
    res = train(
        SB3RunConfig(
            "CartPole-v1", assigner="rrd", assigner_params={"hidden": (8,)}, normalize_observations=True, **base
        )
    )
    assert res.metrics["credit/seconds"] > 0


def test_true_reward_never_reaches_the_assigner():
    seen = []

    class Spy(UniformAssigner):
        def fit(self, episodes=None, *, num_updates=None):
            if episodes is not None:
                seen.append(episodes)
            return super().fit(episodes, num_updates=num_updates)

    cb = CreditAssignmentCallback(Spy(), reward_scale="none")
    PPO("MlpPolicy", _venv(), n_steps=8, batch_size=16, n_epochs=1, seed=0).learn(16, callback=cb)
    assert seen
    for ep in seen:
        # The assigner gets the delayed rewards (0 ... 0, 7), never the dense 1-per-step reward.
        assert (ep.rewards[:, :-1] == 0).all() and (ep.rewards[:, -1] == 7).all()
        assert TRUE_REWARD_KEY not in ep.extras


def test_bad_config_and_spaces():
    with pytest.raises(ValueError, match="algo"):
        SB3RunConfig("CartPole-v1", algo="dqn")
    with pytest.raises(ValueError, match="update_ratio"):
        CreditAssignmentCallback(UniformAssigner(), update_ratio=-1)
    with pytest.raises(ValueError, match="not a credit assigner"):
        CreditAssignmentCallback("gae")
