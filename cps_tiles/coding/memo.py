"""Work skipped where content repeats: a result computed once is reused for identical inputs.

Whole-slide images are often more than half glass, satellite mosaics hold ocean and nodata: many
compute tiles are one colour, many chunks hold the same latent and the same bitstream. Every stage
here is a pure function of its input and its shapes (padding-free layers, no position input), so
an identical input gives an identical output: reusing it changes no stored byte and no decoded
pixel (``tests/test_reuse.py`` checks both against a run with reuse off).

Four stages reuse, each with its own small LRU keyed by a digest of the input and everything else
the result depends on (codec, quality, shapes, precision):

    analysis of a one-colour compute tile   (store/writer.py)     pixels   -> latent
    entropy coding of a latent chunk        (coding/bitstream.py) latent   -> bytes
    entropy decoding of a chunk bitstream   (coding/bitstream.py) bytes    -> latent
    synthesis of a chunk's latent window    (store/reader.py)     latent   -> pixels

``CPS_TILES_REUSE=0`` in the environment turns reuse off (for comparisons).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

#: entries per stage: repeated content is a handful of distinct values (glass, ocean, nodata)
ENTRIES = 32


def reuse_enabled() -> bool:
    return os.environ.get("CPS_TILES_REUSE", "1") != "0"


def content_key(*parts: Any) -> bytes:
    """A digest of ``parts``: bytes-like and arrays by their bytes (arrays with dtype and shape),
    anything else by its repr."""
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(repr((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).data)
        elif isinstance(part, (bytes, bytearray, memoryview)):
            h.update(part)
        else:
            h.update(repr(part).encode())
        h.update(b"\x00")
    return h.digest()


class ContentMemo:
    """A thread-safe LRU of results by content key; arrays come back as copies, so a caller that
    modifies its result never changes what another one gets."""

    def __init__(self, entries: int = ENTRIES) -> None:
        self.entries = entries
        self._items: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: bytes) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            self.hits += 1
            value = self._items[key]
        return _copied(value)

    def put(self, key: bytes, value: Any) -> None:
        with self._lock:
            self._items[key] = _copied(value)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)


def _copied(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple):
        return tuple(_copied(v) for v in value)
    return value
