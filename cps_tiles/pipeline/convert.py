"""Conversion as a Dask graph: one task per write unit (a compute tile, or a shard), on any scheduler.

Each task opens the source on its worker (a file source pickles as its path, never as pixels),
reads the windows of its compute tiles (tile + POPS margin) one at a time, runs the analysis
transform on the worker's device, quantizes, and writes the unit's chunks (or its shard object)
into the store at once. Units are chunk- and shard-aligned, so tasks never write the same object
and need no locks. The model is loaded once per worker process (``load_codec`` is
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import dask
import numpy as np
import torch
import zarr
from zarr.abc.store import Store

from ..store.layout import StoreMeta, create_store, level_path, open_level, write_associated
from ..store.location import Location, open_location
from ..store.writer import alpha_region, encode_tile, finish, units_done, write_unit
from ..transforms.geometry import Plan, Window
from ..transforms.weights import Codec, load_codec
from .source import DownsampledSource, Source, read_window

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


def _unit_task(source: Source, store: Any, path: str, meta: StoreMeta, plan: Plan, index: tuple[int, int],
               cells: tuple[int, int, int, int], tiles: list[Window], codec_path: str, device: str) -> tuple[int, int]:
    """One Dask task: one write unit (a compute tile, or a shard of several): read each tile's
    window from the source, encode it, and write the unit's chunks at once."""
    import zarr

    codec = _worker_codec(meta.codec, codec_path, meta.sha256, device)
    cy0, cy1, cx0, cx1 = cells
    y_hat = np.empty((codec.model.config.M, cy1 - cy0, cx1 - cx0), np.int16)
    for w in tiles:
        ty0, ty1, tx0, tx1 = w.cells
        y_hat[:, ty0 - cy0 : ty1 - cy0, tx0 - cx0 : tx1 - cx0] = encode_tile(codec, read_window(source, w), w, plan,
                                                                          meta.quality, meta.precision)
    alpha = source.read(*alpha_region(cells, plan, meta))[:, :, 3] if meta.alpha else None
    group = zarr.open_group(store=open_location(store, "w").store, path=path, mode="r+")
    write_unit(group, index, cells, plan, meta, y_hat, alpha)
    return index


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
            if isinstance(key, tuple) or not str(key).startswith("_unit_task"):
                return
            self.done += 1
            if progress:
                progress(self.done, total)

    if scheduler not in (None, "threads", "processes", "sync", "single-threaded", "synchronous"):
        raise ValueError(f"scheduler must be threads, processes, sync or tcp://HOST:PORT, got {scheduler!r}")
    with _Count():
        dask.compute(*tasks, scheduler=scheduler or "threads", optimize_graph=False)


#: Shard side (pixels) of images larger than it, when the caller does not choose: a 1-gigapixel
#: image becomes about 60 shard objects instead of about 15,000 chunk files of 256 px.
DEFAULT_SHARD = 4096


def resolve_shard(shard: int | None, height: int, width: int, tile: int) -> int:
    """The shard size to use: ``shard`` when given, else ``DEFAULT_SHARD`` for an image larger than
    one shard whose tile divides it, else 0 (no sharding)."""
    if shard is not None:
        return shard
    return DEFAULT_SHARD if max(height, width) > DEFAULT_SHARD and DEFAULT_SHARD % tile == 0 else 0


def convert_store(source: Source, store: str | Path | Store | Location, codec: Codec, *, quality: float, chunk: int,
                  tile: int, shard: int | None = None, levels: int | None = None, overwrite: bool = False,
                  resume: bool = False, scheduler: str | None = None, client: Any = None, device: str = "cpu",
                  resources: dict | None = None, progress: Progress | None = None, precision: str = "float32") -> None:
    """Write ``source`` into ``store``, every pyramid level (``levels`` caps their number; 1 writes
    level 0 only), with one Dask task per write unit; see the module docs. Level k is coded from
    the source reduced 2**k times by area averaging (``DownsampledSource``), never from decoded
    pixels; the levels run one after the other, each on the whole scheduler."""
    device = resolve_device(device)
    location = open_location(store, "w")
    shard = resolve_shard(shard, source.height, source.width, tile)
    root, meta, plan = create_store(location, source, codec, quality, chunk, tile, shard=shard, levels=levels,
                                    overwrite=overwrite, resume=resume, precision=precision)
    if meta.complete:  # resuming a finished store: nothing to do (its progress flags are gone)
        if progress:
            progress(1, 1)
        return
    if hasattr(source, "associated"):
        write_associated(root, source.associated())
    groups = [(root, meta, plan)] + [open_level(location.store, meta, k, codec) for k in range(1, len(meta.levels))]
    if resources is None and device == "cuda":
        resources = {"GPU": 1}
    _write_levels(location, source, codec, list(enumerate(groups)), resume, scheduler, client, device, resources,
                  progress)
    for group, level_meta, _ in groups[::-1]:  # the root last: its flag says the whole store is complete
        finish(group, level_meta)


def _write_levels(location: Location, source: Source, codec: Codec, levels: list, resume: bool,
                  scheduler: str | None, client: Any, device: str, resources: dict | None,
                  progress: Progress | None) -> None:
    """Encode and write pyramid levels ``[(k, (group, meta, plan)), ...]``, level k from ``source``
    reduced 2**k times, one Dask task per write unit not yet done (with ``resume``), level after
    level; reports finished units over all levels to ``progress``."""
    work = [(k, g, m, p, list(p.units())) for k, (g, m, p) in levels]
    total, finished = sum(len(units) for *_, units in work), 0
    for k, group, level_meta, level_plan, units in work:
        done = units_done(group, level_plan, location.name) if resume else set()
        src = dask.delayed(source if k == 0 else DownsampledSource(source, 2**k), pure=True)  # shipped once per worker
        tasks = []
        with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
            for index, cells, tiles in units:
                if index not in done:
                    task = dask.delayed(_unit_task, pure=False, name=f"_unit_task-{k}-{index[0]}-{index[1]}")
                    tasks.append(task(src, location.spec, level_path(k), level_meta, level_plan, index, cells, tiles,
                                      str(codec.path), device))
        finished += len(done)
        if progress:
            progress(finished, total)
        if tasks:
            offset = finished
            _run(tasks, scheduler, client, (lambda n, _t, o=offset: progress(o + n, total)) if progress else None)
            finished += len(tasks)


class DecodedSource:
    """The decoded pixels of a finished store (level 0) as a source: what ``add_levels`` reduces
    for a store written without levels. Pickles as the store's location (workers reopen it)."""

    def __init__(self, location: Any) -> None:
        from ..store.reader import CPSImage

        self.location = location
        self._image = CPSImage(location)
        self.height, self.width, self.bands = self._image.shape
        self.metadata = self._image.meta.source

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_image"}

    def __setstate__(self, state: dict) -> None:
        from ..store.reader import CPSImage

        self.__dict__.update(state)
        self._image = CPSImage(self.location)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self._image[y0:y1, x0:x1]


def add_levels(store: Any, levels: int | None = None, scheduler: str | None = None, client: Any = None,
               progress: Progress | None = None) -> int:
    """Add the pyramid levels a finished store lacks (a store of format 1, or written with
    ``--levels``), coding level k from its *decoded* level 0 reduced 2**k times, since the source
    may be gone. The store stays readable throughout; its metadata lists the new levels only once
    they are all written. Returns the number of levels added."""
    from ..store.layout import FORMAT_VERSION, level_shapes

    location = open_location(store, "w")
    source = DecodedSource(location.spec)
    image = source._image
    meta = image.root_meta
    shapes = [list(s) for s in level_shapes(meta.height, meta.width, meta.chunk, levels)]
    have = max(1, len(meta.levels))
    if len(shapes) <= have:
        return 0
    codec = image.codec
    target = replace(meta, levels=shapes, format=FORMAT_VERSION)
    todo = [(k, open_level(location.store, target, k, codec)) for k in range(have, len(shapes))]
    _write_levels(location, source, codec, todo, True, scheduler, client, "cpu", None, progress)
    for _, (group, level_meta, _) in todo:
        finish(group, level_meta)
    root = zarr.open_group(store=location.store, mode="r+")
    target.write(root)
    return len(shapes) - have
