"""How many Gaussian scale classes a table-driven entropy coder needs (issue: integer entropy
model): the rate cost of replacing the coder's fine parameter grids by K log-spaced scale classes
and a coarser mean grid, measured on the real coded symbols of Kodak images.

    python benchmarks/sigma_classes.py                 # writes benchmarks/sigma_classes.md
    python benchmarks/sigma_classes.py --images 8

The default codec converts each image (256-px chunks, level 0) at qualities 2, 5 and 8 while every
y stream's symbols and their snapped parameters are recorded from ``GaussianConditional.compress``.
For each choice of K scale classes (log-spaced over the coder's scale range, each scale replaced by
its nearest class in log space) and of mean step, the ideal code length
``-log2(Phi((y + 1/2 - m) / s) - Phi((y - 1/2 - m) / s))`` is summed and compared with the same sum
under today's grids (32 steps per factor e for scales, 1/64 for means). The rates are ideal code
lengths of the y streams only; the table sets and the integer networks that would produce the
indices are not built here, so this measures the quantization of the parameters alone.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, dir_bytes, git_rev, kodak_images, load_rgb, machine, md_table  # noqa: E402

QUALITIES = (2, 5, 8)
CLASSES = (16, 32, 64, 128)
MEAN_STEPS = (64, 16, 4)


def ideal_bits(y: np.ndarray, m: np.ndarray, s: np.ndarray) -> float:
    from scipy.special import ndtr

    p = ndtr((y + 0.5 - m) / s) - ndtr((y - 0.5 - m) / s)
    return float(-np.log2(np.maximum(p, 1e-12)).sum())


def classes(scales: np.ndarray, k: int) -> np.ndarray:
    from cps_tiles.coding.entropy import SCALE_MAX
    from cps_tiles.transforms.density import SCALE_MIN

    lo, hi = math.log(SCALE_MIN), math.log(SCALE_MAX)
    idx = np.clip(np.rint((np.log(scales) - lo) / (hi - lo) * (k - 1)), 0, k - 1)
    return np.exp(lo + idx / (k - 1) * (hi - lo))


def main() -> None:
    import cps_tiles
    from cps_tiles.coding import entropy

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "sigma_classes.md")
    a = p.parse_args()
    recorded: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    original = entropy.GaussianConditional.compress

    def record(symbols, means, scales, lo, hi):
        recorded.append((symbols.astype(np.float64), means.copy(), scales.copy()))
        return original(symbols, means, scales, lo, hi)

    entropy.GaussianConditional.compress = staticmethod(record)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for q in QUALITIES:
            recorded.clear()
            store_bytes = latent_bytes = pixels = 0
            for path in kodak_images(a.images):
                img = load_rgb(path)
                store = Path(tmp) / f"{path.stem}-{q}.zarr"
                cps_tiles.convert(img, store, quality=q, levels=1, progress=False)
                store_bytes += dir_bytes(store)
                latent_bytes += dir_bytes(store / "latent")
                pixels += img.shape[0] * img.shape[1]
            y, m, s = (np.concatenate(v) for v in zip(*recorded))
            base = ideal_bits(y, m, s)
            row = [q, f"{8 * store_bytes / pixels:.3f}", f"{100 * base / (8 * latent_bytes):.1f}%"]
            for k in CLASSES:
                row.append(f"{100 * (ideal_bits(y, m, classes(s, k)) / base - 1):+.2f}%")
            sk = classes(s, 32)
            for steps in MEAN_STEPS[1:]:
                row.append(f"{100 * (ideal_bits(y, np.rint(m * steps) / steps, sk) / base - 1):+.2f}%")
            rows.append(row)
            print(row, flush=True)
    header = (["quality", "store bpp", "y share of latent bytes"] + [f"K = {k}" for k in CLASSES]
              + [f"K = 32, means 1/{st}" for st in MEAN_STEPS[1:]])
    text = ("# Gaussian scale classes for a table-driven entropy coder: rate cost\n\n"
            f"Command: `python benchmarks/sigma_classes.py --images {a.images}` (commit {git_rev()}); "
            f"machine: {machine()}. Method and limits: the script's docstring.\n\n"
            f"First {a.images} Kodak images, default codec. Each cell: the change of the y streams' ideal code "
            "length against today's parameter grids.\n\n" + md_table(header, rows) + "\n")
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
