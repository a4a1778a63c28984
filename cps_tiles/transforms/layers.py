"""Padding-free building blocks of the CPS codec (EDRB, EURB, BRB, GDN).

No layer here pads. Every convolution is either

* a 2x2 kernel with stride 2 (patchify / un-patchify): each output cell sees exactly one
  aligned 2x2 input block, so it adds no context across tile borders once tiles are aligned
  to the stride; or
* a 3x3 kernel with stride 1 used as a *pair*: a valid 3x3 convolution (shrinks by 2) followed
  by a 3x3 transposed convolution (grows by 2). The pair keeps the size, and near the border of
  the input it behaves exactly like the whole image does near the image border, so a tile whose
  edge is the image edge needs no margin there.

Shapes are ``[B, C, H, W]`` throughout.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_LEAK = 0.01


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016), or its inverse.

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``; with ``inverse=True`` the
    division becomes a multiplication (IGDN). ``beta`` and ``gamma`` are kept non-negative
    through a squared reparametrization with a small floor, as in the paper.
    """

    _PEDESTAL = 2.0**-36
    _BETA_MIN = 1e-6

    def __init__(self, channels: int, inverse: bool = False, gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + self._PEDESTAL))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + self._PEDESTAL))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        beta = self.beta.clamp_min((self._BETA_MIN + self._PEDESTAL) ** 0.5) ** 2 - self._PEDESTAL
        gamma = self.gamma.clamp_min(self._PEDESTAL**0.5) ** 2 - self._PEDESTAL
        norm = F.conv2d(x * x, gamma.to(x.dtype).view(c, c, 1, 1), beta.to(x.dtype))
        norm = torch.sqrt(norm)
        return x * norm if self.inverse else x / norm

    def extra_repr(self) -> str:
        return f"{self.beta.numel()}, inverse={self.inverse}"


def conv_down(cin: int, cout: int) -> nn.Conv2d:
    """2x2 convolution, stride 2, no padding: halves H and W."""
    return nn.Conv2d(cin, cout, 2, stride=2)


def conv_up(cin: int, cout: int) -> nn.ConvTranspose2d:
    """2x2 transposed convolution, stride 2, no padding: doubles H and W."""
    return nn.ConvTranspose2d(cin, cout, 2, stride=2)


def _fused(conv, a: nn.Conv2d | nn.ConvTranspose2d, b: nn.Conv2d | nn.ConvTranspose2d,
           x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a(x), b(x))`` for two 2x2/s2 layers of the same shape, as one call with twice the output
    channels: one wider GEMM instead of two narrow ones (the down/up blocks' main and skip paths)."""
    dim = 1 if isinstance(a, nn.ConvTranspose2d) else 0  # where the output channels sit in the weight
    both = conv(x, torch.cat([a.weight, b.weight], dim), torch.cat([a.bias, b.bias]), stride=2)
    return both.chunk(2, dim=1)


class EDRB(nn.Module):
    """Efficient down-sampling residual block: ``[B,cin,H,W] -> [B,cout,H/2,W/2]``.

    main: 2x2/s2 conv -> LeakyReLU -> 1x1 conv -> GDN; skip: 2x2/s2 conv.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = conv_down(cin, cout)
        self.act = nn.LeakyReLU(_LEAK)
        self.mix = nn.Conv2d(cout, cout, 1)
        self.gdn = GDN(cout)
        self.skip = conv_down(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main, skip = _fused(F.conv2d, self.down, self.skip, x)
        return self.gdn(self.mix(self.act(main))) + skip

    def main_path(self) -> list[nn.Module]:
        return [self.down, self.mix]


class EURB(nn.Module):
    """Efficient up-sampling residual block: ``[B,cin,H,W] -> [B,cout,2H,2W]``.

    main: 2x2/s2 transposed conv -> LeakyReLU -> 1x1 conv -> IGDN; skip: 2x2/s2 transposed conv.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = conv_up(cin, cout)
        self.act = nn.LeakyReLU(_LEAK)
        self.mix = nn.Conv2d(cout, cout, 1)
        self.igdn = GDN(cout, inverse=True)
        self.skip = conv_up(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main, skip = _fused(F.conv_transpose2d, self.up, self.skip, x)
        return self.igdn(self.mix(self.act(main))) + skip

    def main_path(self) -> list[nn.Module]:
        return [self.up, self.mix]


class BRB(nn.Module):
    """Bottleneck residual block, size keeping: ``[B,cin,H,W] -> [B,cout,H,W]``.

    main: valid 3x3 conv (H-2) -> LeakyReLU -> 3x3 transposed conv (back to H) -> LeakyReLU;
    skip: identity, or a 1x1 conv when the channel count changes. Each output cell depends on
    input cells within +-2 (in this block's resolution).
    """

    def __init__(self, cin: int, cout: int | None = None, hidden: int | None = None) -> None:
        super().__init__()
        cout = cin if cout is None else cout
        hidden = cout // 2 if hidden is None else hidden
        self.conv = nn.Conv2d(cin, hidden, 3)
        self.tconv = nn.ConvTranspose2d(hidden, cout, 3)
        self.act = nn.LeakyReLU(_LEAK)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 3:
            # The valid 3x3 conv has no output cells, so the full transposed conv sums over
            # nothing and leaves only its bias. Writing that out keeps tiny images legal and
            # equal to the same rows/columns of a larger tile of the same height/width.
            main = self.tconv.bias.view(1, -1, 1, 1).expand(x.shape[0], -1, *x.shape[-2:])
            return self.act(main.to(x.dtype)) + self.skip(x)
        return self.act(self.tconv(self.act(self.conv(x)))) + self.skip(x)

    def main_path(self) -> list[nn.Module]:
        return [self.conv, self.tconv]
