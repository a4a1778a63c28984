"""Probe a high-fidelity training run against the codec it grew from, through the real store.

The run grows from r6: ``cps-tiles train --init cps-n96m160-r6 --N 192 --M 320 --Nz 96 --levels 10
...`` widens it function-preservingly and trains all ten quality levels (``widen_probe.md``);
``--levels 10 --train-levels 9-10`` keeps its width and trains the top levels only. This script
exports the checkpoint as
a temporary codec and puts Kodak images through ``cps_tiles.convert`` and back, at each quality,
for both codecs (whole store bytes, 256-px chunks). Both are hyperprior codecs without an entropy
context, so the comparison isolates the transforms. It also decodes the *unquantized* latent at
the top levels (``ceiling.py``'s measure): the transforms' ceiling. Each run appends one row to
the progress table (``--out``'s .json), so the file shows quality against training time.

    python benchmarks/widen_probe.py RUN/checkpoint.pt --images 6
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceiling import decoded_psnrs  # noqa: E402
from common import ROOT, git_rev, kodak_images, load_rgb, machine, md_table, store_point  # noqa: E402
from rd_kodak import bd_rate  # noqa: E402

BASE = "cps-n96m160-r6"


def rd_points(codec: str, images: list[Path], qualities: list[float], tmp: Path) -> dict:
    """Mean bpp (whole store bytes) and PSNR per quality over ``images``."""
    rgb = [load_rgb(path) for path in images]
    points = np.array([[store_point(codec, a, q, tmp / "store.zarr") for a in rgb] for q in qualities]).mean(1)
    return {"quality": qualities, "bpp": points[:, 0].tolist(), "psnr": points[:, 1].tolist()}


def main() -> None:
    import torch

    from cps_tiles.training.run import export_checkpoint

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--images", type=int, default=6, help="first N Kodak images")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "widen_probe.md")
    a = p.parse_args()
    out = a.out.resolve()
    out_arg = "" if a.out == p.get_default("out") else f" --out {out.relative_to(ROOT) if out.is_relative_to(ROOT) else a.out}"
    images = kodak_images(a.images)
    state = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
    with tempfile.TemporaryDirectory() as tmp:
        wide = export_checkpoint(a.checkpoint, Path(tmp) / "wide", "wide-probe")
        levels = wide.model.config.levels
        base = rd_points(BASE, images, [float(q) for q in range(4, 9)], Path(tmp))
        test = rd_points(str(wide.path), images, [float(q) for q in range(4, levels + 1)], Path(tmp))
        top = [7.0, 8.0, float(levels)]
        ceil_base = decoded_psnrs(BASE, images, top[:2])
        ceil_wide = decoded_psnrs(str(wide.path), images, top)
    bd = bd_rate(base, test)
    history_path = a.out.with_suffix(".json")
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    history.append({"step": state["step"], "minutes": round(state["elapsed"] / 60, 1), "images": len(images),
                    "bd_rate_vs_base": bd, "top_psnr": test["psnr"][-1], "top_bpp": test["bpp"][-1],
                    "ceiling_top": ceil_wide[float(levels)][1], "commit": git_rev()})
    history_path.write_text(json.dumps(history, indent=1) + "\n")

    rows = [[name, f"{q:g}", f"{b:.4f}", f"{d:.3f}"] for name, c in (("r6", base), ("run", test))
            for q, b, d in zip(c["quality"], c["bpp"], c["psnr"])]
    ceil_rows = [[name, f"{q:g}", f"{r:.3f}", f"{u:.3f}"] for name, c in (("r6", ceil_base), ("run", ceil_wide))
                 for q, (r, u) in c.items()]
    prog = [[h["step"], h["minutes"], h["images"], "n/a" if h["bd_rate_vs_base"] is None else f"{h['bd_rate_vs_base']:+.1f}%",
             f"{h['top_psnr']:.2f} dB at {h['top_bpp']:.3f} bpp", f"{h['ceiling_top']:.2f} dB", h["commit"]]
            for h in history]
    a.out.write_text(
        "# High-fidelity probe: a codec in training against r6\n\n"
        f"Command: `python benchmarks/widen_probe.py CHECKPOINT --images {a.images}{out_arg}` (commit {git_rev()}); "
        f"checkpoint at step {state['step']}, {state['elapsed'] / 60:.1f} min of wall-clock training; "
        f"{len(images)} Kodak images; machine: {machine()}.\n\n"
        f"The run: `{' '.join(_command(state['args']))}`. Both codecs are hyperprior-only (no entropy context), "
        "so the comparison isolates the transforms; whole store bytes, 256-px chunks.\n\n"
        f"BD-rate of the run's codec against r6 over their common PSNR range: "
        f"{'n/a' if bd is None else f'{bd:+.1f}%'} (negative: fewer bits).\n\n"
        + md_table(["codec", "quality", "bpp", "PSNR (dB)"], rows) + "\n\n"
        "Ceiling: decoded PSNR of the stored latent and of the same latent unquantized.\n\n"
        + md_table(["codec", "quality", "stored (dB)", "unquantized (dB)"], ceil_rows) + "\n\n"
        "## Progress against training time (one row per run of this script)\n\n"
        + md_table(["step", "minutes", "images", "BD-rate vs r6", f"quality {levels}", f"ceiling at {levels}", "commit"],
                   prog) + "\n")
    print(a.out.read_text())


def _command(args: dict) -> list[str]:
    """The training command line, from a checkpoint's recorded arguments; absolute paths (this
    machine's data and run directories) shortened to their last two parts."""
    def short(path: str) -> str:
        parts = Path(path).parts
        return f".../{'/'.join(parts[-2:])}" if Path(path).is_absolute() else path

    out = ["cps-tiles train", *map(short, args["data"])]
    for key in ("out", "init", "N", "M", "Nz", "levels", "train_levels", "lr", "minutes", "decay_at", "crop", "batch"):
        if args.get(key) not in (None, 0):
            out += [f"--{key.replace('_', '-')}", short(str(args[key])) if key == "out" else str(args[key])]
    return out


if __name__ == "__main__":
    main()
