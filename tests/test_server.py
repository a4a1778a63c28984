"""``cps-tiles serve``: Deep Zoom and IIIF Image API 3.0 from a live server on loopback, checked
against the stores' own decodes, the published IIIF validator, and headless Chromium."""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import http_server, logged, tile_server

import cps_tiles
from cps_tiles.errors import RequestError
from cps_tiles.server import deepzoom, iiif
from cps_tiles.server.render import best_level
from cps_tiles.store.layout import level_shapes

# -- request parsing and geometry (no server) -------------------------------------------------------


def test_iiif_regions():
    assert iiif.parse_region("full", 300, 200) == (0, 0, 300, 200)
    assert iiif.parse_region("square", 300, 200) == (50, 0, 200, 200)
    assert iiif.parse_region("square", 200, 301) == (0, 50, 200, 200)
    assert iiif.parse_region("10,20,30,40", 300, 200) == (10, 20, 30, 40)
    assert iiif.parse_region("250,150,100,100", 300, 200) == (250, 150, 50, 50)  # clipped to the image
    assert iiif.parse_region("pct:10,20,50,50", 300, 200) == (30, 40, 150, 100)
    # adjacent percentage regions meet exactly
    a, b = iiif.parse_region("pct:0,0,33.3,100", 301, 10), iiif.parse_region("pct:33.3,0,33.3,100", 301, 10)
    assert a[0] + a[2] == b[0]
    for bad in ("0,0,0,10", "300,0,10,10", "0,200,5,5", "1,2,3", "-1,0,5,5", "pct:x", "squared", ""):
        with pytest.raises(RequestError):
            iiif.parse_region(bad, 300, 200)


def test_iiif_sizes():
    area = 10**6
    assert iiif.parse_size("max", 300, 200, area) == (300, 200)
    assert iiif.parse_size("max", 3000, 2000, area) == (1224, 816)  # fitted into maxArea
    assert iiif.parse_size("150,", 300, 200, area) == (150, 100)
    assert iiif.parse_size(",100", 300, 200, area) == (150, 100)
    assert iiif.parse_size("pct:50", 300, 200, area) == (150, 100)
    assert iiif.parse_size("100,100", 300, 200, area) == (100, 100)
    assert iiif.parse_size("!100,100", 300, 200, area) == (100, 67)
    assert iiif.parse_size("^600,", 300, 200, area) == (600, 400)
    assert iiif.parse_size("^pct:200", 300, 200, area) == (600, 400)
    assert iiif.parse_size("^!900,300", 300, 200, area) == (450, 300)
    for bad in ("600,", ",300", "pct:101", "400,100", "!900,600", "0,", "pct:0", ",", "!100,", "big", "^2000,2000"):
        with pytest.raises(RequestError):
            iiif.parse_size(bad, 300, 200, area)


def test_iiif_rotation_and_request():
    assert iiif.parse_rotation("0") == (False, 0)
    assert iiif.parse_rotation("!90") == (True, 90)
    assert iiif.parse_rotation("22.5") == (False, 22.5)
    assert iiif.parse_rotation("360") == (False, 0)
    for bad in ("-90", "361", "x", "!", "9O"):
        with pytest.raises(RequestError):
            iiif.parse_rotation(bad)
    req = iiif.parse_request("0,0,100,100", "50,", "!180", "gray.png", 300, 200, 10**6)
    assert (req.region, req.size, req.mirror, req.rotation, req.quality, req.format) == \
        ((0, 0, 100, 100), (50, 50), True, 180, "gray", "png")
    for qf in ("default", "default.bmp", "sepia.jpg", ".jpg"):
        with pytest.raises(RequestError):
            iiif.parse_request("full", "max", "0", qf, 300, 200, 10**6)


@pytest.mark.parametrize("width,height", [(1, 1), (17, 300), (300, 17), (2268, 1512), (1000, 1000), (257, 4097)])
def test_deep_zoom_levels_are_the_stored_levels(width, height):
    """Every Deep Zoom level is tiled without gap or overlap, and DZ level top-k has the size of
    stored level k, its tiles aligned to 256-px chunks."""
    top = deepzoom.top_level(width, height)
    stored = level_shapes(height, width, 256)
    for level in range(top + 1):
        s = 2 ** (top - level)
        lw, lh = -(-width // s), -(-height // s)
        covered = np.zeros((lh, lw), np.int32)
        for row in range(-(-lh // 256)):
            for col in range(-(-lw // 256)):
                (x, y, w, h), (tw, th) = deepzoom.tile_region(width, height, level, col, row)
                covered[row * 256 : row * 256 + th, col * 256 : col * 256 + tw] += 1
                assert (x, y) == (col * 256 * s, row * 256 * s) and x + w <= width and y + h <= height
        assert (covered == 1).all()
        k = top - level
        if k < len(stored):
            assert stored[k] == (lh, lw)
            assert best_level(stored, *deepzoom.tile_region(width, height, level, 0, 0)) == k
    for bad in ((top + 1, 0, 0), (-1, 0, 0), (top, 99, 0), (top, 0, 99)):
        with pytest.raises(RequestError):
            deepzoom.tile_region(width, height, *bad)


def test_best_level_is_the_coarsest_that_covers_the_output():
    shapes = level_shapes(1000, 1000, 256)  # 1000, 500, 250
    assert best_level(shapes, (0, 0, 1000, 1000), (1000, 1000)) == 0
    assert best_level(shapes, (0, 0, 1000, 1000), (501, 501)) == 0
    assert best_level(shapes, (0, 0, 1000, 1000), (500, 500)) == 1
    assert best_level(shapes, (0, 0, 1000, 1000), (100, 100)) == 2
    assert best_level(shapes, (3, 3, 8, 8), (2, 2)) == 2


def test_a_request_over_the_decode_bound_says_why():
    from types import SimpleNamespace

    from cps_tiles.server.render import read_scaled

    only_level_0 = [SimpleNamespace(shape=(30000, 40000, 3))]
    with pytest.raises(RequestError, match="needs 1,200,000,000 decoded pixels at level 0.*cps-tiles pyramid"):
        read_scaled(only_level_0, (0, 0, 40000, 30000), (400, 300), 4 * 4096 * 4096)


def test_concurrent_readers_of_one_chunk_decode_it_once():
    """What docs/serve.md promises: a second request for a chunk being decoded waits for it."""
    import threading
    import time

    from cps_tiles.store.reader import LRUCache

    cache, calls = LRUCache(10**6), []

    def make():
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return np.ones(4)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: cache.get("chunk", make), range(8)))
    assert len(calls) == 1 and all(r is results[0] for r in results)


# -- a live server ----------------------------------------------------------------------------------


def _photo() -> np.ndarray:
    """A real photograph that ships in a package: matplotlib's Grace Hopper portrait, 512 x 600."""
    import matplotlib.cbook

    return np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))


def _squares() -> np.ndarray:
    """The IIIF validator's test image: 10 x 10 squares of 100 px in its published colours."""
    from iiif_validator.validator import ValidationInfo

    colours = ValidationInfo().colorInfo
    im = np.zeros((1000, 1000, 3), np.uint8)
    for x in range(10):
        for y in range(10):
            im[y * 100 : (y + 1) * 100, x * 100 : (x + 1) * 100] = colours[x][y]
    return im


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import pyvips

    root = tmp_path_factory.mktemp("served")
    # a TIFF with a resolution (4000 px/mm: 0.25 um pixels), so the viewer shows a scale bar
    pyvips.Image.new_from_array(_photo()).tiffsave(str(root / "grace.tif"), xres=4000.0, yres=4000.0, resunit="cm")
    cps_tiles.convert(root / "grace.tif", root / "grace.zarr", quality=5, progress=False)
    (root / "grace.tif").unlink()
    cps_tiles.convert(_squares(), root / "squares.zarr", quality=8, progress=False)
    shutil.copytree(root / "grace.zarr", root / "damaged.zarr")
    chunk = root / "damaged.zarr" / "latent" / "c" / "0" / "1" / "1"
    chunk.write_bytes(chunk.read_bytes()[:40])
    with tile_server(str(root), "--verbose", "--workers", "2") as (url, log):
        yield url, root, log


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=120) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def pixels_of(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def test_pages_list_and_view_the_stores(served):
    url, _, _ = served
    status, headers, body = get(url)
    assert status == 200 and all(f"/view/{n}" in body.decode() for n in ("grace", "squares", "damaged"))
    status, _, body = get(url + "view/grace")
    assert status == 200 and b"/static/viewer.js" in body and b'data-name="grace"' in body
    status, headers, body = get(url + "static/viewer.js")
    assert status == 200 and "javascript" in headers["content-type"]
    status, _, body = get(url + "grace.json")
    meta = json.loads(body)
    assert (meta["width"], meta["height"], meta["levels"]) == (512, 600, [[512, 600], [256, 300], [128, 150]])


def test_deep_zoom_tiles_are_the_stored_levels_pixels(served):
    url, root, _ = served
    img = cps_tiles.open(root / "grace.zarr")
    status, _, body = get(url + "grace.dzi")
    assert status == 200 and b'TileSize="256"' in body and b'Overlap="0"' in body and b'Width="512" Height="600"' in body
    top = deepzoom.top_level(512, 600)
    for k, level in enumerate(img.levels):
        whole = np.asarray(level)
        for col, row in ((0, 0), (1, 1), (1, 2)):
            if col * 256 >= whole.shape[1] or row * 256 >= whole.shape[0]:
                continue
            status, headers, body = get(url + f"grace_files/{top - k}/{col}_{row}.png")
            assert status == 200 and headers["content-type"] == "image/png"
            assert np.array_equal(pixels_of(body), whole[row * 256 : (row + 1) * 256, col * 256 : (col + 1) * 256])
    # Deep Zoom levels below the top stored level: resized from it, the right size, close to it
    status, _, body = get(url + f"grace_files/{top - 3}/0_0.png")
    small = pixels_of(body)
    assert small.shape == (75, 64, 3)
    reference = np.asarray(Image.fromarray(np.asarray(img.levels[2])).resize((64, 75), Image.Resampling.BOX))
    assert np.abs(small.astype(int) - reference).mean() < 3
    status, headers, body = get(url + f"grace_files/{top}/0_0.webp")
    assert status == 200 and headers["content-type"] == "image/webp"


def test_iiif_info_and_tiles(served):
    url, root, _ = served
    img = cps_tiles.open(root / "grace.zarr")
    status, headers, body = get(url + "iiif/3/grace/info.json")
    info = json.loads(body)
    assert status == 200 and info["id"] == url + "iiif/3/grace" and info["type"] == "ImageService3"
    assert (info["width"], info["height"], info["profile"]) == (512, 600, "level2")
    assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 2, 4]}]
    assert info["sizes"] == [{"width": 128, "height": 150}, {"width": 256, "height": 300}, {"width": 512, "height": 600}]
    assert get(url + "iiif/3/grace/info.json", {"Accept": "application/ld+json"})[1]["content-type"].startswith(
        "application/ld+json")
    # a tile as a IIIF client computes it from info.json: the stored level's own pixels
    for k, s in enumerate(info["tiles"][0]["scaleFactors"]):
        x, y = 256 * s if 256 * s < 512 else 0, 0
        w, h = min(256 * s, 512 - x), min(256 * s, 600 - y)
        size = (-(-w // s), -(-h // s))
        status, _, body = get(url + f"iiif/3/grace/{x},{y},{w},{h}/{size[0]},/0/default.png")
        assert status == 200
        level = np.asarray(img.levels[k])
        assert np.array_equal(pixels_of(body), level[y // s : y // s + size[1], x // s : x // s + size[0]])
    # any region and size: resampled from the best level
    status, headers, body = get(url + "iiif/3/grace/pct:25,25,50,50/!100,100/90/gray.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(body)).size == (100, 85) and Image.open(io.BytesIO(body)).mode == "L"
    assert 'rel="canonical"' in headers["link"] and "/128,150,256,300/85,100/90/gray.jpg" in headers["link"]
    status, headers, _ = get(url + "iiif/3/grace")
    assert status == 200  # urllib followed the 303 to info.json


@pytest.mark.parametrize("path,reason", [
    ("grace_files/99/0_0.jpeg", "level 99 does not exist"),
    ("grace_files/10/7_0.jpeg", "outside level 10"),
    ("grace_files/10/0_0.bmp", "not served"),
    ("iiif/3/grace/0,0,0,5/max/0/default.jpg", "zero width"),
    ("iiif/3/grace/9999,0,5,5/max/0/default.jpg", "outside"),
    ("iiif/3/grace/full/max/0/default.bmp", "not supported"),
    ("iiif/3/grace/full/1000,/0/default.jpg", "larger than"),
    ("iiif/3/grace/full/^99999,99999/0/default.jpg", "limit"),
    ("iiif/3/grace/full/max/-5/default.jpg", "rotation"),
    ("iiif/3/grace/full/max/0/sepia.jpg", "quality"),
    ("iiif/3/grace/nonsense/max/0/default.jpg", "region"),
])
def test_bad_requests_get_400_with_a_one_line_reason(served, path, reason):
    url, _, _ = served
    status, _, body = get(url + path)
    text = body.decode()
    assert status == 400 and reason in text and text.count("\n") == 1, text


def test_unknown_stores_and_paths_outside_the_stores(served):
    url, root, _ = served
    host, port = url.split("//")[1].rstrip("/").split(":")
    (root / "secret.txt").write_text("secret")
    for path in ("/nope.dzi", "/iiif/3/nope/info.json", "/view/nope", "/nope_files/0/0_0.jpeg", "/../../etc/passwd",
                 "/static/../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fapp.py",
                 "/..%2fsecret.txt", "/grace.zarr/zarr.json", "/%2e%2e/secret.txt", "/iiif/3/..%2f..%2fsecret/info.json",
                 "/iiif/3/grace/..%2f..%2fsecret.txt", "/static/viewer.js/../../app.py"):
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("GET", path)  # sent as written: no client-side normalisation of ".."
        r = conn.getresponse()
        body = r.read()
        assert r.status in (400, 404), (path, r.status)
        assert b"secret" not in body.replace(b"/secret", b"") and b"root:" not in body and b"import" not in body, path
        conn.close()
    status, _, body = get(url + "iiif/3/nope/info.json")
    assert status == 404 and b"no store named 'nope'" in body


def test_a_damaged_chunk_is_a_500_naming_it_and_the_server_goes_on(served):
    url, _, log = served
    status, _, body = get(url + "damaged_files/10/1_1.png")
    assert status == 500 and b"latent/c/0/1/1" in body and b"damaged" in body
    assert logged(log, lambda line: line.startswith("cps-tiles: GET /damaged_files/10/1_1.png") and "latent/c/0/1/1" in line)
    assert get(url + "damaged_files/10/0_0.png")[0] == 500  # its halo reaches the damaged chunk
    assert get(url + "grace_files/10/1_1.png")[0] == 200


def test_caching_headers_and_cors(served):
    url, _, log = served
    status, headers, _ = get(url + "grace_files/9/0_0.jpeg")
    assert status == 200 and headers["etag"] and "max-age" in headers["cache-control"]
    assert headers["access-control-allow-origin"] == "*"
    status, headers2, body = get(url + "grace_files/9/0_0.jpeg", {"If-None-Match": headers["etag"]})
    assert status == 304 and body == b"" and headers2["etag"] == headers["etag"]
    assert get(url + "grace_files/9/0_1.jpeg")[1]["etag"] != headers["etag"]
    status, headers, _ = get(url + "iiif/3/grace/info.json", {"Origin": "http://example.org"})
    assert headers["access-control-allow-origin"] == "*"
    req = urllib.request.Request(url + "grace.dzi", method="OPTIONS",
                                 headers={"Origin": "http://example.org", "Access-Control-Request-Method": "GET"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 204 and "GET" in r.headers["access-control-allow-methods"]
    assert logged(log, lambda line: '"GET /grace_files/9/0_1.jpeg HTTP/1.1" 200' in line)  # --verbose: one line each


def test_concurrent_requests_all_get_their_own_tile(served):
    url, root, _ = served
    whole = np.asarray(cps_tiles.open(root / "squares.zarr"))
    top = deepzoom.top_level(1000, 1000)
    tiles = [(c, r) for r in range(4) for c in range(4)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda cr: get(url + f"squares_files/{top}/{cr[0]}_{cr[1]}.png"), tiles))
    for (c, r), (status, _, body) in zip(tiles, results):
        assert status == 200
        assert np.array_equal(pixels_of(body), whole[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256])


def test_iiif_validator_passes_every_level_1_and_2_test(served):
    """The published IIIF Image API validator (``iiif-validator``), run against the live server
    with its own test image, every test of compliance levels 0 to 2 for version 3.0."""
    from iiif_validator.validator import ImageAPI, TestSuite, ValidationInfo

    url, _, _ = served
    server = url.split("//")[1].rstrip("/")
    get(url + "iiif/3/squares/full/max/0/default.jpg")  # warm: the validator's client times out quickly
    tests = TestSuite(ValidationInfo()).list_tests("3.0")
    names = sorted(n for n, t in tests.items() if t["level"] <= 2)
    failed = {}
    for name in names:
        result = ImageAPI("squares", server, "iiif/3", "http", "", "3.0", debug=False)
        try:
            TestSuite(ValidationInfo()).run_test(name, result)
        except Exception as exc:
            failed[name] = repr(exc)
        if result.exception:
            failed[name] = f"{result.exception.message} (got {result.exception.got}, expected {result.exception.expected})"
    assert len(names) >= 30 and not failed, failed


def test_serve_refuses_a_missing_store_in_one_line(tmp_path):
    from conftest import cli

    result = cli("serve", tmp_path / "missing.zarr", "--port", "0")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "no such cps-tiles store" in result.stderr
    result = cli("serve", tmp_path, "--port", "0")
    assert result.returncode == 1 and "neither a store nor a directory holding any" in result.stderr
    result = cli("serve", tmp_path, "--workers", "0")
    assert result.returncode == 2 and "positive whole number" in result.stderr
    # a multi-band store is refused by name, skipped (with a warning) inside a directory
    import zarr

    from cps_tiles.store.raster import RasterMeta

    group = zarr.open_group(str(tmp_path / "ms.zarr"), mode="w")
    RasterMeta(4, 4, 5, "uint16", [[0, 1, 2], [3], [4]], [[0, 1]] * 5).write(group)
    result = cli("serve", tmp_path / "ms.zarr", "--port", "0")
    assert result.returncode == 1 and "is a multi-band store" in result.stderr
    result = cli("serve", tmp_path, "--port", "0")
    assert result.returncode == 1 and "skipping" in result.stderr and "neither a store nor" in result.stderr


# -- the viewer in a real browser ---------------------------------------------------------------------

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-10))


@pytest.mark.slow
def test_viewer_shows_the_image_in_headless_chromium(served, tmp_path):
    """Debian's Chromium loads /view/grace, waits until every visible tile is drawn, and the
    canvas shows the store's decode: at fit (level 1 drawn 1:1) and at full resolution."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package as root)")
    from playwright.sync_api import sync_playwright

    url, root, _ = served
    img = cps_tiles.open(root / "grace.zarr")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 400, "height": 300}, device_scale_factor=1)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "view/grace")
        page.wait_for_function("window.cpsViewer && window.cpsViewer.info && window.cpsViewer.complete", timeout=120_000)
        # fit: 512 x 600 in 400 x 300 is scale 0.5, so level 1 (256 x 300) is drawn 1:1 at x = 72
        # (rows 50 to 250: the buttons cover the top left, the scale bar the bottom left); tiles are
        # JPEG q90, hence not exact
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
        level1 = np.asarray(img.levels[1])
        assert psnr(shot[50:250, 72:328], level1[50:250]) > 32
        assert psnr(shot[50:250, 80:336], level1[50:250]) < 25  # a misplaced image would not pass
        (tmp_path / "fit.png").write_bytes(page.screenshot())
        # full resolution at the centre of the image: level 0 drawn 1:1
        page.evaluate("window.cpsViewer.setView(256, 300, 1)")
        page.wait_for_function("window.cpsViewer.complete", timeout=120_000)
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
        assert psnr(shot[50:250, 100:300], np.asarray(img[200:400, 156:356])) > 32
        state = page.evaluate("({errors: window.cpsViewer.errors, first: window.cpsViewer.firstTileMs})")
        assert state["errors"] == 0 and state["first"] is not None and not errors
        # the scale bar: 0.25 um pixels at scale 1 -> a bar of a round length near 120 px
        label, width = page.evaluate("[document.getElementById('scale-label').textContent, "
                                     "document.getElementById('scale-line').style.width]")
        assert label == "20 µm" and width == "80px"
        # the controls: drag pans (100 screen px = 100 image px at scale 1), the button zooms out to
        # fit, the wheel zooms in
        page.mouse.move(200, 150)
        page.mouse.down()
        page.mouse.move(100, 150, steps=5)
        page.mouse.up()
        assert page.evaluate("[window.cpsViewer.cx, window.cpsViewer.cy]") == [356, 300]
        page.click("#fit")
        page.wait_for_function("window.cpsViewer.complete", timeout=120_000)
        assert abs(page.evaluate("window.cpsViewer.scale") - 0.5) < 1e-9
        page.mouse.move(200, 150)
        page.mouse.wheel(0, -400)
        page.wait_for_function("window.cpsViewer.scale > 0.5 && window.cpsViewer.complete", timeout=120_000)
        # pinch: two touch pointers moving apart from 100 px to 200 px double the scale about their midpoint
        before = page.evaluate("window.cpsViewer.scale")
        after = page.evaluate("""() => {
            const c = document.getElementById('view');
            const ev = (type, id, x) => c.dispatchEvent(new PointerEvent(type, {pointerId: id, pointerType: 'touch',
                clientX: x, clientY: 150, bubbles: true}));
            ev('pointerdown', 11, 150); ev('pointerdown', 12, 250);
            ev('pointermove', 12, 250);   // the pinch starts at a distance of 100
            ev('pointermove', 12, 350);   // ... and ends at 200, about x = 250
            ev('pointerup', 11, 150); ev('pointerup', 12, 350);
            return window.cpsViewer.scale; }""")
        assert after == pytest.approx(2 * before)
        browser.close()


def test_serves_a_store_read_over_http(served):
    """The tile server reading its store from another HTTP server (object-store style): the same
    tile bytes as from the local copy."""
    url, root, _ = served
    with http_server(root) as (store_url, _), tile_server(f"{store_url}/grace.zarr") as (remote, _):
        for path in ("grace_files/10/1_1.png", "grace_files/8/0_0.png", "iiif/3/grace/0,0,300,200/150,/0/default.png"):
            local, there = get(url + path), get(remote + path)
            assert local[0] == there[0] == 200 and pixels_of(local[2]).tobytes() == pixels_of(there[2]).tobytes()
