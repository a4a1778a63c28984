"""Conversion as a Dask graph: one task per POPS compute tile, on any scheduler.

Each task opens the source on its worker (a file source pickles as its path, never as pixels),
reads its window (tile + POPS margin), runs the analysis transform on the worker's device,
quantizes, and writes its chunks into the store. Tiles are chunk-aligned, so tasks never write the
same chunk and need no locks. The model is loaded once per worker process (``load_codec`` is
cached). Scheduler choices: ``threads`` (default), ``processes``, ``sync``, the address of a
distributed scheduler (``tcp://host:8786``), or a ``distributed.Client``.

GPU workers: with ``device="cuda"`` every task carries the annotation ``resources={"GPU": 1}``,
so a distributed scheduler only places it on workers started with that resource
(``dask worker tcp://host:8786 --resources GPU=1``, or dask-cuda's ``LocalCUDACluster``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import torch

from ..store.layout import StoreMeta, create_store
from ..store.writer import alpha_region, finish, tiles_done, write_tile
from ..transforms.geometry import Plan, Window
from ..transforms.weights import Codec, load_codec
from .source import Source, read_window

Progress = Callable[[int, int], None]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")
    return device


@functools.lru_cache(maxsize=8)
def _worker_codec(name: str, path: str, sha256: str, device: str) -> Codec:
    """The codec on ``device``, loaded once per worker process: from the directory the client used
    when the worker sees it (a codec outside the search path), else by name (a remote worker)."""
    codec = load_codec(path if Path(path, "codec.json").is_file() else name, sha256, where="worker")
    if device == "cpu":
        return codec
    import copy

    return Codec(codec.name, codec.sha256, copy.deepcopy(codec.model).to(device), codec.path)


def _tile_task(source: Source, store: str, meta: StoreMeta, plan: Plan, window: Window, codec_path: str,
               device: str) -> tuple[int, int]:
    """One Dask task: read the tile's window from the source, encode it, write its chunks."""
    import zarr

    codec = _worker_codec(meta.codec, codec_path, meta.sha256, device)
    alpha = source.read(*alpha_region(window, plan, meta))[:, :, 3] if meta.alpha else None
    write_tile(zarr.open_group(store, mode="r+"), codec, window, plan, meta, read_window(source, window),
               alpha)
    return window.cells[0], window.cells[2]


def _run(tasks: list, scheduler: str | None, client: Any, progress: Progress | None) -> None:
    """Compute ``tasks`` on the chosen scheduler, reporting each finished task to ``progress``."""
    total = len(tasks)
    if client is None and scheduler and "://" in scheduler:
        from distributed import Client

        with Client(scheduler) as c:
            return _run(tasks, None, c, progress)
    if client is not None:
        from distributed import as_completed

        futures = client.compute(tasks, optimize_graph=False)  # keep the GPU annotations
        for done, fut in enumerate(as_completed(futures), 1):
            fut.result()  # re-raise a task's error here
            if progress:
                progress(done, total)
        return
    from dask.callbacks import Callback

    class _Count(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.done = 0

        def _posttask(self, key, result, dsk, state, worker_id) -> None:
            if isinstance(key, tuple) or not str(key).startswith("_tile_task"):
                return
            self.done += 1
            if progress:
                progress(self.done, total)

    if scheduler not in (None, "threads", "processes", "sync", "single-threaded", "synchronous"):
        raise ValueError(f"scheduler must be threads, processes, sync or tcp://HOST:PORT, got {scheduler!r}")
    with _Count():
        dask.compute(*tasks, scheduler=scheduler or "threads", optimize_graph=False)


def convert_store(source: Source, store: str | Path, codec: Codec, *, quality: float, chunk: int, tile: int,
                  overwrite: bool = False, resume: bool = False, scheduler: str | None = None, client: Any = None,
                  device: str = "cpu", resources: dict | None = None, progress: Progress | None = None,
                  precision: str = "float32") -> None:
    """Write ``source`` into ``store`` with one Dask task per compute tile; see the module docs."""
    device = resolve_device(device)
    group, meta, plan = create_store(store, source, codec, quality, chunk, tile, overwrite=overwrite, resume=resume,
                                     precision=precision)
    total = sum(1 for _ in plan.tiles())
    if meta.complete:  # resuming a finished store: nothing to do (its progress flags are gone)
        if progress:
            progress(total, total)
        return
    done = tiles_done(group, plan) if resume else set()
    if resources is None and device == "cuda":
        resources = {"GPU": 1}
    src = dask.delayed(source, pure=True)  # one graph node, shipped once per worker
    tasks = []
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        for w in plan.tiles():
            if plan.tile_index(w) not in done:
                name = f"_tile_task-{w.cells[0]}-{w.cells[2]}"
                task = dask.delayed(_tile_task, pure=False, name=name)
                tasks.append(task(src, str(store), meta, plan, w, str(codec.path), device))
    if progress:
        progress(len(done), total)
    if tasks:
        offset = len(done)
        _run(tasks, scheduler, client, (lambda k, _n: progress(offset + k, total)) if progress else None)
    finish(group, meta)
