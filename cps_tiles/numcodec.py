"""numcodecs codec for CPS latent chunks (``codec_id = "cps_latent"``).

Encodes one integer latent block ``int16 [M, h, w]`` into a self-contained chunk bitstream
(:mod:`cps_tiles.bitstream`) with the entropy model of a named, checksummed codec. The config names
the codec and the sha256 of its weights, so a store can never be decoded with other weights.

Example::

    >>> import numpy as np
    >>> from cps_tiles.numcodec import CPSLatentCodec
    >>> codec = CPSLatentCodec(codec="cps-base", quality=5)      # doctest: +SKIP
    >>> y_hat = np.zeros((codec.channels, 16, 16), np.int16)      # doctest: +SKIP
    >>> np.array_equal(codec.decode(codec.encode(y_hat)), y_hat)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_ndarray

from .bitstream import ChunkCoder
from .model import check_quality
from .weights import DEFAULT_CODEC, CodecError, load_codec


class CPSLatentCodec(Codec):
    """Entropy-code CPS latent chunks.

    Parameters
    ----------
    codec : str
        Name of the trained codec (``codecs/<name>/``) whose entropy model codes the chunks.
    sha256 : str, optional
        sha256 of the codec's weights; checked on first use. Defaults to the installed codec's.
    quality : float
        Quality the latents were quantized at (1..8); recorded in every chunk header too.
    """

    codec_id = "cps_latent"

    def __init__(self, codec: str = DEFAULT_CODEC, sha256: str | None = None, quality: float = 5.0) -> None:
        self.codec = codec
        self.sha256 = sha256
        self.quality = check_quality(quality)
        self._coder: ChunkCoder | None = None

    @property
    def coder(self) -> ChunkCoder:
        if self._coder is None:
            loaded = load_codec(self.codec)
            if self.sha256 is None:
                self.sha256 = loaded.sha256
            elif loaded.sha256 != self.sha256:
                raise CodecError(
                    f"data was written with codec {self.codec!r} sha256 {self.sha256[:12]}..., "
                    f"but the installed weights are {loaded.sha256[:12]}..."
                )
            self._coder = ChunkCoder(loaded.model)
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
        if self.sha256 is None:  # a config always pins the weights it was made with
            self.sha256 = load_codec(self.codec).sha256
        return {"id": self.codec_id, "codec": self.codec, "sha256": self.sha256, "quality": self.quality}

    def __eq__(self, other) -> bool:
        return isinstance(other, CPSLatentCodec) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        return f"CPSLatentCodec(codec={self.codec!r}, sha256={self.sha256!r}, quality={self.quality!r})"
