"""Where the top quality levels lose: the transforms' ceiling against the cost of quantization.

For each Kodak image and quality level, the latent the store keeps (``round(g_a(x) * gain)``) and
the same latent *unquantized* (``g_a(x) * gain``) both go through the decoder (``g_s``, tile by
tile as a store decodes). The unquantized PSNR is what finer quantization of the encoder's latent
tends to at that level: if it sits barely above the stored PSNR, quantization is not what limits
that level and more bits for the same latent cannot buy much; better transforms would.

    python benchmarks/ceiling.py                 # writes benchmarks/ceiling.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, kodak_images, load_rgb, machine, md_table, psnr  # noqa: E402


def decoded_psnrs(codec_name: str, images: list[Path], qualities: list[float]) -> dict[float, tuple[float, float]]:
    """quality -> (mean PSNR of the stored latent, mean PSNR of the unquantized latent), in dB."""
    from cps_tiles.transforms.geometry import Geometry, Plan
    from cps_tiles.transforms.tiling import analyze_tiled, pad_to, synthesize_tiled, to_pixels, to_tensor
    from cps_tiles.transforms.weights import load_codec

    model = load_codec(codec_name).model
    sums = {q: np.zeros(2) for q in qualities}
    for path in images:
        a = load_rgb(path)
        plan = Plan(a.shape[0], a.shape[1], Geometry.of(model))
        x = to_tensor(pad_to(a, *plan.padded)).contiguous(memory_format=torch.channels_last)
        y = analyze_tiled(model, x, plan)
        for q in qualities:
            gain, _ = model.gains(q)
            scaled = y * gain.view(1, -1, 1, 1)
            for k, latent in enumerate((torch.round(scaled), scaled)):
                with torch.inference_mode():
                    out = to_pixels(synthesize_tiled(model, latent, q, plan))[: a.shape[0], : a.shape[1]]
                sums[q][k] += psnr(out, a)
    return {q: tuple(s / len(images)) for q, s in sums.items()}


def main() -> None:
    from cps_tiles.transforms.weights import DEFAULT_CODEC

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codec", default=DEFAULT_CODEC)
    p.add_argument("--images", type=int, default=24, help="first N Kodak images")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "ceiling.md")
    a = p.parse_args()
    images = kodak_images(a.images)
    qualities = [float(q) for q in range(1, 9)]
    res = decoded_psnrs(a.codec, images, qualities)
    rows = [[f"{q:g}", f"{r:.3f}", f"{c:.3f}", f"{c - r:+.3f}"] for q, (r, c) in res.items()]
    cmd = "python benchmarks/ceiling.py" + ("" if a.codec == DEFAULT_CODEC else f" --codec {a.codec}") + \
        ("" if a.images == 24 else f" --images {a.images}")
    a.out.write_text(
        "# The transforms' ceiling (Kodak)\n\n"
        f"Command: `{cmd}` (commit {git_rev()}); codec {a.codec}; {len(images)} images; machine: {machine()}.\n\n"
        "Mean PSNR of the decoded image when the decoder gets the latent the store keeps (rounded) and when it gets "
        "the same latent unquantized, per quality level. The gap bounds what finer quantization of the "
        "encoder's latent could buy at that level with these transforms.\n\n"
        + md_table(["quality", "stored latent PSNR (dB)", "unquantized latent PSNR (dB)", "gap (dB)"], rows) + "\n")
    print(a.out.read_text())


if __name__ == "__main__":
    main()
