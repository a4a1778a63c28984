"""Entropy stages: a factorized density for the hyper-latent z and a Gaussian conditional for y.

Each stage has the same three faces (as CompressAI's latent codecs do):

* ``forward``: training; returns the noisy value and its likelihoods (rate = -log2 of them);
* ``compress``: integer symbols -> bytes (constriction ANS coder);
* ``decompress``: bytes -> integer symbols.

Bit-exactness: the coder must see *identical* model parameters on both sides. The z table is
stored in the weights as integer counts (never recomputed on the decoding machine) and the
Gaussian means/scales are snapped to fixed grids in float64 (``snap_means``/``snap_scales``),
so a last-bit difference in the float path cannot change the coded distribution unless it
straddles a grid boundary.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import constriction
import numpy as np

from ..transforms.density import SCALE_MIN

SCALE_MAX = 256.0
_SCALE_STEPS_PER_E = 32  # scale grid: 32 steps per factor e (3% apart)
_MEAN_STEPS = 64  # mean grid: 1/64 of a quantization bin


def snap_scales(scales: np.ndarray) -> np.ndarray:
    """Scales (float64, quantized-domain units) -> the nearest point of a fixed log grid."""
    s = np.clip(np.nan_to_num(scales, nan=SCALE_MIN), SCALE_MIN, SCALE_MAX)
    idx = np.rint((np.log(s) - math.log(SCALE_MIN)) * _SCALE_STEPS_PER_E)
    return np.exp(math.log(SCALE_MIN) + idx / _SCALE_STEPS_PER_E)


def snap_means(means: np.ndarray) -> np.ndarray:
    """Means (float64) -> multiples of 1/64, finite and bounded."""
    m = np.clip(np.nan_to_num(means), -32768.0, 32767.0)
    return np.rint(m * _MEAN_STEPS) / _MEAN_STEPS


def run_parts(parts: Generator[tuple, np.ndarray, None], values: np.ndarray) -> list[tuple]:
    """Encoder side of the parts protocol: drive a generator that yields ``(cells, *parameters)``
    and is sent each part's values back, over the known ``values`` -> ``(values[cells],
    *parameters)`` per part, in coding order (the Gaussian and the table coder both use it)."""
    flat = values.ravel()
    out = []
    cells, *params = next(parts)
    while True:
        cells = np.asarray(cells)
        out.append((flat[cells], *params))
        try:
            cells, *params = parts.send(flat[cells])
        except StopIteration:
            return out


class GaussianConditional:
    """Mean-scale Gaussian coding of integer y over ``[lo, hi]`` with snapped parameters.

    The parameters may come in parts (an entropy context's slices or checkerboard halves, each
    depending on the values of the parts before it): ``parts`` is a generator that yields
    ``(cells, means, scales)`` for the next part, ``cells`` the flat indices of its elements in
    ``y_hat.ravel()`` and the other two their parameters (1-D, same order), and is sent that part's
    values back. One ANS stream holds all parts, in order.
    """

    @staticmethod
    def feed(parts: Generator[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, None],
             values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Encoder side: run ``parts`` over the known ``values`` -> (symbols, means, scales) in coding order."""
        return tuple(np.concatenate(column) for column in zip(*run_parts(parts, values)))

    @staticmethod
    def compress(symbols: np.ndarray, means: np.ndarray, scales: np.ndarray, lo: int, hi: int) -> bytes:
        """Integer ``symbols`` with their parameters (all 1-D, coding order) -> bytes."""
        coder = constriction.stream.stack.AnsCoder()
        model = constriction.stream.model.QuantizedGaussian(lo, hi)
        coder.encode_reverse(symbols.astype(np.int32), model, means, scales)
        return coder.get_compressed().tobytes()

    @staticmethod
    def decompress(data: bytes, parts: Generator[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, None],
                   lo: int, hi: int, size: int) -> np.ndarray:
        """Bytes -> the ``size`` integers of ``y_hat.ravel()``, part after part (``parts`` as in the
        class docstring; together they cover every element)."""
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype=np.uint32).copy())
        model = constriction.stream.model.QuantizedGaussian(lo, hi)
        out = np.zeros(size, dtype=np.int32)
        cells, means, scales = next(parts)
        while True:
            out[cells] = values = coder.decode(model, means, scales)
            try:
                cells, means, scales = parts.send(values.astype(np.float64))
            except StopIteration:
                return out
