"""Seconds per training step of the default architecture under the CPU speed-ups ``train`` can use.

    .venv/bin/python benchmarks/train_step.py        # -> benchmarks/train_step.md

Same batch as ``cps-tiles train`` (8 random 128-px crops' worth of pixels, one quality level per
step), forward + backward + Adam, median of the steps after a warm-up; a fresh random-initialised
model per row. torch.compile's first step (the compilation) is reported apart.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, machine, md_table  # noqa: E402

from cps_tiles.transforms.model import CPSModel, ModelConfig, rd_loss  # noqa: E402


def step_seconds(channels_last: bool, bf16: bool, compile_model: bool, steps: int) -> tuple[float, float]:
    """(first step s, median s/step of the rest) for one configuration."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = CPSModel(ModelConfig(N=96, M=160, Nz=96)).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    forward = torch.compile(model) if compile_model else model
    x = torch.rand(8, 3, 128, 128).contiguous(memory_format=fmt)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = forward(x, i % model.config.levels)
        loss = rd_loss(out, x, i % model.config.levels)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    torch._dynamo.reset()
    return times[0], statistics.median(times[3:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "train_step.md")
    a = p.parse_args()
    rows = []
    for name, cl, bf16, comp in (("float32", False, False, False), ("float32 + channels_last", True, False, False),
                                 ("bf16 autocast + channels_last (train, where bf16 is native)", True, True, False),
                                 ("bf16 autocast + channels_last + torch.compile", True, True, True)):
        first, median = step_seconds(cl, bf16, comp, a.steps)
        rows.append([name, f"{median:.3f}", f"{first:.1f}"])
        print(rows[-1], flush=True)
    a.out.write_text(
        "# Training step time on this machine\n\n"
        f"Command: `python benchmarks/train_step.py --steps {a.steps}` (commit {git_rev()}); machine: {machine()}.\n\n"
        "Default architecture (N=96, M=160), batch 8 x 128x128, forward + backward + Adam. The first step of the "
        "torch.compile row includes compiling, which inductor caches on disk: a run with a cold cache takes longer.\n\n"
        + md_table(["configuration", "s/step (median)", "first step s"], rows) + "\n")


if __name__ == "__main__":
    main()
