"""``CPSSlide``: a CPS store behind the openslide-python API, so code written for OpenSlide or
tiffslide reads it unchanged.

>>> slide = cps_tiles.CPSSlide("slide.zarr")                        # doctest: +SKIP
>>> slide.level_count, slide.level_dimensions                        # doctest: +SKIP
>>> tile = slide.read_region((10_000, 20_000), 2, (512, 512))        # PIL RGBA, level-0 coordinates
>>> thumb = slide.get_thumbnail((1024, 1024))                        # PIL RGB

Semantics follow openslide-python: ``read_region`` takes the top-left corner in level-0 pixels and
a size in pixels of the requested level, and returns an RGBA image whose pixels outside the slide
are transparent (0, 0, 0, 0); ``get_best_level_for_downsample`` returns the level with the largest
downsample not above the one asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .store.reader import CPSImage

#: the vendor property reported for a store
VENDOR = "cps-tiles"


class CPSSlide:
    """An opened CPS store with OpenSlide's attributes and methods (see the module docstring)."""

    def __init__(self, store: Any, cache_mb: float = 256) -> None:
        self._image = CPSImage(store, cache_mb=cache_mb)
        self._levels = self._image.levels

    # -- OpenSlide attributes ---------------------------------------------------------------
    @property
    def level_count(self) -> int:
        return len(self._levels)

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((lv.shape[1], lv.shape[0]) for lv in self._levels)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Each level's downsample against level 0, as OpenSlide computes it (the mean of the
        width and height ratios: the exact power of two except for rounding at odd sizes)."""
        w0, h0 = self.dimensions
        return tuple((w0 / w + h0 / h) / 2 for w, h in self.level_dimensions)

    @property
    def properties(self) -> Mapping[str, str]:
        """OpenSlide's standard keys where the source had them, then the source's own metadata."""
        meta = self._image.meta
        source = meta.source or {}
        props = {"openslide.vendor": VENDOR, "openslide.level-count": str(self.level_count),
                 "openslide.quickhash-1": meta.sha256, "cps.codec": meta.codec, "cps.quality": str(meta.quality)}
        if "pixel_size_um" in source:
            props["openslide.mpp-y"], props["openslide.mpp-x"] = (str(v) for v in source["pixel_size_um"])
        if "objective_power" in source:
            props["openslide.objective-power"] = str(source["objective_power"])
        if "description" in source:
            props["tiff.ImageDescription"] = str(source["description"])
        for k, ((w, h), ds) in enumerate(zip(self.level_dimensions, self.level_downsamples)):
            props.update({f"openslide.level[{k}].width": str(w), f"openslide.level[{k}].height": str(h),
                          f"openslide.level[{k}].downsample": repr(ds),
                          f"openslide.level[{k}].tile-width": str(meta.chunk),
                          f"openslide.level[{k}].tile-height": str(meta.chunk)})
        for key, value in source.items():
            if key not in ("pixel_size_um", "objective_power", "description"):
                props[f"cps.source.{key}"] = str(value)
        return props

    @property
    def associated_images(self) -> Mapping[str, Any]:
        """The source's label, macro and thumbnail images (PIL), kept losslessly at convert time."""
        from PIL import Image

        out = {}
        for name, pixels in self._image.associated_images.items():
            mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(pixels.shape[2])
            if mode:
                out[name] = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
        return out

    # -- OpenSlide methods ------------------------------------------------------------------
    def get_best_level_for_downsample(self, downsample: float) -> int:
        for k in range(self.level_count - 1, -1, -1):
            if self.level_downsamples[k] <= downsample:
                return k
        return 0

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]):
        """RGBA ``PIL.Image`` of ``size`` (w, h) pixels of ``level``, its top-left corner at
        ``location`` (x, y) in level-0 pixels; pixels outside the slide are transparent."""
        from PIL import Image

        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} does not exist: the slide has {self.level_count}")
        w, h = size
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        ds = 2**level
        x, y = location[0] // ds, location[1] // ds  # OpenSlide: the level pixel containing the corner
        img = self._levels[level]
        lh, lw = img.shape[:2]
        out = np.zeros((h, w, 4), np.uint8)
        y0, y1, x0, x1 = max(0, y), min(lh, y + h), max(0, x), min(lw, x + w)
        if y0 < y1 and x0 < x1:
            pixels = img[y0:y1, x0:x1]
            rgba = out[y0 - y : y1 - y, x0 - x : x1 - x]
            rgba[..., :3] = pixels[..., :1] if pixels.shape[2] == 1 else pixels[..., :3]
            rgba[..., 3] = pixels[..., 3] if pixels.shape[2] == 4 else 255
            rgba[rgba[..., 3] == 0] = 0  # OpenSlide's transparent pixels are all zero
        return Image.fromarray(out, "RGBA")

    def get_thumbnail(self, size: tuple[int, int]):
        """RGB ``PIL.Image`` of the whole slide fitting in ``size``, from the best stored level."""
        from PIL import Image

        w0, h0 = self.dimensions
        downsample = max(w0 / size[0], h0 / size[1])
        level = self.get_best_level_for_downsample(downsample)
        img = self._levels[level]
        pixels = np.asarray(img)
        thumb = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels[..., :3])
        thumb = thumb.convert("RGB")
        thumb.thumbnail(size, Image.Resampling.LANCZOS)
        return thumb

    def close(self) -> None:
        self._levels = ()

    def __enter__(self) -> CPSSlide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CPSSlide({self._image.path!r})"
