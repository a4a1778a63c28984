"""Where a store lives: a local folder, a zip file, an HTTP server, object storage, or any zarr Store.

Every read and write of a store goes through the ``zarr.abc.store.Store`` that :func:`open_location`
returns, so the same code serves every kind of location:

=============================================  =====================================================
location                                       store
=============================================  =====================================================
``slide.zarr``, ``/data/slide.zarr``           ``LocalStore`` (read-write)
``file:///data/slide.zarr``                    ``LocalStore``
``slide.zarr.zip``, ``zip:///data/s.zarr``     ``ZipStore`` (read-only; write one with ``cps-tiles zip``)
``http://host/slide.zarr``, ``https://...``    ``FsspecStore`` over HTTP (read-only; needs ``aiohttp``)
``s3://bucket/slide.zarr``, ``gs://``, ...     ``FsspecStore`` (needs ``s3fs``, ``gcsfs``, ...)
a ``zarr.abc.store.Store`` object              itself
=============================================  =====================================================

Remote reads have a bounded timeout (``timeout`` seconds per request), so a server that stops
answering gives an error, never a hang.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zarr.abc.store import Store
from zarr.storage import LocalStore, ZipStore

from ..errors import StoreError

#: Seconds a remote request may take before it fails (connect, and each read).
DEFAULT_TIMEOUT = 30.0
_DRIVERS = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "http": "aiohttp",
            "https": "aiohttp"}


@dataclass(frozen=True)
class Location:
    """A store and how to name and reopen it.

    ``spec`` is what :func:`open_location` reopens (a path or URL string, or the Store itself): Dask
    workers reopen a location from it. ``name`` is how messages name the store.
    """

    store: Store
    name: str
    spec: Any = field(repr=False)

    @property
    def is_local(self) -> bool:
        return isinstance(self.store, LocalStore)


def open_location(location: str | os.PathLike | Store | Location, mode: str = "r",
                  timeout: float = DEFAULT_TIMEOUT) -> Location:
    """The store at ``location``, opened for reading (``mode="r"``) or writing (``"w"``)."""
    if isinstance(location, Location):
        return location
    if isinstance(location, Store):
        return Location(location, _store_name(location), location)
    text = os.fspath(location)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if scheme in ("", "file"):
        if rest.endswith(".zip"):
            return _zip(rest, mode, text)
        return Location(LocalStore(rest, read_only=mode == "r"), rest, text)
    if scheme == "zip":
        return _zip(rest, mode, text)
    return _remote(text, scheme, mode, timeout)


def _zip(path: str, mode: str, spec: str) -> Location:
    if mode != "r":
        raise StoreError(f"{path}: zip stores are written whole by `cps-tiles zip STORE {path}`; "
                         "convert into a folder first")
    if not Path(path).is_file():
        raise StoreError(f"{path}: no such zip store")
    from zarr.core.sync import sync

    return Location(sync(ZipStore.open(path, mode="r")), path, spec)


def _remote(url: str, scheme: str, mode: str, timeout: float) -> Location:
    if scheme in ("http", "https") and mode != "r":
        raise StoreError(f"{url}: HTTP stores are read-only")
    try:
        import fsspec
        from zarr.storage import FsspecStore

        fsspec.get_filesystem_class(scheme)
        options: dict[str, Any] = {}
        if scheme in ("http", "https"):
            import aiohttp

            options = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=timeout, sock_connect=timeout,
                                                                          sock_read=timeout)}}
        store = FsspecStore.from_url(url, storage_options=options, read_only=mode == "r")
    except ImportError as exc:
        driver = _DRIVERS.get(scheme, "an fsspec driver for it")
        raise StoreError(f"{url}: reading {scheme}:// stores needs {driver} (pip install {driver}): {exc}") from None
    except ValueError as exc:  # fsspec: unknown protocol
        raise StoreError(f"{url}: unsupported store location ({exc})") from None
    return Location(store, url, url)


def _store_name(store: Store) -> str:
    for attr in ("root", "path", "url"):
        value = getattr(store, attr, None)
        if value:
            return str(value)
    return repr(store)


def zip_work_folder(location: Any, overwrite: bool) -> str | None:
    """For a ``.zip`` target path: the folder a conversion writes first (``NAME.zip.d``, kept by
    an interrupted conversion so ``--resume`` finishes it), after refusing to replace an existing
    zip without ``overwrite``. None for any other location."""
    if isinstance(location, (Store, Location)):
        return None
    text = os.fspath(location)
    path = text.removeprefix("zip://").removeprefix("file://")
    if not path.endswith(".zip") or ("://" in text and not text.startswith(("zip://", "file://"))):
        return None
    if Path(path).exists() and not overwrite:
        raise StoreError(f"{path} already exists (pass --overwrite / overwrite=True to replace it)")
    return path + ".d"


def pack_zip(source: Any, dest: str | os.PathLike, overwrite: bool = False, remove_source: bool = False) -> int:
    """Copy every object of the store at ``source`` into a single zip file ``dest`` (uncompressed:
    chunks are entropy-coded already, and uncompressed members can be read by byte range).
    Written to a temporary name and renamed, so ``dest`` is never half-written. Returns the number
    of objects."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    src = open_location(source, "r")
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise StoreError(f"{dest} already exists (pass --overwrite to replace it)")
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)

    async def copy(out: ZipStore) -> int:
        keys = sorted([k async for k in src.store.list_prefix("")])
        for key in keys:
            await out.set(key, await src.store.get(key, default_buffer_prototype()))
        return len(keys)

    out = ZipStore(tmp, mode="w")
    try:
        count = sync(copy(out))
    finally:
        out.close()
    tmp.replace(dest)
    if remove_source and src.is_local:
        sync(src.store.with_read_only(False).delete_dir(""))
    return count
