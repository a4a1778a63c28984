"""Write a store out as a tiled, pyramidal BigTIFF with bounded memory.

Level 0 is written tile row by tile row straight from the chunk decoder; while it is written, a 2x
box-downsampled copy accumulates in a temporary memory-mapped file, which then feeds level 1, and
so on until the level fits in one tile. Memory holds one band of tiles; the temporary files take at
most a third of the raw image size on disk. Viewers that read pyramidal TIFF (QuPath, vips,
OpenSeadragon through vips, GDAL) open the result.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

TILE = 256


def _bands(read: Callable[[int, int], np.ndarray], height: int, step: int) -> Iterator[np.ndarray]:
    for y in range(0, height, step):
        yield read(y, min(height, y + step))


def _tiles(band_iter: Iterator[np.ndarray], width: int, sink: np.ndarray | None) -> Iterator[np.ndarray]:
    """Cut row bands into TILE x TILE tiles (padded), and box-downsample each band into ``sink``."""
    y = 0
    for band in band_iter:
        h = band.shape[0]
        for x in range(0, width, TILE):
            tile = np.zeros((TILE, TILE, band.shape[2]), np.uint8)
            part = band[:, x : x + TILE]
            tile[: part.shape[0], : part.shape[1]] = part
            yield tile
        if sink is not None:
            even = np.pad(band, ((0, h % 2), (0, width % 2), (0, 0)), mode="edge").astype(np.uint16)
            small = (even[0::2, 0::2] + even[1::2, 0::2] + even[0::2, 1::2] + even[1::2, 1::2] + 2) // 4
            sink[y // 2 : y // 2 + small.shape[0]] = small.astype(np.uint8)
        y += h


def export_tiff(read: Callable[[int, int], np.ndarray], height: int, width: int, bands: int, out: str | Path,
                compression: str = "zlib", metadata: dict | None = None) -> int:
    """Write rows ``read(y0, y1) -> uint8 [y1-y0, width, bands]`` as a pyramidal BigTIFF; return levels."""
    import tifffile

    photometric = "minisblack" if bands == 1 else "rgb"
    extrasamples = ("unassalpha",) if bands == 4 else None
    levels = 1
    h, w = height, width
    while max(h, w) > TILE:
        h, w = -(-h // 2), -(-w // 2)
        levels += 1
    with tempfile.TemporaryDirectory(dir=Path(out).parent) as tmp, tifffile.TiffWriter(out, bigtiff=True) as tif:
        h, w = height, width
        source = _bands(read, h, TILE)
        for level in range(levels):
            sink = None
            if level + 1 < levels:
                sink = np.lib.format.open_memmap(Path(tmp, f"level{level + 1}.npy"), mode="w+", dtype=np.uint8,
                                                 shape=(-(-h // 2), -(-w // 2), bands))
            kwargs = dict(subifds=levels - 1, metadata=metadata or {}) if level == 0 else dict(subfiletype=1)
            tif.write(_tiles(source, w, sink), shape=(h, w, bands), dtype=np.uint8, tile=(TILE, TILE),
                      photometric=photometric, extrasamples=extrasamples, compression=compression, **kwargs)
            if sink is not None:
                sink.flush()
                source = _bands(lambda a, b, s=sink: np.asarray(s[a:b]), sink.shape[0], TILE)
                h, w = sink.shape[:2]
    return levels
