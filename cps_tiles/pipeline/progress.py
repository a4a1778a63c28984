"""A one-line terminal progress bar: tiles done/total, MP/s, ETA. Silent when not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, total_pixels: int, enabled: bool = True, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.total_pixels = total_pixels
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        frac = done / total if total else 1.0
        mps = self.total_pixels * frac / elapsed / 1e6
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        self.stream.write(f"\r[{bar}] {done}/{total} tiles  {mps:6.2f} MP/s  ETA {eta:6.0f} s")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
