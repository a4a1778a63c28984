"""The tile server's ASGI application (Starlette), served by uvicorn.

    GET /                                            the stores, with links to their viewers
    GET /view/{name}                                 the pan/zoom viewer page
    GET /{name}.json                                 size, levels and pixel size (the viewer reads it)
    GET /{name}.dzi                                  Deep Zoom descriptor (256-px tiles, no overlap)
    GET /{name}_files/{level}/{col}_{row}.{fmt}      Deep Zoom tile: jpeg, png or webp
    GET /iiif/3/{name}                               303 to its info.json
    GET /iiif/3/{name}/info.json                     IIIF Image API 3.0 image information
    GET /iiif/3/{name}/{region}/{size}/{rotation}/{quality}.{format}

Requests are served concurrently by the event loop; decoding runs in a pool of worker threads
(torch releases the GIL in its kernels, so the pool uses every core) and each store's decoded
chunks are cached within one byte budget shared by all stores. Responses carry an ETag (the
store's metadata token and the request) and ``Cache-Control``; every response allows any origin
(CORS), so other viewers can use the server. A bad request is a 400 with a one-line reason, an
unknown store a 404, a damaged chunk a 500 naming the chunk (and logged). Only the stores named
at start are served: a request names a store, never a path.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import inspect
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import DamagedChunkError, RequestError, StoreError
from ..store.raster import is_raster
from ..store.reader import ChunkCaches, CPSImage
from . import DEFAULT_CACHE_MB, DEFAULT_MAX_AREA, deepzoom, iiif
from .render import MEDIA_TYPES, encode, read_scaled

log = logging.getLogger("cps_tiles.server")
STATIC = Path(__file__).parent / "static"
CACHE_CONTROL = "public, max-age=86400"
LD_JSON = f'application/ld+json;profile="{iiif.CONTEXT}"'
PROFILE_LINK = '<http://iiif.io/api/image/3/level2.json>;rel="profile"'


@dataclass
class ServerConfig:
    """What ``cps-tiles serve`` was asked for: decode workers, cache budget, request bound."""

    workers: int = os.cpu_count() or 1
    cache_mb: float = DEFAULT_CACHE_MB
    max_area: int = DEFAULT_MAX_AREA
    precision: str = "float32"

    @property
    def max_decode(self) -> int:
        """Pixels one request may decode: the coarsest level covering an output of ``max_area``
        pixels holds up to four times as many."""
        return 4 * self.max_area


class ServedStore:
    """One opened store and the facts its responses need."""

    def __init__(self, name: str, location: Any, caches: ChunkCaches, precision: str) -> None:
        self.name = name
        self.image = CPSImage(location, precision=precision, caches=caches)
        self.levels = self.image.levels
        self.height, self.width = self.image.shape[:2]
        self.etag_seed = f"{self.image.path}:{self.image._version}"

    def summary(self) -> dict:
        source = self.image.meta.source or {}
        return {"name": self.name, "width": self.width, "height": self.height, "bands": self.image.meta.bands,
                "levels": [[lv.shape[1], lv.shape[0]] for lv in self.levels], "tile": deepzoom.TILE,
                "dz_top": deepzoom.top_level(self.width, self.height), "quality": self.image.meta.quality,
                "codec": self.image.meta.codec, "pixel_size_um": source.get("pixel_size_um")}


def _store_name(location: str) -> str:
    name = location.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".zip", ".zarr"):
        name = name.removesuffix(suffix)
    return name


def find_stores(arguments: list[str]) -> dict[str, str]:
    """Store arguments -> {name: location}. A directory that is not itself a store stands for the
    stores directly inside it; URLs are taken as stores. Names are the last path component
    without ``.zarr``/``.zip``, and must be unique."""
    found: dict[str, str] = {}

    def add(location: str) -> None:
        name = _store_name(location)
        if name in found:
            raise StoreError(f"two stores are named {name!r} ({found[name]} and {location}); serve them separately")
        found[name] = location

    for arg in arguments:
        path = Path(arg)
        if "://" in arg or not path.is_dir() or (path / "zarr.json").is_file():
            if "://" not in arg and path.is_dir() and is_raster(path):
                raise StoreError(f"{arg} is a multi-band store; the server serves 8-bit grey, RGB and RGBA stores only")
            add(arg)
            continue
        inside = sorted(p for p in path.iterdir() if (p / "zarr.json").is_file() or p.name.endswith(".zarr.zip"))
        for p in [p for p in inside if p.is_dir() and is_raster(p)]:
            print(f"cps-tiles: warning: skipping {p}: multi-band stores are not served", file=sys.stderr)
            inside.remove(p)
        if not inside:
            raise StoreError(f"{arg}: neither a store nor a directory holding any")
        for p in inside:
            add(str(p))
    return found


def _etag(seed: str, request: Request) -> str:
    return '"' + hashlib.sha256(f"{seed}|{request.url}".encode()).hexdigest()[:32] + '"'


async def _cached(request: Request, seed: str, make: Callable[[], Any]) -> Response:
    """A 304 where the client already holds this response (its ETag), else the response that
    ``make()`` builds: (body, media type), or an awaitable of it (a decode in the pool)."""
    headers = {"ETag": _etag(seed, request), "Cache-Control": CACHE_CONTROL}
    if headers["ETag"] in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    made = make()
    body, media_type = await made if inspect.isawaitable(made) else made
    return Response(body, media_type=media_type, headers=headers)


class TileServer:
    """The application: ``TileServer(stores, config).app`` is the ASGI app."""

    def __init__(self, stores: dict[str, Any], config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        caches = ChunkCaches(self.config.cache_mb)
        self.stores = {name: ServedStore(name, loc, caches, self.config.precision) for name, loc in stores.items()}
        self.pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="cps-decode")
        routes = [
            Route("/", self.index),
            Route("/view/{name}", self.viewer),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/iiif/3/{name}", self.iiif_base),
            Route("/iiif/3/{name}/info.json", self.iiif_info),
            Route("/iiif/3/{name}/{region}/{size}/{rotation}/{quality_format}", self.iiif_image),
            Route("/{name}.json", self.summary),
            Route("/{name}.dzi", self.dzi),
            Route("/{name}_files/{level:int}/{col:int}_{row:int}.{fmt}", self.dz_tile),
        ]
        self.app = Starlette(routes=routes)
        self.app.add_middleware(_Guard)

    def store(self, request: Request) -> ServedStore:
        name = request.path_params["name"]
        if name not in self.stores:
            raise HTTPException(404, f"no store named {name!r} is served here")
        return self.stores[name]

    async def decode(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- pages ------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        rows = "".join(
            f'<li><a href="/view/{html.escape(s.name)}">{html.escape(s.name)}</a> {s.width:,} x {s.height:,} px, '
            f'{len(s.levels)} level(s) &middot; <a href="/{html.escape(s.name)}.dzi">Deep Zoom</a> &middot; '
            f'<a href="/iiif/3/{html.escape(s.name)}/info.json">IIIF</a></li>'
            for s in self.stores.values())
        return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>cps-tiles</title>"
                            f"<h1>cps-tiles stores</h1><ul>{rows}</ul>")

    async def viewer(self, request: Request) -> Response:
        store = self.store(request)
        page = (STATIC / "viewer.html").read_text().replace("{{name}}", html.escape(store.name))
        return HTMLResponse(page)

    async def summary(self, request: Request) -> Response:
        store = self.store(request)
        return await _cached(request, store.etag_seed, lambda: (json.dumps(store.summary()), "application/json"))

    # -- Deep Zoom ------------------------------------------------------------------------------
    async def dzi(self, request: Request) -> Response:
        store = self.store(request)
        return await _cached(request, store.etag_seed,
                       lambda: (deepzoom.descriptor(store.width, store.height), "application/xml"))

    async def dz_tile(self, request: Request) -> Response:
        store, p = self.store(request), request.path_params
        fmt = deepzoom.FORMATS.get(p["fmt"])
        if fmt is None:
            raise RequestError(f"tile format {p['fmt']!r} is not served: jpeg, png or webp")
        region, size = deepzoom.tile_region(store.width, store.height, p["level"], p["col"], p["row"])
        return await self._image(request, store, region, size, fmt)

    # -- IIIF Image API 3.0 ------------------------------------------------------------------------
    async def iiif_base(self, request: Request) -> Response:
        self.store(request)
        return RedirectResponse(f"{request.url.path}/info.json", status_code=303)

    async def iiif_info(self, request: Request) -> Response:
        store = self.store(request)
        base = str(request.url).removesuffix("/info.json")
        doc = iiif.info(base, store.width, store.height, [(lv.shape[1], lv.shape[0]) for lv in store.levels],
                        deepzoom.TILE, self.config.max_area)
        media = LD_JSON if "application/ld+json" in request.headers.get("accept", "") else "application/json"
        response = await _cached(request, store.etag_seed, lambda: (json.dumps(doc), media))
        response.headers["Link"] = PROFILE_LINK
        return response

    async def iiif_image(self, request: Request) -> Response:
        store, p = self.store(request), request.path_params
        req = iiif.parse_request(p["region"], p["size"], p["rotation"], p["quality_format"], store.width, store.height,
                                 self.config.max_area)
        response = await self._image(request, store, req.region, req.size, req.format, req.quality, req.rotation,
                                     req.mirror)
        x, y, w, h = req.region
        canonical = f"{request.base_url}iiif/3/{store.name}/{x},{y},{w},{h}/{req.size[0]},{req.size[1]}/" \
                    f"{'!' if req.mirror else ''}{req.rotation}/{req.quality}.{req.format}"
        response.headers["Link"] = f'<{canonical}>;rel="canonical", {PROFILE_LINK}'
        return response

    async def _image(self, request: Request, store: ServedStore, region: tuple[int, int, int, int],
                     size: tuple[int, int], fmt: str, quality: str = "default", rotation: float = 0,
                     mirror: bool = False) -> Response:
        def render() -> tuple[bytes, str]:
            pixels = read_scaled(store.levels, region, size, self.config.max_decode)
            return encode(pixels, fmt, quality, rotation, mirror), MEDIA_TYPES[fmt]

        return await _cached(request, store.etag_seed, lambda: self.decode(render))


class _Guard:
    """Outermost middleware: CORS on every response, and every failure as a status with a one-line
    reason (400 bad request, 404 unknown store, 500 damaged chunk or server fault; logged)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":  # a CORS preflight: GET and HEAD from anywhere
            await Response(status_code=204, headers={"Access-Control-Allow-Origin": "*",
                                                     "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
                                                     "Access-Control-Allow-Headers": "*"})(scope, receive, send)
            return
        started = False

        async def send_with_cors(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"access-control-allow-origin", b"*")]
            await send(message)

        try:
            await self.app(scope, receive, send_with_cors)
        except Exception as exc:
            if started:
                raise
            status, reason = _status_of(exc)
            if status >= 500:
                log.error("%s %s: %s", scope["method"], scope["path"], reason, exc_info=not isinstance(exc, DamagedChunkError))
            await PlainTextResponse(reason + "\n", status_code=status)(scope, receive, send_with_cors)


def serve(stores: dict[str, Any], host: str = "127.0.0.1", port: int = 8000, config: ServerConfig | None = None,
          verbose: bool = False) -> None:
    """Serve ``stores`` ({name: location}) until interrupted; one log line per request if ``verbose``."""
    import socket

    import torch
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="cps-tiles: %(message)s")
    config = config or ServerConfig()
    server = TileServer(stores, config)
    # the pool's threads decode side by side; each gets its share of the cores for torch's kernels
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.workers))
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets whose protocol says
    # TCP, and without it a keep-alive client waits ~40 ms per response (Nagle + delayed ACK)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # listening before the line below: a client that read it can connect at once
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    names = ", ".join(server.stores)
    print(f"cps-tiles: serving {len(server.stores)} store(s) ({names}) at http://{shown}:{port}/", flush=True)
    uv = uvicorn.Config(server.app, log_level="info" if verbose else "warning", access_log=verbose)
    uvicorn.Server(uv).run(sockets=[sock])


def _status_of(exc: Exception) -> tuple[int, str]:
    """HTTP status and one-line reason of a request's failure."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, RequestError):
        return 400, reason
    if isinstance(exc, DamagedChunkError):
        return 500, reason
    return 500, f"internal error ({type(exc).__name__}: {reason})"
