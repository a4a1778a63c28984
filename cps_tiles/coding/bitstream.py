"""One self-contained entropy-coded bitstream per storage chunk.

Layout (little endian)::

    offset size  field
    0      4     magic b"CPSC"
    4      1     format version: 1, float entropy networks (cps-v1..v3 codecs); 2, integer
                 entropy networks and table coding (cps-v4; :mod:`cps_tiles.coding.tables`);
                 3, the same with int8 spatial convolutions (cps-v5); 4, with 7-bit weights in
                 every layer (cps-v6)
    5      1     flags (0; reserved)
    6      2     quality * 100 (100 .. 100 * the codec's quality levels)
    8      2     M, latent channels
    10     2     h, latent rows (cells)
    12     2     w, latent columns (cells)
    14     2     y_lo, smallest y_hat value (int16)
    16     2     y_hi, largest y_hat value (int16)
    18     4     z_len, bytes of the z stream (multiple of 4)
    22     4     y_len, bytes of the y stream (multiple of 4)
    26     z_len z stream: ANS, factorized density, z_hat [Nz, ceil(h/b), ceil(w/b)], b the
                 hyperprior block (4 cells: ``Geometry.hyper_block``)
    ..     y_len y stream: ANS, y_hat [M, h, w]: version 1 a Gaussian conditional over [y_lo, y_hi],
                 versions 2 and 3 the stored tables
    -4     4     CRC32 of all preceding bytes

The hyperprior of a chunk comes from that chunk alone (``z = h_a(y_hat / gain)``, the block edge-
padded to a multiple of ``Geometry.hyper_block`` cells), so any chunk decodes without its neighbours. ``decode`` checks
every field before it allocates anything, bounds the declared shape, and reports any failure as
:class:`CorruptChunkError` and nothing else.

Version 1: the means/scales fed to the coder come from ``h_s`` (and, for a codec with a channel
context, the context networks, slice after slice: :mod:`cps_tiles.transforms.context`) evaluated in
float64, then snapped to fixed grids (see :mod:`cps_tiles.coding.entropy`): encoder and decoder agree
unless a last-bit difference straddles a grid line. Versions 2 and 3: integer sigma classes and means from
exact integer networks (:mod:`cps_tiles.transforms.integer`) select stored tables: they agree on every
machine, by construction. The y stream is one ANS stream either way, its symbols in ``[M, h, w]`` order, except
that a spatial context (cps-v3 codecs) codes each slice's checkerboard anchors before its other cells.
"""

from __future__ import annotations

import copy
import struct
import zlib
from collections.abc import Generator

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import CorruptChunkError
from ..transforms.geometry import Geometry
from ..transforms.integer import full_precision
from ..transforms.model import CPSModel, check_quality, hyper_head
from .entropy import GaussianConditional, run_parts, snap_means, snap_scales
from .heap import retain_freed_memory
from .memo import ContentMemo, content_key, reuse_enabled
from .tables import TableCoder

MAGIC = b"CPSC"
#: chunk format version by the arithmetic of the codec's entropy networks
VERSIONS = {"float": 1, "integer": 2, "integer8": 3, "integer8all": 4}
_HEADER = struct.Struct("<4sBBHHHHhhII")
#: Largest chunk side in latent cells (2048 pixels): bounds memory and time of a forged header.
MAX_CELLS = 128
#: Chunks of a cps-v4 codec whose integer entropy networks run as one batch (``decode_many``): the
#: per-call cost is shared. Batches of 16 and 32 decoded no faster than 4 in a profile on a 2-core
#: EPYC (their buffers leave the cache); one of 6 (a Kodak image's chunks) faster than 4 and 2
#: with the compiled path (3-4% in two interleaved runs). No committed benchmark sweeps this.
BATCH = 8


def check_framing(data: bytes) -> bool:
    """True if ``data`` has a CPS chunk's magic, version, consistent lengths and a valid CRC32
    (no model needed: what ``--resume`` and ``verify`` use to trust a written chunk)."""
    if len(data) < _HEADER.size + 4:
        return False
    magic, version, *_, z_len, y_len = _HEADER.unpack_from(data)
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    return (magic == MAGIC and version in VERSIONS.values() and _HEADER.size + z_len + y_len + 4 == len(data)
            and zlib.crc32(data[:-4]) == crc)


def streams(data: bytes, z_len: int) -> tuple[bytes, bytes]:
    """A chunk's (z stream, y stream) bytes, given the header's ``z_len``."""
    data = bytes(data)
    return data[_HEADER.size : _HEADER.size + z_len], data[_HEADER.size + z_len : -4]


class ChunkCoder:
    """Encode/decode latent chunks with the entropy model of one :class:`CPSModel`.

    >>> coder = ChunkCoder(model)                              # doctest: +SKIP
    >>> data = coder.encode(y_hat, quality=4)                  # y_hat: int16 [M, h, w]
    >>> y, q = coder.decode(data)                              # y == y_hat, q == 4.0
    """

    def __init__(self, model: CPSModel, device: str | torch.device = "cpu") -> None:
        """``device``: where a cps-v4 codec's integer entropy networks run (the chunks come out the
        same on any device, by construction; float entropy networks always run on the CPU)."""
        retain_freed_memory()  # a coder decodes batch after batch of the same sizes (heap.py)
        self.M = model.config.M
        self.Nz = model.config.Nz
        self._model = model
        self._h_a = model.h_a
        self._hyper_block = Geometry.of(model).hyper_block
        float_entropy = model.integer is None
        # A float64 copy of the hyper synthesis: the coder's parameters must be reproducible.
        self._h_s64 = copy.deepcopy(model.h_s).to(torch.float64).eval() if float_entropy else None
        self._context64 = None if model.context is None else copy.deepcopy(model.context).to(torch.float64).eval()
        self._level_code = model.level_code
        self._version = VERSIONS[model.config.entropy]
        self._integer = model.integer
        if model.integer is not None and torch.device(device) != torch.device("cpu"):
            self._integer = copy.deepcopy(model.integer).to(device)
        #: the stored coding tables of a cps-v4 codec (None for float entropy networks)
        self.tables = None if float_entropy else TableCoder(model.integer.counts.numpy())
        self.z_density = model.z_density
        #: results reused for identical latent blocks and bitstreams (memo.py)
        self._encoded, self._decoded = ContentMemo(), ContentMemo()

    # -- helpers ------------------------------------------------------------------------------
    def _gain64(self, quality: float) -> np.ndarray:
        gain, _ = self._model.gains(quality, torch.float64)
        return gain.numpy().reshape(-1, 1, 1)

    @torch.inference_mode()
    def _hyper(self, z_hats: list[np.ndarray], sizes: list[tuple[int, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """z_hat ``[Nz, h/4, w/4]`` per chunk -> the hyperprior's float64 (means, scales) ``[1, M, h, w]``
        in unit-gain units, not yet snapped.

        Chunks with equal z shapes go through ``h_s`` as one float64 batch; the fixed grids that
        ``_y_params`` snaps to make the coded result independent of how chunks were batched (tested).
        """
        out: list = [None] * len(z_hats)
        groups: dict[tuple, list[int]] = {}
        for k, z in enumerate(z_hats):
            groups.setdefault(z.shape, []).append(k)
        for idx in groups.values():
            batch = torch.from_numpy(np.stack([z_hats[k] for k in idx]).astype(np.float64))
            means, scales = hyper_head(self._h_s64(batch))
            for b, k in enumerate(idx):
                h, w = sizes[k]
                out[k] = (means[b : b + 1, :, :h, :w], scales[b : b + 1, :, :h, :w])
        return out

    def _y_params(self, means: torch.Tensor, scales: torch.Tensor,
                  quality: float) -> Generator[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, None]:
        """The coded parts of y_hat ``[M, h, w]`` in turn: (flat indices, snapped means, snapped
        scales) in y_hat units. Without a context one part, the whole block; with one, each slice
        (and with a spatial context each checkerboard half of it), computed from the parts before it,
        whose values the caller sends back (decoded, or the encoder's own). Encoder and decoder both
        run this, so they derive the same numbers the same way."""
        gain = self._gain64(quality)
        _, m_ch, h, w = means.shape
        if self._context64 is None:
            yield (np.arange(m_ch * h * w), snap_means(means[0].numpy() * gain).ravel(),
                   snap_scales(scales[0].numpy() * gain).ravel())
            return
        ctx, code = self._context64, self._level_code(quality)
        index = np.arange(m_ch * h * w).reshape(m_ch, h, w)
        unit = np.repeat(gain.ravel(), h * w)  # per element, to turn sent values back into unit gain
        decoded = np.zeros(m_ch * h * w)  # unit-gain y_hat; zero where not decoded yet
        halves = ctx.halves(h, w)  # the same cells in every slice: all, or anchors then the rest
        keeps = [... if mask is None else mask.numpy().astype(bool) for mask in halves]
        for k in range(ctx.slices):
            cut = slice(k * ctx.width, (k + 1) * ctx.width)
            decoded_t = torch.from_numpy(decoded).view(1, m_ch, h, w)  # shares memory: sees each part's values
            slice_m, slice_s = ctx.slice_params(k, decoded_t, means, scales, code)
            shared = ctx.spatial_features(k, decoded_t) if ctx.spatial else None
            for half, (mask, keep) in enumerate(zip(halves, keeps)):
                m, s = (slice_m, slice_s) if mask is None else ctx.half_params(k, half, shared, decoded_t, slice_m, slice_s, code)
                # slices decoded from a forged stream can drive the networks to overflow; the snapping
                # bounds whatever comes out, so that is no error (and no warning) here
                with np.errstate(over="ignore", invalid="ignore"):
                    m, s = snap_means(m[0].numpy() * gain[cut]), snap_scales(s[0].numpy() * gain[cut])
                cells, params = index[cut][:, keep].ravel(), (m[:, keep].ravel(), s[:, keep].ravel())
                values = yield cells, *params
                decoded[cells] = values / unit[cells]

    def _integer_parts(self, z_hats: list[np.ndarray], h: int, w: int, qualities: list[float]):
        """The integer model's coded parts of chunks ``[M, h, w]`` of one shape, in lockstep
        (``IntegerEntropy.parts``; the encoder's is a batch of one)."""
        base = self._integer.hyper(torch.from_numpy(np.stack(z_hats)), h, w)
        return self._integer.parts(base, [round(q * 100) for q in qualities])

    def _decode_tables(self, payloads: list[bytes], z_hats: list[np.ndarray], h: int, w: int,
                       qualities: list[float]) -> list[np.ndarray]:
        """The y streams of chunks of one shape ``[M, h, w]``, decoded in lockstep."""
        return self.tables.decompress(payloads, self._integer_parts(z_hats, h, w, qualities), self.M * h * w)

    # -- public -------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, y_hat: np.ndarray, quality: float) -> bytes:
        """Integer latent block ``[M, h, w]`` (h, w <= MAX_CELLS) at ``quality`` -> bytes."""
        y_hat = np.asarray(y_hat)
        if y_hat.ndim != 3 or y_hat.shape[0] != self.M or not (0 < min(y_hat.shape[1:]) <= max(y_hat.shape[1:]) <= MAX_CELLS):
            raise ValueError(f"y_hat must be [M={self.M}, h, w] with 1 <= h, w <= {MAX_CELLS}, got {y_hat.shape}")
        if not np.issubdtype(y_hat.dtype, np.integer) or y_hat.min() < -32768 or y_hat.max() > 32767:
            raise ValueError("y_hat must hold integers in the int16 range")
        q = check_quality(quality, self._model.config.levels)
        if not reuse_enabled():
            return self._encode(y_hat, q)
        key = content_key(y_hat.astype(np.int16), q)
        if (data := self._encoded.get(key)) is None:
            data = self._encode(y_hat, q)
            self._encoded.put(key, data)
        return data

    def _encode(self, y_hat: np.ndarray, q: float) -> bytes:
        _, h, w = y_hat.shape
        gain = self._gain64(q)
        block = self._hyper_block
        ph, pw = -(-h // block) * block, -(-w // block) * block
        y_in = torch.from_numpy(y_hat / gain).float()[None]
        y_in = F.pad(y_in, (0, pw - w, 0, ph - h), mode="replicate") if (ph, pw) != (h, w) else y_in
        with full_precision():  # a caller's bf16 autocast (for synthesis) does not reach h_a
            z = self._h_a(y_in)[0].numpy()
        s = self.z_density.support
        z_hat = np.clip(np.rint(z), -s, s).astype(np.int32)
        lo, hi = int(y_hat.min()), int(y_hat.max())
        z_bytes = self.z_density.compress(z_hat)
        # A constant block needs no y stream: the header's range already says everything.
        y_bytes = b""
        if hi > lo and self._integer is not None:
            parts = self._integer_parts([z_hat], h, w, [q])
            y_bytes = self.tables.compress(run_parts(parts, y_hat.astype(np.int64)))
        elif hi > lo:
            ((means, scales),) = self._hyper([z_hat], [(h, w)])
            parts = self._y_params(means, scales, q)
            y_bytes = GaussianConditional.compress(*GaussianConditional.feed(parts, y_hat.astype(np.float64)), lo, hi)
        head = _HEADER.pack(MAGIC, self._version, 0, round(q * 100), self.M, h, w, lo, hi, len(z_bytes), len(y_bytes))
        body = head + z_bytes + y_bytes
        return body + struct.pack("<I", zlib.crc32(body))

    def read_header(self, data: bytes) -> tuple[float, int, int, int, int, int, int]:
        """Validate framing, CRC and fields; return (quality, h, w, lo, hi, z_len, y_len)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CorruptChunkError(f"chunk must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size + 4:
            raise CorruptChunkError(f"chunk truncated: {len(data)} bytes")
        magic, version, flags, q100, m, h, w, lo, hi, z_len, y_len = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CorruptChunkError("not a CPS chunk (bad magic)")
        if version != self._version:
            raise CorruptChunkError(f"chunk format version {version}, but this codec writes and reads {self._version}")
        (crc,) = struct.unpack_from("<I", data, len(data) - 4)
        if zlib.crc32(data[:-4]) != crc:
            raise CorruptChunkError("chunk checksum mismatch (damaged data)")
        if flags != 0 or not (100 <= q100 <= 100 * self._model.config.levels):
            raise CorruptChunkError(f"invalid chunk header (flags {flags}, quality {q100 / 100})")
        if m != self.M:
            raise CorruptChunkError(f"chunk has {m} latent channels, this model has {self.M}")
        if not (1 <= h <= MAX_CELLS and 1 <= w <= MAX_CELLS) or lo > hi:
            raise CorruptChunkError(f"invalid chunk header (shape {h}x{w}, range {lo}..{hi})")
        if z_len % 4 or y_len % 4 or _HEADER.size + z_len + y_len + 4 != len(data) or (lo == hi) != (y_len == 0):
            raise CorruptChunkError("chunk stream lengths do not match its size")
        return q100 / 100, h, w, lo, hi, z_len, y_len

    def decode(self, data: bytes, shape: tuple[int, int, int] | None = None) -> tuple[np.ndarray, float]:
        """Bytes -> (y_hat int16 ``[M, h, w]``, quality). Raises only :class:`CorruptChunkError`.

        ``shape``, when given, is the block shape the caller expects at this chunk position.
        """
        return self.decode_many([data], [shape])[0]

    def decode_many(self, datas: list[bytes], shapes: list | None = None) -> list[tuple[np.ndarray, float]]:
        """Decode several chunks, running their hyper decoders as batches. Any bad chunk raises
        :class:`CorruptChunkError` for the call (use :meth:`decode` to isolate it). A bitstream
        identical to one decoded recently is not decoded again (``memo.py``)."""
        shapes = shapes or [None] * len(datas)
        datas = [bytes(d) for d in datas]  # one copy per chunk (memoryviews, zarr buffers)
        if not reuse_enabled():
            return self._decode_batch(datas, shapes)
        keys = [content_key(data) for data in datas]
        out: list = [self._decoded.get(key) for key in keys]
        for data, shape, found in zip(datas, shapes, out):
            if found is not None:  # framing, CRC and the expected shape are still checked
                self._check_shape(self.read_header(data), shape)
        todo = [i for i, found in enumerate(out) if found is None]
        for i, result in zip(todo, self._decode_batch([datas[i] for i in todo], [shapes[i] for i in todo])):
            self._decoded.put(keys[i], result)
            out[i] = result
        return out

    def _check_shape(self, head: tuple, shape: tuple[int, int, int] | None) -> None:
        _, h, w = head[:3]
        if shape is not None and tuple(shape) != (self.M, h, w):
            raise CorruptChunkError(f"chunk holds a {self.M}x{h}x{w} block, expected {tuple(shape)}")

    @torch.inference_mode()
    def _decode_batch(self, datas: list[bytes], shapes: list) -> list[tuple[np.ndarray, float]]:
        heads, z_hats = [], []
        for data, shape in zip(datas, shapes):
            q, h, w, lo, hi, z_len, y_len = head = self.read_header(data)
            self._check_shape(head, shape)
            zs = (self.Nz, -(-h // self._hyper_block), -(-w // self._hyper_block))
            z_hats.append(self._guard(self.z_density.decompress, data[_HEADER.size : _HEADER.size + z_len], zs))
            heads.append(head)
        params = self._guard(self._hyper, z_hats, [hd[1:3] for hd in heads]) if self._integer is None else None
        coded = self._decode_integer(datas, heads, z_hats) if self._integer is not None else {}
        out = []
        for i, (data, (q, h, w, lo, hi, z_len, _)) in enumerate(zip(datas, heads)):
            if lo == hi:
                y_hat = np.full((self.M, h, w), lo, dtype=np.int16)
            elif self._integer is not None:
                y_hat = coded[i].reshape(self.M, h, w)
            else:
                y_hat = self._guard(GaussianConditional.decompress, streams(data, z_len)[1], self._y_params(*params[i], q),
                                    lo, hi, self.M * h * w).reshape(self.M, h, w)
            if y_hat.size and (y_hat.min() < lo or y_hat.max() > hi):
                raise CorruptChunkError("chunk stream decodes outside its declared range")
            out.append((y_hat.astype(np.int16), q))
        return out

    def _decode_integer(self, datas: list[bytes], heads: list[tuple], z_hats: list[np.ndarray]) -> dict[int, np.ndarray]:
        """The y streams of a cps-v4 codec's non-constant chunks, chunks of one shape in batches of
        up to ``BATCH`` -> ``{position in datas: y_hat.ravel()}``."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (_, h, w, lo, hi, *_) in enumerate(heads):
            if hi > lo:
                groups.setdefault((h, w), []).append(i)
        coded = {}
        for (h, w), idx in groups.items():
            for s in range(0, len(idx), BATCH):
                batch = idx[s : s + BATCH]
                payloads = [streams(datas[i], heads[i][5])[1] for i in batch]
                ys = self._guard(self._decode_tables, payloads, [z_hats[i] for i in batch], h, w,
                                 [heads[i][0] for i in batch])
                coded.update(zip(batch, ys))
        return coded

    @staticmethod
    def _guard(fn, *args):
        """``fn(*args)``, with any failure of the entropy decoder turned into CorruptChunkError."""
        try:
            return fn(*args)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except BaseException as exc:  # constriction reports bad streams with assorted types, Rust panics included
            raise CorruptChunkError(f"chunk stream does not decode: {type(exc).__name__}: {exc}") from None
