"""The integer entropy codec (r9) against the float one it was made from (r8): bits, decoding
speed, and the numpy reference's agreement, in one run on one machine.

    python benchmarks/integer_entropy.py            # writes benchmarks/integer_entropy.md

* Bits and agreement: every 256-px chunk of the 24 Kodak images (6 per image) at qualities 1-8:
  the latent once per image and quality, encoded by both codecs (the same latent: the codecs share
  their transforms, so they decode to the same image), both chunks decoded, the r9 chunk also by
  the numpy int64 reference (``cps_tiles.coding.reference``); every decode must give the latent
  back. BD-rate of r9 against r8 from the latent bytes and the PSNR of the decoded image (one
  synthesis per image and quality, shared by both).
* Entropy decoding: ``ChunkCoder.decode`` per chunk (z stream, hyperprior, context networks, y
  stream), r8 and r9 alternating chunk by chunk, content reuse off; mean ms per chunk. Then
  ``decode_many`` over each image's 6 chunks at once (a cps-v4 codec runs them through its integer
  networks as batches; r8 batches only its hyper synthesis), and the time r9 spends there in its
  networks' products (``IntegerLinear.accumulate``).
* Whole-store decode: a 2048 x 2048 crop of the bundled sample mosaic converted by each codec
  (quality 5, 256-px chunks, level 0 only) and decoded whole, each in a fresh process, r8 and r9
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
R8, R9 = "cps-n96m160-r8", "cps-n96m160-r9"


def kodak_run(count: int, qualities: list[int], reference: bool) -> dict:
    import torch

    from cps_tiles.coding.bitstream import ChunkCoder
    from cps_tiles.transforms.integer import IntegerLinear
    from cps_tiles.transforms.weights import load_codec

    m8, m9 = load_codec(R8).model, load_codec(R9).model
    pending = []  # (r9 chunk, its latent) for the reference, decoded after the timed sections
    c8, c9 = ChunkCoder(m8), ChunkCoder(m9)
    out = {q: {"bytes8": 0, "bytes9": 0, "psnr": [], "bpp8": [], "bpp9": []} for q in qualities}
    t8 = t9 = tb8 = tb9 = tp9 = 0.0
    chunks = 0
    products = timed(IntegerLinear, "accumulate")  # the integer networks' products alone, in r9's batched decode
    for path in kodak_images(count):
        a = load_rgb(path)
        x = torch.from_numpy(a.transpose(2, 0, 1).copy()).float()[None] / 255
        with torch.inference_mode():
            y = m9.analysis(x)
        for q in qualities:
            y_hat = m9.quantize(y, q)[0].numpy()
            n8 = n9 = 0
            blocks, datas8, datas9 = [], [], []
            for i in range(0, y_hat.shape[1], 16):
                for j in range(0, y_hat.shape[2], 16):
                    block = y_hat[:, i : i + 16, j : j + 16]
                    d8, d9 = c8.encode(block, q), c9.encode(block, q)
                    s = time.perf_counter()
                    b8 = c8.decode(d8)[0]
                    m = time.perf_counter()
                    b9 = c9.decode(d9)[0]
                    t8, t9 = t8 + m - s, t9 + time.perf_counter() - m
                    assert np.array_equal(b8, block) and np.array_equal(b9, block), (path.name, q, i, j)
                    if reference:
                        pending.append((d9, block))
                    chunks += 1
                    n8, n9 = n8 + len(d8), n9 + len(d9)
                    blocks.append(block)
                    datas8.append(d8)
                    datas9.append(d9)
            # the image's chunks together, as a store's region read decodes them
            s = time.perf_counter()
            got8 = c8.decode_many(datas8)
            m = time.perf_counter()
            products.clear()
            got9 = c9.decode_many(datas9)
            e = time.perf_counter()
            tb8, tb9, tp9 = tb8 + m - s, tb9 + e - m, tp9 + sum(products)
            assert all(np.array_equal(g[0], b) for g, b in zip(got8 + got9, blocks + blocks)), (path.name, q)
            with torch.inference_mode():
                img = (m9.synthesis(torch.from_numpy(y_hat)[None], q)[0].clamp(0, 1) * 255).round().byte()
            pixels = a.shape[0] * a.shape[1]
            cell = out[q]
            cell["bytes8"] += n8
            cell["bytes9"] += n9
            cell["bpp8"].append(8 * n8 / pixels)
            cell["bpp9"].append(8 * n9 / pixels)
            cell["psnr"].append(psnr(img.permute(1, 2, 0).numpy(), a))
        print(f"{path.name} done", flush=True)
    return {"per_quality": out, "ms8": 1000 * t8 / chunks, "ms9": 1000 * t9 / chunks, "batch8": 1000 * tb8 / chunks,
            "batch9": 1000 * tb9 / chunks, "products9": 1000 * tp9 / chunks, "chunks": chunks,
            "pending": pending}


def timed(cls: type, name: str) -> list[float]:
    """Wrap method ``name`` of ``cls`` to record the seconds of each call in the returned list."""
    calls, method = [], getattr(cls, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            calls.append(time.perf_counter() - start)

    setattr(cls, name, wrapper)
    return calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--qualities", default="1,2,3,4,5,6,7,8")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: what each of the tile server's default workers gets on 2 cores)")
    p.add_argument("--no-reference", dest="reference", action="store_false", help="skip the numpy reference decodes")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "integer_entropy.md")
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    qualities = [int(q) for q in a.qualities.split(",")]
    k = kodak_run(a.images, qualities, a.reference)
    mps = store_decode_mps({R8: (R8, 5.0), R9: (R9, 5.0)}, 2048, 2)
    print("timed sections done; the reference decodes follow", flush=True)
    if a.reference:
        from cps_tiles.coding.reference import reference_decode
        from cps_tiles.transforms.weights import load_codec

        m9 = load_codec(R9).model
        k["agreed"] = sum(np.array_equal(reference_decode(m9, d), block) for d, block in k["pending"])
    rows, r8c, r9c = [], {"bpp": [], "psnr": []}, {"bpp": [], "psnr": []}
    for q, c in k["per_quality"].items():
        p_mean = float(np.mean(c["psnr"]))
        r8c["bpp"].append(float(np.mean(c["bpp8"])))
        r9c["bpp"].append(float(np.mean(c["bpp9"])))
        r8c["psnr"].append(p_mean)
        r9c["psnr"].append(p_mean)
        rows.append([q, f"{p_mean:.3f}", f"{r8c['bpp'][-1]:.4f}", f"{r9c['bpp'][-1]:.4f}",
                     f"{100 * (c['bytes9'] / c['bytes8'] - 1):+.2f}%"])
    bd = bd_rate(r8c, r9c)
    cmd = "python benchmarks/integer_entropy.py" + "".join(f" {x}" for x in sys.argv[1:])
    lines = [
        "# Integer entropy codec (r9) against r8", "",
        f"Command: `{cmd}` (commit {git_rev()}); {a.images} Kodak images; machine: {machine()}. "
        "Method: the script's docstring.", "",
        "## Bits", "",
        "The same latents (same decoded images) coded by both codecs; bpp counts the chunk bitstreams only "
        "(what a store adds per pixel is the same for both).", "",
        md_table(["quality", "PSNR (dB)", "r8 bpp", "r9 bpp", "r9 bytes vs r8"], rows), "",
        f"**BD-rate of r9 against r8: {bd:+.2f}%** (PCHIP over qualities {a.qualities}).", "",
        "## Exactness", "",
        f"{k['chunks']} chunks: every one decoded to its latent by both codecs"
        + (f"; the numpy int64 reference decoded {k['agreed']} of {k['chunks']} r9 chunks to the same latent."
           if a.reference else "."), "",
        "## Decoding speed", "",
        md_table(["", "r8 (float64 networks, Gaussian coder)", "r9 (integer networks, tables)", "r9 / r8"], [
            ["entropy decoding, ms per 256-px chunk, one chunk at a time (`decode`)", f"{k['ms8']:.1f}",
             f"{k['ms9']:.1f}", f"{k['ms9'] / k['ms8']:.2f}"],
            ["entropy decoding, ms per 256-px chunk, an image's chunks together (`decode_many`)", f"{k['batch8']:.1f}",
             f"{k['batch9']:.1f}", f"{k['batch9'] / k['batch8']:.2f}"],
            ["whole-store decode, 2048 x 2048, MP/s", f"{mps[R8]:.3f}", f"{mps[R9]:.3f}", f"{mps[R9] / mps[R8]:.2f}"]]),
        "",
        f"Of r9's {k['batch9']:.1f} ms per chunk together, {k['products9']:.1f} ms are the integer networks' "
        "products (`IntegerLinear.accumulate`: the float32 matrix products and their exact float64 sums), "
        f"against a target of {k['ms8'] / 4:.1f} ms (a quarter of r8's one-chunk time).",
        "",
    ]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
