"""GAE agrees with Stable-Baselines3's RolloutBuffer.compute_returns_and_advantage on random rollouts."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl

sb3_buffers = pytest.importorskip("stable_baselines3.common.buffers")
gym = pytest.importorskip("gymnasium")


def _sb3_gae(rewards, values, episode_starts, last_values, dones, gamma, lam):
    """Fill an SB3 RolloutBuffer ([n_steps, n_envs]) and let SB3 compute GAE."""
    n_steps, n_envs = rewards.shape
    buf = sb3_buffers.RolloutBuffer(
        n_steps,
        gym.spaces.Box(-1, 1, (1,)),
        gym.spaces.Discrete(2),
        device="cpu",
        gae_lambda=lam,
        gamma=gamma,
        n_envs=n_envs,
    )
    import torch

    for t in range(n_steps):
        buf.add(
            np.zeros((n_envs, 1), np.float32),
            np.zeros((n_envs, 1)),
            rewards[t],
            episode_starts[t],
            torch.as_tensor(values[t]),
            torch.zeros(n_envs),
        )
    buf.compute_returns_and_advantage(torch.as_tensor(last_values), dones)
    return buf.advantages, buf.returns


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_steps=st.integers(1, 40),
    n_envs=st.integers(1, 6),
    gamma=st.sampled_from([0.9, 0.99, 1.0]),
    lam=st.sampled_from([0.0, 0.95, 1.0]),
)
def test_gae_equals_sb3(seed, n_steps, n_envs, gamma, lam):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(n_steps, n_envs)).astype(np.float32)
    values = rng.normal(size=(n_steps, n_envs)).astype(np.float32)
    episode_starts = (rng.uniform(size=(n_steps, n_envs)) < 0.15).astype(np.float32)
    episode_starts[0] = 1.0
    last_values = rng.normal(size=n_envs).astype(np.float32)
    dones = rng.uniform(size=n_envs) < 0.3
    adv_sb3, ret_sb3 = _sb3_gae(rewards, values, episode_starts, last_values, dones, gamma, lam)

    # SB3 marks the end of an episode by the *next* step's episode_start (or `dones` at the end);
    # SB3 treats every done as terminal (time-outs are folded into the reward before this point).
    terminated = np.zeros((n_steps, n_envs), bool)
    terminated[:-1] = episode_starts[1:] > 0
    terminated[-1] = dones
    ep = cl.Episodes.from_streams(
        rewards, terminated, np.zeros_like(terminated), values=values, last_values=last_values
    )
    out = cl.gae(
        ep.rewards,
        ep.values,
        gamma=gamma,
        lambda_=lam,
        mask=ep.mask,
        discounts=ep.discounts,
        bootstrap_value=ep.bootstrap_value,
    )
    ours = ep.to_streams(out.advantages)  # back to SB3's [n_steps, n_envs] layout
    ours_ret = ep.to_streams(out.returns)
    np.testing.assert_allclose(ours, adv_sb3, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours_ret, ret_sb3, rtol=1e-5, atol=1e-5)


def test_from_streams_truncation_values_bootstrap():
    """A time-limit truncation bootstraps from V(final obs) instead of being treated as terminal."""
    rewards = np.array([[1.0], [1.0], [1.0]])
    terminated = np.zeros((3, 1), bool)
    truncated = np.array([[False], [True], [False]])
    tv = np.array([[0.0], [5.0], [0.0]])
    ep = cl.Episodes.from_streams(rewards, terminated, truncated, truncation_values=tv, last_values=[7.0])
    assert ep.truncated.tolist() == [True, True]
    np.testing.assert_allclose(ep.bootstrap_value, [5.0, 7.0])
    # gamma = 0.5: episode 0 returns [1 + .5 (1 + .5 * 5), 1 + .5 * 5] = [2.75, 3.5]
    g = cl.discounted_returns(
        ep.rewards, gamma=0.5, mask=ep.mask, discounts=ep.discounts, bootstrap_value=ep.bootstrap_value
    )
    np.testing.assert_allclose(g[0, :2], [2.75, 3.5])
    np.testing.assert_allclose(g[1, :1], [1 + 0.5 * 7.0])


def test_from_streams_guards_and_torch():
    import torch

    r = np.ones((3, 2))
    running = np.zeros((3, 2), bool)
    with pytest.raises(cl.ShapeError, match="last_values"):
        cl.Episodes.from_streams(r, running, running, values=np.zeros((3, 2)))
    with pytest.raises(cl.DtypeError, match="boolean"):
        cl.Episodes.from_streams(r, np.full((3, 2), 0.5), running)
    ep = cl.Episodes.from_streams(
        torch.ones(3, 2), torch.zeros(3, 2, dtype=torch.bool), torch.zeros(3, 2, dtype=torch.bool)
    )
    assert ep.is_torch
    back = ep.to_streams(torch.ones(ep.num_episodes, ep.max_steps))
    assert isinstance(back, torch.Tensor) and back.shape == (3, 2)
