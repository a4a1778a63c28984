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
from common import ROOT, dir_bytes, git_rev, machine, md_table, psnr  # noqa: E402
from rd_kodak import HIGH_RATES, baselines, bd_cell, per_chunk  # noqa: E402

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
    import cps_tiles

    bpp, db = [], []
    for q in qualities:
        store = tmp / "store.zarr"
        img = cps_tiles.convert(a, store, quality=q, chunk=CHUNK, levels=1, codec=codec, progress=False, scheduler="sync",
                                overwrite=True)
        bpp.append(8 * dir_bytes(store) / (a.shape[0] * a.shape[1]))
        db.append(psnr(np.asarray(img), a))
    return {"bpp": bpp, "psnr": db}


def bpp_at(curve: dict, target_psnr: float) -> float | None:
    """The curve's bpp at ``target_psnr`` (PCHIP in log bpp), None above its top."""
    from scipy.interpolate import PchipInterpolator

    p, r = np.asarray(curve["psnr"]), np.log(np.asarray(curve["bpp"]))
    order = np.argsort(p)
    p, r = p[order], r[order]
    if target_psnr > p[-1] or target_psnr < p[0]:
        return None
    return float(np.exp(PchipInterpolator(p, r)(target_psnr)))


def whole(enc, dec, x: np.ndarray, q) -> tuple[float, float]:
    """(bpp, PSNR) of the whole image ``x`` through a baseline codec at setting ``q``."""
    data = enc(x, q)
    return 8 * len(data) / (x.shape[0] * x.shape[1]), psnr(dec(data)[:, :, :3], x)


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
    refs = {name: b for name, b in baselines().items() if name in ("JPEG", "JPEG XL", "AVIF")}
    jpeg = {k: whole(*refs["JPEG"][1:], x, JPEG_Q) for k, x in images.items()}
    tiled = {}
    for k, x in images.items():
        if max(x.shape[:2]) <= CHUNK:
            continue  # one tile: the whole image
        n, out = per_chunk(*refs["JPEG"][1:], x, JPEG_Q, CHUNK)
        tiled[k] = (8 * n / (x.shape[0] * x.shape[1]), psnr(out, x))
    ref_curves = {}
    for name in ("JPEG XL", "AVIF"):
        settings, enc, dec = refs[name]
        pts = np.array([[whole(enc, dec, x, q) for x in images.values()] for q in settings]).mean(1)  # [settings, 2]
        ref_curves[name] = {"bpp": pts[:, 0].tolist(), "psnr": pts[:, 1].tolist()}

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
