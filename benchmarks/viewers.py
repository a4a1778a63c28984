"""Do existing viewers read the tile server? OpenSeadragon, from the npm registry, opens a store
through the Deep Zoom descriptor and through the IIIF info.json of a live ``cps-tiles serve``, in
headless Chromium, and its fully loaded view is compared with the store's decode.

    npm pack openseadragon && tar xzf openseadragon-*.tgz      # -> package/build/openseadragon/
    python benchmarks/viewers.py STORE package/build/openseadragon/openseadragon.min.js

The page (written to a temporary folder and served by this script on loopback, beside the tile
server) loads OpenSeadragon from the file given; nothing of it is kept in the repository. It uses
OpenSeadragon's canvas drawer: its WebGL drawer now and then painted nothing in headless Chromium
without a GPU. Each
tile source is opened at "home" (the whole image in a 512 x 512 viewer), the script waits for
OpenSeadragon's fully-loaded state, and compares the canvas with the store reduced to the same
size, both at a quarter of it (PSNR): the right image in the right place, whatever level and
filter the viewer draws with.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import ROOT, git_rev, machine, md_table, psnr  # noqa: E402
from servers import http_server, tile_server  # noqa: E402

PAGE = """<!doctype html><meta charset=utf-8><body style="margin:0">
<div id=view style="width:512px;height:512px;background:#000"></div>
<script src="openseadragon.js"></script><script>
window.result = {opened: false, loaded: false, failed: []};
const v = OpenSeadragon({id: "view", prefixUrl: "", tileSources: SOURCE, showNavigationControl: false,
                         animationTime: 0, blendTime: 0, immediateRender: true, drawer: "canvas"});
v.addHandler("open", () => { window.result.opened = true; });
v.addHandler("tile-load-failed", (e) => window.result.failed.push(String(e.message)));
v.world.addHandler("add-item", (e) => e.item.addHandler("fully-loaded-change", (f) => {
  if (f.fullyLoaded) window.result.loaded = true; }));
</script>"""
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def main() -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    import cps_tiles

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("store")
    p.add_argument("openseadragon", type=Path, help="openseadragon.min.js from the npm package")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "viewers.md")
    a = p.parse_args()
    img = cps_tiles.open(a.store)
    name = Path(a.store.rstrip("/")).name.removesuffix(".zip").removesuffix(".zarr")
    version = json.loads((a.openseadragon.parents[2] / "package.json").read_text())["version"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, tile_server(a.store) as (tiles, _):
        shutil.copy(a.openseadragon, Path(tmp) / "openseadragon.js")
        for label, source in (("Deep Zoom", f"{tiles}{name}.dzi"), ("IIIF 3.0", f"{tiles}iiif/3/{name}/info.json")):
            (Path(tmp) / "page.html").write_text(PAGE.replace("SOURCE", json.dumps(source)))
            with http_server(Path(tmp)) as (pages, _), sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 512, "height": 512})
                page.goto(f"{pages}/page.html")
                page.wait_for_function("window.result && window.result.loaded", timeout=300_000)
                # loaded tiles are drawn on later frames: wait until two shots 0.3 s apart agree and
                # show something (an empty canvas is stable too)
                shots = [np.asarray(Image.open(io.BytesIO(page.locator("#view").screenshot())).convert("RGB"))]
                while len(shots) < 40 and (len(shots) < 2 or not np.array_equal(*shots[-2:]) or shots[-1].std() < 1):
                    page.wait_for_timeout(300)
                    shots.append(np.asarray(Image.open(io.BytesIO(page.locator("#view").screenshot())).convert("RGB")))
                result = page.evaluate("window.result")
                shot = shots[-1]
                browser.close()
            # at home the image fits the 512-px viewer, centred: compare with the store reduced so
            # (the centre 90%: edge pixels straddle the image border)
            h, w = img.shape[:2]
            scale = min(512 / w, 512 / h)
            size = (round(w * scale), round(h * scale))
            level = next(lv for lv in reversed(img.levels) if lv.shape[1] >= size[0] and lv.shape[0] >= size[1])
            want = np.asarray(Image.fromarray(np.asarray(level)[..., :3]).resize(size, Image.Resampling.LANCZOS))
            left, top = (513 - size[0]) // 2, (513 - size[1]) // 2  # the viewer centres on half pixels
            got = shot[top : top + size[1], left : left + size[0]]
            # at a quarter of the size: the viewer draws from a level of its own choosing with its own
            # filter, so this tells the right image in the right place, not the filter
            small = (size[0] // 4, size[1] // 4)
            got, want = (np.asarray(Image.fromarray(np.ascontiguousarray(v)).resize(small, Image.Resampling.BOX))
                         for v in (got, want))
            my, mx = small[1] // 20, small[0] // 20
            rows.append([label, "yes" if result["opened"] else "no", len(result["failed"]),
                         f"{psnr(got[my:-my, mx:-mx], want[my:-my, mx:-mx]):.1f} dB"])
    text = ("# Existing viewers against the tile server\n\n"
            f"Command: `python benchmarks/viewers.py STORE openseadragon.min.js` (commit {git_rev()}); "
            f"machine: {machine()}. OpenSeadragon {version} from npm, Debian's Chromium, headless; store "
            f"`{name}`, {w} x {h} px, quality {img.meta.quality:g}.\n\n"
            + md_table(["tile source", "opened", "tiles failed", "fully loaded view vs the store, at 1/4 size (PSNR)"], rows)
            + "\n\nMirador was not tried.\n")
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
