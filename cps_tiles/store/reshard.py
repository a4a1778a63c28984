"""Repack a finished store's latent into shards (or back into one object per chunk), no re-encoding.

A sharded latent holds the same chunk bitstreams as an unsharded one, only packed: each shard
object is its chunks' bytes, in the order zarr's own writer uses (Morton order), followed by the
index (``uint64`` offset and length per chunk slot, little endian) and its CRC32C. So an existing
store of thousands of chunk files becomes a few hundred objects in the time it takes to copy it,
byte-identical to what ``convert --shard`` would have written (tested).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.indexing import morton_order_iter
from zarr.core.sync import sync

from ..coding.bitstream import check_framing
from ..errors import DamagedChunkError
from ..transforms.geometry import Plan
from .chunks import EMPTY_SLOT, LatentChunks, shard_index_bytes
from .layout import ALPHA, ASSOCIATED, FORMAT_VERSION, LATENT, compact_json, level_path, make_room
from .location import open_location
from .reader import CPSImage


def reshard(source: Any, dest: Any, shard: int, overwrite: bool = False) -> int:
    """Copy the store at ``source`` to ``dest`` with its latent in shards of ``shard`` pixels
    (0: one object per chunk), every pyramid level included (a level no larger than one shard is
    stored unsharded, as a conversion stores it). Returns the number of latent objects written."""
    root = CPSImage(source, cache_mb=0)
    out = open_location(dest, "w")
    make_room(out, overwrite)
    written, metas = 0, []
    for img in root.levels:
        meta = img.meta
        level_shard = shard if img.level == 0 or max(meta.height, meta.width) > shard else 0
        plan = Plan(meta.height, meta.width, img.plan.geometry, chunk=meta.chunk, tile=meta.chunk, shard=level_shard)
        m, cc, sc = img.latent.shape[0], plan.chunk_cells, level_shard // plan.geometry.rho
        serializer = img._chunks.sharding.codecs[0] if img._chunks.sharding else img.latent.metadata.codecs[0]
        with compact_json():
            group = zarr.open_group(store=out.store, path=level_path(img.level), mode="w-")
            latent = group.create_array(
                LATENT, shape=img.latent.shape, chunks=(m, cc, cc), shards=(m, sc, sc) if sc else None, dtype="int16",
                fill_value=0, compressors=None, filters=None, dimension_names=("channel", "y", "x"),
                serializer=serializer)
        written += _copy_latent(img, LatentChunks(latent, out.name), plan)
        prefix = level_path(img.level)
        _copy_prefix(img, out.store, f"{prefix}/{ALPHA}/" if prefix else f"{ALPHA}/")
        metas.append((group, replace(meta, shard=level_shard, format=FORMAT_VERSION)))
    _copy_prefix(root, out.store, f"{ASSOCIATED}/")
    for group, meta in metas[::-1]:  # the root's metadata last: it says the store is complete
        meta.write(group)
    return written


def _copy_latent(img: CPSImage, dst: LatentChunks, plan: Plan) -> int:
    """Every chunk's bytes from ``img`` into ``dst``'s objects, one shard (or chunk) at a time."""
    store, cc = dst.store, plan.chunk_cells
    if dst.sharding is None:
        for ij in img.chunk_indices():
            data = _checked(img, ij, img._chunks.fetch([ij])[ij])
            sync(store.set(dst.key(*ij), default_buffer_prototype().buffer.from_bytes(data)))
        return len(img.chunk_indices())
    per = dst.per_shard[1:]
    (hl, wl), count = plan.latent, 0
    for si in range(-(-hl // (per[0] * cc))):
        for sj in range(-(-wl // (per[1] * cc))):
            slots = [(0, a, b) for _, a, b in morton_order_iter((1, *per))]
            inside = [(si * per[0] + a, sj * per[1] + b) for _, a, b in slots
                      if (si * per[0] + a) * cc < hl and (sj * per[1] + b) * cc < wl]
            chunks = img._chunks.fetch(inside)
            index = np.full((*per, 2), EMPTY_SLOT, dtype="<u8")
            parts, offset = [], 0
            for _, a, b in slots:
                ij = (si * per[0] + a, sj * per[1] + b)
                if ij not in chunks:
                    continue  # beyond the image: an empty slot, as zarr leaves it
                data = _checked(img, ij, chunks[ij])
                index[a, b] = offset, len(data)
                parts.append(data)
                offset += len(data)
            body = b"".join(parts) + shard_index_bytes(index)
            sync(store.set(dst._shard_key(si, sj), default_buffer_prototype().buffer.from_bytes(body)))
            count += 1
    return count


def _checked(img: CPSImage, ij: tuple[int, int], data: bytes | None) -> bytes:
    """A chunk's bytes, refused when missing or failing its CRC: damage is never copied on."""
    if data is None or not check_framing(data):
        raise DamagedChunkError(f"{img.path}: chunk {img.chunk_key(*ij)} is {'missing' if data is None else 'damaged'}")
    return data


def _copy_prefix(img: CPSImage, store: Any, prefix: str) -> None:
    """Copy the objects under ``prefix`` (the alpha array) unchanged."""
    async def run() -> None:
        src = img.location.store
        async for key in src.list_prefix(prefix):
            await store.set(key, await src.get(key, default_buffer_prototype()))

    sync(run())
