"""Decode cost per pixel of a codec, released or in training, against r6, r8 and r9, in one run.

The cost target: a high-fidelity codec may cost at most 2x r8 to decode per pixel, on the
same machine. Each codec converts the same crop of the bundled sample mosaic (256-px chunks,
level 0) and decodes it whole, each decode in a fresh process, the codecs alternating, best of
``--repeats`` (``common.store_decode_mps``). Run it with training paused: it is timed.

    python benchmarks/decode_cost.py --codec codecs/cps-n192m320-r10
    python benchmarks/decode_cost.py --checkpoint RUN/checkpoint.pt

Rows: r6 (the hyperprior codec the wide codecs grew from), r8 (float context), r9 (the default,
integer context), then each ``--codec`` directory and a training run's ``--checkpoint`` exported as
a temporary codec (hyperprior only, as trained), each at quality 8 and at its top level.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, machine, md_table, store_decode_mps  # noqa: E402

R6, R8, R9 = "cps-n96m160-r6", "cps-n96m160-r8", "cps-n96m160-r9"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codec", action="append", default=[], type=Path, help="a codec directory; repeatable")
    p.add_argument("--checkpoint", type=Path, help="also a training run's checkpoint.pt")
    p.add_argument("--size", type=int, default=1024, help="side of the decoded crop, pixels")
    p.add_argument("--threads", type=int, default=1, help="torch threads per decode")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "decode_cost.md")
    a = p.parse_args()
    if not a.codec and not a.checkpoint:
        p.error("give --codec or --checkpoint (or both)")
    import torch

    from cps_tiles.training.run import export_checkpoint
    from cps_tiles.transforms.weights import architecture, load_codec

    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    os.environ["CPS_TILES_REUSE"] = "0"  # every chunk decoded: the codec's cost, not the memo's
    torch.set_num_threads(a.threads)
    state = torch.load(a.checkpoint, map_location="cpu", weights_only=False) if a.checkpoint else None
    with tempfile.TemporaryDirectory() as tmp:
        codecs = {d.name: load_codec(str(d)) for d in a.codec}
        if state:
            run = export_checkpoint(a.checkpoint, Path(tmp) / "decode-cost-probe", "decode-cost-probe")
            codecs[f"run at step {state['step']}"] = run
        runs = {"r6 (N=96, M=160), quality 8": (R6, 8.0), "r8, quality 8": (R8, 8.0), "r9, quality 8": (R9, 8.0)}
        for name, codec in codecs.items():
            c = codec.model.config
            label = f"{name} (N={c.N}, M={c.M}, {architecture(c)})"
            runs |= {f"{label}, quality {q:g}": (str(codec.path), q) for q in (8.0, float(c.levels))}
        mps = store_decode_mps(runs, a.size, a.repeats)
    r6, r8 = mps["r6 (N=96, M=160), quality 8"], mps["r8, quality 8"]
    rows = [[name, f"{v:.3f}", f"{1 / v:.2f}", f"{r8 / v:.2f}x"] for name, v in mps.items()]
    cmd = "python benchmarks/decode_cost.py" + "".join(f" --codec {d}" for d in a.codec) + (
        " --checkpoint RUN/checkpoint.pt" if state else "") + "".join(
        f" --{k} {getattr(a, k)}" for k in ("size", "threads", "repeats") if getattr(a, k) != p.get_default(k))
    checkpoint = (f"checkpoint at step {state['step']}, {state['elapsed'] / 60:.1f} min of wall-clock training; "
                  if state else "")
    text = (
        "# Decode cost per pixel against r6, r8 and r9\n\n"
        f"Command: `{cmd}` (commit {git_rev()}); {checkpoint}a {a.size} x {a.size} crop of the bundled sample "
        f"mosaic; machine: {machine()}; no training running. Method: the script's docstring.\n\n"
        + md_table(["codec", "whole-store decode MP/s", "seconds per megapixel", "cost vs r8"], rows)
        + "\n\nTarget for a released high-fidelity codec: at most 2.00x r8's cost. "
        + ("A run is hyperprior-only as trained: a release adds an entropy context (r8's costs "
           f"{r6 / r8:.2f}x r6's).\n" if state else f"r8's context costs {r6 / r8:.2f}x r6's.\n"))
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
