"""numcodecs codec for CPS latent chunks (``codec_id = "cps_latent"``).

Encodes one integer latent block ``int16 [M, h, w]`` into a self-contained chunk bitstream
(:mod:`cps_tiles.coding.bitstream`) with the entropy model of a named, checksummed codec. The config names
the codec and the sha256 of its weights, so a store can never be decoded with other weights.

Example::

    >>> import numpy as np
    >>> from cps_tiles.zarr_codecs.numcodec import CPSLatentCodec
    >>> codec = CPSLatentCodec(codec="cps-n96m160-r9", quality=5)  # doctest: +SKIP
    >>> y_hat = np.zeros((codec.channels, 16, 16), np.int16)      # doctest: +SKIP
    >>> np.array_equal(codec.decode(codec.encode(y_hat)), y_hat)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_ndarray

from ..coding.bitstream import ChunkCoder
from ..transforms.model import check_quality
from ..transforms.weights import DEFAULT_CODEC, codec_sha256, load_codec


class CPSLatentCodec(Codec):
    """Entropy-code CPS latent chunks.

    Parameters
    ----------
    codec : str
        Name of the trained codec (``codecs/<name>/``) whose entropy model codes the chunks.
    sha256 : str, optional
        sha256 of the codec's weights; checked when the model is first used. Defaults to the
        sha256 the installed codec's ``codec.json`` declares (read at construction; the weights
        are loaded only on first use).
    quality : float
        Quality the latents were quantized at (1 .. the codec's levels); in every chunk header too.
    """

    codec_id = "cps_latent"

    def __init__(self, codec: str = DEFAULT_CODEC, sha256: str | None = None, quality: float = 5.0) -> None:
        self.codec = codec
        self.sha256 = codec_sha256(codec) if sha256 is None else sha256
        self.quality = check_quality(quality)
        self._coder: ChunkCoder | None = None

    @property
    def coder(self) -> ChunkCoder:
        if self._coder is None:
            self._coder = ChunkCoder(load_codec(self.codec, self.sha256).model)
        return self._coder

    @property
    def channels(self) -> int:
        return self.coder.M

    def encode(self, buf) -> bytes:
        """``int16 [M, h, w]`` latent block -> chunk bitstream."""
        return self.coder.encode(np.asarray(ensure_ndarray(buf)), self.quality)

    def decode(self, buf, out=None) -> np.ndarray:
        """Chunk bitstream -> ``int16 [M, h, w]`` (raises CorruptChunkError on bad data)."""
        y_hat, _ = self.coder.decode(ensure_bytes(buf))
        if out is not None:
            out = ensure_ndarray(out)
            out.reshape(-1).view(np.int16)[:] = y_hat.reshape(-1)
            return out
        return y_hat

    def get_config(self) -> dict:
        return {"id": self.codec_id, "codec": self.codec, "sha256": self.sha256, "quality": self.quality}

    def __eq__(self, other) -> bool:
        return isinstance(other, CPSLatentCodec) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        return f"CPSLatentCodec(codec={self.codec!r}, sha256={self.sha256!r}, quality={self.quality!r})"
