"""``cps-tiles verify``: check a store's metadata and every chunk (checksum and decodability)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DamagedChunkError
from .layout import ALPHA
from .reader import CPSImage


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


def verify_store(path: str | Path) -> Report:
    """Open the store (metadata, format, codec checksum), then decode every latent chunk and read
    every alpha chunk. Raises :class:`~cps_tiles.errors.StoreError` if the store cannot even be opened."""
    img = CPSImage(path, cache_mb=0)
    report = Report(str(path))
    for i, j in img.chunk_indices():
        report.chunks += 1
        try:
            img.read_latent_chunk(i, j)
        except DamagedChunkError as exc:
            report.problems.append(str(exc).removeprefix(f"{img.path}: "))
    if img.alpha is not None:
        c = img.meta.chunk
        for y in range(0, img.meta.height, c):
            for x in range(0, img.meta.width, c):
                key = f"{ALPHA}/{img.alpha.metadata.encode_chunk_key((y // c, x // c))}"
                if not Path(img.path, key).is_file():
                    report.problems.append(f"chunk {key} is missing")
                    continue
                try:
                    img.alpha[y : y + c, x : x + c]
                except Exception as exc:
                    report.problems.append(f"chunk {key} is damaged ({type(exc).__name__})")
    return report
