"""Georeferencing of a store: CRS, affine transform, nodata and band descriptions, kept in the
group attributes with the keys of the geospatial Zarr conventions (``proj:`` and ``spatial:``,
https://github.com/zarr-conventions), for level 0 in the root group and per level in each level's
group. Pure data, no I/O beyond a group's attributes; the pipeline reads it from sources with
rasterio.

A level-k pixel ``(i, j)`` covers level-0 pixels ``[i * 2**k, (i + 1) * 2**k)`` (the levels are 2x
area reductions), so level k's transform is level 0's scaled by ``2**k``: same origin, pixels
``2**k`` times larger, rotation terms scaled alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the conventions registered in ``zarr_conventions``, as their specifications define them
SPATIAL_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "name": "spatial",
    "description": "Spatial coordinate information",
}
PROJ_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/geo-proj/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/geo-proj/blob/v1/README.md",
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "name": "proj",
    "description": "Coordinate reference system information for geospatial data",
}


@dataclass(frozen=True)
class GeoInfo:
    """Georeferencing of level 0: ``transform`` is the affine (a, b, c, d, e, f) mapping pixel
    (col, row) to (x, y) = (a*col + b*row + c, d*col + e*row + f), rasterio's order; ``crs_wkt``
    is WKT2, ``crs_code`` an ``AUTHORITY:CODE`` where the CRS has one."""

    transform: tuple[float, float, float, float, float, float]
    crs_wkt: str | None = None
    crs_code: str | None = None
    nodata: float | None = None
    band_descriptions: tuple[str | None, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.transform) != 6:
            raise ValueError(f"an affine transform has 6 terms, got {len(self.transform)}")
        a, b, _, d, e, _ = self.transform
        if a * e - b * d == 0:
            raise ValueError(f"the transform {self.transform} is singular")

    def at_level(self, level: int) -> GeoInfo:
        """The georeferencing of pyramid level ``level``."""
        s = 2**level
        a, b, c, d, e, f = self.transform
        return GeoInfo((a * s, b * s, c, d * s, e * s, f), self.crs_wkt, self.crs_code, self.nodata,
                       self.band_descriptions)

    def bounds(self, height: int, width: int) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of a ``height`` x ``width`` raster: its four corners' extent."""
        a, b, c, d, e, f = self.transform
        xs = [a * col + b * row + c for col in (0, width) for row in (0, height)]
        ys = [d * col + e * row + f for col in (0, width) for row in (0, height)]
        return min(xs), min(ys), max(xs), max(ys)

    def resolution(self) -> tuple[float, float]:
        """(x, y) size of a pixel in CRS units (the lengths of the transform's column vectors)."""
        a, b, _, d, e, _ = self.transform
        return (a * a + d * d) ** 0.5, (b * b + e * e) ** 0.5

    def attributes(self, height: int, width: int) -> dict[str, Any]:
        """Group attributes for a ``height`` x ``width`` level with this georeferencing."""
        attrs: dict[str, Any] = {
            "zarr_conventions": [SPATIAL_CONVENTION] + ([PROJ_CONVENTION] if self.crs_wkt or self.crs_code else []),
            "spatial:dimensions": ["y", "x"],
            "spatial:transform_type": "affine",
            "spatial:transform": list(self.transform),
            "spatial:shape": [height, width],
            "spatial:bbox": list(self.bounds(height, width)),
        }
        if self.crs_code:
            attrs["proj:code"] = self.crs_code
        if self.crs_wkt:
            attrs["proj:wkt2"] = self.crs_wkt
        if self.nodata is not None:
            attrs["cps:nodata"] = self.nodata
        if any(self.band_descriptions):
            attrs["cps:band_descriptions"] = list(self.band_descriptions)
        return attrs

    @classmethod
    def from_attributes(cls, attrs: dict[str, Any]) -> GeoInfo | None:
        """The georeferencing in a group's attributes, or None where it has none."""
        if "spatial:transform" not in attrs:
            return None
        return cls(tuple(float(v) for v in attrs["spatial:transform"]), attrs.get("proj:wkt2"), attrs.get("proj:code"),
                   attrs.get("cps:nodata"), tuple(attrs.get("cps:band_descriptions", ())))

    def to_source_metadata(self) -> dict[str, Any]:
        """A JSON-able form, for a source's metadata (``metadata["geo"]``)."""
        return {"transform": list(self.transform), "crs_wkt": self.crs_wkt, "crs_code": self.crs_code,
                "nodata": self.nodata, "band_descriptions": list(self.band_descriptions)}

    @classmethod
    def from_source_metadata(cls, meta: dict[str, Any] | None) -> GeoInfo | None:
        if not meta:
            return None
        return cls(tuple(meta["transform"]), meta.get("crs_wkt"), meta.get("crs_code"), meta.get("nodata"),
                   tuple(meta.get("band_descriptions") or ()))


def write_geo(group: Any, geo: GeoInfo | None, height: int, width: int) -> None:
    """Add the georeferencing attributes of a ``height`` x ``width`` level to its group."""
    if geo is not None:
        group.update_attributes(geo.attributes(height, width))


def to_xarray(data: Any, geo: GeoInfo | None, name: str, band_names: list[str] | None = None):
    """A dask array ``[H, W, B]`` -> a lazy ``xarray.DataArray`` ``(band, y, x)``.

    ``y``/``x`` are pixel-centre coordinates from the transform where it is north-up (no rotation
    terms); for a rotated transform they are pixel indices and only the transform places them.
    The CRS and transform go in a ``spatial_ref`` coordinate as rioxarray and GDAL's CF writer lay
    it out (``crs_wkt``, ``spatial_ref``, ``GeoTransform``), so ``da.rio.crs`` and
    ``da.rio.transform()`` give the source's values where rioxarray is installed; ``_FillValue``
    is the nodata value.
    """
    try:
        import xarray as xr
    except ImportError:
        raise ImportError("to_xarray needs xarray: pip install 'cps-tiles[geo]'") from None
    height, width, bands = data.shape
    coords: dict[str, Any] = {"band": band_names or list(range(1, bands + 1))}
    attrs: dict[str, Any] = {}
    if geo is not None:
        a, b, c, d, e, f = geo.transform
        if b == 0 and d == 0:
            coords["x"] = c + a * (np.arange(width) + 0.5)
            coords["y"] = f + e * (np.arange(height) + 0.5)
        ref = {"GeoTransform": " ".join(repr(v) for v in (c, a, b, f, d, e))}
        if geo.crs_wkt:
            ref.update(crs_wkt=geo.crs_wkt, spatial_ref=geo.crs_wkt)
        coords["spatial_ref"] = xr.Variable((), 0, ref)
        attrs["grid_mapping"] = "spatial_ref"
        if geo.nodata is not None:
            attrs["_FillValue"] = geo.nodata
    return xr.DataArray(data.transpose(2, 0, 1), dims=("band", "y", "x"), coords=coords, name=name, attrs=attrs)
