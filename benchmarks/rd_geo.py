"""Rate-distortion on real rasters: a 16-bit elevation model and an RGB satellite image, against
JPEG 2000 and JPEG XL, each coding 256-px chunks independently (as a tiled store does).

    pip download --no-deps cartopy==0.26.0 -d /tmp/cartopy
    unzip -j /tmp/cartopy/cartopy-*.whl 'cartopy/data/raster/sample/*' -d /tmp/modis
    python benchmarks/rd_geo.py --modis /tmp/modis/Miriam.A2012270.2050.2km.jpg   # writes benchmarks/rd_geo.md

* 16-bit: ``jacksboro_fault_dem.npz`` from matplotlib's sample data: a USGS elevation model of the
  Jacksboro fault (Tennessee), 403 x 344 px at 3 arc-seconds, 236-1076 m, written as a uint16
  GeoTIFF in EPSG:4326 from its bounds.
* RGB: ``Miriam.A2012270.2050.2km.jpg`` from cartopy's wheel (``cartopy/data/raster/sample``): a
  NASA MODIS true-colour image of hurricane Miriam (2012-09-26, 2 km per pixel), with its world
  file's transform. It was JPEG-compressed at the source, so its finest texture is JPEG's.

cps-tiles converts each raster the way a user would (``cps-tiles convert``, level 0 only) at
qualities 1-8; its bytes are the latent chunks of the store (the per-chunk bitstreams). PSNR is
against the band's range (the 16-bit raster: max - min of the data; 8-bit: 255); the 16-bit table
also gives the mean absolute error in metres. JPEG 2000 (OpenJPEG) and JPEG XL (libjxl, effort 7)
come from imagecodecs and code the same raw values (uint16 or uint8).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, dir_bytes, git_rev, machine, md_table  # noqa: E402
from rd_kodak import bd_rate, per_chunk  # noqa: E402

QUALITIES = [1, 2, 3, 4, 5, 6, 7, 8]


def dem_geotiff(path: Path) -> np.ndarray:
    import matplotlib.cbook
    import rasterio
    from rasterio.transform import from_origin

    d = matplotlib.cbook.get_sample_data("jacksboro_fault_dem.npz")
    elevation = d["elevation"].astype(np.uint16)
    top = max(float(d["ymin"]), float(d["ymax"]))  # the file names its top edge "ymin"
    with rasterio.open(path, "w", driver="GTiff", height=elevation.shape[0], width=elevation.shape[1], count=1,
                       dtype="uint16", crs="EPSG:4326",
                       transform=from_origin(float(d["xmin"]), top, float(d["dx"]), float(d["dy"]))) as ds:
        ds.write(elevation[None])
    return elevation[:, :, None]


def modis_geotiff(jpg: Path, path: Path) -> np.ndarray:
    import pyvips
    import rasterio
    from rasterio.transform import Affine

    pixels = pyvips.Image.new_from_file(str(jpg)).numpy()[:, :, :3]
    world = [float(v) for v in jpg.with_suffix(".README.txt").read_text().split("World file contents:")[1].split()[:6]] \
        if jpg.with_suffix(".README.txt").exists() else None
    a, d, b, e, c, f = world  # world file order; c, f name the centre of the top-left pixel
    transform = Affine(a, b, c - a / 2 - b / 2, d, e, f - d / 2 - e / 2)
    with rasterio.open(path, "w", driver="GTiff", height=pixels.shape[0], width=pixels.shape[1], count=3,
                       dtype="uint8", crs="EPSG:4326", transform=transform) as ds:
        ds.write(np.moveaxis(pixels, 2, 0))
    return pixels


def quality(decoded: np.ndarray, source: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) against the data's range over all bands, and mean absolute error (source units)."""
    span = float(source.max()) - float(source.min()) if source.dtype != np.uint8 else 255.0
    diff = decoded.astype(np.float64) - source
    return 10 * np.log10(span**2 / np.mean(diff**2)), float(np.abs(diff).mean())


def run(name: str, tif: Path, pixels: np.ndarray, tmp: Path, settings: dict) -> tuple[list, dict]:
    import imagecodecs as ic

    import cps_tiles

    curves, rows = {}, []
    n = pixels.shape[0] * pixels.shape[1]
    cps = {"bpp": [], "psnr": []}
    for q in QUALITIES:
        store = tmp / f"{name}-{q}.zarr"
        img = cps_tiles.convert(tif, store, quality=q, levels=1, progress=False, overwrite=True)
        decoded = np.asarray(img)
        latent = sum(dir_bytes(p) for p in store.rglob("latent") if p.is_dir())
        p, mae = quality(decoded, pixels)
        cps["bpp"].append(8 * latent / n)
        cps["psnr"].append(p)
        rows.append(["cps-tiles", f"quality {q}", f"{8 * latent / n:.4f}", f"{p:.2f}", f"{mae:.2f}"])
    curves["cps-tiles"] = cps
    codecs = {"JPEG 2000": (settings["j2k"], lambda a, q: ic.jpeg2k_encode(a, level=q), ic.jpeg2k_decode),
              "JPEG XL": (settings["jxl"], lambda a, q: ic.jpegxl_encode(a, distance=q, effort=7), ic.jpegxl_decode)}
    for codec, (levels, enc, dec) in codecs.items():
        c = {"bpp": [], "psnr": []}
        source = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
        for q in levels:
            nbytes, out = per_chunk(enc, dec, source, q, 256)
            p, mae = quality(out.reshape(pixels.shape), pixels)
            c["bpp"].append(8 * nbytes / n)
            c["psnr"].append(p)
            rows.append([codec, str(q), f"{8 * nbytes / n:.4f}", f"{p:.2f}", f"{mae:.2f}"])
        curves[codec] = c
    return rows, curves


def bd_line(curves: dict) -> str:
    cells = []
    for ref in ("JPEG 2000", "JPEG XL"):
        bd = bd_rate(curves[ref], curves["cps-tiles"])
        cells.append(f"{ref}: " + ("no PSNR overlap" if bd is None else f"{bd:+.1f}%"))
    return "BD-rate of cps-tiles against " + "; ".join(cells) + "."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modis", type=Path, required=True, help="Miriam.A2012270.2050.2km.jpg from cartopy's wheel")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "rd_geo.md")
    a = p.parse_args()
    header = ["codec", "setting", "bits per pixel", "PSNR (dB of range)", "mean abs error"]
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dem = dem_geotiff(tmp / "dem.tif")
        rows, curves = run("dem", tmp / "dem.tif", dem, tmp,
                           {"j2k": [70, 75, 80, 85, 90, 95, 100], "jxl": [1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02]})
        sections.append(f"## 16-bit elevation model (403 x 344, uint16, metres)\n\n{bd_line(curves)}\n\n"
                        + md_table(header, rows))
        rgb = modis_geotiff(a.modis, tmp / "modis.tif")
        rows, curves = run("modis", tmp / "modis.tif", rgb, tmp,
                           {"j2k": [25, 28, 31, 34, 37, 40, 43], "jxl": [8.0, 5.0, 3.5, 2.5, 1.8, 1.2, 0.8]})
        sections.append(f"## RGB satellite image ({rgb.shape[1]} x {rgb.shape[0]}, MODIS true colour)\n\n"
                        f"{bd_line(curves)}\n\n" + md_table(header, rows))
    text = ("# Rate-distortion on real rasters, per 256-px chunk\n\n"
            f"Command: `python benchmarks/rd_geo.py --modis Miriam.A2012270.2050.2km.jpg` (commit {git_rev()}); "
            f"machine: {machine()}. Sources and method: the script's docstring. Bits per pixel count every band "
            "(per pixel, not per sample); errors are over all bands.\n\n" + "\n\n".join(sections) + "\n")
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
