"""IIIF Image API 3.0 (https://iiif.io/api/image/3.0/): parsing an image request and describing an
image in ``info.json``. Pure functions of the URL's parameters and the image size, no I/O.

A request ``{region}/{size}/{rotation}/{quality}.{format}`` becomes an :class:`ImageRequest`:

    region  full | square | x,y,w,h | pct:x,y,w,h          -> pixels of level 0, clipped to the image
    size    max | w, | ,h | pct:n | w,h | !w,h  (^ allows upscaling)  -> output width x height
    rotation 0..360 degrees clockwise, optionally mirrored (!)
    quality default | color | gray | bitonal
    format  jpg | png | webp | gif | tif

Every way a request can be wrong raises :class:`~cps_tiles.errors.RequestError` with a one-line
reason, which the server answers with 400.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import RequestError

CONTEXT = "http://iiif.io/api/image/3/context.json"
PROTOCOL = "http://iiif.io/api/image"
FORMATS = ("jpg", "png", "webp", "gif", "tif")
QUALITIES = ("default", "color", "gray", "bitonal")
#: the level-2 features, and those beyond level 2, that this server supports (info.json extraFeatures)
FEATURES = ("baseUriRedirect", "canonicalLinkHeader", "cors", "jsonldMediaType", "mirroring", "profileLinkHeader",
            "regionByPct", "regionByPx", "regionSquare", "rotationArbitrary", "rotationBy90s", "sizeByConfinedWh",
            "sizeByH", "sizeByPct", "sizeByW", "sizeByWh", "sizeUpscaling")
_NUMBER = r"\d+(?:\.\d+)?"


@dataclass(frozen=True)
class ImageRequest:
    """One parsed image request: ``region`` (x, y, w, h) in level-0 pixels inside the image,
    ``size`` (w, h) of the output in pixels, then rotation, mirroring, quality and format."""

    region: tuple[int, int, int, int]
    size: tuple[int, int]
    rotation: float = 0
    mirror: bool = False
    quality: str = "default"
    format: str = "jpg"


def parse_region(text: str, width: int, height: int) -> tuple[int, int, int, int]:
    """The region parameter -> (x, y, w, h) in pixels of a ``width`` x ``height`` image, clipped
    to it; a region of zero size or wholly outside the image is an error."""
    if text == "full":
        return 0, 0, width, height
    if text == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    pct = text.startswith("pct:")
    body = text[4:] if pct else text
    if not re.fullmatch(rf"{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}" if pct else r"\d+,\d+,\d+,\d+", body):
        raise RequestError(f"malformed region {text!r}: expected full, square, x,y,w,h or pct:x,y,w,h")
    x, y, w, h = (float(v) for v in body.split(","))
    if pct:
        # Percentages of the full image; the edges round to the pixel grid, so adjacent
        # percentage regions tile the image without gaps or overlaps.
        x0, x1 = round(x * width / 100), round((x + w) * width / 100)
        y0, y1 = round(y * height / 100), round((y + h) * height / 100)
    else:
        x0, y0, x1, y1 = int(x), int(y), int(x + w), int(y + h)
    if x1 <= x0 or y1 <= y0:
        raise RequestError(f"region {text!r} has zero width or height")
    if x0 >= width or y0 >= height:
        raise RequestError(f"region {text!r} lies outside the {width} x {height} image")
    x1, y1 = min(x1, width), min(y1, height)
    return x0, y0, x1 - x0, y1 - y0


def _fit_area(w: float, h: float, max_area: int) -> tuple[float, float]:
    """Scale (w, h) down, keeping its aspect ratio, until ``w * h <= max_area``."""
    if w * h <= max_area:
        return w, h
    s = math.sqrt(max_area / (w * h))
    return w * s, h * s


def parse_size(text: str, region_w: int, region_h: int, max_area: int) -> tuple[int, int]:
    """The size parameter -> (w, h) of the output for a region of ``region_w`` x ``region_h``
    pixels. Without ``^`` the output may not be larger than the region; no output may exceed
    ``max_area`` pixels (``max`` is scaled down to fit it)."""
    up = text.startswith("^")
    body = text[1:] if up else text
    if body == "max":
        # ^max too is the region's own size: upscaling past the stored resolution adds nothing,
        # and this server declares no maxWidth or maxHeight beyond the image's (the validator agrees)
        w, h = _fit_area(region_w, region_h, max_area)
        w, h = max(1, math.floor(w)), max(1, math.floor(h))
    elif m := re.fullmatch(rf"pct:({_NUMBER})", body):
        p = float(m.group(1))
        if p <= 0:
            raise RequestError(f"size {text!r} is zero")
        if p > 100 and not up:
            raise RequestError(f"size {text!r} would upscale the region; use ^pct: to allow that")
        w, h = max(1, round(region_w * p / 100)), max(1, round(region_h * p / 100))
    elif m := re.fullmatch(r"(!?)(\d*),(\d*)", body):
        confined, ws, hs = m.group(1) == "!", m.group(2), m.group(3)
        if not ws and not hs or confined and not (ws and hs):
            raise RequestError(f"malformed size {text!r}")
        if confined:
            bw, bh = int(ws), int(hs)
            # Without ^ a box that would need upscaling is refused (400) rather than clamped to
            # the region: the reading of the published validator (size_noup) and of Cantaloupe.
            s = min(bw / region_w, bh / region_h)
            w, h = max(1, round(region_w * s)), max(1, round(region_h * s))
            w, h = min(w, bw), min(h, bh)
        elif ws and hs:
            w, h = int(ws), int(hs)
        elif ws:
            w = int(ws)
            h = max(1, round(region_h * w / region_w))
        else:
            h = int(hs)
            w = max(1, round(region_w * h / region_h))
        if w == 0 or h == 0:
            raise RequestError(f"size {text!r} is zero")
    else:
        raise RequestError(f"malformed size {text!r}: expected max, w,, ,h, pct:n, w,h or !w,h (^ to upscale)")
    if not up and (w > region_w or h > region_h):
        raise RequestError(f"size {text!r} ({w} x {h}) is larger than the {region_w} x {region_h} region; "
                           "use ^ to allow upscaling")
    if w * h > max_area:
        raise RequestError(f"size {text!r} ({w} x {h}) exceeds this server's limit of {max_area:,} pixels")
    return w, h


def parse_rotation(text: str) -> tuple[bool, float]:
    """The rotation parameter -> (mirror, degrees clockwise in [0, 360))."""
    mirror = text.startswith("!")
    body = text[1:] if mirror else text
    if not re.fullmatch(_NUMBER, body) or not 0 <= float(body) <= 360:
        raise RequestError(f"malformed rotation {text!r}: expected 0 to 360 degrees, optionally mirrored (!)")
    degrees = float(body) % 360
    return mirror, int(degrees) if degrees.is_integer() else degrees


def parse_request(region: str, size: str, rotation: str, quality_format: str, width: int, height: int,
                  max_area: int) -> ImageRequest:
    """Parse the four path segments of an image request for a ``width`` x ``height`` image."""
    quality, dot, fmt = quality_format.rpartition(".")
    if not dot or quality not in QUALITIES:
        raise RequestError(f"malformed quality/format {quality_format!r}: expected one of "
                           f"{', '.join(QUALITIES)} then .{', .'.join(FORMATS)}")
    if fmt not in FORMATS:
        raise RequestError(f"format {fmt!r} is not supported: {', '.join(FORMATS)}")
    x, y, w, h = parse_region(region, width, height)
    out = parse_size(size, w, h, max_area)
    mirror, degrees = parse_rotation(rotation)
    return ImageRequest((x, y, w, h), out, degrees, mirror, quality, fmt)


def info(base_uri: str, width: int, height: int, level_sizes: list[tuple[int, int]], tile: int,
         max_area: int) -> dict:
    """The ``info.json`` document of an image: ``level_sizes`` are the stored levels' (w, h),
    level 0 first, each a 2x reduction of the previous; tiles of ``tile`` pixels at each level."""
    return {
        "@context": CONTEXT,
        "id": base_uri,
        "type": "ImageService3",
        "protocol": PROTOCOL,
        "profile": "level2",
        "width": width,
        "height": height,
        "maxArea": max_area,
        "sizes": [{"width": w, "height": h} for w, h in reversed(level_sizes) if w * h <= max_area],
        "tiles": [{"width": tile, "height": tile, "scaleFactors": [2**k for k in range(len(level_sizes))]}],
        "extraFormats": ["webp", "gif", "tif"],
        "extraQualities": ["color", "gray", "bitonal"],
        "extraFeatures": list(FEATURES),
    }
