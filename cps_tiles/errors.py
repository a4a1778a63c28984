"""Every error cps-tiles raises on purpose, one class per failure, under one base class.

Catch :class:`CPSError` for any of them. Each also derives from the builtin that its callers caught
before this module existed (``ValueError`` or ``RuntimeError``), so existing ``except`` clauses
keep working.
"""

from __future__ import annotations


class CPSError(Exception):
    """Base class of every cps-tiles error."""


class CodecError(CPSError, RuntimeError):
    """A codec is missing, fails its checksum, or is not the one a store was written with."""


class SourceError(CPSError, ValueError):
    """An input image cannot be read as an image cps-tiles supports."""


class PixelFormatError(SourceError):
    """An image's bit depth or band count is not 8-bit grey, RGB or RGBA (rasterio may read it as a raster)."""


class CorruptChunkError(CPSError, ValueError):
    """A chunk bitstream is truncated, damaged, forged, or from another model or format."""


class StoreError(CPSError, ValueError):
    """A store is missing, unfinished, from another format, or would be overwritten."""


class DamagedChunkError(StoreError):
    """A latent chunk of a store is missing, unreadable or does not decode (names store and key)."""


class RequestError(CPSError, ValueError):
    """A tile or image request is malformed, out of range, or larger than the server allows (HTTP 400)."""
