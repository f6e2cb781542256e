"""Compiled optimal token baseline (:func:`creditlab.advantage.optimal_token_baseline`) for CPU.

Two passes over the tokens: per row, the reward-to-go ``G`` and the cumulative variance proxy
``W`` (plus input checks); per (group, position), the sums of ``G W`` and ``W``, the count and
the min/max of ``G``; then each token's advantage. The torch path in ``baselines.py`` does the
same with whole-tensor operations (any device); both are tested against verl.
"""

from __future__ import annotations

import os

import numpy as np

_NUMBA = None


def kernels():
    """The compiled function, or None (numba missing or disabled)."""
    global _NUMBA
    if _NUMBA is not None:
        return _NUMBA or None
    if os.environ.get("CREDITLAB_DISABLE_NUMBA") or os.environ.get("CREDITLAB_KERNELS") == "torch":
        _NUMBA = False
        return None
    try:
        import numba
    except ImportError:  # pragma: no cover
        _NUMBA = False
        return None

    @numba.njit(cache=True, nogil=True)
    def otb(r, m, lp, sp, rho, use_rho, groups, num_groups, policy_token, zero_tail, eps, adv, ret):
        b, n = r.shape
        counts = np.zeros(b, np.int64)
        # pass 1: checks, returns, the width of the position grid
        err = 0
        err_i = -1
        err_j = -1
        for i in range(b):
            acc = 0.0
            c = 0
            for j in range(n - 1, -1, -1):
                if m[i, j]:
                    x = float(r[i, j])
                    acc += x
                    c += 1
                    lpv = float(lp[i, j])
                    spv = float(sp[i, j])
                    if err == 0:
                        if not (np.isfinite(x) and np.isfinite(lpv) and np.isfinite(spv)):
                            err = 1
                        elif lpv > 1e-6:
                            err = 2
                        elif spv < 0.0 or spv > 1.0 + 1e-6:
                            err = 3
                        elif use_rho and not np.isfinite(float(rho[i, j])):
                            err = 4
                        if err != 0:
                            err_i = i
                            err_j = j
                ret[i, j] = acc
            counts[i] = c
        if err != 0:
            return err, err_i, err_j, np.zeros(5)
        width = n
        if policy_token:
            width = 1
            for i in range(b):
                width = max(width, counts[i])
        slots = num_groups + 1
        num = np.zeros((slots, width))
        den = np.zeros((slots, width))
        cnt = np.zeros((slots, width), np.int64)
        gmin = np.full((slots, width), np.inf)
        gmax = np.full((slots, width), -np.inf)
        size = np.zeros(slots, np.int64)
        top = np.full(slots, -1, np.int64)
        n_top = np.zeros(slots, np.int64)
        second = np.full(slots, -1, np.int64)
        for i in range(b):
            g = groups[i] if counts[i] > 0 else num_groups
            size[g] += counts[i] > 0
            w_cum = 0.0
            k = 0
            for j in range(n):
                if m[i, j]:
                    w = 1.0 - 2.0 * np.exp(float(lp[i, j])) + float(sp[i, j])
                    if use_rho:
                        q = float(rho[i, j])
                        w *= q * q
                    w_cum += w
                    p = k if policy_token else j
                    gv = ret[i, j]
                    num[g, p] += gv * w_cum
                    den[g, p] += w_cum
                    cnt[g, p] += 1
                    if gv < gmin[g, p]:
                        gmin[g, p] = gv
                    if gv > gmax[g, p]:
                        gmax[g, p] = gv
                    k += 1
        # longest rows (zero tail): unique maximum and the runner-up per group
        for i in range(b):
            if counts[i] > 0:
                g = groups[i]
                if counts[i] > top[g]:
                    top[g] = counts[i]
        for i in range(b):
            if counts[i] > 0:
                g = groups[i]
                if counts[i] == top[g]:
                    n_top[g] += 1
                elif counts[i] > second[g]:
                    second[g] = counts[i]
        # pass 2: advantages
        s = np.zeros(5)  # sum w (recomputed below as the mean proxy), sum A, sum A^2, sum G, tokens
        for i in range(b):
            g = groups[i] if counts[i] > 0 else num_groups
            tail_row = zero_tail and counts[i] > 0 and size[g] > 1 and counts[i] == top[g] and n_top[g] == 1
            k = 0
            w_cum = 0.0
            for j in range(n):
                if m[i, j]:
                    p = k if policy_token else j
                    gv = ret[i, j]
                    if size[g] <= 1:
                        a = 0.0
                    elif tail_row and p >= second[g]:
                        a = gv
                    elif cnt[g, p] >= 2 and gmin[g, p] == gmax[g, p]:
                        a = 0.0
                    else:
                        a = gv - num[g, p] / (den[g, p] + eps)
                    adv[i, j] = a
                    w = 1.0 - 2.0 * np.exp(float(lp[i, j])) + float(sp[i, j])
                    if use_rho:
                        q = float(rho[i, j])
                        w *= q * q
                    s[0] += w
                    s[1] += a
                    s[2] += a * a
                    s[3] += gv
                    s[4] += 1.0
                    k += 1
                else:
                    adv[i, j] = 0.0
        return 0, -1, -1, s

    _NUMBA = otb
    return _NUMBA
