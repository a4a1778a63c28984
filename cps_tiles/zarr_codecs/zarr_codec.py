"""Zarr v3 array-to-bytes codec ``cps_latent``: the numcodecs codec, exposed to zarr-python 3.

Registered through the ``zarr.codecs`` entry point, so ``zarr.open(store)`` in a process that
imports nothing else finds it from the array metadata::

    {"name": "cps_latent", "configuration": {"codec": "cps-n96m160-r9", "sha256": "d59704ea...", "quality": 5.0}}

Decoding returns the integer latent ``int16 [M, h, w]`` of each chunk.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration

from .numcodec import CPSLatentCodec

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec

NAME = "cps_latent"


@dataclass(frozen=True)
class CPSLatentZarrCodec(ArrayBytesCodec):
    """Zarr v3 wrapper around :class:`~cps_tiles.zarr_codecs.numcodec.CPSLatentCodec`."""

    is_fixed_size = False
    codec: str
    sha256: str
    quality: float

    def __init__(self, *, codec: str, sha256: str, quality: float) -> None:
        object.__setattr__(self, "codec", codec)
        object.__setattr__(self, "sha256", sha256)
        object.__setattr__(self, "quality", float(quality))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, config = parse_named_configuration(data, NAME)
        return cls(**config)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {"name": NAME, "configuration": {"codec": self.codec, "sha256": self.sha256, "quality": self.quality}}

    @property
    def _inner(self) -> CPSLatentCodec:
        # One numcodecs codec (and so one loaded model) per configuration and process.
        return _numcodec(self.codec, self.sha256, self.quality)

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        if np.dtype(dtype.to_native_dtype()) != np.int16 or len(shape) != 3:
            raise ValueError("cps_latent stores int16 latents of shape [M, H/16, W/16]")

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        y_hat = self._inner.coder.decode(chunk_bytes.to_bytes(), shape=chunk_spec.shape)[0]
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(y_hat)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        data = self._inner.encode(chunk_array.as_numpy_array())
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("entropy-coded chunks have no fixed size")


_CODECS: dict[tuple, CPSLatentCodec] = {}


def _numcodec(codec: str, sha256: str, quality: float) -> CPSLatentCodec:
    key = (codec, sha256, quality)
    if key not in _CODECS:
        _CODECS[key] = CPSLatentCodec(codec=codec, sha256=sha256, quality=quality)
    return _CODECS[key]
