"""The latent array's chunk bitstreams, fetched raw through the store API, plain or sharded.

Zarr reads a missing chunk as the fill value; a cps-tiles store must never decode a lost chunk as
zeros, so the reader fetches each chunk's bytes itself (``Store.get``) and treats "no such key" as
damage. In a sharded latent (zarr v3 ``sharding_indexed``, ``cps_latent`` inside) a chunk is a byte
range of its shard object: the shard's index (at its end: ``16`` bytes per inner chunk, offset and
length as little-endian uint64, then a CRC32C of the index) is read first, then only the byte
ranges of the chunks asked for. All requests of one call run concurrently, so a region over a
remote store costs about one round trip per level of indirection, not one per chunk.
"""

from __future__ import annotations

import asyncio
import struct
from collections import OrderedDict
from collections.abc import Iterable

import google_crc32c
import numpy as np
import zarr
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ..errors import DamagedChunkError, StoreError

EMPTY_SLOT = 2**64 - 1  # offset and length of an inner chunk that was never written


def shard_index_bytes(index: np.ndarray) -> bytes:
    """A shard's index as zarr's ``sharding_indexed`` writes it at the shard's end: offsets and
    lengths ``uint64 [ci, cj, 2]`` little endian, then their CRC32C (4 bytes, little endian)."""
    raw = np.ascontiguousarray(index, dtype="<u8").tobytes()
    return raw + struct.pack("<I", google_crc32c.value(raw))


#: Concurrent requests per call: enough to hide latency, few enough not to flood a server.
MAX_CONCURRENT = 32


class LatentChunks:
    """Raw bytes of latent chunk ``(i, j)`` (latent-cell block ``i``, ``j`` of ``array.chunks``).

    ``where`` names the store in errors; ``concurrency`` bounds the requests in flight. Shard
    indexes are cached (16 bytes per chunk slot each).
    """

    def __init__(self, array: zarr.Array, where: str, concurrency: int = MAX_CONCURRENT) -> None:
        self.array, self.where = array, where
        #: requests in flight at once (1: one after the other)
        self.concurrency = concurrency
        self.store = array.store_path.store
        self.prefix = f"{array.path}/" if array.path else ""
        self.sharding = _sharding_codec(array, where)
        if self.sharding is not None:
            self.per_shard = tuple(s // c for s, c in zip(array.shards, array.chunks))
        self._indexes: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def key(self, i: int, j: int) -> str:
        """Store key naming chunk (i, j): its object, or for a sharded latent its shard and place."""
        if self.sharding is None:
            return self.prefix + self.array.metadata.encode_chunk_key((0, i, j))
        (si, ii), (sj, jj) = divmod(i, self.per_shard[1]), divmod(j, self.per_shard[2])
        return f"{self.prefix}{self.array.metadata.encode_chunk_key((0, si, sj))}[{ii},{jj}]"

    def fetch(self, indices: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes | None]:
        """Bytes of each chunk, or None where the chunk (or its shard) is missing."""
        indices = list(dict.fromkeys(indices))
        if not indices:
            return {}
        try:
            return sync(self._fetch(indices))
        except (OSError, TimeoutError) as exc:
            raise DamagedChunkError(f"{self.where}: reading chunk {self.key(*indices[0])} failed "
                                    f"({type(exc).__name__}: {exc})") from None
        except Exception as exc:  # fsspec/aiohttp raise their own types for a dead server
            if type(exc).__module__.split(".")[0] in ("aiohttp", "fsspec", "botocore", "aiobotocore", "obstore"):
                raise DamagedChunkError(f"{self.where}: reading chunk {self.key(*indices[0])} failed "
                                        f"({type(exc).__name__}: {exc})") from None
            raise

    async def _fetch(self, indices: list[tuple[int, int]]) -> dict[tuple[int, int], bytes | None]:
        limit = asyncio.Semaphore(self.concurrency)
        if self.sharding is None:
            keys = [self.prefix + self.array.metadata.encode_chunk_key((0, i, j)) for i, j in indices]
            values = await asyncio.gather(*(self._get(k, None, limit) for k in keys))
            return dict(zip(indices, values))
        shards = sorted({(i // self.per_shard[1], j // self.per_shard[2]) for i, j in indices})
        indexes = dict(zip(shards, await asyncio.gather(*(self._index(s, limit) for s in shards))))
        ranges = []
        for i, j in indices:
            (si, ii), (sj, jj) = divmod(i, self.per_shard[1]), divmod(j, self.per_shard[2])
            index = indexes[si, sj]
            offset, length = (None, None) if index is None else (int(index[ii, jj, 0]), int(index[ii, jj, 1]))
            ranges.append((si, sj, offset, length))
        values = await asyncio.gather(*(
            self._get(self._shard_key(si, sj), RangeByteRequest(offset, offset + length), limit)
            if offset is not None and offset != EMPTY_SLOT else _none() for si, sj, offset, length in ranges))
        return dict(zip(indices, values))

    def _shard_key(self, si: int, sj: int) -> str:
        return self.prefix + self.array.metadata.encode_chunk_key((0, si, sj))

    async def _get(self, key: str, byte_range, limit: asyncio.Semaphore) -> bytes | None:
        async with limit:
            buf = await self.store.get(key, default_buffer_prototype(), byte_range)
        return None if buf is None else buf.to_bytes()

    async def _index(self, shard: tuple[int, int], limit: asyncio.Semaphore) -> np.ndarray | None:
        """The offsets and lengths ``uint64 [ci, cj, 2]`` of a shard's inner chunks (None: no shard)."""
        if shard in self._indexes:
            return self._indexes[shard]
        n = self.per_shard[1] * self.per_shard[2]
        raw = await self._get(self._shard_key(*shard), SuffixByteRequest(16 * n + 4), limit)
        if raw is None:
            return None
        if len(raw) != 16 * n + 4 or google_crc32c.value(raw[:-4]) != struct.unpack("<I", raw[-4:])[0]:
            raise DamagedChunkError(f"{self.where}: shard {self._shard_key(*shard)} has a damaged index")
        index = np.frombuffer(raw[:-4], dtype="<u8").reshape(self.per_shard[1], self.per_shard[2], 2)
        self._indexes[shard] = index
        while len(self._indexes) > 4096:
            self._indexes.popitem(last=False)
        return index


async def _none() -> None:
    return None


def _sharding_codec(array: zarr.Array, where: str) -> ShardingCodec | None:
    """The latent's sharding codec, checked to be the layout this reader parses (index at the end,
    little-endian with a CRC32C; the whole channel axis in every chunk), or None when unsharded."""
    codecs = array.metadata.codecs
    if not (len(codecs) == 1 and isinstance(codecs[0], ShardingCodec)):
        return None
    codec = codecs[0]
    index = codec.index_codecs
    ok = (codec.index_location.value == "end" and len(index) == 2 and isinstance(index[0], BytesCodec)
          and index[0].endian is not None and index[0].endian.value == "little" and isinstance(index[1], Crc32cCodec)
          and array.chunks[0] == array.shape[0] == array.shards[0])
    if not ok:
        raise StoreError(f"{where}: unsupported shard layout of the latent array ({codec})")
    return codec
