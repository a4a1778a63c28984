"""The ``cps-tiles`` command line. Every failure prints one line on stderr and exits non-zero."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from . import DEFAULT_CHUNK, DEFAULT_QUALITY, DEFAULT_TILE, __version__
from .server import DEFAULT_CACHE_MB, DEFAULT_MAX_AREA

STORE_HELP = "store: a path, a .zip file, or a URL (file://, http(s)://, s3://, gs://, ...)"

#: Largest whole-image decode to a flat file (bytes of pixels); bigger images go through ``export``.
DECODE_MAX_BYTES = 4 * 2**30


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"region must be X,Y,W,H in pixels, got {text!r}") from None
    if min(x, y) < 0 or min(w, h) < 1:
        raise argparse.ArgumentTypeError(f"region needs X,Y >= 0 and W,H >= 1, got {text!r}")
    return x, y, w, h


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def cmd_convert(a: argparse.Namespace) -> None:
    import cps_tiles
    from cps_tiles.store.raster import CPSRaster

    img = cps_tiles.convert(a.src, a.dst, quality=a.quality, chunk=a.chunk, tile=a.tile, shard=a.shard,
                            levels=a.levels, overwrite=a.overwrite, resume=a.resume, progress=not a.quiet,
                            codec=a.codec, page=a.page, scheduler=a.scheduler, device=a.device,
                            precision=a.precision, band_groups=a.band_groups, band_range=a.band_range)
    if isinstance(img, CPSRaster):
        worst = min(e["psnr_db"] for e in img.meta.errors)
        print(f"{a.dst}: {img.shape[1]}x{img.shape[0]}x{img.shape[2]} {img.meta.dtype}, {len(img.meta.groups)} band "
              f"groups, lowest band PSNR {worst:.2f} dB (see cps-tiles info)")
        return
    s = store_summary(img)
    print(f"{a.dst}: {s['width']}x{s['height']}x{s['bands']}, {s['bpp']:.3f} bpp, ratio {s['ratio']:.1f}:1")


def cmd_decode(a: argparse.Namespace) -> None:
    import numpy as np
    import pyvips

    import cps_tiles

    suffix = Path(a.out).suffix.lower()
    if suffix not in (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".webp"):
        raise ValueError(f"output must end in .png, .tif, .jpg or .webp, got {a.out!r}")
    img = cps_tiles.open(a.store, on_error="fill" if a.salvage else "raise", precision=a.precision)
    if a.region:
        x, y, w, h = a.region
        if x >= img.shape[1] or y >= img.shape[0]:
            raise ValueError(f"region starts outside the {img.shape[1]}x{img.shape[0]} image")
        pixels = img[y : y + h, x : x + w]
    else:
        h, w, c = img.shape
        if h * w * c > DECODE_MAX_BYTES:
            raise ValueError(f"the whole {w}x{h} image needs {h * w * c / 2**30:.1f} GiB in memory; decode a "
                             "--region, or write a tiled pyramidal TIFF with `cps-tiles export`")
        pixels = np.asarray(img)
    if img.dtype != np.uint8 or pixels.shape[2] not in (1, 3, 4):  # a multi-band store: its own values
        if suffix not in (".tif", ".tiff"):
            raise ValueError(f"a {pixels.shape[2]}-band {img.dtype} store decodes to .tif only, got {a.out!r}")
        import tifffile

        tifffile.imwrite(a.out, pixels, photometric="minisblack", planarconfig="contig")
        return
    im = pyvips.Image.new_from_array(np.ascontiguousarray(pixels))
    im = im.copy(interpretation="b-w" if pixels.shape[2] == 1 else "srgb")
    im.write_to_file(a.out, **({"Q": 95} if suffix in (".jpg", ".jpeg") else {}))
    for key in sorted(getattr(img, "damaged", ())):
        print(f"cps-tiles: warning: {key} unreadable, filled with 0", file=sys.stderr)


def store_summary(img) -> dict:
    from .store.layout import LATENT, level_path, store_size

    m = img.meta
    out = {"store": img.path, "width": m.width, "height": m.height, "bands": m.bands, "quality": m.quality,
           "levels": img.codec.model.config.levels, "codec": m.codec, "codec_sha256": m.sha256, "chunk": m.chunk,
           "shard": m.shard, "complete": m.complete, "source": m.source}
    total, latent = store_size(img.location.store), store_size(img.location.store, LATENT + "/")
    if total is not None and latent is not None:
        raw = m.height * m.width * m.bands
        out.update(bytes=total[0], objects=total[1], latent_bytes=latent[0], bpp=8 * total[0] / (m.height * m.width),
                   ratio=raw / total[0])
    out["levels_detail"] = []
    for level in img.levels:
        lm = level.meta
        size = store_size(img.location.store, level_path(level.level) + "/") if level.level else None
        out["levels_detail"].append({"level": level.level, "width": lm.width, "height": lm.height,
                                     "downsample": 2**level.level, "chunks": len(level.chunk_indices()),
                                     "shard": lm.shard, "bytes": None if size is None else size[0]})
    if total is not None:
        above = sum(d["bytes"] or 0 for d in out["levels_detail"][1:])
        out["levels_detail"][0]["bytes"] = total[0] - above
        out["pyramid_share"] = above / total[0]
    return out


def cmd_info(a: argparse.Namespace) -> None:
    from .errors import StoreError
    from .store.layout import PROGRESS, StoreMeta, open_group_checked
    from .store.location import open_location
    from .store.raster import is_raster
    from .store.reader import CPSImage

    if is_raster(a.store):
        return raster_info(a)
    try:
        img = CPSImage(a.store)
        s = store_summary(img)
    except StoreError as exc:
        if "unfinished" not in str(exc):
            raise
        group, _ = open_group_checked(open_location(a.store))
        meta = StoreMeta.read(group, a.store)
        flags = group[PROGRESS][:]
        s = {"store": a.store, "width": meta.width, "height": meta.height, "bands": meta.bands,
             "quality": meta.quality, "codec": meta.codec, "complete": False,
             "tiles_done": int(flags.sum()), "tiles_total": int(flags.size)}
    if a.json:
        print(json.dumps(s, indent=2))
        return
    print(f"{s['store']}: {s['width']} x {s['height']} pixels, {s['bands']} band(s), uint8")
    print(f"  codec     {s['codec']}, quality {s['quality']} (this codec's levels: 1 to {s.get('levels', 8)})")
    if not s["complete"]:
        print(f"  status    UNFINISHED: {s['tiles_done']}/{s['tiles_total']} tiles written; "
              "finish with convert --resume")
        return
    print(f"  chunk     {s['chunk']} px" + (f", shards of {s['shard']} px" if s["shard"] else ""))
    if "bytes" in s:
        print(f"  size      {s['bytes']:,} bytes in {s['objects']:,} objects, {s['bpp']:.4f} bits per pixel, "
              f"ratio {s['ratio']:.1f}:1 vs raw")
    else:
        print("  size      unknown (this store does not list its objects)")
    if len(s["levels_detail"]) > 1:
        share = f", {100 * s['pyramid_share']:.1f}% of the store above level 0" if "pyramid_share" in s else ""
        print(f"  levels    {len(s['levels_detail'])}{share}")
        for d in s["levels_detail"]:
            size = "" if d["bytes"] is None else f", {d['bytes']:,} bytes"
            print(f"    {d['level']:>2}  {d['width']} x {d['height']} (1/{d['downsample']}), {d['chunks']} chunks{size}")
    _print_geo(img.geo, s["height"], s["width"])


def _print_geo(geo, height: int, width: int) -> None:
    if geo is None:
        return
    crs = geo.crs_code or (geo.crs_wkt.split('"')[1] if geo.crs_wkt and '"' in geo.crs_wkt else "none")
    xmin, ymin, xmax, ymax = geo.bounds(height, width)
    rx, ry = geo.resolution()
    print(f"  crs       {crs}")
    print(f"  bounds    x {xmin:.10g} .. {xmax:.10g}, y {ymin:.10g} .. {ymax:.10g}")
    print(f"  pixel     {rx:.10g} x {ry:.10g} (CRS units)" + ("" if geo.nodata is None else f", nodata {geo.nodata:g}"))


def raster_info(a: argparse.Namespace) -> None:
    """``info`` of a multi-band store: bands, groups and ranges, georeferencing, measured error."""
    import numpy as np

    from .store.layout import store_size
    from .store.raster import CPSRaster

    img = CPSRaster(a.store)
    m = img.meta
    total = store_size(img.location.store)
    if a.json:
        print(json.dumps({"store": a.store, **vars(m),
                          "bytes": None if total is None else total[0]}, indent=2))
        return
    print(f"{a.store}: {m.width} x {m.height} pixels, {m.bands} band(s), {m.dtype}, {len(m.levels)} level(s)")
    codec = img.group_images[0].meta
    print(f"  codec     {codec.codec}, quality {codec.quality}; band groups {[[b + 1 for b in g] for g in m.groups]}")
    if total is not None:
        print(f"  size      {total[0]:,} bytes, {8 * total[0] / (m.height * m.width * m.bands):.4f} bits per band sample, "
              f"ratio {m.height * m.width * m.bands * np.dtype(m.dtype).itemsize / total[0]:.1f}:1 vs raw")
    _print_geo(img.geo, m.height, m.width)
    print("  error     per band, decoded against the source on sampled windows at convert time:")
    for e, (lo, hi) in zip(m.errors, m.ranges):
        print(f"    band {e['band']:>2}  range {lo:g}..{hi:g}  PSNR {e['psnr_db']:.2f} dB of the range, "
              f"mean abs {e['mae']:g}, max abs {e['max_abs']:g} ({e['pixels']:,} px)")


def cmd_export(a: argparse.Namespace) -> None:
    import cps_tiles

    from .pipeline.export import export_tiff
    from .store.raster import CPSRaster

    img = cps_tiles.open(a.store, precision=a.precision)
    if a.cog or isinstance(img, CPSRaster):
        from .pipeline.export import export_cog

        count = export_cog(img, a.out, compression=a.compression)
        print(f"{a.out}: {img.shape[1]}x{img.shape[0]}x{img.shape[2]}, Cloud Optimized GeoTIFF, {count} levels "
              "(the store's own)")
        return
    levels = [(_level_reader(level, a.scheduler), *level.shape[:2]) for level in img.levels]
    count = export_tiff(levels, img.shape[2], a.out, compression=a.compression)
    print(f"{a.out}: {img.shape[1]}x{img.shape[0]}, {count} pyramid levels (the store's own)")


def _level_reader(level, scheduler: str):
    """Rows ``y0:y1`` of a level: in process with its chunk cache, or as dask tasks on ``scheduler``."""
    if scheduler == "local":
        return lambda y0, y1: level[y0:y1, :]
    pixels = level.to_dask()
    return lambda y0, y1: _compute(pixels[y0:y1], scheduler)


def _compute(arr, scheduler: str):
    if "://" in scheduler:
        from distributed import Client

        with Client(scheduler) as client:
            return client.compute(arr).result()
    return arr.compute(scheduler=scheduler)


def cmd_zip(a: argparse.Namespace) -> None:
    from .store.location import pack_zip
    from .store.reader import CPSImage

    CPSImage(a.store, cache_mb=0)  # a complete store with the matching codec, or a one-line error
    count = pack_zip(a.store, a.out, overwrite=a.overwrite)
    print(f"{a.out}: {count} objects of {a.store} in one zip file")


def cmd_reshard(a: argparse.Namespace) -> None:
    from .store.reshard import reshard

    count = reshard(a.store, a.out, a.shard, overwrite=a.overwrite)
    kind = f"shards of {a.shard} px" if a.shard else "one object per chunk"
    print(f"{a.out}: latent of {a.store} repacked into {count} objects ({kind}), no chunk re-encoded")


def cmd_pyramid(a: argparse.Namespace) -> None:
    from .pipeline.convert import add_levels

    added = add_levels(a.store, levels=a.levels, scheduler=a.scheduler)
    if added:
        print(f"{a.store}: {added} pyramid level(s) added, coded from the decoded level 0 (a conversion codes "
              "its levels from the source instead)")
    else:
        print(f"{a.store}: already has its pyramid levels; nothing to do")


def cmd_verify(a: argparse.Namespace) -> None:
    from .store.verify import verify_store

    report = verify_store(a.store)
    for problem in report.problems:
        print(f"  {problem}")
    print(report.summary())
    if not report.ok:
        raise SystemExit(1)


#: commands whose module parses its own options: command -> module
TRAINERS = {"train": "training.train", "train-context": "training.context", "quantize-context": "training.quantize"}


def cmd_serve(a: argparse.Namespace) -> None:
    from .server.app import ServerConfig, find_stores, serve

    if a.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"cps-tiles: warning: serving on {a.host}: reachable from other machines", file=sys.stderr)
    config = ServerConfig(workers=a.workers, cache_mb=a.cache_mb, max_area=a.max_pixels, precision=a.precision)
    serve(find_stores(a.stores), a.host, a.port, config, verbose=a.verbose)  # until Ctrl-C (uvicorn stops cleanly)


def cmd_train(a: argparse.Namespace) -> None:
    import importlib

    importlib.import_module(f".{TRAINERS[a.command]}", __package__).main(a.args, parser=_Parser)


def cmd_demo(a: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(Path(a.dir), quality=a.quality)


def _precision_arg(parser: argparse.ArgumentParser, what: str) -> None:
    from .transforms.precision import PRECISIONS

    parser.add_argument("--precision", default=PRECISIONS[0], choices=PRECISIONS, help=what)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (``--help`` still prints the usage)."""

    def error(self, message: str):
        print(f"cps-tiles: error: {self.prog.removeprefix('cps-tiles').strip() or 'usage'}: {message} "
              f"(see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cps-tiles", description="Learned compression of gigapixel images "
                                "with Continuous Patch Stitching (exact tiles, Zarr storage).")
    p.add_argument("--version", action="version", version=f"cps-tiles {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="compress an image file into a CPS Zarr store")
    c.add_argument("src", help="input image (TIFF/BigTIFF/SVS/PNG/JPEG/WebP, 8-bit gray, RGB or RGBA; uint16 or "
                               "multi-band rasters and GeoTIFFs through rasterio: the geo extra)")
    c.add_argument("dst", help="output store: a directory (out.zarr), a single file (out.zarr.zip), or a URL")
    c.add_argument("--quality", type=float, default=DEFAULT_QUALITY,
                   help="1 (smallest) .. 10 (best), fractions allowed (the default codec's levels)")
    c.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="storage chunk in pixels, multiple of 64")
    c.add_argument("--tile", type=int, default=DEFAULT_TILE, help="compute tile in pixels, multiple of --chunk")
    c.add_argument("--shard", type=int, default=None,
                   help="pixels per shard object, a multiple of --tile; 0: one object per chunk "
                        "(default: 4096 for images larger than that, else 0)")
    c.add_argument("--levels", type=int, default=None,
                   help="pyramid levels to write, level 0 included (default: until the image fits one chunk; 1: none)")
    c.add_argument("--page", type=int, default=0, help="page of a multi-page TIFF")
    c.add_argument("--band-groups", default=None,
                   help="multi-band rasters: group sizes in band order, e.g. 3,2,1 (default: threes, then ones)")
    c.add_argument("--band-range", default=None,
                   help="multi-band rasters: LO,HI mapped to the codec's range for every band, or LO,HI;LO,HI;... "
                        "per band (default: each band's min and max)")
    c.add_argument("--codec", default=None,
                   help="trained codec name or directory (default: the bundled default codec; "
                        "cps-n96m160-r9 decodes about 1.7x faster, qualities 1-8, 5%% more bits)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing store")
    c.add_argument("--resume", action="store_true", help="finish an interrupted conversion of the same source")
    c.add_argument("--scheduler", default="threads", help="threads (default), processes, sync, or tcp://HOST:PORT")
    c.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="where the encoder runs")
    _precision_arg(c, "encoder arithmetic; bfloat16 is about 2x faster on CPUs with AMX/AVX512-BF16")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_convert)

    d = sub.add_parser("decode", help="decode a store (or a region of it) to PNG/TIFF/JPEG")
    d.add_argument("store", help=STORE_HELP)
    d.add_argument("out", help="output image: .png, .tif, .jpg or .webp")
    d.add_argument("--region", type=_region, help="X,Y,W,H in pixels (clipped to the image)")
    _precision_arg(d, "decoder arithmetic")
    d.add_argument("--salvage", action="store_true",
                   help="decode around missing/damaged chunks, filling their pixels with 0 (listed on stderr)")
    d.set_defaults(func=cmd_decode)

    i = sub.add_parser("info", help="size, quality, bits per pixel and compression ratio of a store")
    i.add_argument("store", help=STORE_HELP)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("export", help="write a tiled pyramidal BigTIFF for existing viewers")
    e.add_argument("store", help=STORE_HELP)
    e.add_argument("out", help="output .tif")
    e.add_argument("--compression", default="deflate", help="TIFF tile compression (deflate, zstd, lzw, jpeg, webp, none)")
    e.add_argument("--cog", action="store_true",
                   help="a Cloud Optimized GeoTIFF (GDAL's COG driver) with the CRS, transform and nodata")
    _precision_arg(e, "decoder arithmetic")
    e.add_argument("--scheduler", default="local",
                   help="local (in-process, default), threads, processes, or tcp://HOST:PORT to decode on a cluster")
    e.set_defaults(func=cmd_export)

    z = sub.add_parser("zip", help="pack a finished store into one .zip file (opened, read and verified as it is)")
    z.add_argument("store", help=STORE_HELP)
    z.add_argument("out", help="output file, e.g. slide.zarr.zip")
    z.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    z.set_defaults(func=cmd_zip)

    r = sub.add_parser("reshard", help="copy a store with its latent repacked into shards (no re-encoding)")
    r.add_argument("store", help=STORE_HELP)
    r.add_argument("out", help="output store (path or URL)")
    r.add_argument("--shard", type=int, default=4096, help="pixels per shard, a multiple of the chunk; 0: unsharded")
    r.add_argument("--overwrite", action="store_true", help="replace a store at the output")
    r.set_defaults(func=cmd_reshard)

    y = sub.add_parser("pyramid", help="add the pyramid levels a store lacks (from its decoded level 0)")
    y.add_argument("store", help=STORE_HELP)
    y.add_argument("--levels", type=int, default=None, help="levels in all, level 0 included (default: all)")
    y.add_argument("--scheduler", default="threads", help="threads (default), processes, sync, or tcp://HOST:PORT")
    y.set_defaults(func=cmd_pyramid)

    v = sub.add_parser("verify", help="check metadata and every chunk of a store; exit 1 on damage")
    v.add_argument("store", help=STORE_HELP)
    v.set_defaults(func=cmd_verify)

    s = sub.add_parser("serve", help="serve stores as Deep Zoom and IIIF tiles, with a pan/zoom viewer")
    s.add_argument("stores", nargs="+", help="stores (paths or URLs), or directories of stores")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    s.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1,
                   help="decoding threads (default: one per core)")
    s.add_argument("--cache-mb", type=float, default=DEFAULT_CACHE_MB, help="decoded-chunk cache for all stores together")
    s.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_AREA,
                   help="largest output one request may ask for, in pixels (IIIF maxArea)")
    _precision_arg(s, "decoder arithmetic; bfloat16 speeds up synthesis on CPUs with AMX/AVX512-BF16, a small "
                      "share of a cold tile's time (docs/serve.md)")
    s.add_argument("--verbose", action="store_true", help="log one line per request")
    s.set_defaults(func=cmd_serve)

    # listed for --help only: main() hands "train ..." to the trainer's own parser before this one runs
    sub.add_parser("train", help="train a codec (see cps-tiles train --help)", add_help=False)
    sub.add_parser("train-context", help="train a codec's channel context on its fixed transforms "
                   "(see cps-tiles train-context --help)", add_help=False)
    sub.add_parser("quantize-context", help="make a codec's entropy networks exact integer ones "
                   "(see cps-tiles quantize-context --help)", add_help=False)

    m = sub.add_parser("demo", help="convert the bundled sample mosaic and report rate and quality")
    m.add_argument("dir", nargs="?", default="cps-demo", help="working directory for the demo files")
    m.add_argument("--quality", type=float, default=DEFAULT_QUALITY)
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in TRAINERS:
        # A trainer parses its own options; argparse.REMAINDER would refuse a leading "--help".
        args = argparse.Namespace(func=cmd_train, command=argv[0], args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # restored on return: main() may run inside a longer-lived process
        warnings.showwarning = _one_line_warning
        return _run(args)


def _one_line_warning(message, *_, **__) -> None:
    """Warnings too are one line on the CLI, not a source location and code."""
    print(f"cps-tiles: warning: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    """Run a parsed command: 0, or a one-line error and a non-zero status."""
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("cps-tiles: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # the CLI promise: one line, no traceback
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"cps-tiles: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
