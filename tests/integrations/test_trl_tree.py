"""TRL adapter for tree rollouts: TreeAdvantage on a hand-made RolloutBatch, and a GRPO step with a
branching rollout_func (2-layer random GPT-2, word-level tokenizer built here, CPU)."""

from __future__ import annotations

import itertools
import tempfile
import warnings

import numpy as np
import pytest
import torch

import creditlab as cl
from creditlab.integrations.trl import RolloutBatch
from creditlab.integrations.trl_tree import TreeAdvantage
from creditlab.llm import Forest, tree_rloo, treerl


def _batch(paths, rewards, groups, turns):
    t = max(turns)
    r = torch.tensor(rewards, dtype=torch.float32)[:, None]
    return RolloutBatch(
        rewards=r,
        reward_names=["r"],
        reward_weights=torch.ones(1),
        group_ids=torch.tensor(groups),
        turn_mask=torch.arange(t)[None, :] < torch.tensor(turns)[:, None],
        num_turns=torch.tensor(turns),
        columns={"tree_path": paths},
    )


def test_tree_advantage_per_turn():
    # group 0: a -> {b: 1, c: 0}, d: 1 (its own tree, one turn); group 1: x -> {y: 0, z: 1}
    paths = [["a", "b"], ["a", "c"], ["d"], ["x", "y"], ["x", "z"]]
    batch = _batch(paths, [1.0, 0.0, 1.0, 0.0, 1.0], [0, 0, 0, 1, 1], [2, 2, 1, 2, 2])
    out = TreeAdvantage()(batch)
    ref = tree_rloo(Forest.from_paths(paths, [1.0, 0.0, 1.0, 0.0, 1.0], group_ids=[0, 0, 0, 1, 1])).advantages
    np.testing.assert_allclose(out.advantages, ref)
    # a (0.5) vs d (1): -0.5, +0.5; b/c: +-1; x alone at the top of group 1: 0, y/z: -+1
    np.testing.assert_allclose(out.advantages, [[-0.5, 1.0], [-0.5, -1.0], [0.5, 0.0], [0.0, -1.0], [0.0, 1.0]])
    rl = TreeAdvantage("treerl", leaf_scale="none")(batch)
    np.testing.assert_allclose(
        rl.advantages,
        treerl(
            Forest.from_paths(paths, [1.0, 0.0, 1.0, 0.0, 1.0], group_ids=[0, 0, 0, 1, 1]), leaf_scale="none"
        ).advantages,
    )
    with pytest.raises(ValueError, match="turns of model tokens"):
        TreeAdvantage()(_batch(paths, [1.0, 0.0, 1.0, 0.0, 1.0], [0, 0, 0, 1, 1], [2, 2, 2, 2, 2]))
    with pytest.raises(KeyError, match="tree_path"):
        TreeAdvantage(path_column="nodes")(batch)
    with pytest.raises(ValueError, match="method"):
        TreeAdvantage("mcts")


# ---------------------------------------------------------------------------------- a GRPO step

try:
    import transformers
    import trl
except ImportError:  # pragma: no cover
    trl = transformers = None
needs_trl = pytest.mark.skipif(trl is None, reason="trl/transformers not installed (pip install creditlab[llm])")

WORDS = ["[PAD]", "[EOS]", "[UNK]", "obs", "good", "bad", "go", "left", "right", "find", "the", "key"]


class TreeRollout:
    """Each prompt's 4 samples are the leaves of one tree: 2 first turns, each continued by 2
    second turns (the environment answers 'obs obs' in between, masked). tree_path = the ids of
    the two turns; the leaf reward is TRL's (count of 'good')."""

    def __init__(self, tokenizer, num_generations=4):
        self.tokenizer = tokenizer
        self.k = num_generations
        self.ids = itertools.count()

    def _turn(self, model, ctx):
        x = torch.tensor([ctx])
        with torch.no_grad():
            gen = model.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=3, min_new_tokens=3, do_sample=True, pad_token_id=0
            )
        return gen[0, x.shape[1] :].tolist()

    def __call__(self, prompts, trainer):
        obs = self.tokenizer.convert_tokens_to_ids(["obs", "obs"])
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "env_mask": [], "tree_path": []}
        for start in range(0, len(prompts), self.k):
            ids = self.tokenizer(prompts[start])["input_ids"]
            for _ in range(2):
                first = self._turn(trainer.model, ids)
                first_id = f"n{next(self.ids)}"
                for _ in range(2):
                    second = self._turn(trainer.model, ids + first + obs)
                    out["prompt_ids"].append(ids)
                    out["completion_ids"].append(first + obs + second)
                    out["env_mask"].append([1, 1, 1, 0, 0, 1, 1, 1])
                    out["tree_path"].append([first_id, f"n{next(self.ids)}"])
        return out


def count_good(completions, **kwargs):
    return [float(c.split().count("good")) for c in completions]


@needs_trl
@pytest.mark.slow
def test_tree_advantages_reach_the_tokens_in_a_grpo_step():
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers

    from creditlab.integrations.trl import CreditlabGRPOTrainer

    torch.set_num_threads(1)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]"
    )
    dataset = Dataset.from_dict({"prompt": ["find the key", "go left"] * 4})
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
    with tempfile.TemporaryDirectory() as d:
        args = trl.GRPOConfig(
            output_dir=d,
            per_device_train_batch_size=4,
            num_generations=4,
            max_completion_length=8,
            max_steps=1,
            learning_rate=1e-3,
            logging_steps=1,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            beta=0.0,
            seed=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = CreditlabGRPOTrainer(
                model=transformers.GPT2LMHeadModel(cfg),
                reward_funcs=[count_good],
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
                rollout_func=TreeRollout(tokenizer),
                advantage_fn=TreeAdvantage(),
            )
            trainer.train()
    last = trainer.creditlab_last
    batch = last["batch"]
    paths = batch.columns["tree_path"]
    assert len({p[0] for p in paths}) == 2 and paths[0][0] == paths[1][0]  # two first turns, each shared by two samples
    ref = tree_rloo(
        Forest.from_paths(paths, batch.rewards[:, 0].double().numpy(), group_ids=batch.group_ids.numpy())
    ).advantages
    np.testing.assert_allclose(last["turn_advantages"].numpy(), ref, atol=1e-6)
    tokens = last["token_advantages"].numpy()
    np.testing.assert_allclose(tokens[:, :3], np.repeat(ref[:, :1], 3, axis=1), atol=1e-6)
    assert np.all(tokens[:, 3:5] == 0)
    np.testing.assert_allclose(tokens[:, 5:8], np.repeat(ref[:, 1:], 3, axis=1), atol=1e-6)
    assert cl.registry.get_method("tree_rloo").family == "llm"
