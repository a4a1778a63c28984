"""The CPS codec network: padding-free transforms, mean-scale hyperprior, gained variable rate.

Data flow (shapes for an image of H x W pixels; latent cells are 16 x 16 pixels)::

    x [B,3,H,W] in 0..1
      -> g_a -> y [B,M,H/16,W/16]
      -> * gain(q) -> round -> y_hat (int; what the store keeps)
                               |
          z = h_a(y_hat / gain(q))   [B,Nz,H/64,W/64] -> round -> z_hat (factorized density)
          means, scales = gain(q) * h_s(z_hat)                     (Gaussian conditional)
          [with ``slices`` > 0: refined slice by slice from the slices before, and with
           ``spatial`` > 0 by checkerboard half from the neighbouring cells, see context.py]
                               |
      y_hat * inv_gain(q) -> g_s -> x_hat [B,3,H,W]

``h_a``/``h_s`` use only 1x1 and 2x2/stride-2 convolutions, so the hyperprior of a 4x4 block of
latent cells depends on that block alone, and the channel context is 1x1 only: a storage chunk
whose latent size is a multiple of 4 codes to the same rate as the whole image would. A spatial
context reads only cells of the chunk being coded (zero beyond its edges), so its cells at chunk
edges see less context and cost a little more than inside a whole image.

Quality ``q`` is a real number in [1, 8]; integer levels train against the 8 lambdas of
``LAMBDAS`` and fractional levels interpolate the gain vectors geometrically (Cui et al. 2021).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .context import EntropyContext
from .density import FactorizedDensity, gaussian_likelihood
from .geometry import synthesis_trims
from .integer import FORMATS, IntegerEntropy
from .layers import BRB, EDRB, EURB, conv_down, conv_up

#: Rate-distortion trade-offs of quality levels 1, 2, ... (MSE on 0..1 pixels, times 255^2). A codec
#: trains the first ``ModelConfig.levels`` of them: 8 up to r8, more for the high-fidelity codecs,
#: so quality q means the same trade-off in every codec that has it.
LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800, 0.3600, 0.7200)
QUALITY_MIN, QUALITY_MAX = 1.0, float(len(LAMBDAS))
ENTROPY_ARITHMETIC = ("float", *FORMATS)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters: ``N`` transform channels, ``M`` latent channels, and the
    entropy context (``slices`` of y coded in turn, 0 for none; ``context_hidden`` width; with
    ``slices``, a checkerboard spatial context of kernel ``spatial``, 0 for none, and width
    ``spatial_hidden``; see context.py), the number of quality ``levels`` trained (``LAMBDAS``) and
    the arithmetic of the entropy parameters (``entropy``: "float", snapped float64 networks;
    "integer", the exact integer networks of integer.py; "integer8", those with the spatial
    convolutions in 7-bit operands, computed as int8 products; "integer8all", those with every
    layer's weights in 7 bits: ``FORMATS``)."""

    N: int = 128
    M: int = 192
    Nz: int = 128
    slices: int = 0
    context_hidden: int = 128
    spatial: int = 0
    spatial_hidden: int = 64
    levels: int = 8
    entropy: str = "float"

    def __post_init__(self) -> None:
        if not 2 <= self.levels <= len(LAMBDAS):
            raise ValueError(f"levels must be between 2 and {len(LAMBDAS)}, got {self.levels}")
        if self.entropy not in ENTROPY_ARITHMETIC:
            raise ValueError(f"entropy must be one of {', '.join(ENTROPY_ARITHMETIC)}, got {self.entropy!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _trim(x: torch.Tensor, cut: list[int]) -> torch.Tensor:
    """Drop (top, bottom, left, right) pixels from the borders of ``[B,C,H,W]``."""
    top, bottom, left, right = cut
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


def check_quality(quality: float, levels: int = len(LAMBDAS)) -> float:
    """Validate a quality (1 .. ``levels``) and snap it to the 1/100 grid the bitstream stores."""
    q = float(quality)
    if not (QUALITY_MIN <= q <= levels) or math.isnan(q):
        raise ValueError(f"quality must be between {QUALITY_MIN:g} and {levels:g}, got {quality!r}")
    return round(q * 100) / 100


class CPSModel(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        N, M, Nz = config.N, config.M, config.Nz
        self.g_a = nn.Sequential(
            EDRB(3, N), BRB(N), EDRB(N, N), BRB(N), EDRB(N, N), BRB(N), conv_down(N, M)
        )
        self.g_s = nn.Sequential(
            conv_up(M, N), BRB(N), EURB(N, N), BRB(N), EURB(N, N), BRB(N), EURB(N, 3)
        )
        self.h_a = nn.Sequential(
            nn.Conv2d(M, N, 1), nn.LeakyReLU(0.01), conv_down(N, N), nn.LeakyReLU(0.01), conv_down(N, Nz)
        )
        self.h_s = nn.Sequential(
            conv_up(Nz, N), nn.LeakyReLU(0.01), conv_up(N, 3 * M // 2), nn.LeakyReLU(0.01),
            nn.Conv2d(3 * M // 2, 2 * M, 1),
        )
        self.z_density = FactorizedDensity(Nz)
        if config.spatial and not config.slices:
            raise ValueError("a spatial context needs channel slices (slices > 0)")
        integer = config.entropy in FORMATS
        self.context = EntropyContext(M, config.slices, config.context_hidden, config.levels, config.spatial,
                                      config.spatial_hidden) if config.slices and not integer else None
        self.integer = IntegerEntropy(M, N, Nz, config.slices, config.context_hidden, config.levels, config.spatial,
                                      config.spatial_hidden, self.z_density.support,
                                      FORMATS[config.entropy]) if integer else None
        self._synthesis_trims = synthesis_trims(self.g_s)
        # Log gains per quality level; lower levels start coarser (one model, several rates).
        step = (math.log(3.0) - math.log(0.25)) / 7
        start = torch.linspace(math.log(0.25), math.log(0.25) + step * (config.levels - 1), config.levels).view(-1, 1)
        self.log_gain = nn.Parameter(start.repeat(1, M))
        self.log_inv_gain = nn.Parameter(-start.repeat(1, M))

    # -- gains ------------------------------------------------------------------------------
    def _levels(self, quality: float) -> tuple[int, float]:
        """Quality -> (level index i, weight t of level i+1): q lies between levels i and i+1."""
        q = check_quality(quality, self.config.levels) - 1
        i = min(int(q), self.config.levels - 2)
        return i, q - i

    def level_code(self, quality: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The context's quality input ``[1, levels]``: one-hot at integer levels, two weights between."""
        i, t = self._levels(quality)
        code = torch.zeros(1, self.config.levels, dtype=dtype)
        code[0, i], code[0, i + 1] = 1 - t, t
        return code

    def gains(self, quality: float, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain, inv_gain), each ``[M]``, for a quality in [1, levels] (geometric interpolation).

        Computed in float64 on the CPU whatever the model's device, so every device quantizes with
        the same gains; returned on the model's device.
        """
        i, t = self._levels(quality)
        lg = self.log_gain.detach().cpu().to(torch.float64)
        li = self.log_inv_gain.detach().cpu().to(torch.float64)
        gain = torch.exp((1 - t) * lg[i] + t * lg[i + 1])
        inv = torch.exp((1 - t) * li[i] + t * li[i + 1])
        device = self.log_gain.device
        return gain.to(device, dtype), inv.to(device, dtype)

    # -- transforms -------------------------------------------------------------------------
    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B,3,H,W]`` in 0..1 (H, W multiples of 16) -> y ``[B,M,H/16,W/16]``."""
        return self.g_a(x)

    def synthesis(self, y_hat: torch.Tensor, quality: float,
                  halo: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """Integer latent ``[B,M,h,w]`` -> pixels ``[B,3,16h,16w]`` (float, nominally 0..1).

        With ``halo`` = (top, bottom, left, right) latent cells of context around the wanted cells,
        returns only the wanted cells' pixels ``[B,3,16(h-top-bottom),16(w-left-right)]``. Each
        block's input is trimmed to the context the rest of the stack still needs
        (``pops.synthesis_trims``) rather than cropping at the end, because the halo would otherwise
        double in pixels with every upsampling: a 256-px chunk with a 2-cell halo costs 1.09x the
        FLOPs per pixel of a whole-image pass instead of 1.54x (benchmarks/speed.md).
        """
        dtype = self.log_inv_gain.dtype
        _, inv = self.gains(quality, dtype)
        x = y_hat.to(dtype) * inv.view(1, -1, 1, 1)
        if halo is None:
            return self.g_s(x)
        margin = list(halo)
        for block, (need, up) in zip(self.g_s, self._synthesis_trims):
            x = _trim(x, [max(0, m - need) for m in margin])
            margin = [min(m, need) * up for m in margin]
            x = block(x)
        return _trim(x, margin)

    def hyper_params(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_hat ``[B,Nz,h/4,w/4]`` -> (means, scales) ``[B,M,h,w]`` in unit-gain latent units."""
        return hyper_head(self.h_s(z_hat))

    def quantize(self, y: torch.Tensor, quality: float) -> torch.Tensor:
        """Analysis output ``[B,M,h,w]`` (or ``[M,h,w]``) -> the integer latent the store keeps
        (int16, same shape): ``round(y * gain(quality))``, gains computed in float64 (``gains``)."""
        gain, _ = self.gains(quality, torch.float32)
        gain = gain.to(y.device).view(-1, 1, 1)
        return torch.round(y.float() * gain).clamp_(-32768, 32767).to(torch.int16)

    # -- training ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, level: int) -> dict[str, torch.Tensor]:
        """Training pass at integer quality index ``level`` in 0 .. levels - 1.

        Returns ``x_hat`` and the likelihoods of y and z. The decoder sees straight-through
        rounded latents; the rate terms see additive uniform noise (Ballé et al.).
        """
        if self.integer is not None:
            raise ValueError("a codec with integer entropy networks is made by quantizing a trained one "
                             "(cps-tiles quantize-context), not trained directly")
        gain = torch.exp(self.log_gain[level]).view(1, -1, 1, 1)
        inv_gain = torch.exp(self.log_inv_gain[level]).view(1, -1, 1, 1)
        y = self.g_a(x) * gain
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        y_round = y + (torch.round(y) - y).detach()
        z = self.h_a(y_noisy / gain)
        z_tilde, z_lik = self.z_density(z)
        means, scales = self.hyper_params(z_tilde)
        if self.context is not None:  # the decoder sees rounded slices, so the context does too
            code = F.one_hot(torch.tensor([level], device=x.device), self.config.levels).expand(x.shape[0], -1)
            means, scales = self.context(y_round / gain, means, scales, code)
        y_lik = gaussian_likelihood(y_noisy.float(), (means * gain).float(), (scales * gain).float())
        x_hat = self.g_s(y_round * inv_gain)
        return {"x_hat": x_hat, "y_likelihoods": y_lik, "z_likelihoods": z_lik}


def hyper_head(h_s_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The hyper synthesis' last output ``[B,2M,h,w]`` -> (means, scales), each ``[B,M,h,w]``.

    The one definition of the parameter head: training, the encoder and the float64 coder all go
    through it, so they cannot drift apart."""
    means, raw = h_s_output.chunk(2, dim=1)
    return means, F.softplus(raw) + 1e-3


def rd_loss(out: dict[str, torch.Tensor], x: torch.Tensor, level: int) -> dict[str, torch.Tensor]:
    """Rate-distortion loss ``lambda * 255^2 * MSE + bpp`` (CompressAI's convention)."""
    num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = sum(torch.log2(out[k]).sum() for k in ("y_likelihoods", "z_likelihoods")) / -num_pixels
    mse = F.mse_loss(out["x_hat"].float(), x.float())
    return {"loss": LAMBDAS[level] * 255**2 * mse + bpp, "bpp": bpp, "mse": mse}
