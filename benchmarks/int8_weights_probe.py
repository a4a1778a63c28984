"""Which of the integer entropy networks' layers can take 7-bit weights (within +-63, as int8
products need) without retraining, and what share of the multiply-adds each group is.

    python benchmarks/int8_weights_probe.py FLOAT_CODEC DATA_DIR... --images 8   # writes benchmarks/int8_weights_probe.md

FLOAT_CODEC is the cps-v3 codec (float context) that r11 was quantized from (not bundled; r11's
``codec.json`` records it), DATA_DIR the calibration images ``quantize-context`` was given. The
probe quantizes it as ``quantize-context --entropy integer8`` does (r11's format, 60 calibration
images), once as is and once per row with one group of layers quantized to weights within +-63
instead of +-511 (``quantize_entropy(weight_max=)``), everything else unchanged. Each model codes
every 256-px chunk of the first ``--images`` Kodak images at every quality level with the real
coder (``ChunkCoder.encode``); a row's rate change is its chunk bytes against r11's format's,
per level (the latents, so the images, are the same). Int8 products in a layer whose inputs
exceed 7 bits (every layer here but the hyper synthesis' first) need its inputs split into digits
as well; this probe measures only what the weights cost.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, kodak_images, load_rgb, machine, md_table  # noqa: E402
from int8_conv_probe import float_context_codec, multiply_adds  # noqa: E402


def input_blocks(model) -> dict[str, list[tuple[str, int]]]:
    """The input column blocks of the first layers of a slice's channel network and head, as
    (name, width) in column order (``IntegerEntropy``'s layout, slice 1: one slice of u)."""
    c, w = model.config, model.config.M // model.config.slices
    return {"nets.1.0": [("means", c.M), ("log2 sigmas", c.M), ("quality code", c.levels), ("u, slice 0", w)],
            "heads.1.0": [("spatial features", c.spatial_hidden), ("means", w), ("log2 sigmas", w),
                          ("quality code", c.levels), ("half flag", 1)]}

#: (label, layer names in ``model.integer`` given 7-bit weights)
GROUPS = [("hyper synthesis, all three layers", r"hyper_layers\.\d+"),
          ("channel networks' first layers", r"nets\.\d+\.0"),
          ("channel networks' second and third layers", r"nets\.\d+\.[12]"),
          ("heads' first layers", r"heads\.\d+\.0"),
          ("heads' second and third layers", r"heads\.\d+\.[12]"),
          ("all of the above (every layer: the spatial convolutions' are 7-bit already)", r"(hyper_layers|nets|heads)\..+")]
#: the hyper synthesis' first two layers run on 1/16 and 1/4 of the cells (``multiply_adds``)
CELL_SHARE = {"hyper_layers.0": 1 / 16, "hyper_layers.1": 1 / 4}
#: what the rows of a context trained for 7-bit weights mean (with --baseline)
QAT_NOTE = ("A context trained through 7-bit rounding (`train-context --qat-weight-max 63`) is meant for that "
            "rounding: its float weights quantized to 10 bits are not the weights it was trained as, so the "
            "rows that leave some layers at 10 bits cost rate; the row with every layer at 7 bits is its format.")
CALIBRATION_IMAGES, CELLS = 60, 16  # r11's quantize-context arguments


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("codec", type=Path, help="a cps-v3 codec directory (float context)")
    p.add_argument("data", nargs="+", type=Path, help="calibration image directories (quantize-context's)")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--baseline", type=Path, help="rates against this float codec's r11-format quantization instead of "
                   "FLOAT_CODEC's (for a codec trained for 7-bit weights: train-context --qat-weight-max 63)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "int8_weights_probe.md")
    a = p.parse_args()
    import torch

    from cps_tiles.coding.bitstream import ChunkCoder
    from cps_tiles.training.data import image_latents, load_training_images
    from cps_tiles.training.quantize import activation_units, quantize_entropy
    from cps_tiles.transforms.integer import IntegerLinear

    codec = float_context_codec(a.codec)
    base = codec.model
    calibration = load_training_images(a.data, CELLS * 16)[:CALIBRATION_IMAGES]

    def calibrated(model) -> dict[str, float]:
        return activation_units(model, [y for y in image_latents(model, calibration) if min(y.shape[1:]) >= CELLS], CELLS)

    units = calibrated(base)
    with torch.inference_mode():
        latents = image_latents(base, [load_rgb(path) for path in kodak_images(a.images)])
    levels = range(1, base.config.levels + 1)

    def chunk_bytes(model) -> np.ndarray:
        """Bytes of every chunk per quality level, coded by ``model``."""
        coder = ChunkCoder(model)
        out = []
        for q in levels:
            total = 0
            for y in latents:
                y_hat = base.quantize(y[None], q)[0].numpy()
                total += sum(len(coder.encode(y_hat[:, i : i + 16, j : j + 16], q))
                             for i in range(0, y_hat.shape[1], 16) for j in range(0, y_hat.shape[2], 16))
            out.append(total)
        return np.array(out, dtype=np.float64)

    baseline_codec = float_context_codec(a.baseline) if a.baseline else codec
    baseline = baseline_codec.model
    transforms = [{k: v for k, v in m.state_dict().items() if not k.startswith("context.")} for m in (base, baseline)]
    if transforms[0].keys() != transforms[1].keys() or not all(torch.equal(v, transforms[1][k]) for k, v in transforms[0].items()):
        raise SystemExit("--baseline must have FLOAT_CODEC's transforms (so that both code the same latents)")
    own = quantize_entropy(base, units, "integer8")
    reference = chunk_bytes(own if baseline is base else quantize_entropy(baseline, calibrated(baseline), "integer8"))
    layers = {name: layer for name, layer in own.integer.named_modules() if isinstance(layer, IntegerLinear)}
    total_macs = sum(multiply_adds(own).values())
    rows = []
    # against another codec, the first row is this one in r11's format unchanged
    for label, pattern in [("none (r11's format)", None)] * (baseline is not base) + GROUPS:
        model = own if pattern is None else quantize_entropy(
            base, units, "integer8", weight_max=lambda name: 63 if re.fullmatch(pattern, name) else None)
        change = 100 * (chunk_bytes(model) / reference - 1)
        macs = sum(layer.weight.numel() * CELL_SHARE.get(name, 1) for name, layer in layers.items()
                   if pattern is not None and re.fullmatch(pattern, name))
        rows.append([label, f"{change.mean():+.2f}%", f"{change.min():+.2f}% .. {change.max():+.2f}%",
                     f"{100 * macs / total_macs:.0f}%"])
        print(rows[-1], flush=True)
    blocks = []
    for name, parts in input_blocks(base).items():
        weight, start = layers[name].weight.abs(), 0
        for block, width in parts:
            blocks.append([name, block, width, f"{float(weight[:, start : start + width].amax(1).float().median()):.0f}"])
            start += width
    cmd = (f"python benchmarks/int8_weights_probe.py {a.codec.name} {' '.join(os.path.relpath(d, ROOT) for d in a.data)} "
           f"--images {a.images}" + (f" --baseline {a.baseline.name} --out {os.path.relpath(a.out, ROOT)}" if a.baseline else ""))
    against = f"{baseline_codec.name} quantized to r11's format" if a.baseline else "r11's format"
    lines = [
        "# 7-bit weights in the integer entropy networks: what each group of layers costs", "",
        f"Command: `{cmd}` (commit {git_rev()}); float codec {codec.name} (sha256 {codec.sha256[:12]}...), "
        f"{len(calibration)} calibration images, {a.images} Kodak images, qualities 1-{base.config.levels}; "
        f"machine: {machine()}. Method: the script's docstring.", "",
        f"Rate change against {against} (cps-v5: 10-bit weights here, the spatial convolutions 7-bit):", "",
        md_table(["layers given 7-bit weights", "mean over the levels", "range over the levels",
                  "share of the multiply-adds"], rows), "",
        *([QAT_NOTE, ""] if a.baseline else []),
        "## Why the first layers differ", "",
        "A layer's weights are quantized with one scale per output (its largest weight is 511 in r11's format), "
        "so an input block whose weights are all small keeps few levels at 7 bits. The median over a layer's "
        f"outputs of each input block's largest weight, {codec.name} in r11's format (10 bits, within +-511), slice 1:", "",
        md_table(["layer", "input block", "columns", "median largest weight"], blocks), "",
    ]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
