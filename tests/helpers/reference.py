"""Slow, obviously-correct reference implementations (Python loops) for property tests."""

from __future__ import annotations

import math

import numpy as np


def returns_loop(rewards, mask, discounts, bootstrap, gamma):
    b, t = rewards.shape
    out = np.zeros((b, t))
    for i in range(b):
        n = int(mask[i].sum())
        g = bootstrap[i]
        for j in reversed(range(n)):
            g = rewards[i, j] + gamma * discounts[i, j] * g
            out[i, j] = g
    return out


def gae_loop(rewards, values, mask, discounts, bootstrap, gamma, lam):
    b, t = rewards.shape
    out = np.zeros((b, t))
    for i in range(b):
        n = int(mask[i].sum())
        a = 0.0
        for j in reversed(range(n)):
            v_next = bootstrap[i] if j == n - 1 else values[i, j + 1]
            delta = rewards[i, j] + gamma * discounts[i, j] * v_next - values[i, j]
            a = delta + gamma * lam * discounts[i, j] * a
            out[i, j] = a
    return out


def _groups(group_ids, present):
    groups: dict = {}
    for i, g in enumerate(group_ids):
        if present[i]:
            groups.setdefault(g, []).append(i)
    return groups


def _std(xs, unbiased=True):
    n = len(xs)
    if n < 2:
        return 0.0
    m = sum(xs) / n
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1 if unbiased else n))


def grpo_loop(rewards, group_ids, present=None, std_scale="group", eps=1e-6):
    n = len(rewards)
    present = [True] * n if present is None else list(present)
    out = [0.0] * n
    all_present = [rewards[i] for i in range(n) if present[i]]
    batch_std = _std(all_present) if len(set(all_present)) > 1 else 0.0
    for members in _groups(group_ids, present).values():
        vals = [rewards[i] for i in members]
        if len(members) < 2 or max(vals) == min(vals):
            continue
        mean = sum(vals) / len(vals)
        s = {"group": _std(vals), "batch": batch_std, "none": None}[std_scale]
        for i in members:
            out[i] = (rewards[i] - mean) if s is None else (rewards[i] - mean) / (s + eps)
    return np.array(out)


def rloo_loop(rewards, group_ids, present=None):
    n = len(rewards)
    present = [True] * n if present is None else list(present)
    out = [0.0] * n
    for members in _groups(group_ids, present).values():
        if len(members) < 2:
            continue
        for i in members:
            others = [rewards[j] for j in members if j != i]
            out[i] = rewards[i] - sum(others) / len(others)
    return np.array(out)


def gdpo_loop(components, group_ids, weights, present=None, eps=1e-4):
    comps = np.asarray(components, dtype=float)
    n, k = comps.shape
    present = np.ones((n, k), bool) if present is None else np.asarray(present)
    summed = np.zeros(n)
    for j in range(k):
        col = grpo_loop(list(comps[:, j]), group_ids, present=list(present[:, j]), eps=eps)
        summed += weights[j] * col
    any_p = present.any(axis=1)
    x = summed[any_p]
    out = np.zeros(n)
    if len(x) >= 2 and x.max() != x.min():
        out[any_p] = (x - x.mean()) / (x.std(ddof=1) + eps)
    return out
