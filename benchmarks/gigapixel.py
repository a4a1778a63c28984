"""A 1-gigapixel store's objects and bytes, one object per chunk against shards.

    python benchmarks/gigapixel.py WORKDIR            # builds WORKDIR/gp.tif, converts it, reshards it

WORKDIR/gp.tif is a 32768 x 32768 tiled TIFF mosaic of the Kodak photographs (512 x 512 crops,
every other one mirrored). It is converted with the default codec at quality 5, 256-px chunks,
level 0 only and without shards (``--levels 1 --shard 0``, bfloat16 where the CPU has it natively),
then repacked into shards of 4096 px by ``cps-tiles reshard``, which moves the same chunk
bitstreams into shard objects, byte-identical to converting with ``--shard 4096``. Steps whose
output exists are skipped, so a killed run resumes (the conversion with ``--resume``).

    python benchmarks/gigapixel.py WORKDIR --levels   # writes benchmarks/gigapixel_levels.md

converts the same mosaic the default way (every pyramid level, shards of 4096 px) in a child
process and records its wall time and peak resident memory, then the time to show a 1024-px
overview from the stored levels against decoding level 0 and reducing it. Decoding all of level 0
takes hours here, so that time is extrapolated from one measured 4096 x 4096 region (1/64 of it);
the table says so.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KODAK, ROOT, git_rev, machine, md_table  # noqa: E402
from pyramid import overview_from_levels  # noqa: E402
from stores import objects_and_bytes  # noqa: E402

SIDE = 32768


def build_tiff(path: Path) -> None:
    import pyvips

    crops = []
    for k, p in enumerate(sorted(KODAK.glob("kodim*.png"))):
        im = pyvips.Image.new_from_file(str(p)).crop(0, 0, 512, 512)
        crops.append(im if k % 2 else im.fliphor())
    n = SIDE // 512
    mosaic = pyvips.Image.arrayjoin([crops[(r * n + c) % len(crops)] for r in range(n) for c in range(n)], across=n)
    mosaic.tiffsave(str(path), tile=True, tile_width=512, tile_height=512, compression="deflate", bigtiff=True)


def convert_with_levels(tif: Path, store: Path) -> tuple[float, float]:
    """Convert ``tif`` with every level in a child process; return (wall seconds, peak RSS in MB)."""
    import resource

    from cps_tiles.transforms.precision import native_bf16

    precision = "bfloat16" if native_bf16() else "float32"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cps_tiles.cli", "convert", str(tif), str(store), "--quality", "5",
                    "--precision", precision, "--quiet", "--resume"], check=True)
    return time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def levels_report(workdir: Path) -> str:
    import numpy as np

    import cps_tiles
    from cps_tiles.store.layout import level_path

    store = workdir / "gp-levels.zarr"
    seconds, rss = convert_with_levels(workdir / "gp.tif", store)
    img = cps_tiles.open(store, cache_mb=0)
    total, rows, level_bytes = objects_and_bytes(store)[1], [], []
    for lv in img.levels:
        objects, nbytes = objects_and_bytes(store / "latent" if lv.level == 0 else store / level_path(lv.level))
        rows.append([lv.level, f"{lv.shape[1]} x {lv.shape[0]}", f"{objects:,}", f"{nbytes:,}"])
        level_bytes.append(nbytes)
    share = (total - level_bytes[0]) / total
    t_top, top = overview_from_levels(img)
    t = time.perf_counter()
    np.asarray(cps_tiles.open(store, cache_mb=0)[:4096, :4096])
    t_region = time.perf_counter() - t
    t_full = t_region * (SIDE // 4096) ** 2
    return (
        "# A 1-gigapixel conversion with pyramid levels: time, peak memory, overview\n\n"
        f"Command: `python benchmarks/gigapixel.py WORKDIR --levels` (commit {git_rev()}); machine: {machine()}.\n\n"
        f"The {SIDE} x {SIDE} (1.07 GP) Kodak mosaic, default codec, quality 5, 256-px chunks, every level, shards of "
        f"4096 px (the defaults). Conversion in a child process: {seconds / 60:.1f} min wall, peak resident memory "
        f"{rss:,.0f} MB (a resumed run only measures its own part).\n\n"
        + md_table(["level", "size", "objects", "bytes"], rows) + "\n\n"
        f"The levels above 0 are {100 * share:.1f}% of the store's {total:,} bytes.\n\n"
        f"A 1024-px overview: {t_top:.2f} s from level {top.level} ({top.shape[1]} x {top.shape[0]}). Decoding level 0 "
        f"and reducing it instead: one 4096 x 4096 region took {t_region:.0f} s, so all 64 such regions would take about "
        f"{t_full / 60:.0f} min (extrapolated, not run): {t_full / t_top:,.0f}x longer.\n")


def main() -> None:
    from cps_tiles.transforms.precision import native_bf16

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("workdir", type=Path)
    p.add_argument("--levels", action="store_true", help="convert with every level; report time, memory, overview")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    tif, plain, sharded = a.workdir / "gp.tif", a.workdir / "gp.zarr", a.workdir / "gp-sharded.zarr"
    if not tif.exists():
        build_tiff(tif)
    if a.levels:
        text = levels_report(a.workdir)
        (a.out or ROOT / "benchmarks" / "gigapixel_levels.md").write_text(text)
        print(text)
        return
    cli = [sys.executable, "-m", "cps_tiles.cli"]
    encode = "(converted before this run)"
    if not (plain / "zarr.json").exists() or b'"complete":true' not in (plain / "zarr.json").read_bytes().replace(b" ", b""):
        precision = "bfloat16" if native_bf16() else "float32"
        t = time.perf_counter()
        subprocess.run([*cli, "convert", str(tif), str(plain), "--quality", "5", "--levels", "1", "--shard", "0",
                        "--precision", precision, "--quiet", "--resume"], check=True)
        encode = f"{time.perf_counter() - t:.0f} s"
    t = time.perf_counter()
    subprocess.run([*cli, "reshard", str(plain), str(sharded), "--shard", "4096", "--overwrite"], check=True,
                   capture_output=True)
    repack = time.perf_counter() - t
    rows = []
    for name, path in (("one object per chunk", plain), ("shards of 4096 px", sharded)):
        objects, nbytes = objects_and_bytes(path)
        latent = sum(1 for q in (path / "latent").rglob("*") if q.is_file())
        rows.append([name, f"{objects:,}", f"{latent:,}", f"{nbytes:,}", f"{8 * nbytes / SIDE**2:.4f}"])
    text = (
        "# A 1-gigapixel store: objects and bytes\n\n"
        f"Command: `python benchmarks/gigapixel.py WORKDIR` (commit {git_rev()}); machine: {machine()}.\n\n"
        f"A {SIDE} x {SIDE} (1.07 GP) Kodak mosaic, default codec, quality 5, 256-px chunks, level 0 only. "
        f"Conversion: {encode}; repacking into shards (`cps-tiles reshard`, no re-encoding): {repack:.0f} s.\n\n"
        + md_table(["latent layout", "objects", "of them latent", "bytes", "bits per pixel"], rows) + "\n")
    (a.out or ROOT / "benchmarks" / "gigapixel.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
