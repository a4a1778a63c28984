"""What every training command shares: run directories, checkpoints (atomic, resumable) and logs."""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..transforms.model import CPSModel, ModelConfig
from ..transforms.weights import Codec, load_codec, save_codec, save_codec_parts


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def training_minutes(csv_path: Path, max_gap: float = 0.5) -> float:
    """Minutes spent in training steps according to a run's ``log.csv``: the ``minutes`` column is
    the run's wall clock, so gaps over ``max_gap`` minutes between logged steps (the process was
    stopped, or the run was resumed later) are left out."""
    mins = [float(r["minutes"]) for r in _rows(csv_path)]
    return mins[0] + sum(b - a for a, b in zip(mins, mins[1:]) if 0 <= b - a <= max_gap) if mins else 0.0


def codec_training_log(codec: Codec) -> Path:
    """A released codec's transform-training log: beside its weights, or in the source repository's
    ``training-logs/<name>/`` (logs stay out of the wheel)."""
    here = codec.path / "training_log.csv"
    return here if here.exists() else codec.path.parent.parent / "training-logs" / codec.name / "training_log.csv"


def continue_log(codec_log: Path, log_path: Path) -> tuple[int, float]:
    """Start a run's ``log.csv`` as a copy of a codec's ``training_log.csv`` and return the step and
    wall-clock seconds its last row reached, so that a run continued from a released codec (whose
    checkpoint did not survive) numbers its steps on and its log covers the codec's whole history.
    A codec without a log, or a run directory that already has one, starts at step 0."""
    if not codec_log.exists() or log_path.exists():
        return 0, 0.0
    rows = _rows(codec_log)
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

    rows = _rows(csv_path)
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


def add_run_arguments(p: argparse.ArgumentParser, lr: float, minutes: float, decay_at: float) -> None:
    """The options every training command takes: data, run directory, schedule, checkpoints, resume."""
    p.add_argument("data", nargs="+", help="directories of training images")
    p.add_argument("--out", required=True, help="run directory for checkpoint and logs (outside the repo)")
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--minutes", type=float, default=minutes, help="total training time budget (all sessions)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: time budget only)")
    p.add_argument("--decay-at", type=float, default=decay_at, help="fraction of the budget where lr drops 10x")
    p.add_argument("--save-every", type=float, default=5.0, help="minutes between checkpoints")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoint.pt (weights and optimizer)")


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
    # compared as configs: a checkpoint written before a field existed holds that field's default
    if ModelConfig(**state["config"]) != model.config:
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


def export_checkpoint(checkpoint: Path, out_dir: Path, name: str, extra: dict | None = None) -> Codec:
    """Training checkpoint -> codec directory ``out_dir`` (see :func:`save_codec`). A ``train-context``
    run, whose transforms are its ``--init`` codec's, is written as that codec's transforms file
    (shared through ``parts``) plus its context (``save_codec_parts``), as ``quantize-context`` needs.

    Training time comes from the run's ``log.csv`` beside the checkpoint when there is one."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = CPSModel(ModelConfig(**state["config"]))
    model.load_state_dict(state["model"])
    log = Path(checkpoint).with_name("log.csv")
    # "minutes" counts training steps; the checkpoint's elapsed time is wall clock, stops included
    minutes = training_minutes(log) if log.exists() else state["elapsed"] / 60
    training = {"steps": state["step"], "minutes": round(minutes, 1), "wall_minutes": round(state["elapsed"] / 60, 1),
                **(extra or {})}
    if "init" in state:  # written by train-context: the same weights as the codec it started from, checked by sha256
        base = load_codec(state["args"]["init"], sha256=state["init"]["sha256"])
        if "qat_units" in state:  # quantization-aware: the grid it trained for, which quantize-context must use
            training["qat"] = {"weight_max": state["args"]["qat_weight_max"], "units": state["qat_units"]}
        return save_codec_parts(model, out_dir, name, base, "context.", {**training, "init": state["init"]})
    return save_codec(model, out_dir, name, training)
