"""TRL adapter: reward functions honor TRL's contract; GRPO trains with creditlab's per-token advantages.

The trainer tests build a 2-layer GPT-2 with random weights and a word-level tokenizer made here
(no downloads) and run a couple of GRPO steps on CPU with a two-turn ``rollout_func`` whose
environment tokens are masked with ``env_mask``.
"""

from __future__ import annotations

import math
import pickle
import tempfile
import warnings

import numpy as np
import pytest
import torch

import creditlab as cl
from creditlab.integrations.trl import GatedReward, GroupLengthPenalty, OverlongPenalty, PARReward


def correct(completions, **kwargs):
    """A module-level (picklable) reward function: 1 if the completion says 'good'."""
    return [1.0 if "good" in c else 0.0 for c in completions]


def parses(completions, **kwargs):
    return [None if c == "" else float(not c.startswith("?")) for c in completions]


def _kwargs(completions, completion_ids, prompts=None, **columns):
    """The keyword arguments TRL 1.16 passes to a reward function."""
    return dict(
        prompts=prompts or ["p"] * len(completions),
        completions=completions,
        completion_ids=completion_ids,
        trainer_state=object(),
        log_extra=lambda *a: None,
        log_metric=lambda *a: None,
        **columns,
    )


def test_reward_functions_follow_trls_contract():
    kw = _kwargs(
        ["good", "bad", "?good", ""],
        [[1] * 3, [1] * 12, [1] * 18, [1] * 25],
        prompts=["a", "a", "b", "b"],
        reference_rewards=[[0.0, 1.0], [1.0], [None, 0.0], [0.0]],
        score=[0.5, None, 2.0, 1.0],
    )
    funcs = [
        PARReward(correct),
        PARReward("score", reference_column="reference_rewards", k=2.0, name="par_score"),
        OverlongPenalty(max_length=20, cache_length=10),
        GroupLengthPenalty(correctness=correct),
        GatedReward([parses, correct], gates=[1.0], weights=[0.2, 1.0]),
    ]
    for f in funcs:
        out = f(**kw)
        assert isinstance(out, list) and len(out) == 4
        assert all(v is None or isinstance(v, float) for v in out)
        clone = pickle.loads(pickle.dumps(f))
        assert clone.__name__ == f.__name__ and clone(**kw) == out
    assert [f.__name__ for f in funcs] == [
        "par_correct",
        "par_score",
        "overlong_penalty",
        "group_length_penalty",
        "gated_parses",
    ]


def test_reward_function_values():
    kw = _kwargs(
        ["good", "bad", "?good", ""],
        [[1] * 3, [1] * 12, [1] * 18, [1] * 25],
        prompts=["a", "a", "b", "b"],
        reference_rewards=[[0.0, 1.0], [1.0], [None, 0.0], [0.0]],
        score=[0.5, None, 2.0, 1.0],
    )
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    par_out = PARReward(correct)(**kw)  # correct = [1, 0, 1, 0]
    np.testing.assert_allclose(par_out, [(sig(1) + sig(0)) / 2, sig(-1), sig(1), sig(0)])
    par_score = PARReward("score", k=2.0)(**kw)
    assert par_score[1] is None and par_score[2] == pytest.approx(sig(4.0))
    # DAPO: 0 below 10 tokens, ramp to -1 at 20, -1 beyond
    assert OverlongPenalty(max_length=20, cache_length=10)(**kw) == [0.0, -0.2, -0.8, -1.0]
    # groups by prompt: a = lengths [3, 12] (correct, wrong), b = [18, 25] (correct, wrong)
    # lam = 0.5 - (L - Lmin)/(Lmax - Lmin): a -> [0.5, -0.5], b -> [0.5, -0.5]; wrong ones keep min(0, lam)
    assert GroupLengthPenalty(correctness=correct)(**kw) == [0.5, -0.5, 0.5, -0.5]
    # gated: parses = [1, 1, 0, None]; correct counts only where parses >= 1
    assert GatedReward([parses, correct], gates=[1.0], weights=[0.2, 1.0])(**kw) == pytest.approx([1.2, 0.2, 0.0, 0.0])
    with pytest.raises(KeyError, match="reference_rewards"):
        PARReward(correct)(**_kwargs(["good"], [[1]]))


# ---------------------------------------------------------------------------------- GRPO training

try:  # the trainer tests need the llm extra; the reward-function tests above do not
    import transformers
    import trl
except ImportError:  # pragma: no cover
    trl = transformers = None
needs_trl = pytest.mark.skipif(trl is None, reason="trl/transformers not installed (pip install creditlab[llm])")

WORDS = ["[PAD]", "[EOS]", "[UNK]", "obs", "good", "bad", "go", "left", "right", "find", "the", "key"]


@pytest.fixture(scope="module")
def setup():
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.set_num_threads(1)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]"
    )
    dataset = Dataset.from_dict({"prompt": ["find the key", "go left", "go right", "find the key"] * 4})
    return tokenizer, dataset


def _model():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=len(WORDS),
        n_positions=64,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg)


class TwoTurnRollout:
    """rollout_func: the policy writes 3 tokens, the environment answers 'obs obs' (masked), the
    policy writes 3 more. Per-turn reward: 1 if the turn contains 'good'. Anchors: 'start', then the
    first turn's tokens (the state the second turn acts from).

    Options: ``finish(i)`` -- sample i's completion ends with [EOS] (a model token of turn 2;
    the others are "truncated" for TRL); ``env_tokens`` -- environment tokens between the turns
    (0: the two model turns touch); ``turn_ids`` -- also return the explicit per-token turn ids."""

    def __init__(self, tokenizer, *, finish=None, env_tokens=2, turn_ids=False):
        self.tokenizer = tokenizer
        self.finish = finish
        self.env_tokens = env_tokens
        self.turn_ids = turn_ids

    def __call__(self, prompts, trainer):
        good = self.tokenizer.convert_tokens_to_ids("good")
        obs = self.tokenizer.convert_tokens_to_ids(["obs"] * self.env_tokens)
        eos = self.tokenizer.eos_token_id
        out = {
            "prompt_ids": [],
            "completion_ids": [],
            "logprobs": None,
            "env_mask": [],
            "turn_rewards": [],
            "anchors": [],
        }
        if self.turn_ids:
            out["turn_ids"] = []
        for i, p in enumerate(prompts):
            ids = self.tokenizer(p)["input_ids"]
            comp, mask, rewards, anchors, turns = [], [], [], ["start"], []
            for turn in range(2):
                ctx = torch.tensor([ids + comp])
                with torch.no_grad():
                    gen = trainer.model.generate(
                        ctx,
                        attention_mask=torch.ones_like(ctx),
                        max_new_tokens=3,
                        min_new_tokens=3,
                        do_sample=True,
                        pad_token_id=0,
                    )
                new = gen[0, ctx.shape[1] :].tolist()
                if turn == 1 and self.finish is not None and self.finish(i):
                    new = new[:2] + [eos]
                comp += new
                mask += [1] * len(new)
                turns += [turn] * len(new)
                rewards.append(float(good in new))
                if turn == 0:
                    comp += obs
                    mask += [0] * len(obs)
                    turns += [-1] * len(obs)
                    anchors.append(" ".join(map(str, new)))
            fields = [
                ("prompt_ids", ids),
                ("completion_ids", comp),
                ("env_mask", mask),
                ("turn_rewards", rewards),
                ("anchors", anchors),
            ]
            if self.turn_ids:
                fields.append(("turn_ids", turns))
            for key, value in fields:
                out[key].append(value)
        return out


def count_good(completions, **kwargs):
    return [float(c.split().count("good")) for c in completions]


def _train(setup, trainer_cls, steps, *, config=None, rollout=None, inspect=None, **extra):
    """Train for ``steps`` GRPO steps (4 prompts x 4 generations); ``config`` adds GRPOConfig fields,
    ``inspect(trainer, output_dir)`` runs before the output folder is deleted."""
    tokenizer, dataset = setup
    with tempfile.TemporaryDirectory() as d:
        args = trl.GRPOConfig(
            output_dir=d,
            per_device_train_batch_size=4,
            num_generations=4,
            max_completion_length=8,
            max_steps=steps,
            learning_rate=1e-3,
            logging_steps=1,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            beta=0.0,
            seed=0,
            **(config or {}),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = trainer_cls(
                model=_model(),
                reward_funcs=[count_good],
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
                rollout_func=rollout or TwoTurnRollout(tokenizer),
                **extra,
            )
            trainer.train()
        if inspect is not None:
            inspect(trainer, d)
    return trainer


def scaled_turn_rloo_reference(turn_rewards, outcome, group_ids, scale, eps=1e-4):
    """turn_rloo, then each group's advantages divided by their unbiased std (slow loop)."""
    adv = cl.llm.turn_rloo(turn_rewards, group_ids, mask=None, outcomes=outcome).advantages
    if scale == "none":
        return adv
    out = np.zeros_like(adv)
    for g in np.unique(group_ids):
        rows = group_ids == g if scale == "group" else np.ones_like(group_ids, bool)
        out[group_ids == g] = adv[group_ids == g] / (np.std(adv[rows].ravel(), ddof=1) + eps)
    return out


@needs_trl
def test_per_turn_advantages_reach_the_loss(setup):
    from creditlab.integrations.trl import CreditlabGRPOTrainer, TurnRLOOAdvantage

    trainer = _train(setup, CreditlabGRPOTrainer, 2, advantage_fn=TurnRLOOAdvantage(turn_reward_column="turn_rewards"))
    last = trainer.creditlab_last
    batch = last["batch"]
    assert batch.turn_mask.shape == (4, 2) and bool(batch.turn_mask.all())
    # the per-turn advantages are turn_rloo's on the rollout's turn rewards + TRL's reward on the last turn,
    # divided by the group's std as TRL's scale_rewards="group" (the default) asks
    turn_r = np.array(batch.columns["turn_rewards"], dtype=float)
    outcome = batch.rewards[:, 0].numpy()
    assert batch.scale_rewards == "group"
    ref = scaled_turn_rloo_reference(turn_r, outcome, batch.group_ids.numpy(), "group")
    np.testing.assert_allclose(last["turn_advantages"].numpy(), ref, atol=1e-6)
    # tokens: turn 0 on tokens 0-2, environment tokens 3-4 get 0, turn 1 on tokens 5-7
    tok = last["token_advantages"].numpy()
    np.testing.assert_allclose(tok[:, :3], np.repeat(ref[:, :1], 3, axis=1), atol=1e-6)
    assert np.all(tok[:, 3:5] == 0)
    np.testing.assert_allclose(tok[:, 5:8], np.repeat(ref[:, 1:], 3, axis=1), atol=1e-6)
    logged = [h for h in trainer.state.log_history if "creditlab/turns_mean" in h]
    assert logged and logged[-1]["creditlab/turns_mean"] == 2.0
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


@needs_trl
def test_gigpo_advantage_fn_runs(setup):
    from creditlab.integrations.trl import CreditlabGRPOTrainer, GiGPOAdvantage

    trainer = _train(
        setup,
        CreditlabGRPOTrainer,
        1,
        advantage_fn=GiGPOAdvantage(anchor_column="anchors", turn_reward_column="turn_rewards"),
    )
    batch = trainer.creditlab_last["batch"]
    anchors = batch.columns["anchors"]
    ref = cl.llm.gigpo(
        batch.rewards[:, 0].numpy(),
        np.array(batch.columns["turn_rewards"], float),
        anchors,
        batch.group_ids.numpy(),
        mask=None,
    )
    np.testing.assert_allclose(trainer.creditlab_last["turn_advantages"].numpy(), ref.advantages, atol=1e-6)


class TRLFormulaGRPO:
    """TRL's own advantage (group z-score with eps 1e-4 added to the unbiased std), per sample or per turn."""

    def __init__(self, per_turn, sign=1.0):
        self.per_turn = per_turn
        self.sign = sign

    def __call__(self, batch):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = self.sign * cl.grpo(batch.rewards[:, 0].double().numpy(), batch.group_ids.numpy(), eps=1e-4).advantages
        return np.repeat(a[:, None], batch.turn_mask.shape[1], axis=1) if self.per_turn else a


@needs_trl
@pytest.mark.parametrize("per_turn", [False, True])
def test_same_advantages_give_the_same_update_as_stock_trl(setup, per_turn):
    """With TRL's own advantage formula, the subclass must reproduce TRL's training step exactly,
    both as one value per sample and spread over every model token: the override changes nothing
    but the advantages."""
    from creditlab.integrations.trl import CreditlabGRPOTrainer

    stock = _train(setup, trl.GRPOTrainer, 2)
    ours = _train(setup, CreditlabGRPOTrainer, 2, advantage_fn=TRLFormulaGRPO(per_turn))
    for key in ("loss", "grad_norm", "reward"):
        a = [h[key] for h in stock.state.log_history if key in h]
        b = [h[key] for h in ours.state.log_history if key in h]
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=key)
    p_stock = torch.cat([p.detach().flatten() for p in stock.model.parameters()])
    p_ours = torch.cat([p.detach().flatten() for p in ours.model.parameters()])
    assert torch.allclose(p_stock, p_ours, atol=1e-6)
    if per_turn:
        # ... and the loss really uses them: flipped advantages move the weights elsewhere
        flipped = _train(setup, CreditlabGRPOTrainer, 2, advantage_fn=TRLFormulaGRPO(per_turn, sign=-1.0))
        p_flip = torch.cat([p.detach().flatten() for p in flipped.model.parameters()])
        assert not torch.allclose(p_stock, p_flip, atol=1e-4)


# ---------------------------------------------------------------------------------- issue 10, defects 6-10


def _batch(rewards, turn_rewards, *, groups, turns, scale="group"):
    """A hand-made RolloutBatch: one reward function, per-turn rewards in a column."""
    from creditlab.integrations.trl import RolloutBatch

    turns = torch.as_tensor(turns)
    t = int(turns.max())
    return RolloutBatch(
        rewards=torch.tensor(rewards, dtype=torch.float64)[:, None],
        reward_names=["r"],
        reward_weights=torch.ones(1),
        group_ids=torch.as_tensor(groups),
        turn_mask=torch.arange(t)[None, :] < turns[:, None],
        num_turns=turns,
        columns={"turn_rewards": turn_rewards},
        scale_rewards=scale,
    )


def test_turn_rloo_scale_hand_example():
    """Defect 8: TurnRLOOAdvantage exposes scaling and follows TRL's scale_rewards by default."""
    from creditlab.integrations.trl import TurnRLOOAdvantage

    # one group of two one-turn samples with outcome 1 and 0: RLOO advantages +1 and -1
    batch = _batch([1.0, 0.0], [[], []], groups=[0, 0], turns=[1, 1], scale="none")
    raw = TurnRLOOAdvantage(turn_reward_column="turn_rewards")(batch).advantages
    np.testing.assert_allclose(raw, [[1.0], [-1.0]])
    # "group": divided by the unbiased std of the group's advantages, sqrt(((1)^2 + (-1)^2) / 1) = sqrt(2),
    # plus eps 1e-4: 1 / (1.41421 + 0.0001) = 0.70706 -- TRL's GRPO advantage (1 - 0.5) / (0.70711 + 0.0001)
    scaled = TurnRLOOAdvantage(turn_reward_column="turn_rewards", scale="group")(batch).advantages
    np.testing.assert_allclose(scaled, [[1 / (math.sqrt(2) + 1e-4)], [-1 / (math.sqrt(2) + 1e-4)]])
    trl_grpo = 0.5 / (math.sqrt(0.5) + 1e-4)
    assert abs(scaled[0, 0] - trl_grpo) < 1e-4
    # "trl" (the default) follows the batch's scale_rewards
    follows = TurnRLOOAdvantage(turn_reward_column="turn_rewards")(
        _batch([1.0, 0.0], [[], []], groups=[0, 0], turns=[1, 1])
    )
    np.testing.assert_allclose(follows.advantages, scaled)
    # "batch": two groups, the std over every valid turn advantage of the batch
    # group 0: outcomes 1, 0 -> +1, -1; group 1: outcomes 3, 1 -> +2, -2; std(ddof=1) of [1, -1, 2, -2] = sqrt(10/3)
    b2 = _batch([1.0, 0.0, 3.0, 1.0], [[], [], [], []], groups=[0, 0, 1, 1], turns=[1, 1, 1, 1])
    out = TurnRLOOAdvantage(turn_reward_column="turn_rewards", scale="batch", eps=0.0)(b2).advantages
    np.testing.assert_allclose(out.ravel(), np.array([1, -1, 2, -2]) / math.sqrt(10 / 3))
    grp = TurnRLOOAdvantage(turn_reward_column="turn_rewards", scale="group", eps=0.0)(b2).advantages
    # per group: [1, -1] / sqrt(2) and [2, -2] / sqrt(8): both +-0.7071
    np.testing.assert_allclose(grp.ravel(), [0.70710678, -0.70710678, 0.70710678, -0.70710678])
    with pytest.raises(cl.errors.RangeError, match="scale"):
        TurnRLOOAdvantage(scale="whiten")


def test_scale_group_of_multi_turn_samples():
    """Two turns each: the std runs over the group's valid turns (padding turns excluded)."""
    from creditlab.integrations.trl import scale_turn_advantages

    adv = np.array([[1.0, 3.0], [-2.0, 0.0]])
    valid = np.array([[True, True], [True, False]])
    out, metrics = scale_turn_advantages(adv, valid, np.array([0, 0]), "group", eps=0.0)
    # valid values 1, 3, -2: mean 2/3, unbiased var = ((1/3)^2 + (7/3)^2 + (8/3)^2) / 2 = 114/18 = 6.333
    std = math.sqrt(114 / 18)
    np.testing.assert_allclose(out, [[1 / std, 3 / std], [-2 / std, 0.0]])
    assert metrics["advantages/scale_std_mean"] == pytest.approx(std)


@needs_trl
def test_trainer_scaling_follows_grpo_config(setup):
    """Defect 8 in the trainer: scale_rewards='none' trains on raw turn_rloo, an explicit scale wins."""
    from creditlab.integrations.trl import CreditlabGRPOTrainer, TurnRLOOAdvantage

    for config, scale, expected in (
        (dict(scale_rewards="none"), "trl", "none"),
        (dict(scale_rewards="none"), "group", "group"),
        (dict(scale_rewards="batch"), "trl", "batch"),
    ):
        trainer = _train(
            setup,
            CreditlabGRPOTrainer,
            1,
            config=config,
            advantage_fn=TurnRLOOAdvantage(turn_reward_column="turn_rewards", scale=scale),
        )
        batch = trainer.creditlab_last["batch"]
        turn_r = np.array(batch.columns["turn_rewards"], dtype=float)
        ref = scaled_turn_rloo_reference(turn_r, batch.rewards[:, 0].numpy(), batch.group_ids.numpy(), expected)
        np.testing.assert_allclose(
            trainer.creditlab_last["turn_advantages"].numpy(), ref, atol=1e-5, err_msg=str(config)
        )


@needs_trl
def test_mask_truncated_completions_keeps_the_turns(setup):
    """Defect 6: with mask_truncated_completions=True, a truncated two-turn sample (no EOS at the end)
    kept both its turns (it used to count as one and fail against its two per-turn rewards); its
    tokens train on nothing, and it still counts in its group's baselines."""
    from creditlab.integrations.trl import CreditlabGRPOTrainer, TurnRLOOAdvantage

    tokenizer, _ = setup
    rollout = TwoTurnRollout(tokenizer, finish=lambda i: i % 2 == 0)
    trainer = _train(
        setup,
        CreditlabGRPOTrainer,
        2,
        rollout=rollout,
        config=dict(mask_truncated_completions=True, scale_rewards="none"),
        advantage_fn=TurnRLOOAdvantage(turn_reward_column="turn_rewards"),
    )
    last = trainer.creditlab_last
    batch = last["batch"]
    assert batch.truncated.tolist() == [False, True, False, True]
    assert batch.num_turns.tolist() == [2, 2, 2, 2]
    turn_r = np.array(batch.columns["turn_rewards"], dtype=float)
    ref = cl.llm.turn_rloo(turn_r, batch.group_ids.numpy(), mask=None, outcomes=batch.rewards[:, 0].numpy()).advantages
    np.testing.assert_allclose(last["turn_advantages"].numpy(), ref, atol=1e-6)
    tok = last["token_advantages"].numpy()
    assert np.all(tok[[1, 3]] == 0) and not last["model_mask"][[1, 3]].any()
    np.testing.assert_allclose(tok[[0, 2], :3], np.repeat(ref[[0, 2], :1], 3, axis=1), atol=1e-6)
    np.testing.assert_allclose(tok[[0, 2], 5:8], np.repeat(ref[[0, 2], 1:], 3, axis=1), atol=1e-6)


@needs_trl
def test_mask_truncated_completions_same_update_as_stock_trl(setup):
    """The fix re-applies TRL's masking itself: with TRL's advantage formula the step is TRL's."""
    from creditlab.integrations.trl import CreditlabGRPOTrainer

    tokenizer, _ = setup
    kw = dict(config=dict(mask_truncated_completions=True))
    stock = _train(setup, trl.GRPOTrainer, 2, rollout=TwoTurnRollout(tokenizer, finish=lambda i: i % 2 == 0), **kw)
    ours = _train(
        setup,
        CreditlabGRPOTrainer,
        2,
        rollout=TwoTurnRollout(tokenizer, finish=lambda i: i % 2 == 0),
        advantage_fn=TRLFormulaGRPO(True),
        **kw,
    )
    for key in ("loss", "grad_norm"):
        a = [h[key] for h in stock.state.log_history if key in h]
        b = [h[key] for h in ours.state.log_history if key in h]
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=key)
    p_stock = torch.cat([p.detach().flatten() for p in stock.model.parameters()])
    p_ours = torch.cat([p.detach().flatten() for p in ours.model.parameters()])
    assert torch.allclose(p_stock, p_ours, atol=1e-6)


@needs_trl
def test_completion_table_shows_the_trained_advantages(setup):
    """Defect 7: TRL's completion table (log_completions) and its parquet files carry the advantages
    the loss used (each sample's mean over its model tokens) and the per-turn values."""
    import pandas as pd

    from creditlab.integrations.trl import CreditlabGRPOTrainer, TurnRLOOAdvantage

    seen = {}

    def inspect(trainer, folder):
        import glob

        files = sorted(glob.glob(f"{folder}/completions/*.parquet"))
        seen["table"] = pd.read_parquet(files[-1])

    trainer = _train(
        setup,
        CreditlabGRPOTrainer,
        1,
        config=dict(log_completions=True),
        inspect=inspect,
        advantage_fn=TurnRLOOAdvantage(turn_reward_column="turn_rewards"),
    )
    last = trainer.creditlab_last
    tok, mask = last["token_advantages"].numpy(), last["model_mask"].numpy()
    trained = (tok * mask).sum(1) / mask.sum(1)  # tokens 0-2 of turn 0 and 5-7 of turn 1: the mean of the two turns
    np.testing.assert_allclose(trained, last["turn_advantages"].numpy().mean(1), atol=1e-6)
    np.testing.assert_allclose(list(trainer._logs["advantages"]), trained, atol=1e-6)
    table = seen["table"]
    np.testing.assert_allclose(table["advantage"].to_numpy(), trained, atol=1e-6)
    np.testing.assert_allclose(
        np.stack(table["turn_advantages"].to_numpy()), last["turn_advantages"].numpy(), atol=1e-6
    )


@needs_trl
def test_explicit_turn_ids_split_adjacent_model_turns(setup):
    """Defect 9: two model turns with no environment token between them are one run of env_mask == 1;
    a 'turn_ids' column from the rollout keeps them apart."""
    from creditlab.integrations.trl import CreditlabGRPOTrainer, TurnRLOOAdvantage

    tokenizer, _ = setup
    fn = TurnRLOOAdvantage(turn_reward_column="turn_rewards", scale="none")
    with pytest.raises(cl.errors.ShapeError, match="2 per-turn rewards .* 1 turns"):
        _train(setup, CreditlabGRPOTrainer, 1, rollout=TwoTurnRollout(tokenizer, env_tokens=0), advantage_fn=fn)
    trainer = _train(
        setup, CreditlabGRPOTrainer, 1, rollout=TwoTurnRollout(tokenizer, env_tokens=0, turn_ids=True), advantage_fn=fn
    )
    last = trainer.creditlab_last
    assert last["batch"].num_turns.tolist() == [2, 2, 2, 2]
    assert last["turn_ids"].numpy().tolist() == [[0, 0, 0, 1, 1, 1]] * 4
    ref = cl.llm.turn_rloo(
        np.array(last["batch"].columns["turn_rewards"], float),
        last["batch"].group_ids.numpy(),
        mask=None,
        outcomes=last["batch"].rewards[:, 0].numpy(),
    ).advantages
    np.testing.assert_allclose(last["token_advantages"].numpy(), np.repeat(ref, 3, axis=1), atol=1e-6)


class BadTurnIds(TwoTurnRollout):
    def __init__(self, tokenizer, bad):
        super().__init__(tokenizer, turn_ids=True)
        self.bad = bad

    def __call__(self, prompts, trainer):
        out = super().__call__(prompts, trainer)
        out["turn_ids"] = [self.bad(ids) for ids in out["turn_ids"]]
        return out


@needs_trl
@pytest.mark.parametrize(
    "bad, error, match",
    [
        (lambda ids: ids[:-1], "ShapeError", "one per completion token"),
        (lambda ids: [1 if v == 0 else v for v in ids], "DataFormatError", "must number the turns 0, 1, 2"),
        (lambda ids: [2 if v == 1 else v for v in ids], "DataFormatError", "must number the turns 0, 1, 2"),
        (lambda ids: [1 - v if v >= 0 else v for v in ids], "DataFormatError", "in order"),
    ],
)
def test_bad_turn_ids_are_named_errors(setup, bad, error, match):
    from creditlab.integrations.trl import CreditlabGRPOTrainer, TurnRLOOAdvantage

    tokenizer, _ = setup
    with pytest.raises(getattr(cl.errors, error), match=match):
        _train(setup, CreditlabGRPOTrainer, 1, rollout=BadTurnIds(tokenizer, bad), advantage_fn=TurnRLOOAdvantage())


@needs_trl
def test_untested_trl_version_fails_clearly(setup, monkeypatch):
    """Defect 10: an untested TRL is refused with the tested range (allow_untested_trl=True warns)."""
    from creditlab.integrations.trl import (
        TRL_VERSIONS_TESTED,
        CreditlabGRPOTrainer,
        TurnRLOOAdvantage,
        check_trl_version,
    )

    assert check_trl_version() == trl.__version__  # the installed one is tested
    monkeypatch.setattr(trl, "__version__", "1.17.0")
    with pytest.raises(
        cl.errors.DependencyVersionError, match=r"tested with trl>=1\.16\.0,<1\.17; trl 1\.17\.0 is installed"
    ):
        _train(setup, CreditlabGRPOTrainer, 1, advantage_fn=TurnRLOOAdvantage())
    with pytest.warns(cl.errors.CreditlabWarning, match="trl 1.17.0 is installed"):
        check_trl_version(allow_untested=True)
    monkeypatch.setattr(trl.GRPOTrainer, "_calculate_rewards", lambda self, inputs: None)
    with pytest.raises(
        cl.errors.DependencyVersionError, match="_calculate_rewards is missing or its signature changed"
    ):
        check_trl_version(allow_untested=True)
    assert TRL_VERSIONS_TESTED == ">=1.16.0,<1.17"


def test_pyproject_pins_the_tested_trl_range():
    """Defect 10: the llm extra pins TRL to the range the trainer is tested with."""
    import pathlib

    from creditlab.integrations.trl import TRL_VERSIONS_TESTED

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    meta = tomllib.loads((pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    reqs = [r.replace(" ", "") for r in meta["project"]["optional-dependencies"]["llm"]]
    assert f"trl{TRL_VERSIONS_TESTED}" in reqs, reqs
