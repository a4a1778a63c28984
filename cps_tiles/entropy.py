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
import torch
from torch import nn
from torch.nn import functional as F

SCALE_MIN = 0.11
SCALE_MAX = 256.0
_SCALE_STEPS_PER_E = 32  # scale grid: 32 steps per factor e (3% apart)
_MEAN_STEPS = 64  # mean grid: 1/64 of a quantization bin
_LIKELIHOOD_MIN = 1e-9


def snap_scales(scales: np.ndarray) -> np.ndarray:
    """Scales (float64, quantized-domain units) -> the nearest point of a fixed log grid."""
    s = np.clip(np.nan_to_num(scales, nan=SCALE_MIN), SCALE_MIN, SCALE_MAX)
    idx = np.rint((np.log(s) - math.log(SCALE_MIN)) * _SCALE_STEPS_PER_E)
    return np.exp(math.log(SCALE_MIN) + idx / _SCALE_STEPS_PER_E)


def snap_means(means: np.ndarray) -> np.ndarray:
    """Means (float64) -> multiples of 1/64, finite and bounded."""
    m = np.clip(np.nan_to_num(means), -32768.0, 32767.0)
    return np.rint(m * _MEAN_STEPS) / _MEAN_STEPS


class FactorizedDensity(nn.Module):
    """Per-channel learned density for z (Ballé et al. 2018, appendix 6.1).

    ``forward(z [B,C,h,w]) -> (z_tilde, likelihoods)`` adds uniform noise in training.
    ``compress/decompress`` code integer z in ``[-support, support]`` with the per-channel
    probability table ``pmf_counts [C, 2*support+1]`` (int64, stored with the weights;
    refresh it with ``update_table()`` after training).
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), support: int = 32) -> None:
        super().__init__()
        self.channels = channels
        self.support = support
        dims = (1, *filters, 1)
        scale = 10.0 ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        self.register_buffer("pmf_counts", torch.ones(channels, 2 * support + 1, dtype=torch.int64))

    def _logits_cdf(self, v: torch.Tensor) -> torch.Tensor:
        """v: [C, 1, n] -> cumulative logits [C, 1, n]."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            v = torch.matmul(F.softplus(m).to(v.dtype), v) + b.to(v.dtype)
            if i < len(self.factors):
                v = v + torch.tanh(self.factors[i]).to(v.dtype) * torch.tanh(v)
        return v

    def _likelihood(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        v = z.transpose(0, 1).reshape(c, 1, -1)
        lower = self._logits_cdf(v - 0.5)
        upper = self._logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the tail with better precision
        lik = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return lik.reshape(c, b, h, w).transpose(0, 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_tilde = z + torch.empty_like(z).uniform_(-0.5, 0.5) if self.training else torch.round(z)
        return z_tilde, self._likelihood(z_tilde.float()).clamp_min(_LIKELIHOOD_MIN)

    @torch.no_grad()
    def update_table(self, precision: int = 1 << 16) -> None:
        """Recompute ``pmf_counts`` from the learned density (float64), each entry >= 1."""
        s = self.support
        grid = torch.arange(-s, s + 1, dtype=torch.float64).view(1, 1, -1).expand(self.channels, 1, -1)
        lower = self._logits_cdf(grid - 0.5)
        upper = self._logits_cdf(grid + 0.5)
        sign = -torch.sign(lower + upper)
        pmf = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs().squeeze(1)
        pmf = pmf / pmf.sum(dim=1, keepdim=True)
        self.pmf_counts.copy_(torch.clamp(torch.round(pmf * precision), min=1).to(torch.int64))

    def _model(self) -> constriction.stream.model.Categorical:
        return constriction.stream.model.Categorical(perfect=False)

    def _probabilities(self, n_per_channel: int) -> np.ndarray:
        table = self.pmf_counts.cpu().numpy().astype(np.float64)
        return np.repeat(table, n_per_channel, axis=0)

    def compress(self, z: np.ndarray) -> bytes:
        """Integer z ``[C, h, w]`` (clipped to the support by the caller) -> bytes."""
        c = z.shape[0]
        symbols = (z.reshape(c, -1).astype(np.int64) + self.support).astype(np.int32).ravel()
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols, self._model(), self._probabilities(symbols.size // c))
        return coder.get_compressed().tobytes()

    def decompress(self, data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """Bytes -> integer z ``[C, h, w]`` (int32). May raise on invalid data."""
        c, h, w = shape
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype=np.uint32).copy())
        symbols = coder.decode(self._model(), self._probabilities(h * w))
        return (symbols.astype(np.int32) - self.support).reshape(c, h, w)


def gaussian_likelihood(y: torch.Tensor, means: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Mass of the unit bin around ``y`` under N(means, scales), all ``[B,M,h,w]`` (training)."""
    scales = scales.clamp_min(SCALE_MIN)
    v = (y - means).abs()
    half = 2.0**-0.5
    lik = 0.5 * (torch.erfc(half * (v - 0.5) / scales) - torch.erfc(half * (v + 0.5) / scales))
    return lik.clamp_min(_LIKELIHOOD_MIN)


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
        flat = values.ravel()
        order, means, scales = [], [], []
        cells, m, s = next(parts)
        while True:
            order.append(cells)
            means.append(m)
            scales.append(s)
            try:
                cells, m, s = parts.send(flat[cells])
            except StopIteration:
                return flat[np.concatenate(order)], np.concatenate(means), np.concatenate(scales)

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
