"""EpisodicReward / DelayedReward and their vector twins."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import TimeLimit
from hypothesis import given, settings
from hypothesis import strategies as st

from creditlab.errors import RangeError
from creditlab.integrations import TRUE_REWARD_KEY
from creditlab.integrations.gymnasium import DelayedReward, EpisodicReward, VectorDelayedReward, VectorEpisodicReward


class Scripted(gym.Env):
    """Pays ``rewards[t]`` at step t; terminates after the last one (or never, for TimeLimit)."""

    def __init__(self, rewards=(1.0, 2.0, 3.0, 4.0, 5.0), terminate=True):
        self.rewards = list(rewards)
        self.terminate = terminate
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {"reset": True}

    def step(self, action):
        r = self.rewards[self.t % len(self.rewards)]
        self.t += 1
        done = self.terminate and self.t >= len(self.rewards)
        return np.array([self.t], np.float32), r, done, False, {"inner": self.t}


def _run(env, n):
    env.reset(seed=0)
    out = [env.step(0) for _ in range(n)]
    return [o[1] for o in out], out


def test_episodic_hand_computed():
    # rewards 1..5, terminated at step 5: 0, 0, 0, 0, 1+2+3+4+5 = 15
    rewards, steps = _run(EpisodicReward(Scripted()), 5)
    assert rewards == [0.0, 0.0, 0.0, 0.0, 15.0]
    assert [s[4][TRUE_REWARD_KEY] for s in steps] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [s[2] for s in steps] == [False] * 4 + [True]
    assert steps[0][4]["inner"] == 1  # the wrapped env's info is kept


def test_delayed_hand_computed():
    # delay 2: released after steps 2 and 4, and the rest at the end: 0, 1+2, 0, 3+4, 5
    rewards, _ = _run(DelayedReward(Scripted(), delay=2), 5)
    assert rewards == [0.0, 3.0, 0.0, 7.0, 5.0]
    rewards, _ = _run(DelayedReward(Scripted(), delay=1), 5)
    assert rewards == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_time_limit_truncation_pays_and_is_kept():
    # Never terminates; a time limit of 3 steps truncates: pays 1 + 2 + 3 = 6 on step 3.
    env = EpisodicReward(TimeLimit(Scripted(terminate=False), 3))
    rewards, steps = _run(env, 3)
    assert rewards == [0.0, 0.0, 6.0]
    assert steps[-1][2] is False and steps[-1][3] is True  # terminated / truncated unchanged
    env.reset()
    assert env.step(0)[1] == 0.0  # the accumulator restarts on reset


@settings(max_examples=60, deadline=None)
@given(rewards=st.lists(st.floats(-10, 10), min_size=1, max_size=20), delay=st.integers(1, 7))
def test_released_sum_equals_true_sum(rewards, delay):
    env = DelayedReward(Scripted(rewards), delay=delay)
    released, steps = _run(env, len(rewards))
    assert sum(released) == pytest.approx(sum(rewards), abs=1e-9)
    for t, r in enumerate(released, start=1):
        if t % delay and t != len(rewards):
            assert r == 0.0


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_bad_delay(bad):
    with pytest.raises(RangeError, match="delay must be an integer >= 1"):
        DelayedReward(Scripted(), delay=bad)


def test_specs_record_constructor_args():
    gym.register("creditlab-test/Scripted-v0", entry_point=Scripted)
    try:
        env = DelayedReward(gym.make("creditlab-test/Scripted-v0"), delay=2)
        assert env.spec.additional_wrappers[-1].kwargs == {"delay": 2}
        remade = gym.make(env.spec)
        assert isinstance(remade, DelayedReward) and remade.delay == 2
        epi = EpisodicReward(gym.make("creditlab-test/Scripted-v0"))
        assert epi.spec.additional_wrappers[-1].kwargs == {}
        assert isinstance(gym.make(epi.spec), EpisodicReward)
    finally:
        gym.registry.pop("creditlab-test/Scripted-v0")


# ------------------------------------------------------------------------------ vector twins


def _single_stream(make, n_steps):
    """Released rewards of one env over n transitions, resetting after each episode."""
    env = make()
    env.reset(seed=0)
    out = []
    for _ in range(n_steps):
        _, r, term, trunc, info = env.step(0)
        out.append((r, info[TRUE_REWARD_KEY]))
        if term or trunc:
            env.reset()
    return out


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("delay", [None, 2])
def test_vector_twin_matches_single_env(mode, delay):
    scripts = [(1.0, 2.0, 3.0), (5.0, -1.0), (1.0, 1.0, 1.0, 1.0, 2.0)]
    vec = SyncVectorEnv([lambda s=s: Scripted(s) for s in scripts], autoreset_mode=mode)
    venv = VectorEpisodicReward(vec) if delay is None else VectorDelayedReward(vec, delay)
    venv.reset(seed=0)
    streams = [[] for _ in scripts]
    for _ in range(14):
        _, r, _, _, infos = venv.step(np.zeros(3, dtype=int))
        for i in range(3):
            if infos["_" + TRUE_REWARD_KEY][i]:  # a real transition (not a NEXT_STEP reset step)
                streams[i].append((r[i], infos[TRUE_REWARD_KEY][i]))
            else:
                assert r[i] == 0.0
    for i, s in enumerate(scripts):
        wrap = (
            (lambda s=s: EpisodicReward(Scripted(s)))
            if delay is None
            else (lambda s=s: DelayedReward(Scripted(s), delay))
        )
        assert streams[i] == _single_stream(wrap, len(streams[i]))


def test_vector_disabled_autoreset_and_reset_mask():
    vec = SyncVectorEnv(
        [lambda: Scripted((1.0, 2.0)), lambda: Scripted((1.0, 1.0, 1.0))], autoreset_mode=AutoresetMode.DISABLED
    )
    venv = VectorEpisodicReward(vec)
    venv.reset(seed=0)
    a = np.zeros(2, dtype=int)
    assert venv.step(a)[1].tolist() == [0.0, 0.0]
    r = venv.step(a)[1]
    assert r.tolist() == [3.0, 0.0]  # env 0 done
    venv.reset(options={"reset_mask": np.array([True, False])})
    r = venv.step(a)[1]
    assert r.tolist() == [0.0, 3.0]  # env 0 restarted its sum; env 1 finished its 3 steps


def test_vector_bad_delay():
    with pytest.raises(RangeError):
        VectorDelayedReward(gym.make_vec("CartPole-v1", num_envs=1), delay=0)
