"""The tiny policy and batched multi-turn generation: cache == full forward, masks, broadcast."""

import numpy as np
import pytest
import torch

import creditlab
from creditlab.errors import RangeError, ShapeError
from creditlab_demo.envs import KeyDoorEnv, SecretEnv
from creditlab_demo.policy import KVCache, PolicyConfig, TinyDecoder, masked_log_probs
from creditlab_demo.rollout import generate, sequence_log_probs

torch.set_num_threads(1)


def small_policy(env, seed=0, d_model=32):
    torch.manual_seed(seed)
    env_len = env.prompt_len + env.max_turns * (env.action_len + env.obs_len) + 8
    return TinyDecoder(
        PolicyConfig(vocab_size=len(env.tokenizer), d_model=d_model, n_layers=2, n_heads=2, d_ff=64, max_len=env_len)
    )


@pytest.fixture(scope="module")
def keydoor_rollout():
    env = KeyDoorEnv(spots=3, pool=4, max_turns=6)
    policy = small_policy(env)
    tasks = env.sample_tasks(24, np.random.default_rng(0))
    rollout = generate(policy, env, tasks, generator=torch.Generator().manual_seed(0))
    return env, policy, tasks, rollout


def test_policy_config_validation_and_size():
    with pytest.raises(RangeError, match="must divide d_model"):
        PolicyConfig(vocab_size=10, d_model=30, n_heads=4)
    with pytest.raises(RangeError, match="positive integer"):
        PolicyConfig(vocab_size=0)
    model = TinyDecoder(PolicyConfig(vocab_size=40))
    assert 50_000 < model.num_parameters() < 500_000
    with pytest.raises(ShapeError, match="exceeds the policy's max_len"):
        model(torch.zeros(1, 300, dtype=torch.long))


def test_masked_log_probs_normalize_over_allowed_tokens():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    allowed = torch.tensor([[True, False, True, False]])
    lp = masked_log_probs(logits, allowed)
    assert torch.isinf(lp[0, 1]) and torch.isinf(lp[0, 3])
    # softmax over {1, 3}: e^1 / (e^1 + e^3)
    assert torch.allclose(lp[0, 0].exp(), torch.tensor(np.e / (np.e + np.e**3), dtype=torch.float32))
    assert torch.allclose(lp[0, [0, 2]].exp().sum(), torch.tensor(1.0))


@pytest.fixture(scope="module")
def ragged_rollout():
    """Episodes that end at different turns (a guess may come at any turn): padding after their ends."""
    env = SecretEnv(n=8, max_turns=5, early_guess=True)
    policy = small_policy(env, seed=2)
    tasks = env.sample_tasks(32, np.random.default_rng(1))
    rollout = generate(policy, env, tasks, generator=torch.Generator().manual_seed(3))
    assert len(set(rollout.num_turns.tolist())) > 2 and (~rollout.valid).any()
    return env, policy, tasks, rollout


@pytest.mark.parametrize("which", ["keydoor_rollout", "ragged_rollout"])
def test_cached_generation_matches_full_forward(which, request):
    """The behaviour log-probs recorded token by token through the KV cache equal the training forward."""
    env, policy, _, rollout = request.getfixturevalue(which)
    lp, ent = sequence_log_probs(policy, rollout, torch.from_numpy(env.slot_masks))
    resp = rollout.response_mask
    assert torch.allclose(lp[resp], rollout.log_probs[resp], atol=1e-5)
    assert (lp[~resp] == 0).all() and (ent[~resp] == 0).all()
    assert (ent[resp] >= -1e-6).all()


def test_padding_columns_do_not_leak(ragged_rollout):
    env, policy, _, rollout = ragged_rollout
    masks = torch.from_numpy(env.slot_masks)
    scrambled = rollout._replace(tokens=torch.where(rollout.valid, rollout.tokens, torch.full_like(rollout.tokens, 5)))
    a, _ = sequence_log_probs(policy, rollout, masks)
    b, _ = sequence_log_probs(policy, scrambled, masks)
    assert torch.equal(a, b)


@pytest.mark.parametrize("which", ["keydoor_rollout", "ragged_rollout"])
def test_rollout_layout_replays_through_the_environment(which, request):
    env, _, tasks, rollout = request.getfixturevalue(which)
    b = rollout.tokens.shape[0]
    p, a, o = env.prompt_len, env.action_len, env.obs_len
    tm = rollout.turn_mask
    # turn_mask is a prefix and num_turns its sum; valid is a prefix per row (padding only at the end).
    assert torch.equal(tm, torch.arange(tm.shape[1])[None] < rollout.num_turns[:, None])
    v = rollout.valid
    assert torch.equal(v, torch.arange(v.shape[1])[None] < v.sum(1, keepdim=True))
    assert torch.equal(rollout.positions[v], (v.long().cumsum(1) - 1)[v])
    state, prompt = env.reset(tasks)
    assert torch.equal(rollout.tokens[:, :p], torch.from_numpy(prompt))
    for t in range(int(rollout.num_turns.max())):
        c = p + t * (a + o)
        live = tm[:, t]
        # Response tokens are exactly the action columns of live turns, tagged with the turn index.
        assert torch.equal(rollout.response_mask[:, c : c + a], live[:, None].expand(b, a))
        assert (rollout.turn_ids[:, c : c + a][live] == t).all()
        assert (rollout.slots[:, c][live] == env.first_slot(t)).all()
        actions = rollout.tokens[:, c : c + a].numpy()
        res = env.step(state, np.where(live.numpy()[:, None], actions, 0))
        cont = live & ~torch.from_numpy(res.done)
        if c + a < rollout.tokens.shape[1]:
            obs_cols = rollout.tokens[:, c + a : c + a + o]
            assert torch.equal(obs_cols[cont], torch.from_numpy(res.obs)[cont])
            assert not rollout.response_mask[:, c + a : c + a + o].any()  # observations are never trained on
    assert torch.equal(torch.from_numpy(state.success), rollout.success)
    assert (rollout.turn_ids[~rollout.response_mask] == -1).all()


def test_anchors_are_recorded_per_live_turn(keydoor_rollout):
    env, _, tasks, rollout = keydoor_rollout
    state, _ = env.reset(tasks)
    assert torch.equal(rollout.anchors[:, 0], torch.from_numpy(env.anchors(state)))
    assert (rollout.anchors[~rollout.turn_mask] == -1).all()


@pytest.mark.parametrize("which", ["keydoor_rollout", "ragged_rollout"])
def test_turn_advantages_reach_exactly_the_response_tokens(which, request):
    _, _, _, rollout = request.getfixturevalue(which)
    b, t = rollout.turn_mask.shape
    turn_adv = torch.arange(1, b * t + 1, dtype=torch.float32).reshape(b, t) * rollout.turn_mask
    tokens = creditlab.broadcast_to_tokens(
        turn_adv, rollout.turn_ids, rollout.response_mask, step_mask=rollout.turn_mask
    )
    resp = rollout.response_mask
    rows, cols = torch.nonzero(resp, as_tuple=True)
    assert torch.equal(tokens[rows, cols], turn_adv[rows, rollout.turn_ids[rows, cols]])
    assert (tokens[~resp] == 0).all()
    # Each valid turn appears on exactly action_len tokens.
    counts = torch.zeros(b, t).index_put_(
        (rows, rollout.turn_ids[rows, cols]), torch.ones(rows.numel()), accumulate=True
    )
    assert torch.equal(counts, 2.0 * rollout.turn_mask)


def test_generation_is_reproducible_and_greedy_is_deterministic():
    env = SecretEnv(n=8, max_turns=4)
    policy = small_policy(env)
    tasks = env.sample_tasks(16, np.random.default_rng(3))
    r1 = generate(policy, env, tasks, generator=torch.Generator().manual_seed(7))
    r2 = generate(policy, env, tasks, generator=torch.Generator().manual_seed(7))
    assert torch.equal(r1.tokens, r2.tokens) and torch.equal(r1.log_probs, r2.log_probs)
    g1 = generate(policy, env, tasks, generator=torch.Generator().manual_seed(1), greedy=True)
    g2 = generate(policy, env, tasks, generator=torch.Generator().manual_seed(2), greedy=True)
    assert torch.equal(g1.tokens, g2.tokens)
    # The grammar holds: question verbs only before the last turn, a guess at the last.
    tok = env.tokenizer
    verbs = g1.tokens[:, [4 + t * 3 for t in range(4)]]
    assert (verbs[:, :3] == tok.id("less")).all() and (verbs[:, 3] == tok.id("guess")).all()


def test_beliefs_equal_a_full_forward_with_the_answer_appended():
    env = SecretEnv(n=8, max_turns=4, early_guess=True)
    policy = small_policy(env, seed=1)
    tasks = env.sample_tasks(12, np.random.default_rng(5))
    rollout = generate(policy, env, tasks, generator=torch.Generator().manual_seed(0), beliefs=True)
    tok = env.tokenizer
    answer_mask = torch.from_numpy(env.slot_masks[1])
    p, step = env.prompt_len, env.action_len + env.obs_len
    checked = 0
    for b in range(12):
        for t in range(int(rollout.num_turns[b]) + 1):
            end = p + t * step if t < int(rollout.num_turns[b]) else p + (t - 1) * step + env.action_len
            history = rollout.tokens[b, :end]
            seq = torch.cat([history, torch.tensor([tok.id("guess")])])[None]
            logits = policy(seq)[0, -1]
            expected = masked_log_probs(logits, answer_mask)[tok.id(str(int(tasks["secret"][b])))]
            assert torch.allclose(rollout.beliefs[b, t], expected, atol=1e-5), (b, t)
            checked += 1
    assert checked > 12
    # Columns past the episode's end stay 0, and every belief is a log-probability.
    assert (rollout.beliefs <= 0).all()


def test_kv_cache_query_without_commit_leaves_the_cache_unchanged():
    env = SecretEnv(n=4, max_turns=2)
    policy = small_policy(env)
    cache = KVCache(policy.config, 2, 16)
    tokens = torch.tensor([[1, 2, 3], [1, 3, 2]])
    policy(tokens, cache=cache)
    before = [k.clone() for k in cache.keys]
    length = cache.length
    policy(torch.tensor([[4], [4]]), cache=cache, commit=False)
    assert cache.length == length
    nxt = policy(torch.tensor([[5], [5]]), cache=cache)[:, -1]
    full = policy(torch.cat([tokens, torch.tensor([[5], [5]])], dim=1))[:, -1]
    assert torch.allclose(nxt, full, atol=1e-5)
    assert all(torch.equal(k[:, :, :length], k0[:, :, :length]) for k, k0 in zip(cache.keys, before))
