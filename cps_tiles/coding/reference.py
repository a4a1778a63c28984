"""Reference implementation of the integer entropy model, in plain numpy int64.

The spec is :mod:`cps_tiles.transforms.integer`; :class:`~cps_tiles.transforms.integer.IntegerEntropy`
is the fast path (torch, integers carried in float32/float64 and proven exact). This module
computes the same integers a second, independent way: int64 arithmetic only (no floating point
anywhere), convolutions as loops over kernel taps instead of unfolded patches, the transposed
convolutions as four strided planes, and each checkerboard half through a full convolution. It
shares with the fast path only the stored integer parameters and the constants of the spec.
The two must agree on every symbol's parameters (tested, and checked over whole stores by
``benchmarks/integer_entropy.py``); it is slow (about a second per chunk) and for checking only.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from ..errors import CorruptChunkError
from ..transforms.arithmetic import (
    ACT,
    CODE_ONE,
    EXP2_BITS,
    GAIN_BITS,
    INPUT_SHIFT,
    LEAKY_MUL,
    LEAKY_SHIFT,
    LOG_BITS,
    LOG_MAX,
    LOG_MIN,
    MEAN_BITS,
    MEAN_FRAC_BITS,
    MEAN_MAX,
    RAW_MAX,
    SIGMA_CLASSES,
    SIGMA_LOG0,
    SIGMA_STEP,
    U_BITS,
)
from ..transforms.geometry import Geometry
from ..transforms.integer import FORMATS
from .bitstream import ChunkCoder, streams


def _layer(p: dict[str, np.ndarray], x: np.ndarray, activation: bool) -> np.ndarray:
    """One integer layer on int64 ``x [N, K]`` (``p``: weight, bias, mult, shift)."""
    return _requant(p, x @ p["weight"].T, activation)


def _requant(p: dict[str, np.ndarray], acc: np.ndarray, activation: bool) -> np.ndarray:
    s = int(p["shift"])
    out = ((acc + p["bias"]) * p["mult"] + (1 << (s - 1))) >> s
    if not activation:
        return out
    return np.clip(np.where(out >= 0, out, (out * LEAKY_MUL) >> LEAKY_SHIFT), -ACT, ACT)


def _conv(p: dict[str, np.ndarray], x: np.ndarray, first: int, k: int) -> np.ndarray:
    """Accumulator of a ``k x k`` zero-padded convolution of ``x [C, h, w]`` with the weight's input
    channels ``first .. first + C`` -> ``[h*w, O]`` (no bias, not requantized)."""
    c, h, w = x.shape
    weight = p["weight"].reshape(p["weight"].shape[0], -1, k, k)[:, first : first + c]
    pad = k // 2
    padded = np.zeros((c, h + 2 * pad, w + 2 * pad), dtype=np.int64)
    padded[:, pad : pad + h, pad : pad + w] = x
    acc = np.zeros((h * w, weight.shape[0]), dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            acc += padded[:, dy : dy + h, dx : dx + w].reshape(c, h * w).T @ weight[:, :, dy, dx].T
    return acc


class ReferenceEntropy:
    """The integer entropy model from a codec's stored parameters (``model.integer.state_dict()``)."""

    def __init__(self, state: dict, M: int, slices: int, levels: int, spatial: int, entropy: str = "integer") -> None:
        """``entropy``: the codec's arithmetic (``ModelConfig.entropy``), which sets the convolutions'
        input format (``FORMATS``)."""
        self.format = FORMATS[entropy]
        arrays = {k: np.asarray(v).astype(np.int64) for k, v in state.items()}
        self.M, self.slices, self.width, self.levels, self.k = M, slices, M // slices, levels, spatial

        def layer(prefix: str) -> dict[str, np.ndarray]:
            return {n: arrays[f"{prefix}.{n}"] for n in ("weight", "bias", "mult", "shift")}

        self.hyper_layers = [layer(f"hyper_layers.{i}") for i in range(3)]
        self.nets = [[layer(f"nets.{k}.{i}") for i in range(3)] for k in range(slices)]
        self.convs = [layer(f"convs.{k}") for k in range(slices)]
        self.heads = [[layer(f"heads.{k}.{i}") for i in range(3)] for k in range(slices)]
        self.log_table, self.log_gain, self.exp2_table = arrays["log_table"], arrays["log_gain"], arrays["exp2_table"]

    @classmethod
    def of(cls, model) -> ReferenceEntropy:
        """From a loaded cps-v4, cps-v5 or cps-v6 :class:`~cps_tiles.transforms.model.CPSModel`."""
        c = model.config
        state = {k: v.numpy() for k, v in model.integer.state_dict().items()}
        return cls(state, c.M, c.slices, c.levels, c.spatial, c.entropy)

    def _exp2(self, x: np.ndarray) -> np.ndarray:
        e, frac = x >> GAIN_BITS, x & ((1 << GAIN_BITS) - 1)
        v = self.exp2_table[frac >> (GAIN_BITS - EXP2_BITS)]
        return np.where(e >= 0, v << np.maximum(e, 0), v >> np.maximum(-e, 0))

    def hyper(self, z_hat: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(z_hat, dtype=np.int64)
        for p in self.hyper_layers[:2]:
            c, a, b = x.shape
            cells = x.reshape(c, -1).T
            rows = {n: p[n].reshape(-1, 2, 2, *p[n].shape[1:]) for n in ("weight", "bias", "mult")}
            out = None
            for dy in range(2):
                for dx in range(2):
                    q = {n: rows[n][:, dy, dx] for n in rows} | {"shift": p["shift"]}
                    plane = _layer(q, cells, True).T.reshape(-1, a, b)
                    if out is None:
                        out = np.zeros((plane.shape[0], 2 * a, 2 * b), dtype=np.int64)
                    out[:, dy::2, dx::2] = plane
            x = out
        x = x[:, :h, :w]
        params = _layer(self.hyper_layers[2], x.reshape(x.shape[0], -1).T, False).T.reshape(-1, h, w)
        mean = np.clip(params[: self.M], -MEAN_MAX, MEAN_MAX)
        log = self.log_table[np.clip(params[self.M :], -RAW_MAX, RAW_MAX) + RAW_MAX]
        return mean, log

    def parts(self, mean: np.ndarray, log: np.ndarray,
              q100: int) -> Generator[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, None]:
        m_ch, h, w = mean.shape
        wd, n = self.width, h * w
        i = min((q100 - 100) // 100, self.levels - 2)
        t = q100 - 100 - 100 * i
        lg = self.log_gain[i] + ((self.log_gain[i + 1] - self.log_gain[i]) * t) // 100
        gain, inv_gain, log_gain = self._exp2(lg), self._exp2(-lg), lg >> (GAIN_BITS - LOG_BITS)
        code = np.zeros(self.levels, dtype=np.int64)
        code[i], code[i + 1] = CODE_ONE - t, t
        codes = np.broadcast_to(code, (n, self.levels))
        rows, cols = np.divmod(np.arange(n), w)
        anchor = (rows + cols) % 2 == 0
        u = np.zeros((m_ch, h, w), dtype=np.int64)  # y_hat / gain, Q4: the channel nets' input
        uc = np.zeros((m_ch, h, w), dtype=np.int64)  # the same in the convolutions' format
        fmt = self.format
        to_input = lambda x: np.clip(x >> INPUT_SHIFT, -ACT, ACT)  # noqa: E731
        hyper_in = [to_input(mean.reshape(m_ch, n).T), to_input(log.reshape(m_ch, n).T)]
        for k in range(self.slices):
            cut = slice(k * wd, (k + 1) * wd)
            x = np.concatenate([*hyper_in, codes, u[: k * wd].reshape(k * wd, n).T], axis=1)
            for j, p in enumerate(self.nets[k]):
                x = _layer(p, x, j < 2)
            slice_mean = np.clip(mean[cut].reshape(wd, n).T + x[:, :wd], -MEAN_MAX, MEAN_MAX)
            slice_log = np.clip(log[cut].reshape(wd, n).T + x[:, wd:], LOG_MIN, LOG_MAX)
            conv = self.convs[k]
            shared = _conv(conv, uc[: k * wd], 0, self.k)
            for half in (0, 1):
                cells = np.flatnonzero(anchor == (half == 0))
                acc = shared + (_conv(conv, uc[cut] * anchor.reshape(h, w), k * wd, self.k) if half else 0)
                feat = _requant(conv, acc, True)[cells]
                x = np.concatenate([feat, to_input(slice_mean[cells]), to_input(slice_log[cells]), codes[cells],
                                    np.full((len(cells), 1), half, dtype=np.int64)], axis=1)
                for j, p in enumerate(self.heads[k]):
                    x = _layer(p, x, j < 2)
                m = np.clip(slice_mean[cells] + x[:, :wd], -MEAN_MAX, MEAN_MAX).T
                lgs = np.clip(slice_log[cells] + x[:, wd:], LOG_MIN, LOG_MAX).T
                shift = GAIN_BITS + MEAN_BITS - MEAN_FRAC_BITS
                mean3 = (m * gain[cut, None] + (1 << (shift - 1))) >> shift
                cls = np.clip((lgs + log_gain[cut, None] - SIGMA_LOG0 + SIGMA_STEP // 2) // SIGMA_STEP, 0,
                              SIGMA_CLASSES - 1)
                flat = (np.arange(k * wd, (k + 1) * wd)[:, None] * n + cells[None, :]).ravel()
                values = yield flat, cls.reshape(1, -1), mean3.reshape(1, -1)  # a batch of one, as the fast path
                y = np.asarray(values, dtype=np.int64).reshape(wd, len(cells))
                for out, bits, bound in ((u, U_BITS, ACT), (uc, fmt.u_bits, fmt.act)):
                    unit = (y * inv_gain[cut, None] + (1 << (GAIN_BITS - bits - 1))) >> (GAIN_BITS - bits)
                    out[cut].reshape(wd, n)[:, cells] = np.clip(unit, -bound, bound)


def reference_decode(model, data: bytes) -> np.ndarray:
    """Decode one chunk of a cps-v4, cps-v5 or cps-v6 ``model`` with the reference parameters -> y_hat int16
    ``[M, h, w]``. Header checks, the z stream and the y stream's ANS coder and tables are the
    codec's own (:class:`~cps_tiles.coding.bitstream.ChunkCoder`); only the parameters differ.
    Builds its coder each call: a checking tool, not a decoder."""
    coder = ChunkCoder(model)
    q, h, w, lo, hi, z_len, _ = coder.read_header(data)
    if lo == hi:
        return np.full((coder.M, h, w), lo, dtype=np.int16)
    ref = ReferenceEntropy.of(model)
    block = Geometry.of(model).hyper_block
    z_bytes, y_bytes = streams(data, z_len)
    z = coder.z_density.decompress(z_bytes, (coder.Nz, -(-h // block), -(-w // block)))
    parts = ref.parts(*ref.hyper(z, h, w), round(q * 100))
    (y,) = coder.tables.decompress_reference([y_bytes], parts, coder.M * h * w)
    if y.min() < lo or y.max() > hi:
        raise CorruptChunkError("chunk stream decodes outside its declared range")
    return y.reshape(coder.M, h, w).astype(np.int16)
