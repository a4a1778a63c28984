"""Pyramid levels: sizes, the area-averaged source of each level, region exactness on every level,
the OpenSlide-compatible slide object, and adding levels to a store that has none."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, cli, smooth_image

import cps_tiles
from cps_tiles.pipeline.source import ArraySource, DownsampledSource
from cps_tiles.store.layout import level_shapes

FIXTURE = Path(__file__).resolve().parent / "fixture" / "stores"


@pytest.mark.parametrize("size,chunk,expected", [
    ((1, 1), 256, [(1, 1)]),
    ((17, 300), 256, [(17, 300), (9, 150)]),
    ((2268, 1512), 256, [(2268, 1512), (1134, 756), (567, 378), (284, 189), (142, 95)]),
    ((256, 256), 256, [(256, 256)]),
    ((257, 3), 64, [(257, 3), (129, 2), (65, 1), (33, 1)]),
])
def test_level_sizes(size, chunk, expected):
    assert level_shapes(*size, chunk) == expected
    assert level_shapes(*size, chunk, levels=1) == expected[:1]


def test_levels_are_area_averages_of_the_source():
    a = np.random.default_rng(3).integers(0, 256, (37, 53, 4)).astype(np.uint8)
    level = DownsampledSource(ArraySource(a), 4)
    out = level.read(0, level.height, 0, level.width)
    assert (level.height, level.width) == (10, 14)
    assert np.array_equal(out[2, 3], np.rint(a[8:12, 12:16].reshape(-1, 4).mean(0)).astype(np.uint8))
    assert np.array_equal(out[9, 13], np.rint(a[36:, 52:].reshape(-1, 4).mean(0)).astype(np.uint8))  # partial box


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    d = tmp_path_factory.mktemp("pyramid")
    pixels = smooth_image(333, 130, bands=4, seed=41)
    img = cps_tiles.convert(pixels, d / "p.zarr", codec=TINY, chunk=64, tile=64, progress=False)
    return d / "p.zarr", img, pixels


def test_every_level_decodes_regions_exactly(pyramid):
    _, img, pixels = pyramid
    assert [lv.shape for lv in img.levels] == [(333, 130, 4), (167, 65, 4), (84, 33, 4), (42, 17, 4)]
    for lv in img.levels:
        whole = np.asarray(lv)
        h, w = lv.shape[:2]
        for y0, y1, x0, x1 in ((0, h, 0, w), (h // 3, h - 1, 1, w // 2), (h - 1, h, w - 1, w)):
            assert np.array_equal(lv[y0:y1, x0:x1], whole[y0:y1, x0:x1])
        assert np.array_equal(lv.to_dask().compute(), whole)
        # alpha is kept losslessly at every level, as the area average of the source's
        source = DownsampledSource(ArraySource(pixels), 2**lv.level)
        assert np.array_equal(whole[..., 3], source.read(0, h, 0, w)[..., 3])


def test_info_and_verify_cover_every_level(pyramid):
    path, _, _ = pyramid
    r = cli("info", path, "--json")
    info = json.loads(r.stdout)
    assert [d["level"] for d in info["levels_detail"]] == [0, 1, 2, 3] and 0 < info["pyramid_share"] < 0.5
    r = cli("verify", path)
    assert r.returncode == 0 and "OK" in r.stdout
    chunk = path / "levels" / "2" / "latent" / "c" / "0" / "1" / "0"
    data = chunk.read_bytes()
    chunk.unlink()
    try:
        damaged = cli("verify", path)
        assert damaged.returncode == 1 and "levels/2/latent/c/0/1/0 is missing" in damaged.stdout
    finally:
        chunk.write_bytes(data)


def test_openslide_semantics(pyramid):
    path, img, _ = pyramid
    with cps_tiles.CPSSlide(path) as slide:
        assert slide.level_count == 4 and slide.dimensions == (130, 333)
        assert slide.level_dimensions == ((130, 333), (65, 167), (33, 84), (17, 42))
        assert slide.level_downsamples[0] == 1.0 and abs(slide.level_downsamples[1] - 2) < 0.02
        assert slide.get_best_level_for_downsample(1.5) == 0 and slide.get_best_level_for_downsample(4.1) == 2
        assert slide.get_best_level_for_downsample(100) == 3
        region = np.asarray(slide.read_region((20, 40), 0, (30, 10)))
        assert region.shape == (10, 30, 4) and np.array_equal(region, img[40:50, 20:50])
        # level-0 coordinates, level-1 pixels; partly outside the slide: transparent there
        region = np.asarray(slide.read_region((120, 320), 1, (8, 8)))
        inside = img.levels[1][160:167, 60:65]
        assert np.array_equal(region[:7, :5][inside[..., 3] > 0], inside[inside[..., 3] > 0])
        assert not region[7:].any() and not region[:, 5:].any()
        assert slide.get_thumbnail((40, 40)).size[1] == 40
        assert slide.properties["openslide.vendor"] == "cps-tiles" and slide.associated_images == {}
        with pytest.raises(ValueError, match="level 4 does not exist"):
            slide.read_region((0, 0), 4, (1, 1))


def test_pyramid_command_upgrades_a_format_1_store(tmp_path):
    """A store written before levels existed (committed fixture) gains them; level 0 is untouched."""
    store = tmp_path / "old.zarr"
    shutil.copytree(FIXTURE / "r6-q2.5.zarr", store)
    before = {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    old = cps_tiles.open(store)
    assert old.level_count == 1
    pixels = np.asarray(old)
    r = cli("pyramid", store)
    assert r.returncode == 0 and "2 pyramid level(s) added" in r.stdout, r.stderr
    img = cps_tiles.open(store)
    assert [lv.shape for lv in img.levels] == [(150, 230, 3), (75, 115, 3), (38, 58, 3)]
    assert img.meta.format == 2
    assert np.array_equal(np.asarray(img), pixels)
    assert all((store / k).read_bytes() == v for k, v in before.items() if k.name != "zarr.json" or k.parent != Path("."))
    assert cli("pyramid", store).stdout.endswith("nothing to do\n")
    assert cli("verify", store).returncode == 0


def test_svs_associated_images_round_trip_bit_exactly(tmp_path):
    """An SVS-like multi-page TIFF (built here: no real slide ships in a package we install): its
    label, macro and thumbnail come back bit-exactly, its MPP and objective power as properties."""
    import tifffile

    rng = np.random.default_rng(5)
    main = smooth_image(300, 400, seed=51)
    thumb = main[::4, ::4].copy()
    label = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    macro = rng.integers(0, 256, (50, 120, 3), dtype=np.uint8)
    path = tmp_path / "slide.svs"
    with tifffile.TiffWriter(path) as tif:
        tif.write(main, tile=(128, 128), photometric="rgb",
                  description="Aperio Image Library v12.0.15 \n400x300 [0,0 400x300] (128x128) JPEG/RGB Q=70|"
                              "AppMag = 20|MPP = 0.4990|Filename = test")
        tif.write(thumb, photometric="rgb", description="Aperio Image Library v12.0.15 \n400x300 -> 100x75")
        tif.write(label, photometric="rgb", description="Aperio Image Library v12.0.15\nlabel 80x60")
        tif.write(macro, photometric="rgb", description="Aperio Image Library v12.0.15\nmacro 120x50")
    cps_tiles.convert(path, tmp_path / "s.zarr", codec=TINY, chunk=64, tile=128, progress=False)
    with cps_tiles.CPSSlide(tmp_path / "s.zarr") as slide:
        images = slide.associated_images
        assert sorted(images) == ["label", "macro", "thumbnail"]
        assert np.array_equal(np.asarray(images["label"]), label) and np.array_equal(np.asarray(images["macro"]), macro)
        assert np.array_equal(np.asarray(images["thumbnail"]), thumb)
        props = slide.properties
        assert props["openslide.mpp-x"] == "0.499" and props["openslide.objective-power"] == "20.0"
        assert props["tiff.ImageDescription"].startswith("Aperio Image Library")
    r = cli("reshard", tmp_path / "s.zarr", tmp_path / "r.zarr", "--shard", "128")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(cps_tiles.open(tmp_path / "r.zarr").associated_images["label"], label)


def test_plain_zarr_reads_every_levels_latent_in_a_fresh_process(pyramid):
    import subprocess
    import sys

    path, img, _ = pyramid
    code = ("import zarr, sys\n"
            f"g = zarr.open({str(path)!r}, mode='r')\n"
            "print([tuple(g[p].shape) for p in ('latent', 'levels/1/latent', 'levels/2/latent', 'levels/3/latent')])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str([tuple(lv.latent.shape) for lv in img.levels])
