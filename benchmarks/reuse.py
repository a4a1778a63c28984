"""Encode and decode speed with and without reuse for repeated content (``coding/memo.py``), on a
large photo with a flat background: what whole-slide images (glass) and mosaics (ocean, nodata)
look like.

    python benchmarks/reuse.py                     # writes benchmarks/reuse.md

The image is 4096 x 3072: a flat "glass" colour with 12 Kodak photographs (768 x 512) placed on it,
37% of its area. Each conversion (default codec, quality 5, level 0 only) and each whole-image
decode runs in a fresh process with ``CPS_TILES_REUSE`` set to 0 or 1; the two stores are checked
to be byte-identical and the two decodes pixel-identical.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, kodak_images, load_rgb, machine, md_table  # noqa: E402

GLASS = (236, 232, 240)
RUN = """
import sys, time, numpy as np, cps_tiles
mode, src, store = sys.argv[1:4]
t = time.perf_counter()
if mode == "encode":
    cps_tiles.convert(np.load(src), store, quality=5, levels=1, progress=False)
else:
    np.save(src, np.asarray(cps_tiles.open(store, cache_mb=0)))
print(time.perf_counter() - t)
"""


def flat_background_image() -> np.ndarray:
    img = np.empty((3072, 4096, 3), np.uint8)
    img[:] = GLASS
    photos = [load_rgb(p)[:512, :768] for p in kodak_images(12)]
    spots = [(y, x) for y in (128, 1280, 2432) for x in (96, 1056, 2112, 3168)]
    for (y, x), photo in zip(spots, photos):
        img[y : y + photo.shape[0], x : x + photo.shape[1]] = photo
    return img


def timed(mode: str, reuse: str, src: Path, store: Path) -> float:
    env = {**__import__("os").environ, "CPS_TILES_REUSE": reuse}
    out = subprocess.run([sys.executable, "-c", RUN, mode, str(src), str(store)], env=env, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "reuse.md")
    a = p.parse_args()
    img = flat_background_image()
    mp = img.shape[0] * img.shape[1] / 1e6
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "src.npy", img)
        times = {}
        for reuse in ("0", "1"):
            times["encode", reuse] = timed("encode", reuse, tmp / "src.npy", tmp / f"r{reuse}.zarr")
            times["decode", reuse] = timed("decode", reuse, tmp / f"out{reuse}.npy", tmp / f"r{reuse}.zarr")
        files = [{q.relative_to(tmp / f"r{r}.zarr"): q.read_bytes() for q in (tmp / f"r{r}.zarr").rglob("*")
                  if q.is_file()} for r in ("0", "1")]
        same_store = files[0] == files[1]
        same_pixels = np.array_equal(np.load(tmp / "out0.npy"), np.load(tmp / "out1.npy"))
    for stage in ("encode", "decode"):
        off, on = times[stage, "0"], times[stage, "1"]
        rows.append([stage, f"{off:.1f} s ({mp / off:.2f} MP/s)", f"{on:.1f} s ({mp / on:.2f} MP/s)", f"{off / on:.2f}x"])
    text = (
        "# Reuse for repeated content: encode and decode on a flat background\n\n"
        f"Command: `python benchmarks/reuse.py` (commit {git_rev()}); machine: {machine()}.\n\n"
        f"A {img.shape[1]} x {img.shape[0]} image ({mp:.1f} MP): 12 Kodak photographs on a flat background, "
        "37% of the area; default codec, quality 5, level 0, 256-px chunks, 1024-px compute tiles; each run in a "
        "fresh process.\n\n"
        + md_table(["stage", "reuse off", "reuse on", "speed-up"], rows) + "\n\n"
        f"Stores byte-identical: {'yes' if same_store else 'NO'}; decoded pixels identical: "
        f"{'yes' if same_pixels else 'NO'}.\n")
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
