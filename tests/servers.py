"""Real servers on loopback for the store tests: a static HTTP server and an S3-compatible one.

``http_server(root)`` serves a directory with the standard library's HTTP server, extended by what
object stores and zarr readers rely on: single byte ranges (``Range: bytes=a-b`` and ``bytes=-n``)
and HEAD. It can add a delay to every request (latency), and ``hang`` makes it accept requests and
never answer (a server that dies mid-read). Its listen backlog is 128 connections, as production
servers have (the standard library's default of 5 makes a burst of concurrent requests wait for TCP
retransmission, about a second).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServerState:
    delay: float = 0.0
    hang: bool = False
    requests: list[str] = field(default_factory=list)


class _Handler(http.server.SimpleHTTPRequestHandler):
    state: ServerState

    def log_message(self, *args) -> None:  # quiet
        pass

    def _pause(self) -> bool:
        self.state.requests.append(f"{self.command} {self.path} {self.headers.get('Range', '')}".strip())
        if self.state.hang:
            time.sleep(3600)
            return False
        if self.state.delay:
            time.sleep(self.state.delay)
        return True

    def do_HEAD(self) -> None:
        if self._pause():
            super().do_HEAD()

    def do_GET(self) -> None:
        if not self._pause():
            return
        spec = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not spec or not path.is_file():
            return super().do_GET()
        size = path.stat().st_size
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", spec.strip())
        if not m or (not m[1] and not m[2]):
            return self.send_error(416)
        if m[1]:
            start, end = int(m[1]), min(size - 1, int(m[2]) if m[2] else size - 1)
        else:
            start, end = max(0, size - int(m[2])), size - 1
        if start >= size or start > end:
            return self.send_error(416)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def http_server(root: Path, delay: float = 0.0) -> Iterator[tuple[str, ServerState]]:
    """``(base URL, state)`` of a threaded HTTP server on 127.0.0.1 serving ``root``."""
    state = ServerState(delay=delay)
    handler = type("Handler", (_Handler,), {"state": state})
    server_class = type("Server", (http.server.ThreadingHTTPServer,), {"request_queue_size": 128})
    server = server_class(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        state.hang = False
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """An S3-compatible server (moto's standalone server) on loopback: its endpoint URL. The
    AWS_* variables it needs (endpoint, test credentials, region) are set for the block."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def logged(lines: list[str], match, timeout: float = 30) -> bool:
    """Whether a line matching ``match`` (a predicate) appears in ``lines`` within ``timeout`` seconds: a
    server answers before the pump thread of ``tile_server`` has necessarily read the line it logged."""
    deadline = time.monotonic() + timeout
    while not any(match(line) for line in list(lines)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def tile_server(*args: str, timeout: float = 120) -> Iterator[tuple[str, list[str]]]:
    """``cps-tiles serve ARGS --port 0`` in a fresh process: yields its base URL (ending in /) and
    the lines it has logged so far (a list that fills as it logs); stopped at exit."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "cps_tiles.cli", "serve", *args, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "serving" in line or "error" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(timeout) or proc.poll() is not None or not lines or "serving" not in lines[-1]:
            raise RuntimeError(f"cps-tiles serve did not start: {lines}")
        yield lines[-1].rsplit(" at ", 1)[1], lines
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
