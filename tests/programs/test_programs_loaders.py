"""Loaders: sandboxed LaRe features (with the LaRe decoder), dense-reward wrappers, the PPO trainer."""

import numpy as np
import pytest
import torch

from creditlab import Episodes
from creditlab.errors import ShapeError
from creditlab.programs import (
    Program,
    ProgramError,
    SandboxedReward,
    TrainScore,
    lare_features,
    load_program,
)
from tests.helpers.programs_helpers import FAST, no_leftovers  # noqa: F401  (autouse fixture)

FACTORS = (
    "import numpy as np\n"
    "def evaluation_func(observation, action):\n"
    "    speed = observation[:, 1:2]\n"
    "    effort = np.sum(action ** 2, axis=1, keepdims=True)\n"
    "    return [speed, effort, np.log(np.abs(observation[:, 0:1]))]\n"
)
PROG = Program(code=FACTORS, kind="factors", obs_dim=3, act_dim=2, num_factors=3, origin="hand-written")


def local_factors(obs, act):
    """The same factors computed in the test (trusted code) for comparison."""
    with np.errstate(divide="ignore"):
        return np.stack([obs[:, 1], np.sum(act**2, axis=1), np.log(np.abs(obs[:, 0]))], axis=1)


def test_features_match_in_process_values_and_guard_nonfinite():
    rng = np.random.default_rng(0)
    obs, act = rng.standard_normal((1000, 3)), rng.standard_normal((1000, 2))
    obs[7, 0] = 0.0  # log(0) = -inf -> clipped to -clip
    with lare_features(PROG, config=FAST, chunk_rows=128) as phi:
        feats = phi(obs, act)
        assert phi.metrics["features/nonfinite"] == 1.0
        expected = local_factors(obs, act)
        expected[7, 2] = -phi.clip
        np.testing.assert_allclose(feats, expected, rtol=1e-12)
        # leading dims [B, T, ...] are kept: [5, 200, 3] -> [5, 200, 3 factors]
        np.testing.assert_allclose(phi(obs.reshape(5, 200, 3), act.reshape(5, 200, 2)), expected.reshape(5, 200, 3))
        # torch in, torch out (float32 unless float64 came in)
        t = phi(torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(act, dtype=torch.float32))
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (1000, 3)
        with pytest.raises(ShapeError, match="validated with obs_dim 3"):
            phi(np.zeros((4, 5)), np.zeros((4, 2)))
        with pytest.raises(ShapeError, match="leading dims"):
            phi(np.zeros((4, 3)), np.zeros((5, 2)))


def test_features_keep_their_width_and_report_program_failures():
    code = "import numpy as np\ndef evaluation_func(o, a):\n    k = 1 if o.shape[0] < 50 else 2\n    return [o[:, :1]] * k\n"
    with lare_features(Program(code=code, kind="factors", origin="hand-written"), config=FAST) as phi:
        assert phi(np.ones((10, 3)), np.ones((10, 1))).shape == (10, 1)
        with pytest.raises(ProgramError, match="returned 2 factors; expected 1"):
            phi(np.ones((60, 3)), np.ones((60, 1)))
    slow = "def evaluation_func(o, a):\n    while o.shape[0] > 5:\n        pass\n    return [o[:, :1]]\n"
    with lare_features(
        Program(code=slow, kind="factors", origin="hand-written"), config=FAST.replace(timeout=1.0)
    ) as phi:
        with pytest.raises(ProgramError) as exc:
            phi(np.ones((10, 3)), np.ones((10, 1)))
        assert exc.value.kind == "timeout"
        assert phi(np.ones((3, 3)), np.ones((3, 1))).shape == (3, 1)  # restarted worker


def test_loading_a_reward_program_as_features_is_refused(tmp_path):
    code = "def compute_reward(o, a, n):\n    return o[:, 0]\n"
    Program(code=code, kind="reward", origin="hand-written").save(tmp_path / "r")
    with pytest.raises(ValueError, match="expected a 'factors' program"):
        lare_features(str(tmp_path / "r"))


def test_sandboxed_features_drive_the_lare_decoder():
    """The loader is the LaRe decoder's phi: sandboxed factors give the same rewards as in-process ones."""
    from creditlab.credit import LaReAssigner

    rng = np.random.default_rng(1)
    b, t = 12, 20
    obs = rng.standard_normal((b, t, 3))
    act = rng.standard_normal((b, t, 2))
    true = obs[..., 1] - 0.5 * np.sum(act**2, axis=-1)  # hidden per-step reward, a function of two factors
    eps = Episodes.from_padded(np.zeros((b, t)), observations=obs, actions=act, outcomes=true.sum(1))
    with lare_features(PROG, config=FAST) as phi:
        sandboxed = LaReAssigner(features=phi, subset_size=8, seed=0)
        m = sandboxed.fit(eps, num_updates=5)
        out_s = sandboxed.assign(eps)
    local = LaReAssigner(
        features=lambda o, a: local_factors(o.astype(np.float64), a.astype(np.float64)), subset_size=8, seed=0
    )
    local.fit(eps, num_updates=5)
    out_l = local.assign(eps)
    assert m["credit/num_factors"] == 3.0
    np.testing.assert_allclose(np.asarray(out_s.rewards), np.asarray(out_l.rewards), rtol=1e-5, atol=1e-6)


def test_examples_hopper_program_is_valid_and_labeled():
    prog = load_program("examples/programs/hopper_factors")
    assert prog.origin == "hand-written" and prog.num_factors == 7
    with lare_features(prog, config=FAST) as phi:
        assert phi(np.zeros((4, 11)), np.zeros((4, 3))).shape == (4, 7)


# ---------------------------------------------------------------------- dense rewards

REWARD = (
    "import numpy as np\n"
    "def compute_reward(observation, action, next_observation):\n"
    "    upright = next_observation[:, 0]\n"
    "    effort = -0.01 * np.sum(action ** 2, axis=1)\n"
    "    return upright + effort, {'upright': upright, 'effort': effort}\n"
)
RPROG = Program(
    code=REWARD, kind="reward", obs_dim=3, act_dim=1, component_names=("upright", "effort"), origin="hand-written"
)


def test_sandboxed_reward_callable():
    obs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    act = np.array([[2.0], [0.0]])
    with SandboxedReward(RPROG, config=FAST) as rf:
        total, comps = rf(obs, act, obs[::-1])
    # upright = next_obs[:, 0] = [0.5, 1.0]; effort = -0.01 * [4, 0]
    np.testing.assert_allclose(total, [0.46, 1.0])
    assert list(comps) == ["upright", "effort"]


def test_dense_reward_wrapper_on_pendulum():
    import gymnasium as gym

    from creditlab.programs import DenseRewardWrapper

    env = DenseRewardWrapper(gym.make("Pendulum-v1"), RPROG, mode="replace", config=FAST)
    try:
        env.reset(seed=0)
        for _ in range(5):
            action = np.array([0.5], dtype=np.float32)
            nxt, r, term, trunc, info = env.step(action)
            assert r == pytest.approx(float(nxt[0]) - 0.01 * 0.25, rel=1e-5)
            assert info["program_reward"] == pytest.approx(r)
            assert set(info["reward_components"]) == {"upright", "effort"}
            assert info["original_reward"] <= 0 and not term and not trunc
    finally:
        env.close()
    added = DenseRewardWrapper(gym.make("Pendulum-v1"), RPROG, mode="add", weight=2.0, config=FAST)
    try:
        added.reset(seed=0)
        _, r, _, _, info = added.step(np.array([0.0], dtype=np.float32))
        assert r == pytest.approx(info["original_reward"] + 2.0 * info["program_reward"], rel=1e-5)
    finally:
        added.close()


def test_vec_wrapper_uses_terminal_observations():
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    from creditlab.programs import DenseRewardVecEnvWrapper

    code = "def compute_reward(o, a, n):\n    return n[:, 0] * 100 + a[:, 0], {'x': n[:, 0]}\n"
    prog = Program(code=code, kind="reward", origin="hand-written")
    venv = DenseRewardVecEnvWrapper(DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2), prog, config=FAST)
    try:
        venv.seed(0)
        venv.reset()
        dones_seen = 0
        for _ in range(60):
            acts = np.array([1, 1])
            obs, rewards, dones, infos = venv.step(acts)
            for i in range(2):
                nxt = infos[i]["terminal_observation"] if dones[i] else obs[i]
                assert rewards[i] == pytest.approx(nxt[0] * 100 + 1, rel=1e-5, abs=1e-4)
                assert infos[i]["original_reward"] == 1.0
            dones_seen += int(dones.sum())
        assert dones_seen > 0 and venv.steps == 120 and "x" in venv.component_sums
    finally:
        venv.close()


def test_ppo_train_and_score_smoke():
    from creditlab.programs.training import PPOTrainAndScore

    trainer = PPOTrainAndScore(
        "Pendulum-v1",
        total_timesteps=256,
        checkpoints=2,
        n_envs=2,
        eval_episodes=1,
        ppo_kwargs={"n_steps": 64, "batch_size": 64, "n_epochs": 1},
        config=FAST,
    )
    score = trainer(RPROG)
    assert isinstance(score, TrainScore)
    assert (
        len(score.fitness_curve) == 2 and np.isfinite(score.fitness) and score.fitness < 0
    )  # Pendulum returns are negative
    assert set(score.components) == {"upright", "effort", "total program reward"}
    assert all(len(v) == 2 for v in score.components.values())
    assert score.metrics["train/steps"] >= 256


def test_next_state_factors():
    rng = np.random.default_rng(2)
    obs, nxt, act = rng.standard_normal((50, 3)), rng.standard_normal((50, 3)), rng.standard_normal((50, 2))
    with lare_features(PROG, config=FAST, state="next") as phi:
        assert phi.needs_next_observations
        np.testing.assert_allclose(phi(obs, act, nxt), local_factors(nxt, act))
        with pytest.raises(ShapeError, match="needs next_obs"):
            phi(obs, act)
    with lare_features(PROG, config=FAST, state="both") as phi:
        np.testing.assert_allclose(
            phi(obs, act, nxt), np.concatenate([local_factors(obs, act), local_factors(nxt, act)], axis=1)
        )
    with pytest.raises(ValueError, match="state must be"):
        lare_features(PROG, state="previous")
