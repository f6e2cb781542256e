"""Likelihood rewards (creditlab.llm.likelihood) on a tiny random GPT-2 with a word-level tokenizer.

The real-model checks (the shipped SmolLM2) are in tests/programs/test_real_llm.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from creditlab.errors import RangeError, ShapeError
from creditlab.llm.likelihood import likelihood_rewards, reference_log_likelihood

transformers = pytest.importorskip("transformers")

WORDS = [
    "[PAD]",
    "[BOS]",
    "[UNK]",
    "q",
    "a",
    "the",
    "answer",
    "is",
    "five",
    "seven",
    "two",
    "plus",
    "three",
    ":",
    "user",
    "bot",
]


@pytest.fixture(scope="module")
def tiny(request):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", unk_token="[UNK]"
    )
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
    model = transformers.GPT2LMHeadModel(cfg)
    model.eval()
    return model, tokenizer


def slow_log_likelihood(model, tokenizer, context: str, answer: str) -> float:
    """Reference: one forward pass per answer token on the unpadded prefix, summing log-softmax."""
    ctx = tokenizer(context)["input_ids"]
    ans = tokenizer(answer, add_special_tokens=False)["input_ids"]
    total = 0.0
    for j, token in enumerate(ans):
        ids = torch.tensor([ctx + ans[:j]])
        with torch.no_grad():
            logits = model(ids).logits[0, -1].double()
        total += float(torch.log_softmax(logits, -1)[token])
    return total


PROMPTS = ["q two plus three", "q two plus two", "q three", "q the answer"]
RESPONSES = [" the answer is", " two plus two is", "", " the answer the answer the answer is"]
REFERENCES = ["five", "the answer is seven", "three", "two two"]


def test_matches_a_per_token_reference_loop(tiny):
    model, tokenizer = tiny
    out = reference_log_likelihood(model, tokenizer, PROMPTS, RESPONSES, REFERENCES, answer_prefix=" : ", batch_size=3)
    for i in range(4):
        # plain concatenation (no chat template): context = prompt + response + answer_prefix, the
        # prefix's trailing space moved to the reference; the reference is scored token by token
        context = PROMPTS[i] + RESPONSES[i] + " :"
        ref = slow_log_likelihood(model, tokenizer, context, REFERENCES[i])
        assert out.log_likelihood[i] == pytest.approx(ref, abs=1e-5)
    np.testing.assert_array_equal(out.num_tokens, [1, 4, 1, 2])
    np.testing.assert_allclose(out.mean_log_likelihood, out.log_likelihood / out.num_tokens)
    assert out.present.all() and np.all(out.log_likelihood < 0)
    assert out.metrics["likelihood/tokens_mean"] == 2.0


def test_batching_and_padding_do_not_change_the_scores(tiny):
    """Left padding with position ids from the mask: a sample scores the same alone or in any batch."""
    model, tokenizer = tiny
    together = reference_log_likelihood(model, tokenizer, PROMPTS, RESPONSES, REFERENCES, batch_size=4)
    alone = [
        reference_log_likelihood(model, tokenizer, [p], [r], [a]).log_likelihood[0]
        for p, r, a in zip(PROMPTS, RESPONSES, REFERENCES)
    ]
    np.testing.assert_allclose(together.log_likelihood, alone, atol=1e-5)


def test_missing_references_and_rewards(tiny):
    model, tokenizer = tiny
    out = reference_log_likelihood(model, tokenizer, PROMPTS[:3], RESPONSES[:3], ["five", None, float("nan")])
    assert out.present.tolist() == [True, False, False]
    assert math.isnan(out.log_likelihood[1]) and out.num_tokens[1] == 0
    assert out.metrics["likelihood/num_missing"] == 2.0
    summed = likelihood_rewards(out, reduce="sum")
    assert summed.rewards[0] == out.log_likelihood[0] and summed.rewards[1] == 0.0
    assert summed.present.tolist() == [True, False, False]
    assert likelihood_rewards(out, reduce="mean").rewards[0] == out.mean_log_likelihood[0]
    with pytest.raises(RangeError, match="reduce"):
        likelihood_rewards(out, reduce="max")


def test_chat_template_layout(tiny):
    """With a chat template, the scored text is the template's rendering up to the assistant turn,
    then response + prefix + reference."""
    model, tokenizer = tiny
    tok = tokenizer.__class__(
        tokenizer_object=tokenizer.backend_tokenizer, pad_token="[PAD]", bos_token="[BOS]", unk_token="[UNK]"
    )
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    out = reference_log_likelihood(
        model,
        tok,
        [[{"role": "user", "content": "q two plus three"}]],
        [[{"role": "assistant", "content": "the answer is"}]],
        ["five"],
        answer_prefix="",
    )
    # the template renders "user : q two plus three assistant : <content> " ('assistant' is [UNK])
    ref = slow_log_likelihood(model, tok, "user : q two plus three assistant : the answer is", "five")
    assert out.log_likelihood[0] == pytest.approx(ref, abs=1e-5)


def test_bad_input(tiny):
    model, tokenizer = tiny
    with pytest.raises(ShapeError, match="one entry per sample"):
        reference_log_likelihood(model, tokenizer, PROMPTS, RESPONSES[:2], REFERENCES)
    with pytest.raises(ShapeError, match="tokenizes to no token"):
        reference_log_likelihood(model, tokenizer, PROMPTS[:1], RESPONSES[:1], [""])
    with pytest.raises(ShapeError, match="string or None"):
        reference_log_likelihood(model, tokenizer, PROMPTS[:1], RESPONSES[:1], [5])
    with pytest.raises(RangeError, match="batch_size"):
        reference_log_likelihood(model, tokenizer, PROMPTS, RESPONSES, REFERENCES, batch_size=0)


def test_registered_beside_its_definition(tiny, monkeypatch):
    import creditlab.llm.likelihood as lik
    from creditlab.episodes import Episodes
    from creditlab.registry import get_method

    method = get_method("reference_likelihood")
    assert method.kind == "rewards" and method.params["reduce"] == "sum" and method.params["model"] == "smollm2"
    model, tokenizer = tiny
    fake = type("LM", (), {"model": model, "tokenizer": tokenizer})
    monkeypatch.setitem(lik._SCORERS, ("tiny", None), fake)
    eps = Episodes.from_padded(
        np.zeros((3, 3)),
        [[1, 1, 1], [1, 0, 0], [1, 1, 0]],
        extras={"prompt": PROMPTS[:3], "response": RESPONSES[:3], "reference": ["five", None, "three"]},
    )
    out = method(eps, model="tiny", reduce="mean", answer_prefix=" : ")
    direct = reference_log_likelihood(
        model, tokenizer, PROMPTS[:3], RESPONSES[:3], ["five", None, "three"], answer_prefix=" : "
    )
    rewards = np.asarray(out.rewards)
    # the per-token mean sits on each episode's last step (steps 2, 0, 1); the episode without a reference gets 0
    assert rewards[0, 2] == pytest.approx(direct.mean_log_likelihood[0]) and rewards[2, 1] == pytest.approx(
        direct.mean_log_likelihood[2]
    )
    assert np.count_nonzero(rewards) == 2
    assert out.present[1].tolist() == [False, False, False] and out.present[0].all()
