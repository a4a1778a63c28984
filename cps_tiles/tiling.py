"""Tile-exact analysis and synthesis: run the transforms on POPS windows and crop.

``analyze_tile`` / ``synthesize_cells`` are the per-task kernels that the store and the Dask
graphs call; ``analyze_tiled`` / ``synthesize_tiled`` loop them over a whole plan and exist so the
tests can compare tiled results against whole-image ones.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import numpy as np
import torch

from .model import CPSModel
from .pops import Plan, Window


def pad_to(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Edge-replicate ``[h, w, C]`` pixels at bottom/right up to ``height x width``."""
    h, w = pixels.shape[:2]
    if (h, w) == (height, width):
        return pixels
    return np.pad(pixels, ((0, height - h), (0, width - w), (0, 0)), mode="edge")


def to_tensor(pixels: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[h, w, 3]`` -> ``[1, 3, h, w]`` in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).to(dtype).div_(255).unsqueeze(0)


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """``[1, 3, h, w]`` float -> uint8 ``[h, w, 3]`` (round half to even, clipped)."""
    return x[0].mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


#: Arithmetic of the transforms: float32, or bfloat16 (oneDNN/AMX on CPUs that have it, about
#: twice as fast there; results differ from float32 by bf16 rounding but are deterministic).
PRECISIONS = ("float32", "bfloat16")


@functools.cache  # a fact of the hardware, asked once per tile: look it up once per process
def native_bf16(device_type: str = "cpu") -> bool:
    """Whether a ``device_type`` ("cpu", "cuda") device computes bf16 natively. A CPU needs
    AVX512-BF16 or AMX: an Intel Xeon with them trains in bf16 in half the time of float32
    (``benchmarks/train_step.md``), while an AVX2-only CPU emulates bf16, 7x slower than float32
    (``benchmarks/train_step_avx2.md``)."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device_type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def precision_context(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` on ``device`` (the transforms' and the trainer's)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    if not native_bf16(device_type):
        # still correct (and deterministic), only slow: say so instead of refusing
        warnings.warn(f"{device_type} has no native bf16 (a CPU needs AVX512-BF16 or AMX): "
                      "bfloat16 runs emulated, slower than float32", stacklevel=2)
    return torch.autocast(device_type, dtype=torch.bfloat16)


@torch.inference_mode()
def analyze_tile(model: CPSModel, window_pixels: torch.Tensor, window: Window, rho: int,
                 precision: str = "float32") -> torch.Tensor:
    """Pixels of ``window.pixels`` ``[B,3,h,w]`` -> y of ``window.cells`` ``[B,M,ch,cw]`` (input dtype)."""
    ys, xs = window.crop(rho)
    with precision_context(precision, window_pixels.device):
        y = model.analysis(window_pixels)
    return y[:, :, ys, xs].to(window_pixels.dtype)


@torch.inference_mode()
def synthesize_cells(model: CPSModel, y_window: torch.Tensor, window: Window, quality: float,
                     precision: str = "float32") -> torch.Tensor:
    """Latent of ``window.pixels`` (cells, halo included) -> pixels of ``window.cells``.

    Returns ``[B,3,16*ch,16*cw]`` in the latent window's dtype.
    """
    ly0, ly1, lx0, lx1 = window.pixels
    cy0, cy1, cx0, cx1 = window.cells
    with precision_context(precision, y_window.device):
        return model.synthesis(y_window, quality, halo=(cy0 - ly0, ly1 - cy1, cx0 - lx0, lx1 - cx1)).to(y_window.dtype)


def analyze_tiled(model: CPSModel, x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Whole padded image ``[1,3,H,W]`` -> y ``[1,M,H/rho,W/rho]``, computed tile by tile."""
    rho = plan.geometry.rho
    hl, wl = plan.latent
    y = x.new_empty((1, model.config.M, hl, wl))
    for w in plan.tiles():
        py0, py1, px0, px1 = w.pixels
        cy0, cy1, cx0, cx1 = w.cells
        y[:, :, cy0:cy1, cx0:cx1] = analyze_tile(model, x[:, :, py0:py1, px0:px1], w, rho)
    return y


def synthesize_tiled(model: CPSModel, y_hat: torch.Tensor, quality: float, plan: Plan) -> torch.Tensor:
    """Whole latent ``[1,M,h,w]`` -> pixels ``[1,3,16h,16w]``, decoded tile by tile."""
    rho = plan.geometry.rho
    out = y_hat.new_empty((1, 3, y_hat.shape[2] * rho, y_hat.shape[3] * rho), dtype=model.log_gain.dtype)
    for tile in plan.tiles():
        w = plan.synthesis_window(tile.cells)
        ly0, ly1, lx0, lx1 = w.pixels
        cy0, cy1, cx0, cx1 = w.cells
        out[:, :, cy0 * rho : cy1 * rho, cx0 * rho : cx1 * rho] = synthesize_cells(
            model, y_hat[:, :, ly0:ly1, lx0:lx1], w, quality
        )
    return out
