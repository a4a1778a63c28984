"""Compiled (numba) elementwise kernels of the integer layers on the CPU, one pass each where torch
takes one per operation: the digit split of an int8 digit product's input, the digit sums' combination
and the requantization with its activation (:mod:`cps_tiles.transforms.integer` states the arithmetic).

They compute in int64, where every value of the arithmetic is exact (``IntegerLinear.check`` bounds
them below 2^53), on every path (int8 or float-carried products alike), so they agree with the
numpy reference bit for bit.
They take and fill numpy arrays (views of torch tensors on the CPU: shared memory, no copies).

The format's constants come from :mod:`cps_tiles.transforms.arithmetic` (``spec``) and are frozen
into the compiled code, so divisions by them compile to multiplications. numba's cache follows
this file, not ``arithmetic.py``: those constants define released formats and never change.
"""

from __future__ import annotations

import numba
import numpy as np

from . import arithmetic as spec

# A layer's output before its requantization (``IntegerLinear.pending``) reaches a kernel as six
# arguments, ``acc, digits, offset, mult, shift, activation``, which ``_layer_row`` turns into the
# output: the kernels that read a layer's output requantize it as they read it, one pass over memory.

@numba.njit(inline="always")
def _accumulator(acc, digits, i, row):
    """Row ``i`` of an accumulator into ``row`` (int64 ``[O]``): of ``acc [N, O]`` (int32 or int64), or
    with ``digits`` of the products of an input's two digits ``[2N, O]`` (``acc[:N] << DIGIT_BITS + acc[N:]``)."""
    high = acc[i]
    if digits:
        low = acc[acc.shape[0] // 2 + i]
        for j in range(row.shape[0]):  # simple loops over views of rows: vectorized
            row[j] = (np.int64(high[j]) << spec.DIGIT_BITS) + low[j]
    else:
        for j in range(row.shape[0]):
            row[j] = high[j]


@numba.njit(inline="always")
def _requantized(row, offset, mult, shift, activation):
    """An accumulator's ``row`` (int64 ``[O]``, bias not yet added) -> the layer's output, in place:
    ``(a * mult + offset) >> shift`` with ``offset = bias * mult + 2^(shift-1)`` (int64 ``[O]``), then
    for a hidden layer (``activation``) the integer leaky ReLU and the clip to ``+-ACT``."""
    for j in range(row.shape[0]):
        v = (row[j] * mult[j] + offset[j]) >> shift
        if activation:
            v = max((v * spec.LEAKY_MUL) >> spec.LEAKY_SHIFT, -spec.ACT) if v < 0 else min(v, spec.ACT)
        row[j] = v


@numba.njit(inline="always")
def _layer_row(acc, digits, offset, mult, shift, activation, i, row):
    """Row ``i`` of a pending layer's output into ``row`` (int64 ``[O]``): ``_accumulator`` then ``_requantized``."""
    _accumulator(acc, digits, i, row)
    _requantized(row, offset, mult, shift, activation)


@numba.njit(inline="always")
def _own_low_digit(v):
    """Whether ``v`` goes into digit planes as its own low digit, its high digit zero (``_put``)."""
    return -spec.INT8_EXACT <= v <= spec.INT8_EXACT


@numba.njit(inline="always")
def _put(out, i, first, row):
    """``row`` (int64) into columns ``first ..`` of row ``i`` of a network input ``out``: ``[2, N, K]`` int8
    for its digits, else ``[1, N, K]`` in the dtype the network reads. The digits of ``x``: ``x >> DIGIT_BITS``
    and ``x & (2^DIGIT_BITS - 1)``, except that ``x`` within ``+-INT8_EXACT`` is its own low digit, its high one
    zero (so a column whose values all lie there adds nothing to the high digits' product, which may skip it:
    ``integer.Columns``). Either way ``x = 2^DIGIT_BITS high + low``."""
    n = row.shape[0]
    if out.shape[0] == 2:
        high, low = out[0, i, first : first + n], out[1, i, first : first + n]
        for j in range(n):
            v = row[j]
            small = _own_low_digit(v)
            high[j] = 0 if small else v >> spec.DIGIT_BITS
            low[j] = v if small else v & ((1 << spec.DIGIT_BITS) - 1)
    else:
        dst = out[0, i, first : first + n]
        for j in range(n):
            dst[j] = row[j]


@numba.njit(cache=True, nogil=True)
def nonzero_columns(x, out):
    """``out [K]`` (bool): whether each column of ``x [N, K]`` holds a nonzero."""
    out[:] = False
    for i in range(x.shape[0]):
        row = x[i]
        for j in range(out.shape[0]):
            out[j] |= row[j] != 0


@numba.njit(cache=True, nogil=True)
def swap_columns(x, a, b):
    """Swap columns ``a[j]`` and ``b[j]`` of ``x [., N, K]``, in place."""
    for p in range(x.shape[0]):
        for i in range(x.shape[1]):
            row = x[p, i]
            for j in range(a.shape[0]):
                row[a[j]], row[b[j]] = row[b[j]], row[a[j]]


@numba.njit(cache=True, nogil=True)
def split_digits(x, out):
    """A network's input ``x [N, K]`` (integers) -> its digits ``out [2, N, K]`` int8 (``_put``)."""
    row = np.empty(x.shape[1], np.int64)
    for i in range(x.shape[0]):
        _accumulator(x, False, i, row)
        _put(out, i, 0, row)


@numba.njit(cache=True, nogil=True)
def requantize(acc, digits, offset, mult, shift, activation, out):
    """A pending layer's output (``_layer_row``) -> ``out``: ``[1, N, O]``, or ``[2, N, O]`` int8 for its
    digits (as ``split_digits``)."""
    row = np.empty(out.shape[2], np.int64)
    for i in range(out.shape[1]):
        _layer_row(acc, digits, offset, mult, shift, activation, i, row)
        _put(out, i, 0, row)


# -- the hyper synthesis (IntegerEntropy.hyper) --------------------------------------------------

@numba.njit(cache=True, nogil=True)
def small_channels(x, group, out):
    """``out [C]`` (bool): whether every value of each channel of ``x [N, C*group]`` (columns (channel, group)) is
    its own low digit (``_own_low_digit``), so that the channel's high digits are all zero."""
    lo, hi = np.zeros(x.shape[1], np.int64), np.zeros(x.shape[1], np.int64)
    for i in range(x.shape[0]):
        row = x[i]
        for j in range(x.shape[1]):
            lo[j], hi[j] = min(lo[j], row[j]), max(hi[j], row[j])
    for c in range(out.shape[0]):
        cut = slice(c * group, (c + 1) * group)
        out[c] = _own_low_digit(lo[cut].min()) and _own_low_digit(hi[cut].max())


@numba.njit(cache=True, nogil=True)
def unfold_up(x, nb, a, b, h, w, order, out):
    """A 2x2/stride-2 transposed convolution's output over ``B x a x b`` cells, ``x [B*a*b, C*4]``
    (columns (channel, dy, dx)) -> its pixels ``out [B, h, w, C]``, cropped to ``h <= 2a``, ``w <= 2b``,
    the channels in ``order [C]``."""
    ch = out.shape[3]
    for bb in range(nb):
        for y in range(h):
            for xx in range(w):
                r, t = (bb * a + y // 2) * b + xx // 2, (y % 2) * 2 + xx % 2
                for c in range(ch):
                    out[bb, y, xx, c] = x[r, 4 * order[c] + t]


@numba.njit(cache=True, nogil=True)
def hyper_params(acc, digits, offset, mult, shift, activation, log_table, out):
    """The hyper synthesis' last layer, pending (``_layer_row``; means Q6, raw scales Q5 ``[N, 2M]``) ->
    ``out [2, N, M]``: means clipped to ``+-MEAN_MAX`` and log2 sigma Q8 ``log_table[clip(raw,
    +-RAW_MAX) + RAW_MAX]``."""
    n, m = out.shape[1], out.shape[2]
    row = np.empty(2 * m, np.int64)
    for i in range(n):
        _layer_row(acc, digits, offset, mult, shift, activation, i, row)
        mean, log = out[0, i], out[1, i]
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
    and the quality code ``[B, L]`` -> the first ``2M + L`` columns of ``out`` (``_put``: ``[., B*n, K]``): both
    as inputs, then the code."""
    _, nb, n, m = base.shape
    row = np.empty(2 * m + code.shape[1], np.int64)
    for b in range(nb):
        for c in range(n):
            mean, log = base[0, b, c], base[1, b, c]
            for j in range(m):
                row[j] = _input(mean[j])
                row[m + j] = _input(log[j])
            for j in range(code.shape[1]):
                row[2 * m + j] = code[b, j]
            _put(out, b * n + c, 0, row)


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
def slice_params(acc, digits, offset, mult, shift, activation, base, first, out):
    """A slice's mean and log2 sigma: the hyperprior's ``base [2, B, n, M]`` at channels ``first ..``
    corrected by the channel network's output, pending (``_layer_row``, ``[B*n, 2W]``) -> ``out [2, B, n, W]``."""
    _, nb, n, wd = out.shape
    d = np.empty(2 * wd, np.int64)
    for b in range(nb):
        for c in range(n):
            _layer_row(acc, digits, offset, mult, shift, activation, b * n + c, d)
            bm, bl = base[0, b, c, first : first + wd], base[1, b, c, first : first + wd]
            om, ol = out[0, b, c], out[1, b, c]
            for j in range(wd):
                om[j], ol[j] = _corrected(bm[j], bl[j], d[j], d[wd + j])


@numba.njit(cache=True, nogil=True)
def head_inputs(acc, rows, extra, offset, mult, shift, params, cells, code, flag, out):
    """A half's spatial heads' inputs: its convolution's output, from the accumulator ``acc [., H]`` at
    ``rows [B*P]`` plus ``extra [B*P, H]`` (none if empty) requantized as ``_layer_row`` (a hidden layer),
    then the slice's ``params [2, B, n, W]`` (``slice_params``) at ``cells [P]`` as inputs, the quality
    code ``[B, L]`` and the half's ``flag`` -> ``out`` (``_put``: ``[., B*P, H + 2W + L + 1]``)."""
    _, nb, _, wd = params.shape
    p, hd, lv = len(cells), acc.shape[1], code.shape[1]
    row = np.empty(out.shape[2], np.int64)
    hidden = row[:hd]
    for b in range(nb):
        for i in range(p):
            r, c = b * p + i, cells[i]
            _accumulator(acc, False, rows[r], hidden)
            if len(extra):
                more = extra[r]
                for j in range(hd):
                    hidden[j] += more[j]
            _requantized(hidden, offset, mult, shift, True)
            pm, pl = params[0, b, c], params[1, b, c]
            for j in range(wd):
                row[hd + j] = _input(pm[j])
                row[hd + wd + j] = _input(pl[j])
            for j in range(lv):
                row[hd + 2 * wd + j] = code[b, j]
            row[hd + 2 * wd + lv] = flag
            _put(out, r, 0, row)


@numba.njit(cache=True, nogil=True)
def symbol_params(acc, digits, offset, mult, shift, activation, params, cells, gain, log_gain, cls, mean3):
    """A half's symbol parameters from its heads' output, pending (``_layer_row``, ``[B*P, 2W]``: mean and
    log2 sigma corrections) and the slice's ``params [2, B, n, W]`` at ``cells [P]``, with the slice's gains
    ``gain`` (Q16) and ``log_gain`` (Q8) ``[B, W]`` -> ``cls``, ``mean3`` ``[B, W, P]``: the mean
    in y_hat units Q3, ``(m gain + 2^(s-1)) >> s`` (``s = GAIN_BITS + MEAN_BITS - MEAN_FRAC_BITS``), and
    the sigma class, ``clip((lg + log_gain - SIGMA_LOG0 + SIGMA_STEP // 2) // SIGMA_STEP, 0,
    SIGMA_CLASSES - 1)``, ``m``, ``lg`` corrected by the heads."""
    s = spec.GAIN_BITS + spec.MEAN_BITS - spec.MEAN_FRAC_BITS
    _, nb, _, wd = params.shape
    p = len(cells)
    dr = np.empty(2 * wd, np.int64)
    for b in range(nb):
        g, lgn = gain[b], log_gain[b]
        for i in range(p):
            r, c = b * p + i, cells[i]
            _layer_row(acc, digits, offset, mult, shift, activation, r, dr)
            pm, pl = params[0, b, c], params[1, b, c]
            for j in range(wd):
                m, lg = _corrected(pm[j], pl[j], dr[j], dr[wd + j])
                mean3[b, j, i] = (m * g[j] + (1 << (s - 1))) >> s
                cls[b, j, i] = min(max((lg + lgn[j] - spec.SIGMA_LOG0 + spec.SIGMA_STEP // 2) // spec.SIGMA_STEP, 0),
                                   spec.SIGMA_CLASSES - 1)


@numba.njit(inline="always")
def _unit(y, inv_gain, bits, bound):
    """y_hat / gain in Q``bits`` within ``+-bound``: ``clip((y inv_gain + 2^(s - 1)) >> s)``, ``s = GAIN_BITS - bits``."""
    shift = spec.GAIN_BITS - bits
    return min(max((y * inv_gain + (1 << (shift - 1))) >> shift, -bound), bound)


@numba.njit(cache=True, nogil=True)
def store_units(values, cells, inv_gain, u, first, conv_u, conv_bits, conv_bound):
    """A decoded half of a slice ``values [B, W*P]`` (y_hat, ordered (channel, cell)) at ``cells [P]`` as the
    inputs of the networks after it (``inv_gain`` ``[B, W]``, Q``GAIN_BITS``): the channel networks', in
    columns ``first ..`` of ``u`` (``_put``: ``[., B*n, K]``; ``_unit`` Q``U_BITS`` within ``ACT``), and the
    convolutions' ``conv_u [B, n, W]`` (Q``conv_bits`` within ``conv_bound``)."""
    nb, wd = inv_gain.shape
    n, p = conv_u.shape[1], len(cells)
    row = np.empty(wd, np.int64)
    for b in range(nb):
        ig, v = inv_gain[b], values[b]
        for i in range(p):
            c = cells[i]
            dst = conv_u[b, c]
            for j in range(wd):
                y = v[j * p + i]
                row[j] = _unit(y, ig[j], spec.U_BITS, spec.ACT)
                dst[j] = _unit(y, ig[j], conv_bits, conv_bound)
            _put(u, b * n + c, first, row)
