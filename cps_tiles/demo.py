"""``cps-tiles demo``: the main job end to end on a bundled photo, no data or GPU needed.

The input is a 2048 x 2400 (W x H) mosaic of mirrored copies of the sample photo that matplotlib ships
(Grace Hopper portrait), written as a tiled pyramidal TIFF, so the demo exercises the same path
as a slide: pyvips streaming, tiled encoding, the Zarr store, region decoding.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def sample_mosaic(repeat: int = 4) -> np.ndarray:
    """uint8 [2400, 2048, 3] (for repeat=4): the bundled photo tiled with mirroring (no hard seams)."""
    import matplotlib.cbook
    import pyvips

    photo = pyvips.Image.new_from_file(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))).numpy()
    row = np.concatenate([photo if k % 2 == 0 else photo[:, ::-1] for k in range(repeat)], axis=1)
    return np.ascontiguousarray(np.concatenate([row if k % 2 == 0 else row[::-1] for k in range(repeat)], axis=0))


def run_demo(workdir: Path, quality: float) -> None:
    import pyvips

    import cps_tiles

    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "mosaic.tif"
    pixels = sample_mosaic()
    pyvips.Image.new_from_array(pixels).copy(interpretation="srgb").tiffsave(
        str(src), tile=True, tile_width=256, tile_height=256, pyramid=True, compression="deflate")
    store = workdir / "mosaic.zarr"
    t0 = time.perf_counter()
    img = cps_tiles.convert(src, store, quality=quality, overwrite=True)
    t1 = time.perf_counter()
    decoded = np.asarray(img)
    t2 = time.perf_counter()
    region = img[100:612, 900:1412]
    assert np.array_equal(region, decoded[100:612, 900:1412]), "region decode differs from whole decode"
    pyvips.Image.new_from_array(region).write_to_file(str(workdir / "region.png"))
    mse = np.mean((decoded.astype(np.float64) - pixels) ** 2)
    nbytes = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    mp = pixels.shape[0] * pixels.shape[1] / 1e6
    print(f"input   {src} ({pixels.shape[1]}x{pixels.shape[0]}, {mp:.1f} MP)")
    print(f"store   {store}: {nbytes:,} bytes, {8 * nbytes / (mp * 1e6):.3f} bpp, PSNR {10 * np.log10(255**2 / mse):.2f} dB")
    print(f"speed   encode {mp / (t1 - t0):.2f} MP/s, decode {mp / (t2 - t1):.2f} MP/s (this machine, all threads)")
    print(f"region  {workdir / 'region.png'} (512x512 at x=900, y=100, identical to the same crop of the full decode)")
