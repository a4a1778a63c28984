"""Write a store out as a tiled, pyramidal BigTIFF (tifffile), its levels as the TIFF's sub-IFDs.

Level 0 is the main image; every stored pyramid level follows as a reduced-resolution sub-IFD
(``SubFileType`` 1), decoded from the store, not re-downsampled. Tiles are produced one band of
rows at a time (``band_rows`` pixels of one level in memory), so memory stays bounded for any
image size. Viewers and libraries that read pyramidal TIFF (QuPath, GDAL, tifffile, libvips,
OpenSeadragon through a tile server) open the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

TILE = 256
#: ``--compression`` names -> tifffile's
COMPRESSIONS = {"deflate": "zlib", "zlib": "zlib", "zstd": "zstd", "jpeg": "jpeg", "webp": "webp", "lzw": "lzw",
                "none": None}

Reader = Callable[[int, int], np.ndarray]


def _tiles(read: Reader, height: int, width: int, bands: int, band_rows: int) -> Iterator[np.ndarray]:
    """``TILE x TILE`` tiles of an image, row-major, edge tiles zero-padded (as TIFF stores them)."""
    rows = max(TILE, band_rows // TILE * TILE)
    for y in range(0, height, rows):
        band = np.ascontiguousarray(read(y, min(height, y + rows)), dtype=np.uint8)
        for ty in range(0, band.shape[0], TILE):
            for tx in range(0, width, TILE):
                tile = np.zeros((TILE, TILE, bands), np.uint8)
                part = band[ty : ty + TILE, tx : tx + TILE]
                tile[: part.shape[0], : part.shape[1]] = part
                yield tile


def export_tiff(levels: Sequence[tuple[Reader, int, int]], bands: int, out: str | Path,
                compression: str = "deflate", band_rows: int = 1024) -> int:
    """Write ``levels`` (for each, ``read(y0, y1) -> uint8 [y1-y0, width, bands]``, its height and
    width; level 0 first) as one pyramidal BigTIFF. Returns the number of levels written."""
    import tifffile

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    photometric = "minisblack" if bands < 3 else "rgb"
    extra = {"extrasamples": ["unassalpha"]} if bands in (2, 4) else {}
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for k, (read, height, width) in enumerate(levels):
            tif.write(_tiles(read, height, width, bands, band_rows), shape=(height, width, bands), dtype=np.uint8,
                      tile=(TILE, TILE), compression=COMPRESSIONS[compression], photometric=photometric,
                      planarconfig="contig", subifds=len(levels) - 1 if k == 0 else None,
                      subfiletype=1 if k else 0, metadata=None, **extra)
    tmp.replace(out)
    return len(levels)
