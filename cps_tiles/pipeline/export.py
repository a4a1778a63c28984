"""Write a store out as a tiled, pyramidal BigTIFF through libvips, with bounded memory.

Decoded rows are streamed into a raw temporary file next to the output (one band of chunks in
memory at a time); libvips then reads that file sequentially and writes the tiled pyramid itself,
so viewers that read pyramidal TIFF (QuPath, OpenSeadragon through vips, GDAL) open the result.
Temporary disk space: the raw image size (H * W * bands bytes), removed afterwards.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

TILE = 256


def export_tiff(read: Callable[[int, int], np.ndarray], height: int, width: int, bands: int, out: str | Path,
                compression: str = "deflate", band_rows: int = 256) -> int:
    """Write rows ``read(y0, y1) -> uint8 [y1-y0, width, bands]`` as a pyramidal BigTIFF.

    Returns the number of pyramid levels written.
    """
    import pyvips

    out = Path(out)
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".raw") as raw:
        for y in range(0, height, band_rows):
            rows = np.ascontiguousarray(read(y, min(height, y + band_rows)), dtype=np.uint8)
            raw.write(rows.tobytes())
        raw.flush()
        im = pyvips.Image.rawload(raw.name, width, height, bands)
        im = im.copy(interpretation="b-w" if bands < 3 else "srgb")
        im.tiffsave(str(out), tile=True, tile_width=TILE, tile_height=TILE, pyramid=True, bigtiff=True,
                    compression=compression, subifd=True)
    written = pyvips.Image.new_from_file(str(out))
    return 1 + (written.get("n-subifds") if written.get_typeof("n-subifds") else 0)
