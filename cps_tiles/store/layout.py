"""The CPS Zarr store: layout, metadata, creation (the writer is :mod:`.writer`).

Layout (a Zarr v3 group, in any zarr Store: see :mod:`.location`)::

    STORE.zarr/
      zarr.json          group; attributes["cps"] = store metadata (see ``StoreMeta``)
      latent/            int16 [M, Hp/16, Wp/16], chunks [M, c/16, c/16], codec "cps_latent";
                         with ``shard``: shards [M, s/16, s/16] (``sharding_indexed``, CRC32C index)
      alpha/             uint8 [H, W], chunks [c, c], zstd (only when the source has alpha)
      progress/          uint8 [units_y, units_x], one chunk per write unit (a compute tile, or a
                         shard): 1 once all of the unit's chunks are written (what ``--resume``
                         trusts); deleted once the store is complete

``Hp, Wp`` are the image size rounded up to a multiple of 16 (edge-replicated padding at
bottom/right, cropped away on decode); ``c`` is the chunk size in pixels. Every latent chunk is a
self-contained bitstream, so any region decodes from the chunks under it plus a 2-cell halo.

Zarr's local store writes every chunk to a temporary file and renames it into place, so a chunk is
never visible half-written, even after ``kill -9``; the ``complete`` flag is set last.
Metadata documents are written as one-line JSON: with the progress flags gone too, a Kodak-sized
store is ~920 bytes smaller than with zarr's indented documents (about 8% of its bytes at quality 1 with r5).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.codecs import ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ..errors import StoreError
from ..transforms.geometry import Geometry, Plan
from ..transforms.model import check_quality
from ..transforms.weights import Codec
from ..zarr_codecs.zarr_codec import CPSLatentZarrCodec
from .geo import GeoInfo, write_geo
from .location import Location, open_location

#: Store format written: 2 adds pyramid levels (``levels/<k>`` groups). Format 1 (one level) still reads.
FORMAT_VERSION = 2
FORMATS_READ = (1, 2)
LATENT, ALPHA, PROGRESS, ASSOCIATED = "latent", "alpha", "progress", "associated"
#: the root attribute of a multi-band store (a group of plain stores: :mod:`.raster`)
RASTER_KEY = "cps_raster"


def level_path(level: int) -> str:
    """The group of pyramid level ``level``: the root for level 0, ``levels/<k>`` above it."""
    return "" if level == 0 else f"levels/{level}"


def level_shapes(height: int, width: int, chunk: int, levels: int | None = None) -> list[tuple[int, int]]:
    """(height, width) of each pyramid level: level k is ``ceil(H / 2**k) x ceil(W / 2**k)``, and
    levels go on until the longest side fits in one chunk (that level included), or to ``levels``."""
    shapes = [(height, width)]
    while max(shapes[-1]) > chunk and (levels is None or len(shapes) < levels):
        k = len(shapes)
        shapes.append((-(-height // 2**k), -(-width // 2**k)))
    return shapes


class ImageInfo(Protocol):
    """What the store needs to know of an image before any pixel is read (a pipeline source
    provides it): size in pixels, band count, and the source's metadata to keep."""

    height: int
    width: int
    bands: int
    metadata: dict[str, Any]


@dataclass
class StoreMeta:
    """What ``attributes["cps"]`` of the group holds."""

    codec: str
    sha256: str
    quality: float
    height: int
    width: int
    bands: int
    chunk: int
    tile: int
    rho: int
    padded: list[int]
    format: int = FORMAT_VERSION
    dtype: str = "uint8"
    alpha: bool = False
    complete: bool = False
    precision: str = "float32"  # arithmetic of the encoder that wrote the latents (informative)
    source: dict[str, Any] = field(default_factory=dict)
    shard: int = 0  # pixels per side of a latent shard object; 0: one object per chunk
    level: int = 0  # pyramid level of this group: 2**level downsample of level 0
    #: in the root group: [height, width] of every level, level 0 first (format 2)
    levels: list[list[int]] = field(default_factory=list)

    @classmethod
    def read(cls, group: zarr.Group, where: str) -> StoreMeta:
        raw = group.attrs.get("cps")
        if not isinstance(raw, dict):
            raise StoreError(f"{where}: not a cps-tiles store (no 'cps' attributes)")
        if raw.get("format") not in FORMATS_READ:
            raise StoreError(f"{where}: store format {raw.get('format')!r}, this cps-tiles reads formats "
                             f"{' and '.join(map(str, FORMATS_READ))}")
        try:
            meta = cls(**raw)
            ok = (meta.height >= 1 and meta.width >= 1 and meta.bands in (1, 3, 4) and meta.rho > 0
                  and meta.chunk > 0 and meta.chunk % meta.rho == 0 and meta.padded == [-(-meta.height // meta.rho) * meta.rho,
                                                                          -(-meta.width // meta.rho) * meta.rho])
        except TypeError as exc:
            raise StoreError(f"{where}: malformed store metadata ({exc})") from None
        if not ok:
            raise StoreError(f"{where}: inconsistent store metadata")
        return meta

    def write(self, group: zarr.Group) -> None:
        attrs = asdict(self)
        for key in ("shard", "level", "levels"):  # left out at their defaults, as in format 1
            if not attrs[key]:
                del attrs[key]
        with compact_json():
            group.attrs["cps"] = json.loads(json.dumps(attrs))


def compact_json() -> contextlib.AbstractContextManager:
    """Zarr writes the metadata documents (``zarr.json``) it writes inside this block on one line."""
    return zarr.config.set({"json_indent": None})


def _meta_for(source: ImageInfo, codec: Codec, quality: float, plan: Plan, precision: str) -> StoreMeta:
    q = check_quality(quality, codec.model.config.levels)
    return StoreMeta(precision=precision, codec=codec.name, sha256=codec.sha256, quality=q, height=source.height,
                     width=source.width, bands=source.bands, chunk=plan.chunk, tile=plan.tile,
                     rho=plan.geometry.rho, padded=list(plan.padded), alpha=source.bands == 4,
                     source=dict(source.metadata), shard=plan.shard)


def create_store(location: str | Path | Store | Location, source: ImageInfo, codec: Codec, quality: float,
                 chunk: int, tile: int, shard: int = 0, levels: int | None = None, overwrite: bool = False,
                 resume: bool = False, precision: str = "float32") -> tuple[zarr.Group, StoreMeta, Plan]:
    """Create the root group (level 0) and its empty arrays for ``source``, or reopen an unfinished
    store to resume. The root's metadata lists every pyramid level (``level_shapes``: all of them,
    or the first ``levels``); :func:`open_level` makes the groups of the others.

    ``shard`` (pixels, a multiple of ``tile``; 0 for none) stores the latent with zarr's
    ``sharding_indexed`` codec, one object per ``shard`` x ``shard`` pixels. Refuses to replace an
    existing store unless ``overwrite``; with ``resume`` an existing store must have been started
    with the same source size, codec, quality, chunk, tile, shard and levels.
    """
    loc = open_location(location, "w")
    store, name = loc.store, loc.name
    plan = Plan(source.height, source.width, Geometry.of(codec.model), chunk=chunk, tile=tile, shard=shard)
    meta = _meta_for(source, codec, quality, plan, precision)
    meta.levels = [list(s) for s in level_shapes(source.height, source.width, chunk, levels)]
    attrs = root_attributes(store)
    if attrs is not None and resume:
        group = zarr.open_group(store=store, mode="r+")
        old = StoreMeta.read(group, name)
        mismatch = [k for k in ("codec", "sha256", "quality", "height", "width", "bands", "chunk", "tile", "shard",
                                "levels", "precision", "source") if getattr(old, k) != getattr(meta, k)]
        if mismatch:
            raise StoreError(f"{name}: cannot resume, the store was started with other {', '.join(mismatch)}")
        _delete_partial_writes(store)
        return group, old, plan
    make_room(loc, overwrite)
    group = zarr.open_group(store=store, mode="w-")
    _create_arrays(group, meta, plan, codec)
    return group, meta, plan


def open_level(store: Store, root: StoreMeta, level: int, codec: Codec) -> tuple[zarr.Group, StoreMeta, Plan]:
    """The group of pyramid level ``level`` (>= 1) of the store whose root metadata is ``root``:
    reopened when it exists (a resumed conversion), else created with its empty arrays. A level
    larger than the root's shard keeps the shards; a smaller one is stored unsharded."""
    height, width = root.levels[level]
    shard = root.shard if max(height, width) > root.shard else 0
    plan = Plan(height, width, Geometry.of(codec.model), chunk=root.chunk, tile=root.tile, shard=shard)
    path = level_path(level)
    if sync(store.exists(f"{path}/zarr.json")):
        group = zarr.open_group(store=store, path=path, mode="r+")
        if isinstance(group.attrs.get("cps"), dict):
            return group, StoreMeta.read(group, f"level {level}"), plan
        sync(store.delete_dir(path))  # a kill between creating the group and writing its metadata
    meta = replace(root, height=height, width=width, padded=list(plan.padded), shard=shard, level=level, levels=[],
                   complete=False)
    with compact_json():  # zarr writes the implicit parent group ``levels/`` here too
        group = zarr.open_group(store=store, path=path, mode="w-")
    _create_arrays(group, meta, plan, codec)
    return group, meta, plan


def _create_arrays(group: zarr.Group, meta: StoreMeta, plan: Plan, codec: Codec) -> None:
    """A level's latent (and alpha) arrays, its progress flags, then its metadata."""
    cc, m = plan.chunk_cells, codec.model.config.M
    sc = plan.shard // plan.geometry.rho
    with compact_json():
        group.create_array(
            LATENT, shape=(m, *plan.latent), chunks=(m, cc, cc), shards=(m, sc, sc) if sc else None, dtype="int16",
            fill_value=0, compressors=None, filters=None, dimension_names=("channel", "y", "x"),
            serializer=CPSLatentZarrCodec(codec=codec.name, sha256=codec.sha256, quality=meta.quality),
        )
        if meta.alpha:
            group.create_array(ALPHA, shape=(meta.height, meta.width), chunks=(meta.chunk, meta.chunk), dtype="uint8",
                               fill_value=255, compressors=ZstdCodec(level=9), dimension_names=("y", "x"))
        group.create_array(PROGRESS, shape=plan.unit_grid, chunks=(1, 1), dtype="uint8", fill_value=0)
        geo = GeoInfo.from_source_metadata(meta.source.get("geo"))
        write_geo(group, geo and geo.at_level(meta.level), meta.height, meta.width)
    meta.write(group)


def write_associated(group: zarr.Group, images: dict[str, np.ndarray]) -> None:
    """Keep a slide's associated images (label, macro, thumbnail: ``uint8 [h, w, C]``) losslessly,
    as ``associated/<name>`` arrays (zstd), one chunk each."""
    with compact_json():
        for name, pixels in images.items():
            array = group.create_array(f"{ASSOCIATED}/{name}", shape=pixels.shape, chunks=pixels.shape, dtype="uint8",
                                       compressors=ZstdCodec(level=9), dimension_names=("y", "x", "band"),
                                       overwrite=True)
            array[...] = pixels


def root_attributes(store: Store, key: str = "cps") -> dict | None:
    """``attributes[key]`` of the group at the store's root (``"cps"``: a plain store's metadata,
    ``RASTER_KEY``: a multi-band store's), read through the store, or None where there is no such
    group or no such attribute."""
    try:
        raw = sync(store.get("zarr.json", default_buffer_prototype()))
        attrs = None if raw is None else json.loads(raw.to_bytes())["attributes"][key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return attrs if isinstance(attrs, dict) else None


def make_room(location: Location, overwrite: bool) -> None:
    """Make way for a new store at ``location`` (every writer calls this): nothing to do where it is
    empty; an existing cps-tiles store, plain or multi-band, is deleted only with ``overwrite``;
    anything else is never deleted."""
    store, name = location.store, location.name
    if location.is_local and Path(name).exists() and not Path(name).is_dir():
        raise StoreError(f"{name} exists and is not a cps-tiles store; refusing to replace it")
    if sync(store.is_empty("")):
        return
    attrs = root_attributes(store) or root_attributes(store, RASTER_KEY)
    if not overwrite:
        hint = "--resume to finish it, " if attrs is not None and not attrs.get("complete") else ""
        raise StoreError(f"{name} already exists (pass {hint}--overwrite / overwrite=True to replace it)")
    if attrs is None:  # --overwrite replaces stores, never other files or folders
        raise StoreError(f"{name} exists and is not a cps-tiles store; refusing to delete it")
    sync(store.delete_dir(""))


def open_group_checked(location: Location) -> tuple[zarr.Group, str]:
    """The store's root group, read-only, and a token of its metadata document (it changes when
    the store is rewritten, so caches keyed by it never serve an older store)."""
    try:
        raw = sync(location.store.get("zarr.json", default_buffer_prototype()))
    except (OSError, ValueError):
        raw = None
    except Exception as exc:  # a remote store's client errors (unreachable server, denied access)
        raise StoreError(f"{location.name}: cannot read the store ({type(exc).__name__}: {exc})") from None
    if raw is None:
        raise StoreError(f"{location.name}: no such cps-tiles store")
    try:
        group = zarr.open_group(store=location.store, mode="r")
    except Exception as exc:
        raise StoreError(f"{location.name}: cannot open Zarr group ({exc})") from None
    return group, hashlib.sha256(raw.to_bytes()).hexdigest()[:16]


def store_size(store: Store, prefix: str = "") -> tuple[int, int] | None:
    """(bytes, objects) under ``prefix``, listed through the store, or None where the store cannot
    list its objects (an HTTP server without directory listings)."""
    async def run() -> tuple[int, int]:
        keys = [k async for k in store.list_prefix(prefix)]
        sizes = await asyncio.gather(*(store.getsize(k) for k in keys))
        return sum(sizes), len(keys)

    try:
        return sync(run())
    except (NotImplementedError, OSError, ValueError):
        return None


def _delete_partial_writes(store: Store) -> None:
    """Temporary files of writes cut short by a kill (a local store writes ``*.partial`` first)."""
    async def run() -> None:
        keys = [k async for k in store.list_prefix("") if k.endswith(".partial")]
        for k in keys:
            await store.delete(k)

    sync(run())
