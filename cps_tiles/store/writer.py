"""The store writer: one write unit at a time, pixels -> latent chunks, then its progress flag.

A write unit is a compute tile, or a shard (a whole number of compute tiles) in a sharded store:
what one Dask task (:mod:`cps_tiles.pipeline.convert`) writes whole. Units are chunk- and
shard-aligned, so tasks never write the same object and need no locks. ``units_done`` is what
``--resume`` trusts.
"""

from __future__ import annotations

import numpy as np
import torch
import zarr

from ..coding.bitstream import check_framing
from ..coding.memo import ContentMemo, content_key, reuse_enabled
from ..transforms.geometry import Plan, Window
from ..transforms.tiling import analyze_tile, to_tensor
from ..transforms.weights import Codec
from .chunks import LatentChunks
from .layout import ALPHA, LATENT, PROGRESS, StoreMeta


def units_done(group: zarr.Group, plan: Plan, where: str) -> set[tuple[int, int]]:
    """Write units whose progress flag is set *and* whose latent chunks are all present with valid
    framing and CRC (the flag is written after the chunks, but trust is cheap to verify)."""
    flags = group[PROGRESS][:]
    chunks = LatentChunks(group[LATENT], where)
    cc, done = plan.chunk_cells, set()
    for index, (cy0, cy1, cx0, cx1), _ in plan.units():
        if not flags[index]:
            continue
        wanted = [(i, j) for i in range(cy0 // cc, -(-cy1 // cc)) for j in range(cx0 // cc, -(-cx1 // cc))]
        if all(data is not None and check_framing(data) for data in chunks.fetch(wanted).values()):
            done.add(index)
    return done


#: latents of one-colour compute tiles (memo.py)
_ANALYZED = ContentMemo()


def encode_tile(codec: Codec, pixels: np.ndarray, window: Window, plan: Plan, quality: float,
                precision: str = "float32") -> np.ndarray:
    """One compute tile: RGB pixels of ``window.pixels`` ``uint8 [h, w, 3]`` (tile plus POPS margin,
    edge-replicated past the image) -> integer latent of ``window.cells`` ``int16 [M, ch, cw]``.

    Runs on whatever device the codec's model is on (CPU, or CUDA on a GPU worker).
    """
    device = codec.model.log_gain.device

    def analyze() -> np.ndarray:
        x = to_tensor(pixels).to(device).contiguous(memory_format=torch.channels_last)
        y = analyze_tile(codec.model, x, window, plan.geometry.rho, precision)[0]
        return codec.model.quantize(y, quality).cpu().numpy()

    # a one-colour window (glass, ocean, nodata) is analysed once per colour and shape (memo.py)
    if not reuse_enabled() or not (pixels == pixels[:1, :1]).all():
        return analyze()
    crop = tuple((s.start, s.stop) for s in window.crop(plan.geometry.rho))
    key = content_key(pixels[0, 0], pixels.shape, crop, codec.sha256, quality, precision, str(device))
    if (y_hat := _ANALYZED.get(key)) is None:
        y_hat = analyze()
        _ANALYZED.put(key, y_hat)
    return y_hat


def alpha_region(cells: tuple[int, int, int, int], plan: Plan, meta: StoreMeta) -> tuple[int, int, int, int]:
    """Pixels (y0, y1, x0, x1) of the image under latent ``cells``: the alpha a unit writes."""
    rho = plan.geometry.rho
    cy0, cy1, cx0, cx1 = cells
    return cy0 * rho, min(cy1 * rho, meta.height), cx0 * rho, min(cx1 * rho, meta.width)


def write_unit(group: zarr.Group, index: tuple[int, int], cells: tuple[int, int, int, int], plan: Plan,
               meta: StoreMeta, y_hat: np.ndarray, alpha: np.ndarray | None = None) -> None:
    """Write a unit's latent ``int16 [M, ch, cw]`` (its ``cells``), for a store with alpha the
    alpha under it (``uint8 [h, w]``, clipped to the image), then its progress flag."""
    cy0, cy1, cx0, cx1 = cells
    # Every chunk is written, even one equal to the fill value: a missing chunk means damage.
    # (write_empty_chunks is a runtime setting, not stored with the array, hence per handle.)
    eager = {"write_empty_chunks": True}
    group[LATENT].with_config(eager)[:, cy0:cy1, cx0:cx1] = y_hat
    if meta.alpha:
        y0, y1, x0, x1 = alpha_region(cells, plan, meta)
        group[ALPHA].with_config(eager)[y0:y1, x0:x1] = alpha
    group[PROGRESS][index] = 1


def finish(group: zarr.Group, meta: StoreMeta) -> None:
    """Mark the store complete, then drop the progress flags, which only ``--resume`` reads (a kill
    in between leaves a complete store with its flags: harmless)."""
    meta.complete = True
    meta.write(group)
    if PROGRESS in group:
        del group[PROGRESS]
