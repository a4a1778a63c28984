"""Train a CPS codec: ``python -m cps_tiles.train DATA_DIR [DATA_DIR ...] --out RUN_DIR``.

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
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .model import LAMBDAS, CPSModel, ModelConfig, rd_loss
from .tiling import native_bf16, precision_context

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}
JPEG_SUFFIXES = {".jpg", ".jpeg"}


def load_training_images(dirs: list[Path], min_side: int) -> list[np.ndarray]:
    """All RGB images under ``dirs`` as uint8 ``[h, w, 3]``; JPEGs downsampled 2x (area)."""
    import pyvips

    images = []
    for d in dirs:
        if not Path(d).is_dir():
            raise ValueError(f"training data directory {d} does not exist")
        for path in sorted(p for p in Path(d).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            im = pyvips.Image.new_from_file(str(path), access="sequential")
            shrink = 2 if path.suffix.lower() in JPEG_SUFFIXES else 1
            if min(im.width, im.height) // shrink < min_side:
                continue  # decided from the header: a too-small image is never decoded
            if im.hasalpha():
                im = im.flatten()
            im = im.colourspace("srgb") if im.bands < 3 else im
            im = im.cast("uchar")[0:3] if im.bands > 3 else im.cast("uchar")
            if shrink > 1:
                im = im.shrink(shrink, shrink)
            images.append(np.ascontiguousarray(im.numpy()))
    if not images:
        where = ", ".join(map(str, dirs))
        raise ValueError(f"no training images of at least {min_side} px found under {where}")
    return images


class CropSampler:
    """Random ``crop x crop`` patches with flips, images picked in proportion to their area."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int) -> None:
        self.images, self.crop = images, crop
        areas = np.array([a.shape[0] * a.shape[1] for a in images], dtype=np.float64)
        self.p = areas / areas.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        out = np.empty((n, self.crop, self.crop, 3), dtype=np.uint8)
        for i, k in enumerate(self.rng.choice(len(self.images), size=n, p=self.p)):
            a = self.images[k]
            y = self.rng.integers(0, a.shape[0] - self.crop + 1)
            x = self.rng.integers(0, a.shape[1] - self.crop + 1)
            patch = a[y : y + self.crop, x : x + self.crop]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            if self.rng.random() < 0.5:
                patch = patch[::-1]
            out[i] = patch
        x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)
        return x.contiguous(memory_format=torch.channels_last)


def training_minutes(csv_path: Path, max_gap: float = 0.5) -> float:
    """Minutes spent in training steps according to a run's ``log.csv``: the ``minutes`` column is
    the run's wall clock, so gaps over ``max_gap`` minutes between logged steps (the process was
    stopped, or the run was resumed later) are left out."""
    mins = [float(r["minutes"]) for r in csv.DictReader(open(csv_path))]
    return mins[0] + sum(b - a for a, b in zip(mins, mins[1:]) if 0 <= b - a <= max_gap) if mins else 0.0


def continue_log(codec_log: Path, log_path: Path) -> tuple[int, float]:
    """Start a run's ``log.csv`` as a copy of a codec's ``training_log.csv`` and return the step and
    wall-clock seconds its last row reached, so that a run continued from a released codec (whose
    checkpoint did not survive) numbers its steps on and its log covers the codec's whole history.
    A codec without a log, or a run directory that already has one, starts at step 0."""
    if not codec_log.exists() or log_path.exists():
        return 0, 0.0
    rows = list(csv.DictReader(open(codec_log)))
    log_path.write_bytes(codec_log.read_bytes())
    return (int(rows[-1]["step"]), float(rows[-1]["minutes"]) * 60) if rows else (0, 0.0)


def trim_log(log_path: Path, step: int) -> None:
    """Drop the rows of ``log.csv`` past ``step``, the checkpoint a run resumes from: a run killed
    between checkpoints logged steps whose weights were lost and that the resumed run trains again,
    so without this those step numbers would appear twice. A row cut short by the kill goes too."""
    if not log_path.exists():
        return
    lines = log_path.read_text().splitlines(keepends=True)
    keep = lines[:1] + [ln for ln in lines[1:] if ln.endswith("\n") and int(ln.split(",", 1)[0]) <= step]
    if len(keep) < len(lines):
        write_atomically(log_path, lambda tmp: tmp.write_text("".join(keep)))


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` a sibling file, then rename it over ``path``: a kill never leaves it half-written."""
    tmp = path.with_suffix(".tmp")
    write(tmp)
    tmp.replace(path)


def plot_log(csv_path: Path, png_path: Path, window: int = 200) -> None:
    """Plot loss, bpp and PSNR (moving averages) against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        return
    steps = np.array([int(r["step"]) for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key in zip(axes, ("loss", "bpp", "psnr")):
        v = np.array([float(r[key]) for r in rows])
        k = min(window, len(v))
        ax.plot(steps[k - 1 :], np.convolve(v, np.ones(k) / k, mode="valid"))
        ax.set_xlabel("step")
        if key == "loss":
            ax.set_yscale("log")  # the first steps are orders of magnitude above the rest
        ax.set_title(f"{key} (moving average of {k}, all quality levels)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)


def start_run(args: argparse.Namespace, log_name: str) -> tuple[Path, Path]:
    """Seed, thread count and run directory of a training command -> (checkpoint path, log path)."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out / "checkpoint.pt", out / log_name


def load_checkpoint(path: Path, model: CPSModel, opt: torch.optim.Optimizer,
                    device: torch.device | str = "cpu") -> tuple[int, float]:
    """Restore model and optimizer from a run's checkpoint (same config) -> (step, seconds trained)."""
    state = torch.load(path, map_location=device, weights_only=False)
    if state["config"] != model.config.to_dict():
        raise ValueError(f"checkpoint config {state['config']} differs from {model.config}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    print(f"resumed at step {state['step']} ({state['elapsed'] / 60:.1f} min trained)")
    return state["step"], state["elapsed"]


def save_checkpoint(path: Path, model: CPSModel, opt: torch.optim.Optimizer, step: int, elapsed: float,
                    args: argparse.Namespace, **extra: object) -> None:
    """The checkpoint both trainers write (and ``weights.export_checkpoint`` reads), atomically."""
    ckpt = {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "optimizer": opt.state_dict(), "step": step,
            "elapsed": elapsed, "config": model.config.to_dict(), "args": vars(args), **extra}
    write_atomically(path, lambda tmp: torch.save(ckpt, tmp))


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
        from .weights import load_codec

        init = load_codec(args.init)
        if init.model.config == model.config:
            model.load_state_dict(init.model.state_dict())
        else:  # a wider run starts as an exact copy of the narrower codec
            from .widen import widen

            model.load_state_dict(widen(init.model, model.config, args.seed).state_dict())
        step, elapsed = continue_log(init.path / "training_log.csv", log_path)
        print(f"initialised from codec {init.name} ({init.sha256[:12]}...) at step {step}")

    images = load_training_images([Path(d) for d in args.data], args.crop)
    sampler = CropSampler(images, args.crop, args.seed + step)
    print(f"{len(images)} training images, {sum(p.numel() for p in model.parameters())} parameters")

    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")
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
        level = random.randrange(model.config.levels)
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


def main(argv: list[str] | None = None, parser: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> None:
    p = parser(prog="cps-tiles train", description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="+", help="directories of training images")
    p.add_argument("--out", required=True, help="run directory for checkpoint and logs (outside the repo)")
    p.add_argument("--N", type=int, default=96)
    p.add_argument("--M", type=int, default=160)
    p.add_argument("--Nz", type=int, default=0, help="hyper-latent channels (0: N)")
    p.add_argument("--levels", type=int, default=8, help="quality levels trained (the first of LAMBDAS)")
    p.add_argument("--slices", type=int, default=0, help="channel-context slices (0: hyperprior only; see train-context)")
    p.add_argument("--context-hidden", type=int, default=128, help="width of the channel-context networks")
    p.add_argument("--spatial", type=int, default=0, help="checkerboard spatial-context kernel (0: none; needs --slices)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--minutes", type=float, default=60.0, help="total training time budget (all sessions)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: time budget only)")
    p.add_argument("--decay-at", type=float, default=0.85, help="fraction of the budget where lr drops 10x")
    p.add_argument("--save-every", type=float, default=5.0, help="minutes between checkpoints")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (a lent GPU: bigger --batch pays there)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: where the device computes bf16 natively)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoint.pt (weights and optimizer)")
    p.add_argument("--init", default=None, help="start from the weights of a trained codec (name or directory); "
                   "a narrower one (smaller N, M or levels, no context) is widened function-preservingly")
    train(p.parse_args(argv))


if __name__ == "__main__":
    from .cli import main as cli_main  # one-line errors, like every other cps-tiles command

    raise SystemExit(cli_main(["train", *sys.argv[1:]]))
