"""``cps-tiles verify``: check a store's metadata and every chunk (checksum and decodability)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zarr.core.sync import sync

from ..errors import DamagedChunkError
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
    root = CPSImage(location, cache_mb=0)
    report = Report(root.path)
    for img in root.levels:
        _verify_level(img, report)
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
        store, c = img.location.store, img.meta.chunk
        for y in range(0, img.meta.height, c):
            for x in range(0, img.meta.width, c):
                key = f"{img.alpha.path}/{img.alpha.metadata.encode_chunk_key((y // c, x // c))}"
                if not sync(store.exists(key)):
                    report.problems.append(f"chunk {key} is missing")
                    continue
                try:
                    img.alpha[y : y + c, x : x + c]
                except Exception as exc:
                    report.problems.append(f"chunk {key} is damaged ({type(exc).__name__})")
