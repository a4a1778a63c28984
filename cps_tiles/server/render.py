"""A region of a stored image at an output size, read from the best pyramid level, then encoded.

    region (level-0 px), size  ->  stored level k: the coarsest whose pixels still cover the output
                               ->  crop of level k (decoded chunks, exact)
                               ->  Lanczos resize, only where the output is not level k's own pixels
                               ->  rotation / mirroring / quality  ->  JPEG, PNG or WebP bytes

Level k pixel ``i`` covers level-0 pixels ``[i * 2**k, (i + 1) * 2**k)`` (the store's levels are
2x area reductions), so a Deep Zoom or IIIF tile aligned to level k is served as level k's own
decoded pixels, byte for byte, and never resampled.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import RequestError

MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif", "tif": "image/tiff"}
_PIL_FORMATS = {"jpg": ("JPEG", {"quality": 90}), "png": ("PNG", {"compress_level": 1}),
                "webp": ("WEBP", {"quality": 90}), "gif": ("GIF", {}), "tif": ("TIFF", {"compression": "tiff_deflate"})}


def best_level(level_shapes: Sequence[tuple[int, int]], region: tuple[int, int, int, int], size: tuple[int, int]) -> int:
    """The coarsest stored level whose crop of ``region`` (x, y, w, h in level-0 pixels) has at
    least ``size`` (w, h) pixels: level resolution at least the request's. ``level_shapes``: (H, W)."""
    x, y, w, h = region
    for k in range(len(level_shapes) - 1, 0, -1):
        s = 2**k
        if -(-(x + w) // s) - x // s >= size[0] and -(-(y + h) // s) - y // s >= size[1]:
            return k
    return 0


def read_scaled(levels: Sequence[Any], region: tuple[int, int, int, int], size: tuple[int, int],
                max_decode: int) -> np.ndarray:
    """Pixels ``uint8 [h, w, C]`` of ``region`` (level-0 pixels) scaled to ``size`` (w, h), read
    from ``levels`` (level images with ``shape`` and slicing, level 0 first). The crop of the
    chosen level may hold at most ``max_decode`` pixels."""
    from PIL import Image

    k = best_level([lv.shape[:2] for lv in levels], region, size)
    level, s = levels[k], 2**k
    lh, lw = level.shape[:2]
    x, y, w, h = region
    x0, y0 = x // s, y // s
    x1, y1 = min(lw, -(-(x + w) // s)), min(lh, -(-(y + h) // s))
    if (x1 - x0) * (y1 - y0) > max_decode:
        hint = "; the store lacks coarser levels (add them with cps-tiles pyramid)" if k == len(levels) - 1 else ""
        raise RequestError(f"the request needs {(x1 - x0) * (y1 - y0):,} decoded pixels at level {k}; "
                           f"this server's limit is {max_decode:,}{hint}")
    pixels = level[y0:y1, x0:x1]
    exact = (x % s, y % s) == (0, 0) and (x1 - x0, y1 - y0) == size
    if exact:
        return pixels
    # the region's exact box in the crop's pixels: the crop is rounded outwards to whole pixels
    box = (x / s - x0, y / s - y0, min(lw, (x + w) / s) - x0, min(lh, (y + h) / s) - y0)
    channels = pixels.shape[2]
    im = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    out = np.asarray(im.resize(size, Image.Resampling.LANCZOS, box=box))
    return out[..., None] if channels == 1 else out


def encode(pixels: np.ndarray, fmt: str, quality: str = "default", rotation: float = 0, mirror: bool = False) -> bytes:
    """``uint8 [h, w, C]`` (C = 1, 3 or 4) -> image file bytes in ``fmt`` (see ``MEDIA_TYPES``),
    after mirroring (about the vertical axis), clockwise rotation and the IIIF quality (default and
    color keep the pixels; gray and bitonal reduce them). Rotation by multiples of 90 degrees moves
    pixels exactly; other angles resample bicubically into the enlarged bounding box, whose corners
    are transparent (white in formats without alpha). JPEG and WebP tiles are written at quality
    90 so the tile format adds little to the codec's own loss; PNG at low effort, as tiles are
    served once and then cached."""
    from PIL import Image

    if fmt not in MEDIA_TYPES:
        raise RequestError(f"format {fmt!r} is not supported: {', '.join(MEDIA_TYPES)}")
    if mirror:
        pixels = pixels[:, ::-1]
    if rotation % 90 == 0:
        pixels = np.rot90(pixels, k=-int(rotation // 90), axes=(0, 1))
    pixels = np.ascontiguousarray(pixels)
    channels = pixels.shape[2]
    im = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    if rotation % 90:
        im = im.convert("RGBA" if channels >= 3 else "LA").rotate(-rotation, Image.Resampling.BICUBIC, expand=True)
    if quality == "gray":
        im = im.convert("LA" if im.mode in ("RGBA", "LA") else "L")
    elif quality == "bitonal":
        im = im.convert("L").convert("1")
    if fmt in ("jpg", "gif") and im.mode in ("RGBA", "LA"):
        # no alpha in the format: transparent pixels (outside the source's mask) become white
        background = Image.new(im.mode[:-1], im.size, 255)
        background.paste(im, mask=im.getchannel("A"))
        im = background
    name, options = _PIL_FORMATS[fmt]
    buf = io.BytesIO()
    im.save(buf, name, **options)
    return buf.getvalue()
