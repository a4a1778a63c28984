"""Compiled (numba) elementwise kernels of the integer layers on the CPU, one pass each where torch
takes one per operation: the digit split of an int8 digit product's input, the digit sums' combination
and the requantization with its activation (:mod:`cps_tiles.transforms.integer` states the arithmetic).

They compute in int64, where every value of the arithmetic is exact (``IntegerLinear.check`` bounds
them below 2^53), so they agree with the float-carried path and the numpy reference bit for bit.
They take and fill numpy arrays (views of torch tensors on the CPU: shared memory, no copies).

The format's constants come from :mod:`cps_tiles.transforms.arithmetic` (``spec``) and are frozen
into the compiled code, so divisions by them compile to multiplications. numba's cache follows
this file, not ``arithmetic.py``: those constants define released formats and never change.
"""

from __future__ import annotations

import numba
import numpy as np

from . import arithmetic as spec


@numba.njit(cache=True, nogil=True)
def split_digits(x, out):
    """``x [N, K]`` (integers) -> ``out [2, N, K]`` int8: its digits ``x >> DIGIT_BITS`` and ``x & (2^DIGIT_BITS - 1)``."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = np.int64(x[i, j])
            out[0, i, j] = v >> spec.DIGIT_BITS
            out[1, i, j] = v & ((1 << spec.DIGIT_BITS) - 1)


@numba.njit(cache=True, nogil=True)
def add_digit_sums(both, into):
    """The products of an input's two digits, ``both [2N, O]`` (int32, the high digits' first: ``split_digits``),
    added to ``into [N, O]`` (int32): ``into += both[:N] << DIGIT_BITS + both[N:]``."""
    n = into.shape[0]
    for i in range(n):
        high, low, row = both[i], both[n + i], into[i]
        for j in range(row.shape[0]):
            row[j] += (high[j] << spec.DIGIT_BITS) + low[j]


@numba.njit(cache=True, nogil=True)
def requantize(acc, digits, offset, mult, shift, activation, out):
    """Accumulator -> a layer's output: ``(acc * mult + offset) >> shift`` with ``offset = bias * mult +
    2^(shift-1)`` (int64 ``[O]``), then for a hidden layer the integer leaky ReLU and the clip to ``+-ACT``.
    ``acc`` is int32 ``[N, O]``, or with ``digits`` the products of an input's two digits ``[2N, O]``
    (``acc[:N] << DIGIT_BITS + acc[N:]``). ``out`` is ``[1, N, O]``, or ``[2, N, O]`` int8 for the
    output's digits (as ``split_digits``)."""
    n, o = out.shape[1], out.shape[2]
    row = np.empty(o, np.int64)
    for i in range(n):  # simple loops over views of rows: vectorized
        high, low = acc[i], acc[n + i if digits else i]
        if digits:
            for j in range(o):
                row[j] = (np.int64(high[j]) << spec.DIGIT_BITS) + low[j]
        else:
            for j in range(o):
                row[j] = high[j]
        for j in range(o):
            v = (row[j] * mult[j] + offset[j]) >> shift
            if activation:
                v = max((v * spec.LEAKY_MUL) >> spec.LEAKY_SHIFT, -spec.ACT) if v < 0 else min(v, spec.ACT)
            row[j] = v
        if out.shape[0] == 2:
            first, second = out[0, i], out[1, i]
            for j in range(o):
                first[j] = row[j] >> spec.DIGIT_BITS
                second[j] = row[j] & ((1 << spec.DIGIT_BITS) - 1)
        else:
            first = out[0, i]
            for j in range(o):
                first[j] = row[j]


# -- the hyper synthesis (IntegerEntropy.hyper) --------------------------------------------------

@numba.njit(cache=True, nogil=True)
def unfold_up(x, nb, a, b, h, w, out):
    """A 2x2/stride-2 transposed convolution's output over ``B x a x b`` cells, ``x [B*a*b, C*4]``
    (columns (channel, dy, dx)) -> its pixels ``out [B, h, w, C]``, cropped to ``h <= 2a``, ``w <= 2b``."""
    ch = out.shape[3]
    for bb in range(nb):
        for y in range(h):
            for xx in range(w):
                r, t = (bb * a + y // 2) * b + xx // 2, (y % 2) * 2 + xx % 2
                for c in range(ch):
                    out[bb, y, xx, c] = x[r, 4 * c + t]


@numba.njit(cache=True, nogil=True)
def hyper_params(raw, log_table, out):
    """The hyper synthesis' last layer ``raw [N, 2M]`` (int64: means Q6, raw scales Q5) -> ``out [2, N, M]``:
    means clipped to ``+-MEAN_MAX`` and log2 sigma Q8 ``log_table[clip(raw, +-RAW_MAX) + RAW_MAX]``."""
    n, m = out.shape[1], out.shape[2]
    for i in range(n):
        row, mean, log = raw[i], out[0, i], out[1, i]
        for j in range(m):
            mean[j] = min(max(row[j], -spec.MEAN_MAX), spec.MEAN_MAX)
            log[j] = log_table[min(max(row[m + j], -spec.RAW_MAX), spec.RAW_MAX) + spec.RAW_MAX]


# -- the glue of a coding part (IntegerEntropy._parts): rows are (chunk, cell) ----------------------

@numba.njit(inline="always")
def _input(x):
    """A mean Q6 or log2 sigma Q8 -> a network input (Q4, Q6, within ACT)."""
    return min(max(x >> spec.INPUT_SHIFT, -spec.ACT), spec.ACT)


@numba.njit(cache=True, nogil=True)
def channel_inputs(base, code, out):
    """The channel networks' shared inputs: the hyperprior's ``base`` int64 ``[2, B, n, M]`` (``hyper_params``)
    and the quality code ``[B, L]`` -> ``out [B, n, 2M + L]``: both as inputs, then the code."""
    _, nb, n, m = base.shape
    for b in range(nb):
        for c in range(n):
            for j in range(m):
                out[b, c, j] = _input(base[0, b, c, j])
                out[b, c, m + j] = _input(base[1, b, c, j])
            for j in range(code.shape[1]):
                out[b, c, 2 * m + j] = code[b, j]


@numba.njit(cache=True, nogil=True)
def patches(x, h, w, pad, cells, taps, out):
    """Zero-padded neighbourhoods of ``cells [P]`` (flat indices) of ``x [B, h*w, C]`` at ``taps`` (``dy
    (2 pad + 1) + dx``) -> ``out [B*P, len(taps) * C]``, columns ordered (tap, channel)."""
    nb, _, ch = x.shape
    k = 2 * pad + 1
    for b in range(nb):
        for i in range(len(cells)):
            r, y0, x0 = b * len(cells) + i, cells[i] // w - pad, cells[i] % w - pad
            row = out[r]
            for q in range(len(taps)):
                yy, xx = y0 + taps[q] // k, x0 + taps[q] % k
                col = row[q * ch : (q + 1) * ch]
                if 0 <= yy < h and 0 <= xx < w:
                    src = x[b, yy * w + xx]
                    for j in range(ch):
                        col[j] = src[j]
                else:
                    col[:] = 0


@numba.njit(inline="always")
def _corrected(m, lg, dm, dlg):
    """A mean Q6 and log2 sigma Q8 plus a network's corrections, each clipped to its range."""
    return min(max(m + dm, -spec.MEAN_MAX), spec.MEAN_MAX), min(max(lg + dlg, spec.LOG_MIN), spec.LOG_MAX)


# The loops below index rows taken as views: numba then knows their indices in range and vectorizes.

@numba.njit(cache=True, nogil=True)
def slice_params(base, d, first, out):
    """A slice's mean and log2 sigma: the hyperprior's ``base [2, B, n, M]`` at channels ``first ..``
    corrected by the channel network's ``d [B, n, 2W]`` -> ``out [2, B, n, W]`` (int64)."""
    _, nb, n, wd = out.shape
    for b in range(nb):
        for c in range(n):
            bm, bl, dr = base[0, b, c, first : first + wd], base[1, b, c, first : first + wd], d[b, c]
            om, ol = out[0, b, c], out[1, b, c]
            for j in range(wd):
                om[j], ol[j] = _corrected(bm[j], bl[j], dr[j], dr[wd + j])


@numba.njit(cache=True, nogil=True)
def head_inputs(hidden, params, cells, code, flag, out):
    """A half's spatial heads' inputs: ``hidden [B*P, H]`` (the convolution's output), the slice's
    ``params [2, B, n, W]`` (``slice_params``) at ``cells [P]`` as inputs, the quality code ``[B, L]``
    and the half's ``flag`` -> ``out [B*P, H + 2W + L + 1]``."""
    _, nb, _, wd = params.shape
    p, hd, lv = len(cells), hidden.shape[1], code.shape[1]
    for b in range(nb):
        for i in range(p):
            r, c = b * p + i, cells[i]
            row, hr, pm, pl = out[r], hidden[r], params[0, b, c], params[1, b, c]
            for j in range(hd):
                row[j] = hr[j]
            for j in range(wd):
                row[hd + j] = _input(pm[j])
                row[hd + wd + j] = _input(pl[j])
            for j in range(lv):
                row[hd + 2 * wd + j] = code[b, j]
            row[hd + 2 * wd + lv] = flag


@numba.njit(cache=True, nogil=True)
def symbol_params(dh, params, cells, gain, log_gain, cls, mean3):
    """A half's symbol parameters from its heads' output ``dh [B*P, 2W]`` (int64: mean and log2 sigma
    corrections) and the slice's ``params [2, B, n, W]`` at ``cells [P]``, with the slice's gains
    ``gain`` (Q16) and ``log_gain`` (Q8) ``[B, W]`` -> ``cls``, ``mean3`` int64 ``[B, W, P]``: the mean
    in y_hat units Q3, ``(m gain + 2^(s-1)) >> s`` (``s = GAIN_BITS + MEAN_BITS - MEAN_FRAC_BITS``), and
    the sigma class, ``clip((lg + log_gain - SIGMA_LOG0 + SIGMA_STEP // 2) // SIGMA_STEP, 0,
    SIGMA_CLASSES - 1)``, ``m``, ``lg`` corrected by ``dh``."""
    s = spec.GAIN_BITS + spec.MEAN_BITS - spec.MEAN_FRAC_BITS
    _, nb, _, wd = params.shape
    p = len(cells)
    for b in range(nb):
        g, lgn = gain[b], log_gain[b]
        for i in range(p):
            r, c = b * p + i, cells[i]
            pm, pl, dr = params[0, b, c], params[1, b, c], dh[r]
            for j in range(wd):
                m, lg = _corrected(pm[j], pl[j], dr[j], dr[wd + j])
                mean3[b, j, i] = (m * g[j] + (1 << (s - 1))) >> s
                cls[b, j, i] = min(max((lg + lgn[j] - spec.SIGMA_LOG0 + spec.SIGMA_STEP // 2) // spec.SIGMA_STEP, 0),
                                   spec.SIGMA_CLASSES - 1)


@numba.njit(cache=True, nogil=True)
def store_units(values, cells, inv_gain, bits, bound, out):
    """A decoded half ``values [B, W*P]`` (y_hat, ordered (channel, cell)) -> ``out[b, cells[i], j]``
    (``out [B, n, W]``): y_hat / gain in Q``bits`` within ``+-bound``, ``clip((y inv_gain +
    2^(s - 1)) >> s)``, ``s = GAIN_BITS - bits`` (``inv_gain`` ``[B, W]``, Q``GAIN_BITS``)."""
    nb, wd = inv_gain.shape
    p = len(cells)
    shift = spec.GAIN_BITS - bits
    for b in range(nb):
        for j in range(wd):
            for i in range(p):
                v = (values[b, j * p + i] * inv_gain[b, j] + (1 << (shift - 1))) >> shift
                out[b, cells[i], j] = min(max(v, -bound), bound)
