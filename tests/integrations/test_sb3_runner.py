"""The one SB3 runner: environment construction, evaluation, the schedule, reward editors, the config."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

from creditlab.credit import UniformAssigner
from creditlab.integrations.gymnasium import DelayedReward, EpisodicReward
from creditlab.integrations.sb3 import (
    CreditAssignmentCallback,
    Evaluator,
    RecomputeAdvantages,
    RunConfig,
    SB3RunConfig,
    env_factory,
    history_metrics,
    make_env,
    reward_wrapper,
    train,
)
from tests.integrations.test_sb3 import Chain, _gae_reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_PPO = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}


# ------------------------------------------------------------------------------ environments


def test_env_factory_accepts_id_module_string_and_callable():
    assert env_factory("CartPole-v1")().spec.id == "CartPole-v1"
    env = env_factory("gymnasium.envs.classic_control:CartPoleEnv")()
    assert type(env).__name__ == "CartPoleEnv"
    env = env_factory("tests.integrations.test_sb3:Chain", {"length": 3})()
    assert isinstance(env, Chain) and env.length == 3
    env = env_factory(lambda: Chain(length=4))()
    assert env.length == 4
    for bad, match in [
        ("nosuchmodule_xyz:Env", "cannot be imported"),
        ("tests.integrations.test_sb3:NoSuchEnv", "no attribute"),
        ("tests.integrations.test_sb3:TRUE_REWARD_KEY", "class or factory"),
        ("", "Gymnasium id"),
        (3, "Gymnasium id"),
    ]:
        with pytest.raises(ValueError, match=match):
            env_factory(bad)


def test_reward_protocols():
    assert reward_wrapper("dense") == (None, {})
    assert reward_wrapper("episodic") == (EpisodicReward, {})
    assert reward_wrapper("delayed:7") == (DelayedReward, {"delay": 7})
    for bad in ("delayed", "delayed:0", "delayed:x", "sparse", None):
        with pytest.raises(ValueError, match="'dense', 'episodic' or 'delayed:K'"):
            reward_wrapper(bad)


def test_make_env_delays_reward_and_monitor_sees_true_returns():
    # Chain pays 1 per step for 7 steps. delayed:3 releases at steps 3 and 6 and at the end:
    # 0 0 3 0 0 3 1 (sum 7). The Monitor sits under the delay wrapper: its episode return is 7.
    venv = make_env(lambda: Chain(length=7), n_envs=2, reward="delayed:3", seed=0)
    venv.reset()
    rewards, infos = [], None
    for _ in range(7):
        _, r, _, infos = venv.step(np.zeros(2, dtype=int))
        rewards.append(r.tolist())
    np.testing.assert_array_equal(np.array(rewards)[:, 0], [0, 0, 3, 0, 0, 3, 1])
    assert infos[0]["episode"]["r"] == 7.0 and infos[0]["episode"]["l"] == 7
    # the older spelling
    venv = make_env(lambda: Chain(length=7), n_envs=1, reward="delayed", delay=3, seed=0)
    assert venv.envs[0].delay == 3


def test_make_env_seeds_env_i_with_seed_plus_i():
    venv = make_env("CartPole-v1", n_envs=2, reward="dense", seed=5)
    obs = venv.reset()
    for i in range(2):
        expected, _ = gym.make("CartPole-v1").reset(seed=5 + i)
        np.testing.assert_array_equal(obs[i], expected)


def test_vec_env_wrapper_goes_under_vecnormalize():
    class Tag(VecEnvWrapper):
        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            return self.venv.step_wait()

    venv = make_env("CartPole-v1", n_envs=2, normalize_observations=True, vec_env_wrapper=Tag)
    assert isinstance(venv, VecNormalize) and isinstance(venv.venv, Tag)


# ------------------------------------------------------------------------------ evaluation


def test_evaluator_same_start_states_and_trajectories():
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, seed=0)
    ev = Evaluator(
        "CartPole-v1", episodes=3, seed=20, n_envs=2, trajectories=True, env_kwargs={"max_episode_steps": 50}
    )
    a, b = ev(model), ev(model)
    assert a.returns == b.returns  # re-seeded: the same start states at every call
    # evaluate_policy counts (3 + i) // 2 episodes of env i: 1 of env 0, 2 of env 1
    assert len(a.episodes) == 3
    starts = [gym.make("CartPole-v1").reset(seed=s)[0] for s in (20, 21)]
    np.testing.assert_allclose(a.episodes[0]["obs"][0], starts[0], rtol=1e-6)
    np.testing.assert_allclose(a.episodes[1]["obs"][0], starts[1], rtol=1e-6)
    assert sorted(float(e["rewards"].sum()) for e in a.episodes) == sorted(a.returns)
    for e in a.episodes:
        t = len(e["rewards"])
        assert e["obs"].shape == (t + 1, 4) and e["act"].shape == (t, 1) and len(e["infos"]) == t
    assert a.mean == pytest.approx(np.mean(a.returns)) and a.timesteps == 0
    ev.close()


def test_evaluator_uses_frozen_training_statistics():
    train_env = make_env("Pendulum-v1", n_envs=2, reward="dense", normalize_observations=True)
    model = PPO("MlpPolicy", train_env, n_steps=64, seed=0).learn(128)
    ev = Evaluator("Pendulum-v1", episodes=1, normalize_observations=True)
    ev(model)
    assert isinstance(ev.env, VecNormalize) and not ev.env.training
    np.testing.assert_array_equal(ev.env.obs_rms.mean, train_env.obs_rms.mean)
    count = ev.env.obs_rms.count
    ev(model)
    assert ev.env.obs_rms.count == count  # evaluation never updates the statistics
    assert ev.env.obs_rms is not train_env.obs_rms  # a copy: training continues unaffected


# ------------------------------------------------------------------------------ the schedule


def _cfg(**kw):
    base = dict(n_envs=2, eval_episodes=1, algo_kwargs=dict(TINY_PPO))
    base.update(kw)
    return RunConfig("CartPole-v1", **base)


def test_evaluation_schedule_at_rollout_starts():
    # Rollouts of 2 x 64 = 128 steps: rollout starts at 0, 128, 256, 384, 512; the run ends at 640.
    # eval_every 200: evaluate at 0, then at the first rollout start at or past 200 (256, next due
    # 400), past 400 (512, next due 600), and at the end (640).
    res = train(_cfg(total_timesteps=640, eval_every=200))
    assert res.eval_timesteps == [0, 256, 512, 640]
    assert len(res.eval_returns) == len(res.eval_stds) == len(res.evaluations) == 4
    assert res.final_eval_return == res.eval_returns[-1]
    res = train(_cfg(total_timesteps=256, eval_every=0, eval_at_start=False))
    assert res.eval_timesteps == [256]


def test_evaluated_policy_is_the_one_trained_on_exactly_those_steps():
    # The evaluation at step 256 of a longer run scores the same policy as the end of a 256-step run.
    long = train(_cfg(total_timesteps=512, eval_every=256, eval_episodes=3))
    short = train(_cfg(total_timesteps=256, eval_every=0, eval_episodes=3))
    assert long.eval_timesteps[1] == 256 == short.eval_timesteps[-1]
    assert long.evaluations[1].returns == short.evaluations[-1].returns


def test_training_episodes_are_true_returns():
    res = train(_cfg(total_timesteps=256, reward="episodic", eval_every=0))
    assert res.train_episodes and all(r == length for _, r, length in res.train_episodes)  # CartPole: 1 per step
    assert res.train_return == pytest.approx(np.mean([r for _, r, _ in res.train_episodes[-100:]]))
    assert res.metrics["steps"] == 256 and res.metrics["time/train_seconds"] > 0


# ------------------------------------------------------------------------------ reward editors


class Bonus(BaseCallback):
    """A reward editor: adds 0.5 to every rollout reward; records the rewards it found."""

    edits_rollout_rewards = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def _on_step(self):
        return True

    def _on_rollout_end(self):
        buf = self.model.rollout_buffer
        self.seen.append(buf.rewards.copy())
        buf.rewards += 0.5


class LastLocals(BaseCallback):
    def _on_step(self):
        return True

    def _on_rollout_end(self):
        self.last_values = self.locals["values"].clone().numpy().flatten()
        self.dones = self.locals["dones"].copy()


def test_credit_then_bonus_then_gae_once():
    # As in test_ppo_uniform_relabels_exactly_and_recomputes_gae: 7-step episodes, 5-step rollouts,
    # uniform credit 1 per step of a complete episode, 0 ("observed") on steps of running ones:
    #   rollout 3, steps 10-14 -> 1 1 1 1 0. The bonus sees exactly that (credit ran first) and
    # adds 0.5: 1.5 1.5 1.5 1.5 0.5. The advantages are GAE of those final rewards.
    bonus, last = Bonus(), LastLocals()
    cfg = RunConfig(
        lambda: Chain(length=7),
        reward="episodic",
        n_envs=2,
        total_timesteps=30,
        gamma=0.9,
        algo_kwargs={"n_steps": 5, "batch_size": 10, "n_epochs": 1, "gae_lambda": 0.8},
        reward_scale="none",
        unassigned="observed",
        eval_episodes=1,
        eval_at_start=False,
    )
    res = train(cfg, assigner=UniformAssigner(), callbacks=[bonus, last])
    expected = np.array([1, 1, 1, 1, 0], float)
    np.testing.assert_array_equal(bonus.seen[-1], np.stack([expected, expected], axis=1))
    buf = res.model.rollout_buffer  # PPO.train flattened values and advantages env-major: [n_envs * n_steps, 1]
    unflat = {
        "rewards": buf.rewards,
        "episode_starts": buf.episode_starts,
        "advantages": buf.advantages.reshape(2, 5).T,
        "values": buf.values.reshape(2, 5).T,
    }
    np.testing.assert_array_equal(unflat["rewards"], np.stack([expected + 0.5] * 2, axis=1))
    snap = dict(
        rewards=unflat["rewards"],
        values=unflat["values"],
        starts=unflat["episode_starts"],
        last_values=last.last_values,
        dones=last.dones,
    )
    np.testing.assert_allclose(unflat["advantages"], _gae_reference(snap, 0.9, 0.8), rtol=1e-5, atol=1e-5)


def test_recompute_advantages_by_hand_matches_the_callback_alone():
    def run(callbacks):
        from tests.integrations.test_sb3 import _venv

        model = PPO("MlpPolicy", _venv(), n_steps=5, batch_size=10, n_epochs=1, gamma=0.9, gae_lambda=0.8, seed=0)
        model.learn(20, callback=callbacks)
        return model.rollout_buffer.advantages.copy()

    alone = run([CreditAssignmentCallback(UniformAssigner(), reward_scale="none")])
    split = run(
        [
            CreditAssignmentCallback(UniformAssigner(), reward_scale="none", recompute_advantages=False),
            RecomputeAdvantages(),
        ]
    )
    np.testing.assert_array_equal(alone, split)


# ------------------------------------------------------------------------------ config and result


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="algo_kwargs must not set \\['gamma'\\]"):
        RunConfig("CartPole-v1", algo_kwargs={"gamma": 0.9})
    with pytest.raises(ValueError, match="eval_every"):
        RunConfig("CartPole-v1", eval_every=-1)
    with pytest.raises(ValueError, match="n_envs"):
        RunConfig("CartPole-v1", n_envs=0)
    with pytest.raises(ValueError, match="unassigned"):
        RunConfig("CartPole-v1", unassigned="zero")
    with pytest.raises(ValueError, match="delayed:K"):
        RunConfig("CartPole-v1", reward="delayed:-2")
    assert SB3RunConfig("CartPole-v1", reward="delayed", delay=4).reward == "delayed:4"


def test_assigner_by_name_gets_the_run_seed_and_threads_are_restored():
    torch.set_num_threads(1)
    res = train(_cfg(total_timesteps=128, assigner="rrd", assigner_params={"hidden": (8,)}, seed=3, torch_threads=2))
    assert res.assigner.config.seed == 3
    assert torch.get_num_threads() == 1
    rec = res.record()
    assert set(rec) == {
        "final_eval_return",
        "final_eval_std",
        "train_return",
        "eval_timesteps",
        "eval_returns",
        "eval_stds",
        "metrics",
    }
    assert rec["metrics"]["credit/seconds"] > 0 and "credit/overhead_pct" in rec["metrics"]


def test_history_metrics_means_over_training_and_last_quarter():
    # 8 rollouts with Pearson 0.1 .. 0.8 (one NaN left out): mean of the 7 finite values
    # (0.1+0.2+0.3+0.5+0.6+0.7+0.8)/7 = 3.2/7; last quarter = last 7 // 4 = 1 value -> 0.8.
    hist = [{"quality/pearson": v / 10, "credit/updates": 2.0} for v in (1, 2, 3, 5, 6, 7, 8)]
    hist.insert(3, {"quality/pearson": float("nan")})
    m = history_metrics(hist, 2.0)
    assert m["quality/pearson"] == pytest.approx(3.2 / 7) and m["quality/pearson_last"] == pytest.approx(0.8)
    assert (
        m["credit/corr_hidden"] == m["quality/pearson"] and m["credit/updates"] == 14.0 and m["credit/seconds"] == 2.0
    )
    assert "credit/loss" not in m


def test_sac_run_relabels_through_the_replay_buffer():
    cfg = RunConfig(
        "Pendulum-v1",
        algo="sac",
        assigner="uniform",
        n_envs=1,
        total_timesteps=150,
        eval_episodes=1,
        eval_every=0,
        eval_at_start=False,
        env_kwargs={"max_episode_steps": 25},
        algo_kwargs={"learning_starts": 50, "batch_size": 16, "policy_kwargs": {"net_arch": [16]}},
    )
    res = train(cfg)
    assert type(res.model.replay_buffer).__name__ == "CreditReplayBuffer"
    assert res.credit and res.metrics["credit/seconds"] > 0 and res.eval_timesteps == [150]
    assert len(res.train_episodes) == 6 and all(length == 25 for _, _, length in res.train_episodes)


def test_public_names_are_documented():
    import creditlab.integrations.sb3 as sb3

    for name in sb3.__all__:
        assert getattr(sb3, name).__doc__, name
