"""Read access to a CPS store: numpy-style regions, whole-image arrays and Dask arrays.

Decoding unit: one storage chunk of pixels, synthesized from the latent of that chunk plus a halo
of ``geometry.halo`` cells (clipped at the image border). Every path (region reads, ``np.asarray``,
``to_dask``) decodes a chunk from the *same* latent window with the same shapes, so any region is
byte-identical to the same region of the whole-image decode, and all of them equal the
whole-latent synthesis up to float rounding (the CPS property, tested in ``test_tiling``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from zarr.abc.store import Store

from ..coding.bitstream import ChunkCoder
from ..coding.memo import ContentMemo, content_key, reuse_enabled
from ..errors import CorruptChunkError, DamagedChunkError, StoreError
from ..transforms.geometry import Geometry, Plan, SynthesisWindow
from ..transforms.model import CPSModel
from ..transforms.precision import precision_context
from ..transforms.tiling import synthesize_cells
from ..transforms.weights import load_codec
from .chunks import LatentChunks
from .geo import GeoInfo, to_xarray
from .layout import ALPHA, ASSOCIATED, LATENT, StoreMeta, level_path, open_group_checked
from .location import Location, open_location


class LRUCache:
    """A thread-safe LRU map with a byte budget (values are numpy arrays).

    A value being made by one thread is waited for by the others that ask for the same key, so
    concurrent readers (a tile server's workers) decode each chunk once.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._making: dict[Any, threading.Event] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: Any, make: Callable[[], np.ndarray]) -> np.ndarray:
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
                busy = self._making.get(key)
                if busy is None:
                    self._making[key] = threading.Event()
                    break
            busy.wait()  # then look again: the maker stored it, or failed and this thread makes it
        try:
            value = make()
            with self._lock:
                if value.nbytes <= self.max_bytes:
                    self._items[key] = value
                    self._bytes += value.nbytes
                    while self._bytes > self.max_bytes:
                        _, old = self._items.popitem(last=False)
                        self._bytes -= old.nbytes
        finally:
            with self._lock:
                self._making.pop(key).set()
        return value


class ChunkCaches:
    """The decoded-chunk caches of an opened store, shared by all its levels (and by several
    stores where a server passes one instance to each): one byte budget, split evenly between
    decoded latent chunks and decoded pixel chunks. Keys name the store, level and chunk."""

    def __init__(self, cache_mb: float) -> None:
        budget = int(cache_mb * 2**20)
        self.latent = LRUCache(budget // 2)
        self.pixels = LRUCache(budget // 2)


def decode_chunk_pixels(model: CPSModel, latent_window: np.ndarray, window: SynthesisWindow, quality: float,
                        bands: int, precision: str = "float32") -> np.ndarray:
    """Latent window ``int16 [M, h, w]`` (``window.latent``: chunk cells + halo) -> pixels of the
    chunk's cells ``uint8 [C, ch*rho, cw*rho]``. C is 1 for grayscale stores (the mean of the
    decoded RGB), else 3.
    """
    y = torch.from_numpy(latent_window.astype(np.float32))[None].contiguous(memory_format=torch.channels_last)
    x = synthesize_cells(model, y, window, quality, precision)
    if bands == 1:
        x = x.mean(dim=1, keepdim=True)
    return x[0].mul(255).round_().clamp_(0, 255).to(torch.uint8).numpy()


def _dask_chunks(n: int, chunk: int, halo: int) -> tuple[int, ...]:
    """Storage-chunk sizes along one latent axis, a last chunk thinner than the halo merged into
    its neighbour (map_overlap needs every block at least as thick as its overlap)."""
    sizes = [min(chunk, n - k) for k in range(0, n, chunk)]
    if len(sizes) > 1 and sizes[-1] < halo:
        sizes[-2:] = [sizes[-2] + sizes[-1]]
    return tuple(sizes)


def _dask_decode_block(block: np.ndarray, spec: Any, version: str, precision: str, level: int,
                       block_info: dict | None = None) -> np.ndarray:
    """map_overlap kernel: an overlapped latent block -> pixels ``[C, h, w]`` of its storage chunks.

    Each storage chunk inside the block is decoded from exactly the latent window the region
    reader uses (``Plan.chunk_window``), so both paths give the same bytes.
    """
    img = _worker_image(spec, version, precision, level)
    plan, c = img.plan, img.meta.chunk
    # The *output* location (pixels) names this block's chunks; the input block is the core plus
    # up to `halo` cells per side (trim=False, boundary="none").
    (_, _), (py0, py1), (px0, px1) = block_info[None]["array-location"]
    oy0 = max(0, py0 // plan.geometry.rho - plan.geometry.halo)
    ox0 = max(0, px0 // plan.geometry.rho - plan.geometry.halo)
    rows = []
    for i in range(py0 // c, -(-py1 // c)):
        row = []
        for j in range(px0 // c, -(-px1 // c)):
            w = plan.chunk_window(i, j)
            ly0, ly1, lx0, lx1 = w.latent
            row.append(img.decode_window(block[:, ly0 - oy0 : ly1 - oy0, lx0 - ox0 : lx1 - ox0], w))
        rows.append(np.concatenate(row, axis=2))
    return np.concatenate(rows, axis=1)


#: chunk pixels by the content of their latent window, shared by every open image (memo.py)
_SYNTHESIZED = ContentMemo()
_WORKER_IMAGES: OrderedDict[tuple, CPSImage] = OrderedDict()
_WORKER_LOCK = threading.Lock()
#: latent chunks a region read decodes in one decode_many call (5 MB of int16 blocks at M=160)
_DECODE_GROUP = 64


def _worker_image(spec: Any, version: str, precision: str = "float32", level: int = 0) -> CPSImage:
    """One opened store per worker process, location and level (reopened when the store's
    metadata, hence ``version``, changed). ``spec`` may be a Store object, so this is keyed by its repr."""
    key = (repr(spec), version, precision, level)
    with _WORKER_LOCK:
        if key not in _WORKER_IMAGES:
            _WORKER_IMAGES[key] = CPSImage(spec, cache_mb=0, precision=precision, level=level)
            while len(_WORKER_IMAGES) > 8:
                _WORKER_IMAGES.popitem(last=False)
        return _WORKER_IMAGES[key]


def _dask_latent_block(spec: Any, version: str, level: int, block_info: dict | None = None) -> np.ndarray:
    """The latent cells of one dask block (one or two storage chunks per axis), fetched together."""
    img = _worker_image(spec, version, level=level)
    (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    blocks = img.read_latent_chunks(img.chunks_under(y0, y1, x0, x1))
    return img._latent_window_from(y0, y1, x0, x1, lambda i, j: blocks[i, j])


def _assemble(out: np.ndarray, y0: int, x0: int, size: int, block: Callable[[int, int], np.ndarray]) -> None:
    """Fill ``out`` ``[C, h, w]``, the window at (``y0``, ``x0``) of a grid of ``size`` x ``size``
    blocks, from the blocks ``block(i, j)`` ``[C, <=size, <=size]`` it overlaps (pixels of decoded
    chunks, or cells of latent chunks)."""
    y1, x1 = y0 + out.shape[1], x0 + out.shape[2]
    for i in range(y0 // size, -(-y1 // size)):
        for j in range(x0 // size, -(-x1 // size)):
            b = block(i, j)
            ty0, ty1 = max(y0, i * size), min(y1, (i + 1) * size)
            tx0, tx1 = max(x0, j * size), min(x1, (j + 1) * size)
            out[:, ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0] = b[:, ty0 - i * size : ty1 - i * size,
                                                                  tx0 - j * size : tx1 - j * size]


class RegionIndexing:
    """numpy-style 2-D slicing for an image with ``shape`` (H, W, C) and a ``region(y0, y1, x0, x1)``
    method: integers and contiguous slices on the two spatial axes, anything on the band axis."""

    shape: tuple[int, int, int]

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
        if len(key) > 3:
            raise IndexError(f"too many indices for an image of 3 dimensions: {len(key)}")
        key = key + (slice(None),) * (3 - len(key))
        ranges, squeeze = [], []
        for axis, (k, n) in enumerate(zip(key[:2], self.shape[:2])):
            if isinstance(k, (int, np.integer)):
                i = int(k) + n if k < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} is out of bounds for axis {axis} with size {n}")
                ranges.append((i, i + 1))
                squeeze.append(axis)
            elif isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    raise IndexError("only contiguous regions can be read (slice step 1); "
                                     "decode the region, then subsample the numpy array")
                ranges.append((start, max(start, stop)))
            else:
                raise IndexError(f"unsupported index {k!r}: use integers or slices")
        out = self.region(*ranges[0], *ranges[1])[:, :, key[2]]
        return out.squeeze(axis=tuple(squeeze)) if squeeze else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.region(0, self.shape[0], 0, self.shape[1])
        return out if dtype is None else out.astype(dtype)


class CPSImage(RegionIndexing):
    """A decoded view of a CPS store: ``shape`` (H, W, C), ``dtype`` uint8, 2-D slicing.

    >>> img = cps_tiles.open("slide.zarr")      # doctest: +SKIP
    >>> tile = img[1000:1512, 2000:2512]        # uint8 [512, 512, C]
    """

    def __init__(self, location: str | Path | Store | Location, cache_mb: float = 256, on_error: str = "raise",
                 fill_value: int = 0, precision: str = "float32", level: int = 0,
                 caches: ChunkCaches | None = None) -> None:
        if on_error not in ("raise", "fill"):
            raise ValueError(f"on_error must be 'raise' or 'fill', got {on_error!r}")
        precision_context(precision)  # validates
        self.precision = precision
        self.on_error, self.fill_value = on_error, fill_value
        #: chunk keys found missing or damaged so far (with ``on_error="fill"``)
        self.damaged: set[str] = set()
        self.location = open_location(location, "r")
        #: how messages name the store: its path or URL
        self.path = self.location.name
        root, self._version = open_group_checked(self.location)
        self.root_meta = StoreMeta.read(root, self.path)
        if not self.root_meta.complete:
            raise StoreError(f"{self.path}: store is unfinished (its conversion did not complete); "
                             "rerun the conversion with --resume, or convert again with --overwrite")
        #: pyramid level of this image: a 2**level reduction of level 0
        self.level = level
        self._cache_mb = cache_mb
        self._levels: dict[int, CPSImage] = {0: self} if level == 0 else {}
        if level == 0:
            self.group, self.meta = root, self.root_meta
        else:
            if not 0 < level < self.level_count:
                raise IndexError(f"{self.path} has {self.level_count} pyramid level(s); no level {level}")
            self.group = zarr.open_group(store=self.location.store, path=level_path(level), mode="r")
            self.meta = StoreMeta.read(self.group, f"{self.path} level {level}")
        self.codec = load_codec(self.meta.codec, self.meta.sha256, where=self.path)
        self._coder = ChunkCoder(self.codec.model)
        self.latent = self.group[LATENT]
        self.alpha = self.group[ALPHA] if self.meta.alpha else None
        self._chunks = LatentChunks(self.latent, self.path)
        geometry = Geometry.of(self.codec.model)
        try:
            self.plan = Plan(self.meta.height, self.meta.width, geometry, chunk=self.meta.chunk, tile=self.meta.chunk)
        except ValueError as exc:
            raise StoreError(f"{self.path}: inconsistent store metadata ({exc})") from None
        if tuple(self.latent.shape[1:]) != self.plan.latent or self.latent.shape[0] != self.codec.model.config.M:
            raise StoreError(f"{self.path}: latent array shape {self.latent.shape} does not match the metadata")
        #: decoded-chunk caches (``cache_mb`` in all, shared with the other levels of this store)
        self.caches = caches or ChunkCaches(cache_mb)
        self._cache_key = (self.path, self._version, self.level)

    # -- associated images ------------------------------------------------------------------
    @property
    def associated_images(self) -> dict[str, np.ndarray]:
        """The source slide's label, macro and thumbnail images kept at convert time, losslessly:
        name -> ``uint8 [h, w, C]`` (empty when the source had none)."""
        root = zarr.open_group(store=self.location.store, mode="r")
        if ASSOCIATED not in root:
            return {}
        return {name: np.asarray(array[...]) for name, array in root[ASSOCIATED].arrays()}

    # -- pyramid ----------------------------------------------------------------------------
    @property
    def level_count(self) -> int:
        """Pyramid levels in the store (1 for a store without levels, such as store format 1)."""
        return max(1, len(self.root_meta.levels))

    @property
    def levels(self) -> tuple[CPSImage, ...]:
        """Every pyramid level as an image of its own, level 0 first (``levels[0]`` is level 0 of
        this store). Level k is the source reduced 2**k times, coded by the same codec; each has
        the guarantees level 0 has: a region equals the same crop of that level's whole decode."""
        root = self if self.level == 0 else self.levels_root
        for k in range(root.level_count):
            if k not in root._levels:
                root._levels[k] = CPSImage(self.location, cache_mb=self._cache_mb, on_error=self.on_error,
                                           fill_value=self.fill_value, precision=self.precision, level=k,
                                           caches=self.caches)
        return tuple(root._levels[k] for k in range(root.level_count))

    @property
    def levels_root(self) -> CPSImage:
        """Level 0 of the store this level belongs to."""
        return self if self.level == 0 else CPSImage(self.location, cache_mb=self._cache_mb, on_error=self.on_error,
                                                     fill_value=self.fill_value, precision=self.precision,
                                                     caches=self.caches)

    # -- numpy-like surface -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.meta.height, self.meta.width, self.meta.bands)

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __repr__(self) -> str:
        level = f", level={self.level}" if self.level else ""
        return (f"CPSImage({self.path!r}{level}, shape={self.shape}, quality={self.meta.quality}, "
                f"codec={self.meta.codec!r}, chunk={self.meta.chunk})")

    # -- georeferencing ------------------------------------------------------------------------
    @property
    def geo(self) -> GeoInfo | None:
        """CRS, transform (of this level) and nodata where the source was georeferenced, else None."""
        return GeoInfo.from_attributes(dict(self.group.attrs))

    def to_xarray(self, name: str | None = None):
        """A lazy, dask-backed ``xarray.DataArray`` ``(band, y, x)`` with coordinates from the
        transform and the CRS (see :func:`cps_tiles.store.geo.to_xarray`)."""
        return to_xarray(self.to_dask(), self.geo, name or Path(self.path).stem)

    # -- decoding -----------------------------------------------------------------------------
    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels of rows ``y0:y1`` and columns ``x0:x1`` (already clipped) as ``uint8 [h, w, C]``."""
        h, w = max(0, y1 - y0), max(0, x1 - x0)
        out = np.empty((h, w, self.meta.bands), np.uint8)
        if h == 0 or w == 0:
            return out
        colour = out.transpose(2, 0, 1)[: min(self.meta.bands, 3)]  # a [C, h, w] view to fill chunk by chunk
        self._prefetch(y0, y1, x0, x1)
        _assemble(colour, y0, x0, self.meta.chunk, self._pixel_chunk)
        if self.alpha is not None:
            out[:, :, 3] = self.alpha[y0:y1, x0:x1]
        return out

    def chunk_key(self, i: int, j: int) -> str:
        """Store key of latent chunk (i, j), e.g. ``latent/c/0/3/4`` (in a sharded store, the shard's
        key and the chunk's place in it, e.g. ``latent/c/0/0/1[3,4]``)."""
        return self._chunks.key(i, j)

    def chunk_indices(self) -> list[tuple[int, int]]:
        cc, (hl, wl) = self.plan.chunk_cells, self.plan.latent
        return [(i, j) for i in range(-(-hl // cc)) for j in range(-(-wl // cc))]

    def chunks_under(self, ly0: int, ly1: int, lx0: int, lx1: int) -> list[tuple[int, int]]:
        """Latent chunks that latent cells ``[ly0:ly1, lx0:lx1]`` touch."""
        cc = self.plan.chunk_cells
        return [(i, j) for i in range(ly0 // cc, -(-ly1 // cc)) for j in range(lx0 // cc, -(-lx1 // cc))]

    def read_latent_chunks(self, indices: list[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
        """Fetch chunks (all at once, through the store) and decode them: ``int16 [M, ch, cw]`` each
        (edge chunks cropped). A missing or damaged chunk raises :class:`DamagedChunkError` naming it:
        zarr itself would read a missing chunk as the fill value."""
        raw = self._chunks.fetch(indices)
        decoded = self._decode_together(raw)
        return {ij: self._decode_chunk(ij, raw[ij], decoded.get(ij)) for ij in indices}

    def read_latent_chunk(self, i: int, j: int) -> np.ndarray:
        return self.read_latent_chunks([(i, j)])[i, j]

    def _decode_together(self, raw: dict[tuple[int, int], bytes | None]) -> dict[tuple[int, int], np.ndarray]:
        """The fetched chunks decoded in one ``decode_many`` call (a cps-v4 codec runs its entropy
        networks on several chunks at once) -> ``{(i, j): int16 [M, cc, cc]}``; empty if any chunk is
        missing or fails, and then each is decoded alone (``_decode_chunk``), so the error names it."""
        if len(raw) < 2 or any(data is None for data in raw.values()):
            return {}
        cc, m = self.plan.chunk_cells, self.latent.shape[0]
        try:
            blocks = self._coder.decode_many(list(raw.values()), [(m, cc, cc)] * len(raw))
        except CorruptChunkError:
            return {}
        return {ij: block for ij, (block, _) in zip(raw, blocks)}

    def _decode_chunk(self, ij: tuple[int, int], data: bytes | None, block: np.ndarray | None = None) -> np.ndarray:
        """Chunk ``ij``'s latent ``int16 [M, ch, cw]`` (edge chunks cropped) from its bytes, or from
        ``block``, the same bytes already decoded."""
        key, (i, j) = self.chunk_key(*ij), ij
        if data is None:
            raise DamagedChunkError(f"{self.path}: chunk {key} is missing")
        cc, m = self.plan.chunk_cells, self.latent.shape[0]
        if block is None:
            try:
                block, _ = self._coder.decode(data, shape=(m, cc, cc))
            except CorruptChunkError as exc:
                raise DamagedChunkError(f"{self.path}: chunk {key} is damaged ({exc})") from None
        hl, wl = self.plan.latent
        return block[:, : min(cc, hl - i * cc), : min(cc, wl - j * cc)]

    def _latent_chunk(self, i: int, j: int, data: bytes | None = None, fetched: bool = False,
                      block: np.ndarray | None = None) -> np.ndarray:
        def make() -> np.ndarray:
            try:
                return self._decode_chunk((i, j), data, block) if fetched else self.read_latent_chunk(i, j)
            except DamagedChunkError:
                if self.on_error == "raise":
                    raise
                self.damaged.add(self.chunk_key(i, j))
                cc, (hl, wl) = self.plan.chunk_cells, self.plan.latent
                return np.zeros((self.latent.shape[0], min(cc, hl - i * cc), min(cc, wl - j * cc)), np.int16)

        return self.caches.latent.get((*self._cache_key, i, j), make)

    def _prefetch(self, y0: int, y1: int, x0: int, x1: int) -> None:
        """Fetch, in one concurrent round, every latent chunk that the pixel chunks under rows
        ``y0:y1`` and columns ``x0:x1`` need (halos included) and that no cache holds yet, and
        decode them together."""
        c, need = self.meta.chunk, set()
        for i in range(y0 // c, -(-y1 // c)):
            for j in range(x0 // c, -(-x1 // c)):
                if (*self._cache_key, i, j) not in self.caches.pixels:
                    need.update(self.chunks_under(*self.plan.chunk_window(i, j).latent))
        need = sorted(ij for ij in need if (*self._cache_key, *ij) not in self.caches.latent)
        if len(need) > 1:
            fetched = list(self._chunks.fetch(need).items())
            for start in range(0, len(fetched), _DECODE_GROUP):  # decoded blocks held at once stay bounded
                group = dict(fetched[start : start + _DECODE_GROUP])
                decoded = self._decode_together(group)
                for ij, data in group.items():
                    self._latent_chunk(*ij, data=data, fetched=True, block=decoded.get(ij))

    def _latent_window(self, ly0: int, ly1: int, lx0: int, lx1: int) -> np.ndarray:
        return self._latent_window_from(ly0, ly1, lx0, lx1, self._latent_chunk)

    def _latent_window_from(self, ly0: int, ly1: int, lx0: int, lx1: int,
                            chunk: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """Assemble latent cells ``[ly0:ly1, lx0:lx1]`` from storage chunks given by ``chunk(i, j)``."""
        out = np.empty((self.latent.shape[0], ly1 - ly0, lx1 - lx0), np.int16)
        _assemble(out, ly0, lx0, self.plan.chunk_cells, chunk)
        return out

    def decode_window(self, latent_window: np.ndarray, window: SynthesisWindow) -> np.ndarray:
        """One chunk's pixels ``uint8 [C, ch, cw]`` from its synthesis window (every decode path);
        a latent window identical to one synthesized recently, with the same halo, is not
        synthesized again (``coding/memo.py``)."""
        def synthesize() -> np.ndarray:
            return decode_chunk_pixels(self.codec.model, latent_window, window, self.meta.quality, self.meta.bands,
                                       self.precision)

        if not reuse_enabled():
            return synthesize()
        key = content_key(latent_window, window.halo, self.codec.sha256, self.meta.quality, self.meta.bands,
                          self.precision)
        if (pixels := _SYNTHESIZED.get(key)) is None:
            pixels = synthesize()
            _SYNTHESIZED.put(key, pixels)
        return pixels

    def _pixel_chunk(self, i: int, j: int) -> np.ndarray:
        def make() -> np.ndarray:
            window = self.plan.chunk_window(i, j)
            pixels = self.decode_window(self._latent_window(*window.latent), window)
            if self.on_error == "fill" and self.chunk_key(i, j) in self.damaged:
                pixels[:] = self.fill_value  # salvage: mark the lost chunk, keep its neighbours
            return pixels

        return self.caches.pixels.get((*self._cache_key, i, j), make)

    def to_dask(self):
        """The image as a dask array ``[H, W, C]`` of uint8, one task per storage chunk.

        Built with ``map_overlap`` on the latent array (halo cells on both spatial axes); runs on
        whatever scheduler is active, a distributed cluster included.
        """
        import dask.array as da

        cc, rho, halo = self.plan.chunk_cells, self.plan.geometry.rho, self.plan.geometry.halo
        (hl, wl), m = self.plan.latent, self.latent.shape[0]
        ychunks, xchunks = _dask_chunks(hl, cc, halo), _dask_chunks(wl, cc, halo)
        # Latent blocks come from read_latent_chunk (not da.from_zarr, which would read a missing
        # chunk as zeros) so a damaged chunk fails with its key, as in region reads.
        latent = da.map_blocks(_dask_latent_block, self.location.spec, self._version, self.level, dtype=np.int16,
                               chunks=((m,), ychunks, xchunks), meta=np.empty((0, 0, 0), np.int16))
        colour = 1 if self.meta.bands == 1 else 3
        pixels = da.map_overlap(
            _dask_decode_block, latent, spec=self.location.spec, version=self._version, precision=self.precision,
            level=self.level,
            depth={0: 0, 1: min(halo, hl), 2: min(halo, wl)},
            boundary="none", trim=False, allow_rechunk=False, dtype=np.uint8,
            chunks=((colour,), tuple(k * rho for k in ychunks), tuple(k * rho for k in xchunks)),
            meta=np.empty((0, 0, 0), np.uint8),
        )
        img = pixels.transpose(1, 2, 0)[: self.meta.height, : self.meta.width]
        if self.alpha is not None:
            img = da.concatenate([img, da.from_zarr(self.alpha)[:, :, None].rechunk(img.chunks[:2] + ((1,),))], axis=2)
        return img
