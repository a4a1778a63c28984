"""Texture-rich evaluation set: CPS against JPEG q90, JPEG XL and AVIF, per image.

The texture target for a high-fidelity codec: at the PSNR that JPEG q90 gives an image, CPS
should need at most 60% of JPEG q90's bits. The set is the evaluation part of ``scripts/texture_data.sh`` (an
immunohistochemistry micrograph and three greyscale textures from the scikit-image wheel), which
no training run reads. Greyscale images are given to every codec as three equal channels.

The images were JPEG-compressed before they were packaged, and re-encoding an image on its old
block grid flatters JPEG: grass gives 51.7 dB at q90 but 44.1 dB at q89, and 36.5 dB at q90 with
the grid shifted by (3, 5) pixels. So each image is downsampled 2x (area) first, as training does
with JPEG sources (``cps_tiles.training.data``): every codec then sees the same, grid-free image.

    bash scripts/texture_data.sh ~/data/skimage
    python benchmarks/rd_texture.py ~/data/skimage/eval
    python benchmarks/rd_texture.py ~/data/skimage/eval --checkpoint RUN/checkpoint.pt   # also a run in training

* CPS: every quality level of each codec, whole store bytes (256-px chunks), the image decoded
  from the store. A checkpoint is exported as a temporary codec first (as ``widen_probe.py`` does):
  hyperprior-only as trained, without the entropy context a release adds (r8's saves 7% over r6).
* JPEG q90 (imagecodecs' libjpeg-turbo, its default 4:2:0): the whole image, and for an image
  larger than one tile also in 256-px tiles, as slide archives store it.
* CPS bits at JPEG q90's PSNR: log bpp interpolated (PCHIP) in PSNR along the codec's curve;
  "not reached" when JPEG q90's PSNR is above the codec's top level, with the gap.
* BD-rate against JPEG XL and AVIF (whole images) over the mean curves of the set.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, machine, md_table, psnr, store_point  # noqa: E402
from rd_kodak import HIGH_RATES, baselines, bd_cell, per_chunk, rate_points, run_baselines, whole_image  # noqa: E402

JPEG_Q = 90
CHUNK = 256  # CPS chunks and JPEG tiles, pixels
SHRINK = 2  # see the module docstring: washes out the images' old JPEG grid
TARGET = 0.60  # of JPEG q90's bits


def load_image(path: Path) -> np.ndarray:
    """``[H/2, W/2, 3]`` uint8: downsampled 2x (area), a greyscale image as three equal channels."""
    import pyvips

    im = pyvips.Image.new_from_file(str(path))
    im = im.colourspace("srgb") if im.bands < 3 else im[0:3]
    return np.ascontiguousarray(im.shrink(SHRINK, SHRINK).cast("uchar").numpy())


def cps_curve(codec: str, a: np.ndarray, qualities: list[float], tmp: Path) -> dict:
    """bpp (whole store bytes) and PSNR of ``a`` at each quality."""
    bpp, db = zip(*(store_point(codec, a, q, tmp / "store.zarr", CHUNK) for q in qualities))
    return {"bpp": list(bpp), "psnr": list(db)}


def bpp_at(curve: dict, target_psnr: float) -> float | None:
    """The curve's bpp at ``target_psnr`` (PCHIP in log bpp), None outside its PSNR range."""
    from scipy.interpolate import PchipInterpolator

    p, r = rate_points(curve)
    if not p[0] <= target_psnr <= p[-1]:
        return None
    return float(np.exp(PchipInterpolator(p, r)(target_psnr)))


def _point(nbytes: int, decoded: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    """(bpp, PSNR) of a baseline's bytes and decoded image of ``a``."""
    return 8 * nbytes / (a.shape[0] * a.shape[1]), psnr(decoded, a)


def main() -> None:
    from cps_tiles.transforms.weights import DEFAULT_CODEC, load_codec

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="the evaluation images (scripts/texture_data.sh DEST/eval)")
    p.add_argument("--codec", action="append", help=f"a released codec (repeatable; default {DEFAULT_CODEC})")
    p.add_argument("--checkpoint", type=Path, help="also a training run's checkpoint.pt")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "rd_texture.md")
    a = p.parse_args()
    paths = sorted(x for x in a.folder.glob("*") if x.suffix.lower() in (".png", ".jpg", ".tif", ".tiff"))
    if not paths:
        raise SystemExit(f"no images in {a.folder} (make them with scripts/texture_data.sh)")
    images = {x.stem: load_image(x) for x in paths}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        codecs = {name: name for name in a.codec or [DEFAULT_CODEC]}
        if a.checkpoint:
            import torch

            from cps_tiles.training.run import export_checkpoint

            step = torch.load(a.checkpoint, map_location="cpu", weights_only=False)["step"]
            codecs[f"run at step {step}"] = str(export_checkpoint(a.checkpoint, tmp / "run", "texture-probe").path)
        curves = {}
        for label, codec in codecs.items():
            levels = load_codec(codec).model.config.levels
            curves[label] = {k: cps_curve(codec, x, [float(q) for q in range(1, levels + 1)], tmp) for k, x in images.items()}
            print(f"{label} done", flush=True)
    _, enc, dec = baselines()["JPEG"]
    jpeg, tiled = {}, {}
    for k, x in images.items():
        jpeg[k] = _point(*whole_image(enc, dec, x, JPEG_Q), x)
        if max(x.shape[:2]) > CHUNK:  # else one tile: the whole image
            tiled[k] = _point(*per_chunk(enc, dec, x, JPEG_Q, CHUNK), x)
    baseline_curves = run_baselines(list(images.items()), CHUNK)
    ref_curves = {name: baseline_curves[f"{name} (whole)"] for name in ("JPEG XL", "AVIF")}

    rows = []
    for label, per_image in curves.items():
        for k in images:
            c = per_image[k]
            for ref_name, (jb, jp) in [("whole", jpeg[k])] + ([("256-px tiles", tiled[k])] if k in tiled else []):
                b = bpp_at(c, jp)
                verdict = (f"{b:.3f} ({b / jb:.0%})" if b is not None
                           else f"not reached: top {max(c['psnr']):.2f} dB, {jp - max(c['psnr']):.2f} dB short")
                rows.append([label, k, ref_name, f"{jp:.2f}", f"{jb:.3f}", verdict])
    curve_rows = [[label, k, " ".join(f"{b:.2f}/{d:.1f}" for b, d in zip(c["bpp"], c["psnr"]))]
                  for label, per_image in curves.items() for k, c in per_image.items()]
    mean_curves = {label: {"bpp": np.mean([c["bpp"] for c in per_image.values()], 0).tolist(),
                           "psnr": np.mean([c["psnr"] for c in per_image.values()], 0).tolist()}
                   for label, per_image in curves.items()}
    bd_rows = [[label, name, bd_cell(ref, mean_curves[label]), bd_cell(ref, mean_curves[label], HIGH_RATES)]
               for label in curves for name, ref in ref_curves.items()]
    cmd = "python benchmarks/rd_texture.py DEST/eval" + "".join(f" --codec {c}" for c in a.codec or []) + (
        " --checkpoint RUN/checkpoint.pt" if a.checkpoint else "")
    a.out.write_text(
        "# Texture-rich evaluation set: CPS against JPEG q90, JPEG XL and AVIF\n\n"
        f"Command: `{cmd}` (commit {git_rev()}; DEST from `scripts/texture_data.sh`); images: "
        f"{', '.join(f'{k} ({x.shape[1]}x{x.shape[0]})' for k, x in images.items())}; machine: {machine()}. "
        "Method: the script's docstring.\n\n"
        f"## Bits at JPEG q{JPEG_Q}'s PSNR (target: at most {TARGET:.0%} of JPEG q{JPEG_Q}'s bits)\n\n"
        + md_table(["codec", "image", f"JPEG q{JPEG_Q}", "its PSNR (dB)", "its bpp", "CPS bpp at that PSNR"], rows)
        + "\n\n## BD-rate over the set's mean curves (whole images; negative: fewer bits than the reference)\n\n"
        + md_table(["codec", "reference", "BD-rate", f"over {HIGH_RATES[0]:g}-{HIGH_RATES[1]:g} bpp of the reference"], bd_rows)
        + "\n\n## CPS curves (bpp/PSNR dB at quality 1, 2, ...)\n\n" + md_table(["codec", "image", "points"], curve_rows) + "\n")
    print(a.out.read_text())


if __name__ == "__main__":
    main()
