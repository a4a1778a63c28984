"""Train a codec's entropy context on its frozen transforms: ``cps-tiles train-context DATA_DIR [...]
--init CODEC --out RUN_DIR``.

With ``g_a``, ``g_s`` and the hyperprior fixed, ``y_hat = round(y * gain)`` and so every decoded
image stay exactly what the initial codec gives; only the rate changes. The loss is therefore the
exact rate of the integer y_hat under the context's discrete Gaussians (the bits the coder spends),
not the noisy proxy of joint training, and each training image goes through the analysis once
(latents kept in memory, ``4 * M`` bytes per 16x16-pixel cell). A step takes one crop of
``--cells`` x ``--cells`` latent cells per quality level. The run directory holds ``checkpoint.pt``
(the whole model and the optimizer, the format of ``cps-tiles train``: ``--resume`` continues it,
``cps_tiles.training.run.export_checkpoint`` exports it; with ``--qat-weight-max`` also the activation
units the run rounds with, which ``quantize-context`` then uses) and ``context_log.csv``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..transforms.density import gaussian_likelihood
from ..transforms.geometry import Geometry
from ..transforms.model import CPSModel, ModelConfig
from .data import image_latents, load_training_images
from .quantize import activation_units, context_layers, dequantize_context, fake_quantized
from .run import add_run_arguments, load_checkpoint, save_checkpoint, start_run


def context_bits(model: CPSModel, y: torch.Tensor, levels: torch.Tensor,
                 weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Exact bits of y_hat ``[B, M, h, w]`` for unit-gain latents ``y`` coded at integer ``levels`` ``[B]``
    (0-based), with the hyperprior fixed and the context trainable (gradients reach only the context).
    ``weights``: context parameters to use instead of the module's, by name (``fake_quantized`` ones)."""
    gain = torch.exp(model.log_gain[levels]).detach().view(*levels.shape, -1, 1, 1)
    with torch.no_grad():
        y_hat = torch.round(y * gain)
        z_hat = torch.round(model.h_a(y_hat / gain)).clamp_(-model.z_density.support, model.z_density.support)
        means, scales = model.hyper_params(z_hat)
    inputs = (y_hat / gain, means, scales, F.one_hot(levels, model.config.levels).to(y.dtype))
    means, scales = model.context(*inputs) if weights is None else torch.func.functional_call(model.context, weights, inputs)
    return -torch.log2(gaussian_likelihood(y_hat, means * gain, scales * gain)).sum()


#: Training images whose latents calibrate the activation units for quantization-aware training
#: (the first, as ``quantize-context --images 60`` takes them for r10 and r11).
QAT_CALIBRATION = 60


def quantization_aware(model: CPSModel, units: dict[str, float]) -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    """Every layer of ``model.context`` by name, with the real value of one unit of each of its inputs as
    ``quantize-context`` will fold them into its weights, given the hidden activations' ``units``
    (``activation_units``): what quantization-aware training rounds each step. The units only matter
    where a layer's inputs differ in unit (the first layers): a common unit cancels out of each output's
    scale, so the convolutions' input is given unit 1."""
    layers = dict(model.context.named_modules())
    return {name: (layers[name], unit_in) for _, name, unit_in, _ in context_layers(model.config, units, 1.0)}


def train_context(args: argparse.Namespace) -> None:
    from ..transforms.weights import load_codec

    ckpt_path, log_path = start_run(args, "context_log.csv")

    base = load_codec(args.init)
    # a float context, whatever --init's entropy networks are (an integer codec's are made from one)
    config = ModelConfig(**{**base.model.config.to_dict(), "slices": args.slices, "context_hidden": args.hidden,
                            "spatial": args.spatial, "entropy": "float"})
    model = CPSModel(config)
    # the released codec's transforms and hyperprior (a v1 codec has no context to carry over)
    missing = model.load_state_dict(base.model.state_dict(), strict=False).missing_keys
    if any(not k.startswith("context.") for k in missing):
        raise ValueError(f"codec {base.name} does not fit this model: missing {missing[:3]}")
    source = load_codec(args.context_from).model if args.context_from else base.model
    if args.context_from or source.integer is not None:
        # a context trained on other transforms of the same shape, or an integer codec's own networks
        # (dequantized), trained on here; a float codec's own context is already loaded
        if source.integer is not None:
            state = dequantize_context(source.integer, source.config)
        else:
            state = source.context.state_dict() if source.context is not None else {}
        try:  # strict: every tensor present, none extra, each of this shape
            model.context.load_state_dict(state)
        except RuntimeError:
            raise ValueError(f"codec {args.context_from or args.init} has no entropy context of this shape "
                             f"(--slices {args.slices} --hidden {args.hidden} --spatial {args.spatial}, M={config.M})") from None
    model.requires_grad_(False).context.requires_grad_(True)
    opt = torch.optim.Adam(model.context.parameters(), lr=args.lr)
    step, elapsed, qat_units = 0, 0.0, None
    if args.resume and ckpt_path.exists():
        step, elapsed = load_checkpoint(ckpt_path, model, opt)
        qat_units = torch.load(ckpt_path, map_location="cpu", weights_only=False).get("qat_units")

    model.eval()  # no noise anywhere: the rate is the coder's
    c = args.cells
    latents = [y for y in image_latents(model, load_training_images([Path(d) for d in args.data], c * 16))
               if min(y.shape[1:]) >= c]
    area = np.array([y.shape[1] * y.shape[2] for y in latents], dtype=np.float64)
    area /= area.sum()  # images drawn in proportion to their area, as in cps-tiles train
    rng = np.random.default_rng(args.seed + step)
    print(f"{len(latents)} training images, {sum(p.numel() for p in model.context.parameters())} context parameters",
          flush=True)

    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")  # noqa: SIM115 - appended to for the whole run, closed at its end
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "minutes", "lr", "bpp_y"])
    levels = torch.arange(model.config.levels)
    block = Geometry.of(model).hyper_block
    if args.qat_weight_max and qat_units is None:
        # calibrated once, at the start: the grid the run trains for, which quantize-context then uses
        # (recalibrated on the trained networks, whose activations grow, the grid would move and cost bits)
        qat_units = activation_units(model, latents[:QAT_CALIBRATION], c)
    qat = quantization_aware(model, qat_units) if args.qat_weight_max else None
    extra = {"init": {"name": base.name, "sha256": base.sha256}} | ({"qat_units": qat_units} if qat else {})
    budget = args.minutes * 60
    start, last_save = time.time() - elapsed, time.time()
    while elapsed < budget and (args.steps == 0 or step < args.steps):
        lr = args.lr * (0.1 if elapsed / budget > args.decay_at else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        crops = []
        for k in rng.choice(len(latents), size=len(levels), p=area):
            y = latents[k]
            # crops start on the hyperprior's 4x4-cell blocks, as storage chunks do
            i = rng.integers(0, (y.shape[1] - c) // block + 1) * block
            j = rng.integers(0, (y.shape[2] - c) // block + 1) * block
            crops.append(y[:, i : i + c, j : j + c])
        weights = None if qat is None else {f"{name}.weight": fake_quantized(layer.weight, unit_in, args.qat_weight_max)
                                            for name, (layer, unit_in) in qat.items()}
        bpp = context_bits(model, torch.stack(crops), levels, weights) / (len(levels) * (16 * c) ** 2)
        opt.zero_grad(set_to_none=True)
        bpp.backward()
        opt.step()
        step += 1
        elapsed = time.time() - start
        writer.writerow([step, f"{elapsed / 60:.3f}", f"{lr:.2e}", f"{bpp.item():.5f}"])
        if step % 500 == 0:
            log.flush()
            print(f"step {step} {elapsed / 60:.1f} min bpp(y, all levels) {bpp.item():.4f}", flush=True)
        if time.time() - last_save > args.save_every * 60:
            save_checkpoint(ckpt_path, model, opt, step, elapsed, args, **extra)
            last_save = time.time()
    save_checkpoint(ckpt_path, model, opt, step, elapsed, args, **extra)
    log.close()
    print(f"done: step {step}, {elapsed / 60:.1f} min")


def main(argv: list[str] | None = None, parser: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> None:
    p = parser(prog="cps-tiles train-context", description=__doc__.split("\n")[0])
    add_run_arguments(p, lr=1e-3, minutes=30.0, decay_at=0.8)
    p.add_argument("--init", required=True, help="codec whose transforms and hyperprior stay fixed (name or directory)")
    p.add_argument("--slices", type=int, default=5, help="channel slices coded in turn (M must divide by it)")
    p.add_argument("--hidden", type=int, default=128, help="width of the context networks")
    p.add_argument("--spatial", type=int, default=0,
                   help="kernel of a checkerboard spatial context (odd; 0: channel context only)")
    p.add_argument("--cells", type=int, default=16, help="crop side in latent cells (16 pixels each)")
    p.add_argument("--qat-weight-max", type=int, default=0,
                   help="quantization-aware training: round every context layer's weights as quantize-context "
                   "will, to within +-this per output (63: 7-bit, as int8 products need; 0: off)")
    p.add_argument("--context-from", help="start from this codec's entropy context (trained on other transforms of "
                   "the same shape: a run's earlier step, say) instead of --init's or a fresh one")
    train_context(p.parse_args(argv))

