"""The tile server: tile latency by zoom level (cold and warm), the time until a 1920 x 1080
viewport is fully shown in headless Chromium (cold, at full zoom-out and at full resolution), and
requests per second from 16 concurrent clients on warm tiles.

    python benchmarks/serve.py STORE                          # writes benchmarks/serve.md
    python benchmarks/serve.py STORE --precision bfloat16 --out benchmarks/serve_bf16.md

Each part starts a fresh ``cps-tiles serve`` (an empty decoded-chunk cache: cold) on loopback; the
store's files may sit in the OS page cache. Tile latency is the wall time of one HTTP request for
one 256-px JPEG Deep Zoom tile, measured by a client in this process, one request at a time: a
"cold" tile is one the server has not decoded (nor its neighbours), "warm" the same request again.
The viewport times come from the viewer itself (``window.cpsViewer``): first tile drawn and every
visible tile of the matching level drawn, from the moment the view is set. The last part breaks a
cold tile's server time into fetching and entropy-decoding its latent chunks, synthesis, and JPEG
encoding, in this process. A screenshot of the full-resolution viewport is saved beside the report.
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import ROOT, git_rev, machine, md_table  # noqa: E402
from servers import tile_server  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//")[1].rstrip("/").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=600)

    def get(self, path: str) -> float:
        t = time.perf_counter()
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status}")
        return time.perf_counter() - t


def tile_grid(width: int, height: int, dz_level: int, top: int) -> tuple[int, int]:
    s = 2 ** (top - dz_level)
    lw, lh = -(-width // s), -(-height // s)
    return -(-lw // 256), -(-lh // 256)


def tile_latency(url: str, name: str, width: int, height: int, levels: int, top: int, n: int) -> list[list]:
    """Median cold and warm latency (ms) of ``n`` tiles at several zoom levels, far apart."""
    rng, client, rows = random.Random(0), Client(url), []
    for k in sorted({0, 2, 4, levels - 1} & set(range(levels))):
        cols, nrows = tile_grid(width, height, top - k, top)
        # tiles at least 3 apart, so no two share a latent chunk or a decoded chunk
        picks = {(3 * rng.randrange(max(1, cols // 3)), 3 * rng.randrange(max(1, nrows // 3))) for _ in range(4 * n)}
        picks = sorted(picks)[:n]
        paths = [f"/{name}_files/{top - k}/{c}_{r}.jpeg" for c, r in picks]
        cold = [client.get(p) for p in paths]
        warm = [client.get(p) for p in paths]
        rows.append([k, f"{cols} x {nrows}", len(paths), f"{1000 * statistics.median(cold):.0f}",
                     f"{1000 * max(cold):.0f}", f"{1000 * statistics.median(warm):.1f}"])
    return rows


def throughput(url: str, name: str, width: int, height: int, top: int, clients: int = 16, seconds: float = 10.0) -> float:
    """Requests per second from ``clients`` concurrent keep-alive clients on up to 32 warm tiles."""
    cols, rows = tile_grid(width, height, top, top)
    paths = [f"/{name}_files/{top}/{c}_{r}.jpeg" for r in range(min(4, rows)) for c in range(min(8, cols))]
    warmer = Client(url)
    for p in paths:
        warmer.get(p)
    count, stop = [0] * clients, time.perf_counter() + seconds

    def run(i: int) -> None:
        client, rng = Client(url), random.Random(i)
        while time.perf_counter() < stop:
            client.get(rng.choice(paths))
            count[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(count) / (time.perf_counter() - t)


def _ms(value: float | None) -> str:
    return "none needed" if value is None else f"{value:.0f}"


def viewport(url: str, name: str, width: int, height: int, shot: Path) -> list[list]:
    """Cold viewport times in Chromium at 1920 x 1080: the page opening at full zoom-out, then a
    jump to full resolution at a place not seen yet."""
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1920, "height": 1080}, device_scale_factor=1)
        t = time.perf_counter()
        page.goto(url + f"view/{name}")
        page.wait_for_function("window.cpsViewer && window.cpsViewer.info && window.cpsViewer.complete",
                               timeout=600_000, polling=20)
        total = time.perf_counter() - t
        v = page.evaluate("({first: cpsViewer.firstTileMs, done: cpsViewer.completeMs, n: cpsViewer.tiles.size})")
        rows.append(["full zoom-out (page load)", _ms(v["first"]), _ms(v["done"]), f"{1000 * total:.0f}", v["n"]])
        page.evaluate(f"window.cpsViewer.setView({width * 0.61:.0f}, {height * 0.37:.0f}, 1)")
        page.wait_for_function("window.cpsViewer.complete", timeout=600_000, polling=20)
        v = page.evaluate("({first: cpsViewer.firstTileMs, done: cpsViewer.completeMs})")
        rows.append(["full resolution (jump)", _ms(v["first"]), _ms(v["done"]), "", ""])
        page.screenshot(path=str(shot), type="jpeg", quality=85)
        browser.close()
    return rows


def where_time_goes(store: str, precision: str, n: int = 6) -> list[list]:
    """A cold level-0 tile's server time, by stage, in this process (median of ``n`` chunks)."""
    import numpy as np

    import cps_tiles
    from cps_tiles.server.render import encode

    img = cps_tiles.open(store, cache_mb=0, precision=precision)
    rng = random.Random(1)
    rows_n, cols_n = -(-img.shape[0] // 256), -(-img.shape[1] // 256)
    fetch, synth, jpeg = [], [], []
    for _ in range(n):
        i, j = rng.randrange(rows_n), rng.randrange(cols_n)
        window = img.plan.chunk_window(i, j)
        t = time.perf_counter()
        chunks = img.read_latent_chunks(img.chunks_under(*window.latent))
        latent = img._latent_window_from(*window.latent, lambda a, b: chunks[a, b])
        t1 = time.perf_counter()
        pixels = img.decode_window(latent, window)
        t2 = time.perf_counter()
        encode(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "jpg")
        t3 = time.perf_counter()
        fetch.append(t1 - t), synth.append(t2 - t1), jpeg.append(t3 - t2)
    parts = {"fetch + entropy-decode latent chunks (with halo)": fetch, "synthesis (transform)": synth,
             "JPEG encoding": jpeg}
    total = sum(statistics.median(v) for v in parts.values())
    return [[k, f"{1000 * statistics.median(v):.0f}", f"{100 * statistics.median(v) / total:.0f}%"]
            for k, v in parts.items()]


def main() -> None:
    import cps_tiles
    from cps_tiles.server.deepzoom import top_level

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("store")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--tiles", type=int, default=8, help="tiles per zoom level for latency")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "serve.md")
    a = p.parse_args()
    img = cps_tiles.open(a.store)
    height, width = img.shape[:2]
    name = Path(a.store.rstrip("/")).name.removesuffix(".zip").removesuffix(".zarr")
    top, levels = top_level(width, height), img.level_count
    server_args = [a.store, "--precision", a.precision, "--cache-mb", "1024"]
    with tile_server(*server_args) as (url, _):
        latency = tile_latency(url, name, width, height, levels, top, a.tiles)
    with tile_server(*server_args) as (url, _):
        rps = throughput(url, name, width, height, top)
    shot = a.out.with_suffix(".jpg")
    with tile_server(*server_args) as (url, _):
        view = viewport(url, name, width, height, shot)
    stages = where_time_goes(a.store, a.precision)
    command = "python benchmarks/serve.py STORE" + (f" --precision {a.precision}" if a.precision != "float32" else "")
    text = (
        "# Tile server: latency, viewport times in Chromium, throughput\n\n"
        f"Command: `{command}` (commit {git_rev()}); machine: {machine()}.\n\n"
        f"Store: {width:,} x {height:,} px ({width * height / 1e9:.2f} GP), {levels} levels, {img.meta.chunk}-px "
        f"chunks, codec {img.meta.codec}, quality {img.meta.quality:g}; server: `cps-tiles serve STORE --precision "
        f"{a.precision} --cache-mb 1024` (default workers: one per core), 256-px JPEG Deep Zoom tiles.\n\n"
        "## Tile latency, one request at a time (ms)\n\n"
        + md_table(["stored level", "tiles", "requests", "cold median", "cold max", "warm median"], latency) + "\n\n"
        "## A 1920 x 1080 viewport in headless Chromium, cold (ms)\n\n"
        + md_table(["view", "first tile drawn", "all visible tiles drawn", "page load to complete", "tiles fetched"],
                   view) + "\n\n"
        f"Screenshot of the full-resolution view: `{shot.name}`.\n\n"
        f"## Warm tiles, 16 concurrent clients\n\n{rps:,.0f} requests per second.\n\n"
        "## Where a cold level-0 tile's server time goes (ms, median)\n\n"
        + md_table(["stage", "time", "share"], stages) + "\n")
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
