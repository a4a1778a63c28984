"""Failure modes: damaged stores, hostile inputs, other models, determinism, concurrent readers."""

import contextlib
import errno
import hashlib
import multiprocessing
import shutil
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import pyvips
import zarr
from conftest import TINY, cli, examples, smooth_image
from hypothesis import given, settings
from hypothesis import strategies as st

import cps_tiles
from cps_tiles.errors import DamagedChunkError, SourceError, StoreError
from cps_tiles.store.layout import StoreMeta
from cps_tiles.store.verify import verify_store


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Converted once per module; each test gets its own copy to damage (``store``)."""
    pixels = smooth_image(300, 400, seed=21)
    img = cps_tiles.convert(pixels, tmp_path_factory.mktemp("pristine") / "s.zarr", codec=TINY, chunk=64, tile=128,
                            progress=False)
    return Path(img.path), np.asarray(img)


@pytest.fixture
def store(pristine, tmp_path):
    path, whole = pristine
    shutil.copytree(path, tmp_path / "s.zarr")
    return tmp_path / "s.zarr", whole


_cli = cli


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "garbage"])
def test_damaged_chunk_is_named_and_contained(store, damage):
    path, whole = store
    key = path / "latent" / "c" / "0" / "2" / "3"  # latent cells 8..12 x 12..16 = pixels 128..192 x 192..256
    data = key.read_bytes()
    if damage == "flip":
        key.write_bytes(data[:40] + bytes([data[40] ^ 0x10]) + data[41:])
    elif damage == "truncate":
        key.write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        key.unlink()
    else:
        key.write_bytes(b"\x00" * 64)
    img = cps_tiles.open(path)
    with pytest.raises(DamagedChunkError, match=r"latent/c/0/2/3"):
        img[150:160, 200:210]
    with pytest.raises(DamagedChunkError, match=r"latent/c/0/2/3"):
        img[100:140, 150:170]  # only the halo reaches the damaged chunk
    assert np.array_equal(img[0:64, 0:128], whole[0:64, 0:128])  # far away: still exact
    with pytest.raises(DamagedChunkError):
        img.to_dask().compute()
    salvage = cps_tiles.open(path, on_error="fill", fill_value=0)
    out = np.asarray(salvage)
    assert salvage.damaged == {"latent/c/0/2/3"}
    assert (out[128:192, 192:256] == 0).all() and np.array_equal(out[:64], whole[:64])
    report = verify_store(path)
    assert not report.ok and "latent/c/0/2/3" in report.problems[0]
    r = _cli("verify", path)
    assert r.returncode == 1 and "DAMAGED" in r.stdout
    r = _cli("decode", path, path.parent / "x.png")
    assert r.returncode == 1 and "latent/c/0/2/3" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("decode", path, path.parent / "x.png", "--salvage")
    assert r.returncode == 0 and "latent/c/0/2/3" in r.stderr


def test_verify_clean_store(store):
    path, _ = store
    assert verify_store(path).ok
    r = _cli("verify", path)
    assert r.returncode == 0 and "OK" in r.stdout


@pytest.mark.parametrize("edit,needle", [
    (lambda c: {**c, "format": 3}, "format"),
    (lambda c: {**c, "sha256": "1" * 64}, "sha256"),
    (lambda c: {**c, "codec": "no-such-codec"}, "not found"),
    (lambda c: {**c, "height": -5}, "inconsistent"),
    (lambda c: {k: v for k, v in c.items() if k != "width"}, "malformed"),
    (lambda c: "nonsense", "not a cps-tiles store"),
])
def test_other_model_or_format_is_refused(store, edit, needle):
    path, _ = store
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["cps"] = edit(dict(g.attrs["cps"]))
    with pytest.raises(Exception, match=needle):
        cps_tiles.open(path)
    r = _cli("info", path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


@settings(max_examples=examples(200), deadline=None)
@given(st.dictionaries(st.sampled_from(["format", "codec", "sha256", "quality", "height", "width", "bands", "chunk",
                                        "tile", "rho", "padded", "complete", "alpha", "source", "zzz"]),
                       json_values, max_size=15))
def test_fuzz_store_metadata_only_store_error(attrs):
    group = type("G", (), {"attrs": {"cps": {"format": 1, **attrs}}})()
    with contextlib.suppress(StoreError):
        StoreMeta.read(group, "fuzz")


def test_hostile_and_odd_inputs(tmp_path):
    # decompression bomb: a PNG header claiming 50000 x 50000 pixels over 16 x 16 of data
    pyvips.Image.new_from_array(np.zeros((16, 16, 3), np.uint8)).pngsave(str(tmp_path / "small.png"))
    d = bytearray((tmp_path / "small.png").read_bytes())
    struct.pack_into(">II", d, 16, 50000, 50000)
    struct.pack_into(">I", d, 29, zlib.crc32(bytes(d[12:29])))
    (tmp_path / "bomb.png").write_bytes(d)
    with pytest.raises(SourceError, match="cannot read pixels"):
        cps_tiles.convert(tmp_path / "bomb.png", tmp_path / "bomb.zarr", codec=TINY, progress=False)
    with pytest.raises(StoreError, match="unfinished"):  # never claims to be complete
        cps_tiles.open(tmp_path / "bomb.zarr")
    # CMYK
    cmyk = pyvips.Image.new_from_array(np.full((20, 20, 4), 100, np.uint8)).copy(interpretation="cmyk")
    cmyk.tiffsave(str(tmp_path / "cmyk.tif"))
    with pytest.raises(SourceError, match="CMYK"):
        cps_tiles.convert(tmp_path / "cmyk.tif", tmp_path / "c.zarr", codec=TINY, progress=False)
    # palette PNG: expanded to RGB by libvips, converts correctly
    rgb = smooth_image(40, 50, seed=1)
    pyvips.Image.new_from_array(rgb).copy(interpretation="srgb").pngsave(str(tmp_path / "pal.png"), palette=True)
    img = cps_tiles.convert(tmp_path / "pal.png", tmp_path / "pal.zarr", codec=TINY, chunk=64, tile=64, progress=False)
    assert img.shape[:2] == (40, 50)
    # multi-page TIFF: first page by default, another with page=
    pages = [smooth_image(48, 64, seed=s) for s in (1, 2)]
    joined = pyvips.Image.arrayjoin([pyvips.Image.new_from_array(p) for p in pages], across=1).copy(interpretation="srgb")
    joined.set_type(pyvips.GValue.gint_type, "page-height", 48)
    joined.tiffsave(str(tmp_path / "multi.tif"))
    ref = [np.asarray(cps_tiles.convert(p, tmp_path / f"ref{i}.zarr", codec=TINY, chunk=64, tile=64, progress=False))
           for i, p in enumerate(pages)]
    for page in (0, 1):
        img = cps_tiles.convert(tmp_path / "multi.tif", tmp_path / f"p{page}.zarr", codec=TINY, chunk=64, tile=64,
                                progress=False, page=page)
        assert np.array_equal(np.asarray(img), ref[page])
    # an output path below a regular file
    (tmp_path / "file.txt").write_text("x")
    r = _cli("convert", tmp_path / "pal.png", tmp_path / "file.txt" / "out.zarr", "--codec", TINY)
    assert r.returncode == 1 and r.stderr.startswith("cps-tiles: error:") and len(r.stderr.strip().splitlines()) == 1


def test_disk_full_never_leaves_a_complete_store(tmp_path, monkeypatch):
    from zarr.storage import LocalStore

    calls = {"n": 0}
    original = LocalStore.set

    async def failing_set(self, key, value, *args, **kwargs):
        if "/c/" in key:
            calls["n"] += 1
            if calls["n"] > 5:
                raise OSError(errno.ENOSPC, "No space left on device")
        return await original(self, key, value, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "set", failing_set)
    with pytest.raises(OSError, match="No space left"):
        cps_tiles.convert(smooth_image(256, 256), tmp_path / "full.zarr", codec=TINY, chunk=64, tile=64,
                          progress=False, scheduler="sync")
    monkeypatch.setattr(LocalStore, "set", original)
    with pytest.raises(StoreError, match="unfinished"):
        cps_tiles.open(tmp_path / "full.zarr")
    img = cps_tiles.convert(smooth_image(256, 256), tmp_path / "full.zarr", codec=TINY, chunk=64, tile=64,
                            progress=False, resume=True)
    assert verify_store(img.path).ok


DECODE = """
import sys, hashlib, numpy as np, torch
threads, det, precision = int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
torch.set_num_threads(threads)
torch.use_deterministic_algorithms(det)
import cps_tiles
img = cps_tiles.open(sys.argv[1], precision=precision)
lat = np.concatenate([img.read_latent_chunk(i, j).ravel() for i, j in img.chunk_indices()])
print(hashlib.sha256(lat.tobytes()).hexdigest(), hashlib.sha256(np.asarray(img).tobytes()).hexdigest())
"""


@pytest.mark.slow  # fresh processes decoding with the default codec: 20 s a precision
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_deterministic_decoding_across_processes_and_threads(store, precision):
    path, whole = store
    if precision != "float32":
        whole = np.asarray(cps_tiles.open(path, precision=precision))
    outs = set()
    for threads, det in ((1, 0), (2, 0), (2, 1), (1, 1)):
        r = subprocess.run([sys.executable, "-c", DECODE, str(path), str(threads), str(det), precision],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout.strip())
    assert len(outs) == 1
    assert outs.pop().split()[1] == hashlib.sha256(whole.tobytes()).hexdigest()


def _region_worker(args):
    path, regions = args
    img = cps_tiles.open(path, cache_mb=4)
    return [img[y0:y1, x0:x1] for y0, y1, x0, x1 in regions]


def test_concurrent_readers(store):
    path, whole = store
    rng = np.random.default_rng(7)
    regions = [(int(y), int(y) + int(h), int(x), int(x) + int(w)) for y, x, h, w in
               zip(rng.integers(0, 300, 80), rng.integers(0, 400, 80), rng.integers(1, 150, 80), rng.integers(1, 150, 80))]
    shared = cps_tiles.open(path, cache_mb=2)  # small cache: evictions happen under contention
    errors = []

    def read(k):
        y0, y1, x0, x1 = regions[k]
        if not np.array_equal(shared[y0:y1, x0:x1], whole[y0:y1, x0:x1]):
            errors.append(regions[k])

    # spawn, not fork: forking a process whose torch/OpenMP threads hold locks can deadlock
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as procs:
        futures = [procs.submit(_region_worker, (str(path), regions[p::2])) for p in range(2)]
        with ThreadPoolExecutor(8) as threads:
            list(threads.map(read, range(len(regions))))
        for p, f in enumerate(futures):
            for (y0, y1, x0, x1), out in zip(regions[p::2], f.result()):
                assert np.array_equal(out, whole[y0:y1, x0:x1])
    assert not errors
