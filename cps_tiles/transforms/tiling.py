"""Tile-exact analysis and synthesis: run the transforms on POPS windows and crop.

``analyze_tile`` / ``synthesize_cells`` are the per-task kernels that the store and the Dask
graphs call; ``analyze_tiled`` / ``synthesize_tiled`` loop them over a whole plan and exist so the
tests can compare tiled results against whole-image ones.
"""

from __future__ import annotations

import numpy as np
import torch

from .geometry import Plan, SynthesisWindow, Window
from .model import CPSModel
from .precision import precision_context


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


@torch.inference_mode()
def analyze_tile(model: CPSModel, window_pixels: torch.Tensor, window: Window, rho: int,
                 precision: str = "float32") -> torch.Tensor:
    """Pixels of ``window.pixels`` ``[B,3,h,w]`` -> y of ``window.cells`` ``[B,M,ch,cw]`` (input dtype)."""
    ys, xs = window.crop(rho)
    with precision_context(precision, window_pixels.device):
        y = model.analysis(window_pixels)
    return y[:, :, ys, xs].to(window_pixels.dtype)


@torch.inference_mode()
def synthesize_cells(model: CPSModel, y_window: torch.Tensor, window: SynthesisWindow, quality: float,
                     precision: str = "float32") -> torch.Tensor:
    """Latent of ``window.latent`` (cells, halo included) -> pixels of ``window.cells``.

    Returns ``[B,3,16*ch,16*cw]`` in the latent window's dtype.
    """
    with precision_context(precision, y_window.device):
        return model.synthesis(y_window, quality, halo=window.halo).to(y_window.dtype)


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
        ly0, ly1, lx0, lx1 = w.latent
        cy0, cy1, cx0, cx1 = w.cells
        out[:, :, cy0 * rho : cy1 * rho, cx0 * rho : cx1 * rho] = synthesize_cells(
            model, y_hat[:, :, ly0:ly1, lx0:lx1], w, quality
        )
    return out
