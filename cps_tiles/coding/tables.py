"""Table-driven coding of y_hat: quantized Gaussians precomputed once, chosen by integer parameters.

The integer entropy model (:mod:`cps_tiles.transforms.integer`) gives each symbol a sigma class
``c`` and a mean in y_hat units Q3. Together they pick one of the fixed tables of
``table_layout()`` and a center::

    c < FLAT_CLASS:  table (c, mean & 7), center = mean >> 3       (the fraction shifts the Gaussian)
    c >= FLAT_CLASS: table (c, 0),        center = (mean + 4) >> 3  (rounded; sigma >= 4)
    symbol = y_hat - center + R, clipped to [0, 2R]; the end symbols are escapes (|r| >= R): after
    the part's symbols, each escape's excess e = |r| - R follows as n = bit_length(e) (uniform over
    0..16) and e's low n - 1 bits

A table is a list of integer counts summing to 2^24 (each >= 1), computed once when the codec is
exported and stored with its weights (``IntegerEntropy.counts``), never recomputed where it
decodes: two coders that agree on the tables and the parameters agree on every bit.

Within a coding part (a slice's checkerboard half), symbols go in groups of one table, in table
order, cells in order inside a group, so the ANS coder runs on a handful of fixed models instead
of evaluating a Gaussian per symbol.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import constriction
import numpy as np

from ..transforms.arithmetic import FLAT_CLASS, MEAN_FRAC_BITS
from ..transforms.integer import sigma_of_class, table_layout
from .ans import ESCAPE_LENGTHS, StackDecoders, bucket_lookup, decode_part, model_cdfs

COUNT_BITS = 24  # constriction's categorical models work to 24 bits

#: the coded parts of a batch of chunks (``IntegerEntropy.parts``): yields (cells [P], classes [B, P],
#: means Q3 [B, P]), is sent the values [B, P]
Parts = Generator[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, None]


def build_counts() -> np.ndarray:
    """Every table's counts, concatenated in ``table_layout()`` order (int32): discrete Gaussians
    of sigma ``sigma_of_class(c)`` around the mean fraction ``f / 8`` (0 for rounded means),
    tails folded into the end symbols. Export-time only: decoders read the stored counts."""
    out = []
    for c, f, r in table_layout():
        sigma, mu = sigma_of_class(c), f / (1 << MEAN_FRAC_BITS)
        edges = (np.arange(-r, r) + 0.5 - mu) / sigma  # bin edges between symbols 0..2r
        cdf = np.array([0.5 * math.erfc(-e / math.sqrt(2)) for e in edges])
        pmf = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
        # every symbol keeps at least 1 count (escapes and outliers stay codable), and the rest
        # is shared by probability: the sum never exceeds the total, the remainder goes to the mode
        counts = 1 + np.floor(pmf * ((1 << COUNT_BITS) - len(pmf))).astype(np.int64)
        counts[np.argmax(counts)] += (1 << COUNT_BITS) - counts.sum()
        out.append(counts)
    return np.concatenate(out).astype(np.int32)


class TableCoder:
    """Codes y_hat parts with the stored tables (``counts``: ``IntegerEntropy.counts``)."""

    def __init__(self, counts: np.ndarray) -> None:
        layout = table_layout()
        self.radius = np.array([r for *_, r in layout], dtype=np.int64)
        ends = np.cumsum(2 * self.radius + 1)
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (ends[-1],):
            raise ValueError(f"expected {ends[-1]} table counts, got {counts.shape}")
        # counts / 2^24 are exact in float64, and constriction quantizes them the same way everywhere
        self.models = [constriction.stream.model.Categorical(counts[e - 2 * r - 1 : e] / (1 << COUNT_BITS), perfect=False)
                       for e, r in zip(ends, self.radius)]
        self._escape_length = constriction.stream.model.Uniform(ESCAPE_LENGTHS)
        self._escape_bits = [None] + [constriction.stream.model.Uniform(1 << b) for b in range(1, ESCAPE_LENGTHS - 1)]
        self._cdf, self._cdf_start = model_cdfs(counts.astype(np.int64), 2 * self.radius + 1)
        self._lookup = bucket_lookup(self._cdf, self._cdf_start, 2 * self.radius + 1)

    @staticmethod
    def select(cls: np.ndarray, mean3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sigma classes and Q3 means -> (table index, center) per symbol (int64)."""
        frac = 1 << MEAN_FRAC_BITS
        small = cls < FLAT_CLASS
        table = np.where(small, cls * frac + (mean3 & (frac - 1)), FLAT_CLASS * frac + cls - FLAT_CLASS)
        center = np.where(small, mean3 >> MEAN_FRAC_BITS, (mean3 + frac // 2) >> MEAN_FRAC_BITS)
        return table, np.clip(center, -32768, 32767)

    def _groups(self, cls: np.ndarray, mean3: np.ndarray):
        """Parts' coding order, for ``cls``, ``mean3`` ``[B, P]`` (a part of each of B chunks) ->
        (positions sorted by table ``[B, P]``, tables in that order ``[B, P]``, centers ``[B, P]``)."""
        table, center = self.select(np.asarray(cls, np.int64), np.asarray(mean3, np.int64))
        # table indices fit 16 bits, where numpy's stable sort is a radix sort
        order = np.argsort(table.astype(np.uint16), axis=-1, kind="stable")
        return order, np.take_along_axis(table, order, -1), center

    @staticmethod
    def _runs(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted table indices ``[P]`` -> (bounds of each run of one table, its table)."""
        # none for an empty part (a 1x1 chunk's second half)
        starts = np.flatnonzero(np.concatenate([[len(ts) > 0], ts[1:] != ts[:-1]]))
        return np.append(starts, len(ts)), ts[starts]

    def compress(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
        """One chunk's (values [P], classes [1, P], means Q3 [1, P]) per part (``entropy.run_parts`` over
        ``IntegerEntropy.parts`` for a batch of one), in coding order -> bytes."""
        coder = constriction.stream.stack.AnsCoder()
        for values, cls, mean3 in reversed(parts):  # a stack: the last symbol goes in first
            order, ts, center = (a[0] for a in self._groups(cls, mean3))
            bounds, tables = self._runs(ts)
            resid = np.asarray(values, np.int64)[order] - center[order]
            radius = self.radius[ts]
            escaped = np.abs(resid) >= radius
            for e in (np.abs(resid[escaped]) - radius[escaped])[::-1]:  # the part's escapes follow its symbols
                n = int(e).bit_length()
                if n >= 2:
                    coder.encode_reverse(np.array([int(e) - (1 << (n - 1))], np.int32), self._escape_bits[n - 1])
                coder.encode_reverse(np.array([n], np.int32), self._escape_length)
            sym = (np.clip(resid, -radius, radius) + radius).astype(np.int32)
            for g in range(len(tables) - 1, -1, -1):
                coder.encode_reverse(sym[bounds[g] : bounds[g + 1]], self.models[tables[g]])
        return coder.get_compressed().tobytes()

    def decompress(self, datas: list[bytes], parts: Parts, size: int) -> list[np.ndarray]:
        """B chunks' y streams -> the ``size`` integers of each ``y_hat.ravel()``, decoded in lockstep,
        part after part (``IntegerEntropy.parts``: yields ``(cells [P], classes [B, P], means Q3
        [B, P])``, is sent the decoded ``[B, P]``), by the compiled decoder (``ans.py``)."""
        coders = StackDecoders(datas)
        args = (coders.words, coders.start, coders.pos, coders.state)
        return self._lockstep(len(datas), parts, size, lambda cells, cls, mean3, values, out: decode_part(
            *args, np.ascontiguousarray(cls, np.int32), np.ascontiguousarray(mean3, np.int32),
            self._cdf, self._cdf_start, *self._lookup, self.radius, values, np.asarray(cells), out))

    def decompress_reference(self, datas: list[bytes], parts: Parts, size: int) -> list[np.ndarray]:
        """``decompress`` by constriction's own decoder: the independent check of ``ans.py``."""
        coders = [constriction.stream.stack.AnsCoder(np.frombuffer(d, dtype=np.uint32).copy()) for d in datas]

        def decode(cells, cls, mean3, values, out):
            orders, sorted_tables, centers = self._groups(cls, mean3)
            for coder, order, ts, center, row in zip(coders, orders, sorted_tables, centers, values):
                row[order] = self._decode_part(coder, ts) + center[order]
            out[:, np.asarray(cells)] = values
        return self._lockstep(len(datas), parts, size, decode)

    @staticmethod
    def _lockstep(count: int, parts: Parts, size: int, decode) -> list[np.ndarray]:
        """Drive ``parts`` for ``count`` chunks, ``decode(cells, classes, means Q3, values, out)`` filling each
        part's values ``[B, P]`` and their ``cells`` of ``out [B, size]``."""
        out = np.zeros((count, size), dtype=np.int32)
        cells, cls, mean3 = next(parts)
        while True:
            values = np.empty(np.shape(cls), dtype=np.int32)
            decode(cells, cls, mean3, values, out)
            try:
                cells, cls, mean3 = parts.send(values)
            except StopIteration:
                return list(out)

    def _decode_part(self, coder, ts: np.ndarray) -> np.ndarray:
        """One chunk's part from ``coder``, given its symbols' tables in coding order -> residuals."""
        bounds, tables = self._runs(ts)
        decode, models, sizes = coder.decode, self.models, np.diff(bounds).tolist()
        sym = np.concatenate([np.zeros(0, np.int32)] + [decode(models[t], k) for t, k in zip(tables.tolist(), sizes)])
        radius = self.radius[ts]
        resid = sym.astype(np.int64) - radius
        for i in np.flatnonzero(np.abs(resid) == radius):  # escapes, in order
            n = int(decode(self._escape_length))
            e = ((1 << (n - 1)) + int(decode(self._escape_bits[n - 1]))) if n >= 2 else n
            resid[i] += e if resid[i] > 0 else -e
        return resid
