"""Integer entropy codecs against the float one they replace: bits, decoding speed, and the numpy
reference's agreement, in one run on one machine.

    python benchmarks/integer_entropy.py            # r9 against r8: writes benchmarks/integer_entropy.md
    python benchmarks/integer_entropy.py --codecs cps-n96m160-r8 cps-n192m320-r10 cps-n192m320-r11 \\
        --qualities 1,2,3,4,5,6,7,8,9,10 --reference-every 8 --out benchmarks/integer_entropy_r11.md

The first of ``--codecs`` is the speed baseline (r8: float64 networks, Gaussian coder).

* Bits and agreement: every 256-px chunk of the Kodak images (6 per image) at each quality a codec
  has. Codecs with the same transforms (r8 and r9; r10 and r11) code the same latent, computed
  once per image and quality, so they decode to the same image: their bits compare directly, and
  each codec after the first of its transforms gets a BD-rate against that one (PCHIP, from the
  chunk bytes and the PSNR of the decoded image, one synthesis per image, quality and transforms).
  Every chunk is decoded back by its codec (it must give the latent), and every
  ``--reference-every``-th chunk of each integer codec also by the numpy int64 reference
  (``cps_tiles.coding.reference``).
* Entropy decoding, at the qualities every codec has (so each decodes the same images at the same
  qualities), content reuse off, after every chunk has been checked: ``ChunkCoder.decode`` per chunk
  (z stream, hyperprior, context networks, y stream), then ``decode_many`` over each image's 6
  chunks at once (integer codecs run them through their networks as batches; r8 batches only its
  hyper synthesis), and the time an int8 codec spends there in its networks' int8 products
  (``torch._int_mm``). The codecs take turns image by image and quality by quality, so a drift in
  the machine's speed slows them alike, and each timing is the best of ``--repeats`` runs; mean ms
  per chunk.
* Whole-store decode: a 2048 x 2048 crop of the bundled sample mosaic converted by each codec
  (quality 5, 256-px chunks, level 0 only) and decoded whole, each in a fresh process, the codecs
  alternating, best of 2.

The timed sections run first; the reference decodes (untimed, the slowest part) follow once the
script prints "timed sections done", so a background job paused for the timing may resume there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, git_rev, kodak_images, load_rgb, machine, md_table, psnr, store_decode_mps  # noqa: E402
from rd_kodak import bd_rate  # noqa: E402

os.environ["CPS_TILES_REUSE"] = "0"  # decode every chunk: the speed of the coder, not of the memo
ARITHMETIC = {"float": "float64 networks, Gaussian coder", "integer": "integer networks, tables",
              "integer8": "integer networks with int8 convolutions, tables",
              "integer8all": "integer networks, every product int8, tables"}


def short(name: str) -> str:
    return name.rsplit("-", 1)[-1]


def transforms_key(codec) -> str:
    """Codecs that share this key share their transforms (so code the same latents): the sha256 of
    their transforms file (``transforms_part``), or the codec's own where one file holds everything."""
    from cps_tiles.errors import CodecError
    from cps_tiles.transforms.weights import transforms_part

    try:
        return transforms_part(codec)[1]
    except CodecError:
        return codec.sha256


def kodak_run(names: list[str], count: int, qualities: list[int], reference_every: int, repeats: int) -> dict:
    import torch

    from cps_tiles.coding.bitstream import ChunkCoder
    from cps_tiles.transforms.weights import load_codec

    codecs = {n: load_codec(n) for n in names}
    coders = {n: ChunkCoder(c.model) for n, c in codecs.items()}
    groups: dict[str, list[str]] = {}
    for n, c in codecs.items():
        groups.setdefault(transforms_key(c), []).append(n)
    common = [q for q in qualities if all(q <= c.model.config.levels for c in codecs.values())]
    stats = {n: {"one": 0.0, "many": 0.0, "products": 0.0, "chunks": 0, "bytes": {}, "bpp": {}, "psnr": {}} for n in names}
    pending = []  # (codec name, chunk, latent) for the reference, decoded after the timed sections
    seen: dict[str, int] = {}  # an integer codec's chunks so far
    jobs = []  # {codec: its chunks of one image at one quality}, for the timed section
    for path in kodak_images(count):
        a = load_rgb(path)
        x = torch.from_numpy(a.transpose(2, 0, 1).copy()).float()[None] / 255
        pixels = a.shape[0] * a.shape[1]
        for members in groups.values():
            model = codecs[members[0]].model
            with torch.inference_mode():
                y = model.analysis(x)
            for q in [q for q in qualities if q <= model.config.levels]:
                y_hat = model.quantize(y, q)[0].numpy()
                blocks = [y_hat[:, i : i + 16, j : j + 16] for i in range(0, y_hat.shape[1], 16)
                          for j in range(0, y_hat.shape[2], 16)]
                datas = {n: [coders[n].encode(b, q) for b in blocks] for n in members}
                for n in members:  # every chunk decodes to its latent, alone and with the image's others
                    assert all(np.array_equal(coders[n].decode(d)[0], b) for d, b in zip(datas[n], blocks)), (n, path.name, q)
                    assert all(np.array_equal(g[0], b) for g, b in zip(coders[n].decode_many(datas[n]), blocks)), (n, path.name, q)
                    if codecs[n].model.integer is not None:
                        for d, b in zip(datas[n], blocks):
                            seen[n] = seen.get(n, 0) + 1
                            if reference_every and (seen[n] - 1) % reference_every == 0:
                                pending.append((n, d, b))
                if q in common:
                    jobs.append((path.name, q, datas))
                with torch.inference_mode():
                    img = (model.synthesis(torch.from_numpy(y_hat)[None], q)[0].clamp(0, 1) * 255).round().byte()
                quality_psnr = psnr(img.permute(1, 2, 0).numpy(), a)
                for n in members:
                    size = sum(map(len, datas[n]))
                    stats[n]["bytes"][q] = stats[n]["bytes"].get(q, 0) + size
                    stats[n]["bpp"].setdefault(q, []).append(8 * size / pixels)
                    stats[n]["psnr"].setdefault(q, []).append(quality_psnr)
        print(f"{path.name} coded", flush=True)
    # The timed section: the codecs in turn on each image and quality (so a machine whose speed drifts
    # slows them alike), each timing the best of ``repeats`` runs (what the machine can do, not the
    # stalls of a shared host).
    products = timed(torch, "_int_mm")  # the int8 products alone, in the batched decode
    by_key: dict[tuple, dict] = {}
    for name, q, datas in jobs:
        by_key.setdefault((name, q), {}).update(datas)
    for chunks in by_key.values():
        for n in names:
            datas = chunks[n]
            for d in datas:
                stats[n]["one"] += min(_seconds(coders[n].decode, d) for _ in range(repeats))
            best = None
            for _ in range(repeats):
                products.clear()
                t = _seconds(coders[n].decode_many, datas)
                if best is None or t < best[0]:
                    best = (t, sum(products))
            stats[n]["many"] += best[0]
            stats[n]["products"] += best[1]
            stats[n]["chunks"] += len(datas)
    return {"stats": stats, "groups": list(groups.values()), "common": common, "pending": pending, "seen": seen}


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def timed(owner, name: str) -> list[float]:
    """Wrap function ``name`` of ``owner`` (a class or module) to record the seconds of each call in the returned list."""
    calls, method = [], getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            calls.append(time.perf_counter() - start)

    setattr(owner, name, wrapper)
    return calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codecs", nargs="+", default=["cps-n96m160-r8", "cps-n96m160-r9"],
                   help="the first is the speed baseline")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--qualities", default="1,2,3,4,5,6,7,8")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: what each of the tile server's default workers gets on 2 cores)")
    p.add_argument("--reference-every", type=int, default=1,
                   help="check every n-th chunk of each integer codec with the numpy reference (0: none)")
    p.add_argument("--repeats", type=int, default=3, help="each timing is the best of this many runs")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "integer_entropy.md")
    a = p.parse_args()
    import torch

    from cps_tiles.transforms.weights import load_codec

    torch.set_num_threads(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    qualities = [int(q) for q in a.qualities.split(",")]
    names = a.codecs
    k = kodak_run(names, a.images, qualities, a.reference_every, a.repeats)
    mps = store_decode_mps({n: (n, 5.0) for n in names}, 2048, 2)
    print("timed sections done; the reference decodes follow", flush=True)
    agreed = {}
    if k["pending"]:
        from cps_tiles.coding.reference import reference_decode

        for n, data, block in k["pending"]:
            agreed[n] = agreed.get(n, 0) + bool(np.array_equal(reference_decode(load_codec(n).model, data), block))
    st = k["stats"]
    sections = []
    for members in k["groups"]:
        if len(members) < 2:
            continue
        first, qs = members[0], sorted(st[members[0]]["bytes"])
        rows, curves = [], {}
        for n in members:
            curves[n] = {"bpp": [float(np.mean(st[n]["bpp"][q])) for q in qs],
                         "psnr": [float(np.mean(st[n]["psnr"][q])) for q in qs]}
        for i, q in enumerate(qs):
            rows.append([q, f"{curves[first]['psnr'][i]:.3f}"] + [f"{curves[n]['bpp'][i]:.4f}" for n in members]
                        + [f"{100 * (st[n]['bytes'][q] / st[first]['bytes'][q] - 1):+.2f}%" for n in members[1:]])
        sections += [
            md_table(["quality", "PSNR (dB)"] + [f"{short(n)} bpp" for n in members]
                     + [f"{short(n)} bytes vs {short(first)}" for n in members[1:]], rows), "",
            *[f"**BD-rate of {short(n)} against {short(first)}: {bd_rate(curves[first], curves[n]):+.2f}%** "
              f"(PCHIP over qualities {', '.join(map(str, qs))})." for n in members[1:]], ""]
    base = names[0]
    speed_rows = []
    for n in names:
        s = st[n]
        one, many = 1000 * s["one"] / s["chunks"], 1000 * s["many"] / s["chunks"]
        b_one, b_many = (1000 * st[base][t] / st[base]["chunks"] for t in ("one", "many"))
        model = load_codec(n).model
        speed_rows.append([f"{n} ({ARITHMETIC[model.config.entropy]})", f"{one:.1f}", f"{one / b_one:.2f}",
                           f"{many:.1f}", f"{many / b_many:.2f}",
                           f"{1000 * s['products'] / s['chunks']:.1f}" if model.integer is not None else "",
                           f"{mps[n]:.3f}", f"{mps[n] / mps[base]:.2f}"])
    total = {n: sum(1 for c in k["pending"] if c[0] == n) for n in names}
    cmd = "python benchmarks/integer_entropy.py" + "".join(f" {x}" for x in sys.argv[1:])
    lines = [
        f"# Integer entropy codecs against {short(base)}: {', '.join(short(n) for n in names[1:])}", "",
        f"Command: `{cmd}` (commit {git_rev()}); {a.images} Kodak images; machine: {machine()}. "
        "Method: the script's docstring.", "",
        "## Bits", "",
        "Codecs with the same transforms code the same latents (so decode to the same images); bpp counts the chunk "
        "bitstreams only (what a store adds per pixel is the same for all).", "",
        *sections,
        "## Exactness", "",
        "Every chunk decoded to its latent by its codec. The numpy int64 reference decoded "
        + "; ".join(f"{agreed.get(n, 0)} of the {total[n]} {short(n)} chunks it checked (of {k['seen'][n]})"
                    for n in names if total[n]) + " to the same latent.", "",
        "## Decoding speed", "",
        f"Entropy decoding in ms per 256-px chunk, at qualities {', '.join(map(str, k['common']))} (each codec the "
        f"same chunks, {st[base]['chunks']} of them); ratios against {short(base)} in this run.", "",
        md_table(["codec", "one chunk at a time (`decode`)", "vs " + short(base), "an image's chunks together "
                  "(`decode_many`)", "vs " + short(base), "of which int8 products", "whole-store decode, "
                  "2048 x 2048, MP/s", "vs " + short(base)], speed_rows), "",
        f"A quarter of {short(base)}'s one-chunk time is {1000 * st[base]['one'] / st[base]['chunks'] / 4:.1f} ms.", "",
    ]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
