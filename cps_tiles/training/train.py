"""Train a CPS codec: ``cps-tiles train DATA_DIR [DATA_DIR ...] --out RUN_DIR``.

Random crops with flips from lossless photos (JPEG sources are downsampled 2x first, to wash out
their block artefacts), one quality level drawn per batch so every gain vector trains, Adam with a
wall-clock-based step-down of the learning rate, channels_last, and bf16 autocast where the
hardware computes bf16 natively.
The run directory (keep it outside the repository) holds ``checkpoint.pt`` (model + optimizer,
resumable with ``--resume``, which drops log rows a killed run wrote past its checkpoint),
``log.csv`` and ``log.png``. ``--init CODEC`` continues a released codec instead (weights only),
its steps and log carried on from the codec's ``training_log.csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import time
from pathlib import Path

import torch

from ..transforms.model import CPSModel, ModelConfig, rd_loss
from ..transforms.precision import native_bf16, precision_context
from .data import CropSampler, load_training_images
from .run import (
    add_run_arguments,
    codec_training_log,
    continue_log,
    load_checkpoint,
    plot_log,
    save_checkpoint,
    start_run,
    trim_log,
)


def train(args: argparse.Namespace) -> None:
    ckpt_path, log_path = start_run(args, "log.csv")
    random.seed(args.seed)

    device = torch.device(args.device)
    config = ModelConfig(N=args.N, M=args.M, Nz=args.Nz or args.N, slices=args.slices,
                         context_hidden=args.context_hidden, spatial=args.spatial, levels=args.levels)
    model = CPSModel(config).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, elapsed = 0, 0.0
    if args.resume and ckpt_path.exists():
        step, elapsed = load_checkpoint(ckpt_path, model, opt, device)
        trim_log(log_path, step)
    elif args.init:
        # continue from a committed codec (weights only: the optimizer state starts fresh)
        from ..transforms.weights import load_codec

        init = load_codec(args.init)
        if init.model.config == model.config:
            model.load_state_dict(init.model.state_dict())
        else:  # a wider run starts as an exact copy of the narrower codec
            from .widen import widen

            model.load_state_dict(widen(init.model, model.config, args.seed).state_dict())
        step, elapsed = continue_log(codec_training_log(init), log_path)
        print(f"initialised from codec {init.name} ({init.sha256[:12]}...) at step {step}")

    first, last = trained_levels(args.train_levels, model.config.levels)
    images = load_training_images([Path(d) for d in args.data], args.crop)
    sampler = CropSampler(images, args.crop, args.seed + step)
    print(f"{len(images)} training images, {sum(p.numel() for p in model.parameters())} parameters")

    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")  # noqa: SIM115 - appended to for the whole run, closed at its end
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "minutes", "level", "lr", "loss", "bpp", "psnr"])
    bf16 = native_bf16(device.type) if args.bf16 is None else args.bf16
    precision = "bfloat16" if bf16 else "float32"
    print(f"{precision} on {device}", flush=True)
    budget = args.minutes * 60
    session_start, last_save = time.time() - elapsed, time.time()
    model.train()
    while elapsed < budget and (args.steps == 0 or step < args.steps):
        frac = elapsed / budget
        lr = args.lr * (0.1 if frac > args.decay_at else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        level = random.randrange(first, last + 1)
        x = sampler.batch(args.batch).to(device, non_blocking=True)
        with precision_context(precision, device):
            outp = model(x, level)
        losses = rd_loss(outp, x, level)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        elapsed = time.time() - session_start
        psnr = -10 * math.log10(max(losses["mse"].item(), 1e-10))
        writer.writerow([step, f"{elapsed / 60:.3f}", level + 1, f"{lr:.2e}", f"{losses['loss'].item():.5f}",
                         f"{losses['bpp'].item():.5f}", f"{psnr:.3f}"])
        if step % 50 == 0:
            log.flush()
            print(f"step {step} {elapsed / 60:.1f} min q{level + 1} loss {losses['loss'].item():.4f} "
                  f"bpp {losses['bpp'].item():.4f} psnr {psnr:.2f}", flush=True)
        if time.time() - last_save > args.save_every * 60:
            save_checkpoint(ckpt_path, model, opt, step, elapsed, args)
            last_save = time.time()
    save_checkpoint(ckpt_path, model, opt, step, elapsed, args)
    log.close()
    plot_log(log_path, ckpt_path.with_name("log.png"))
    print(f"done: step {step}, {elapsed / 60:.1f} min")


def trained_levels(spec: str | None, levels: int) -> tuple[int, int]:
    """``--train-levels`` ("9-10", "8", or None for all) -> (first, last) level index, 0-based."""
    if spec is None:
        return 0, levels - 1
    try:
        lo, _, hi = spec.partition("-")
        first, last = int(lo) - 1, int(hi or lo) - 1
    except ValueError:
        raise ValueError(f"--train-levels must be LEVEL or FIRST-LAST, got {spec!r}") from None
    if not 0 <= first <= last < levels:
        raise ValueError(f"--train-levels {spec} is outside the codec's levels 1-{levels}")
    return first, last


def main(argv: list[str] | None = None, parser: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> None:
    p = parser(prog="cps-tiles train", description=__doc__.split("\n")[0])
    add_run_arguments(p, lr=1e-3, minutes=60.0, decay_at=0.85)
    p.add_argument("--N", type=int, default=96)
    p.add_argument("--M", type=int, default=160)
    p.add_argument("--Nz", type=int, default=0, help="hyper-latent channels (0: N)")
    p.add_argument("--levels", type=int, default=8, help="quality levels trained (the first of LAMBDAS)")
    p.add_argument("--train-levels", default=None, metavar="FIRST-LAST",
                   help="draw batches from these quality levels only (e.g. 9-10: a model for the top levels; "
                        "default: every level)")
    p.add_argument("--slices", type=int, default=0, help="channel-context slices (0: hyperprior only; see train-context)")
    p.add_argument("--context-hidden", type=int, default=128, help="width of the channel-context networks")
    p.add_argument("--spatial", type=int, default=0, help="checkerboard spatial-context kernel (0: none; needs --slices)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu or cuda (a lent GPU: bigger --batch pays there)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: where the device computes bf16 natively)")
    p.add_argument("--init", default=None, help="start from the weights of a trained codec (name or directory); "
                   "a narrower one (smaller N, M or levels, no context) is widened function-preservingly")
    train(p.parse_args(argv))

