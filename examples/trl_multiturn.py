"""Multi-turn GRPO in TRL with per-turn credit: turn-level RLOO and GiGPO through ``CreditlabGRPOTrainer``.

    python examples/trl_multiturn.py                # 30 GRPO steps per estimator, a few minutes on CPU
    python examples/trl_multiturn.py --tiny         # 1 step each (what CI runs)

The game (a two-turn text game, ``KeyDoorRollout`` below): the model is asked to find the key,
writes a turn, the environment answers (``"you see a door"`` or ``"nothing happens"``), the model
writes a second turn. The first turn earns an intermediate reward of 1 if it says ``key``; the
episode's outcome (TRL's reward function, added on the last turn) is 1 if the second turn says
``open`` after the key was found. Plain GRPO gives every token of the completion the same
advantage (the episode's reward); with per-turn credit each turn's tokens get their own.

Everything is local and tiny: a 2-layer GPT-2 with random weights and a word-level tokenizer built
here (no download). With your own model, replace ``tiny_model_and_tokenizer`` with
``AutoModelForCausalLM.from_pretrained(...)`` / ``AutoTokenizer.from_pretrained(...)``, or the
shipped SmolLM2 (``creditlab.llm.pretrained.load_causal_lm("smollm2")``).

The ``rollout_func`` contract (docs/llm.md, "The rollout_func contract"): TRL calls
``rollout_func(prompts, trainer)`` with the batch's prompts and expects a dict of lists, one entry
per prompt: ``prompt_ids``, ``completion_ids`` (every token after the prompt: the model's turns
*and* the environment's tokens between them), ``logprobs`` (or None: TRL computes them),
``env_mask`` (1 on the model's tokens, 0 on environment tokens: no loss there), optionally
``turn_ids``, and any extra column (here ``turn_rewards``: one float per turn, and ``anchors``:
one hashable state per turn, GiGPO's step groups) that the advantage function reads.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings

import numpy as np
import torch

WORDS = ["[PAD]", "[EOS]", "[UNK]", "find", "the", "key", "open", "door", "you", "see", "a", "nothing", "happens"]


def tiny_model_and_tokenizer():
    """A random 2-layer GPT-2 and a word-level tokenizer over ``WORDS`` (no downloads)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]"
    )
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=len(WORDS),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg), tokenizer


class KeyDoorRollout:
    """``rollout_func``: two model turns with an environment answer between them.

    For each prompt: generate ``turn_tokens`` tokens (turn 0); the environment answers ``you see a
    door`` if they contain ``key`` and ``nothing happens`` otherwise (tokens with ``env_mask`` 0);
    generate ``turn_tokens`` more (turn 1). Columns: ``turn_rewards`` -- the intermediate reward
    of each turn (turn 0: 1 if it said ``key``; turn 1: 0); ``opened`` -- the outcome, 1 if the key
    was found and turn 1 says ``open`` (read by the reward function :func:`door_opened`);
    ``anchors`` -- the state each turn acts from: ``"start"``, then the environment's answer, so
    GiGPO compares second turns taken from the same state across the group. ``returns`` keeps the
    mean episode return (intermediate + outcome) of each call, to watch learning.
    """

    def __init__(self, tokenizer, turn_tokens: int = 4):
        self.tokenizer = tokenizer
        self.turn_tokens = turn_tokens
        self.returns: list[float] = []

    def _generate(self, model, context: list[int]) -> list[int]:
        ids = torch.tensor([context])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.turn_tokens,
                min_new_tokens=self.turn_tokens,
                do_sample=True,
                pad_token_id=0,
            )
        return out[0, ids.shape[1] :].tolist()

    def __call__(self, prompts, trainer):
        tok = self.tokenizer
        key, open_ = tok.convert_tokens_to_ids(["key", "open"])
        out = {
            "prompt_ids": [],
            "completion_ids": [],
            "logprobs": None,
            "env_mask": [],
            "turn_rewards": [],
            "opened": [],
            "anchors": [],
        }
        for prompt in prompts:
            prompt_ids = tok(prompt)["input_ids"]
            turn0 = self._generate(trainer.model, prompt_ids)
            found = key in turn0
            answer = tok("you see a door" if found else "nothing happens")["input_ids"]
            turn1 = self._generate(trainer.model, prompt_ids + turn0 + answer)
            out["prompt_ids"].append(prompt_ids)
            out["completion_ids"].append(turn0 + answer + turn1)
            out["env_mask"].append([1] * len(turn0) + [0] * len(answer) + [1] * len(turn1))
            out["turn_rewards"].append([float(found), 0.0])
            out["opened"].append(float(found and open_ in turn1))
            out["anchors"].append(["start", "door" if found else "nothing"])
        self.returns.append(float(np.mean([sum(r) + o for r, o in zip(out["turn_rewards"], out["opened"])])))
        return out


def door_opened(completions, opened, **kwargs):
    """TRL reward function (the episode's outcome): the rollout's ``opened`` column, as TRL passes extra columns."""
    return [float(o) for o in opened]


def train(advantage_fn, steps: int, tiny: bool):
    """``steps`` GRPO steps (8 completions a step: one prompt x 8 generations, one group) with
    ``advantage_fn``; returns ``(trainer, rollout)``."""
    import trl
    from datasets import Dataset

    from creditlab.integrations.trl import CreditlabGRPOTrainer

    model, tokenizer = tiny_model_and_tokenizer()
    dataset = Dataset.from_dict({"prompt": ["find the key", "find the door", "see the key", "find a key"] * 64})
    rollout = KeyDoorRollout(tokenizer)
    with tempfile.TemporaryDirectory() as out:
        args = trl.GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=8,
            num_generations=8,
            max_completion_length=16,
            max_steps=steps,
            learning_rate=5e-3,
            logging_strategy="no",
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            beta=0.0,
            seed=0,
            disable_tqdm=tiny,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TRL's notes about tiny, randomly initialized models
            trainer = CreditlabGRPOTrainer(
                model=model,
                reward_funcs=[door_opened],
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
                rollout_func=rollout,
                advantage_fn=advantage_fn,
            )
            trainer.train()
    return trainer, rollout


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    from creditlab.integrations.trl import GiGPOAdvantage, TurnRLOOAdvantage

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="GRPO steps per estimator (default 30)")
    p.add_argument("--tiny", action="store_true", help="one step per estimator")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    steps = 1 if args.tiny else args.steps
    estimators = {
        "turn_rloo": TurnRLOOAdvantage(turn_reward_column="turn_rewards"),
        "gigpo": GiGPOAdvantage(anchor_column="anchors", turn_reward_column="turn_rewards"),
    }
    summary: dict[str, dict[str, float]] = {}
    for name, fn in estimators.items():
        trainer, rollout = train(fn, steps, args.tiny)
        last = trainer.creditlab_last
        batch, turn_adv, token_adv = last["batch"], last["turn_advantages"].numpy(), last["token_advantages"].numpy()
        turn_r = np.array(batch.columns["turn_rewards"], dtype=float)
        outcome = batch.rewards[:, 0].numpy()
        print(
            f"\n{name}: the last batch (intermediate turn rewards, outcome -> per-turn advantages -> per-token advantages)"
        )
        for i in range(len(turn_r)):
            turns = " ".join(f"{v:+.2f}" for v in turn_adv[i])
            tokens = " ".join(f"{v:+.2f}" for v in token_adv[i])
            print(
                f"  sample {i}: turn rewards {turn_r[i].tolist()}, outcome {outcome[i]:.0f} -> turns [{turns}] -> tokens [{tokens}]"
            )
        k = max(1, min(5, len(rollout.returns) // 2))
        summary[name] = {
            "steps": float(trainer.state.global_step),
            "return_first": float(np.mean(rollout.returns[:k])),
            "return_last": float(np.mean(rollout.returns[-k:])),
            "turn_advantage_abs_mean": float(np.abs(turn_adv).mean()),
        }
        print(
            f"  {name}: {trainer.state.global_step} GRPO steps; mean episode return (of 2) over the first {k} batches "
            f"{summary[name]['return_first']:.2f}, over the last {k} {summary[name]['return_last']:.2f}"
        )
    return summary


if __name__ == "__main__":
    main()
