"""The compiled GAE kernel (numba), used by :func:`creditlab._kernels.gae_scan` on CPU.

Imported only when numba is (inside ``_kernels._numba_kernels``). Its parts are module-level
functions: numba's disk cache keys a kernel by its code and its closure, and jitted functions
held in a closure change that key in every process (each process then compiled GAE again, 5-7 s).

GAE in three passes over blocks of rows of about ``_BLOCK`` steps (the float64 scratch stays in L1):
1. the one-step TD errors delta_t = r_t + gamma d_t V_{t+1} - V_t of the whole block in one flat
   loop, which vectorizes (wrong at each row's last valid step and on padding: fixed in 2., 3.);
2. per row, the last valid step's delta (discount last_discount[b] or discounts[b, t], next
   value bootstrap[b]) and the backward recurrence A_t = delta_t + gamma lambda d_t A_{t+1},
   two rows at a time: the recurrence is a chain of dependent multiply-adds, and two chains
   keep the core busy;
3. A and G = A + V cast to the output dtype, and float64 sums of A, A^2, G, G^2 over valid
   steps (vectorized: 'reassoc' lets those sums be split), over the whole block when it has
   no padding, else row by row with a select (0 on padding).
Every step is computed with the same operations as a plain loop over t, so the advantages
and returns are that loop's bit for bit; only the order of the sums differs. A NaN or inf in
a valid reward or value makes that step's A non-finite, so it reaches the sums.
Indices are unsigned (``_U``) in the loops: numba then emits no negative-index wraparound and the
loops vectorize. ``df`` (flat discounts) is an array or None; numba compiles the None case
separately and drops the branches that read it (a runtime flag instead cost 2x on short rows).
"""

from __future__ import annotations

import numba
import numpy as np

# 'contract' lets LLVM fuse a*b + c into one FMA and keeps IEEE NaN/inf semantics (see _kernels).
_njit = numba.njit(cache=True, nogil=True, fastmath={"contract"})
_inline = numba.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
_sums = numba.njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
_U = np.uint64
_BLOCK = 2048  # steps per block: the float64 scratch (16 kB) stays in L1


@_inline
def _deltas(rf, vf, df, lo, hi, gamma, scratch):
    # scratch[i] = delta at flat step lo + i, for lo + i in [lo, hi - 1) (V_{t+1} read across row ends)
    base = _U(lo)
    if df is None:
        for i in range(_U(0), _U(hi - lo - 1)):
            j = base + i
            scratch[i] = float(rf[j]) + gamma * float(vf[j + _U(1)]) - float(vf[j])
    else:
        for i in range(_U(0), _U(hi - lo - 1)):
            j = base + i
            scratch[i] = float(rf[j]) + gamma * float(df[j]) * float(vf[j + _U(1)]) - float(vf[j])


@_inline
def _last_delta(rf, vf, df, i, d_last, boot, gamma):
    # delta of the last valid step (flat index i): its discount and the bootstrap value
    d = d_last
    if df is not None:
        d = float(df[i])
    v = float(vf[i])
    return float(rf[i]) + gamma * d * boot - v


@_inline
def _scan_one(scratch, o, n, df, lo, gl):
    # A_t = delta_t + gl d_t A_{t+1} for t = n - 2 .. 0 of the row at scratch[o:], flat index lo
    uo = _U(o)
    ulo = _U(lo)
    acc = scratch[uo + _U(n - 1)]
    if df is None:
        for k in range(_U(1), _U(n)):
            t = _U(n) - k - _U(1)
            acc = scratch[uo + t] + gl * acc
            scratch[uo + t] = acc
    else:
        for k in range(_U(1), _U(n)):
            t = _U(n) - k - _U(1)
            acc = scratch[uo + t] + gl * float(df[ulo + t]) * acc
            scratch[uo + t] = acc


@_inline
def _scan_tail(scratch, o, n, lo, m, df, gl):
    # the steps n - 2 .. m - 1 of a row of n valid steps, one chain
    uo = _U(o)
    ulo = _U(lo)
    acc = scratch[uo + _U(n - 1)]
    for k in range(_U(1), _U(n - m + 1)):
        t = _U(n) - k - _U(1)
        if df is None:
            acc = scratch[uo + t] + gl * acc
        else:
            acc = scratch[uo + t] + gl * float(df[ulo + t]) * acc
        scratch[uo + t] = acc


@_inline
def _scan_two(scratch, o0, n0, lo0, o1, n1, lo1, df, gl):
    # _scan_one on two rows: the longer row's extra steps alone, then both rows interleaved
    # (two independent chains)
    m = min(n0, n1)
    if n0 > m:
        _scan_tail(scratch, o0, n0, lo0, m, df, gl)
    if n1 > m:
        _scan_tail(scratch, o1, n1, lo1, m, df, gl)
    uo0 = _U(o0)
    uo1 = _U(o1)
    ulo0 = _U(lo0)
    ulo1 = _U(lo1)
    a0 = scratch[uo0 + _U(m - 1)]
    a1 = scratch[uo1 + _U(m - 1)]
    if df is None:
        for k in range(_U(1), _U(m)):  # t = m - 2 .. 0
            t = _U(m) - k - _U(1)
            a0 = scratch[uo0 + t] + gl * a0
            a1 = scratch[uo1 + t] + gl * a1
            scratch[uo0 + t] = a0
            scratch[uo1 + t] = a1
    else:
        for k in range(_U(1), _U(m)):
            t = _U(m) - k - _U(1)
            a0 = scratch[uo0 + t] + gl * float(df[ulo0 + t]) * a0
            a1 = scratch[uo1 + t] + gl * float(df[ulo1 + t]) * a1
            scratch[uo0 + t] = a0
            scratch[uo1 + t] = a1


@_sums
def _emit(scratch, vf, lo, n, af, gf, tot):
    # af/gf[lo + i] = A, A + V for i < n (scratch[i] = A), and the sums of A, A^2, G, G^2
    s_a = 0.0
    s_a2 = 0.0
    s_g = 0.0
    s_g2 = 0.0
    ulo = _U(lo)
    for i in range(_U(0), _U(n)):
        a = scratch[i]
        g = a + float(vf[ulo + i])
        af[ulo + i] = a
        gf[ulo + i] = g
        s_a += a
        s_a2 += a * a
        s_g += g
        s_g2 += g * g
    tot[0] += s_a
    tot[1] += s_a2
    tot[2] += s_g
    tot[3] += s_g2


@_sums
def _emit_rows(scratch, vf, lengths, b0, b1, n_cols, af, gf, tot):
    # _emit for rows b0 .. b1 - 1 with padding: whole rows with a select (no branch on the
    # row's length), 0 on padding
    s_a = 0.0
    s_a2 = 0.0
    s_g = 0.0
    s_g2 = 0.0
    for b in range(b0, b1):
        n = _U(lengths[b])
        uo = _U((b - b0) * n_cols)
        ulo = _U(b * n_cols)
        for t in range(_U(0), _U(n_cols)):
            valid = t < n
            a = scratch[uo + t] if valid else 0.0
            g = a + float(vf[ulo + t]) if valid else 0.0
            af[ulo + t] = a
            gf[ulo + t] = g
            s_a += a
            s_a2 += a * a
            s_g += g
            s_g2 += g * g
    tot[0] += s_a
    tot[1] += s_a2
    tot[2] += s_g
    tot[3] += s_g2


@_njit
def gae(rewards, values, discounts, last_discount, lengths, bootstrap, gamma, lam):
    # discounts: float[B * T] (flat) or None (1 on every step but the last, last_discount[b]).
    # tot: float64 sums over valid steps of A, A^2, G = A + V and G^2.
    n_rows, n_cols = rewards.shape
    adv = np.empty_like(rewards)
    ret = np.empty_like(rewards)
    tot = np.zeros(4)
    if n_rows == 0 or n_cols == 0:
        return adv, ret, tot
    rf = rewards.reshape(-1)
    vf = values.reshape(-1)
    af = adv.reshape(-1)
    gf = ret.reshape(-1)
    gl = gamma * lam
    rows = max(2, _BLOCK // n_cols)
    scratch = np.empty(rows * n_cols)
    for b0 in range(0, n_rows, rows):
        b1 = min(b0 + rows, n_rows)
        _deltas(rf, vf, discounts, b0 * n_cols, b1 * n_cols, gamma, scratch)
        full = True
        for b in range(b0, b1):
            n = lengths[b]
            full &= n == n_cols
            if n > 0:
                i = b * n_cols + n - 1
                delta = _last_delta(rf, vf, discounts, i, float(last_discount[b]), float(bootstrap[b]), gamma)
                scratch[(b - b0) * n_cols + n - 1] = delta
        b = b0
        while b < b1:
            n0 = lengths[b]
            o0 = (b - b0) * n_cols
            if b + 1 < b1 and n0 > 0 and lengths[b + 1] > 0:
                _scan_two(scratch, o0, n0, b * n_cols, o0 + n_cols, lengths[b + 1], (b + 1) * n_cols, discounts, gl)
                b += 2
            else:
                if n0 > 0:
                    _scan_one(scratch, o0, n0, discounts, b * n_cols, gl)
                b += 1
        if full:
            _emit(scratch, vf, b0 * n_cols, (b1 - b0) * n_cols, af, gf, tot)
        else:
            _emit_rows(scratch, vf, lengths, b0, b1, n_cols, af, gf, tot)
    return adv, ret, tot
