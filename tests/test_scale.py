"""Dask scale-out: every scheduler writes the same bytes; GPU annotations; kill -9 and resume."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pyvips
from conftest import TINY, smooth_image

import cps_tiles


def store_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    pyvips.Image.new_from_array(smooth_image(300, 420, seed=11)).copy(interpretation="srgb").tiffsave(
        str(d / "in.tif"), tile=True, tile_width=128, tile_height=128)
    ref = d / "threads.zarr"
    cps_tiles.convert(d / "in.tif", ref, codec=TINY, chunk=64, tile=128, progress=False, scheduler="threads")
    return d, store_bytes(ref)


@pytest.mark.parametrize("scheduler", ["sync", pytest.param("processes", marks=pytest.mark.slow)])
def test_local_schedulers_byte_identical(src, scheduler):
    d, ref = src
    out = d / f"{scheduler}.zarr"
    cps_tiles.convert(d / "in.tif", out, codec=TINY, chunk=64, tile=128, progress=False, scheduler=scheduler)
    assert store_bytes(out) == ref


@pytest.mark.slow  # worker processes: a system test, run by .ci/run
def test_bfloat16_stores_are_deterministic_too(src):
    """bf16 encoding (the fast CPU path) writes the same bytes with threads and processes."""
    d, ref = src
    out = {}
    for scheduler in ("threads", "processes"):
        path = d / f"bf16-{scheduler}.zarr"
        cps_tiles.convert(d / "in.tif", path, codec=TINY, chunk=64, tile=128, progress=False, scheduler=scheduler,
                          precision="bfloat16")
        out[scheduler] = store_bytes(path)
    assert out["threads"] == out["processes"]
    assert cps_tiles.open(d / "bf16-threads.zarr").meta.precision == "bfloat16"


@pytest.mark.slow
def test_local_cluster_byte_identical(src):
    """A real LocalCluster: 2 worker processes on loopback."""
    from distributed import Client, LocalCluster

    d, ref = src
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        cps_tiles.convert(d / "in.tif", d / "lc.zarr", codec=TINY, chunk=64, tile=128, progress=False, client=client)
    assert store_bytes(d / "lc.zarr") == ref


def test_gpu_annotation_routes_tasks_to_gpu_workers(src):
    """Tasks that ask for the GPU resource run only on the worker that advertises it (CPU here)."""
    from distributed import Client, Scheduler, SpecCluster, Worker, get_task_stream

    d, ref = src
    workers = {"plain": {"cls": Worker, "options": {"nthreads": 1, "host": "127.0.0.1"}},
               "gpu": {"cls": Worker, "options": {"nthreads": 1, "host": "127.0.0.1", "resources": {"GPU": 1}}}}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        gpu_addr = next(a for a, w in client.scheduler_info()["workers"].items() if w["resources"].get("GPU"))
        with get_task_stream(client) as ts:
            cps_tiles.convert(d / "in.tif", d / "gpu.zarr", codec=TINY, chunk=64, tile=128, progress=False,
                              client=client, resources={"GPU": 1})
        ran_on = {r["worker"] for r in ts.data if "_unit_task" in str(r["key"])}
    assert ran_on == {gpu_addr}
    assert store_bytes(d / "gpu.zarr") == ref


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_command_line_cluster(src, tmp_path):
    """`dask scheduler` + two `dask worker` processes, driven by `cps-tiles convert --scheduler tcp://...`."""
    d, ref = src
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([str(bindir / "dask"), "worker", addr, "--nthreads", "1", "--no-dashboard",
                                           "--host", "127.0.0.1"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, env=env))
        from distributed import Client

        deadline = time.time() + 120
        while True:
            try:
                with Client(addr, timeout=5) as c:
                    c.wait_for_workers(2, timeout=60)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        r = subprocess.run([sys.executable, "-m", "cps_tiles.cli", "convert", str(d / "in.tif"), str(tmp_path / "c.zarr"),
                            "--codec", TINY, "--chunk", "64", "--tile", "128", "--scheduler", addr],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert store_bytes(tmp_path / "c.zarr") == ref
        r = subprocess.run([sys.executable, "-m", "cps_tiles.cli", "export", str(tmp_path / "c.zarr"),
                            str(tmp_path / "c.tif"), "--scheduler", addr], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        whole = np.asarray(cps_tiles.open(tmp_path / "c.zarr"))
        assert np.array_equal(pyvips.Image.new_from_file(str(tmp_path / "c.tif")).numpy(), whole)
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("shard,flags,progress", [(0, 20, "progress"), (256, 5, "progress"), (0, 8, "levels/1/progress")],
                         ids=["chunks", "shards", "during-levels"])
def test_kill_9_then_resume_is_byte_identical(tmp_path, shard, flags, progress):
    """Killed after some write units (tiles, or shards of 16 tiles; or, in the last case, after level 0
    and some units of level 1) are in; resumed; byte-identical to an uninterrupted run."""
    pyvips.Image.new_from_array(smooth_image(1024, 1024, seed=12)).copy(interpretation="srgb").tiffsave(
        str(tmp_path / "big.tif"), tile=True)
    args = ["--codec", TINY, "--chunk", "64", "--tile", "64", "--shard", str(shard), "--scheduler", "sync"]
    cli = [sys.executable, "-m", "cps_tiles.cli", "convert", str(tmp_path / "big.tif")]
    clean = subprocess.run(cli + [str(tmp_path / "clean.zarr")] + args, capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr

    victim = tmp_path / "killed.zarr"
    proc = subprocess.Popen(cli + [str(victim)] + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list((victim / progress).rglob("c/*/*"))) < flags:  # wait until some units are in
        assert proc.poll() is None and time.time() < deadline, "conversion ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    info = subprocess.run([sys.executable, "-m", "cps_tiles.cli", "info", str(victim)], capture_output=True, text=True)
    assert "UNFINISHED" in info.stdout
    r = subprocess.run([sys.executable, "-m", "cps_tiles.cli", "decode", str(victim), str(tmp_path / "x.png")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "unfinished" in r.stderr
    again = subprocess.run(cli + [str(victim)] + args, capture_output=True, text=True)
    assert again.returncode == 1 and "--resume" in again.stderr  # nothing written is lost without asking
    resumed = subprocess.run(cli + [str(victim), "--resume"] + args, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert store_bytes(victim) == store_bytes(tmp_path / "clean.zarr")
