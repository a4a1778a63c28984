"""Quantize a codec's float entropy networks into the exact integer ones: ``cps-tiles
quantize-context --init CODEC --out DIR --name NAME DATA_DIR...``.

Post-training quantization of the hyper synthesis and the channel and spatial context of a cps-v3
codec (transforms, ``h_a`` and the z tables unchanged, so every decoded image stays the same;
only the rate moves). Per layer: each input column's fixed-point unit is folded into the weights,
each output row gets a scale (its largest weight maps to the layer's ``weight_max``), and the output's unit is the
format the spec fixes (means Q6, log2 sigma Q8, raw scale Q5) or, for a hidden layer, the
activation's range on the calibration latents (``--cells`` crops of the training images at every
quality) spread over ``ACT``, or, for a context trained through this rounding (``train-context
--qat-weight-max``), the ranges that training used, recorded with it. The coding tables are built
here, once, and stored.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..coding.tables import build_counts
from ..errors import CodecError
from ..transforms.arithmetic import ACT, CODE_ONE, EXP2_BITS, GAIN_BITS, INPUT_SHIFT, LOG_BITS, MEAN_BITS, RAW_BITS, U_BITS
from ..transforms.integer import FORMATS, IntegerEntropy, IntegerLinear, log_table_values
from ..transforms.model import CPSModel, ModelConfig
from ..transforms.weights import load_codec, save_codec_parts, transforms_part
from .data import image_latents, load_training_images

_LN2 = math.log(2)
#: real value of one unit of each network input format
MEAN_IN, LOG_IN, U_IN = 2.0 ** -(MEAN_BITS - INPUT_SHIFT), _LN2 / 2 ** (LOG_BITS - INPUT_SHIFT), 2.0 ** -U_BITS
#: real value of one unit of each output format (d_log is in natural-log units in the float nets)
MEAN_OUT, LOG_OUT, RAW_OUT = 2.0 ** -MEAN_BITS, _LN2 / 2**LOG_BITS, 2.0 ** -RAW_BITS
_MULT_BITS = 20
_SUBSAMPLE = 5  # calibration keeps every 5th activation value


def weight_scale(folded: torch.Tensor, weight_max: int) -> torch.Tensor:
    """The real value of one integer weight step of each output ``[O]``, for weights ``folded [O, K]``
    (each input's unit folded in): the output's largest weight becomes ``weight_max``."""
    return (folded.abs().amax(1) / weight_max).clamp_min(1e-30)


def quantize_layer(layer: IntegerLinear, weight: torch.Tensor, bias: torch.Tensor, unit_in: torch.Tensor,
                   unit_out: torch.Tensor) -> None:
    """Set ``layer``'s buffers from a float layer ``weight [O, K]``, ``bias [O]``, the real value of
    one unit of each input ``unit_in [K]`` and of each output ``unit_out [O]``."""
    w = weight.double() * unit_in.double()
    scale = weight_scale(w, layer.weight_max)
    ratio = scale / unit_out.double()
    shift = max(1, _MULT_BITS - math.ceil(math.log2(float(ratio.max()))))
    layer.weight.copy_(torch.round(w / scale[:, None]).to(torch.int16))
    layer.bias.copy_(torch.round(bias.double() / scale).to(torch.int64))
    layer.mult.copy_(torch.round(ratio * 2.0**shift).to(torch.int64))
    layer.shift.fill_(shift)
    layer._int_params = None
    layer._groups.clear()


def _units(*parts: tuple[int, float]) -> torch.Tensor:
    return torch.cat([torch.full((n,), u, dtype=torch.float64) for n, u in parts])


def _conv(layer: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    return layer.weight.detach().flatten(1), layer.bias.detach()


def _up(layer: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2x2/s2 transposed convolution as a linear map to (out channel, dy, dx) rows."""
    w = layer.weight.detach()  # [in, out, 2, 2]
    return w.permute(1, 2, 3, 0).reshape(-1, w.shape[0]), layer.bias.detach().repeat_interleave(4)


@torch.inference_mode()
def activation_units(model: CPSModel, latents: list[torch.Tensor], cells: int, seed: int = 0) -> dict[str, float]:
    """Real value of one unit of every hidden activation: its 99.999th percentile magnitude on
    crops of ``latents`` at every integer quality, over ``ACT``. (On Kodak, the 99.99th percentile
    clips too much and the largest value of many images spends the range on outliers; both cost
    more rate.)"""
    rng = np.random.default_rng(seed)
    samples: dict[str, list[torch.Tensor]] = {}

    def keep(name):
        def hook(_module, _inp, out):
            samples.setdefault(name, []).append(out.detach().abs().flatten()[::_SUBSAMPLE])
        return hook

    ctx, hooks = model.context, []
    for i in (1, 3):
        hooks.append(model.h_s[i].register_forward_hook(keep(f"hyper.{i}")))
    for k in range(ctx.slices):
        for i in (1, 3):
            hooks.append(ctx.nets[k][i].register_forward_hook(keep(f"nets.{k}.{i}")))
            hooks.append(ctx.heads[k][i].register_forward_hook(keep(f"heads.{k}.{i}")))
    for level in range(model.config.levels):
        for y in latents:
            i = rng.integers(0, y.shape[1] - cells + 1) // 4 * 4
            j = rng.integers(0, y.shape[2] - cells + 1) // 4 * 4
            gain = torch.exp(model.log_gain[level]).view(-1, 1, 1)
            y_hat = torch.round(y[:, i : i + cells, j : j + cells] * gain)[None]
            z_hat = torch.round(model.h_a(y_hat / gain)).clamp_(-model.z_density.support, model.z_density.support)
            means, scales = model.hyper_params(z_hat)
            code = F.one_hot(torch.tensor([level]), model.config.levels).float()
            unit = y_hat / gain
            ctx(unit, means, scales, code)
            for k in range(ctx.slices):  # the spatial features the heads see (F.leaky_relu inside half_params)
                shared = ctx.spatial_features(k, unit)
                cut = slice(k * ctx.width, (k + 1) * ctx.width)
                own = F.conv2d(unit[:, cut] * (ctx.halves(cells, cells)[0]).float(), ctx.convs[k].weight[:, cut.start :],
                               padding=ctx.convs[k].padding)
                for feat in (shared, shared + own):
                    samples.setdefault(f"convs.{k}", []).append(F.leaky_relu(feat, 0.01).abs().flatten()[::_SUBSAMPLE])
    for h in hooks:
        h.remove()
    return {name: float(np.quantile(torch.cat(v).numpy(), 0.99999)) / ACT for name, v in samples.items()}


def context_layers(cfg: ModelConfig, units: dict[str, float],
                   conv_in: float) -> Iterator[tuple[str, str, torch.Tensor, torch.Tensor]]:
    """Every context layer of a model of ``cfg``: (its name in ``IntegerEntropy``, the name of the float
    layer it is made from in ``EntropyContext``, the real value of one unit of each of its inputs
    ``[K]`` and outputs ``[O]``), given the hidden activations' ``units`` (``activation_units``) and
    one unit of the convolutions' input ``conv_in``."""
    M, L, w, hidden, sh = cfg.M, cfg.levels, cfg.M // cfg.slices, cfg.context_hidden, cfg.spatial_hidden
    params_out = _units((w, MEAN_OUT), (w, LOG_OUT))
    for k in range(cfg.slices):
        yield (f"nets.{k}.0", f"nets.{k}.0", _units((M, MEAN_IN), (M, LOG_IN), (L, 1 / CODE_ONE), (k * w, U_IN)),
               _units((hidden, units[f"nets.{k}.1"])))
        yield f"nets.{k}.1", f"nets.{k}.2", _units((hidden, units[f"nets.{k}.1"])), _units((hidden, units[f"nets.{k}.3"]))
        yield f"nets.{k}.2", f"nets.{k}.4", _units((hidden, units[f"nets.{k}.3"])), params_out
        yield f"convs.{k}", f"convs.{k}", _units(((k + 1) * w * cfg.spatial**2, conv_in)), _units((sh, units[f"convs.{k}"]))
        yield (f"heads.{k}.0", f"heads.{k}.0",
               _units((sh, units[f"convs.{k}"]), (w, MEAN_IN), (w, LOG_IN), (L, 1 / CODE_ONE), (1, 1.0)),
               _units((sh, units[f"heads.{k}.1"])))
        yield f"heads.{k}.1", f"heads.{k}.2", _units((sh, units[f"heads.{k}.1"])), _units((sh, units[f"heads.{k}.3"]))
        yield f"heads.{k}.2", f"heads.{k}.4", _units((sh, units[f"heads.{k}.3"])), params_out


def fake_quantized(weight: torch.Tensor, unit_in: torch.Tensor, weight_max: int) -> torch.Tensor:
    """A float layer's ``weight [O, K, ...]`` as ``quantize_layer`` will round it, for quantization-aware
    training: the inputs' units ``unit_in [K * taps]`` folded in, each output's largest weight at
    ``weight_max``, rounded, unfolded. The gradient passes the rounding unchanged (straight-through)."""
    folded = weight.flatten(1) * unit_in.to(weight.dtype)
    scale = weight_scale(folded.detach(), weight_max)[:, None]
    rounded = folded + (torch.round(folded / scale) * scale - folded).detach()
    return (rounded / unit_in.to(weight.dtype)).view_as(weight)


#: The real value given one unit of every hidden activation when a float context is rebuilt from
#: integer networks (any value gives the same function; this one keeps activations near 1).
_DEQUANTIZED_UNIT = 4.0 / ACT


@torch.no_grad()
def dequantize_context(integer: IntegerEntropy, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The float ``EntropyContext`` state dict that computes what ``integer``'s context
    networks compute, short of their rounding and clipping: ``quantize_layer`` inverted, layer by layer
    through ``context_layers`` (weight ``W * mult / 2^shift * unit_out / unit_in``, bias ``b * mult / 2^shift
    * unit_out``). It starts quantization-aware training from a released integer codec whose float
    context was not kept."""
    layers, units = dict(integer.named_modules()), defaultdict(lambda: _DEQUANTIZED_UNIT)
    state = {}
    for name, float_name, unit_in, unit_out in context_layers(cfg, units, 2.0 ** -integer.format.u_bits):
        layer = layers[name]
        step = layer.mult.double() / 2.0 ** int(layer.shift) * unit_out  # real value of one accumulator unit [O]
        kernel = cfg.spatial if name.startswith("convs.") else 1
        weight = layer.weight.double() * step[:, None] / unit_in
        state[f"{float_name}.weight"] = weight.view(len(step), -1, kernel, kernel).float()
        state[f"{float_name}.bias"] = (layer.bias.double() * step).float()
    return state


def quantize_entropy(base: CPSModel, units: dict[str, float], entropy: str = "integer",
                     weight_max: Callable[[str], int | None] | None = None) -> CPSModel:
    """A cps-v4 (``entropy`` "integer"), cps-v5 ("integer8") or cps-v6 ("integer8all") model: ``base``'s transforms, its entropy
    networks quantized (see the module docstring). ``weight_max``, for probes only: a layer's name in
    ``model.integer`` -> a weight bound to quantize it to instead of its format's (None: the format's).
    A model so made codes and decodes exactly, but its codec format does not record the bounds."""
    cfg = base.config
    model = CPSModel(ModelConfig(**{**cfg.to_dict(), "entropy": entropy}))
    for name, layer in model.integer.named_modules():
        if weight_max is not None and isinstance(layer, IntegerLinear) and (bound := weight_max(name)) is not None:
            layer.weight_max = bound
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("context.")}
    missing = model.load_state_dict(state, strict=False).missing_keys
    assert all(k.startswith("integer.") for k in missing), missing
    ie, ctx, M = model.integer, base.context, cfg.M

    up1, up2, out = ie.hyper_layers
    quantize_layer(up1, *_up(base.h_s[0]), _units((cfg.Nz, 1.0)), _units((4 * cfg.N, units["hyper.1"])))
    quantize_layer(up2, *_up(base.h_s[2]), _units((cfg.N, units["hyper.1"])), _units((4 * (3 * M // 2), units["hyper.3"])))
    quantize_layer(out, *_conv(base.h_s[4]), _units((3 * M // 2, units["hyper.3"])), _units((M, MEAN_OUT), (M, RAW_OUT)))
    layers, float_layers = dict(ie.named_modules()), dict(ctx.named_modules())
    for name, float_name, unit_in, unit_out in context_layers(cfg, units, 2.0 ** -ie.format.u_bits):
        quantize_layer(layers[name], *_conv(float_layers[float_name]), unit_in, unit_out)
    ie.log_table.copy_(torch.tensor(log_table_values(), dtype=torch.int64))
    ie.log_gain.copy_(torch.round(base.log_gain.detach().double() / _LN2 * 2**GAIN_BITS).to(torch.int64))
    ie.exp2_table.copy_(torch.round(2.0 ** (GAIN_BITS + torch.arange(1 << EXP2_BITS, dtype=torch.float64) / (1 << EXP2_BITS)))
                        .to(torch.int64))
    ie.counts.copy_(torch.from_numpy(build_counts()))
    ie.check()  # prove every layer exact now, not when the codec is first loaded
    return model.eval()


def main(argv: list[str] | None = None, parser: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> None:
    p = parser(prog="cps-tiles quantize-context", description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="+", help="directories of calibration images (the training images)")
    p.add_argument("--init", required=True, help="cps-v3 codec to quantize (name or directory)")
    p.add_argument("--out", required=True, type=Path, help="new codec directory (beside the base codec's)")
    p.add_argument("--name", required=True, help="the new codec's name")
    p.add_argument("--cells", type=int, default=16, help="calibration crop side in latent cells")
    p.add_argument("--images", type=int, default=0, help="calibration images (the first, sorted; 0: all)")
    p.add_argument("--entropy", choices=tuple(FORMATS), default="integer",
                   help="integer: every layer 10-bit (cps-v4); integer8: the spatial convolutions in 7-bit operands, "
                   "computed as int8 products (cps-v5, faster to decode); integer8all: every layer's weights 7-bit, "
                   "all products int8 (cps-v6, fastest; for a context trained with train-context --qat-weight-max 63)")
    args = p.parse_args(argv)
    base = load_codec(args.init)
    if base.model.context is None or not base.model.config.spatial:
        raise CodecError(f"{base.name} has no spatial entropy context to quantize (a cps-v3 codec is needed)")
    transforms_part(base)  # refused now, not after the calibration
    base_training = json.loads((base.path / "codec.json").read_text()).get("training", {})
    qat = base_training.get("qat")
    if qat:  # trained through the rounding to a grid: quantized on that grid, not on a new calibration
        if qat["weight_max"] != FORMATS[args.entropy].weight_max:
            raise CodecError(f"{base.name} was trained for weights within +-{qat['weight_max']} (train-context "
                             f"--qat-weight-max); --entropy {args.entropy} has +-{FORMATS[args.entropy].weight_max}")
        units, calibration = qat["units"], "the activation units its quantization-aware training used"
    else:
        images = load_training_images([Path(d) for d in args.data], args.cells * 16)[: args.images or None]
        latents = [y for y in image_latents(base.model, images) if min(y.shape[1:]) >= args.cells]
        units = activation_units(base.model, latents, args.cells)
        calibration = f"{len(latents)} images, one {args.cells}x{args.cells}-cell crop each per quality level"
    model = quantize_entropy(base.model, units, args.entropy)
    save_codec_parts(model, args.out, args.name, base, "integer.", {**base_training, "integer_entropy": {
        "init": {"name": base.name, "sha256": base.sha256},
        "method": "post-training quantization of h_s and the channel and spatial context"
                  + (" (trained for it: quantization-aware)" if qat else " (no retraining)"),
        "command": "cps-tiles quantize-context " + " ".join(argv if argv is not None else sys.argv[2:]),
        "calibration": calibration}})
    print(f"wrote {args.out}")
