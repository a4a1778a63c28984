"""Integer entropy model: the hyper synthesis and the entropy context in exact integer arithmetic.

The ANS coder must see the same parameters on the encoder and on every decoder: one differing
parameter derails the rest of a chunk. Here every parameter is an integer computed from integers
by additions, multiplications, shifts, clips and table lookups, so it is the same on any machine,
by construction. This module, with the constants of :mod:`cps_tiles.transforms.arithmetic`, is the
one statement of that arithmetic (the spec); the fast path
is :class:`IntegerEntropy` (torch), and :mod:`cps_tiles.coding.reference` is an independent numpy
implementation that must agree with it bit for bit.

Data flow for one chunk of ``h x w`` latent cells, ``M`` channels in ``S`` slices of ``W``
(``Q<n>``: an integer standing for itself / 2^n; "unit" values are in unit-gain latent units)::

    z_hat [Nz, h/4, w/4], |z| <= 32
      -> up 2x2/s2 -> leaky -> up 2x2/s2 -> leaky -> 1x1 -> mean  [M,h,w] Q6
                                                      -> raw   [M,h,w] Q5 -> LOG_TABLE -> log2 sigma Q8
    slice k (0..S-1), in turn:
      channel net  [mean/4, log/4, quality code, u of slices < k] -> 1x1 x3 -> (+d_mean Q6, +d_log Q8)
      half 0 (anchors), then half 1 (the other cells):
        feat = conv 5x5 [u of slices < k, and for half 1 slice k's anchors] -> leaky
        head [feat, mean/4, log/4, quality code, half] -> 1x1 x3 -> (+d_mean Q6, +d_log Q8)
        -> per symbol: mean in y_hat units Q3 (x gain), sigma class (log2 sigma + log2 gain)
        -> the coder decodes the half; u = y_hat / gain Q4 feeds the parts after it

Every layer is ``out = clip(act(((x @ W.T + bias) * mult + 2^(shift-1)) >> shift))`` with 10-bit
integer weights ``W`` (a per-output-channel scale folded into ``mult``), ``act`` the integer leaky
ReLU ``x >= 0 ? x : (41 x) >> 12`` or none, and activations bounded by ``ACT``. ``>>`` is a floor
(arithmetic) shift and ``//`` a floor division, everywhere.

The operands' widths are the codec's format, ``FORMATS[arithmetic]``. The spatial convolutions
carry about half of the multiply-adds (52% in r11: ``benchmarks/int8_conv_probe.md``): in
``"integer"`` codecs (cps-v4) they take the other layers' operands (u Q4 within ``ACT``, 10-bit
weights); in ``"integer8"`` (cps-v5) and ``"integer8all"`` (cps-v6) codecs 7-bit operands, u Q1
within +-63 and weights within +-63, whose products run as int8 x int8 -> int32 matrix products
(``torch._int_mm``). 7 bits, not 8: without VNNI, x86 int8 kernels multiply an unsigned byte (the
signed one plus 128) by a signed one and add pairs in a saturating 16-bit ``vpmaddubsw``; with both
operands within 63 a pair stays within 2 * 191 * 63 < 2^15, so no kernel saturates
(``benchmarks/int8_products.md`` shows 8-bit operands going wrong there). In cps-v6 every other
layer's weights lie within +-63 too (trained for it: ``train-context --qat-weight-max 63``); its
inputs, within ``ACT``, are split into two digits, ``x = 2^DIGIT_BITS (x >> DIGIT_BITS) + (x &
(2^DIGIT_BITS - 1))``, each within +-32, so ``x @ W.T`` is two int8 products (``IntegerLinear.digits``).
An input within +-63 is its own low digit instead, its high digit zero; the high digits' product skips the
columns where every high digit is zero (``Columns``: in the hyperprior's last layer and the channel
networks' first ones, such as the hyperprior means' inputs). Either way the
sums are those of ``x @ W.T``. The int32 sums are bounded below 2^31 by ``IntegerLinear.check``.

The fast path (:class:`IntegerEntropy`) takes the networks' products from torch and everything
between them from compiled kernels (:mod:`cps_tiles.transforms.compiled`, numba), which compute
in int64 on the CPU: the networks' inputs, every layer's requantization (read from its accumulator:
``Pending``), the symbol parameters, the decoded values' units. Every such value is an exact integer
(``IntegerLinear.check`` bounds them below 2^53). The products of one slice's neighbourhoods with
the later slices' convolutions run as one product (``IntegerEntropy.stacks``).

On the CPU, layers whose operands fit int8 multiply in int8 -> int32 as above. Elsewhere (other
devices, and cps-v4/v5 layers with 10-bit weights) the products carry the integers in floating
point, so that BLAS does them. A float of p mantissa bits represents every integer below 2^p
exactly, and a sum or product of such integers whose result stays below 2^p is computed exactly,
in any order, with or without FMA, on any IEEE machine. The products ``x @ W.T`` run in float32
(p = 24) over groups of input columns small enough that no partial sum can reach 2^24
(``exact_groups``) and their sums in float64 (p = 53), read into int64 for the requantization.
``IntegerLinear.check`` proves both bounds from the weights, the biases, the multipliers and the
inputs' bounds when a codec loads, so a codec that could overflow is refused, not trusted.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from . import compiled
from .arithmetic import (
    ACT,
    CODE_ONE,
    DIGIT_BITS,
    EXP2_BITS,
    FLAT_CLASS,
    FLOAT32_EXACT,
    FLOAT64_EXACT,
    GAIN_BITS,
    INT8_EXACT,
    INT32_EXACT,
    LOG_BITS,
    LOG_MAX,
    LOG_MIN,
    MEAN_FRAC_BITS,
    RAW_BITS,
    RAW_MAX,
    SIGMA_CLASSES,
    SIGMA_LOG0,
    SIGMA_STEP,
    U_BITS,
    WEIGHT_MAX,
)


@dataclass(frozen=True)
class IntegerFormat:
    """Operands of a codec's integer entropy networks: the spatial context's convolutions take
    u = y_hat / gain in Q``u_bits`` clipped to ``+-act``, with weights within ``+-conv_weight_max``;
    every other layer's weights lie within ``+-weight_max`` (their inputs within ``ACT``)."""

    u_bits: int
    act: int
    conv_weight_max: int
    weight_max: int


#: The operand formats by entropy arithmetic (``ModelConfig.entropy``).
FORMATS = {"integer": IntegerFormat(U_BITS, ACT, WEIGHT_MAX, WEIGHT_MAX),  # cps-v4
           "integer8": IntegerFormat(1, INT8_EXACT, INT8_EXACT, WEIGHT_MAX),  # cps-v5
           "integer8all": IntegerFormat(1, INT8_EXACT, INT8_EXACT, INT8_EXACT)}  # cps-v6


def class_log(c: int) -> int:
    """Class ``c``'s log2 sigma, Q8."""
    return SIGMA_LOG0 + SIGMA_STEP * c


def table_radius(c: int) -> int:
    """Half-width of class ``c``'s tables in y_hat units: 5 sigma rounded up to a power-of-two sigma,
    plus 2 (pure integer arithmetic, so every machine sizes the tables alike). The end symbols
    stand for everything beyond (escape)."""
    e = -(-class_log(c) // 256)  # ceil(log2 sigma)
    return 2 + ((5 << e) if e >= 0 else (5 + (1 << -e) - 1) >> -e)


def table_layout() -> list[tuple[int, int, int]]:
    """(class, mean fraction, radius) of every coding table, in table-index order."""
    frac = 1 << MEAN_FRAC_BITS
    return [(c, f, table_radius(c)) for c in range(SIGMA_CLASSES) for f in range(frac if c < FLAT_CLASS else 1)]


def exact_groups(weight: torch.Tensor, bounds: torch.Tensor) -> list[tuple[int, int]]:
    """Split the ``K`` input columns of ``weight [O, K]`` into contiguous groups in which, for
    inputs bounded by ``bounds [K]``, no partial sum of any output can reach 2^24: a float32
    product over one group is then exact, in any summation order."""
    cost = weight.abs().to(torch.int64) * bounds  # [O, K]
    cum = torch.cat([torch.zeros(weight.shape[0], 1, dtype=torch.int64), cost.cumsum(1)], dim=1)
    groups, start = [], 0
    while start < weight.shape[1]:
        fits = ((cum[:, start:] - cum[:, start : start + 1]) < FLOAT32_EXACT).all(0)  # prefixes of the rest
        end = start + int(fits.long().cumprod(0).sum()) - 1
        if end <= start:
            raise ValueError("a weight times its input bound reaches 2^24")
        groups.append((start, end))
        start = end
    return groups


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """float32 products at full precision whatever the caller set: no autocast to bf16/fp16, no
    TF32 (``set_float32_matmul_precision("highest")``, which also covers CUDA's TF32 flag)."""
    precision = torch.get_float32_matmul_precision()
    if precision == "highest" and not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda"):
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


class Columns(NamedTuple):
    """An int8 product's input ``[N, K]`` (or ``digit_planes``) that holds some of a layer's input columns, in
    some order: those that may hold a nonzero (a convolution skips the channels that are zero in a batch), and
    of digit planes those whose high digits are all zero first (the inputs within +-INT8_EXACT: ``compiled._put``),
    so that the high digits' product skips them. The data decide (a batch's), so this comes with the input;
    the products are the same integers."""

    order: np.ndarray  #: int64 ``[>= K]``: the input column (its weights' row in ``_plan``) each column holds
    small: int  #: of digit planes, how many leading columns have high digits that are all zero


class Pending(NamedTuple):
    """A layer's output before its requantization, as the compiled kernels read it (``compiled._layer_row``):
    the kernel that reads a layer's output requantizes it as it reads, in one pass over memory."""

    acc: np.ndarray  #: the accumulator ``[N, O]`` (int32 from int8 products, else int64), or the digit products ``[2N, O]``
    digits: bool  #: whether ``acc`` is the products of the input's two digits (``IntegerLinear.digits``)
    offset: np.ndarray  #: int64 ``[O]``: ``bias * mult + 2^(shift-1)``
    mult: np.ndarray  #: int64 ``[O]``
    shift: int
    activation: bool  #: a hidden layer: the integer leaky ReLU and the clip to ``+-ACT`` follow


class IntegerLinear(nn.Module):
    """One integer layer ``[N, K] -> [N, O]`` (integers carried in float64): see the module docstring.

    Buffers (the codec's weights): ``weight`` int16 ``[O, K]`` (``|w| <= weight_max``), ``bias`` and
    ``mult`` int64 ``[O]`` (accumulator units, and the requantizing multiplier), ``shift`` int64
    ``[]``. ``bounds`` ``[K]`` (not stored: the architecture's input bounds) make the exactness proof.
    With ``weight_max`` within ``INT8_EXACT``, the products run as int8 products on the CPU
    (``accumulate``): one if every bound is within it too (``int8``), else one per input digit
    (``digits``).
    """

    def __init__(self, inputs: int, outputs: int, bounds: list[int], activation: bool,
                 weight_max: int = WEIGHT_MAX) -> None:
        super().__init__()
        self.weight_max = weight_max
        self._bound_max = max(bounds)
        self.register_buffer("weight", torch.zeros(outputs, inputs, dtype=torch.int16))
        self.register_buffer("bias", torch.zeros(outputs, dtype=torch.int64))
        self.register_buffer("mult", torch.ones(outputs, dtype=torch.int64))
        self.register_buffer("shift", torch.tensor(1, dtype=torch.int64))
        if len(bounds) != inputs:
            raise ValueError(f"bounds must have {inputs} entries")
        self.bounds = torch.tensor(bounds, dtype=torch.int64)
        self.activation = activation
        self._int_params: tuple[np.ndarray, np.ndarray, int] | None = None
        self._groups: dict[tuple, list[tuple[int, int, torch.Tensor]]] = {}

    def check(self) -> None:
        """Prove that every accumulator and requantizing product stays below 2^53 (else ValueError);
        the float32 groups are proven as they are made (``exact_groups``)."""
        if int(self.weight.abs().max()) > self.weight_max or int(self.mult.min()) < 0 or not 1 <= int(self.shift) < 62:
            raise ValueError("integer layer parameters out of range")
        products = (self.weight.abs().to(torch.int64) * self.bounds).sum(1)  # |x @ W.T|
        if self.int8 and int(products.max()) >= INT32_EXACT:
            raise ValueError("an int8 layer's products can reach 2^31: not exact in int32")
        # a digit layer's int32 sums: (x >> DIGIT_BITS) << DIGIT_BITS and x & (2^DIGIT_BITS - 1) both lie within
        # |x| + 2^DIGIT_BITS (a negative x of a small bound has a large low digit), and so does their sum's total;
        # an x within INT8_EXACT (its own low digit) lies within |x| too
        digit = (self.weight.abs().to(torch.int64) * (self.bounds + (1 << DIGIT_BITS))).sum(1)
        if self.digits and int(digit.max()) >= INT32_EXACT:
            raise ValueError("an int8 layer's digit products can reach 2^31: not exact in int32")
        acc = products + self.bias.abs()  # |x @ W.T + bias|
        worst = max(int(a) * int(m) for a, m in zip(acc, self.mult)) + (1 << (int(self.shift) - 1))
        if worst >= FLOAT64_EXACT:
            raise ValueError(f"an integer layer can reach {worst} >= 2^53: not exact in float64")

    def _plan(self, lo: int, hi: int, taps: int, int8: bool = False) -> list[tuple[int, int, torch.Tensor]]:
        """The exact float32 groups of columns ``lo:hi``, each with its weights ``[k, O]``, or with
        ``int8`` one group, its weights int8 (exact whole: ``check``); with ``taps`` > 1 the block's
        columns (channel, tap) are taken in (tap, channel) order."""
        key = (lo, hi, taps, int8, self.weight.device)  # the weights may have moved since (``to``)
        if key not in self._groups:
            w, bounds = self.weight[:, lo:hi].cpu(), self.bounds[lo:hi]
            if taps > 1:
                w = w.reshape(w.shape[0], -1, taps).transpose(1, 2).reshape(w.shape[0], -1)
                bounds = bounds.view(-1, taps).t().reshape(-1)
            groups = [(0, w.shape[1], w.t().to(torch.int8))] if int8 else [(a, b, w[:, a:b].t().float())
                                                                           for a, b in exact_groups(w, bounds)]
            self._groups[key] = [(a, b, g.contiguous().to(self.weight.device)) for a, b, g in groups]
        return self._groups[key]

    @property
    def int8(self) -> bool:
        """Whether the weights and every input bound lie within ``INT8_EXACT`` (so the products are int8
        ones on the CPU); follows ``weight_max``, which a probe may lower (``quantize_entropy``)."""
        return self._cpu_operands() == torch.int8

    @property
    def digits(self) -> bool:
        """Whether the weights lie within ``INT8_EXACT`` and the inputs beyond it but within ``ACT`` (so the
        products are int8 ones of each input digit on the CPU: ``DIGIT_BITS``)."""
        return self._cpu_operands() == torch.int16

    def _cpu_operands(self) -> torch.dtype:
        """How the products take the input on the CPU: int8, int16 (its digits: ``digits``) or float32."""
        if self.weight_max <= INT8_EXACT and self._bound_max <= ACT:
            return torch.int8 if self._bound_max <= INT8_EXACT else torch.int16
        return torch.float32

    def input_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype ``accumulate`` reads its input in on ``device``, the one callers best carry it in: on
        the CPU int8 for an int8 layer and int16 for a ``digits`` one (which also takes its input as
        ``digit_planes``); float32 elsewhere."""
        return self._cpu_operands() if device.type == "cpu" else torch.float32

    def digit_planes(self, x: torch.Tensor) -> torch.Tensor:
        """A ``digits`` layer's input ``x [N, K]`` (integers within ACT) as its digits ``[2, N, K]`` int8, ``x >>
        DIGIT_BITS`` (a floor) and ``x & (2^DIGIT_BITS - 1)``: the form its products read, made once for
        an input several products share."""
        planes = torch.empty((2, *x.shape), dtype=torch.int8)
        compiled.split_digits(x.numpy(), planes.numpy())
        return planes

    def accumulate(self, x: torch.Tensor, lo: int = 0, hi: int | None = None, taps: int = 1,
                   final: bool = False, into: torch.Tensor | None = None, columns: Columns | None = None) -> torch.Tensor:
        """``x [N, hi-lo]`` (integers within ``bounds``) @ ``weight[:, lo:hi].T`` -> ``[N, O]``, exact
        integers (int32 from int8 products, else float64). ``taps``: the block is a convolution's
        (channel, tap) columns, and ``x`` has them in (tap, channel) order (``_patches``). ``final``:
        the caller adds nothing to the result, so a block of one exact group may come back as its
        float32 product (exact; ``pending_sum`` reads it into int64). An int8 layer on the CPU takes
        ``x`` as int8 and multiplies in int8 -> int32 (``torch._int_mm``), and a ``digits`` layer there
        multiplies the two digits of ``x`` so and keeps their sums apart, ``[2N, O]`` int32, the high
        digits' first (``Pending.digits``: combined as they requantize; exact: ``check``); elsewhere it
        takes the float32 path, its weights split into exact groups. ``x`` may come in any dtype that
        holds its integers (``input_dtype``: the one that needs no conversion), or as ``digit_planes``,
        with ``columns`` if their columns are reordered (``Columns``).
        ``into``: an accumulator of that form (``accumulator_dtype``) the products are added to, and returned."""
        hi = self.weight.shape[1] if hi is None else hi
        dtype = self.input_dtype(x.device)
        if dtype != torch.float32:
            weights = self._plan(lo, hi, taps, True)[0][2]
            if columns is not None:
                weights = torch.from_numpy(weights.numpy()[columns.order[: x.shape[-1]]])
            out = torch._int_mm(x.to(torch.int8), weights) if dtype == torch.int8 else self._digit_products(x, weights, columns)
            return out if into is None else into.add_(out)
        if columns is not None:
            raise ValueError("selected or reordered columns are those of int8 products")
        x32 = x.float()
        groups = self._plan(lo, hi, taps)
        out = x32[:, groups[0][0] : groups[0][1]] @ groups[0][2]
        if final and len(groups) == 1 and into is None:
            return out
        out = out.double() if into is None else into.add_(out)
        for a, b, w in groups[1:]:
            out.add_(x32[:, a:b] @ w)  # the float32 product is read into float64 as it is added
        return out

    def accumulator_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype of ``accumulate``'s sums on ``device``: int32 from int8 products, float64 else."""
        return torch.int32 if self.input_dtype(device) != torch.float32 else torch.float64

    def _digit_products(self, x: torch.Tensor, weights: torch.Tensor, columns: Columns | None) -> torch.Tensor:
        """Both digits' products of a ``digits`` layer's input ``x [N, K]`` (or its ``digit_planes``) with ``weights
        [K, O]`` int8 in one int8 product, or with ``columns`` in two, the high digits' without the columns where
        they are all zero: ``[2N, O]`` int32, the high digits' in the first N rows."""
        x = x if x.dim() == 3 else self.digit_planes(x)
        if columns is None or not columns.small:
            return torch._int_mm(x.view(-1, x.shape[2]), weights)
        n, small = x.shape[1], columns.small
        out = torch.empty(2 * n, weights.shape[1], dtype=torch.int32)
        if small < x.shape[2]:
            torch._int_mm(x[0, :, small:], weights[small:], out=out[:n])
        else:
            out[:n] = 0
        torch._int_mm(x[1], weights, out=out[n:])
        return out

    def pending(self, x: torch.Tensor, columns: Columns | None = None) -> Pending:
        """The layer on ``x [N, K]`` (or its ``digit_planes``), not yet requantized."""
        return self.pending_sum(self.accumulate(x, final=True, columns=columns))

    def pending_sum(self, acc: torch.Tensor) -> Pending:
        """An accumulator from ``accumulate`` on the layer's device as a ``Pending``: int32 as it is (a
        ``digits`` layer's digit sums apart), float-carried integers as int64 (exact: ``check``)."""
        if self._int_params is None:
            self.check()
            shift = int(self.shift)
            self._int_params = ((self.bias * self.mult + (1 << (shift - 1))).numpy(), self.mult.numpy().copy(), shift)
        values = acc.numpy(force=True) if acc.dtype == torch.int32 else _int64(acc)
        return Pending(values, self.takes_planes(acc.device), *self._int_params, self.activation)

    @staticmethod
    def output(pending: Pending, planes: bool = False) -> np.ndarray:
        """A pending output requantized (``compiled.requantize``): ``[N, O]`` int16 for a hidden layer and
        int64 for the last, or with ``planes`` its ``digit_planes`` (the input of a ``digits`` layer)."""
        n = pending.acc.shape[0] // 2 if pending.digits else pending.acc.shape[0]
        dtype = np.int8 if planes else np.int16 if pending.activation else np.int64
        out = np.empty((2 if planes else 1, n, pending.acc.shape[1]), dtype)
        compiled.requantize(*pending, out)
        return out if planes else out[0]

    def takes_planes(self, device: torch.device) -> bool:
        """Whether the layer reads ``digit_planes`` on ``device``."""
        return self.input_dtype(device) == torch.int16

    @classmethod
    def stacked(cls, layers: list[IntegerLinear], columns: range | list[int]) -> IntegerLinear:
        """The products of one input with ``columns`` of several layers: a layer whose outputs are theirs in
        turn, for ``accumulate`` only (one product where they would take one each). Its sums are sums over
        a subset of each layer's columns, which that layer's ``check`` bounds."""
        columns = list(columns)
        out = cls(len(columns), sum(la.weight.shape[0] for la in layers), layers[0].bounds[columns].tolist(), False,
                  max(la.weight_max for la in layers))
        out.weight = torch.cat([la.weight[:, columns] for la in layers])
        return out

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._int_params = None
        self._groups.clear()
        super()._load_from_state_dict(*args, **kwargs)


def _net(inputs: int, hidden: int, outputs: int, bounds: list[int], weight_max: int) -> nn.ModuleList:
    return nn.ModuleList([IntegerLinear(inputs, hidden, bounds, True, weight_max),
                          IntegerLinear(hidden, hidden, [ACT] * hidden, True, weight_max),
                          IntegerLinear(hidden, outputs, [ACT] * hidden, False, weight_max)])


def _last_pending(net: nn.ModuleList | list[IntegerLinear], x: torch.Tensor, columns: Columns | None = None) -> Pending:
    """A network's layers on ``x``, the last one ``pending`` (for the kernel that reads its output)."""
    pending = net[0].pending(x, columns)
    for layer in net[1:]:
        pending = layer.pending(_on(IntegerLinear.output(pending, layer.takes_planes(x.device)), x.device))
    return pending


class IntegerEntropy(nn.Module):
    """The integer hyper synthesis and entropy context of a codec (``ModelConfig.entropy ==
    "integer"``): ``hyper`` (z_hat -> hyperprior means and log scales) and ``parts`` (the coding
    parts of a chunk in turn, each part's symbol parameters from the values before it)."""

    def __init__(self, M: int, N: int, Nz: int, slices: int, hidden: int, levels: int, spatial: int,
                 spatial_hidden: int, z_support: int, fmt: IntegerFormat = FORMATS["integer"]) -> None:
        """``fmt``: the layers' operand format (``FORMATS``)."""
        super().__init__()
        if not (slices and spatial):
            raise ValueError("the integer entropy model has a channel and a spatial context")
        self.M, self.slices, self.width, self.levels, self.spatial = M, slices, M // slices, levels, spatial
        self.format = fmt
        w, taps = self.width, spatial * spatial
        wmax = fmt.weight_max
        self.hyper_layers = nn.ModuleList([
            IntegerLinear(Nz, 4 * N, [z_support] * Nz, True, wmax),
            IntegerLinear(N, 4 * (3 * M // 2), [ACT] * N, True, wmax),
            IntegerLinear(3 * M // 2, 2 * M, [ACT] * (3 * M // 2), False, wmax)])
        self.nets = nn.ModuleList(_net(2 * M + levels + k * w, hidden, 2 * w,
                                       [ACT] * (2 * M) + [CODE_ONE] * levels + [ACT] * (k * w), wmax) for k in range(slices))
        self.convs = nn.ModuleList(IntegerLinear((k + 1) * w * taps, spatial_hidden, [fmt.act] * ((k + 1) * w * taps), True,
                                                 fmt.conv_weight_max) for k in range(slices))
        self.heads = nn.ModuleList(_net(spatial_hidden + 2 * w + levels + 1, spatial_hidden, 2 * w,
                                        [ACT] * (spatial_hidden + 2 * w) + [CODE_ONE] * levels + [1], wmax)
                                   for _ in range(slices))
        self.register_buffer("log_table", torch.zeros(2 * RAW_MAX + 1, dtype=torch.int64))
        self.register_buffer("log_gain", torch.zeros(levels, M, dtype=torch.int64))
        self.register_buffer("exp2_table", torch.zeros(1 << EXP2_BITS, dtype=torch.int64))
        layout = table_layout()
        self.register_buffer("counts", torch.zeros(sum(2 * r + 1 for *_, r in layout), dtype=torch.int32))
        self._stacks: tuple[list[IntegerLinear], list[IntegerLinear]] | None = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._stacks = None
        super()._load_from_state_dict(*args, **kwargs)

    def stacks(self) -> tuple[list[IntegerLinear], list[IntegerLinear]]:
        """The convolutions' products, each as one ``IntegerLinear.stacked``: for each slice j but the last,
        the later convolutions on slice j's neighbourhoods; and each convolution on its own slice's
        anchors around the other cells (``anchor_taps``: the other taps read cells still zero). Made from
        the layers' weights where they are (again after the model moved)."""
        if self._stacks is None or self._stacks[1][0].weight.device != self.log_gain.device:
            wd, taps = self.width, self.spatial**2
            own = self.anchor_taps()
            self._stacks = ([IntegerLinear.stacked(list(self.convs[j + 1 :]), range(j * wd * taps, (j + 1) * wd * taps))
                             for j in range(self.slices - 1)],
                            [IntegerLinear.stacked([conv], [(k * wd + c) * taps + t for c in range(wd) for t in own])
                             for k, conv in enumerate(self.convs)])
        return self._stacks

    def anchor_taps(self) -> np.ndarray:
        """The taps ``dy * spatial + dx`` of a cell of the second checkerboard half that fall on the first
        (the anchors): ``dy + dx`` odd."""
        k = self.spatial
        return np.array([t for t in range(k * k) if (t // k + t % k) % 2])

    def check(self) -> None:
        """Prove every layer exact (``IntegerLinear.check`` and its float32 groups), else ValueError."""
        for layer in self.modules():
            if isinstance(layer, IntegerLinear):
                layer.check()
                layer._plan(0, layer.weight.shape[1], 1)  # the float32 groups (an int8 layer off the CPU)

    # -- quality ------------------------------------------------------------------------------
    def _exp2(self, x: torch.Tensor) -> torch.Tensor:
        """2^(x / 2^16), Q16, for int64 ``x``: table lookup and a shift."""
        e = torch.bitwise_right_shift(x, GAIN_BITS)
        v = self.exp2_table[torch.bitwise_right_shift(x & ((1 << GAIN_BITS) - 1), GAIN_BITS - EXP2_BITS)]
        return torch.where(e >= 0, torch.bitwise_left_shift(v, e.clamp(min=0)), torch.bitwise_right_shift(v, (-e).clamp(min=0)))

    def quality(self, q100s: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """B qualities in hundredths -> (gain Q16, 1/gain Q16, log2 gain Q8, each ``[B, M]``; code ``[B, levels]``)."""
        dev = self.log_gain.device
        i = torch.tensor([min((q - 100) // 100, self.levels - 2) for q in q100s], device=dev)
        t = torch.tensor(q100s, device=dev) - 100 - 100 * i
        lg = self.log_gain[i] + torch.div((self.log_gain[i + 1] - self.log_gain[i]) * t[:, None], 100, rounding_mode="floor")
        code = torch.zeros(len(q100s), self.levels, dtype=torch.int64, device=dev)
        rows = torch.arange(len(q100s), device=dev)
        code[rows, i], code[rows, i + 1] = CODE_ONE - t, t
        return self._exp2(lg), self._exp2(-lg), torch.bitwise_right_shift(lg, GAIN_BITS - LOG_BITS), code

    # -- hyperprior ---------------------------------------------------------------------------
    @torch.inference_mode()
    @full_precision()
    def hyper(self, z_hat: torch.Tensor, h: int, w: int) -> np.ndarray:
        """Integer z_hat of B chunks ``[B, Nz, a, b]`` -> the hyperprior's mean Q6 and log2 sigma Q8, int32
        ``[2, B, h, w, M]`` (h <= 4a, w <= 4b; channels last, as ``parts`` reads them)."""
        up1, up2, out = self.hyper_layers
        dev = self.log_gain.device
        nb, _, a, b = z_hat.shape
        x = z_hat.to(dev, up1.input_dtype(dev)).permute(0, 2, 3, 1).reshape(nb * a * b, -1)
        columns = None
        for layer, after, rows, cols in ((up1, up2, 2 * a, 2 * b), (up2, out, h, w)):
            hidden = IntegerLinear.output(layer.pending(x, columns))  # [cells, C*4]
            small = np.zeros(hidden.shape[1] // 4, np.bool_)
            if after.takes_planes(dev):  # the next layer's input channels whose high digits are all zero go first
                compiled.small_channels(hidden, 4, small)
            order = _first(small)
            pixels = np.empty((nb, rows, cols, len(order)), hidden.dtype)
            compiled.unfold_up(hidden, nb, a, b, rows, cols, order, pixels)
            x, (a, b) = _on(pixels.reshape(nb * rows * cols, -1), dev), (rows, cols)
            columns = Columns(order, int(small.sum())) if small.any() else None
        base = np.empty((2, nb * h * w, self.M), np.int32)  # within +-MEAN_MAX and LOG_MIN..LOG_MAX
        compiled.hyper_params(*out.pending(x, columns), self.log_table.numpy(force=True), base)
        return base.reshape(2, nb, h, w, self.M)

    # -- context ------------------------------------------------------------------------------
    def parts(self, base: np.ndarray, q100s: list[int]):
        """Generator of the coded parts of B chunks' y_hat ``[B, M, h, w]`` (one shape, each chunk at its
        own quality in hundredths; one chunk is a batch of one), in lockstep, slice after slice,
        anchors before the rest: yields ``(cells [P], sigma classes [B, P], means Q3 [B, P])`` (numpy,
        int64 and int32: flat indices into each ``y_hat.ravel()``, and each symbol's class and its mean in y_hat
        units Q3) and is sent back that part's y_hat values ``[B, P]`` (or ``[P]`` for one chunk).
        The networks run once per part for the whole batch, sharing their per-call cost; each chunk
        gets exactly the integers it gets alone (every cell's arithmetic is its own). ``base``: ``hyper``'s
        ``[2, B, h, w, M]``. The networks run on the device of the model's buffers."""
        parts = self._parts(base, q100s)
        values = None
        while True:
            with torch.inference_mode(), full_precision():  # not across the yield: the caller's settings are its own
                try:
                    cells, cls, mean3 = parts.send(values)
                except StopIteration:
                    return
            values = yield cells, cls, mean3

    def _parts(self, base: np.ndarray, q100s: list[int]):
        # Rows are (chunk, cell). The networks' products run on the model's device (IntegerLinear); the
        # glue between them (inputs, requantization, symbol parameters, decoded values) in int64 on the
        # CPU, in compiled passes (compiled.py) that requantize a layer's output as they read it
        # (``Pending``) and write the next network's input in the form its first layer reads (``_inputs``).
        dev = self.log_gain.device
        _, nb, h, w, m_ch = base.shape
        wd, n, pad, fmt = self.width, h * w, self.spatial // 2, self.format
        gain, inv_gain, log_gain, code = (t.numpy(force=True) for t in self.quality(q100s))  # [B, M] / [B, L]
        base = base.reshape(2, nb, n, m_ch)
        index = np.arange(m_ch * n).reshape(m_ch, n)
        anchor = ((np.arange(h)[:, None] + np.arange(w)) % 2 == 0).ravel()
        halves = [np.flatnonzero(anchor), np.flatnonzero(~anchor)]
        rows = [(np.arange(nb)[:, None] * n + cells).ravel() for cells in halves]  # the halves' accumulator rows
        # The channel nets' inputs side by side: the hyperprior's and the quality code, then each decoded
        # slice's u (unit-gain y_hat Q4 within ACT); slice k's net reads the first 2M + L + kW columns.
        shared = 2 * m_ch + self.levels
        net_in = _inputs(self.nets[0][0], dev, nb * n, shared + m_ch)  # every net's first layer reads them alike
        compiled.channel_inputs(base, code, net_in)
        # the hyperprior's means mostly lie within +-INT8_EXACT (so their high digits are zero), its scales never
        columns = _small_columns_first(net_in, shared) if net_in.shape[0] == 2 else None
        # Each slice's convolution accumulates as the slices before it decode: the products of one slice's
        # neighbourhoods with the later slices' weights are one product (``stacks``).
        stack_conv, stack_own = self.stacks()
        all_taps, own_taps = np.arange(self.spatial**2), self.anchor_taps()
        conv_hidden = self.convs[0].weight.shape[0]  # every slice's accumulator side by side, [B*n, hidden * S]
        conv_acc = torch.zeros(nb * n, conv_hidden * self.slices, dtype=self.convs[0].accumulator_dtype(dev), device=dev)
        conv_u = np.zeros((self.slices, nb, n, wd), _numpy_dtype(self.convs[0].input_dtype(dev)))  # u in their format
        no_extra = np.zeros((0, conv_hidden), np.int32)
        params = np.empty((2, nb, n, wd), np.int32)  # the slice's mean Q6 and log2 sigma Q8
        for k in range(self.slices):
            cut = slice(k * wd, (k + 1) * wd)
            x = _tensor(net_in, dev)[..., : shared + k * wd]
            compiled.slice_params(*_last_pending(self.nets[k], x, columns), base, k * wd, params)  # corrected by the channel net
            conv, heads = self.convs[k], self.heads[k]
            every = conv.pending_sum(conv_acc[:, k * conv_hidden : (k + 1) * conv_hidden])  # every cell's, both halves
            for half, cells in enumerate(halves):
                extra = no_extra  # for the second half, the products of the slice's own anchors
                if half:
                    near, held = _neighbourhoods(stack_own[k], conv_u[k], h, w, pad, cells, own_taps)
                    extra = conv.pending_sum(stack_own[k].accumulate(near, taps=len(own_taps), columns=held)).acc
                head_in = _inputs(heads[0], dev, nb * len(cells), heads[0].weight.shape[1])
                compiled.head_inputs(every.acc, rows[half], extra, every.offset, every.mult, every.shift,
                                     params, cells, code, half, head_in)
                cls, mean3 = np.empty((nb, wd, len(cells)), np.int32), np.empty((nb, wd, len(cells)), np.int32)
                compiled.symbol_params(*_last_pending(heads, _tensor(head_in, dev)), params, cells, gain[:, cut],
                                       log_gain[:, cut], cls, mean3)
                values = yield index[cut][:, cells].ravel(), cls.reshape(nb, -1), mean3.reshape(nb, -1)
                compiled.store_units(np.asarray(values).reshape(nb, -1), cells, inv_gain[:, cut], net_in,
                                     shared + k * wd, conv_u[k], fmt.u_bits, fmt.act)
            if k + 1 < self.slices:  # slice k's share of the later slices' convolutions
                near, held = _neighbourhoods(stack_conv[k], conv_u[k], h, w, pad, np.arange(n), all_taps)
                stack_conv[k].accumulate(near, taps=self.spatial**2, into=conv_acc[:, (k + 1) * conv_hidden :], columns=held)


def _neighbourhoods(layer: IntegerLinear, u: np.ndarray, h: int, w: int, pad: int, cells: np.ndarray,
                    taps: np.ndarray) -> tuple[torch.Tensor, Columns | None]:
    """A convolution block's input: the neighbourhoods of ``cells`` in ``u [B, h*w, C]`` at ``taps`` (``_patches``)
    on ``layer``'s device, and on the int8 path without the channels that are zero in every cell (at low
    qualities most of some slices' channels), with the ``Columns`` they hold (else None)."""
    device, columns = layer.weight.device, None
    if layer.input_dtype(device) == torch.int8:
        live = np.empty(u.shape[2], np.bool_)
        compiled.nonzero_columns(u.reshape(-1, u.shape[2]), live)
        keep = max(8, -(-np.count_nonzero(live) // 8) * 8)  # whole 64-bit words for _patches (zero channels add 0)
        if keep < u.shape[2]:
            channels = _first(live)[:keep]
            u = u[..., channels]
            columns = Columns((np.arange(len(taps))[:, None] * live.shape[0] + channels).ravel(), 0)
    return _on(_patches(u, h, w, pad, cells, taps), device), columns


def _first(mask: np.ndarray) -> np.ndarray:
    """The indices where ``mask`` holds, then the others, each in order."""
    return np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)])


def _small_columns_first(planes: np.ndarray, count: int) -> Columns | None:
    """Reorder the first ``count`` columns of ``digit_planes`` ``[2, N, K]``, in place, so that those whose high
    digits are all zero come first (``Columns``; None if there are none): by swapping each column with a high digit
    among the first ones with one without beyond them, so a few swaps where only a few columns differ from the rest."""
    high = np.empty(count, np.bool_)
    compiled.nonzero_columns(planes[0, :, :count], high)
    big = np.flatnonzero(high)
    small = count - len(big)
    src, dst = big[big < small], np.flatnonzero(~high[small:]) + small
    compiled.swap_columns(planes, src, dst)
    order = np.arange(planes.shape[2])
    order[src], order[dst] = dst, src
    return Columns(order, small) if small else None


def _inputs(layer: IntegerLinear, device: torch.device, rows: int, columns: int) -> np.ndarray:
    """An array for a network's input ``[rows, columns]`` in the form ``layer`` (its first) reads it on
    ``device``: ``[2, rows, columns]`` int8 for its ``digit_planes``, else ``[1, rows, columns]`` in its
    ``input_dtype`` (``compiled._put`` fills either; ``_tensor`` hands it to the layer)."""
    if layer.takes_planes(device):
        return np.empty((2, rows, columns), np.int8)
    return np.empty((1, rows, columns), _numpy_dtype(layer.input_dtype(device)))


def _tensor(inputs: np.ndarray, device: torch.device) -> torch.Tensor:
    """An ``_inputs`` array as the tensor its layer takes."""
    return _on(inputs if inputs.shape[0] == 2 else inputs[0], device)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype  # torch has no public mapping


def _on(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy array as a tensor on ``device`` (shared memory on the CPU)."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


def _int64(x: torch.Tensor) -> np.ndarray:
    """A layer's output (int64, or float-carried integers off the CPU int8 path) as int64 numpy."""
    return x.to(torch.int64).numpy(force=True)


def _patches(x: np.ndarray, h: int, w: int, pad: int, cells: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """``[B, h*w, C]`` -> the zero-padded ``(2 pad + 1)^2`` neighbourhoods of ``cells`` ``[P]`` (flat
    indices) at ``taps`` (``dy * (2 pad + 1) + dx``): ``[B*P, taps * C]``, columns ordered (tap, channel)
    so that the copy moves runs of C (``accumulate(..., taps=)`` reorders the weights to match; a copy: exact)."""
    out = np.empty((x.shape[0] * len(cells), len(taps) * x.shape[2]), x.dtype)
    x = np.ascontiguousarray(x)
    word = np.uint64 if x.shape[2] * x.itemsize % 8 == 0 else x.dtype  # runs of C moved in 64-bit words
    compiled.patches(x.view(word), h, w, pad, cells, taps, out.view(word))
    return out


def sigma_of_class(c: int) -> float:
    """Class ``c``'s sigma in y_hat units (for building tables at export, never for coding)."""
    return 2.0 ** (class_log(c) / 256)


def log_table_values(softplus_offset: float = 1e-3) -> list[int]:
    """LOG_TABLE at export: raw Q5 -> round(256 log2(softplus(raw) + offset)), the float hyper head's scale."""
    out = []
    for j in range(2 * RAW_MAX + 1):
        raw = (j - RAW_MAX) / (1 << RAW_BITS)
        s = math.log1p(math.exp(-abs(raw))) + max(raw, 0.0) + softplus_offset
        out.append(min(max(round((1 << LOG_BITS) * math.log2(s)), LOG_MIN), LOG_MAX))
    return out
