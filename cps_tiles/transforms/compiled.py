"""Compiled (numba) elementwise kernels of the integer layers on the CPU, one pass each where torch
takes one per operation: the digit split of an int8 digit product's input, the digit sums' combination
and the requantization with its activation (:mod:`cps_tiles.transforms.integer` states the arithmetic).

They compute in int64, where every value of the arithmetic is exact (``IntegerLinear.check`` bounds
them below 2^53), so they agree with the float-carried path and the numpy reference bit for bit.
They take and fill numpy views of torch tensors (shared memory, no copies).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def split_digits(x, bits, out):
    """``x [N, K]`` (integers) -> ``out [2, N, K]`` int8: ``x >> bits`` and ``x & (2^bits - 1)``."""
    low = (1 << bits) - 1
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = np.int64(x[i, j])
            out[0, i, j] = v >> bits
            out[1, i, j] = v & low


@numba.njit(cache=True, nogil=True)
def requantize(acc, offset, mult, shift, activation, act, leaky_mul, leaky_shift, out):
    """Accumulator ``acc [N, O]`` (int32) -> a layer's output ``out [N, O]``: ``(acc * mult + offset) >>
    shift`` with ``offset = bias * mult + 2^(shift-1)`` (int64 ``[O]``), then for a hidden layer the
    integer leaky ReLU and the clip to ``+-act``."""
    n, o = out.shape
    for i in range(n):
        for j in range(o):
            v = (np.int64(acc[i, j]) * mult[j] + offset[j]) >> shift
            if activation:
                if v < 0:
                    v = max((v * leaky_mul) >> leaky_shift, -act)
                elif v > act:
                    v = act
            out[i, j] = v
