"""Write a store out as a tiled, pyramidal BigTIFF (tifffile), its levels as the TIFF's sub-IFDs,
or as a Cloud Optimized GeoTIFF (GDAL's COG driver, through rasterio): :func:`export_cog`.

Level 0 is the main image; every stored pyramid level follows as a reduced-resolution sub-IFD
(``SubFileType`` 1), decoded from the store, not re-downsampled. Tiles are produced one band of
rows at a time (``band_rows`` pixels of one level in memory), so memory stays bounded for any
image size. Viewers and libraries that read pyramidal TIFF (QuPath, GDAL, tifffile, libvips,
OpenSeadragon through a tile server) open the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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


def export_cog(img: Any, out: str | Path, compression: str = "deflate") -> int:
    """Write ``img`` (a :class:`CPSImage` or :class:`CPSRaster`, all its stored levels) as a Cloud
    Optimized GeoTIFF with its CRS, transform and nodata. Returns the number of levels written.

    Each stored level is decoded chunk row by chunk row into a tiled GeoTIFF beside ``out``; a VRT
    names level 0 and the other levels as its overviews, and GDAL's COG driver copies that into
    ``out`` (tiles of 256, overviews from the stored levels, the layout COG readers expect). Memory
    stays bounded by one row of chunks and GDAL's block cache; the temporary files take about the
    decoded size of the image on disk and are removed at the end.
    """
    import shutil
    import tempfile
    import xml.etree.ElementTree as ET

    from .raster import require_rasterio

    rasterio = require_rasterio()
    from rasterio.shutil import copy as gdal_copy
    from rasterio.windows import Window

    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    out = Path(out)
    geo = img.geo
    nodata = getattr(img, "nodata", None)
    bands, dtype = img.shape[2], np.dtype(img.dtype)
    work = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        files = []
        for level in img.levels:
            h, w = level.shape[:2]
            path = work / f"level{level.level}.tif"
            profile = {"driver": "GTiff", "height": h, "width": w, "count": bands, "dtype": dtype.name, "tiled": True,
                       "blockxsize": TILE, "blockysize": TILE, "compress": "zstd", "zstd_level": 1,
                       "bigtiff": "if_safer", "nodata": nodata}
            if geo is not None:
                profile["transform"] = rasterio.Affine(*level.geo.transform)
                if geo.crs_wkt:
                    profile["crs"] = rasterio.crs.CRS.from_wkt(geo.crs_wkt)
            with rasterio.open(path, "w", **profile) as dst:
                if bands == 4 and dtype == np.uint8 and nodata is None:
                    dst.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                                       rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.alpha]
                for y in range(0, h, TILE):
                    rows = np.asarray(level[y : min(h, y + TILE), :])
                    dst.write(np.moveaxis(rows, 2, 0), window=Window(0, y, w, rows.shape[0]))
            files.append(path)
        vrt = work / "levels.vrt"
        gdal_copy(files[0], vrt, driver="VRT")
        tree = ET.parse(vrt)
        for band in tree.getroot().iter("VRTRasterBand"):
            for path in files[1:]:
                ov = ET.SubElement(band, "Overview")
                ET.SubElement(ov, "SourceFilename", relativeToVRT="1").text = path.name
                ET.SubElement(ov, "SourceBand").text = band.get("band")
        tree.write(vrt)
        tmp = out.with_name(out.name + ".partial")
        gdal_copy(vrt, tmp, driver="COG", COMPRESS={"zlib": "DEFLATE"}.get(compression, compression.upper()),
                  BLOCKSIZE=TILE, OVERVIEWS="FORCE_USE_EXISTING", BIGTIFF="IF_SAFER")
        tmp.replace(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return len(files)
