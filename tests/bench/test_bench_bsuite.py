"""bsuite through Gymnasium: adapter semantics against the dm_env original, and bsuite's own scores."""

import numpy as np
import pytest

pytest.importorskip("bsuite")

from creditlab.bench.bsuite_tasks import bsuite_score, episode_log, make_bsuite_env  # noqa: E402
from creditlab.errors import RangeError  # noqa: E402


def test_umbrella_adapter_matches_dm_env():
    from bsuite import bsuite as bs

    env = make_bsuite_env("umbrella_length/4", seed=3)  # chain length 5
    raw = bs.load("umbrella_length", {"chain_length": 5, "n_distractor": 20, "seed": 3})
    obs, info = env.reset()
    ts = raw.reset()
    np.testing.assert_array_equal(obs, ts.observation.reshape(-1))
    for _ in range(5):
        obs, r, term, trunc, info = env.step(1)
        ts = raw.step(1)
        np.testing.assert_array_equal(obs, ts.observation.reshape(-1))
        assert r == ts.reward and term == ts.last() and not trunc
    assert info["total_regret"] == raw.bsuite_info()["total_regret"]


def test_discounting_chain_rewards_and_reseed():
    env = make_bsuite_env("discounting_chain/2")  # the 10-step chain (action 2) pays 1.1
    env.reset(seed=0)
    rewards, term = [], False
    while not term:
        _, r, term, trunc, _ = env.step(2)
        rewards.append(r)
    assert len(rewards) == 100 and rewards[9] == pytest.approx(1.1) and sum(rewards) == pytest.approx(1.1)
    with pytest.raises(RangeError, match="unknown bsuite id"):
        make_bsuite_env("umbrella_length/99")


def test_episode_log_is_cumulative():
    log = episode_log([1.0, -1.0, 1.0], [0.0, 2.0, 0.0])
    assert log["episode"].tolist() == [1, 2, 3]
    assert log["total_return"].tolist() == [1.0, 0.0, 1.0]
    assert log["total_regret"].tolist() == [0.0, 2.0, 2.0]


def test_scores_follow_bsuite_rules():
    # umbrella: a setting passes when average regret < 0.5; regret 2 per wrong episode.
    good = episode_log([1.0] * 10, [0.0] * 10)  # regret 0
    bad = episode_log([1.0] * 7 + [-1.0] * 3, [0.0] * 7 + [2.0] * 3)  # 6 / 10 = 0.6 >= 0.5
    assert bsuite_score("umbrella_length", {"umbrella_length/0": good, "umbrella_length/1": bad}) == 0.5
    # discounting chain: clip(1 - 10 * (1.1 - average return), 0, 1): average 1.05 -> 0.5
    half = episode_log([1.1, 1.0] * 5)
    assert bsuite_score("discounting_chain", {"discounting_chain/0": half}) == pytest.approx(0.5)
    assert bsuite_score("discounting_chain", {"discounting_chain/0": episode_log([0.0] * 4)}) == 0.0
