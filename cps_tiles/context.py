"""Channel-conditional entropy context: better Gaussian parameters for y from already-decoded channels.

The M latent channels are coded in ``S`` slices of ``M / S`` channels (Minnen & Singh 2020, without
their latent residual prediction). Slice ``k``'s means and scales are the hyperprior's, corrected
by a small network that also sees the slices decoded before it and the quality level::

    z_hat -> h_s -> (means, scales) of all M channels ---------+----------+---- ... ----+
                                                               |          |             |
                                  level code [8] ------------ net_0      net_1   ...   net_S-1
                                                               |          |             |
                                  y_hat slice 0 <- decode <- params_0     |             |
                                       +------------------------------->  |             |
                                  y_hat slice 1 <- decode <- params_1 <---+             |
                                       ...                                              |
                                  y_hat slice S-1 <- decode <- params_S-1 <-------------+

Every network is a stack of 1x1 convolutions, so a cell's parameters depend on that cell alone:
a storage chunk codes to the same bits wherever it sits, chunks stay self-contained, and the
decoded latent (hence the image) is exactly what it is without the context: only the rate changes.
All tensors are ``[B, C, h, w]`` in latent cells, values in unit-gain latent units (``y_hat / gain``;
the coder multiplies means and scales by the gain).
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelContext(nn.Module):
    """``S`` parameter networks; ``forward`` runs them all (encoder, training), ``slice_params``
    one at a time (decoder). A fresh module leaves the hyperprior's parameters unchanged (zero-initialised
    last layers), so it can be trained on top of a released codec without first making it worse."""

    def __init__(self, channels: int, slices: int, hidden: int, levels: int) -> None:
        super().__init__()
        if slices < 1 or channels % slices:
            raise ValueError(f"{channels} latent channels do not split into {slices} slices")
        self.slices, self.width = slices, channels // slices
        self.nets = nn.ModuleList()
        for k in range(slices):
            net = nn.Sequential(
                nn.Conv2d(2 * channels + levels + k * self.width, hidden, 1), nn.LeakyReLU(0.01),
                nn.Conv2d(hidden, hidden, 1), nn.LeakyReLU(0.01),
                nn.Conv2d(hidden, 2 * self.width, 1),
            )
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)
            self.nets.append(net)

    def slice_params(self, k: int, decoded: torch.Tensor, means: torch.Tensor, scales: torch.Tensor,
                     level_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(means, scales) ``[B, M/S, h, w]`` of slice ``k``.

        ``decoded``: unit-gain y_hat of slices ``0..k-1`` ``[B, k*M/S, h, w]`` (more channels are
        ignored); ``means``, ``scales``: the hyperprior's ``[B, M, h, w]``; ``level_code``: ``[B, L]``
        quality weights (one-hot at integer levels, see ``CPSModel.level_code``).
        """
        b, _, h, w = means.shape
        code = level_code.view(b, -1, 1, 1).expand(-1, -1, h, w).to(means.dtype)
        inp = torch.cat([means, torch.log(scales), code, decoded[:, : k * self.width]], dim=1)
        d_mean, d_log_scale = self.nets[k](inp).chunk(2, dim=1)
        part = slice(k * self.width, (k + 1) * self.width)
        return means[:, part] + d_mean, scales[:, part] * torch.exp(d_log_scale)

    def forward(self, y_unit: torch.Tensor, means: torch.Tensor, scales: torch.Tensor,
                level_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All slices at once, given the whole unit-gain y_hat ``[B, M, h, w]`` -> (means, scales) ``[B, M, h, w]``."""
        parts = [self.slice_params(k, y_unit, means, scales, level_code) for k in range(self.slices)]
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)
