"""Satellite rasters: georeferencing through convert -> open -> to_xarray and -> export --cog,
16-bit and multi-band band groups, nodata kept exactly. GeoTIFFs are built here with rasterio."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import TINY, cli

import cps_tiles
from cps_tiles.errors import SourceError
from cps_tiles.store.raster import CPSRaster, from_codes, to_codes

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine  # noqa: E402

UTM = "EPSG:32633"
NORTH_UP = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)
ROTATED = Affine.translation(10, 45) @ Affine.rotation(15) @ Affine.scale(0.001, -0.001)


def field(h: int, w: int, bands: int, top: float, seed: int = 0) -> np.ndarray:
    """Smooth, band-varying values in [1, top] with a little noise: ``float [h, w, bands]``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    out = np.stack([(np.sin(x / (13 + k) + k) * np.cos(y / (19 + k) - k) + 1) / 2 for k in range(bands)], -1)
    return np.clip(1 + out * (top - 1) + rng.normal(0, top * 0.005, out.shape), 1, top)


def write_tif(path, pixels: np.ndarray, crs: str, transform: Affine, nodata: float | None = None) -> None:
    h, w, b = pixels.shape
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=b, dtype=pixels.dtype.name, crs=crs,
                       transform=transform, nodata=nodata) as ds:
        ds.write(np.moveaxis(pixels, 2, 0))
        ds.descriptions = tuple(f"B{k + 1}" for k in range(b))


def assert_same_georeferencing(a, b) -> None:
    """CRS and transform of two rasterio-like objects, exactly."""
    assert a.crs == b.crs
    assert tuple(a.transform) == pytest.approx(tuple(b.transform), rel=0, abs=0)


@pytest.mark.parametrize("crs,transform,size", [("EPSG:4326", ROTATED, (97, 131)), (UTM, NORTH_UP, (300, 517)),
                                                ("EPSG:4326", Affine(0.25, 0, -180, 0, -0.25, 90), (1, 1))])
def test_rgb_geotiff_keeps_its_georeferencing(tmp_path, crs, transform, size):
    rioxarray = pytest.importorskip("rioxarray")  # noqa: F841  (adds .rio)
    h, w = size
    write_tif(tmp_path / "in.tif", field(h, w, 3, 255).astype(np.uint8), crs, transform)
    img = cps_tiles.convert(tmp_path / "in.tif", tmp_path / "s.zarr", codec=TINY, progress=False)
    with rasterio.open(tmp_path / "in.tif") as src:
        assert img.geo.crs_code == crs and rasterio.crs.CRS.from_wkt(img.geo.crs_wkt) == src.crs
        assert img.geo.transform == tuple(src.transform)[:6]
        corners = [src.transform @ (c, r) for c in (0, w) for r in (0, h)]
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        assert img.geo.bounds(h, w) == pytest.approx((min(xs), min(ys), max(xs), max(ys)))
        da = img.to_xarray()
        assert da.dims == ("band", "y", "x") and da.shape == (3, h, w)
        assert da.rio.crs == src.crs and tuple(da.rio.transform()) == tuple(src.transform)
        if transform.b == 0:
            assert da.rio.bounds() == pytest.approx(tuple(src.bounds))
        assert np.array_equal(np.asarray(da.transpose("y", "x", "band")), img[:, :])
        # each pyramid level: same origin, pixels 2**k larger
        for level in img.levels[1:]:
            assert level.geo.transform == tuple(src.transform @ Affine.scale(2**level.level))[:6]
        # export --cog: CRS and transform exactly, a valid COG, the stored levels as overviews
        assert cli("export", tmp_path / "s.zarr", tmp_path / "out.tif", "--cog").returncode == 0
        with rasterio.open(tmp_path / "out.tif") as cog:
            assert_same_georeferencing(cog, src)
            assert cog.overviews(1) == [2**k for k in range(1, img.level_count)]
            assert np.array_equal(np.moveaxis(cog.read(), 0, 2), img[:, :])
    if max(h, w) > 256:
        from rio_cogeo.cogeo import cog_validate

        valid, errors, _ = cog_validate(str(tmp_path / "out.tif"))
        assert valid, errors


def test_info_prints_crs_bounds_and_resolution(tmp_path):
    write_tif(tmp_path / "in.tif", field(40, 60, 3, 255).astype(np.uint8), UTM, NORTH_UP)
    cps_tiles.convert(tmp_path / "in.tif", tmp_path / "s.zarr", codec=TINY, progress=False)
    out = cli("info", tmp_path / "s.zarr").stdout
    assert "crs       EPSG:32633" in out and "x 500000 .. 500600, y 4599600 .. 4600000" in out and "10 x 10" in out


@pytest.mark.parametrize("bands,groups,expect", [(4, None, [[0, 1, 2], [3]]), (12, None, [[0, 1, 2], [3, 4, 5], [6, 7, 8],
                                                 [9, 10, 11]]), (6, "3,2,1", [[0, 1, 2], [3, 4], [5]])])
def test_uint16_multiband_with_nodata_round_trips(tmp_path, bands, groups, expect):
    pytest.importorskip("rioxarray")
    h, w = 75, 133  # odd sizes
    pixels = field(h, w, bands, 10000, seed=bands).astype(np.uint16)
    pixels[:20, :30] = 0  # nodata
    pixels[50, 60] = [0] + [7] * (bands - 1)  # a data pixel with one band at the nodata value
    write_tif(tmp_path / "in.tif", pixels, "EPSG:4326", ROTATED, nodata=0)
    args = ["convert", tmp_path / "in.tif", tmp_path / "m.zarr", "--codec", TINY, "--quiet"]
    assert cli(*args, *(["--band-groups", groups] if groups else [])).returncode == 0
    img = cps_tiles.open(tmp_path / "m.zarr")
    assert isinstance(img, CPSRaster) and img.meta.groups == expect
    assert img.shape == (h, w, bands) and img.dtype == np.uint16
    decoded = img[:, :]
    valid = ~np.all(pixels == 0, axis=2)
    assert np.all(decoded[~valid] == 0)  # nodata exactly
    assert not np.any(np.all(decoded[valid] == 0, axis=1))  # no data pixel reads as nodata
    for level in img.levels[1:]:
        small = np.asarray(level)
        k = 2**level.level
        mask = np.zeros((-(-h // k), -(-w // k)), bool)
        np.logical_or.at(mask, (np.arange(h)[:, None] // k, np.arange(w)[None, :] // k), valid)
        assert np.all(small[~mask] == 0) and not np.any(np.all(small[mask] == 0, axis=1))
    # to_xarray: the source's CRS, transform and nodata; export --cog likewise, with overviews
    da = img.to_xarray()
    with rasterio.open(tmp_path / "in.tif") as src:
        assert da.rio.crs == src.crs and tuple(da.rio.transform()) == tuple(src.transform) and da.rio.nodata == 0
        assert np.array_equal(np.asarray(da.transpose("y", "x", "band")), decoded)
        assert cli("export", tmp_path / "m.zarr", tmp_path / "out.tif").returncode == 0
        with rasterio.open(tmp_path / "out.tif") as cog:
            assert_same_georeferencing(cog, src)
            assert cog.nodata == 0 and cog.count == bands and cog.dtypes[0] == "uint16"
            assert cog.overviews(1) == [2**k for k in range(1, img.level_count)]
            assert np.array_equal(np.moveaxis(cog.read(), 0, 2), decoded)
    # the error the store reports: every band, in source units, against the band's range
    assert [e["band"] for e in img.meta.errors] == list(range(1, bands + 1))
    assert all(e["pixels"] == valid.sum() for e in img.meta.errors)
    for e, b in zip(img.meta.errors, range(bands)):
        diff = (decoded[..., b].astype(float) - pixels[..., b])[valid]
        assert e["mae"] == pytest.approx(np.abs(diff).mean(), abs=1e-3) and e["max_abs"] == np.abs(diff).max()
    out = cli("info", tmp_path / "m.zarr").stdout
    assert f"{bands} band(s), uint16" in out and "PSNR" in out and "nodata 0" in out


def test_twelve_band_uint16_with_the_real_codec_reports_its_error(tmp_path):
    """A 12-band uint16 raster round-trips through the default codec with every band's error
    reported; at quality 8 a smooth field stays within a few percent of each band's range."""
    pixels = field(120, 140, 12, 10000, seed=3).astype(np.uint16)
    write_tif(tmp_path / "in.tif", pixels, UTM, NORTH_UP)
    img = cps_tiles.convert(tmp_path / "in.tif", tmp_path / "m.zarr", quality=8, progress=False)
    decoded = img[:, :]
    ranges = np.array(img.meta.ranges)
    assert np.allclose(ranges, [[pixels[..., b].min(), pixels[..., b].max()] for b in range(12)])
    for e, b in zip(img.meta.errors, range(12)):
        rms = np.sqrt(np.mean((decoded[..., b].astype(float) - pixels[..., b]) ** 2))
        assert e["psnr_db"] == pytest.approx(20 * np.log10((ranges[b, 1] - ranges[b, 0]) / rms), abs=0.02)
        assert e["psnr_db"] > 30


def test_band_range_and_linear_maps(tmp_path):
    values = np.array([[[0, 100, 65535]]], np.float64)
    ranges = [(0.0, 1000.0), (50.0, 150.0), (0.0, 65535.0)]
    codes = to_codes(values, ranges)
    assert codes.tolist() == [[[0, 128, 255]]]
    assert from_codes(codes, ranges, np.uint16).tolist() == [[[0, 100, 65535]]]
    pixels = field(30, 40, 4, 4000).astype(np.uint16)
    write_tif(tmp_path / "in.tif", pixels, UTM, NORTH_UP)
    img = cps_tiles.convert(tmp_path / "in.tif", tmp_path / "r.zarr", codec=TINY, band_range="0,5000", progress=False)
    assert img.meta.ranges == [[0.0, 5000.0]] * 4
    for bad, message in (("5,1", "LO < HI"), ("x", "LO,HI"), ("0,1;0,2", "once per band")):
        with pytest.raises(SourceError, match=message):
            cps_tiles.convert(tmp_path / "in.tif", tmp_path / "bad.zarr", codec=TINY, band_range=bad, progress=False)
    with pytest.raises(SourceError, match="adding up"):
        cps_tiles.convert(tmp_path / "in.tif", tmp_path / "bad.zarr", codec=TINY, band_groups="3,3", progress=False)
    result = cli("convert", tmp_path / "in.tif", tmp_path / "bad.zarr", "--band-groups", "4", "--codec", TINY)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "1 to 3 bands" in result.stderr


def test_without_rasterio_the_error_names_the_extra(tmp_path, monkeypatch):
    write_tif(tmp_path / "in.tif", field(20, 20, 3, 255).astype(np.uint8), UTM, NORTH_UP)
    monkeypatch.setitem(sys.modules, "rasterio", None)
    result = cli("convert", tmp_path / "in.tif", tmp_path / "s.zarr", "--codec", TINY)
    assert result.returncode == 1 and "pip install 'cps-tiles[geo]'" in result.stderr


def test_verify_decode_and_a_damaged_mask(tmp_path):
    import tifffile

    pixels = field(300, 280, 4, 3000).astype(np.uint16)
    pixels[:256, :256] = 0  # a whole chunk of nodata: its mask chunk is still written
    write_tif(tmp_path / "in.tif", pixels, UTM, NORTH_UP, nodata=0)
    cps_tiles.convert(tmp_path / "in.tif", tmp_path / "m.zarr", codec=TINY, progress=False)
    result = cli("verify", tmp_path / "m.zarr")
    assert result.returncode == 0 and "OK" in result.stdout
    assert cli("decode", tmp_path / "m.zarr", tmp_path / "out.tif").returncode == 0
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), np.asarray(cps_tiles.open(tmp_path / "m.zarr")))
    assert "decodes to .tif only" in cli("decode", tmp_path / "m.zarr", tmp_path / "out.png").stderr
    (tmp_path / "m.zarr" / "mask" / "0" / "c" / "0" / "0").unlink()
    result = cli("verify", tmp_path / "m.zarr")
    assert result.returncode == 1 and "chunk mask/0/c/0/0 is missing" in result.stdout
    result = cli("decode", tmp_path / "m.zarr", tmp_path / "out.tif")  # never read as "all nodata"
    assert result.returncode == 1 and "mask/0/c/0/0 is missing" in result.stderr


def test_a_multiband_store_reads_over_http(tmp_path):
    from servers import http_server

    pixels = field(300, 270, 5, 4000).astype(np.uint16)  # two levels
    pixels[:10] = 0
    write_tif(tmp_path / "in.tif", pixels, UTM, NORTH_UP, nodata=0)
    local = cps_tiles.convert(tmp_path / "in.tif", tmp_path / "m.zarr", codec=TINY, progress=False)
    with http_server(tmp_path) as (url, _):
        remote = cps_tiles.open(f"{url}/m.zarr")
        assert isinstance(remote, CPSRaster) and remote.geo == local.geo
        assert np.array_equal(remote[:, :], local[:, :]) and np.array_equal(remote.levels[1][:, :], local.levels[1][:, :])


def test_multiband_writes_follow_the_overwrite_rules(tmp_path):
    from cps_tiles.errors import StoreError

    write_tif(tmp_path / "in.tif", field(30, 40, 4, 4000).astype(np.uint16), UTM, NORTH_UP)
    cps_tiles.convert(tmp_path / "in.tif", tmp_path / "m.zarr", codec=TINY, progress=False)
    with pytest.raises(StoreError, match="already exists"):
        cps_tiles.convert(tmp_path / "in.tif", tmp_path / "m.zarr", codec=TINY, progress=False)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "precious.txt").write_text("x")
    with pytest.raises(StoreError, match="not a cps-tiles store"):
        cps_tiles.convert(tmp_path / "in.tif", tmp_path / "keep", codec=TINY, overwrite=True, progress=False)
    assert (tmp_path / "keep" / "precious.txt").exists()
    # a plain store may replace a multi-band one (and back) with overwrite: both are stores
    cps_tiles.convert(field(30, 40, 3, 255).astype(np.uint8), tmp_path / "m.zarr", codec=TINY, overwrite=True,
                      progress=False)
    assert not isinstance(cps_tiles.open(tmp_path / "m.zarr"), CPSRaster)
    cps_tiles.convert(tmp_path / "in.tif", tmp_path / "m.zarr", codec=TINY, overwrite=True, progress=False)
    with pytest.raises(StoreError, match="salvage"):
        cps_tiles.open(tmp_path / "m.zarr", on_error="fill")
