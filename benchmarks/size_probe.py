"""Choose N and M by measurement: train each size for the same wall time, then measure Kodak
rate-distortion through the store and the codec's speed.

Each run starts from scratch with the same data, seed, crops and schedule (``cps-tiles train``
defaults, lr step at 85% of the budget); only the size (or the crop) differs. RD points use the
real storage path (``rd_kodak.run_cps``: store bytes on disk, 256-px chunks). Run it on an otherwise
idle machine: both the training budget and the speed columns are wall-clock.

    python benchmarks/size_probe.py ../shared/data/train --minutes 6
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KODAK, ROOT, git_rev, load_rgb, machine, md_table  # noqa: E402
from rd_kodak import bd_rate, run_cps  # noqa: E402

#: N, M, crop, batch: three sizes at the default crop, and the default size at 256-px crops
#: (same pixels per batch).
RUNS = ((64, 128, 128, 8), (96, 160, 128, 8), (128, 192, 128, 8), (96, 160, 256, 2))


def train_and_export(data: list[str], n: int, m: int, crop: int, batch: int, minutes: float, tmp: Path) -> tuple[Path, int, int]:
    from cps_tiles.training.run import export_checkpoint

    run = tmp / f"run-{n}-{m}-{crop}"
    subprocess.run([sys.executable, "-m", "cps_tiles.cli", "train", *data, "--out", str(run), "--N", str(n), "--M", str(m),
                    "--crop", str(crop), "--batch", str(batch), "--minutes", str(minutes)], check=True,
                   stdout=subprocess.DEVNULL)
    name = f"probe-n{n}m{m}-c{crop}"
    codec = export_checkpoint(run / "checkpoint.pt", tmp / name, name)
    steps = sum(1 for _ in open(run / "log.csv")) - 1
    return tmp / name, steps, sum(p.numel() for p in codec.model.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="+", help="training data directories")
    p.add_argument("--minutes", type=float, default=6.0, help="training wall time per run")
    p.add_argument("--kodak", type=Path, default=KODAK)
    p.add_argument("--limit", type=int, default=8, help="Kodak images used for the RD points")
    p.add_argument("--qualities", default="2,4,6,8")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "size_probe.md")
    a = p.parse_args()
    images = [(path, load_rgb(path)) for path in sorted(a.kodak.glob("kodim*.png"))[: a.limit]]
    if not images:
        raise SystemExit(f"no Kodak images under {a.kodak}")
    qualities = [float(q) for q in a.qualities.split(",")]
    mp = sum(im.shape[0] * im.shape[1] for _, im in images) / 1e6 * len(qualities)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, m, crop, batch in RUNS:
            codec, steps, params = train_and_export(a.data, n, m, crop, batch, a.minutes, Path(tmp))
            res = run_cps(images, qualities, 256, str(codec), Path(tmp))
            results.append(((n, m, crop, batch), steps, params, res))
            print(f"N={n} M={m} crop {crop}: {steps} steps", flush=True)
    ref = results[1][3]  # the default size at the default crop
    rows = []
    for (n, m, crop, batch), steps, params, res in results:
        bd = bd_rate(ref, res)
        rows.append([f"{n} / {m}", f"{crop} x {batch}", f"{params / 1e6:.2f} M", steps,
                     ", ".join(f"{b:.3f} / {ps:.2f}" for b, ps in zip(res["bpp"], res["psnr"])),
                     "n/a" if bd is None else f"{bd:+.1f}%", f"{mp / res['encode_s']:.2f}", f"{mp / res['decode_s']:.2f}"])
    cmd = "python benchmarks/size_probe.py " + " ".join(sys.argv[1:])
    a.out.write_text("\n".join([
        "# Codec size at equal training time", "",
        f"Command: `{cmd}` (commit {git_rev()}); machine: {machine()}.", "",
        f"Each run: {a.minutes:g} minutes of `cps-tiles train` from scratch (same data, seed and schedule), then "
        f"{len(images)} Kodak images through the store (256-px chunks) at qualities {a.qualities}. "
        "BD-rate against N=96/M=160 at 128-px crops (negative: fewer bits for the same PSNR). Speeds are "
        "those RD runs (sync scheduler, float32, whole small images), so they include entropy coding and I/O.", "",
        md_table(["N / M", "crop x batch", "parameters", "steps", "bpp / PSNR (dB) per quality", "BD-rate",
                  "encode MP/s", "decode MP/s"], rows), ""]))
    print(a.out.read_text())


if __name__ == "__main__":
    main()
