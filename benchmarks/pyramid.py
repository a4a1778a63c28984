"""Pyramid levels: their share of the store, the encode time they add, and the time to show an
overview from the top level against decoding level 0 and reducing it.

    python benchmarks/pyramid.py                     # writes benchmarks/pyramid.md
    python benchmarks/pyramid.py --side 8192

The image is the Kodak mosaic of ``stores.py``, converted with the default codec at quality 5,
256-px chunks, once with level 0 only (``levels=1``) and once with every level, each conversion in
a fresh process whose peak resident memory is recorded. The overview is 1024 px on its longest
side: read whole from the smallest stored level at least that large (then reduced to 1024 px),
against decoding level 0 whole and reducing it by area averaging.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, machine, md_table  # noqa: E402
from stores import mosaic, objects_and_bytes  # noqa: E402

CONVERT = """
import resource, sys, time, numpy as np, cps_tiles
pixels = np.load(sys.argv[1])
t = time.perf_counter()
cps_tiles.convert(pixels, sys.argv[2], quality=5, levels=int(sys.argv[3]) or None, progress=False)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def overview_from_levels(img, side: int = 1024):
    """Seconds to show a ``side``-px overview from the smallest stored level at least that large
    (read whole, then reduced by area averaging), and that level."""
    from cps_tiles.pipeline.source import box_mean

    top = next(lv for lv in reversed(img.levels) if max(lv.shape[:2]) >= side)
    t = time.perf_counter()
    small = np.asarray(top)
    box_mean(small, max(1, max(small.shape[:2]) // side))
    return time.perf_counter() - t, top


def main() -> None:
    import cps_tiles
    from cps_tiles.pipeline.source import box_mean

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--side", type=int, default=4096)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "pyramid.md")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "pixels.npy", mosaic(a.side))
        results = {}
        for name, levels in (("level 0 only", 1), ("all levels", 0)):
            out = subprocess.run([sys.executable, "-c", CONVERT, str(tmp / "pixels.npy"), str(tmp / f"{levels}.zarr"),
                                  str(levels)], capture_output=True, text=True, check=True).stdout.split()
            seconds, rss = float(out[0]), float(out[1])
            objects, nbytes = objects_and_bytes(tmp / f"{levels}.zarr")
            results[name] = nbytes
            rows.append([name, cps_tiles.open(tmp / f"{levels}.zarr").level_count, f"{nbytes:,}", f"{objects:,}",
                         f"{seconds:.0f} s", f"{rss:,.0f} MB"])
        share = results["all levels"] / results["level 0 only"] - 1
        t_top, top = overview_from_levels(cps_tiles.open(tmp / "0.zarr", cache_mb=0))
        t = time.perf_counter()
        whole = np.asarray(cps_tiles.open(tmp / "0.zarr", cache_mb=0))
        box_mean(whole, max(1, max(whole.shape[:2]) // 1024))
        t_full = time.perf_counter() - t
    text = (
        "# Pyramid levels: share of the store, encode time, overview time\n\n"
        f"Command: `python benchmarks/pyramid.py --side {a.side}` (commit {git_rev()}); machine: {machine()}.\n\n"
        f"A {a.side} x {a.side} Kodak mosaic, default codec, quality 5, 256-px chunks; each conversion in a fresh "
        "process (peak resident memory of that process).\n\n"
        + md_table(["store", "levels", "bytes", "objects", "encode", "peak memory"], rows) + "\n\n"
        f"The levels above 0 add {100 * share:.1f}% to the store (area-averaged levels of a 4:1 pixel ratio each "
        "would add 33% at equal bits per pixel; reduced levels hold more detail per pixel).\n\n"
        f"A 1024-px overview: {t_top:.2f} s from level {top.level} ({top.shape[1]} x {top.shape[0]}), against "
        f"{t_full:.1f} s decoding level 0 whole and reducing it ({t_full / t_top:.0f}x).\n")
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
