"""examples/trl_multiturn.py runs at its tiny size: TRL GRPO steps with turn RLOO and GiGPO per-turn credit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("trl")


def _example():
    spec = importlib.util.spec_from_file_location("trl_multiturn_example", ROOT / "examples" / "trl_multiturn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeTrainer:
    """What the rollout function uses of TRL's trainer: ``.model.generate``, scripted."""

    def __init__(self, tokenizer, turns):
        self.turns, self.tokenizer = list(turns), tokenizer
        self.model = self

    def generate(self, ids, attention_mask=None, max_new_tokens=4, **kwargs):
        import torch

        new = self.tokenizer.convert_tokens_to_ids(self.turns.pop(0).split())
        return torch.cat([ids, torch.tensor([new])], dim=1)


@pytest.mark.slow  # builds the tokenizer and the model: about 20 s under load
def test_rollout_func_follows_the_contract():
    ex = _example()
    _, tok = ex.tiny_model_and_tokenizer()
    rollout = ex.KeyDoorRollout(tok)
    # prompt 0: "find the key" (turn 0 says key) -> "you see a door" -> "open the door now"; prompt 1: no key
    trainer = FakeTrainer(tok, ["the key key a", "open the door a", "a a a a", "open open a a"])
    out = rollout(["find the key", "find the door"], trainer)
    assert out["logprobs"] is None
    assert [len(c) == len(m) for c, m in zip(out["completion_ids"], out["env_mask"])] == [True, True]
    assert out["env_mask"][0] == [1] * 4 + [0] * 4 + [1] * 4  # "you see a door" is 4 environment tokens
    assert out["env_mask"][1] == [1] * 4 + [0] * 2 + [1] * 4  # "nothing happens" is 2
    assert tok.decode(out["completion_ids"][0][4:8]) == "you see a door"
    assert out["turn_rewards"] == [[1.0, 0.0], [0.0, 0.0]]
    assert out["opened"] == [1.0, 0.0]  # opening counts only after the key was found
    assert out["anchors"] == [["start", "door"], ["start", "nothing"]]
    assert rollout.returns == [np.mean([2.0, 0.0])]


@pytest.mark.slow
def test_trl_multiturn_example(capsys, one_torch_thread):
    summary = _example().main(["--tiny"])
    out = capsys.readouterr().out
    assert set(summary) == {"turn_rloo", "gigpo"}
    assert all(s["steps"] == 1.0 for s in summary.values())
    assert "-> turns [" in out and "-> tokens [" in out
