"""Multi-band and 16-bit rasters: a group of CPS stores, one per band group, and a nodata mask.

    raster.zarr/
      zarr.json          group: attributes "cps_raster" (RasterMeta) and the georeferencing (geo.py)
      bands/<g>/         a complete CPS store (its own pyramid levels) holding band group g as uint8
      mask/<k>           uint8 [H_k, W_k], 1 where level k holds data (only with nodata); zstd

Each band is stored through a linear map of its range ``[lo, hi]`` to the codec's 0..255
(:func:`to_codes`, :func:`from_codes`): one fact, used by the converter and by every reader here.
A level-k mask pixel is 1 where any level-0 pixel under it is data, so nodata comes back exactly
as nodata at every level, and no decoded data pixel reads as nodata (one that would, all its
bands equal to the nodata value, is moved one unit away from it on its first band).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from ..errors import DamagedChunkError, StoreError
from .geo import GeoInfo, to_xarray
from .layout import RASTER_KEY, compact_json, open_group_checked, root_attributes
from .location import open_location
from .reader import CPSImage, RegionIndexing

RASTER_FORMAT = 1
BANDS = "bands"
MASK = "mask"


def to_codes(values: np.ndarray, ranges: list[tuple[float, float]]) -> np.ndarray:
    """Source values ``[h, w, n]`` -> uint8 codes by each band's linear map of ``[lo, hi]``."""
    lo = np.array([r[0] for r in ranges])
    span = np.array([max(r[1] - r[0], 1e-12) for r in ranges])
    return np.clip(np.rint((values - lo) / span * 255), 0, 255).astype(np.uint8)


def from_codes(codes: np.ndarray, ranges: list[tuple[float, float]], dtype: Any) -> np.ndarray:
    """uint8 codes ``[h, w, n]`` -> values of ``dtype`` by each band's inverse linear map, rounded
    and clipped to the dtype's range."""
    lo = np.array([r[0] for r in ranges])
    span = np.array([r[1] - r[0] for r in ranges])
    info = np.iinfo(dtype)
    return np.clip(np.rint(lo + codes * (span / 255)), info.min, info.max).astype(dtype)


def decoded_values(meta: RasterMeta, codes: list[np.ndarray], valid: np.ndarray | None) -> np.ndarray:
    """The decoded codes of each band group ``[h, w, 1 or 3]`` and the nodata mask (``bool [h, w]``,
    True where data; None without nodata) -> values ``[h, w, bands]`` of the store's dtype: what
    every reader returns, nodata restored and kept off data pixels (module docstring)."""
    dtype = np.dtype(meta.dtype)
    h, w = codes[0].shape[:2]
    out = np.empty((h, w, meta.bands), dtype)
    for bands, c in zip(meta.groups, codes):
        out[:, :, bands] = from_codes(c[:, :, : len(bands)], [meta.ranges[b] for b in bands], dtype)
    if valid is not None:
        nodata = dtype.type(meta.nodata)
        collide = valid & np.all(out == nodata, axis=2)
        first = out[:, :, 0]
        first[collide] = nodata + 1 if nodata < np.iinfo(dtype).max else nodata - 1
        out[~valid] = nodata
    return out


@dataclass
class RasterMeta:
    """``attributes["cps_raster"]`` of a multi-band store's root group."""

    height: int
    width: int
    bands: int
    dtype: str
    groups: list[list[int]]
    ranges: list[list[float]]
    nodata: float | None = None
    levels: list[list[int]] = field(default_factory=list)
    #: per band, measured at convert time on sampled chunks: psnr_db (against the band's range),
    #: mae and max_abs (source units), pixels compared
    errors: list[dict[str, float]] = field(default_factory=list)
    complete: bool = False
    format: int = RASTER_FORMAT

    @classmethod
    def read(cls, attrs: dict[str, Any], where: str) -> RasterMeta:
        raw = attrs.get(RASTER_KEY)
        if not isinstance(raw, dict) or raw.get("format") != RASTER_FORMAT:
            raise StoreError(f"{where}: not a cps-tiles multi-band store")
        try:
            meta = cls(**raw)
        except TypeError as exc:
            raise StoreError(f"{where}: malformed multi-band metadata ({exc})") from None
        if sorted(b for g in meta.groups for b in g) != list(range(meta.bands)) or len(meta.ranges) != meta.bands:
            raise StoreError(f"{where}: inconsistent multi-band metadata")
        return meta

    def write(self, group: zarr.Group) -> None:
        with compact_json():
            group.update_attributes({RASTER_KEY: json.loads(json.dumps(asdict(self)))})


def is_raster(location: Any) -> bool:
    """Whether the store at ``location`` is a multi-band store (else a plain CPS store)."""
    return root_attributes(open_location(location, "r").store, RASTER_KEY) is not None


class CPSRaster(RegionIndexing):
    """A decoded view of a multi-band store: ``shape`` (H, W, bands), ``dtype`` the source's
    (uint8 or uint16), 2-D slicing, ``levels``, ``to_dask()``, ``to_xarray()``.

    Opens from a local path or a URL (its band groups are stores at ``bands/<g>`` under it).
    """

    def __init__(self, location: str | Path, cache_mb: float = 256, precision: str = "float32", level: int = 0,
                 _root: CPSRaster | None = None) -> None:
        if not isinstance(location, (str, Path)):
            raise StoreError("a multi-band store opens from a path or URL")
        self.path = str(location).rstrip("/")
        self.location = open_location(self.path, "r")
        root, _ = open_group_checked(self.location)
        self.meta = RasterMeta.read(dict(root.attrs), self.path)
        if not self.meta.complete:
            raise StoreError(f"{self.path}: store is unfinished (its conversion did not complete); "
                             "rerun the conversion with --resume")
        self.level, self._cache_mb, self.precision = level, cache_mb, precision
        self._root_geo = GeoInfo.from_attributes(dict(root.attrs))
        if _root is None:
            self.group_images = [CPSImage(f"{self.path}/{BANDS}/{g}", cache_mb=cache_mb / len(self.meta.groups),
                                          precision=precision) for g in range(len(self.meta.groups))]
        else:
            self.group_images = [img.levels[level] for img in _root.group_images]
        self._root = _root or self
        self._level_images: tuple[CPSRaster, ...] | None = None
        self.mask = root[f"{MASK}/{level}"] if self.meta.nodata is not None else None
        self.dtype = np.dtype(self.meta.dtype)

    @property
    def shape(self) -> tuple[int, int, int]:
        h, w = self.meta.levels[self.level]
        return (h, w, self.meta.bands)

    ndim = 3

    @property
    def nodata(self) -> float | None:
        return self.meta.nodata

    @property
    def geo(self) -> GeoInfo | None:
        return None if self._root_geo is None else self._root_geo.at_level(self.level)

    @property
    def level_count(self) -> int:
        return len(self.meta.levels)

    @property
    def levels(self) -> tuple[CPSRaster, ...]:
        root = self._root
        if root._level_images is None:
            root._level_images = (root,) + tuple(
                CPSRaster(root.path, root._cache_mb, root.precision, level=k, _root=root) for k in range(1, root.level_count))
        return root._level_images

    def __repr__(self) -> str:
        level = f", level={self.level}" if self.level else ""
        return f"CPSRaster({self.path!r}{level}, shape={self.shape}, dtype={self.meta.dtype}, groups={self.meta.groups})"

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Values of rows ``y0:y1`` and columns ``x0:x1`` (clipped) as ``[h, w, bands]`` of the dtype."""
        codes = [img.region(y0, y1, x0, x1) for img in self.group_images]
        valid = None if self.mask is None else self._mask_region(y0, y1, x0, x1)
        return decoded_values(self.meta, codes, valid)

    def _mask_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The nodata mask under a region; a missing mask chunk is damage, not "all nodata"."""
        c = self.mask.chunks[0]
        for i in range(y0 // c, -(-y1 // c)):
            for j in range(x0 // c, -(-x1 // c)):
                key = f"{self.mask.path}/{self.mask.metadata.encode_chunk_key((i, j))}"
                if not sync(self.location.store.exists(key)):
                    raise DamagedChunkError(f"{self.path}: chunk {key} is missing")
        return self.mask[y0:y1, x0:x1].astype(bool)

    def to_dask(self):
        """``[H, W, bands]`` of the dtype, one task per storage chunk of each group."""
        import dask.array as da

        groups = [img.to_dask() for img in self.group_images]
        valid = None if self.mask is None else da.from_zarr(self.mask).rechunk(groups[0].chunks[:2]).astype(bool)

        def block(*parts: np.ndarray) -> np.ndarray:
            *codes, mask = parts if valid is not None else (*parts, None)
            return decoded_values(self.meta, list(codes), None if mask is None else mask[:, :, 0])

        args = groups + ([valid[:, :, None]] if valid is not None else [])
        return da.map_blocks(block, *args, dtype=self.dtype, chunks=groups[0].chunks[:2] + ((self.meta.bands,),),
                             meta=np.empty((0, 0, 0), self.dtype))

    def to_xarray(self, name: str | None = None):
        """A lazy ``xarray.DataArray`` ``(band, y, x)`` with the CRS and transform."""
        return to_xarray(self.to_dask(), self.geo, name or Path(self.path).stem)


def open_image(location: Any, **kwargs: Any) -> CPSImage | CPSRaster:
    """The store at ``location``: a :class:`CPSRaster` for a multi-band store, else a :class:`CPSImage`."""
    if isinstance(location, (str, Path)) and is_raster(location):
        if kwargs.pop("on_error", "raise") != "raise":
            raise StoreError(f"{location}: salvage (on_error='fill') is not available for multi-band stores")
        kwargs.pop("fill_value", None)
        return CPSRaster(location, **kwargs)
    return CPSImage(location, **kwargs)
