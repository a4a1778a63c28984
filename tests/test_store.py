"""The Zarr store: exact region reads, dask, zarr.open in a fresh process, inputs of all kinds."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import pyvips
import torch
import zarr
from conftest import TINY, smooth_image

import cps_tiles
from cps_tiles.errors import SourceError, StoreError
from cps_tiles.store.reader import CPSImage
from cps_tiles.transforms.tiling import to_pixels
from cps_tiles.transforms.weights import load_codec


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A ~1500x1100 image stored with 128-px chunks, and its whole-image decode."""
    pixels = smooth_image(1100, 1500, seed=5)
    path = tmp_path_factory.mktemp("big") / "img.zarr"
    img = cps_tiles.convert(pixels, path, codec=TINY, quality=6, chunk=128, tile=256, progress=False)
    return pixels, img, np.asarray(img)


def test_50_random_regions_equal_whole_decode(big):
    _, img, whole = big
    assert whole.shape == (1100, 1500, 3) and whole.dtype == np.uint8
    rng = np.random.default_rng(0)
    for _ in range(50):
        y0, x0 = int(rng.integers(0, 1100)), int(rng.integers(0, 1500))
        y1, x1 = y0 + int(rng.integers(1, 400)), x0 + int(rng.integers(1, 400))
        assert np.array_equal(img[y0:y1, x0:x1], whole[y0:y1, x0:x1]), (y0, y1, x0, x1)
    fresh = cps_tiles.open(img.path)  # cold caches, other decode order
    assert np.array_equal(fresh[1000:1100, 1400:1500], whole[1000:1100, 1400:1500])


def test_to_dask_equals_whole(big):
    _, img, whole = big
    arr = img.to_dask()
    assert isinstance(arr, da.Array) and arr.shape == whole.shape and arr.dtype == np.uint8
    assert np.array_equal(arr.compute(scheduler="threads"), whole)


def test_whole_decode_matches_whole_latent_synthesis(big):
    """The stitched per-chunk decode equals one synthesis of the whole latent (CPS, no seams)."""
    _, img, whole = big
    latent = torch.from_numpy(img.latent[:].astype(np.float32))[None]
    ref = to_pixels(img.codec.model.synthesis(latent, img.meta.quality))[:1100, :1500]
    diff = np.abs(ref.astype(int) - whole)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4  # float rounding at .5 only


def test_numpy_style_indexing(big):
    _, img, whole = big
    assert img.shape == (1100, 1500, 3) and img.dtype == np.uint8
    assert np.array_equal(img[:, :], whole)
    assert np.array_equal(img[-10:, 1490:5000], whole[-10:, 1490:5000])
    assert np.array_equal(img[5], whole[5]) and np.array_equal(img[5, 7], whole[5, 7])
    assert np.array_equal(img[..., 1], whole[..., 1])
    assert img[2000:3000, :].shape == (0, 1500, 3)
    with pytest.raises(IndexError, match="step"):
        img[::2, :]
    with pytest.raises(IndexError):
        img[1100]


def test_chunk_cache_avoids_redecoding(big):
    _, img, _ = big
    fresh = cps_tiles.open(img.path)
    calls = []
    original = fresh._decode_chunk
    fresh._decode_chunk = lambda ij, data, block=None: calls.append(ij) or original(ij, data, block)
    fresh[0:100, 0:100]
    n = len(calls)
    assert n == len(set(calls)) > 0  # each chunk decoded once, the region's and its halo's
    fresh[20:120, 10:110]  # same chunks: served from cache
    assert len(calls) == n


def test_region_reads_decode_chunks_in_bounded_groups(big, monkeypatch):
    """A region read decodes its fetched chunks together, a group at a time; the image is the same."""
    _, img, whole = big
    monkeypatch.setattr("cps_tiles.store.reader._DECODE_GROUP", 3)
    fresh = cps_tiles.open(img.path, cache_mb=0)
    sizes, original = [], fresh._coder.decode_many
    fresh._coder.decode_many = lambda datas, shapes=None: sizes.append(len(datas)) or original(datas, shapes)
    assert np.array_equal(np.asarray(fresh), whole)
    assert sizes and max(sizes) == 3


def test_zarr_open_in_fresh_process(big):
    _, img, _ = big
    expected = img.latent[:, :5, :5]
    code = (f"import zarr, numpy as np\ng = zarr.open({img.path!r}, mode='r')\n"
            "a = g['latent'][:, :5, :5]\nprint(a.dtype, a.shape, int(np.abs(a.astype(int)).sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["int16", f"({expected.shape[0]},", "5,", "5)", str(int(np.abs(expected.astype(int)).sum()))]


def test_metadata_layout(big):
    _, img, _ = big
    g = zarr.open_group(img.path, mode="r")
    cps = g.attrs["cps"]
    assert cps["format"] == 2 and cps["complete"] and cps["height"] == 1100 and cps["width"] == 1500
    assert cps["padded"] == [1104, 1504] and cps["chunk"] == 128 and cps["sha256"] == load_codec(TINY).sha256
    assert g["latent"].shape == (12, 69, 94) and g["latent"].chunks == (12, 8, 8)
    text = open(img.path + "/latent/zarr.json").read()
    assert json.loads(text)["codecs"][0]["name"] == "cps_latent"
    assert "\n" not in text.strip() and "\n" not in open(img.path + "/zarr.json").read().strip()  # one-line JSON
    assert "progress" not in g  # the resume flags go once the store is complete


def test_store_from_before_compact_metadata_still_reads(tmp_path, big):
    """Stores written before session 4 have indented zarr.json files and keep progress/ flags."""
    pixels, img, whole = big
    old = tmp_path / "old.zarr"
    shutil.copytree(img.path, old)
    zarr.open_group(old, mode="r+").create_array("progress", shape=(5, 6), chunks=(1, 1), dtype="uint8", fill_value=1)
    for doc in old.rglob("zarr.json"):
        doc.write_text(json.dumps(json.loads(doc.read_text()), indent=2))
    assert np.array_equal(np.asarray(cps_tiles.open(old)), whole)
    cps_tiles.convert(pixels, old, codec=TINY, quality=6, chunk=128, tile=256, resume=True, progress=False)
    assert np.array_equal(np.asarray(cps_tiles.open(old)), whole)


def test_resume_of_a_complete_store_changes_nothing(big):
    pixels, img, whole = big
    before = {p: p.stat().st_mtime_ns for p in Path(img.path).rglob("*")}
    again = cps_tiles.convert(pixels, img.path, codec=TINY, quality=6, chunk=128, tile=256, resume=True, progress=False)
    assert {p: p.stat().st_mtime_ns for p in Path(img.path).rglob("*")} == before
    assert np.array_equal(np.asarray(again), whole)


@pytest.mark.parametrize("h,w", [(1, 1), (17, 33), (64, 64), (100, 300)])
def test_small_and_odd_sizes(tmp_path, h, w):
    pixels = smooth_image(h, w, seed=h)
    img = cps_tiles.convert(pixels, tmp_path / "s.zarr", codec=TINY, chunk=64, tile=64, progress=False)
    whole = np.asarray(img)
    assert whole.shape == (h, w, 3)
    assert np.array_equal(img[h // 2 :, w // 3 :], whole[h // 2 :, w // 3 :])


def test_gray_and_rgba_and_dask_sources(tmp_path):
    gray = smooth_image(130, 90, bands=1, seed=2)[:, :, 0]
    img = cps_tiles.convert(gray, tmp_path / "g.zarr", codec=TINY, chunk=64, tile=128, progress=False)
    assert img.shape == (130, 90, 1) and np.asarray(img).shape == (130, 90, 1)
    rgba = smooth_image(130, 90, bands=4, seed=3)
    img = cps_tiles.convert(da.from_array(rgba, chunks=50), tmp_path / "a.zarr", codec=TINY, chunk=64, tile=64, progress=False)
    out = np.asarray(img)
    assert out.shape == (130, 90, 4) and np.array_equal(out[:, :, 3], rgba[:, :, 3])  # alpha is lossless
    assert np.array_equal(img.to_dask().compute(), out)


def test_file_formats_stream_through_pyvips(tmp_path):
    import pyvips

    pixels = smooth_image(300, 200, seed=9)
    vim = pyvips.Image.new_from_array(pixels).copy(interpretation="srgb")
    vim.tiffsave(str(tmp_path / "t.tif"), tile=True, pyramid=True, bigtiff=True, tile_width=64, tile_height=64)
    vim.pngsave(str(tmp_path / "t.png"))
    vim.webpsave(str(tmp_path / "t.webp"), lossless=True)
    ref = np.asarray(cps_tiles.convert(pixels, tmp_path / "ref.zarr", codec=TINY, chunk=64, tile=128, progress=False))
    for name in ("t.tif", "t.png", "t.webp"):
        img = cps_tiles.convert(tmp_path / name, tmp_path / f"{name}.zarr", codec=TINY, chunk=64, tile=128, progress=False)
        assert np.array_equal(np.asarray(img), ref), name
        assert img.meta.source["file"] == name


def test_unsupported_inputs_have_clear_errors(tmp_path):
    import pyvips

    with pytest.raises(SourceError, match="float32.*not supported"):  # 16-bit converts (test_geo.py); floats do not
        pyvips.Image.new_from_array(np.full((20, 20), 0.5, np.float32)).tiffsave(str(tmp_path / "f.tif"))
        cps_tiles.convert(tmp_path / "f.tif", tmp_path / "x.zarr", codec=TINY, progress=False)
    with pytest.raises(SourceError, match="2 bands"):
        cps_tiles.convert(np.zeros((20, 20, 2), np.uint8), tmp_path / "x.zarr", codec=TINY, progress=False)
    with pytest.raises(SourceError, match="dtype"):
        cps_tiles.convert(np.zeros((20, 20, 3), np.float32), tmp_path / "x.zarr", codec=TINY, progress=False)
    with pytest.raises(SourceError, match="empty"):
        cps_tiles.convert(np.zeros((0, 20, 3), np.uint8), tmp_path / "x.zarr", codec=TINY, progress=False)


def test_refuses_to_overwrite(tmp_path):
    pixels = smooth_image(40, 40)
    cps_tiles.convert(pixels, tmp_path / "o.zarr", codec=TINY, chunk=64, tile=64, progress=False)
    with pytest.raises(StoreError, match="already exists"):
        cps_tiles.convert(pixels, tmp_path / "o.zarr", codec=TINY, chunk=64, tile=64, progress=False)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "precious.txt").write_text("x")
    with pytest.raises(StoreError, match="not a cps-tiles store"):
        cps_tiles.convert(pixels, tmp_path / "keep", codec=TINY, overwrite=True, progress=False)
    assert (tmp_path / "keep" / "precious.txt").exists()
    (tmp_path / "input.png").write_bytes(b"not really")
    with pytest.raises(StoreError, match="not a cps-tiles store"):  # e.g. convert x.png x.png --overwrite
        cps_tiles.convert(pixels, tmp_path / "input.png", codec=TINY, overwrite=True, progress=False)
    assert (tmp_path / "input.png").read_bytes() == b"not really"
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["x"] = 1  # somebody else's Zarr data
    with pytest.raises(StoreError, match="not a cps-tiles store"):
        cps_tiles.convert(pixels, tmp_path / "other.zarr", codec=TINY, overwrite=True, progress=False)


def test_unfinished_store_is_refused(tmp_path):
    pixels = smooth_image(40, 40)
    img = cps_tiles.convert(pixels, tmp_path / "u.zarr", codec=TINY, chunk=64, tile=64, progress=False)
    g = zarr.open_group(img.path, mode="r+")
    g.attrs["cps"] = {**g.attrs["cps"], "complete": False}
    with pytest.raises(StoreError, match="unfinished"):
        CPSImage(img.path)


def test_source_metadata_pixel_size_and_geotiff(tmp_path):
    import tifffile

    pixels = smooth_image(64, 96, seed=6)
    # 0.25 um pixels: 4000 pixels per mm (libvips' xres/yres unit)
    pyvips.Image.new_from_array(pixels).copy(interpretation="srgb", xres=4000.0, yres=4000.0).tiffsave(
        str(tmp_path / "res.tif"), resunit="cm")
    img = cps_tiles.convert(tmp_path / "res.tif", tmp_path / "res.zarr", codec=TINY, chunk=64, tile=64, progress=False)
    assert img.meta.source["pixel_size_um"] == pytest.approx([0.25, 0.25])
    geo = [(33550, "d", 3, (10.0, 10.0, 0.0), True), (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4200000.0, 0.0), True),
           (34735, "H", 8, (1, 1, 0, 1, 1024, 0, 1, 1), True)]
    tifffile.imwrite(tmp_path / "geo.tif", pixels, photometric="rgb", extratags=geo)
    img = cps_tiles.convert(tmp_path / "geo.tif", tmp_path / "geo.zarr", codec=TINY, chunk=64, tile=64, progress=False)
    g = img.meta.source["geotiff"]
    assert g["model_pixel_scale"] == [10.0, 10.0, 0.0] and g["model_tiepoint"][3:5] == [500000.0, 4200000.0]
    assert zarr.open_group(img.path, mode="r").attrs["cps"]["source"]["geotiff"]["geo_key_directory"][:4] == [1, 1, 0, 1]


def test_codec_directory_outside_the_search_path(tmp_path):
    """convert takes a codec directory anywhere; another process reading the store needs the
    directory on CPS_TILES_CODEC_PATH, and says so."""
    import os

    from conftest import tiny_model

    from cps_tiles.transforms.weights import save_codec

    save_codec(tiny_model(seed=3), tmp_path / "mine" / "my-codec", "my-codec")
    img = smooth_image(96, 130, seed=9)
    store = tmp_path / "s.zarr"
    cps_tiles.convert(img, store, codec=str(tmp_path / "mine" / "my-codec"), chunk=64, tile=64, progress=False)
    here = cps_tiles.open(store)[:, :]
    read = [sys.executable, "-c", "import sys, cps_tiles, numpy as np; np.save(sys.argv[2], cps_tiles.open(sys.argv[1])[:, :])",
            str(store), str(tmp_path / "px.npy")]
    r = subprocess.run(read, capture_output=True, text=True)
    assert r.returncode != 0 and "CPS_TILES_CODEC_PATH" in r.stderr
    env = {**os.environ, "CPS_TILES_CODEC_PATH": str(tmp_path / "mine")}
    subprocess.run(read, check=True, env=env)
    assert np.array_equal(np.load(tmp_path / "px.npy"), here)
