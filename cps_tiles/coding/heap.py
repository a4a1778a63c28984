"""Keep the decoder's working memory between batches of chunks (glibc's malloc).

Decoding a batch of chunks allocates and frees the same few tens of MB of arrays every time. By
default glibc gives large freed blocks straight back to the operating system (a block above the
mmap threshold is unmapped when freed, and the heap's top is trimmed once more than the trim
threshold of it is free), so the next batch faults every page of them in again: a whole-store
decode with r12 was about a fifth slower (0.145 against 0.187 MP/s, one run each of
``benchmarks/common.store_decode_mps`` on a 1024 x 1024 store at quality 5, 2 threads,
``CPS_TILES_REUSE=0``, with and without ``MALLOC_ARENA_MAX`` set), r8 unchanged.
``retain_freed_memory`` raises both thresholds once per process, so the freed memory is reused:
blocks below 32 MiB come from the heap, and up to 256 MiB of free heap stays mapped.

It changes nothing where the user has tuned malloc (any ``MALLOC_*`` variable or
``GLIBC_TUNABLES`` set) or where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 256 << 20

_tuned = False


def retain_freed_memory() -> None:
    """Raise glibc's mmap and trim thresholds (``MMAP_THRESHOLD``, ``TRIM_THRESHOLD``), once per process."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return
    if hasattr(libc, "gnu_get_libc_version"):  # glibc's own symbol: elsewhere mallopt may be a stub, or absent
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
