"""CreditlabGRPOTrainer with the real pretrained SmolLM2-135M-Instruct, its chat template and tokenizer.

A two-turn text game: the user asks for a colour, the model answers (turn 0), the environment
replies as the user with the next question (tokens masked with ``env_mask``), the model answers
again (turn 1). Each turn is rewarded for brevity, TRL's reward function for naming a colour.
One GRPO step each with turn RLOO and with GiGPO checks, on real tokenization, that

* the token sequence TRL trains on decodes to exactly the chat template's rendering of the
  conversation (the environment tokens are the template's own);
* turns are segmented where the model's tokens are (and the explicit ``turn_ids`` agree);
* every model token carries its turn's advantage, every environment token 0;
* the turn advantages are the estimator's on the rewards the rollout recorded (computed here
  independently), and the step changed the weights.
"""

from __future__ import annotations

import tempfile
import time
import warnings

import numpy as np
import pytest
import torch

import creditlab as cl
from tests.helpers.real_llm import load_real, real_model_folder  # noqa: F401  (session fixture)

trl = pytest.importorskip("trl")

pytestmark = pytest.mark.slow

QUESTIONS = ["Name one colour. Answer with one word.", "Name one fruit. Answer with one word."]
FOLLOW_UP = "Now name one animal. Answer with one word."
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown")
TURN_TOKENS = 10


class TwoTurnChat:
    """rollout_func with the tokenizer's chat template. Records what it did for the test to check."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.records = []
        self.seconds = 0.0

    def _template(self, messages, **kw):
        return self.tokenizer.apply_chat_template(messages, tokenize=False, **kw)

    def _generate(self, model, contexts):
        """One sampled turn for every sample at once (left padding), cut after <|im_end|>."""
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        width = max(len(c) for c in contexts)
        ids = torch.tensor([[end] * (width - len(c)) + c for c in contexts])
        attn = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts])
        with torch.no_grad():
            gen = model.generate(
                ids,
                attention_mask=attn,
                max_new_tokens=TURN_TOKENS,
                do_sample=True,
                temperature=1.0,
                top_k=50,
                eos_token_id=end,
                pad_token_id=end,
            )
        out = []
        for row in gen[:, width:].tolist():
            out.append(row[: row.index(end) + 1] if end in row else row)
        return out

    def __call__(self, prompts, trainer):
        t0 = time.perf_counter()
        tok = self.tokenizer
        n = len(prompts)
        convs = [list(p) for p in prompts]
        prompt_ids = [
            tok(self._template(c, add_generation_prompt=True), add_special_tokens=False)["input_ids"] for c in convs
        ]
        comp = [[] for _ in range(n)]
        env_mask = [[] for _ in range(n)]
        turn_ids = [[] for _ in range(n)]
        rewards = [[] for _ in range(n)]
        anchors = [["start"] for _ in range(n)]
        texts = [[] for _ in range(n)]
        for turn in range(2):
            new = self._generate(trainer.model, [p + c for p, c in zip(prompt_ids, comp)])
            for i in range(n):
                comp[i] += new[i]
                env_mask[i] += [1] * len(new[i])
                turn_ids[i] += [turn] * len(new[i])
                text = tok.decode([t for t in new[i] if t != tok.convert_tokens_to_ids("<|im_end|>")])
                texts[i].append(text)
                convs[i] = convs[i] + [{"role": "assistant", "content": text}]
                rewards[i].append(-0.1 * len(text.split()))
                if turn == 0:
                    # the environment's tokens: what the template puts between the model's tokens so
                    # far and the next assistant turn (closing the answer first if it was cut off)
                    after = self._template(
                        convs[i] + [{"role": "user", "content": FOLLOW_UP}], add_generation_prompt=True
                    )
                    rendered = tok.decode(prompt_ids[i] + comp[i])
                    assert after.startswith(rendered), (rendered, after)
                    env = tok(after[len(rendered) :], add_special_tokens=False)["input_ids"]
                    comp[i] += env
                    env_mask[i] += [0] * len(env)
                    turn_ids[i] += [-1] * len(env)
                    convs[i] = convs[i] + [{"role": "user", "content": FOLLOW_UP}]
                    anchors[i].append(text.strip().lower())
        self.records = [
            {
                "messages": convs[i],
                "texts": texts[i],
                "prompt_ids": prompt_ids[i],
                "completion_ids": comp[i],
                "env_mask": env_mask[i],
                "turn_ids": turn_ids[i],
                "rewards": rewards[i],
                "anchors": anchors[i],
            }
            for i in range(n)
        ]
        self.seconds += time.perf_counter() - t0
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": comp,
            "logprobs": None,
            "env_mask": env_mask,
            "turn_ids": turn_ids,
            "turn_rewards": rewards,
            "anchors": anchors,
        }


def names_a_colour(completions, **kwargs):
    text = [c if isinstance(c, str) else " ".join(m["content"] for m in c) for c in completions]
    return [float(any(w in t.lower() for w in COLOURS)) for t in text]


def _run(folder, advantage_fn, **config):
    from datasets import Dataset

    from creditlab.integrations.trl import CreditlabGRPOTrainer

    torch.manual_seed(0)
    model, tokenizer = load_real(folder)
    before = {
        k: v.detach().clone() for k, v in model.named_parameters() if k.endswith("layers.0.self_attn.q_proj.weight")
    }
    rollout = TwoTurnChat(tokenizer)
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS] * 4})
    with tempfile.TemporaryDirectory() as d:
        args = trl.GRPOConfig(
            output_dir=d,
            per_device_train_batch_size=4,
            num_generations=2,
            max_completion_length=64,
            max_steps=1,
            learning_rate=1e-5,
            logging_steps=1,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            beta=0.0,
            seed=0,
            **config,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = CreditlabGRPOTrainer(
                model=model,
                reward_funcs=[names_a_colour],
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
                rollout_func=rollout,
                advantage_fn=advantage_fn,
            )
            t0 = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - t0
    changed = any(not torch.equal(before[k], dict(model.named_parameters())[k]) for k in before)
    return trainer, rollout, tokenizer, seconds, changed


def _check_tokens(trainer, rollout, tokenizer):
    """Template consistency, segmentation and token advantages on real tokenization."""
    last = trainer.creditlab_last
    tokens = last["token_advantages"].numpy()
    turns = last["turn_advantages"].numpy()
    turn_ids = last["turn_ids"].numpy()
    model_mask = last["model_mask"].numpy()
    truncated = last["batch"].truncated.numpy()
    assert len(rollout.records) == tokens.shape[0] == 4
    for i, rec in enumerate(rollout.records):
        # what TRL trains on is the chat template's own rendering of the conversation
        rendered = tokenizer.apply_chat_template(rec["messages"], tokenize=False)
        decoded = tokenizer.decode(rec["prompt_ids"] + rec["completion_ids"])
        assert rendered.startswith(decoded) and rendered[len(decoded) :] in ("", "<|im_end|>\n", "\n")
        n = len(rec["completion_ids"])
        env = np.array(rec["env_mask"], bool)
        ids = np.array(rec["turn_ids"])
        # segmentation: the trainer's turns are the rollout's model-token runs (and its explicit ids)
        assert np.array_equal(turn_ids[i, :n][env], ids[env]) and np.all(turn_ids[i, :n][~env] == -1)
        runs, count = cl.llm.turn_ids_from_response_mask(env[None])
        assert np.array_equal(runs[0][env], ids[env]) and int(count[0]) == 2
        assert np.array_equal(model_mask[i, :n], env & ~truncated[i]) and not model_mask[i, n:].any()
        # tokens: each model token carries its turn's advantage, environment tokens and padding 0
        if not truncated[i]:
            np.testing.assert_allclose(tokens[i, :n][env], turns[i, ids[env]], atol=1e-6)
        assert np.all(tokens[i, :n][~env] == 0) and np.all(tokens[i, n:] == 0)


def test_turn_rloo_one_step_on_the_real_model(real_model_folder, one_torch_thread):  # noqa: F811
    from creditlab.integrations.trl import TurnRLOOAdvantage

    trainer, rollout, tokenizer, seconds, changed = _run(
        real_model_folder, TurnRLOOAdvantage(turn_reward_column="turn_rewards")
    )
    _check_tokens(trainer, rollout, tokenizer)
    # the trained turn advantages: turn_rloo on the recorded turn rewards + TRL's reward on the last
    # turn, divided by the group's std (scale_rewards="group"), computed here from the rollout's records
    recs = rollout.records
    outcome = np.array(names_a_colour([r["texts"][0] + " " + r["texts"][1] for r in recs]))
    batch = trainer.creditlab_last["batch"]
    np.testing.assert_allclose(batch.rewards[:, 0].numpy(), outcome)
    rewards = np.array([r["rewards"] for r in recs])
    groups = np.array([0, 0, 1, 1])
    adv = cl.llm.turn_rloo(rewards, groups, mask=None, outcomes=outcome).advantages
    for g in (0, 1):
        adv[groups == g] /= np.std(adv[groups == g].ravel(), ddof=1) + 1e-4
    np.testing.assert_allclose(trainer.creditlab_last["turn_advantages"].numpy(), adv, atol=1e-5)
    loss = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert loss and np.isfinite(loss).all()
    assert changed == bool(np.abs(adv).max() > 0)
    print(f"\nreal-model GRPO step (turn_rloo): {seconds:.1f} s, rollout {rollout.seconds:.1f} s")


def test_gigpo_one_step_on_the_real_model_with_masked_truncations(real_model_folder, one_torch_thread):  # noqa: F811
    from creditlab.integrations.trl import GiGPOAdvantage

    trainer, rollout, tokenizer, seconds, changed = _run(
        real_model_folder,
        GiGPOAdvantage(anchor_column="anchors", turn_reward_column="turn_rewards"),
        mask_truncated_completions=True,
    )
    _check_tokens(trainer, rollout, tokenizer)
    recs = rollout.records
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    truncated = np.array([r["completion_ids"][-1] != end for r in recs])
    assert trainer.creditlab_last["batch"].truncated.numpy().tolist() == truncated.tolist()
    # truncated samples keep both turns (and their place in the group statistics)
    assert trainer.creditlab_last["batch"].num_turns.tolist() == [2, 2, 2, 2]
    outcome = np.array(names_a_colour([r["texts"][0] + " " + r["texts"][1] for r in recs]))
    ref = cl.llm.gigpo(
        outcome, np.array([r["rewards"] for r in recs]), [r["anchors"] for r in recs], np.array([0, 0, 1, 1]), mask=None
    )
    np.testing.assert_allclose(trainer.creditlab_last["turn_advantages"].numpy(), ref.advantages, atol=1e-5)
    trained = ~truncated[:, None] & (np.abs(ref.advantages) > 0)
    assert changed == bool(trained.any())
    print(
        f"\nreal-model GRPO step (gigpo, mask_truncated_completions): {seconds:.1f} s, rollout {rollout.seconds:.1f} s, "
        f"truncated {int(truncated.sum())}/4"
    )
