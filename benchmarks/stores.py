"""Store kinds: objects and bytes with and without sharding, and region-read latency from local disk
and over HTTP (0 and 20 ms added per request), fetching a region's chunks one after the other or
concurrently.

    python benchmarks/stores.py                      # writes benchmarks/stores.md
    python benchmarks/stores.py --side 8192          # the image side in pixels

The image is a mosaic of the Kodak photographs (mirrored copies to fill the side), converted with
the default codec at quality 5, 256-px chunks, once without and once with shards of 4096 px. Each
latency is the median over cold reads of 512 x 512 regions at random places (a fresh image object
each time, so no cache helps), served by the loopback HTTP server the tests use.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import KODAK, ROOT, git_rev, load_rgb, machine, md_table  # noqa: E402
from servers import http_server  # noqa: E402


def mosaic(side: int) -> np.ndarray:
    photos = [load_rgb(p)[:512, :512] for p in sorted(KODAK.glob("kodim*.png"))]
    tiles = -(-side // 512)
    rows = [np.concatenate([photos[(r * tiles + c) % len(photos)][:, :: 1 if (r + c) % 2 else -1]
                            for c in range(tiles)], axis=1) for r in range(tiles)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:side, :side])


def objects_and_bytes(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def fetch_latency(location, regions: list[tuple[int, int]], concurrency: int) -> float:
    """Median seconds to fetch the bytes of every latent chunk a 512 x 512 region needs (its halo
    included) from a freshly opened image: the store's part of a cold region read."""
    import cps_tiles

    times = []
    for y, x in regions:
        img = cps_tiles.open(location, cache_mb=0)
        img._chunks.concurrency = concurrency
        c = img.meta.chunk
        need = {ij for i in range(y // c, -(-(y + 512) // c)) for j in range(x // c, -(-(x + 512) // c))
                for ij in img.chunks_under(*img.plan.chunk_window(i, j).latent)}
        t = time.perf_counter()
        img._chunks.fetch(sorted(need))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def read_latency(location, regions: list[tuple[int, int]]) -> float:
    """Median seconds of a whole cold 512 x 512 region read (fetch, entropy decoding, synthesis):
    a fresh image object each time, its chunk cache empty (but large enough to hold the region)."""
    import cps_tiles

    times = []
    for y, x in regions:
        img = cps_tiles.open(location)
        t = time.perf_counter()
        img[y : y + 512, x : x + 512]
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    import cps_tiles

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--side", type=int, default=8192)
    p.add_argument("--reads", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "stores.md")
    a = p.parse_args()
    pixels = mosaic(a.side)
    rng = np.random.default_rng(0)
    regions = [(int(y), int(x)) for y, x in rng.integers(0, a.side - 512, (a.reads, 2))]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes, encode = {}, {}
        for name, shard in (("chunks", 0), ("shards", 4096)):
            t = time.perf_counter()
            cps_tiles.convert(pixels, tmp / f"{name}.zarr", quality=5, shard=shard, levels=1, progress=False)
            encode[name] = time.perf_counter() - t
            sizes[name] = objects_and_bytes(tmp / f"{name}.zarr")
        rows, reads = [], []
        for name in ("chunks", "shards"):
            local = [fetch_latency(tmp / f"{name}.zarr", regions, c) for c in (1, 32)]
            remote = []
            for delay in (0.0, 0.02):
                with http_server(tmp, delay=delay) as (url, _):
                    remote += [fetch_latency(f"{url}/{name}.zarr", regions, c) for c in (1, 32)]
                    if delay:
                        reads.append([name, f"{read_latency(tmp / f'{name}.zarr', regions) * 1000:.0f} ms",
                                      f"{read_latency(f'{url}/{name}.zarr', regions) * 1000:.0f} ms"])
            rows.append([name, f"{sizes[name][0]:,}", f"{sizes[name][1]:,}", f"{encode[name]:.0f} s",
                         *(f"{v * 1000:.1f} ms" for v in (*local, *remote))])
    mp = a.side * a.side / 1e6
    text = (
        "# Store kinds: objects, bytes and region-read latency\n\n"
        f"Command: `python benchmarks/stores.py --side {a.side} --reads {a.reads}` (commit {git_rev()}); "
        f"machine: {machine()}.\n\n"
        f"A {a.side} x {a.side} ({mp:.0f} MP) mosaic of the Kodak photographs, default codec, quality 5, 256-px chunks. "
        "Fetch: median time to fetch the bytes of every chunk a cold 512 x 512 region needs (its halo included; "
        "with shards, the shard indexes first), one request after the other (seq.) or concurrently (conc.), "
        "from local disk or from a loopback HTTP server with 0 or 20 ms added to every request.\n\n"
        + md_table(["latent layout", "objects", "bytes", "encode", "local seq.", "local conc.", "HTTP 0 ms seq.",
                    "HTTP 0 ms conc.", "HTTP 20 ms seq.", "HTTP 20 ms conc."], rows) + "\n\n"
        "Whole cold region reads (fetch, entropy decoding and synthesis of its chunks; concurrent fetching), "
        "local and over HTTP with 20 ms per request:\n\n"
        + md_table(["latent layout", "local", "HTTP 20 ms"], reads) + "\n")
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
