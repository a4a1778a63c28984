"""Compiled decoding of the table coder's parts: the stack ANS decoder of constriction's
``AnsCoder`` (32-bit words, a 64-bit state, 24-bit probabilities), with the table selection, the
coding order and the escapes of :mod:`cps_tiles.coding.tables` fused into one loop per part.

The encoder stays constriction's; this decoder reproduces its arithmetic exactly, so it reads
every stream constriction wrote, and :class:`~cps_tiles.coding.tables.TableCoder` keeps
constriction's own decoder as the independent reference (``decompress_reference``). What the
equivalence rests on:

* **The models.** ``Categorical(counts / 2^24, perfect=False)`` quantizes its probabilities
  with ``left[i] = floor(C[i] (2^24 - n) / 2^24) + i`` (``C`` the exclusive prefix sums of the
  counts, ``n`` the alphabet size; constriction's ``fast_quantized_cdf``). Every operand there is
  a multiple of 2^-24 with at most 48 significant bits, so constriction's float64 arithmetic is
  exact and equals this integer formula (``model_cdfs``). ``Uniform(k)`` gives every symbol
  ``2^24 // k`` and the last one the rest.
* **The coder.** A stream is a stack of words, read from its end: the state starts as the last
  word (nonzero) followed by words until it reaches 2^32. Each symbol takes ``q = state mod
  2^24``, finds ``s`` with ``left[s] <= q < left[s + 1]``, sets ``state = (state >> 24) p + q -
  left[s]`` (``p`` the symbol's probability) and, if the state fell below 2^32 and words remain,
  shifts the next one in.

Data flow for one part of B chunks (``decode_part``)::

    classes, means Q3 [B, P] -> table, center per symbol -> counting sort by table (stable)
      -> symbols in table order (ANS) -> escapes in that order -> values [B, P] = resid + center
"""

from __future__ import annotations

import numba
import numpy as np

from ..transforms.arithmetic import FLAT_CLASS, MEAN_FRAC_BITS

PRECISION = 24
_WORD_BITS = 32
#: n = bit_length(e) of an escape's excess, uniform over 0..ESCAPE_LENGTHS - 1 (tables.py)
ESCAPE_LENGTHS = 17


#: Each table's lookup has 2^bits buckets, bits = its size's bit length + 1, at most this.
_BUCKET_BITS_MAX = 12


def model_cdfs(counts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of consecutive tables (each summing to 2^24) of ``sizes`` symbols -> (their
    quantized CDFs concatenated, ``n + 1`` entries per table ending in 2^24, and each table's
    first entry): what constriction's ``Categorical(counts / 2^24, perfect=False)`` decodes with."""
    counts = np.asarray(counts, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes + 1)])
    cdf = np.empty(starts[-1], np.int32)  # values <= 2^24: int32 halves the cache footprint
    ends = np.cumsum(sizes)
    for i, (n, end) in enumerate(zip(sizes, ends)):
        c = counts[end - n : end]
        prefix = np.concatenate([[0], np.cumsum(c)[:-1]])
        cdf[starts[i] : starts[i + 1] - 1] = ((prefix * ((1 << PRECISION) - n)) >> PRECISION) + np.arange(n)
        cdf[starts[i + 1] - 1] = 1 << PRECISION
    return cdf, starts[:-1]


def bucket_lookup(cdf: np.ndarray, cdf_start: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A lookup that starts each symbol's search near it: per table ``2^bits`` buckets of quantiles,
    each holding the symbol its first quantile falls in (the search goes on upward from there) ->
    (the buckets concatenated (int32), each table's first bucket, each table's ``24 - bits``)."""
    bits = np.minimum([int(n).bit_length() + 1 for n in sizes], _BUCKET_BITS_MAX)
    first = np.concatenate([[0], np.cumsum(1 << bits)])
    buckets = np.empty(first[-1], np.int32)
    for t, (n, b) in enumerate(zip(sizes, bits)):
        table = cdf[cdf_start[t] : cdf_start[t] + n]
        buckets[first[t] : first[t + 1]] = np.searchsorted(table, np.arange(1 << b) << (PRECISION - b), side="right") - 1
    return buckets, first[:-1], PRECISION - bits


class StackDecoders:
    """The ANS decoders of B streams, decoded part after part (their states are carried here)."""

    def __init__(self, datas: list[bytes]) -> None:
        """Raises ValueError for a stream that is not whole words or ends in a zero word (which
        constriction cannot have written)."""
        arrays = [np.frombuffer(d, dtype="<u4") for d in datas]
        if any(len(a) and a[-1] == 0 for a in arrays):
            raise ValueError("an ANS stream cannot end in a zero word")
        self.words = np.concatenate([np.zeros(0, np.uint32)] + arrays).astype(np.uint32)
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        self.pos = np.cumsum(lengths)  # one past the next word to read: a stack is read from its end
        self.start = self.pos - lengths
        self.state = np.zeros(len(arrays), np.uint64)
        _initial_states(self.words, self.start, self.pos, self.state)


@numba.njit(cache=True, nogil=True)
def _initial_states(words, start, pos, state):
    for b in range(len(state)):
        s = np.uint64(0)
        while pos[b] > start[b]:
            pos[b] -= 1
            s = (s << np.uint64(_WORD_BITS)) | np.uint64(words[pos[b]])
            if s >= np.uint64(1) << np.uint64(_WORD_BITS):
                break
        state[b] = s


# One decoded symbol's step, in three parts that the decoder's loops call inline (a helper that returned the
# state and the read position together compiled to a main loop about a quarter slower):
#     s = _decoded(state, ...); if _refills(s, pos, low): pos -= 1; s = _refilled(s, words[pos])

@numba.njit(inline="always")
def _decoded(state, quantile, left, probability):
    """The state after decoding a symbol of ``probability`` whose interval starts at ``left``, before a refill."""
    return (state >> np.uint64(PRECISION)) * np.uint64(probability) + np.uint64(quantile - left)


@numba.njit(inline="always")
def _refills(state, pos, low):
    """Whether the state takes the next word: it fell below 2^32 and words remain (``words[low:pos]``)."""
    return state < (np.uint64(1) << np.uint64(_WORD_BITS)) and pos > low


@numba.njit(inline="always")
def _refilled(state, word):
    """The state with the next word shifted in below it."""
    return (state << np.uint64(_WORD_BITS)) | np.uint64(word)


@numba.njit(inline="always")
def _uniform(words, low, pos, state, size):
    """(symbol, state, pos): one symbol of ``Uniform(size)``."""
    per_bin = (1 << PRECISION) // size
    quantile = np.int64(state & np.uint64((1 << PRECISION) - 1))
    symbol = min(quantile // per_bin, size - 1)
    left = symbol * per_bin
    state = _decoded(state, quantile, left, (per_bin if symbol < size - 1 else (1 << PRECISION) - left))
    if _refills(state, pos, low):
        pos -= 1
        state = _refilled(state, words[pos])
    return symbol, state, pos


@numba.njit(cache=True, nogil=True)
def decode_part(words, start, pos, state, cls, mean3, cdf, cdf_start, buckets, bucket_start, bucket_shift, radius, out,
                cells, full):
    """Decode one part of each of B streams (``StackDecoders``' arrays, advanced in place):
    ``cls``, ``mean3`` int32 ``[B, P]`` (sigma classes, means in y_hat units Q3) -> ``out`` int32
    ``[B, P]`` (y_hat values), also written to their ``cells [P]`` of ``full [B, size]`` (the chunks'
    y_hat). ``cdf``, ``cdf_start``: ``model_cdfs``; ``buckets``, ``bucket_start``, ``bucket_shift``:
    ``bucket_lookup``; ``radius`` ``[tables]``."""
    frac = 1 << MEAN_FRAC_BITS
    tables = len(radius)
    nb, size = cls.shape
    center = np.empty((nb, size), np.int32)  # (int32: half the memory of int64)
    order = np.empty((nb, size), np.int32)  # each stream's positions in coding order
    table = np.empty((nb, size), np.int32)  # their tables, in that order
    resid = np.empty((nb, size), np.int32)
    first = np.empty(tables + 1, np.int64)
    for b in range(nb):
        first[:] = 0
        for i in range(size):
            c, m = cls[b, i], mean3[b, i]
            if c < FLAT_CLASS:
                t, ctr = c * frac + (m & (frac - 1)), m >> MEAN_FRAC_BITS
            else:
                t, ctr = FLAT_CLASS * frac + c - FLAT_CLASS, (m + frac // 2) >> MEAN_FRAC_BITS
            resid[b, i], center[b, i] = t, min(max(ctr, -32768), 32767)
            first[t + 1] += 1
        for t in range(tables):  # a stable counting sort: positions in table order, cells in order
            first[t + 1] += first[t]
        for i in range(size):
            t = resid[b, i]
            order[b, first[t]], table[b, first[t]] = i, t
            first[t] += 1
    # The symbols, the streams interleaved: each symbol waits on its stream's last state, and the
    # streams' independent chains overlap in the CPU.
    st, p = state.copy(), pos.copy()
    for j in range(size):
        for b in range(nb):
            t = table[b, j]
            base = cdf_start[t]
            s = st[b]
            quantile = np.int64(s & np.uint64((1 << PRECISION) - 1))
            sym = np.int64(buckets[bucket_start[t] + (quantile >> bucket_shift[t])])
            while cdf[base + sym + 1] <= quantile:  # the symbol s with cdf[s] <= quantile < cdf[s + 1]
                sym += 1
            left = np.int64(cdf[base + sym])
            s = _decoded(s, quantile, left, cdf[base + sym + 1] - left)
            if _refills(s, p[b], start[b]):
                p[b] -= 1
                s = _refilled(s, words[p[b]])
            st[b] = s
            resid[b, j] = sym - radius[t]
    for b in range(nb):
        s_b, p_b, low = st[b], p[b], start[b]
        for j in range(size):  # the escapes, in coding order
            r = radius[table[b, j]]
            if resid[b, j] == r or resid[b, j] == -r:
                n, s_b, p_b = _uniform(words, low, p_b, s_b, ESCAPE_LENGTHS)
                e = n
                if n >= 2:
                    bits, s_b, p_b = _uniform(words, low, p_b, s_b, 1 << (n - 1))
                    e = (1 << (n - 1)) + bits
                resid[b, j] += e if resid[b, j] > 0 else -e
        state[b], pos[b] = s_b, p_b
        for j in range(size):
            i = order[b, j]
            out[b, i] = full[b, cells[i]] = resid[b, j] + center[b, i]
