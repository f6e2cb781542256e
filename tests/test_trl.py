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
    kw = _kwargs(["good", "bad", "?good", ""], [[1] * 3, [1] * 12, [1] * 18, [1] * 25],
                 prompts=["a", "a", "b", "b"], reference_rewards=[[0.0, 1.0], [1.0], [None, 0.0], [0.0]],
                 score=[0.5, None, 2.0, 1.0])
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
    assert [f.__name__ for f in funcs] == ["par_correct", "par_score", "overlong_penalty", "group_length_penalty", "gated_parses"]


def test_reward_function_values():
    kw = _kwargs(["good", "bad", "?good", ""], [[1] * 3, [1] * 12, [1] * 18, [1] * 25],
                 prompts=["a", "a", "b", "b"], reference_rewards=[[0.0, 1.0], [1.0], [None, 0.0], [0.0]],
                 score=[0.5, None, 2.0, 1.0])
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
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")
    dataset = Dataset.from_dict({"prompt": ["find the key", "go left", "go right", "find the key"] * 4})
    return tokenizer, dataset


def _model():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=len(WORDS), n_positions=64, n_embd=16, n_layer=2, n_head=2,
                                  bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


class TwoTurnRollout:
    """rollout_func: the policy writes 3 tokens, the environment answers 'obs obs' (masked), the
    policy writes 3 more. Per-turn reward: 1 if the turn contains 'good'. Anchors: 'start', then the
    first turn's tokens (the state the second turn acts from)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, prompts, trainer):
        good = self.tokenizer.convert_tokens_to_ids("good")
        obs = self.tokenizer.convert_tokens_to_ids(["obs", "obs"])
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "env_mask": [], "turn_rewards": [], "anchors": []}
        for p in prompts:
            ids = self.tokenizer(p)["input_ids"]
            comp, mask, rewards, anchors = [], [], [], ["start"]
            for turn in range(2):
                ctx = torch.tensor([ids + comp])
                with torch.no_grad():
                    gen = trainer.model.generate(ctx, attention_mask=torch.ones_like(ctx), max_new_tokens=3,
                                                 min_new_tokens=3, do_sample=True, pad_token_id=0)
                new = gen[0, ctx.shape[1]:].tolist()
                comp += new
                mask += [1] * len(new)
                rewards.append(float(good in new))
                if turn == 0:
                    comp += obs
                    mask += [0, 0]
                    anchors.append(" ".join(map(str, new)))
            for key, value in (("prompt_ids", ids), ("completion_ids", comp), ("env_mask", mask),
                               ("turn_rewards", rewards), ("anchors", anchors)):
                out[key].append(value)
        return out


def count_good(completions, **kwargs):
    return [float(c.split().count("good")) for c in completions]


def _train(setup, trainer_cls, steps, **extra):
    tokenizer, dataset = setup
    with tempfile.TemporaryDirectory() as d:
        args = trl.GRPOConfig(output_dir=d, per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
                              max_steps=steps, learning_rate=1e-3, logging_steps=1, report_to="none", use_cpu=True,
                              save_strategy="no", beta=0.0, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = trainer_cls(model=_model(), reward_funcs=[count_good], args=args, train_dataset=dataset,
                                  processing_class=tokenizer, rollout_func=TwoTurnRollout(tokenizer), **extra)
            trainer.train()
    return trainer


@needs_trl
def test_per_turn_advantages_reach_the_loss(setup):
    from creditlab.integrations.trl import CreditlabGRPOTrainer, TurnRLOOAdvantage

    trainer = _train(setup, CreditlabGRPOTrainer, 2, advantage_fn=TurnRLOOAdvantage(turn_reward_column="turn_rewards"))
    last = trainer.creditlab_last
    batch = last["batch"]
    assert batch.turn_mask.shape == (4, 2) and bool(batch.turn_mask.all())
    # the per-turn advantages are turn_rloo's on the rollout's turn rewards + TRL's reward on the last turn
    turn_r = np.array(batch.columns["turn_rewards"], dtype=float)
    outcome = batch.rewards[:, 0].numpy()
    ref = cl.llm.turn_rloo(turn_r, batch.group_ids.numpy(), mask=None, outcomes=outcome).advantages
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

    trainer = _train(setup, CreditlabGRPOTrainer, 1, advantage_fn=GiGPOAdvantage(anchor_column="anchors", turn_reward_column="turn_rewards"))
    batch = trainer.creditlab_last["batch"]
    anchors = batch.columns["anchors"]
    ref = cl.llm.gigpo(batch.rewards[:, 0].numpy(), np.array(batch.columns["turn_rewards"], float), anchors,
                       batch.group_ids.numpy(), mask=None)
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
