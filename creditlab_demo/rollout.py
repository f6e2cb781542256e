"""Batched multi-turn generation: the policy writes actions, the environment writes observations.

All B episodes advance in lockstep, one column at a time, through the policy's key/value
cache. A turn is ``env.action_len`` response columns (sampled from the grammar-constrained
distribution) followed by ``env.obs_len`` observation columns; an episode that has ended gets
padding columns (``valid`` False) until the longest episode ends, so padding only ever follows
an episode's last token and column ``j`` of a response token is predicted from column ``j-1``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from .policy import KVCache, TinyDecoder, masked_log_probs

__all__ = ["Rollout", "generate", "sequence_log_probs"]


class Rollout(NamedTuple):
    """A batch of multi-turn episodes in the padded token layout.

    Attributes:
        tokens: int[B, L] -- prompt, responses and observations; 0 (``<pad>``) on padding.
        valid: bool[B, L] -- False on padding columns.
        positions: int[B, L] -- position id of each column (index among the valid tokens).
        response_mask: bool[B, L] -- True on tokens the policy generated (the loss mask).
        slots: int[B, L] -- grammar slot of each response token, -1 elsewhere.
        turn_ids: int[B, L] -- turn index of each response token, -1 elsewhere.
        log_probs: float[B, L] -- behaviour-policy log-probability of each response token, 0 elsewhere.
        turn_mask: bool[B, T] -- valid turns (prefix).
        anchors: int[B, T] -- anchor state key at the start of each turn (GiGPO), -1 on padding.
        success: bool[B] -- outcome of each episode.
        num_turns: int[B] -- turns taken.
        beliefs: float[B, T+1] -- IGPO belief log p(answer | history after turn t) (column 0:
            prompt only), or None when not requested; 0 past an episode's end.
    """

    tokens: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor
    response_mask: torch.Tensor
    slots: torch.Tensor
    turn_ids: torch.Tensor
    log_probs: torch.Tensor
    turn_mask: torch.Tensor
    anchors: torch.Tensor
    success: torch.Tensor
    num_turns: torch.Tensor
    beliefs: torch.Tensor | None

    def select(self, index: torch.Tensor) -> Rollout:
        """The episodes ``index`` (a minibatch)."""
        return Rollout(*(None if x is None else x[index] for x in self))


@torch.no_grad()
def generate(
    policy: TinyDecoder,
    env: Any,
    tasks: dict[str, np.ndarray],
    *,
    generator: torch.Generator,
    greedy: bool = False,
    beliefs: bool = False,
) -> Rollout:
    """Roll out one episode per task with the policy, in lockstep.

    Args:
        policy: the decoder (evaluated under ``torch.no_grad``).
        env: a batch environment (:mod:`creditlab_demo.envs`).
        tasks: per-episode task arrays from ``env.sample_tasks`` (B rows).
        generator: torch RNG for sampling (its state advances).
        greedy: take the most likely allowed token instead of sampling.
        beliefs: also compute IGPO beliefs with ``env.belief_query`` (no gradient, behaviour policy).

    Returns:
        A :class:`Rollout`.
    """
    state, prompt = env.reset(tasks)
    b, p = prompt.shape
    t_max, a_len, o_len = env.max_turns, env.action_len, env.obs_len
    capacity = p + t_max * (a_len + o_len) + 8
    cache = KVCache(policy.config, b, capacity)
    slot_masks = torch.from_numpy(env.slot_masks)
    arg_slot = torch.from_numpy(env.arg_slot)
    count = torch.zeros(b, dtype=torch.int64)  # valid tokens so far, per episode

    cols: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("tokens", "valid", "positions", "resp", "slots", "turns", "lp")
    }

    def feed(tokens: torch.Tensor, valid: torch.Tensor, *, resp=None, slots=None, turn=-1, lp=None) -> torch.Tensor:
        """Append columns [B, n]; return the logits of the last one."""
        nonlocal count
        n = tokens.shape[1]
        offs = torch.cumsum(valid.long(), dim=1) - valid.long()
        pos = (count[:, None] + offs).clamp(max=policy.config.max_len - 1)
        logits = policy(tokens, valid, pos, cache)
        count = count + valid.long().sum(dim=1)
        zeros_b = torch.zeros(b, n, dtype=torch.bool)
        cols["tokens"].append(torch.where(valid, tokens, torch.zeros_like(tokens)))
        cols["valid"].append(valid)
        cols["positions"].append(torch.where(valid, pos, torch.zeros_like(pos)))
        cols["resp"].append(zeros_b if resp is None else resp)
        cols["slots"].append(torch.full((b, n), -1) if slots is None else slots)
        cols["turns"].append(torch.full((b, n), -1) if resp is None else torch.where(resp, turn, -1))
        cols["lp"].append(torch.zeros(b, n) if lp is None else lp)
        return logits[:, -1]

    query = None
    belief_cols = torch.zeros(b, t_max + 1)
    if beliefs:
        prefix, answer, answer_slot = env.belief_query(tasks)
        query = (torch.from_numpy(prefix), torch.from_numpy(answer), answer_slot)

    def belief(rows: torch.Tensor) -> torch.Tensor:
        """log p(answer | history, prefix) for every row (the hypothetical columns are not kept)."""
        prefix, answer, answer_slot = query
        n = prefix.shape[0]
        pos = (count[:, None] + torch.arange(n)).clamp(max=policy.config.max_len - 1)
        logits = policy(prefix.expand(b, n), torch.ones(b, n, dtype=torch.bool), pos, cache, commit=False)[:, -1]
        lp = masked_log_probs(logits, slot_masks[answer_slot].expand(b, -1))
        return torch.where(rows, lp.gather(1, answer[:, None])[:, 0], torch.zeros(b))

    def sample(logits: torch.Tensor, slot: torch.Tensor, live: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lp = masked_log_probs(logits, slot_masks[slot])
        if greedy:
            tok = lp.argmax(dim=-1)
        else:
            tok = torch.multinomial(lp.exp(), 1, generator=generator)[:, 0]
        chosen = lp.gather(1, tok[:, None])[:, 0]
        return torch.where(live, tok, torch.zeros_like(tok)), torch.where(live, chosen, torch.zeros_like(chosen))

    logits = feed(torch.from_numpy(prompt), torch.ones(b, p, dtype=torch.bool))
    done = torch.zeros(b, dtype=torch.bool)
    turn_mask = torch.zeros(b, t_max, dtype=torch.bool)
    anchors = torch.full((b, t_max), -1, dtype=torch.int64)
    num_turns = torch.zeros(b, dtype=torch.int64)
    for t in range(t_max):
        live = ~done
        turn_mask[:, t] = live
        num_turns += live.long()
        anchors[:, t] = torch.where(live, torch.from_numpy(env.anchors(state)), anchors[:, t])
        if query is not None:
            belief_cols[:, t] = torch.where(live, belief(live), belief_cols[:, t])
        slot = torch.where(live, env.first_slot(t), -1)
        actions = []
        for _ in range(a_len):
            tok, lp = sample(logits, slot.clamp(min=0), live)
            logits = feed(tok[:, None], live[:, None], resp=live[:, None], slots=slot[:, None], turn=t, lp=lp[:, None])
            actions.append(tok)
            slot = torch.where(live, arg_slot[tok], -1)
        result = env.step(state, torch.stack(actions, dim=1).numpy())
        done_now = torch.from_numpy(result.done) & live
        done = done | done_now
        if query is not None and bool(done_now.any()):
            belief_cols[:, t + 1] = torch.where(done_now, belief(done_now), belief_cols[:, t + 1])
        if bool(done.all()):
            break
        obs = torch.from_numpy(result.obs)
        logits = feed(obs, (~done)[:, None].expand(b, o_len))
    success = torch.from_numpy(state.success.copy())
    out = {k: torch.cat(v, dim=1) for k, v in cols.items()}
    return Rollout(
        tokens=out["tokens"],
        valid=out["valid"],
        positions=out["positions"],
        response_mask=out["resp"],
        slots=out["slots"],
        turn_ids=out["turns"],
        log_probs=out["lp"],
        turn_mask=turn_mask,
        anchors=anchors,
        success=success,
        num_turns=num_turns,
        beliefs=belief_cols if query is not None else None,
    )


def sequence_log_probs(
    policy: TinyDecoder, rollout: Rollout, slot_masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and entropies of the response tokens under ``policy`` (with gradient).

    Column ``j``'s token is scored by the logits of column ``j-1`` with its grammar slot's mask.

    Returns:
        ``(log_probs, entropy)``: float[B, L] each, 0 outside the response mask.
    """
    logits = policy(rollout.tokens, rollout.valid, rollout.positions)[:, :-1]
    resp = rollout.response_mask[:, 1:]
    slots = rollout.slots[:, 1:].clamp(min=0)
    lp_all = masked_log_probs(logits, slot_masks[slots])
    target = rollout.tokens[:, 1:]
    lp = lp_all.gather(2, target[..., None])[..., 0]
    p_all = lp_all.exp()
    ent = -(p_all * torch.where(p_all > 0, lp_all, torch.zeros_like(lp_all))).sum(-1)
    zero = torch.zeros((), dtype=lp.dtype)
    pad = torch.zeros(lp.shape[0], 1, dtype=lp.dtype)
    lp = torch.cat([pad, torch.where(resp, lp, zero)], dim=1)
    ent = torch.cat([pad, torch.where(resp, ent, zero)], dim=1)
    return lp, ent
