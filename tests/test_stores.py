"""Any zarr store: HTTP (a real server on loopback), S3 (a real S3-compatible server), zip files,
sharded latents, and Store objects, all through the store API and all equal to a local read."""

import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import zarr
from conftest import TINY, cli, smooth_image
from servers import http_server, s3_server

import cps_tiles
from cps_tiles.errors import DamagedChunkError, StoreError
from cps_tiles.store.location import open_location


def files(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same image as a plain store and a sharded one (4 x 4 chunks per shard), and its decode."""
    d = tmp_path_factory.mktemp("stores")
    pixels = smooth_image(300, 420, seed=31)
    plain = cps_tiles.convert(pixels, d / "plain.zarr", codec=TINY, chunk=64, tile=128, progress=False)
    cps_tiles.convert(pixels, d / "sharded.zarr", codec=TINY, chunk=64, tile=128, shard=256, progress=False)
    return d, np.asarray(plain)


REGIONS = [(0, 300, 0, 420), (10, 77, 200, 333), (250, 300, 0, 64), (5, 6, 400, 420)]


def test_sharded_store_is_fewer_objects_same_pixels(stores):
    d, whole = stores
    sharded = cps_tiles.open(d / "sharded.zarr")
    assert sharded.meta.shard == 256 and sharded.latent.shards == (12, 16, 16)
    assert np.array_equal(np.asarray(sharded), whole)
    assert np.array_equal(sharded.to_dask().compute(), whole)
    plain_objects = sum(1 for k in files(d / "plain.zarr") if k.startswith("latent/c"))
    sharded_objects = sum(1 for k in files(d / "sharded.zarr") if k.startswith("latent/c"))
    assert (plain_objects, sharded_objects) == (5 * 7, 2 * 2)
    # the same chunk bitstreams, only packed differently
    a, b = cps_tiles.open(d / "plain.zarr"), sharded
    assert all(a._chunks.fetch([ij])[ij] == b._chunks.fetch([ij])[ij] for ij in a.chunk_indices())


def test_reshard_equals_converting_with_shards(stores, tmp_path):
    """Repacking a plain store's chunks into shards writes the very bytes convert --shard writes."""
    d, whole = stores
    r = cli("reshard", d / "plain.zarr", tmp_path / "re.zarr", "--shard", "256")
    assert r.returncode == 0 and "repacked into" in r.stdout, r.stderr
    assert files(tmp_path / "re.zarr") == files(d / "sharded.zarr")
    assert cli("reshard", d / "sharded.zarr", tmp_path / "back.zarr", "--shard", "0").returncode == 0
    assert files(tmp_path / "back.zarr") == files(d / "plain.zarr")
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(d / "plain.zarr", damaged)
    (damaged / "latent" / "c" / "0" / "1" / "1").unlink()
    r = cli("reshard", damaged, tmp_path / "no.zarr")
    assert r.returncode == 1 and "latent/c/0/1/1 is missing" in r.stderr


def test_sharded_latent_reads_with_plain_zarr_in_a_fresh_process(stores):
    d, _ = stores
    code = ("import zarr, numpy as np, sys\n"
            f"a = zarr.open({str(d / 'sharded.zarr')!r}, mode='r')['latent'][:]\n"
            f"b = zarr.open({str(d / 'plain.zarr')!r}, mode='r')['latent'][:]\n"
            "print(a.shape, np.array_equal(a, b), int(np.abs(a).sum()) > 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "(12, 19, 27) True True", r.stderr


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_sharded_stores_are_byte_identical_across_schedulers(stores, scheduler, tmp_path):
    d, _ = stores
    out = tmp_path / "s.zarr"
    cps_tiles.convert(smooth_image(300, 420, seed=31), out, codec=TINY, chunk=64, tile=128, shard=256, progress=False,
                      scheduler=scheduler)
    assert files(out) == files(d / "sharded.zarr")


def test_sharded_store_on_a_local_cluster(stores, tmp_path):
    from distributed import Client, LocalCluster

    d, _ = stores
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        cps_tiles.convert(smooth_image(300, 420, seed=31), tmp_path / "s.zarr", codec=TINY, chunk=64, tile=128,
                          shard=256, progress=False, client=client)
    assert files(tmp_path / "s.zarr") == files(d / "sharded.zarr")


def test_shard_must_be_a_multiple_of_the_tile(tmp_path):
    import pyvips

    pyvips.Image.new_from_array(smooth_image(64, 64)).copy(interpretation="srgb").pngsave(str(tmp_path / "x.png"))
    r = cli("convert", tmp_path / "x.png", tmp_path / "x.zarr", "--codec", TINY, "--shard", "1000")
    assert r.returncode == 1 and "shard must be a multiple of the tile size 1024" in r.stderr
    with pytest.raises(ValueError, match="multiple of the tile"):
        cps_tiles.convert(smooth_image(64, 64), tmp_path / "y.zarr", codec=TINY, chunk=64, tile=128, shard=192,
                          progress=False)


@pytest.mark.parametrize("name", ["plain", "sharded"])
def test_http_reads_equal_local_reads(stores, name):
    d, whole = stores
    with http_server(d) as (url, state):
        img = cps_tiles.open(f"{url}/{name}.zarr")
        for y0, y1, x0, x1 in REGIONS:
            assert np.array_equal(img[y0:y1, x0:x1], whole[y0:y1, x0:x1])
        assert np.array_equal(img.to_dask().compute(scheduler="threads"), whole)
        assert all(r.startswith(("GET", "HEAD")) for r in state.requests)


def test_http_region_fetches_its_chunks_concurrently(stores):
    """With 0.3 s added to every request, a region over 20 chunks (halo included) takes a few round
    trips, not twenty."""
    d, whole = stores
    with http_server(d) as (url, state):
        img = cps_tiles.open(f"{url}/plain.zarr")
        state.delay = 0.3
        t = time.perf_counter()
        assert np.array_equal(img[60:250, 60:300], whole[60:250, 60:300])
        assert time.perf_counter() - t < 3.0, state.requests


def test_http_missing_chunk_is_named(stores, tmp_path):
    d, _ = stores
    served = tmp_path / "served"
    shutil.copytree(d / "plain.zarr", served / "plain.zarr")
    shutil.copytree(d / "sharded.zarr", served / "sharded.zarr")
    (served / "plain.zarr" / "latent" / "c" / "0" / "2" / "3").unlink()
    (served / "sharded.zarr" / "latent" / "c" / "0" / "0" / "1").unlink()
    with http_server(served) as (url, _):
        img = cps_tiles.open(f"{url}/plain.zarr")
        with pytest.raises(DamagedChunkError, match=r"latent/c/0/2/3 is missing"):
            img[150:160, 200:210]
        assert img[0:64, 0:64].shape == (64, 64, 3)  # far away: still fine
        with pytest.raises(DamagedChunkError, match=r"latent/c/0/0/1\[0,0\] is missing"):
            cps_tiles.open(f"{url}/sharded.zarr")[0:10, 256:270]
        r = cli("verify", f"{url}/plain.zarr")
        assert r.returncode == 1 and "latent/c/0/2/3 is missing" in r.stdout
        r = cli("decode", f"{url}/sharded.zarr", tmp_path / "salvaged.png", "--salvage")
        assert r.returncode == 0 and "latent/c/0/0/1[0,0] unreadable, filled with 0" in r.stderr, r.stderr


def test_http_server_that_stops_answering_gives_an_error_not_a_hang(stores):
    d, _ = stores
    with http_server(d) as (url, state):
        img = cps_tiles.open(open_location(f"{url}/plain.zarr", timeout=1.0))
        state.hang = True
        t = time.perf_counter()
        with pytest.raises(DamagedChunkError, match="failed"):
            img[0:64, 0:64]
        assert time.perf_counter() - t < 15
    with pytest.raises(StoreError, match="cannot read the store|no such"):
        cps_tiles.open(open_location(f"{url}/plain.zarr", timeout=1.0))  # the server is gone


def test_command_line_over_http(stores, tmp_path):
    d, whole = stores
    with http_server(d) as (url, _):
        r = cli("info", f"{url}/sharded.zarr")
        assert r.returncode == 0 and "shards of 256 px" in r.stdout, r.stderr
        r = cli("decode", f"{url}/sharded.zarr", tmp_path / "r.png", "--region", "10,20,100,50")
        assert r.returncode == 0, r.stderr
        r = cli("verify", f"{url}/sharded.zarr")
        assert r.returncode == 0 and "latent chunks checked: OK" in r.stdout, r.stdout
        r = cli("convert", tmp_path / "r.png", f"{url}/new.zarr")
        assert r.returncode == 1 and "read-only" in r.stderr


def test_zip_stores(stores, tmp_path):
    d, whole = stores
    r = cli("zip", d / "sharded.zarr", tmp_path / "s.zarr.zip")
    assert r.returncode == 0, r.stderr
    img = cps_tiles.open(tmp_path / "s.zarr.zip")
    assert np.array_equal(np.asarray(img), whole)
    assert zipfile.ZipFile(tmp_path / "s.zarr.zip").testzip() is None
    # convert straight into a zip file: written as a folder, then packed; the folder is gone
    out = tmp_path / "direct.zarr.zip"
    cps_tiles.convert(smooth_image(300, 420, seed=31), out, codec=TINY, chunk=64, tile=128, progress=False)
    assert np.array_equal(np.asarray(cps_tiles.open(out)), whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct.zarr.zip", "s.zarr.zip"]
    assert cli("info", out).returncode == 0 and cli("verify", f"zip://{out}").returncode == 0
    r = cli("zip", d / "sharded.zarr", out)
    assert r.returncode == 1 and "already exists" in r.stderr


def test_any_store_object(stores):
    d, whole = stores
    memory = zarr.storage.MemoryStore()
    img = cps_tiles.convert(smooth_image(300, 420, seed=31), memory, codec=TINY, chunk=64, tile=128, progress=False)
    assert np.array_equal(np.asarray(img), whole)
    assert np.array_equal(np.asarray(cps_tiles.open(zarr.storage.LocalStore(d / "plain.zarr", read_only=True))), whole)


def test_s3_compatible_server(stores, tmp_path):
    """Write to and read from a real S3-compatible server (moto's standalone server on loopback)."""
    pytest.importorskip("s3fs")
    d, whole = stores
    with s3_server():
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("slides")
        img = cps_tiles.convert(smooth_image(300, 420, seed=31), "s3://slides/a.zarr", codec=TINY, chunk=64, tile=128,
                                shard=256, progress=False)
        assert np.array_equal(np.asarray(img), whole)
        again = cps_tiles.open("s3://slides/a.zarr")
        for y0, y1, x0, x1 in REGIONS:
            assert np.array_equal(again[y0:y1, x0:x1], whole[y0:y1, x0:x1])
        s3fs.S3FileSystem().rm("slides/a.zarr/latent/c/0/1/0")
        with pytest.raises(DamagedChunkError, match=r"latent/c/0/1/0\[0,0\] is missing"):
            cps_tiles.open("s3://slides/a.zarr")[260:270, 0:10]


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(StoreError, match="unsupported store location|needs"):
        cps_tiles.open("nosuchscheme://bucket/x.zarr")
