"""The store writer: one compute tile at a time, pixels -> latent chunks, then its progress flag.

``write_tile`` is the kernel each Dask task runs (:mod:`cps_tiles.pipeline.convert`); tiles are
chunk-aligned, so tasks never write the same chunk. ``tiles_done`` is what ``--resume`` trusts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import zarr

from ..coding.bitstream import check_framing
from ..transforms.geometry import Plan, Window
from ..transforms.tiling import analyze_tile, to_tensor
from ..transforms.weights import Codec
from .layout import ALPHA, LATENT, PROGRESS, StoreMeta


def tiles_done(group: zarr.Group, plan: Plan) -> set[tuple[int, int]]:
    """Tiles whose progress flag is set *and* whose latent chunks are all present with valid
    framing and CRC (the flag is written after the chunks, but trust is cheap to verify)."""
    flags = group[PROGRESS][:]
    latent = group[LATENT]
    root = Path(str(latent.store_path.store.root), latent.path)
    done = set()
    cc = plan.chunk_cells
    for t in plan.tiles():
        ti, tj = plan.tile_index(t)
        if not flags[ti, tj]:
            continue
        cy0, cy1, cx0, cx1 = t.cells
        keys = [latent.metadata.encode_chunk_key((0, i, j)) for i in range(cy0 // cc, -(-cy1 // cc))
                for j in range(cx0 // cc, -(-cx1 // cc))]
        if all(_chunk_ok(root / k) for k in keys):
            done.add((ti, tj))
    return done


def _chunk_ok(path: Path) -> bool:
    try:
        return check_framing(path.read_bytes())
    except OSError:
        return False


def encode_tile(codec: Codec, pixels: np.ndarray, window: Window, plan: Plan, quality: float,
                precision: str = "float32") -> np.ndarray:
    """One compute tile: RGB pixels of ``window.pixels`` ``uint8 [h, w, 3]`` (tile plus POPS margin,
    edge-replicated past the image) -> integer latent of ``window.cells`` ``int16 [M, ch, cw]``.

    Runs on whatever device the codec's model is on (CPU, or CUDA on a GPU worker).
    """
    device = codec.model.log_gain.device
    x = to_tensor(pixels).to(device).contiguous(memory_format=torch.channels_last)
    y = analyze_tile(codec.model, x, window, plan.geometry.rho, precision)[0]
    return codec.model.quantize(y, quality).cpu().numpy()


def alpha_region(window: Window, plan: Plan, meta: StoreMeta) -> tuple[int, int, int, int]:
    """Pixels (y0, y1, x0, x1) of the image under ``window.cells``: the alpha a tile writes."""
    rho = plan.geometry.rho
    cy0, cy1, cx0, cx1 = window.cells
    return cy0 * rho, min(cy1 * rho, meta.height), cx0 * rho, min(cx1 * rho, meta.width)


def write_tile(group: zarr.Group, codec: Codec, window: Window, plan: Plan, meta: StoreMeta, pixels: np.ndarray,
               alpha: np.ndarray | None = None) -> None:
    """Encode one tile (``pixels`` as in :func:`encode_tile`), write its chunks (chunk-aligned, so
    tiles never share a chunk) and, for a store with alpha, the alpha of its cells (``uint8
    [h, w]``, clipped to the image), then its progress flag."""
    cy0, cy1, cx0, cx1 = window.cells
    y_hat = encode_tile(codec, pixels, window, plan, meta.quality, meta.precision)
    # Every chunk is written, even one equal to the fill value: a missing chunk means damage.
    # (write_empty_chunks is a runtime setting, not stored with the array, hence per handle.)
    eager = {"write_empty_chunks": True}
    group[LATENT].with_config(eager)[:, cy0:cy1, cx0:cx1] = y_hat
    if meta.alpha:
        y0, y1, x0, x1 = alpha_region(window, plan, meta)
        group[ALPHA].with_config(eager)[y0:y1, x0:x1] = alpha
    ti, tj = plan.tile_index(window)
    group[PROGRESS][ti, tj] = 1


def finish(group: zarr.Group, meta: StoreMeta) -> None:
    """Mark the store complete, then drop the progress flags, which only ``--resume`` reads (a kill
    in between leaves a complete store with its flags: harmless)."""
    meta.complete = True
    meta.write(group)
    if PROGRESS in group:
        del group[PROGRESS]
