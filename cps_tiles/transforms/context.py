"""Entropy context: better Gaussian parameters for y from already-decoded latent values.

The M latent channels are coded in ``S`` slices of ``M / S`` channels (Minnen & Singh 2020, without
their latent residual prediction). Slice ``k``'s means and scales are the hyperprior's, corrected
by a small network that also sees the slices decoded before it and the quality level::

    z_hat -> h_s -> (means, scales) of all M channels ---------+----------+---- ... ----+
                                                               |          |             |
                                  level code [L] ------------ net_0      net_1   ...   net_S-1
                                                               |          |             |
                                  y_hat slice 0 <- decode <- params_0     |             |
                                       +------------------------------->  |             |
                                  y_hat slice 1 <- decode <- params_1 <---+             |
                                       ...                                              |
                                  y_hat slice S-1 <- decode <- params_S-1 <-------------+

With a spatial context (``spatial`` = kernel size k > 0; He et al. 2022's checkerboard, as in ELIC),
each slice is further coded in two halves: its *anchors* (cells with even row + column) and then
the rest. A k x k convolution over the slices decoded before and over the slice's own anchors
(zero for the anchor half, which cannot see itself) gives a second correction::

    slices 0..k-1 (all cells) + slice k's anchors -> k x k conv -> head -> correction of params_k

The convolution is zero-padded at the block's edges: a storage chunk is coded from its own cells
only, so chunks stay self-contained (a cell near a chunk edge just sees less context), and a chunk
codes to the same bits wherever it sits. Without the spatial context every network is 1x1, so a
cell's parameters depend on that cell alone. Either way the decoded latent (hence the image) is
exactly what it is without a context: only the rate changes. All tensors are ``[B, C, h, w]`` in
latent cells, values in unit-gain latent units (``y_hat / gain``; the coder multiplies means and
scales by the gain).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _head(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """1x1 network whose last layer starts at zero: a fresh correction changes nothing."""
    net = nn.Sequential(nn.Conv2d(inputs, hidden, 1), nn.LeakyReLU(0.01), nn.Conv2d(hidden, hidden, 1),
                        nn.LeakyReLU(0.01), nn.Conv2d(hidden, outputs, 1))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def _code_map(level_code: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Quality weights ``[B, L]`` -> ``[B, L, h, w]``, as a per-cell input beside ``like`` ``[B, C, h, w]``."""
    b, _, h, w = like.shape
    return level_code.view(b, -1, 1, 1).expand(-1, -1, h, w).to(like.dtype)


def anchors(h: int, w: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Checkerboard ``[h, w]``: 1 at the anchor cells (even row + column, block-local), else 0."""
    return ((torch.arange(h).view(-1, 1) + torch.arange(w)) % 2 == 0).to(dtype)


class EntropyContext(nn.Module):
    """``S`` parameter networks (and with ``spatial`` > 0, ``S`` convolutions and heads);
    ``forward`` runs them all (encoder, training); ``slice_params`` and ``half_params`` give one
    slice, and one checkerboard half of it, at a time (the coder, which decodes between them).
    A fresh module leaves the hyperprior's parameters unchanged (zero-initialised last layers), so
    it can be trained on top of a released codec without first making it worse; a fresh spatial
    part likewise leaves a trained channel context unchanged."""

    def __init__(self, channels: int, slices: int, hidden: int, levels: int,
                 spatial: int = 0, spatial_hidden: int = 64) -> None:
        super().__init__()
        if slices < 1 or channels % slices:
            raise ValueError(f"{channels} latent channels do not split into {slices} slices")
        if spatial < 0 or spatial % 2 == 0 and spatial:
            raise ValueError(f"spatial context kernel must be odd (or 0 for none), got {spatial}")
        self.slices, self.width, self.spatial = slices, channels // slices, spatial
        w = self.width
        self.nets = nn.ModuleList(_head(2 * channels + levels + k * w, hidden, 2 * w) for k in range(slices))
        if spatial:
            self.convs = nn.ModuleList(nn.Conv2d((k + 1) * w, spatial_hidden, spatial, padding=spatial // 2)
                                       for k in range(slices))
            # sees the conv's features, the channel-corrected params, the level and which half it codes
            self.heads = nn.ModuleList(_head(spatial_hidden + 2 * w + levels + 1, spatial_hidden, 2 * w)
                                       for _ in range(slices))

    def halves(self, h: int, w: int) -> list[torch.Tensor | None]:
        """The cells of a slice coded in turn: ``[h, w]`` 0/1 masks (anchors, then the rest), or
        ``[None]`` (all cells at once) without a spatial context."""
        if not self.spatial:
            return [None]
        mask = anchors(h, w)
        return [mask, 1 - mask]

    def slice_params(self, k: int, decoded: torch.Tensor, means: torch.Tensor, scales: torch.Tensor,
                     level_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The channel context's (means, scales) ``[B, M/S, h, w]`` of slice ``k``.

        ``decoded``: unit-gain y_hat ``[B, >= k*M/S, h, w]`` of which slices ``0..k-1`` are read;
        ``means``, ``scales``: the hyperprior's ``[B, M, h, w]``; ``level_code``: ``[B, L]``
        quality weights (one-hot at integer levels, see ``CPSModel.level_code``).
        """
        code = _code_map(level_code, means)
        inp = torch.cat([means, torch.log(scales), code, decoded[:, : k * self.width]], dim=1)
        d_mean, d_log_scale = self.nets[k](inp).chunk(2, dim=1)
        cut = slice(k * self.width, (k + 1) * self.width)
        return means[:, cut] + d_mean, scales[:, cut] * torch.exp(d_log_scale)

    def spatial_features(self, k: int, decoded: torch.Tensor) -> torch.Tensor:
        """The part of slice ``k``'s convolution that both halves share: over slices ``0..k-1`` of the
        unit-gain ``decoded`` ``[B, M, h, w]`` (plus the bias) -> ``[B, spatial_hidden, h, w]``.
        The convolution is linear, so the own-anchor part is added per half (``half_params``)
        instead of convolving the previous slices twice."""
        conv, cut = self.convs[k], k * self.width
        if k == 0:
            return conv.bias.view(1, -1, 1, 1).expand(decoded.shape[0], -1, *decoded.shape[2:])
        return F.conv2d(decoded[:, :cut], conv.weight[:, :cut], conv.bias, padding=conv.padding)

    def half_params(self, k: int, half: int, shared: torch.Tensor, decoded: torch.Tensor, means: torch.Tensor,
                    scales: torch.Tensor, level_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The spatial context's correction of slice ``k``'s (means, scales) ``[B, M/S, h, w]`` (from
        ``slice_params``) for its checkerboard ``half`` (0: anchors, 1: the rest; the caller keeps
        that half's cells). ``shared``: ``spatial_features(k, decoded)``; ``decoded``: unit-gain y_hat
        ``[B, M, h, w]`` of which, for half 1, slice k's anchors are read (the rest may hold anything,
        zeros in the decoder): the anchors cannot see themselves."""
        h, w = means.shape[2:]
        feat = shared
        if half:
            conv, cut = self.convs[k], slice(k * self.width, (k + 1) * self.width)
            own = decoded[:, cut] * anchors(h, w, means.dtype)
            feat = feat + F.conv2d(own, conv.weight[:, k * self.width :], padding=conv.padding)
        code = _code_map(level_code, means)
        flag = torch.full_like(means[:, :1], float(half))
        inp = torch.cat([F.leaky_relu(feat, 0.01), means, torch.log(scales), code, flag], dim=1)
        d_mean, d_log_scale = self.heads[k](inp).chunk(2, dim=1)
        return means + d_mean, scales * torch.exp(d_log_scale)

    def forward(self, y_unit: torch.Tensor, means: torch.Tensor, scales: torch.Tensor,
                level_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All slices at once, given the whole unit-gain y_hat ``[B, M, h, w]`` -> (means, scales) ``[B, M, h, w]``."""
        out_m, out_s = [], []
        mask = anchors(*means.shape[2:], dtype=means.dtype) if self.spatial else None
        for k in range(self.slices):
            m, s = self.slice_params(k, y_unit, means, scales, level_code)
            if self.spatial:
                shared = self.spatial_features(k, y_unit)
                first = self.half_params(k, 0, shared, y_unit, m, s, level_code)
                second = self.half_params(k, 1, shared, y_unit, m, s, level_code)
                m = first[0] * mask + second[0] * (1 - mask)
                s = first[1] * mask + second[1] * (1 - mask)
            out_m.append(m)
            out_s.append(s)
        return torch.cat(out_m, dim=1), torch.cat(out_s, dim=1)
