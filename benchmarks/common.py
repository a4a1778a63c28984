"""Helpers shared by the benchmark scripts: image loading, PSNR, store size, markdown output."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"


def kodak_images(count: int = 24) -> list[Path]:
    """The first ``count`` Kodak images of the shared data; exits with a message where it is absent."""
    images = sorted(KODAK.glob("kodim*.png"))[:count]
    if not images:
        raise SystemExit(f"no Kodak images under {KODAK}")
    return images


def load_rgb(path: Path) -> np.ndarray:
    import pyvips

    return pyvips.Image.new_from_file(str(path)).numpy()[:, :, :3]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def add_bf16_flag(parser: argparse.ArgumentParser) -> None:
    """``--bf16`` / ``--no-bf16``: also measure the bfloat16 decoder. Default: only where this CPU
    computes bf16 natively. An AVX2-only CPU emulates it (a training step 7x slower than in float32,
    ``benchmarks/train_step_avx2.md``): there ``speed.py --only decode`` with bf16 ran past 15
    minutes, where its float32 half takes 85 s (``benchmarks/speed_amd_epyc.md``)."""
    from cps_tiles.transforms.precision import native_bf16

    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=native_bf16(),
                        help="also measure bfloat16 (default here: %(default)s, whether this CPU has native bf16)")


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {sys.version.split()[0]}"


def git_rev() -> str:
    """Short commit of the checkout, marked when the working tree has uncommitted changes."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
    except OSError:
        return "unknown"
    return f"{rev} + uncommitted changes" if dirty else rev


def store_point(codec: str, a: np.ndarray, quality: float, store: Path, chunk: int = 256) -> tuple[float, float]:
    """``a`` through ``cps_tiles.convert`` (level 0 only) -> (bpp of every byte of the store on
    disk, PSNR of the image the conversion returns)."""
    import cps_tiles

    img = cps_tiles.convert(a, store, quality=quality, chunk=chunk, codec=codec, levels=1, progress=False,
                            scheduler="sync", overwrite=True)
    return 8 * dir_bytes(store) / (a.shape[0] * a.shape[1]), psnr(np.asarray(img), a)


_STORE = """
import sys, time, numpy as np, cps_tiles
mode, codec, path, size, quality = sys.argv[1:6]
if mode == "encode":
    from cps_tiles.demo import sample_mosaic
    n = int(size)
    cps_tiles.convert(sample_mosaic()[:n, :n], path, quality=float(quality), chunk=256, levels=1, codec=codec, progress=False)
else:
    t = time.perf_counter()
    np.asarray(cps_tiles.open(path, cache_mb=0))
    print(time.perf_counter() - t)
"""


def store_decode_mps(runs: dict[str, tuple[str, float]], size: int, repeats: int) -> dict[str, float]:
    """Whole-store decode speed in MP/s per label of ``runs`` (label -> (codec name or directory,
    quality)): a ``size`` x ``size`` crop of the bundled sample mosaic, 256-px chunks, level 0 only,
    decoded whole in a fresh process (the caller's environment: thread counts, CPS_TILES_REUSE),
    the labels alternating, best of ``repeats``. A codec directory must be named as its codec: the
    decoding process finds it by the name its store records, through ``CPS_TILES_CODEC_PATH``."""
    best = dict.fromkeys(runs, float("inf"))
    dirs = [str(Path(c).parent) for c, _q in runs.values() if Path(c).is_dir()]
    env = {**os.environ, "CPS_TILES_CODEC_PATH": os.pathsep.join([*dirs, os.environ.get("CPS_TILES_CODEC_PATH", "")])}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {label: f"{tmp}/{k}.zarr" for k, label in enumerate(runs)}
        for label, (codec, quality) in runs.items():
            subprocess.run([sys.executable, "-c", _STORE, "encode", codec, stores[label], str(size), str(quality)], check=True, env=env)
        for _ in range(repeats):
            for label, (codec, _q) in runs.items():
                run = subprocess.run([sys.executable, "-c", _STORE, "decode", codec, stores[label], "0", "0"], check=True,
                                     capture_output=True, text=True, env=env)
                best[label] = min(best[label], float(run.stdout.split()[-1]))
    return {label: size * size / 1e6 / s for label, s in best.items()}


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
