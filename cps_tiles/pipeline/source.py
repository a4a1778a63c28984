"""Pixel sources: huge image files streamed region by region with pyvips, or in-memory arrays.

A source hands out ``uint8 [h, w, bands]`` regions on demand and never loads the whole image.
Supported: 8-bit grayscale (1 band), RGB (3) and RGBA (4); TIFF/BigTIFF (tiled, pyramidal: the
first page, or ``page=``), SVS (read as TIFF), PNG, JPEG, WebP and whatever else libvips opens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import PixelFormatError, SourceError
from ..transforms.geometry import Window
from ..transforms.tiling import pad_to

SUPPORTED = "8-bit grayscale (1 band), RGB (3 bands) or RGBA (4 bands)"
#: Largest image accepted (pixels): far beyond any slide, small enough to catch forged sizes.
MAX_PIXELS = 1 << 40


class Source(Protocol):
    height: int
    width: int
    bands: int
    metadata: dict[str, Any]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels of rows y0..y1, columns x0..x1 as ``uint8 [y1-y0, x1-x0, bands]``."""
        ...


def _check_shape(height: int, width: int, bands: int, what: str) -> None:
    if height < 1 or width < 1:
        raise SourceError(f"{what} is empty ({height}x{width} pixels)")
    if height * width > MAX_PIXELS:
        raise SourceError(f"{what} declares {height}x{width} pixels, more than the {MAX_PIXELS} supported")
    if bands not in (1, 3, 4):
        raise PixelFormatError(f"{what} has {bands} bands; supported: {SUPPORTED}")


@dataclass
class ArraySource:
    """A numpy or dask array ``[H, W]`` or ``[H, W, bands]`` of uint8."""

    array: Any
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = self.array
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3:
            raise SourceError(f"array must be [H, W] or [H, W, bands], got shape {self.array.shape}")
        if a.dtype != np.uint8:
            raise SourceError(f"array has dtype {a.dtype}; supported: {SUPPORTED}")
        self.array = a
        self.height, self.width, self.bands = a.shape
        _check_shape(self.height, self.width, self.bands, "array")

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.asarray(self.array[y0:y1, x0:x1])


class VipsSource:
    """A file opened with libvips; regions are decoded on demand (random access).

    Picklable by path, so a Dask task can reopen it on its own worker instead of shipping pixels.
    """

    def __init__(self, path: str | os.PathLike, page: int = 0) -> None:
        self.path, self.page = str(path), page
        self._image = self._open()
        im = self._image
        self.height, self.width, self.bands = im.height, im.width, im.bands
        self.metadata = _file_metadata(self.path, im)

    def _open(self):
        import pyvips

        p = Path(self.path)
        if not p.exists():
            raise SourceError(f"{self.path}: no such file")
        if not p.is_file() or not os.access(p, os.R_OK):
            raise SourceError(f"{self.path}: not a readable file")
        try:
            kwargs = {"page": self.page} if self.page else {}
            im = pyvips.Image.new_from_file(self.path, access="random", fail=True, **kwargs)
        except pyvips.Error as exc:
            msg = str(exc).strip().splitlines()
            raise SourceError(f"{self.path}: cannot read image ({msg[0] if msg else 'unknown format'})") from None
        if im.format != "uchar":
            depth = {"ushort": "16-bit", "short": "16-bit signed", "uint": "32-bit", "int": "32-bit signed",
                     "float": "32-bit float", "double": "64-bit float"}.get(im.format, im.format)
            raise PixelFormatError(f"{self.path}: {depth} pixels are not supported; supported: {SUPPORTED}")
        if im.interpretation == "cmyk":
            raise SourceError(f"{self.path}: CMYK images are not supported; supported: {SUPPORTED}")
        _check_shape(im.height, im.width, im.bands, self.path)
        return im

    def __getstate__(self) -> dict:
        return {"path": self.path, "page": self.page, "height": self.height, "width": self.width,
                "bands": self.bands, "metadata": self.metadata}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._image = None

    def associated(self) -> dict[str, np.ndarray]:
        """The file's label, macro and thumbnail images (see :func:`associated_images`)."""
        return associated_images(self.path)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self._image is None:
            self._image = self._open()
        try:
            return self._image.crop(x0, y0, x1 - x0, y1 - y0).numpy().reshape(y1 - y0, x1 - x0, self.bands)
        except Exception as exc:
            raise SourceError(f"{self.path}: cannot read pixels {x0},{y0}+{x1 - x0}x{y1 - y0} ({exc})") from None


#: Source pixels per side read at once when downsampling: bounds a level's memory, whatever its factor.
_BLOCK = 2048


class DownsampledSource:
    """``source`` reduced ``factor`` times on each side by area averaging: pyramid level k with
    ``factor`` = 2**k, of ``ceil(height / factor) x ceil(width / factor)`` pixels.

    Each pixel is the mean of the ``factor x factor`` source pixels it covers (at the right and
    bottom edges, of those that exist), rounded to the nearest integer (halves to even). Regions are
    read from the source in blocks of at most 2048 x 2048 source pixels, so memory stays bounded for
    any factor; pickles as its source does (a file source by path).
    """

    def __init__(self, source: Source, factor: int) -> None:
        if factor < 1:
            raise ValueError(f"downsampling factor must be >= 1, got {factor}")
        self.source, self.factor = source, factor
        self.height, self.width = -(-source.height // factor), -(-source.width // factor)
        self.bands, self.metadata = source.bands, source.metadata

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        f, src = self.factor, self.source
        out = np.empty((y1 - y0, x1 - x0, self.bands), np.uint8)
        step = max(1, _BLOCK // f)
        for oy in range(y0, y1, step):
            for ox in range(x0, x1, step):
                oy1, ox1 = min(oy + step, y1), min(ox + step, x1)
                block = src.read(oy * f, min(oy1 * f, src.height), ox * f, min(ox1 * f, src.width))
                out[oy - y0 : oy1 - y0, ox - x0 : ox1 - x0] = box_mean(block, f)
        return out


def box_mean(block: np.ndarray, factor: int) -> np.ndarray:
    """``uint8 [h, w, C]`` -> ``uint8 [ceil(h/f), ceil(w/f), C]``: the mean of each ``f x f`` box
    (partial boxes at the bottom and right average the pixels they have), rounded half to even."""
    h, w = block.shape[:2]
    rows, cols = np.arange(0, h, factor), np.arange(0, w, factor)
    sums = np.add.reduceat(np.add.reduceat(block.astype(np.float64), rows, axis=0), cols, axis=1)
    counts = np.diff(np.append(rows, h))[:, None] * np.diff(np.append(cols, w))[None, :]
    return np.rint(sums / counts[:, :, None]).astype(np.uint8)


def _file_metadata(path: str, im) -> dict[str, Any]:
    """Source file name, pixel size (TIFF resolution or Aperio MPP), GeoTIFF tags when present."""
    meta: dict[str, Any] = {"file": Path(path).name, "loader": im.get("vips-loader") if im.get_typeof("vips-loader") else None}
    fields = set(im.get_fields())
    if "aperio.MPP" in fields:
        mpp = float(im.get("aperio.MPP"))
        meta["pixel_size_um"] = [mpp, mpp]
    if "aperio.AppMag" in fields:
        meta["objective_power"] = float(im.get("aperio.AppMag"))
    if "image-description" in fields:
        meta["description"] = str(im.get("image-description"))[:65536]
        meta.update({k: v for k, v in _aperio_fields(meta["description"]).items() if k not in meta})
    elif "resolution-unit" in fields and im.xres > 0 and str(im.get("resolution-unit")) in ("in", "cm"):
        # libvips stores xres/yres in pixels per millimetre
        meta["pixel_size_um"] = [1000.0 / im.yres, 1000.0 / im.xres]
    if str(meta.get("loader", "")).startswith("tiff"):
        meta.update(geotiff_tags(path))
    return meta


def _aperio_fields(description: str) -> dict[str, Any]:
    """Pixel size and objective power from an Aperio (SVS) ImageDescription: ``...|MPP = 0.2520|AppMag = 20|...``."""
    out: dict[str, Any] = {}
    if not description.startswith("Aperio"):
        return out
    fields = dict(part.split("=", 1) for part in description.split("|")[1:] if "=" in part)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    try:
        if "MPP" in fields:
            out["pixel_size_um"] = [float(fields["MPP"])] * 2
        if "AppMag" in fields:
            out["objective_power"] = float(fields["AppMag"])
    except ValueError:
        pass  # a malformed description keeps its text, nothing parsed from it
    return out


#: Associated images of a slide kept at convert time: name -> words that mark its TIFF page.
ASSOCIATED = {"label": ("label",), "macro": ("macro",), "thumbnail": ("thumbnail",)}


def associated_images(path: str) -> dict[str, np.ndarray]:
    """The label, macro and thumbnail images of a slide file (SVS or another multi-page TIFF), as
    ``uint8 [h, w, C]``: pages whose ImageDescription names them (an Aperio SVS describes its label
    and macro pages so, and its second page is the thumbnail). Empty for anything else."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            pages = list(tf.pages)
            found: dict[str, np.ndarray] = {}
            for k, page in enumerate(pages[1:], 1):
                text = (page.description or "").lower()
                for name, words in ASSOCIATED.items():
                    is_aperio_thumb = name == "thumbnail" and k == 1 and (pages[0].description or "").startswith("Aperio")
                    if name not in found and (any(w in text.split() or text.startswith(w) for w in words)
                                              or is_aperio_thumb):
                        a = page.asarray()
                        found[name] = a[..., None] if a.ndim == 2 else a
            return {k: np.ascontiguousarray(v, dtype=np.uint8) for k, v in found.items() if v.dtype == np.uint8}
    except Exception:  # associated images are best effort: the slide itself still converts
        return {}


def geotiff_tags(path: str) -> dict[str, Any]:
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            tags = tf.pages[0].tags
            out = {}
            for code, key in ((33550, "model_pixel_scale"), (33922, "model_tiepoint"), (34264, "model_transformation")):
                if code in tags:
                    out[key] = [float(v) for v in tags[code].value]
            if 34735 in tags:
                out["geo_key_directory"] = [int(v) for v in tags[34735].value]
            return {"geotiff": out} if out else {}
    except Exception:  # metadata is best effort: pixels still convert without it
        return {}


def open_source(src: Any, page: int = 0) -> Source:
    """A path (pyvips), a numpy/dask array, or an object that already is a Source."""
    if isinstance(src, (str, os.PathLike)):
        return VipsSource(src, page=page)
    if hasattr(src, "read") and hasattr(src, "bands"):
        return src
    if hasattr(src, "shape") and hasattr(src, "dtype"):
        return ArraySource(src)
    raise SourceError(f"cannot read an image from {type(src).__name__}")


def read_window(source: Source, window: Window) -> np.ndarray:
    """The pixels of ``window`` as RGB ``uint8 [h, w, 3]``, edge-replicated past the image (the
    window is clipped to the padded image already); a grey source is repeated into three bands,
    alpha is dropped."""
    py0, py1, px0, px1 = window.pixels
    pixels = source.read(py0, min(py1, source.height), px0, min(px1, source.width))
    pixels = pad_to(pixels, py1 - py0, px1 - px0)
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return pixels[:, :, :3]
