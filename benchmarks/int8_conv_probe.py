"""Which operand format the spatial context's convolutions can take for exact int8 products, and
what share of the integer entropy networks' multiply-adds they are.

    python benchmarks/int8_conv_probe.py FLOAT_CODEC --images 8     # writes benchmarks/int8_conv_probe.md

FLOAT_CODEC is a cps-v3 codec directory: a float context, such as the one r10 and r11 were
quantized from (not bundled; r10's ``codec.json`` records how it was trained). The probe
fake-quantizes only the convolutions of that float context, in float: their input
``u = y_hat / gain`` rounded to Q``b`` and clipped to +-``lim``, their weights rounded to
+-``wmax`` per output channel (scale: the channel's largest weight). The rate is the exact coded
rate of the integer latent under the context's Gaussians (``training.context.context_bits``),
whole images, every quality level, against the unchanged float context. A 10-bit row (u Q4 within
+-1023, weights +-511: the cps-v4 format) shows what the other layers' format costs here.

The multiply-add shares count, per latent cell of a 16x16-cell chunk, each integer layer's
``inputs x outputs`` times the share of cells it runs on (the hyper synthesis' first two layers
on 1/16 and 1/4 of them; a slice's convolution over the slices before it on every cell and over
its own anchors on the other half), for the cps-v5 codec of FLOAT_CODEC's shapes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, kodak_images, load_rgb, machine, md_table  # noqa: E402

#: (label, u Q bits, u bound, weight bound); None: left in float
FORMATS = [("u Q4 within +-1023, weights +-511 (cps-v4's)", 4, 1023, 511),
           ("u Q1 within +-63, weights +-63 (cps-v5's)", 1, 63, 63),
           ("u Q2 within +-63, weights +-63", 2, 63, 63),
           ("u Q3 within +-63, weights +-63", 3, 63, 63),
           ("u Q2 within +-63, float weights", 2, 63, None),
           ("float u, weights +-63", None, None, 63)]


def multiply_adds(model) -> dict[str, float]:
    """Multiply-adds per latent cell of each group of ``model.integer``'s layers (a cps-v4/v5 model)."""
    ie = model.integer
    size = lambda layer: layer.weight.shape[0] * layer.weight.shape[1]  # noqa: E731
    w, taps, hidden = ie.width, ie.spatial**2, ie.convs[0].weight.shape[0]
    out = {"hyper synthesis": sum(size(layer) * share for layer, share in zip(ie.hyper_layers, (1 / 16, 1 / 4, 1)))}
    out["channel networks"] = sum(size(layer) for net in ie.nets for layer in net)
    out["spatial convolutions"] = sum((k * w * taps + w * taps / 2) * hidden for k in range(ie.slices))
    out["heads"] = sum(size(layer) for head in ie.heads for layer in head)
    return out


def float_context_codec(path: Path):
    """The cps-v3 codec at ``path`` (a float spatial context, which the probes quantize), on one thread."""
    import torch

    from cps_tiles.transforms.weights import load_codec

    torch.set_num_threads(1)
    codec = load_codec(str(path))
    if codec.model.context is None or not codec.model.config.spatial:
        raise SystemExit(f"{codec.name} has no float spatial context")
    return codec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("codec", type=Path, help="a cps-v3 codec directory (float context)")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "int8_conv_probe.md")
    a = p.parse_args()
    import torch

    import cps_tiles.transforms.context as context_module
    from cps_tiles.training.context import context_bits
    from cps_tiles.training.data import image_latents
    from cps_tiles.transforms.model import CPSModel, ModelConfig

    codec = float_context_codec(a.codec)
    model = codec.model
    images = [load_rgb(path) for path in kodak_images(a.images)]
    latents = image_latents(model, images)
    pixels = sum(x.shape[0] * x.shape[1] for x in images)
    convs = model.context.convs
    weights = [c.weight.detach().clone() for c in convs]
    conv2d = torch.nn.functional.conv2d

    def rates(u_bits, u_max, w_max) -> np.ndarray:
        """bpp of y per quality level with the convolutions fake-quantized so."""
        for conv, w in zip(convs, weights):
            scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / w_max if w_max else None
            conv.weight.data = w.clone() if scale is None else torch.round(w / scale) * scale

        class Quantized:  # the context module's F, with its convolutions' input rounded and clipped
            def __getattr__(self, name):
                return getattr(torch.nn.functional, name)

            @staticmethod
            def conv2d(x, weight, bias=None, padding=0):
                if u_bits is not None:
                    x = torch.clamp(torch.round(x * 2**u_bits), -u_max, u_max) / 2**u_bits
                return conv2d(x, weight, bias, padding=padding)

        context_module.F = Quantized()
        try:
            with torch.no_grad():
                return np.array([sum(float(context_bits(model, y[None], torch.tensor([level]))) for y in latents) / pixels
                                 for level in range(model.config.levels)])
        finally:
            context_module.F = torch.nn.functional
            for conv, w in zip(convs, weights):
                conv.weight.data = w

    base = rates(None, None, None)
    rows = []
    for label, u_bits, u_max, w_max in FORMATS:
        change = 100 * (rates(u_bits, u_max, w_max) / base - 1)
        rows.append([label, f"{change.mean():+.2f}%", f"{change.min():+.2f}% .. {change.max():+.2f}%"])
        print(rows[-1], flush=True)
    macs = multiply_adds(CPSModel(ModelConfig(**{**model.config.to_dict(), "entropy": "integer8"})))  # shapes only
    total = sum(macs.values())
    cmd = f"python benchmarks/int8_conv_probe.py {a.codec.name} --images {a.images}"
    lines = [
        "# int8 spatial convolutions: operand format and share of the work", "",
        f"Command: `{cmd}` (commit {git_rev()}); codec {codec.name} (sha256 {codec.sha256[:12]}...), {a.images} Kodak "
        f"images, qualities 1-{model.config.levels}; machine: {machine()}. Method: the script's docstring.", "",
        "## Rate of y against the float context", "",
        md_table(["convolutions' operands", "mean over the levels", "range over the levels"], rows), "",
        "## Multiply-adds per latent cell of the integer networks", "",
        md_table(["layers", "multiply-adds per cell", "share"],
                 [[name, f"{v:,.0f}", f"{100 * v / total:.0f}%"] for name, v in macs.items()]), "",
    ]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
