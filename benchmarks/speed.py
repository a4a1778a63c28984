"""Speed, memory, POPS overhead, compute efficiency and seams of the default codec on this machine.

    .venv/bin/python benchmarks/speed.py            # all sections -> benchmarks/speed.md, seams.png

Sections (``--only a,b``): codecs (encode/decode MP/s vs JPEG XL, AVIF, JPEG 2000 on Kodak),
schedulers (threads, processes, 2-worker LocalCluster), region (512x512 read latency, cold/warm),
memory (peak RSS of a CLI conversion vs image size), pops (tiled over whole-image time vs tile
size), flops (model FLOPs/pixel vs measured matmul GFLOP/s), decode (entropy vs synthesis time per
chunk; torch.compile tried), seams (PSNR-B and border jumps: CPS vs the same model run per chunk vs
JPEG XL per chunk). A run replaces only the sections it measured in speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KODAK, ROOT, add_bf16_flag, git_rev, load_rgb, machine, md_table, psnr  # noqa: E402

import cps_tiles  # noqa: E402
from cps_tiles.transforms.precision import PRECISIONS  # noqa: E402


def mosaic(h: int, w: int) -> np.ndarray:
    """A photo mosaic of Kodak images (mirrored so edges meet smoothly) of exactly h x w pixels."""
    tiles = [load_rgb(p) for p in sorted(KODAK.glob("kodim*.png")) if load_rgb(p).shape[:2] == (512, 768)]
    out = np.empty((h, w, 3), np.uint8)
    k = 0
    for y in range(0, h, 512):
        for x in range(0, w, 768):
            t = tiles[k % len(tiles)]
            k += 1
            out[y : y + 512, x : x + 768] = t[: min(512, h - y), : min(768, w - x)]
    return out


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def fresh_process(func: str, *args: Any) -> Any:
    """``func(*args)`` of this module run in a new Python process, its JSON result returned.

    Decoders are timed this way, as a reader process would run them: in the process that had
    just encoded, the same decode measured up to 1.5x slower on this machine (cause not pinned
    down), which says nothing about reading a store.
    """
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import speed; "
            f"print(json.dumps(speed.{func}(*json.loads(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def whole_decode_seconds(stores: list[str], precision: str) -> float:
    """Sum over ``stores`` of the best of 2 whole decodes (fresh open each time)."""
    np.asarray(cps_tiles.open(stores[0], precision=precision))  # warm-up: weights, oneDNN kernels
    return sum(timed(lambda: np.asarray(cps_tiles.open(s, precision=precision)), 2) for s in stores)


def decode_split_seconds(store: str, precision: str) -> dict[str, float]:
    """Seconds to decode every chunk of ``store``: entropy decoding alone, synthesis alone (from
    latents already decoded), and the whole ``np.asarray(open(store))``."""
    img = cps_tiles.open(store, precision=precision, cache_mb=1024)
    chunks = img.chunk_indices()
    latents = {(i, j): img.read_latent_chunk(i, j) for i, j in chunks}
    windows = [img.plan.chunk_window(i, j) for i, j in chunks]
    inputs = [img._latent_window_from(*w.latent, lambda i, j: latents[i, j]) for w in windows]
    return {"chunks": len(chunks),
            "entropy": timed(lambda: [img.read_latent_chunk(i, j) for i, j in chunks], 2),
            "synthesis": timed(lambda: [img.decode_window(lw, w) for w, lw in zip(windows, inputs)], 2),
            "whole": whole_decode_seconds([store], precision)}


def sec_codecs(tmp: Path, precs: tuple[str, ...]) -> str:
    import imagecodecs as ic

    images = [load_rgb(p) for p in sorted(KODAK.glob("kodim*.png"))[:6]]
    mp = sum(a.shape[0] * a.shape[1] for a in images) / 1e6
    rows = []

    for precision in precs:
        stores = [str(tmp / f"c{k}.zarr") for k in range(len(images))]
        enc = sum(timed(lambda: cps_tiles.convert(a, s, levels=1, progress=False, overwrite=True, precision=precision))
                  for a, s in zip(images, stores))
        dec = fresh_process("whole_decode_seconds", stores, precision)
        rows.append([f"CPS {precision} (store on disk, threads)", f"{mp / enc:.2f}", f"{mp / dec:.2f}"])
    for name, e, d in [("JPEG XL (distance 1.8, effort 7)", lambda a: ic.jpegxl_encode(a, distance=1.8, effort=7), ic.jpegxl_decode),
                       ("AVIF (level 65, speed 4)", lambda a: ic.avif_encode(a, level=65, speed=4), ic.avif_decode),
                       ("AVIF (level 65, speed 6)", lambda a: ic.avif_encode(a, level=65, speed=6), ic.avif_decode),
                       ("JPEG 2000 (target 33 dB)", lambda a: ic.jpeg2k_encode(a, level=33), ic.jpeg2k_decode)]:
        data = [e(a) for a in images]
        te = timed(lambda: [e(a) for a in images])
        td = timed(lambda: [d(b) for b in data], repeat=3)
        rows.append([name, f"{mp / te:.2f}", f"{mp / td:.2f}"])
    return ("## Encode and decode speed (6 Kodak images, 2.4 MP)\n\nCPS decodes in a fresh process (as a reader "
            "would), the store written by another.\n\n"
            + md_table(["codec", "encode MP/s", "decode MP/s"], rows))


def sec_schedulers(tmp: Path) -> str:
    from distributed import Client, LocalCluster

    a = mosaic(2048, 3072)
    mp = a.shape[0] * a.shape[1] / 1e6
    src = tmp / "sched.tif"
    import pyvips

    pyvips.Image.new_from_array(a).copy(interpretation="srgb").tiffsave(str(src), tile=True, compression="deflate")
    rows = []
    for name in ("threads", "processes", "2-worker LocalCluster"):
        store = tmp / f"s-{name[:4]}.zarr"
        if name.startswith("2-worker"):
            with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cl, \
                    Client(cl) as client:
                cps_tiles.convert(src, tmp / "warm.zarr", levels=1, progress=False, client=client, overwrite=True)  # load models
                te = timed(lambda: cps_tiles.convert(src, store, levels=1, progress=False, client=client, overwrite=True))
                td = timed(lambda: client.compute(cps_tiles.open(store).to_dask()).result())
        else:
            te = timed(lambda: cps_tiles.convert(src, store, levels=1, progress=False, scheduler=name, overwrite=True))
            td = timed(lambda: cps_tiles.open(store).to_dask().compute(scheduler=name))
        rows.append([name, f"{mp / te:.2f}", f"{mp / td:.2f}"])
    return (f"## Schedulers ({a.shape[1]}x{a.shape[0]} = {mp:.1f} MP tiled TIFF, tile 1024, chunk 256, quality 5)\n\n"
            "Encode: `cps_tiles.convert` from the TIFF (pyvips streaming) into a store; decode: `to_dask().compute()`.\n\n"
            + md_table(["scheduler", "encode MP/s", "decode MP/s"], rows))


def sec_region(tmp: Path, precs: tuple[str, ...]) -> str:
    a = mosaic(4096, 4608)
    store = tmp / "region.zarr"
    cps_tiles.convert(a, store, levels=1, progress=False)
    rows = []
    for precision in precs:
        rng = np.random.default_rng(0)
        cold, warm, pan = [], [], []
        for _ in range(5):
            y, x = int(rng.integers(0, 4096 - 1024)), int(rng.integers(0, 4608 - 1024))
            img = cps_tiles.open(store, precision=precision)
            cold.append(timed(lambda: img[y : y + 512, x : x + 512]))
            warm.append(timed(lambda: img[y : y + 512, x : x + 512]))
            pan.append(timed(lambda: img[y + 64 : y + 576, x + 64 : x + 576]))
        rows += [[precision, "cold (fresh open, empty cache)", f"{np.median(cold):.3f}"],
                 [precision, "warm (same region again)", f"{np.median(warm):.4f}"],
                 [precision, "pan by 64 px (neighbours cached)", f"{np.median(pan):.3f}"]]
    return ("## 512x512 region read latency (4608x4096 store, chunk 256; median of 5 random regions)\n\n"
            + md_table(["decoder", "case", "seconds"], rows))


def sec_memory(tmp: Path, sizes_mp: list[int]) -> str:
    import pyvips

    rows = []
    tile = mosaic(2048, 3072)
    for mp in sizes_mp:
        side = int(np.sqrt(mp * 1e6) // 256 * 256)
        src = tmp / f"mem{mp}.tif"
        base = pyvips.Image.new_from_array(tile).copy(interpretation="srgb")
        big = base.replicate(-(-side // tile.shape[1]), -(-side // tile.shape[0])).crop(0, 0, side, side)
        big.tiffsave(str(src), tile=True, bigtiff=True, compression="deflate")
        cmd = [sys.executable, "-c", "import resource, sys, time, cps_tiles; t=time.perf_counter(); "
               "cps_tiles.convert(sys.argv[1], sys.argv[2], levels=1, progress=False); "
               "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)", str(src), str(tmp / "m.zarr")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        secs, kb = float(out[0]), int(out[1])
        rows.append([f"{side}x{side}", f"{side * side / 1e6:.0f}", f"{kb / 1024:.0f}", f"{side * side / 1e6 / secs:.2f}"])
        subprocess.run(["rm", "-rf", str(tmp / "m.zarr"), str(src)])
    return ("## Peak memory of a conversion vs image size (fresh process, threads, tile 1024)\n\n"
            + md_table(["image", "MP", "peak RSS (MB)", "encode MP/s"], rows))


def sec_pops(tmp: Path) -> str:
    import torch

    from cps_tiles.transforms.geometry import Geometry, Plan
    from cps_tiles.transforms.tiling import analyze_tiled, synthesize_tiled
    from cps_tiles.transforms.weights import DEFAULT_CODEC, load_codec

    model = load_codec(DEFAULT_CODEC).model
    a = mosaic(2048, 2048)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float().div(255).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        t_whole_a = timed(lambda: model.analysis(x))
        y = torch.round(model.analysis(x) * 2)
        t_whole_s = timed(lambda: model.synthesis(y, 5))
        rows = [["whole image (one pass)", "1.00", "1.00"]]
        for tile in (256, 512, 1024):
            plan = Plan(2048, 2048, Geometry.of(model), chunk=256, tile=tile)
            ta = timed(lambda: analyze_tiled(model, x, plan))
            ts = timed(lambda: synthesize_tiled(model, y, 5, plan))
            rows.append([f"tile {tile}", f"{ta / t_whole_a:.2f}", f"{ts / t_whole_s:.2f}"])
    return ("## POPS compute overhead (2048x2048; tiled time / whole-image time)\n\n"
            "Analysis reads a 32-px margin per side; synthesis a 2-cell (32-px) halo.\n\n"
            + md_table(["tiling", "analysis", "synthesis"], rows))


def sec_flops(precs: tuple[str, ...]) -> str:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cps_tiles.transforms.precision import precision_context
    from cps_tiles.transforms.weights import DEFAULT_CODEC, load_codec

    model = load_codec(DEFAULT_CODEC).model
    x = torch.rand(1, 3, 1024, 1024).contiguous(memory_format=torch.channels_last)
    px = x[0, 0].numel()
    with torch.inference_mode():
        with FlopCounterMode(display=False) as f:
            y = model.analysis(x)
        fa = f.get_total_flops() / px
        with FlopCounterMode(display=False) as f:
            model.synthesis(torch.round(y), 5)
        fs = f.get_total_flops() / px
        # one interior 256-px storage chunk with its 2-cell halo: cropping the output at the end
        # versus trimming each block's input (what every decode path does)
        window = torch.round(y[:, :, :20, :20])
        chunk_flops = []
        for halo in (None, (2, 2, 2, 2)):
            with FlopCounterMode(display=False) as f:
                model.synthesis(window, 5, halo=halo)
            chunk_flops.append(f.get_total_flops() / 256**2)
        rows = []
        for precision in precs:
            m = torch.rand(2048, 2048, dtype=getattr(torch, precision))
            peak = 2 * 2048**3 / timed(lambda: m @ m, 5) / 1e9
            with precision_context(precision):
                ta = timed(lambda: model.analysis(x), 2)
                ts = timed(lambda: model.synthesis(torch.round(y), 5), 2)
            for name, fl, t in (("analysis (g_a)", fa, ta), ("synthesis (g_s)", fs, ts)):
                achieved = fl * px / t / 1e9
                rows.append([name, precision, f"{fl / 1e3:.1f}", f"{px / t / 1e6:.2f}", f"{achieved:.1f}", f"{peak:.0f}",
                             f"{100 * achieved / peak:.0f}%"])
    return ("## Compute efficiency (1024x1024, transforms only, all threads)\n\nPeak: measured 2048^3 matmul in "
            f"the same precision on this machine. Synthesis of one interior 256-px chunk from its 20x20-cell "
            f"window costs {chunk_flops[0] / 1e3:.1f} kFLOP per output pixel when the output is cropped at the end, "
            f"{chunk_flops[1] / 1e3:.1f} kFLOP with each block's input trimmed to the context it still needs "
            f"(whole image: {fs / 1e3:.1f}).\n\n"
            + md_table(["transform", "precision", "kFLOP/pixel", "MP/s", "achieved GFLOP/s", "matmul GFLOP/s",
                        "of matmul"], rows))


def sec_decode(tmp: Path, precs: tuple[str, ...]) -> str:
    """Where the decode time of one chunk goes, and what torch.compile would change."""
    import torch

    from cps_tiles.transforms.precision import precision_context

    a = mosaic(2048, 2048)
    store = tmp / "decode.zarr"
    cps_tiles.convert(a, store, quality=5, levels=1, progress=False, overwrite=True)
    rows = []
    for precision in precs:
        t = fresh_process("decode_split_seconds", str(store), precision)
        n = t["chunks"]
        rows.append([precision, f"{1e3 * t['entropy'] / n:.1f}", f"{1e3 * t['synthesis'] / n:.1f}",
                     f"{1e3 * t['whole'] / n:.1f}", f"{a.shape[0] * a.shape[1] / 1e6 / t['whole']:.2f}"])
    # torch.compile on the synthesis of one interior chunk window (20x20 cells, 2-cell halo)
    model = cps_tiles.open(store).codec.model
    y = torch.round(torch.randn(1, model.config.M, 20, 20) * 3).contiguous(memory_format=torch.channels_last)
    comp = []
    for precision in precs:
        def synth(y: torch.Tensor) -> torch.Tensor:
            with precision_context(precision):
                return model.synthesis(y, 5.0, halo=(2, 2, 2, 2)).float()

        with torch.inference_mode():
            eager = synth(y)
            t_eager = timed(lambda: synth(y), 10)
            for dynamic in (False, True):
                torch._dynamo.reset()
                f = torch.compile(synth, dynamic=dynamic)
                t_first = timed(lambda: f(y))
                diff = (f(y) - eager).abs().max().item() * 255
                comp.append([precision, "dynamic shapes" if dynamic else "static shape", f"{t_first:.1f}",
                             f"{1e3 * t_eager:.1f}", f"{1e3 * timed(lambda: f(y), 10):.1f}", f"{diff:.2f}"])
    torch._dynamo.reset()
    return ("## Where decode time goes (2048x2048 store, 64 chunks of 256 px, quality 5)\n\n"
            "Per chunk: entropy decoding (CRC, ANS for z and y, float64 hyper decoder, parameter snapping) and "
            "synthesis of the chunk from its latent window (halo included) are timed apart, then the whole "
            "`np.asarray(cps_tiles.open(...))`, in a fresh process. At 2 MP/s a 256-px chunk has 32.8 ms.\n\n"
            + md_table(["decoder", "entropy ms/chunk", "synthesis ms/chunk", "whole decode ms/chunk", "decode MP/s"], rows)
            + "\n\n### torch.compile on the synthesis (one interior chunk window, best of 10)\n\n"
            "Compiled kernels round differently from eager ones, so a compiled decoder would have to be used by every "
            "path and every window shape (edge chunks have other shapes: one compile each, or dynamic shapes) to keep "
            "regions equal to the crop of the whole decode. Max diff: largest pixel difference to eager, in 8-bit levels.\n\n"
            + md_table(["precision", "mode", "first call s (compile)", "eager ms", "compiled ms", "max diff"], comp))


def luma(a: np.ndarray) -> np.ndarray:
    return a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def psnr_b(ref: np.ndarray, dec: np.ndarray, block: int) -> float:
    """PSNR-B (Yim & Bovik 2011) on luma, with the block grid of the storage chunks."""
    r, d = luma(ref), luma(dec)
    h, w = d.shape
    dh = (d[:, :-1] - d[:, 1:]) ** 2
    dv = (d[:-1] - d[1:]) ** 2
    bh = np.zeros(w - 1, bool)
    bh[block - 1 :: block] = True
    bv = np.zeros(h - 1, bool)
    bv[block - 1 :: block] = True
    db = (dh[:, bh].sum() + dv[bv].sum()) / (dh[:, bh].size + dv[bv].size)
    dbc = (dh[:, ~bh].sum() + dv[~bv].sum()) / (dh[:, ~bh].size + dv[~bv].size)
    eta = np.log2(block) / np.log2(min(h, w)) if db > dbc else 0.0
    mse_b = np.mean((r - d) ** 2) + eta * (db - dbc)
    return float("inf") if mse_b <= 0 else 10 * np.log10(255**2 / mse_b)


def border_jump(dec: np.ndarray, block: int, among: int = 1) -> float:
    """Mean |jump| across chunk borders minus the mean |jump| across the other positions that are
    multiples of ``among`` (1: all neighbours; 16: the other latent-cell borders), on luma."""
    d = luma(dec)
    jh, jv = np.abs(d[:, :-1] - d[:, 1:]), np.abs(d[:-1] - d[1:])

    def masks(n):
        at, other = np.zeros(n, bool), np.zeros(n, bool)
        other[among - 1 :: among] = True
        at[block - 1 :: block] = True
        return at, other & ~at

    ah, oh = masks(jh.shape[1])
    av, ov = masks(jv.shape[0])
    at = np.concatenate([jh[:, ah].ravel(), jv[av].ravel()]).mean()
    off = np.concatenate([jh[:, oh].ravel(), jv[ov].ravel()]).mean()
    return at - off


def sec_seams(tmp: Path) -> str:
    import imagecodecs as ic
    import torch

    from cps_tiles.transforms.weights import DEFAULT_CODEC, load_codec

    chunk, q = 256, 3
    images = [load_rgb(p) for p in sorted(KODAK.glob("kodim*.png"))[:8]]
    model = load_codec(DEFAULT_CODEC).model
    gain, _ = model.gains(q)
    results = {"CPS (store, exact tiles)": [], "same model per chunk (no overlap)": [], "JPEG XL per chunk (d=4)": [],
               "original": []}
    crops = {}
    for k, a in enumerate(images):
        store = tmp / f"seam{k}.zarr"
        cps = np.asarray(cps_tiles.convert(a, store, quality=q, chunk=chunk, levels=1, progress=False))
        naive = np.empty_like(a)
        jxl = np.empty_like(a)
        for y in range(0, a.shape[0], chunk):
            for x in range(0, a.shape[1], chunk):
                block = a[y : y + chunk, x : x + chunk]
                t = torch.from_numpy(block).permute(2, 0, 1)[None].float().div(255).contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    yh = torch.round(model.analysis(t) * gain.view(1, -1, 1, 1))
                    out = model.synthesis(yh, q)
                naive[y : y + chunk, x : x + chunk] = out[0].mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
                jxl[y : y + chunk, x : x + chunk] = ic.jpegxl_decode(ic.jpegxl_encode(np.ascontiguousarray(block), distance=4.0, effort=7))
        for name, dec in zip(results, (cps, naive, jxl, a)):
            results[name].append((psnr(dec, a), psnr_b(a, dec, chunk), border_jump(dec, chunk),
                                  border_jump(dec, chunk, among=16)))
        if k == 0:
            crops = {name: dec[128:384, 128:384] for name, dec in zip(results, (cps, naive, jxl, a))}
    rows = [[n, f"{np.mean([r[0] for r in v]):.2f}", f"{np.mean([r[1] for r in v]):.2f}", f"{np.mean([r[2] for r in v]):+.3f}",
             f"{np.mean([r[3] for r in v]):+.3f}"] for n, v in results.items()]
    import pyvips

    strip = np.concatenate([np.pad(c, ((0, 0), (0, 8), (0, 0)), constant_values=255) for c in crops.values()], axis=1)
    pyvips.Image.new_from_array(np.ascontiguousarray(strip)).copy(interpretation="srgb").pngsave(
        str(ROOT / "benchmarks" / "seams.png"))
    return (f"## Seams (8 Kodak images, {chunk}-px chunks, CPS quality {q})\n\n"
            "Border jump: mean |luma difference| across chunk borders minus the same between all other neighbouring "
            "pixels (the issue's definition), and minus the same across the other 16-px latent-cell borders (the "
            "model's own grid, which the first column also picks up). 0 = chunk borders look like anywhere else; "
            "the original image is listed as the content's own baseline. PSNR-B: PSNR with the blocking-effect "
            "factor of Yim & Bovik (inf for the original).\n\n"
            + md_table(["decoder", "PSNR (dB)", "PSNR-B (dB)", "border jump vs all", "border jump vs cell borders"], rows)
            + "\n\n![seams](seams.png)\n\n`seams.png`, left to right: " + ", ".join(crops) + " (kodim01, pixels 128..384, "
            "chunk borders at 256).")


SECTIONS = ("codecs", "schedulers", "region", "memory", "pops", "flops", "decode", "seams")


def merge_sections(old: str, header: str, sections: dict[str, str]) -> str:
    """Replace the named sections of an existing results file (text between their markers), keep
    the rest (other sections, hand-written notes), append sections it does not have yet."""
    text = old or header
    text = re.sub(r"^Machine: .*$", header.splitlines()[-1], text, count=1, flags=re.M)
    for name, body in sections.items():
        block = f"<!-- section {name} -->\n{body}\n<!-- end {name} -->"
        pattern = re.compile(rf"<!-- section {name} -->.*?<!-- end {name} -->", re.S)
        text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(SECTIONS), help="sections to (re)measure; the others stay as they are")
    p.add_argument("--memory-mp", default="16,64", help="image sizes (MP) for the memory section")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "speed.md",
                   help="results file; measure another machine into its own file (the Machine line is per file)")
    add_bf16_flag(p)
    a = p.parse_args()
    precs = PRECISIONS if a.bf16 else PRECISIONS[:1]  # float32 first, bfloat16 only with --bf16
    parts = a.only.split(",")
    unknown = sorted(set(parts) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    rev = git_rev()  # before this run rewrites speed.md (which would mark the tree changed)
    command = f"python benchmarks/speed.py {' '.join(sys.argv[1:])}".strip()
    header = ("# Speed, memory and seams\n\nEach section names the command and commit that measured it; "
              f"default codec, quality 5 unless noted.\n\nMachine: {machine()}, {os.cpu_count()} cores.")
    makers = {"codecs": lambda tmp: sec_codecs(tmp, precs), "schedulers": sec_schedulers,
              "region": lambda tmp: sec_region(tmp, precs), "pops": sec_pops, "seams": sec_seams,
              "decode": lambda tmp: sec_decode(tmp, precs), "flops": lambda tmp: sec_flops(precs),
              "memory": lambda tmp: sec_memory(tmp, [int(v) for v in a.memory_mp.split(",")])}
    with tempfile.TemporaryDirectory() as tmp:
        for name in parts:
            t0 = time.perf_counter()
            body = makers[name](Path(tmp))
            section = f"{body}\n\n_Measured by `{command}` (commit {rev})._"
            print(section, f"\n({name}: {time.perf_counter() - t0:.0f} s)\n", flush=True)
            # written after every section: a long run cut short keeps what it measured
            a.out.write_text(merge_sections(a.out.read_text() if a.out.exists() else "", header, {name: section}))

if __name__ == "__main__":
    main()
