"""Deep Zoom (the ``.dzi`` convention OpenSeadragon reads): the descriptor and tile geometry.

Deep Zoom level ``L`` of a W x H image is ``ceil(W / 2**(top - L)) x ceil(H / 2**(top - L))`` with
``top = ceil(log2(max(W, H)))``: level ``top`` is the full image and level 0 a single pixel. That is
the same rounding as the store's pyramid (level k is ``ceil(W / 2**k)``), so Deep Zoom level
``top - k`` *is* stored level k, and with 256-px tiles and no overlap each tile is one stored chunk
where the store's chunks are 256 px.
"""

from __future__ import annotations

import math

from ..errors import RequestError

TILE = 256
OVERLAP = 0
#: tile formats by the extension a Deep Zoom client asks for
FORMATS = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp"}


def top_level(width: int, height: int) -> int:
    """The Deep Zoom level of the full image."""
    return max(0, math.ceil(math.log2(max(width, height))))


def descriptor(width: int, height: int, fmt: str = "jpeg") -> str:
    """The ``.dzi`` XML document of a ``width`` x ``height`` image."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" Overlap="{OVERLAP}" '
            f'TileSize="{TILE}"><Size Width="{width}" Height="{height}"/></Image>\n')


def tile_region(width: int, height: int, level: int, col: int, row: int) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """Deep Zoom tile (``level``, ``col``, ``row``) -> (its region (x, y, w, h) in level-0 pixels,
    its own size (w, h) in pixels); a level or tile outside the pyramid is a :class:`RequestError`."""
    top = top_level(width, height)
    if not 0 <= level <= top:
        raise RequestError(f"Deep Zoom level {level} does not exist: levels are 0..{top}")
    s = 2 ** (top - level)
    lw, lh = -(-width // s), -(-height // s)
    cols, rows = -(-lw // TILE), -(-lh // TILE)
    if not (0 <= col < cols and 0 <= row < rows):
        raise RequestError(f"tile {col}_{row} is outside level {level}, which has {cols} x {rows} tiles")
    x, y = col * TILE, row * TILE
    w, h = min(TILE, lw - x), min(TILE, lh - y)
    region = (x * s, y * s, min(width, (x + w) * s) - x * s, min(height, (y + h) * s) - y * s)
    return region, (w, h)
