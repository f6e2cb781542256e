"""SB3 exploration callback: episodic resets on termination and truncation, bonus before GAE,
composition with the credit callback, logged metrics."""

import csv

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import TimeLimit
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecNormalize

from creditlab.credit import UniformAssigner
from creditlab.errors import RangeError
from creditlab.exploration import E3BBonus, EpisodicCountBonus, StateKeyWrapper
from creditlab.integrations.gymnasium import EpisodicReward
from creditlab.integrations.sb3 import CreditAssignmentCallback
from creditlab.integrations.sb3.exploration import ExplorationBonusCallback

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Ring(gym.Env):
    """Position on a ring of ``cells`` (one-hot observation), +1 per step whatever the action.

    Every episode starts at 0 and visits 1, 2, 3, ... ; it terminates after ``length`` steps
    when ``terminate`` (else it only ends by a TimeLimit truncation). Reward 1 per step.
    """

    def __init__(self, cells=10, length=3, terminate=True):
        self.cells, self.length, self.terminate = cells, length, terminate
        self.observation_space = gym.spaces.Box(0, 1, (cells,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self):
        o = np.zeros(self.cells, np.float32)
        o[self.pos % self.cells] = 1
        return o

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = 0, 0
        return self._obs(), {}

    def step(self, action):
        self.pos += 1
        self.t += 1
        return self._obs(), 1.0, self.terminate and self.t >= self.length, False, {}


def _ring_env(ending, n_envs=2, length=3, wrapper=None):
    def make():
        env = Ring(length=length, terminate=ending == "terminated")
        return env if ending == "terminated" else TimeLimit(env, length)

    return make_vec_env(make, n_envs=n_envs, seed=0, wrapper_class=wrapper)


class Snapshot(BaseCallback):
    """Copies the rollout buffer's rewards and advantages at each rollout end."""

    def __init__(self):
        super().__init__()
        self.rewards, self.advantages, self.values, self.starts, self.last = [], [], [], [], []

    def _on_step(self):
        return True

    def _on_rollout_end(self):
        buf = self.model.rollout_buffer
        self.rewards.append(buf.rewards.copy())
        self.advantages.append(buf.advantages.copy())
        self.values.append(buf.values.copy())
        self.starts.append(buf.episode_starts.copy())
        self.last.append((self.locals["values"].numpy().ravel().copy(), np.asarray(self.locals["dones"], float).copy()))


@pytest.mark.parametrize("ending", ["terminated", "truncated"])
def test_episodic_count_resets_on_termination_and_truncation(ending):
    # every episode is 0 -> 1 -> 2 -> 3 (length 3): with the reset, each step reaches a cell
    # not yet seen in its episode, so the first-visit bonus is 1 on every step; if the memory
    # survived the episode end, the second episode would revisit 1, 2, 3 and earn 0.
    cb = ExplorationBonusCallback(EpisodicCountBonus(), normalize=False, key="obs")
    PPO("MlpPolicy", _ring_env(ending), n_steps=8, batch_size=16, n_epochs=1, seed=0).learn(32, callback=cb)
    assert cb.last_bonus.shape == (8, 2)
    assert (cb.last_bonus == 1.0).all()
    # the episodes ended the way the test says (SB3's Monitor/TimeLimit flags)
    assert cb.history[-1]["exploration/episode_unique_states"] == 4.0  # cells 0, 1, 2, 3


@pytest.mark.parametrize("ending", ["terminated", "truncated"])
def test_e3b_resets_on_termination_and_truncation(ending):
    # the encoder does not learn (num_updates=0), every episode is the same sequence of states,
    # so with a reset at every episode end each episode's bonuses repeat exactly.
    bonus = E3BBonus(embed_dim=8, hidden=(), normalize_observations=False)
    cb = ExplorationBonusCallback(bonus, normalize=False, key="obs", num_updates=0)
    # episodes of 3 steps, rollouts of 6 steps: two whole episodes per env per rollout
    PPO("MlpPolicy", _ring_env(ending), n_steps=6, batch_size=12, n_epochs=1, seed=0).learn(24, callback=cb)
    b = cb.last_bonus
    np.testing.assert_allclose(b[:3], b[3:], rtol=1e-5)
    assert b[0, 0] > 0 and np.all(np.diff(b[:3, 0]) != 0)


def test_episodic_memory_continues_across_rollouts():
    # episodes of 5 steps, rollouts of 4 steps: an episode spans two rollouts and still pays
    # 1 on every step (no reset at a rollout boundary, where no episode ended)
    cb = ExplorationBonusCallback(EpisodicCountBonus(), normalize=False, key="obs")
    snaps = []

    class Keep(BaseCallback):
        def _on_step(self):
            return True

        def _on_rollout_end(self):
            snaps.append(cb.last_bonus.copy())

    PPO("MlpPolicy", _ring_env("terminated", length=5), n_steps=4, batch_size=8, n_epochs=1, seed=0).learn(
        40, callback=CallbackList([cb, Keep()])
    )
    assert all((s == 1.0).all() for s in snaps) and len(snaps) >= 5


def _gae_reference(rewards, values, starts, last_values, last_dones, gamma, lam):
    """SB3's GAE recursion written out per env (the buffer's episode_starts mark resets)."""
    t_len, e_len = rewards.shape
    adv = np.zeros_like(rewards)
    for e in range(e_len):
        gae = 0.0
        for t in reversed(range(t_len)):
            if t == t_len - 1:
                non_terminal, next_value = 1.0 - last_dones[e], last_values[e]
            else:
                non_terminal, next_value = 1.0 - starts[t + 1, e], values[t + 1, e]
            delta = rewards[t, e] + gamma * next_value * non_terminal - values[t, e]
            gae = delta + gamma * lam * non_terminal * gae
            adv[t, e] = gae
    return adv


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_bonus_is_added_before_gae(algo):
    before, after = Snapshot(), Snapshot()
    cb = ExplorationBonusCallback("episodic_x_global", beta=0.5, key="obs")
    kw = dict(n_steps=8, seed=0, gamma=0.9, gae_lambda=0.8)
    if algo is PPO:
        kw.update(batch_size=16, n_epochs=1)
    algo("MlpPolicy", _ring_env("terminated", length=4), **kw).learn(32, callback=CallbackList([before, cb, after]))
    for r0, r1, adv, v, s, (lv, ld), k in zip(
        before.rewards,
        after.rewards,
        after.advantages,
        after.values,
        after.starts,
        after.last,
        range(len(after.rewards)),
    ):
        hist = cb.history[k]
        std = hist["exploration/bonus_std"]
        raw = r1 - r0
        assert raw.max() > 0
        # the reward added is beta * bonus / running std
        assert hist["exploration/intrinsic_mean"] == pytest.approx(raw.mean(), rel=1e-5)
        assert hist["exploration/bonus_mean"] == pytest.approx((raw * std / 0.5).mean(), rel=1e-4)
        np.testing.assert_allclose(adv, _gae_reference(r1, v, s, lv, ld, 0.9, 0.8), rtol=1e-4, atol=1e-5)


def test_bonus_none_logs_metrics_and_leaves_rewards():
    before, after = Snapshot(), Snapshot()
    cb = ExplorationBonusCallback(None, key="obs")
    PPO("MlpPolicy", _ring_env("terminated"), n_steps=8, batch_size=16, n_epochs=1, seed=0).learn(
        16, callback=CallbackList([before, cb, after])
    )
    np.testing.assert_array_equal(before.rewards[0], after.rewards[0])
    assert cb.history[-1]["exploration/unique_states"] == 4.0


def test_composes_with_the_credit_callback_credit_first():
    # EpisodicReward hides the per-step reward 1: the uniform assigner spreads each episode's sum
    # R = 4 over its 4 steps (1 per step, scaled), then the bonus is added on top.
    credit = CreditAssignmentCallback(UniformAssigner(), reward_scale="none")
    mid, after = Snapshot(), Snapshot()
    explore = ExplorationBonusCallback(EpisodicCountBonus(), beta=0.5, normalize=False, key="obs")
    env = _ring_env("terminated", length=4, wrapper=EpisodicReward)
    PPO("MlpPolicy", env, n_steps=8, batch_size=16, n_epochs=1, seed=0).learn(
        16, callback=CallbackList([credit, mid, explore, after])
    )
    np.testing.assert_allclose(mid.rewards[0], 1.0, rtol=1e-6)  # decomposed extrinsic reward R / T = 1
    np.testing.assert_allclose(after.rewards[0], mid.rewards[0] + 0.5 * explore.last_bonus, rtol=1e-6)
    np.testing.assert_allclose(after.rewards[0], 1.5, rtol=1e-6)  # every step is a first visit
    with pytest.raises(RangeError, match="before the ExplorationBonusCallback"):
        PPO("MlpPolicy", _ring_env("terminated", wrapper=EpisodicReward), n_steps=8, batch_size=16, n_epochs=1).learn(
            16,
            callback=CallbackList(
                [ExplorationBonusCallback("episodic_count"), CreditAssignmentCallback(UniformAssigner())]
            ),
        )


def test_metrics_reach_the_sb3_logger(tmp_path):
    model = PPO("MlpPolicy", _ring_env("terminated"), n_steps=8, batch_size=16, n_epochs=1, seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    bonus = E3BBonus(embed_dim=4, hidden=(8,), batch_size=8)
    model.learn(32, callback=ExplorationBonusCallback(bonus, key="obs"))
    with open(tmp_path / "progress.csv") as f:
        header = next(csv.reader(f))
    for key in (
        "exploration/bonus_mean",
        "exploration/unique_states",
        "exploration/embedding_loss",
        "exploration/time_share",
    ):
        assert key in header


def test_keys_from_state_key_wrapper_and_vecnormalize():
    # keys from info: a function of the env (the ring position modulo 2: only 2 distinct keys)
    wrapper = lambda e: StateKeyWrapper(e, lambda env: env.unwrapped.pos % 2)  # noqa: E731
    env = VecNormalize(_ring_env("terminated", wrapper=wrapper), norm_obs=True, norm_reward=False)
    cb = ExplorationBonusCallback("episodic_count", normalize=False)
    PPO("MlpPolicy", env, n_steps=8, batch_size=16, n_epochs=1, seed=0).learn(16, callback=cb)
    assert cb.history[-1]["exploration/key_from_info"] == 1.0
    assert cb.history[-1]["exploration/unique_states"] == 2.0
    # 0 -> 1 (new), -> 2 = key 0 (seen at the start), -> 3 = key 1 (seen): 1, 0, 0 per episode
    np.testing.assert_array_equal(cb.last_bonus[:3, 0], [1.0, 0.0, 0.0])
    with pytest.raises(RangeError, match="StateKeyWrapper"):
        PPO("MlpPolicy", _ring_env("terminated"), n_steps=8, batch_size=16, n_epochs=1).learn(
            8, callback=ExplorationBonusCallback("episodic_count", key="info")
        )


def test_e3b_with_continuous_actions():
    class BoxRing(Ring):
        def __init__(self):
            super().__init__(length=4)
            self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    env = make_vec_env(BoxRing, n_envs=2, seed=0)
    cb = ExplorationBonusCallback(E3BBonus(embed_dim=4, hidden=(8,), batch_size=8), key="obs")
    PPO("MlpPolicy", env, n_steps=8, batch_size=16, n_epochs=1, seed=0).learn(16, callback=cb)
    assert cb.bonus.action_dim == 2 and "exploration/embedding_loss" in cb.history[-1]


def test_callback_arguments_are_checked():
    with pytest.raises(RangeError):
        ExplorationBonusCallback("episodic_count", beta=-1)
    with pytest.raises(RangeError):
        ExplorationBonusCallback("episodic_count", key="position")
    with pytest.raises(RangeError):
        ExplorationBonusCallback(EpisodicCountBonus(), bonus_params={"mode": "inv_sqrt"})
    with pytest.raises(RangeError):
        ExplorationBonusCallback("gae")
    assert ExplorationBonusCallback("episodic_count", bonus_params={"mode": "inv_sqrt"}).bonus.config.mode == "inv_sqrt"


def test_off_policy_model_is_a_named_error_at_the_start():
    # the bonus edits the on-policy rollout buffer: DQN has none, so training must stop at once with a
    # DtypeError naming what is supported (it used to be an AttributeError at the first rollout end)
    from stable_baselines3 import DQN

    from creditlab.errors import DtypeError

    model = DQN("MlpPolicy", "CartPole-v1", learning_starts=0, seed=0)
    with pytest.raises(DtypeError, match="PPO|A2C|on-policy|rollout"):
        model.learn(16, callback=ExplorationBonusCallback("episodic_count", key="obs"))
