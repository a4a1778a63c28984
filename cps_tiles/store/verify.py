"""``cps-tiles verify``: check a store's metadata and every chunk (checksum and decodability)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zarr.core.sync import sync

from ..errors import DamagedChunkError
from .raster import CPSRaster, is_raster
from .reader import CPSImage

#: Chunks fetched per round trip.
BATCH = 64


@dataclass
class Report:
    store: str
    chunks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        state = "OK" if self.ok else f"DAMAGED ({len(self.problems)} problem(s))"
        return f"{self.store}: {self.chunks} latent chunks checked: {state}"


def verify_store(location: Any) -> Report:
    """Open the store (metadata, format, codec checksum), then decode every latent chunk and read
    every alpha chunk, fetching them through the store in batches. Raises
    :class:`~cps_tiles.errors.StoreError` if the store cannot even be opened."""
    if isinstance(location, (str, Path)) and is_raster(location):
        return _verify_raster(location)
    root = CPSImage(location, cache_mb=0)
    report = Report(root.path)
    for img in root.levels:
        _verify_level(img, report)
    return report


def _verify_raster(location: str | Path) -> Report:
    """A multi-band store: every level of every band group's store, and every nodata mask chunk."""
    raster = CPSRaster(location, cache_mb=0)
    report = Report(raster.path)
    for group in raster.group_images:
        for img in group.levels:
            _verify_level(img, report)
    for level in raster.levels:
        if level.mask is not None:
            _verify_mask(raster.location.store, level.mask, level.mask.chunks[0], report)
    return report


def _verify_level(img: CPSImage, report: Report) -> None:
    """Every latent and alpha chunk of one pyramid level, problems added to ``report``."""
    indices = img.chunk_indices()
    for start in range(0, len(indices), BATCH):
        batch = indices[start : start + BATCH]
        for ij, data in img._chunks.fetch(batch).items():
            report.chunks += 1
            try:
                img._decode_chunk(ij, data)
            except DamagedChunkError as exc:
                report.problems.append(str(exc).removeprefix(f"{img.path}: "))
    if img.alpha is not None:
        _verify_mask(img.location.store, img.alpha, img.meta.chunk, report)


def _verify_mask(store: Any, array: Any, chunk: int, report: Report) -> None:
    """Every chunk of a lossless ``[H, W]`` array (alpha, nodata mask): present and readable."""
    height, width = array.shape
    for y in range(0, height, chunk):
        for x in range(0, width, chunk):
            key = f"{array.path}/{array.metadata.encode_chunk_key((y // chunk, x // chunk))}"
            if not sync(store.exists(key)):
                report.problems.append(f"chunk {key} is missing")
                continue
            try:
                array[y : y + chunk, x : x + chunk]
            except Exception as exc:
                report.problems.append(f"chunk {key} is damaged ({type(exc).__name__})")
