"""Rate-distortion on Kodak through the real storage path, against JPEG, WebP, JPEG 2000, JPEG XL, AVIF.

    .venv/bin/python benchmarks/rd_kodak.py            # all 24 images, qualities 1..8 -> rd_kodak.{md,png,json}

CPS: each image is converted with 256-px chunks at each quality; bits = all bytes of the store on
disk (metadata included); the whole image is decoded from the store. Baselines (imagecodecs; JPEG XL
at effort 7, AVIF at speed 4, JPEG 2000 at target-PSNR settings), each whole-image and per 256-px chunk (what a Zarr user of that codec gets). PSNR on RGB 8-bit, and bpp
and PSNR averaged over images per setting (CompressAI's convention). BD-rate: Bjontegaard with
PCHIP interpolation of log-rate over PSNR on the overlapping PSNR range.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KODAK, ROOT, add_bf16_flag, dir_bytes, git_rev, load_rgb, machine, md_table, psnr  # noqa: E402

# CompressAI's published Kodak results (8-bit decoded, ANS; results/image/8bit-decoded/kodak/ in
# the CompressAI repository), quoted as outside anchors, not re-measured here.
ANCHORS = {
    "bmshj2018-hyperprior (CompressAI)": {
        "bpp": [0.1313, 0.2089, 0.3199, 0.4784, 0.6687, 0.9388, 1.2592, 1.6602],
        "psnr": [27.578, 29.192, 30.964, 32.827, 34.509, 36.716, 38.543, 40.493]},
    "mbt2018-mean (CompressAI)": {
        "bpp": [0.1239, 0.1980, 0.3072, 0.4606, 0.6617, 0.9144, 1.2342, 1.6191],
        "psnr": [27.696, 29.354, 31.121, 32.939, 34.950, 36.883, 38.794, 40.569]},
}


def baselines():
    import imagecodecs as ic

    return {
        "JPEG": ([5, 10, 20, 30, 45, 60, 75, 85, 92, 96], lambda a, q: ic.jpeg8_encode(a, level=q), ic.jpeg8_decode),
        "WebP": ([5, 15, 30, 50, 70, 85, 95], lambda a, q: ic.webp_encode(a, level=q, lossless=False), ic.webp_decode),
        "JPEG 2000": ([23, 25, 27, 29, 31, 33, 35, 37, 39, 41], lambda a, q: ic.jpeg2k_encode(a, level=q), ic.jpeg2k_decode),
        "JPEG XL": ([15.0, 11.0, 8.0, 5.0, 3.5, 2.5, 1.8, 1.2, 0.8, 0.5], lambda a, q: ic.jpegxl_encode(a, distance=q, effort=7),
                    ic.jpegxl_decode),
        "AVIF": ([15, 30, 45, 55, 65, 75, 85, 92], lambda a, q: ic.avif_encode(a, level=q, speed=4), ic.avif_decode),
    }


def whole_image(encode, decode, a: np.ndarray, q) -> tuple[int, np.ndarray]:
    """Bytes and decoded RGB of the whole image ``a`` through a baseline at setting ``q``."""
    data = encode(a, q)
    return len(data), decode(data)[:, :, :3]


def per_chunk(encode, decode, a: np.ndarray, q, chunk: int) -> tuple[int, np.ndarray]:
    out = np.empty_like(a)
    nbytes = 0
    for y in range(0, a.shape[0], chunk):
        for x in range(0, a.shape[1], chunk):
            block = np.ascontiguousarray(a[y : y + chunk, x : x + chunk])
            data = encode(block, q)
            nbytes += len(data)
            decoded = decode(data)
            out[y : y + chunk, x : x + chunk] = decoded[..., : a.shape[2]] if a.ndim == 3 else decoded
    return nbytes, out


def rate_points(c: dict) -> tuple[np.ndarray, np.ndarray]:
    """A curve's (PSNR, log bpp), sorted by PSNR, repeated PSNRs dropped: ready for interpolation."""
    p, r = np.asarray(c["psnr"], float), np.log(np.asarray(c["bpp"], float))
    order = np.argsort(p)
    p, r = p[order], r[order]
    keep = np.concatenate([[True], np.diff(p) > 1e-9])
    return p[keep], r[keep]


def bd_rate(ref: dict, test: dict, bpp_range: tuple[float, float] | None = None) -> float | None:
    """Average bitrate difference (%) of ``test`` against ``ref`` at equal PSNR (negative = saving),
    over ``bd_span``'s PSNR range; None where there is none."""
    return _bd_of(bd_span(ref, test, bpp_range))


def _bd_of(span) -> float | None:
    if span is None:
        return None
    f1, f2, lo, hi = span
    grid = np.linspace(lo, hi, 200)
    diff = np.trapezoid(f2(grid) - f1(grid), grid) / (hi - lo)
    return float((np.exp(diff) - 1) * 100)


def bd_span(ref: dict, test: dict, bpp_range: tuple[float, float] | None = None):
    """(log-bpp of ``ref`` and of ``test`` as PCHIP functions of PSNR, lo dB, hi dB): the PSNR range
    both curves cover; with ``bpp_range`` (lo, hi), only where the reference spends between lo and hi
    bpp. None where that range is under 0.5 dB."""
    from scipy.interpolate import PchipInterpolator

    p1, r1 = rate_points(ref)
    p2, r2 = rate_points(test)
    if len(p1) < 2 or len(p2) < 2:
        return None
    f1, f2 = PchipInterpolator(p1, r1), PchipInterpolator(p2, r2)
    lo, hi = max(p1.min(), p2.min()), min(p1.max(), p2.max())
    if bpp_range is not None:  # the reference's rate rises with PSNR: find its PSNRs on a fine grid
        fine = np.linspace(p1.min(), p1.max(), 2000)
        inside = fine[(f1(fine) >= np.log(bpp_range[0])) & (f1(fine) <= np.log(bpp_range[1]))]
        if not len(inside):
            return None
        lo, hi = max(lo, inside.min()), min(hi, inside.max())
    return None if hi - lo < 0.5 else (f1, f2, lo, hi)


def bd_cell(ref: dict, test: dict, bpp_range: tuple[float, float] | None = None) -> str:
    """BD-rate as a table cell; with ``bpp_range``, also the PSNR span it covers."""
    span = bd_span(ref, test, bpp_range)
    if span is None:
        return "n/a (no PSNR overlap)" if bpp_range is None else "n/a (under 0.5 dB of overlap)"
    bd = f"{_bd_of(span):+.1f}%"
    return bd if bpp_range is None else f"{bd} ({span[2]:.1f}-{span[3]:.1f} dB)"


def run_cps(images, qualities, chunk, codec, tmp: Path, precision: str = "float32") -> dict:
    import cps_tiles

    res = {"bpp": [], "psnr": [], "chunks_bpp": [], "encode_s": 0.0, "decode_s": 0.0}
    for q in qualities:
        bpps, psnrs, chunk_bpps = [], [], []
        for path, a in images:
            store = tmp / f"{path.stem}-{q}.zarr"
            t0 = time.perf_counter()
            cps_tiles.convert(a, store, quality=q, chunk=chunk, tile=1024, levels=1, progress=False, codec=codec,
                              scheduler="sync", precision=precision, overwrite=True)
            t1 = time.perf_counter()
            dec = np.asarray(cps_tiles.open(store, precision=precision))
            res["encode_s"] += t1 - t0
            res["decode_s"] += time.perf_counter() - t1
            bpps.append(8 * dir_bytes(store) / (a.shape[0] * a.shape[1]))
            chunk_bpps.append(8 * dir_bytes(store / "latent" / "c") / (a.shape[0] * a.shape[1]))
            psnrs.append(psnr(dec, a))
        res["bpp"].append(float(np.mean(bpps)))
        res["psnr"].append(float(np.mean(psnrs)))
        res["chunks_bpp"].append(float(np.mean(chunk_bpps)))
        print(f"CPS {precision} q{q}: {res['bpp'][-1]:.4f} bpp {res['psnr'][-1]:.3f} dB", flush=True)
    return res


def run_baselines(images, chunk) -> dict:
    results = {}
    for name, (settings, enc, dec) in baselines().items():
        for mode in ("whole", f"{chunk}-px chunks"):
            bpps, psnrs = [], []
            for q in settings:
                b, p = [], []
                for _, a in images:
                    n, out = whole_image(enc, dec, a, q) if mode == "whole" else per_chunk(enc, dec, a, q, chunk)
                    b.append(8 * n / (a.shape[0] * a.shape[1]))
                    p.append(psnr(out, a))
                bpps.append(float(np.mean(b)))
                psnrs.append(float(np.mean(p)))
            results[f"{name} ({mode})"] = {"bpp": bpps, "psnr": psnrs, "settings": settings}
            print(f"{name} ({mode}) done", flush=True)
    return results


#: The high-rate range (the reference's bpp) over which a high-fidelity codec is held to beat JPEG XL by 10%.
HIGH_RATES = (1.0, 3.0)
CARD_BEGIN, CARD_END = "<!-- rd:begin (written by benchmarks/rd_kodak.py) -->", "<!-- rd:end -->"


def update_card(card: Path, cmd: str, n_images: int, qualities, cps: dict, bd_rows) -> None:
    """Replace the measured-RD section of the codec card with this run's numbers."""
    text = card.read_text()
    if CARD_BEGIN not in text:
        return
    section = "\n".join([
        CARD_BEGIN,
        f"Measured by `{cmd}` on {n_images} Kodak images (store bytes on disk, 256-px chunks):", "",
        md_table(["quality", "bpp", "PSNR (dB)"], [[q, f"{b:.4f}", f"{p:.3f}"] for q, b, p in zip(qualities, cps["bpp"], cps["psnr"])]),
        "", md_table(["reference", "BD-rate of this codec", f"over {HIGH_RATES[0]:g}-{HIGH_RATES[1]:g} bpp of the reference"],
                     bd_rows), CARD_END])
    head, rest = text.split(CARD_BEGIN, 1)
    card.write_text(head + section + rest.split(CARD_END, 1)[1])


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    for name, r in results.items():
        style = "-o" if name.startswith("CPS") else ("--" if "chunks" in name else "-")
        if "CompressAI" in name:
            style = ":"
        ax.plot(r["bpp"], r["psnr"], style, label=name, markersize=4, linewidth=2.5 if name.startswith("CPS") else 1)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB, RGB)")
    cps = [r for name, r in results.items() if name.startswith("CPS")]
    # 0-2 bpp holds the default codec's levels; a high-fidelity codec's top levels widen the view
    ax.set_xlim(0, max([2.0] + [1.05 * max(r["bpp"]) for r in cps]))
    ax.set_ylim(24, max([42.0] + [np.ceil(max(r["psnr"])) + 1 for r in cps]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Kodak (24 images): rate-distortion")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kodak", type=Path, default=KODAK)
    p.add_argument("--limit", type=int, default=0, help="use only the first N images")
    p.add_argument("--qualities", default="1,2,3,4,5,6,7,8")
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--codec", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "rd_kodak")
    p.add_argument("--no-card", dest="update_card", action="store_false", help="leave the codec card alone")
    p.add_argument("--baselines-from", type=Path,
                   help="take the baselines from an earlier run's .json on the same images instead of re-encoding them "
                   "(they are deterministic: same images, settings and imagecodecs build, same numbers)")
    add_bf16_flag(p)
    a = p.parse_args()
    paths = sorted(a.kodak.glob("kodim*.png"))[: a.limit or None]
    if not paths:
        raise SystemExit(f"no Kodak images under {a.kodak}")
    images = [(path, load_rgb(path)) for path in paths]
    qualities = [float(q) for q in a.qualities.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        cps = run_cps(images, qualities, a.chunk, a.codec, Path(tmp))
        fast = run_cps(images, qualities, a.chunk, a.codec, Path(tmp), "bfloat16") if a.bf16 else None
    from cps_tiles.transforms.weights import DEFAULT_CODEC, load_codec

    codec = load_codec(a.codec or DEFAULT_CODEC)
    results = {f"CPS {codec.name} (store, {a.chunk}-px chunks)": cps}
    if fast:
        results[f"CPS {codec.name} bfloat16 encode+decode"] = fast
    if a.baselines_from:
        earlier = json.loads(a.baselines_from.read_text())
        results.update({name: r for name, r in earlier.items() if "settings" in r})
    else:
        results.update(run_baselines(images, a.chunk))
    results.update(ANCHORS)
    cps_key = next(iter(results))
    mp = sum(im.shape[0] * im.shape[1] for _, im in images) / 1e6 * len(qualities)
    rows = [[name, bd_cell(r, results[cps_key]), bd_cell(r, results[cps_key], HIGH_RATES)]
            for name, r in results.items() if name != cps_key]
    # A gigapixel store's metadata (~1 KB) is nothing per pixel; on a Kodak image it is not, so the
    # chunk bitstreams alone are reported beside the official whole-store numbers.
    bitstreams = {"bpp": cps["chunks_bpp"], "psnr": cps["psnr"]}
    meta_bpp = np.mean(np.subtract(cps["bpp"], cps["chunks_bpp"]))
    bitstream_rows = [[name, bd_cell(r, bitstreams)] for name, r in results.items() if "whole" in name or "CompressAI" in name]
    cmd = "python benchmarks/rd_kodak.py " + " ".join(sys.argv[1:])
    md = [
        "# Kodak rate-distortion", "",
        f"Command: `{cmd.strip()}` (commit {git_rev()}); {len(images)} images; machine: {machine()}.", "",
        f"CPS bits are all bytes of the Zarr store on disk (metadata included); baselines are imagecodecs "
        f"at the settings listed, whole-image and per {a.chunk}-px chunk"
        + (f", taken from `{a.baselines_from.name}` (an earlier run on the same images; not re-encoded)" if a.baselines_from
           else "") + ". CompressAI rows quote its published Kodak numbers (not re-measured).", "",
        "## BD-rate of CPS against each (negative: CPS needs fewer bits for the same PSNR)", "",
        md_table(["reference", "BD-rate of CPS", f"over {HIGH_RATES[0]:g}-{HIGH_RATES[1]:g} bpp of the reference"], rows), "",
        "## CPS points", "",
        md_table(["quality", "bpp", "PSNR (dB)"], [[q, f"{b:.4f}", f"{ps:.3f}"] for q, b, ps in zip(qualities, cps["bpp"], cps["psnr"])]),
        "", f"Of these bits, the store's metadata documents (`zarr.json`) are {meta_bpp:.4f} bpp on a Kodak "
        f"image ({100 * meta_bpp / cps['bpp'][0]:.1f}% at quality {qualities[0]:g}, {100 * meta_bpp / cps['bpp'][-1]:.1f}% at "
        f"{qualities[-1]:g}); a gigapixel store pays only for its chunk bitstreams. BD-rate of the chunk "
        "bitstreams alone (all of them, headers and checksums included):", "",
        md_table(["reference", "BD-rate of CPS chunk bitstreams"], bitstream_rows),
        "", f"CPS speed in this run (sync scheduler, stores on local disk, float32): encode "
        f"{mp / cps['encode_s']:.2f} MP/s, decode {mp / cps['decode_s']:.2f} MP/s"
        + (f"; bfloat16: encode {mp / fast['encode_s']:.2f} MP/s, decode {mp / fast['decode_s']:.2f} MP/s." if fast else "."),
        "",
        "## Baselines", "",
        md_table(["codec", "settings", "bpp", "PSNR (dB)"],
                 [[n, ", ".join(map(str, r["settings"])), ", ".join(f"{b:.3f}" for b in r["bpp"]),
                   ", ".join(f"{x:.2f}" for x in r["psnr"])] for n, r in results.items() if "settings" in r]),
        "", f"![RD plot]({a.out.name}.png)", "",
    ]
    a.out.with_suffix(".md").write_text("\n".join(md))
    card = ROOT / "codecs" / codec.name / "CARD.md"
    if a.update_card and card.exists():
        update_card(card, cmd.strip(), len(images), qualities, cps, rows)
    a.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    plot(results, a.out.with_suffix(".png"))
    print("\n".join(md))


if __name__ == "__main__":
    main()
