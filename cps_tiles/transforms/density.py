"""Learned densities of the latents: a factorized density for z and the Gaussian likelihood of y.

Both have the training face (``forward`` / ``gaussian_likelihood``: noisy values and their
likelihoods, rate = -log2 of them). The z density also codes: ``compress`` / ``decompress`` with
its integer probability table ``pmf_counts``, stored with the weights (never recomputed on the
decoding machine). The y coder, with its snapped parameters, is :mod:`cps_tiles.coding.entropy`.
"""

from __future__ import annotations

import math

import constriction
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: Smallest Gaussian scale, in quantized-domain units: training clamps to it and the coder's scale
#: grid starts at it, so both see the same distributions.
SCALE_MIN = 0.11
_LIKELIHOOD_MIN = 1e-9


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
