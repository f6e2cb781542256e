"""Likelihood rewards: how probable a scoring model finds the reference answer after a response.

For a prompt ``x``, a policy response ``y`` and a reference answer ``a = (a_1 .. a_L)``::

    log_likelihood      = sum_j log p(a_j | x, y, prefix, a_<j)
    mean_log_likelihood = log_likelihood / L            (the per-token average)

computed by teacher forcing with a scoring model (often the policy itself, or a frozen copy of
it). A response that makes the reference answer more probable -- a reasoning chain that leads to
it -- is rewarded without a verifier, so the reward also works where answers cannot be checked
by rules. This is the reward family of the "likelihood of the reference" papers (VR-CLI, Gurung &
Lapata 2025; RLPR, Yu et al. 2025, whose reward is the mean token *probability*; DRO's reasoning
reflection reward; IGPO's belief ``p_t = exp(mean_log_likelihood)`` after each turn, see
:func:`creditlab.llm.igpo`).

Layout of the scored text: with a chat template, the prompt is the user turn and the assistant
turn is ``response + answer_prefix + reference`` (rendered by the tokenizer's own template, the
assistant turn left open after the reference); without one, the plain concatenation
``prompt + response + answer_prefix + reference``. Only the reference tokens are scored.

The reference is tokenized **on its own**, so its tokens (and ``L``) do not depend on the
response: for one reference, ``mean_log_likelihood`` is ``log_likelihood`` divided by the same
``L`` for every response, and a group method (GRPO, RLOO) ranks a group's responses the same with
either; across prompts the average removes the length of the answer. Whitespace at the end of the
context (e.g. ``answer_prefix="Answer: "``) moves to the front of the reference before tokenizing,
as lm-evaluation-harness does, so a byte-level BPE tokenizer sees ``" 5"`` rather than a lone
space token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import RangeError, ShapeError
from ..outputs import RewardOutput
from ..registry import register_method

__all__ = [
    "LikelihoodOutput",
    "likelihood_rewards",
    "reference_log_likelihood",
]

_SENTINEL = "\u2063creditlab-assistant-turn\u2063"


class LikelihoodOutput(NamedTuple):
    """Result of :func:`reference_log_likelihood`.

    Attributes:
        log_likelihood: float64[N] -- ``sum_j log p(a_j | ...)`` (NaN where the reference is None).
        mean_log_likelihood: float64[N] -- the same divided by the reference's token count.
        num_tokens: int64[N] -- tokens of each reference (0 where it is None).
        present: bool[N] -- False where the reference is None (nothing scored).
        metrics: ``likelihood/mean``, ``likelihood/mean_per_token``, ``likelihood/tokens_mean``,
            ``likelihood/num_missing``, ``likelihood/context_tokens_max``.
    """

    log_likelihood: np.ndarray
    mean_log_likelihood: np.ndarray
    num_tokens: np.ndarray
    present: np.ndarray
    metrics: dict[str, float]


def _messages(prompt: Any) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) and "role" in m for m in prompt):
        return list(prompt)
    raise ShapeError(
        f"a prompt must be a string or a list of chat messages ({{'role', 'content'}} dicts); got {type(prompt).__name__}"
    )


def _text(response: Any, name: str) -> str:
    """A response as text: a string, or TRL's conversational ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(response, str):
        return response
    if isinstance(response, (list, tuple)) and all(isinstance(m, dict) for m in response):
        return "".join(str(m.get("content", "")) for m in response)
    raise ShapeError(f"{name} must be a string (or a list of chat messages); got {type(response).__name__}")


def _context(tokenizer: Any, prompt: Any, response: str, answer_prefix: str, chat_template: bool) -> str:
    if chat_template:
        # render the conversation with a sentinel as the assistant turn, then cut there: the
        # tokenizer's own template decides every special token before the answer
        rendered = tokenizer.apply_chat_template(
            _messages(prompt) + [{"role": "assistant", "content": _SENTINEL}], tokenize=False
        )
        at = rendered.find(_SENTINEL)
        if at < 0:  # pragma: no cover - a template that rewrites message contents
            raise ShapeError(
                "the tokenizer's chat template does not reproduce the assistant message; pass chat_template=False"
            )
        return rendered[:at] + response + answer_prefix
    if not isinstance(prompt, str):
        raise ShapeError("chat_template=False needs string prompts")
    return prompt + response + answer_prefix


def reference_log_likelihood(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    responses: Sequence[Any],
    references: Sequence[str | None],
    *,
    answer_prefix: str = "\nAnswer: ",
    chat_template: bool | None = None,
    batch_size: int = 8,
) -> LikelihoodOutput:
    """Log-likelihood of each reference answer after its prompt and response, under ``model``.

    Args:
        model: a ``transformers`` causal LM (any ``forward(input_ids, attention_mask,
            position_ids) -> logits``); run without gradient, in its current dtype and device.
        tokenizer: its tokenizer.
        prompts: N prompts -- strings or chat-message lists (TRL's conversational format).
        responses: N responses -- strings or ``[{"role": "assistant", "content": ...}]``.
        references: N reference answers; None = no reference (not scored, ``present`` False).
        answer_prefix: text between the response and the reference (e.g. ``"\\nAnswer: "``).
        chat_template: use the tokenizer's chat template (default: when it has one).
        batch_size: sequences per forward pass.

    Returns:
        :class:`LikelihoodOutput` (float64 sums of the float32 per-token log-probs).

    Raises:
        ShapeError: the three lists differ in length, or a reference tokenizes to nothing.

    Example (with the shipped SmolLM2; ``tests/programs/test_real_llm.py`` runs this)::

        from creditlab.llm.pretrained import load_causal_lm
        lm = load_causal_lm("smollm2")
        out = reference_log_likelihood(lm.model, lm.tokenizer, ["What is 2+3?"] * 2,
                                       ["2 + 3 = 5.", "2 + 3 = 7."], ["5", "5"])
        assert out.log_likelihood[0] > out.log_likelihood[1]
    """
    import torch

    n = len(prompts)
    if len(responses) != n or len(references) != n:
        raise ShapeError(
            f"prompts, responses and references must have one entry per sample; got {n}, {len(responses)} and {len(references)}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise RangeError(f"batch_size must be an int >= 1; got {batch_size!r}")
    if chat_template is None:
        chat_template = getattr(tokenizer, "chat_template", None) is not None
    present = np.array([r is not None and not (isinstance(r, float) and math.isnan(r)) for r in references], bool)
    contexts: list[list[int]] = []
    answers: list[list[int]] = []
    for i in range(n):
        if not present[i]:
            contexts.append([])
            answers.append([])
            continue
        ref = references[i]
        if not isinstance(ref, str):
            raise ShapeError(f"references[{i}] must be a string or None; got {type(ref).__name__}")
        ctx = _context(tokenizer, prompts[i], _text(responses[i], f"responses[{i}]"), answer_prefix, chat_template)
        stripped = ctx.rstrip(" ")
        ans_text = ctx[len(stripped) :] + ref
        ctx_ids = tokenizer(stripped, add_special_tokens=not chat_template)["input_ids"]
        ans_ids = tokenizer(ans_text, add_special_tokens=False)["input_ids"]
        if not ans_ids:
            raise ShapeError(f"references[{i}] = {ref!r} tokenizes to no token; nothing to score")
        if not ctx_ids:
            # a model needs one token before the first scored one
            bos = getattr(tokenizer, "bos_token_id", None)
            if bos is None:
                raise ShapeError(
                    f"sample {i}: the context before the reference is empty and the tokenizer has no BOS token"
                )
            ctx_ids = [bos]
        contexts.append(list(ctx_ids))
        answers.append(list(ans_ids))

    total = np.full(n, np.nan)
    num = np.array([len(a) for a in answers], np.int64)
    rows = np.nonzero(present)[0]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                seqs = [contexts[i] + answers[i] for i in chunk]
                width = max(len(s) for s in seqs)
                keep = int(max(num[chunk])) + 1  # the last positions: each answer, and the token before it
                # left padding: every answer ends at the last column; position ids count real tokens only
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                attn = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, s in enumerate(seqs):
                    ids[r, width - len(s) :] = torch.tensor(s)
                    attn[r, width - len(s) :] = 1
                pos = (attn.cumsum(1) - 1).clamp(min=0)
                logits = model(
                    input_ids=ids.to(device),
                    attention_mask=attn.to(device),
                    position_ids=pos.to(device),
                    logits_to_keep=keep,
                ).logits[:, -keep:]
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # column c predicts token width - keep + 1 + c
                target = ids[:, width - keep + 1 :].to(device)
                picked = logp.gather(-1, target[..., None]).squeeze(-1).double().cpu().numpy()
                for r, i in enumerate(chunk):
                    total[i] = picked[r, picked.shape[1] - num[i] :].sum()
    finally:
        model.train(was_training)
    mean = np.where(present, total / np.maximum(num, 1), np.nan)
    metrics = {
        "likelihood/mean": float(np.nanmean(total)) if present.any() else 0.0,
        "likelihood/mean_per_token": float(np.nanmean(mean)) if present.any() else 0.0,
        "likelihood/tokens_mean": float(num[present].mean()) if present.any() else 0.0,
        "likelihood/num_missing": float((~present).sum()),
        "likelihood/context_tokens_max": float(max((len(contexts[i]) for i in rows), default=0)),
    }
    return LikelihoodOutput(total, mean, num, present, metrics)


def likelihood_rewards(output: LikelihoodOutput, *, reduce: str = "sum") -> RewardOutput:
    """Rewards from a :class:`LikelihoodOutput`: ``reduce="sum"`` (log-likelihood) or ``"mean"``
    (per-token average); ``present`` False (reward 0) where there was no reference."""
    if reduce not in ("sum", "mean"):
        raise RangeError(f"reduce must be 'sum' or 'mean'; got {reduce!r}")
    values = output.log_likelihood if reduce == "sum" else output.mean_log_likelihood
    return RewardOutput(np.where(output.present, values, 0.0), dict(output.metrics), output.present)


# ------------------------------------------------------------------------------ registry adapter

_SCORERS: dict[tuple[str, str | None], Any] = {}


def _scorer(model: str, cache_dir: str | None):
    """Load a scoring model once per process (keyed by source and cache folder)."""
    key = (str(model), cache_dir)
    if key not in _SCORERS:
        from .pretrained import load_causal_lm

        _SCORERS[key] = load_causal_lm(model, cache_dir=cache_dir)
    return _SCORERS[key]


@register_method(
    "reference_likelihood",
    family="llm",
    kind="rewards",
    summary="log p(reference answer | prompt, response) under a scoring LM (sum or per-token mean), on each episode's last step",
    needs=("extras.prompt", "extras.response", "extras.reference"),
    source="VR-CLI (Gurung & Lapata 2025, arXiv 2503.22828); RLPR (Yu et al. 2025, arXiv 2506.18254)",
)
def run_reference_likelihood(
    episodes: Any,
    *,
    model: str = "smollm2",
    reduce: str = "sum",
    answer_prefix: str = "\nAnswer: ",
    chat_template: bool | None = None,
    batch_size: int = 8,
    cache_dir: str | None = None,
) -> RewardOutput:
    """Registry adapter: one text per episode in ``extras`` (``prompt``, ``response``, ``reference``,
    each ``[B]``; a None reference = no reward); the reward goes on the episode's last valid step.

    ``model`` is a model source of :func:`creditlab.llm.pretrained.load_causal_lm` (``"smollm2"``,
    a ``.gguf`` file or a transformers folder), loaded once per process.
    """
    if reduce not in ("sum", "mean"):
        raise RangeError(f"reduce must be 'sum' or 'mean'; got {reduce!r}")
    mask = np.asarray(episodes.mask.cpu() if hasattr(episodes.mask, "cpu") else episodes.mask, bool)
    b = mask.shape[0]
    texts = {}
    for key in ("prompt", "response", "reference"):
        col = np.asarray(episodes.extras[key], dtype=object)
        if col.shape != (b,):
            raise ShapeError(f"extras[{key!r}] has shape {col.shape}; expected one text per episode ({b},)")
        texts[key] = [None if v is None else str(v) for v in col.tolist()]
    lm = _scorer(model, cache_dir)
    out = reference_log_likelihood(
        lm.model,
        lm.tokenizer,
        texts["prompt"],
        [t or "" for t in texts["response"]],
        texts["reference"],
        answer_prefix=answer_prefix,
        chat_template=chat_template,
        batch_size=batch_size,
    )
    per_episode = likelihood_rewards(out, reduce=reduce)
    rewards = np.zeros(mask.shape)
    last = mask.sum(1) - 1
    rewards[np.arange(b), last] = per_episode.rewards
    present = mask & out.present[:, None]
    if getattr(episodes, "is_torch", False):  # the batch's array kind comes back
        import torch

        device = episodes.rewards.device
        return RewardOutput(
            torch.as_tensor(rewards, dtype=episodes.rewards.dtype, device=device),
            per_episode.metrics,
            torch.as_tensor(present, device=device),
        )
    return RewardOutput(rewards, per_episode.metrics, present)
