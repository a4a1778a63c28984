"""cps-tiles: learned compression of gigapixel images with Continuous Patch Stitching.

>>> import cps_tiles
>>> img = cps_tiles.convert("slide.tif", "slide.zarr", quality=5)   # doctest: +SKIP
>>> img[0:512, 0:512].shape                                           # doctest: +SKIP
(512, 512, 3)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

DEFAULT_QUALITY = 5.0
DEFAULT_CHUNK = 256
DEFAULT_TILE = 1024


def open(store: Any, cache_mb: float = 256, on_error: str = "raise", fill_value: int = 0,  # noqa: A001
         precision: str = "float32"):
    """Open a finished CPS store as a :class:`~cps_tiles.store.reader.CPSImage`.

    ``store`` is a local path, a URL (``file://``, ``http(s)://``, ``s3://``, ``gs://``, ...; a
    ``.zip`` path or ``zip://`` for a single-file store) or any ``zarr.abc.store.Store``.
    ``cache_mb`` bounds the decoded-chunk cache. A missing or damaged chunk raises
    :class:`~cps_tiles.errors.DamagedChunkError` naming it; with ``on_error="fill"`` its pixels are set
    to ``fill_value`` instead (salvage) and its key is added to ``img.damaged``. ``precision`` is the
    decoder's arithmetic (``"float32"`` or ``"bfloat16"``), the same for every path of this object.
    """
    from .store.raster import open_image

    return open_image(store, cache_mb=cache_mb, on_error=on_error, fill_value=fill_value, precision=precision)


def convert(source: Any, store: Any, *, quality: float = DEFAULT_QUALITY, chunk: int = DEFAULT_CHUNK,
            tile: int = DEFAULT_TILE, shard: int | None = None, levels: int | None = None, overwrite: bool = False,
            resume: bool = False, progress: bool = True, codec: str | None = None, page: int = 0, scheduler: str | None = None,
            client: Any = None, device: str = "cpu", resources: dict | None = None, precision: str = "float32",
            band_groups: str | None = None, band_range: str | None = None):
    """Compress ``source`` (a path pyvips opens, or a uint8 numpy/dask array) into a CPS store.

    ``store`` is a local path, a writable URL (``file://``, ``s3://``, ...), any
    ``zarr.abc.store.Store``, or a path ending in ``.zip``: the store is then written into a
    folder beside it and packed into that single file at the end. ``chunk`` (pixels, multiple of
    64) is the storage/random-access unit; ``tile`` (a multiple of ``chunk``) the compute unit;
    ``shard`` (a multiple of ``tile``, 0 for none) puts ``shard`` x ``shard`` pixels of chunks in one
    object (zarr sharding); by default (None) images larger than 4096 px on a side are stored in
    shards of 4096 px and smaller ones without (a shard's index costs 16 bytes per chunk slot, a
    noticeable share of a small image's store). Each tile, or each shard, is one Dask task.
    Pyramid levels (2x, 4x, ... reductions by area averaging of the source) are written until the
    longest side fits in one chunk; ``levels`` caps their number (1: level 0 only).
    ``quality`` runs from 1 (smallest) to 10 (best) with the default codec, fractions allowed;
    ``codec`` names another (a name from ``codecs/`` or a codec directory), such as the faster
    ``cps-n96m160-r9`` (qualities 1 to 8).
    ``scheduler`` is ``"threads"`` (default), ``"processes"``, ``"sync"`` or a distributed scheduler
    address; or pass a ``distributed.Client`` as ``client``. ``device`` is ``"cpu"``, ``"cuda"`` or
    ``"auto"``; CUDA tasks ask for a ``GPU`` worker resource. ``precision="bfloat16"`` runs the
    transform in bf16 (faster on CPUs with AMX/AVX512-BF16). ``resume=True`` finishes an
    interrupted conversion, skipping verified units.
    A georeferenced source keeps its CRS, transform and nodata. A raster of other than 8-bit grey
    or RGB (uint16, any band count, or with nodata; read through rasterio) is stored as band groups
    of up to three bands (``band_groups="3,2,1"``: sizes in band order; default threes and ones),
    each band mapped linearly from its range (its data's min and max, or ``band_range="LO,HI"``,
    or ``"LO,HI;LO,HI;..."`` per band) to the codec's 8 bits.
    Returns the opened image.
    """
    from .errors import StoreError
    from .pipeline.convert import convert_store
    from .pipeline.progress import ProgressBar
    from .pipeline.raster import convert_raster, open_image_source
    from .store.location import pack_zip, zip_work_folder
    from .transforms.weights import DEFAULT_CODEC, load_codec

    src, multi_band = open_image_source(source, page=page, band_groups=band_groups, band_range=band_range)
    bar = ProgressBar(src.height * src.width, enabled=progress)
    options = dict(quality=quality, chunk=chunk, tile=tile, shard=shard, levels=levels, overwrite=overwrite, resume=resume,
                   scheduler=scheduler, client=client, device=device, resources=resources, progress=bar,
                   precision=precision)
    if multi_band and str(store).endswith(".zip"):
        raise StoreError("a multi-band store cannot be written as one .zip file yet; write a directory")
    chosen = load_codec(codec or DEFAULT_CODEC)
    if multi_band:
        convert_raster(src, store, chosen, band_groups=band_groups, band_range=band_range, **options)
        return open(store)
    target = zip_work_folder(store, overwrite) or store
    convert_store(src, target, chosen, **options)
    if target is not store:
        pack_zip(target, store, overwrite=overwrite, remove_source=True)
    return open(store)


def __getattr__(name: str) -> Any:
    # CPSSlide loads the decoder (torch) on first use, not at ``import cps_tiles``
    if name == "CPSSlide":
        from .slide import CPSSlide

        return CPSSlide
    raise AttributeError(f"module 'cps_tiles' has no attribute {name!r}")
