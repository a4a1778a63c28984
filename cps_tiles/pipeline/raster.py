"""Georeferenced and multi-band rasters (GeoTIFF and whatever else GDAL opens), through rasterio.

    raster file (uint8/uint16, B bands, CRS, transform, nodata)
      -> RasterSource: windows of the native dtype, [h, w, B]
      -> BandGroupSource per band group (3 bands -> the RGB path, 1 -> the grey path, 2 -> RGB
         with a zero third band): each band mapped linearly from [lo, hi] to 0..255
      -> one CPS store per group (bands/<g>), a nodata mask beside them (lossless)

Each band goes through the linear map of ``store/raster.py`` (``to_codes``/``from_codes``); its
``[lo, hi]`` is the band's own minimum and maximum over its valid pixels (one streamed pass), or
what the user gives.

rasterio is an optional dependency (``pip install cps-tiles[geo]``); everything here raises a
:class:`~cps_tiles.errors.SourceError` naming that extra when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PixelFormatError, SourceError
from ..store.geo import GeoInfo
from ..store.raster import to_codes

DTYPES = ("uint8", "uint16")
#: rows of the source read at once by the streamed passes (min/max, mask)
_STRIP = 512


def require_rasterio():
    try:
        import rasterio
    except ImportError:
        raise SourceError("georeferenced and multi-band rasters need rasterio: pip install 'cps-tiles[geo]'") from None
    return rasterio


def _geo_of(ds: Any) -> GeoInfo | None:
    """The georeferencing of an open rasterio dataset, or None where it has none."""
    has_crs = ds.crs is not None
    if not has_crs and ds.transform.is_identity:
        return None
    code = None
    if has_crs:
        epsg = ds.crs.to_epsg()
        code = f"EPSG:{epsg}" if epsg else None
    return GeoInfo(tuple(ds.transform)[:6], ds.crs.to_wkt(version="WKT2_2019") if has_crs else None, code,
                   None if ds.nodata is None else float(ds.nodata), tuple(ds.descriptions))


class RasterSource:
    """A raster file read through rasterio in windows, ``[h, w, bands]`` of its own dtype
    (uint8 or uint16). Picklable by path, as the other file sources."""

    def __init__(self, path: str | os.PathLike) -> None:
        rasterio = require_rasterio()
        self.path = str(path)
        if not Path(self.path).is_file():
            raise SourceError(f"{self.path}: no such file")
        try:
            with rasterio.open(self.path) as ds:
                self.height, self.width, self.bands = ds.height, ds.width, ds.count
                dtypes = set(ds.dtypes)
                self.geo = _geo_of(ds)
        except rasterio.errors.RasterioError as exc:
            raise SourceError(f"{self.path}: cannot read raster ({' '.join(str(exc).split())})") from None
        if len(dtypes) != 1 or next(iter(dtypes)) not in DTYPES:
            raise SourceError(f"{self.path}: band data types {sorted(dtypes)} are not supported: {', '.join(DTYPES)}")
        self.dtype = np.dtype(next(iter(dtypes)))
        self.nodata = None if self.geo is None else self.geo.nodata
        self.metadata: dict[str, Any] = {"file": Path(self.path).name, "loader": "rasterio"}
        if self.geo:
            self.metadata["geo"] = self.geo.to_source_metadata()
        self._ds = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_ds"} | {"_ds": None}

    def read(self, y0: int, y1: int, x0: int, x1: int, bands: list[int] | None = None) -> np.ndarray:
        """Rows ``y0:y1``, columns ``x0:x1`` of ``bands`` (indices from 0; all by default):
        ``[h, w, bands]`` of the source dtype. Only those bands are read from the file."""
        from rasterio.windows import Window

        if self._ds is None:
            self._ds = require_rasterio().open(self.path)
        indexes = None if bands is None else [b + 1 for b in bands]
        try:
            return np.moveaxis(self._ds.read(indexes, window=Window(x0, y0, x1 - x0, y1 - y0)), 0, 2)
        except Exception as exc:
            raise SourceError(f"{self.path}: cannot read pixels {x0},{y0}+{x1 - x0}x{y1 - y0} ({exc})") from None

    def strips(self):
        """The whole raster as strips of rows, for streamed passes: (y0, pixels)."""
        for y in range(0, self.height, _STRIP):
            yield y, self.read(y, min(self.height, y + _STRIP), 0, self.width)

    def valid(self, pixels: np.ndarray) -> np.ndarray:
        """``bool [h, w]``: pixels that are data (not every band equal to nodata)."""
        if self.nodata is None:
            return np.ones(pixels.shape[:2], bool)
        return ~np.all(pixels == self.nodata, axis=2)

    def band_ranges(self) -> list[tuple[float, float]]:
        """Each band's (min, max) over the valid pixels, in one streamed pass."""
        lo = np.full(self.bands, np.inf)
        hi = np.full(self.bands, -np.inf)
        for _, pixels in self.strips():
            data = pixels[self.valid(pixels)]
            if data.size:
                lo, hi = np.minimum(lo, data.min(axis=0)), np.maximum(hi, data.max(axis=0))
        return [(float(a), float(b)) if np.isfinite(a) else (0.0, 0.0) for a, b in zip(lo, hi)]


def parse_band_groups(text: str | None, bands: int) -> list[list[int]]:
    """``"3,2,1"`` -> band indices per group ([[0, 1, 2], [3, 4], [5]]); by default groups of
    three and a remainder of ones. Every band in exactly one group, groups of 1 to 3 bands."""
    if text is None:
        sizes = [3] * (bands // 3) + [1] * (bands % 3)
    else:
        try:
            sizes = [int(v) for v in text.split(",")]
        except ValueError:
            raise SourceError(f"--band-groups must be sizes like 3,2,1, got {text!r}") from None
        if any(not 1 <= s <= 3 for s in sizes) or sum(sizes) != bands:
            raise SourceError(f"--band-groups {text} must be sizes of 1 to 3 bands adding up to the {bands} bands")
    groups, start = [], 0
    for s in sizes:
        groups.append(list(range(start, start + s)))
        start += s
    return groups


def parse_band_range(text: str | None, bands: int) -> list[tuple[float, float]] | None:
    """``"LO,HI"`` for every band, or ``"LO,HI;LO,HI;..."`` one per band; None: from the data."""
    if text is None:
        return None
    try:
        pairs = [tuple(float(v) for v in part.split(",")) for part in text.split(";")]
    except ValueError:
        raise SourceError(f"--band-range must be LO,HI or LO,HI;LO,HI;... got {text!r}") from None
    if len(pairs) == 1:
        pairs = pairs * bands
    if len(pairs) != bands or any(len(p) != 2 or not p[0] < p[1] for p in pairs):
        raise SourceError(f"--band-range needs LO < HI once or once per band ({bands}), got {text!r}")
    return [(p[0], p[1]) for p in pairs]


class BandGroupSource:
    """One band group of a :class:`RasterSource` as a source the codec takes: ``uint8 [h, w, 1]``
    for one band, ``[h, w, 3]`` for two or three (a zero third band for two)."""

    def __init__(self, raster: RasterSource, bands: list[int], ranges: list[tuple[float, float]]) -> None:
        self.raster, self.band_indices, self.ranges = raster, bands, ranges
        self.height, self.width = raster.height, raster.width
        self.bands = 1 if len(bands) == 1 else 3
        # each group store is georeferenced at every level too; nodata is the parent's mask, not theirs
        geo = raster.metadata.get("geo")
        self.metadata = raster.metadata | {"bands": [b + 1 for b in bands], "band_range": [list(r) for r in ranges]}
        if geo:
            self.metadata["geo"] = geo | {"nodata": None}

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        values = self.raster.read(y0, y1, x0, x1, self.band_indices).astype(np.float64)
        codes = to_codes(values, self.ranges)
        if codes.shape[2] == 2:
            codes = np.concatenate([codes, np.zeros_like(codes[:, :, :1])], axis=2)
        return codes


def open_image_source(src: Any, page: int = 0, band_groups: str | None = None,
                      band_range: str | None = None) -> tuple[Any, bool]:
    """The source for ``src`` and whether it needs a multi-band store.

    An 8-bit grey or RGB file without nodata is read by libvips (fast, streamed) as before, with
    its georeferencing added where it has one; any other raster (16-bit, other band counts, a
    nodata value, or band options given) is read through rasterio into band groups.
    """
    from .source import VipsSource, geotiff_tags, open_source

    if not isinstance(src, (str, os.PathLike)):
        if band_groups or band_range:
            raise SourceError("--band-groups and --band-range apply to raster files, not arrays")
        return open_source(src, page=page), False
    wants_bands = band_groups is not None or band_range is not None
    if not wants_bands and not geotiff_tags(src):  # a GeoTIFF goes through rasterio for its georeferencing
        try:
            return VipsSource(src, page=page), False
        except PixelFormatError:  # another bit depth or band count: a raster, through rasterio
            return RasterSource(src), True
    raster = RasterSource(src)
    plain = raster.dtype == np.uint8 and raster.bands in (1, 3) and raster.nodata is None and not wants_bands
    if not plain:
        return raster, True
    vips = VipsSource(src, page=page)
    if raster.geo is not None:
        vips.metadata["geo"] = raster.geo.to_source_metadata()
    return vips, False


def _write_masks(root: Any, raster: RasterSource, shapes: list[tuple[int, int]], chunk: int) -> None:
    """``mask/<k>`` for every level: level 0 from the source's nodata, level k from level k-1 (a
    pixel is data where any pixel under it is), streamed in strips of rows."""
    from zarr.codecs import ZstdCodec

    from ..store.layout import compact_json
    from ..store.raster import MASK

    with compact_json():
        arrays = [root.create_array(f"{MASK}/{k}", shape=s, chunks=(chunk, chunk), dtype="uint8", fill_value=0,
                                    compressors=ZstdCodec(level=9), dimension_names=("y", "x"), overwrite=True)
                  for k, s in enumerate(shapes)]
    # every chunk written, all-nodata ones too: a missing mask chunk means damage (as for the latent)
    arrays = [a.with_config({"write_empty_chunks": True}) for a in arrays]
    for y, pixels in raster.strips():
        arrays[0][y : y + pixels.shape[0], :] = raster.valid(pixels).astype(np.uint8)
    for k in range(1, len(shapes)):
        h, w = shapes[k]
        for y in range(0, h, _STRIP):
            finer = arrays[k - 1][2 * y : 2 * min(h, y + _STRIP), :]
            pad = np.zeros((-(-finer.shape[0] // 2) * 2, w * 2), np.uint8)
            pad[: finer.shape[0], : finer.shape[1]] = finer
            arrays[k][y : y + pad.shape[0] // 2, :] = pad.reshape(pad.shape[0] // 2, 2, w, 2).max(axis=(1, 3))


def measure_errors(raster: RasterSource, store: str, meta: Any, samples: int = 4) -> list[dict[str, float]]:
    """Per band, the decoded level 0 against the source on up to ``samples`` x ``samples`` 256-px
    windows spread over the image (valid pixels only): PSNR against the band's range, and mean and
    largest absolute error in source units."""
    from ..store.raster import BANDS, decoded_values
    from ..store.reader import CPSImage

    images = [CPSImage(f"{store}/{BANDS}/{g}", cache_mb=0) for g in range(len(meta.groups))]

    def starts(n: int) -> list[int]:  # disjoint windows: all of a small image, a spread of a large one
        if n <= 256 * samples:
            return list(range(0, n, 256))
        return [int(v) // 256 * 256 for v in np.linspace(0, n - 256, samples)]

    ys, xs = starts(raster.height), starts(raster.width)
    sq, ab, mx, n = (np.zeros(raster.bands) for _ in range(4))
    for y in ys:
        for x in xs:
            y1, x1 = min(raster.height, y + 256), min(raster.width, x + 256)
            source = raster.read(y, y1, x, x1)
            valid = raster.valid(source)
            # what a reader gets back (nodata restored), against the source, on data pixels
            decoded = decoded_values(meta, [img.region(y, y1, x, x1) for img in images],
                                     valid if meta.nodata is not None else None)
            diff = (decoded.astype(np.float64) - source)[valid]
            sq += (diff**2).sum(axis=0)
            ab += np.abs(diff).sum(axis=0)
            mx = np.maximum(mx, np.abs(diff).max(axis=0, initial=0))
            n += valid.sum()
    out = []
    for b in range(raster.bands):
        span = meta.ranges[b][1] - meta.ranges[b][0]
        mse = sq[b] / max(n[b], 1)
        psnr = float("inf") if mse == 0 else 10 * np.log10(max(span, 1) ** 2 / mse)
        out.append({"band": b + 1, "psnr_db": round(float(psnr), 2), "mae": round(float(ab[b] / max(n[b], 1)), 3),
                    "max_abs": float(mx[b]), "pixels": int(n[b])})
    return out


def convert_raster(raster: RasterSource, store: str, codec: Any, *, quality: float, chunk: int, tile: int,
                   levels: int | None = None, band_groups: str | None = None, band_range: str | None = None,
                   overwrite: bool = False, resume: bool = False, progress: Any = None, **convert_kwargs: Any) -> None:
    """Write ``raster`` as a multi-band store at ``store`` (a local path or a URL): its band groups
    as CPS stores ``bands/<g>`` (each with its pyramid levels), a nodata mask per level, the
    georeferencing, and the per-band error measured on sampled windows."""
    import zarr

    from ..errors import StoreError
    from ..store.geo import write_geo
    from ..store.layout import RASTER_KEY, level_shapes, make_room, root_attributes
    from ..store.location import open_location
    from ..store.raster import BANDS, RasterMeta
    from .convert import convert_store

    if not isinstance(store, (str, os.PathLike)):
        raise StoreError("a multi-band store is written to a path or URL")
    path = str(store).rstrip("/")
    loc = open_location(path, "w")
    groups = parse_band_groups(band_groups, raster.bands)
    shapes = level_shapes(raster.height, raster.width, chunk, levels)
    started = root_attributes(loc.store, RASTER_KEY)
    if started is not None and resume:
        meta = RasterMeta.read({RASTER_KEY: started}, path)
        if (meta.groups, meta.levels, meta.dtype, meta.bands) != (groups, [list(s) for s in shapes], str(raster.dtype),
                                                                  raster.bands):
            raise StoreError(f"{path}: cannot resume, the store was started with other band groups, levels or source")
        root = zarr.open_group(store=loc.store, mode="r+")
    else:
        make_room(loc, overwrite)
        ranges = parse_band_range(band_range, raster.bands) or raster.band_ranges()
        meta = RasterMeta(raster.height, raster.width, raster.bands, str(raster.dtype), groups,
                          [list(r) for r in ranges], raster.nodata, [list(s) for s in shapes])
        root = zarr.open_group(store=loc.store, mode="w-")
        meta.write(root)
        write_geo(root, raster.geo, raster.height, raster.width)
        if raster.nodata is not None:
            _write_masks(root, raster, shapes, chunk)
    for g, bands in enumerate(groups):
        step = None if progress is None else (lambda done, total, g=g: progress(g * total + done, len(groups) * total))
        convert_store(BandGroupSource(raster, bands, [tuple(meta.ranges[b]) for b in bands]), f"{path}/{BANDS}/{g}",
                      codec, quality=quality, chunk=chunk, tile=tile, levels=len(shapes), resume=resume,
                      overwrite=overwrite, progress=step, **convert_kwargs)
    meta.errors = measure_errors(raster, path, meta)
    meta.complete = True
    meta.write(root)
