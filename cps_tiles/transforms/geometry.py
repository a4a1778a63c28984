"""POPS geometry: receptive field, overlap, halo and hyperprior block derived from the layer list,
and the tile planner.

This module is the one home of every geometric fact the bit-exactness rests on: a number here is
computed from a model's layers, never written down a second time elsewhere.

Units: *pixels* for image coordinates, *cells* for latent coordinates (one cell = ``rho`` pixels).

* ``receptive_field``: Eq. 1 of the paper, ``r_l = r_{l-1} + (k_l - 1) * prod_{i<l} s_i``.
* ``overlap``: Eq. 4, ``o = r - rho`` if ``r % rho == 0`` else ``rho * floor(r / rho)``; neighbouring
  compute tiles overlap by ``o`` pixels, i.e. each tile reads a margin of ``o / 2`` pixels per side.
* ``synthesis_halo``: latent cells per side the decoder needs around a latent window;
  ``synthesis_trims``: how much of it each synthesis block still needs.

* ``hyper_block``: latent cells per hyper-latent cell (the total stride of ``h_a``); a storage
  chunk spans whole hyperprior blocks so that it codes to the rate it has inside the whole image.

For the default stack (3 EDRB + 3 BRB + a 2x2/s2 conv) r = 72, rho = 16, o = 64, the synthesis
halo is 2 cells and the hyperprior block 4 cells.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Conv:
    """One convolution on the main path: square kernel ``k``, stride ``s``."""

    k: int
    s: int
    transposed: bool = False


def conv_blocks(stack: nn.Module) -> list[list[Conv]]:
    """The main-path convolutions of a transform, grouped by block (skip branches excluded)."""
    blocks: list[list[Conv]] = []
    for block in stack.children():
        layers = block.main_path() if hasattr(block, "main_path") else [block]
        convs = []
        for layer in layers:
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                if layer.padding != (0, 0) or layer.kernel_size[0] != layer.kernel_size[1]:
                    raise ValueError(f"CPS needs square, padding-free convolutions, got {layer}")
                convs.append(Conv(layer.kernel_size[0], layer.stride[0], isinstance(layer, nn.ConvTranspose2d)))
        blocks.append(convs)
    return blocks


def conv_chain(stack: nn.Module) -> list[Conv]:
    """The main-path convolutions of a transform, in order (skip branches excluded)."""
    return [c for block in conv_blocks(stack) for c in block]


def receptive_field(chain: Iterable[Conv]) -> int:
    """Eq. 1: receptive field in pixels of one output cell of an analysis chain."""
    r, jump = 1, 1
    for c in chain:
        r += (c.k - 1) * jump
        jump *= c.s
    return r


def total_stride(chain: Iterable[Conv]) -> int:
    """Product of the strides: rho for the analysis (pixels per latent cell), the hyperprior block
    for ``h_a`` (latent cells per hyper-latent cell)."""
    return math.prod(c.s for c in chain)


def overlap(r: int, rho: int) -> int:
    """Eq. 4: overlap in pixels between neighbouring compute tiles."""
    return r - rho if r % rho == 0 else rho * (r // rho)


def analysis_context(chain: Iterable[Conv]) -> int:
    """Exact context (pixels per side) an analysis output cell needs beyond its own rho x rho block.

    A k == s convolution only regroups aligned blocks, so it adds nothing across block borders;
    a stride-1 k x k layer adds (k-1)/2 cells of its own resolution per side. Used to check that
    the POPS margin ``o / 2`` covers what the network really reads.
    """
    ctx, jump = 0, 1
    for c in chain:
        if c.s == 1:
            ctx += (c.k - 1) // 2 * jump
        elif c.k != c.s:
            raise ValueError(f"unsupported layer for CPS tiling: {c}")
        jump *= c.s
    return ctx


def synthesis_context(chain: Sequence[Conv]) -> list[int]:
    """Per layer of a synthesis chain: pixels per side, at that layer's input resolution, that its
    input must reach beyond the wanted region for the chain's output there to be exact.

    Walks the chain backwards: a stride-1 k x k layer (valid conv or transposed conv) adds
    (k-1)/2 of its own pixels per side, an aligned k == s transposed conv divides by s, rounding up.
    """
    needs, need = [], 0
    for c in reversed(chain):
        if c.s == 1 and c.k % 2:
            need += (c.k - 1) // 2
        elif c.k == c.s and c.transposed:
            need = -(-need // c.s)
        else:
            raise ValueError(f"unsupported layer for CPS tiling: {c}")
        needs.append(need)
    return needs[::-1]


def synthesis_halo(chain: Sequence[Conv]) -> int:
    """Latent cells per side that a synthesis window needs beyond the cells it reproduces."""
    return synthesis_context(chain)[0] if chain else 0


def synthesis_trims(stack: nn.Module) -> list[tuple[int, int]]:
    """Per block of a synthesis stack: (context it needs per side at its input resolution, its
    upsampling factor). A window decoder trims each block's input to that context, so the halo's
    cost shrinks with depth instead of growing 2x per upsampling (see ``CPSModel.synthesis``)."""
    blocks = conv_blocks(stack)
    needs = synthesis_context([c for b in blocks for c in b])
    out, i = [], 0
    for b in blocks:
        up = math.prod(c.s for c in b if c.transposed)
        # a conv-free block (an activation) needs what the next convolution needs
        out.append((needs[i] if i < len(needs) else 0, up))
        i += len(b)
    return out


@dataclass(frozen=True)
class Geometry:
    """Everything the planner needs, derived from a model's layers."""

    r: int
    rho: int
    o: int
    halo: int
    hyper_block: int

    @property
    def margin(self) -> int:
        """Pixels read beyond a compute tile on each side (o / 2, a multiple of rho)."""
        return self.o // 2

    @classmethod
    def of(cls, model: nn.Module) -> Geometry:
        chain = conv_chain(model.g_a)
        r, rho = receptive_field(chain), total_stride(chain)
        o = overlap(r, rho)
        if o // 2 < analysis_context(chain) or o % (2 * rho):
            raise ValueError(f"POPS overlap {o} px does not cover the analysis context of {chain}")
        hyper = conv_chain(model.h_a)
        if analysis_context(hyper):
            raise ValueError(f"the hyper analysis must see aligned blocks only (k == s layers), got {hyper}")
        return cls(r=r, rho=rho, o=o, halo=synthesis_halo(conv_chain(model.g_s)), hyper_block=total_stride(hyper))

    @property
    def chunk_multiple(self) -> int:
        """Pixels a storage chunk's side must be a multiple of: whole hyperprior blocks."""
        return self.hyper_block * self.rho


@dataclass(frozen=True)
class Window:
    """An analysis task (compute tile): the latent block it produces and the pixel window it reads.

    ``cells`` = (cy0, cy1, cx0, cx1) latent cells produced; ``pixels`` = (py0, py1, px0, px1) pixels
    read (already clipped to the padded image); ``crop`` = (top, left) latent cells to drop from the
    window's output to reach ``cells``.
    """

    cells: tuple[int, int, int, int]
    pixels: tuple[int, int, int, int]

    def crop(self, rho: int) -> tuple[slice, slice]:
        cy0, cy1, cx0, cx1 = self.cells
        py0, _, px0, _ = self.pixels
        top, left = cy0 - py0 // rho, cx0 - px0 // rho
        return slice(top, top + cy1 - cy0), slice(left, left + cx1 - cx0)


@dataclass(frozen=True)
class SynthesisWindow:
    """A synthesis task (a storage chunk): the latent cells whose pixels it reproduces and the
    latent window it decodes, both in latent cells.

    ``cells`` = (cy0, cy1, cx0, cx1); ``latent`` = (ly0, ly1, lx0, lx1), ``cells`` plus the halo
    (clipped to the latent), which ``halo`` gives per side as ``CPSModel.synthesis`` takes it.
    """

    cells: tuple[int, int, int, int]
    latent: tuple[int, int, int, int]

    @property
    def halo(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) latent cells of context around ``cells``."""
        cy0, cy1, cx0, cx1 = self.cells
        ly0, ly1, lx0, lx1 = self.latent
        return cy0 - ly0, ly1 - cy1, cx0 - lx0, lx1 - cx1


@dataclass(frozen=True)
class Plan:
    """Tiling of an ``height x width`` image into storage chunks, compute tiles and write units.

    ``chunk``, ``tile`` and ``shard`` are in pixels; ``chunk`` is a multiple of
    ``geometry.chunk_multiple`` (whole hyperprior blocks), ``tile`` a multiple of ``chunk``, and
    ``shard`` (0: none) a multiple of ``tile``. A *write unit* is what one task writes whole: a
    shard when there are shards, else a compute tile. The image is padded at right/bottom to a
    multiple of rho by edge replication.
    """

    height: int
    width: int
    geometry: Geometry
    chunk: int = 256
    tile: int = 512
    shard: int = 0

    def __post_init__(self) -> None:
        multiple = self.geometry.chunk_multiple
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image must be at least 1x1 pixels, got {self.height}x{self.width}")
        if self.chunk < multiple or self.chunk % multiple:
            raise ValueError(f"chunk must be a positive multiple of {multiple} pixels, got {self.chunk}")
        if self.tile < self.chunk or self.tile % self.chunk:
            raise ValueError(f"tile must be a multiple of the chunk size {self.chunk}, got {self.tile}")
        if self.shard < 0 or self.shard % self.tile:
            raise ValueError(f"shard must be a multiple of the tile size {self.tile} (or 0 for none), got {self.shard}")

    @property
    def padded(self) -> tuple[int, int]:
        rho = self.geometry.rho
        return -(-self.height // rho) * rho, -(-self.width // rho) * rho

    @property
    def latent(self) -> tuple[int, int]:
        """Latent size in cells."""
        ph, pw = self.padded
        return ph // self.geometry.rho, pw // self.geometry.rho

    @property
    def chunk_cells(self) -> int:
        return self.chunk // self.geometry.rho

    @property
    def unit(self) -> int:
        """Pixels per side of a write unit: a shard, or a compute tile when there are no shards."""
        return self.shard or self.tile

    @property
    def unit_grid(self) -> tuple[int, int]:
        """Number of write units along y and x."""
        step = self.unit // self.geometry.rho
        hl, wl = self.latent
        return -(-hl // step), -(-wl // step)

    def units(self) -> Iterator[tuple[tuple[int, int], tuple[int, int, int, int], list[Window]]]:
        """Write units in row-major order: (index in ``unit_grid``, latent cells, its compute tiles)."""
        step, (hl, wl) = self.unit // self.geometry.rho, self.latent
        tiles: dict[tuple[int, int], list[Window]] = {}
        for w in self.tiles():
            tiles.setdefault((w.cells[0] // step, w.cells[2] // step), []).append(w)
        for (ui, uj), windows in tiles.items():
            yield (ui, uj), (ui * step, min((ui + 1) * step, hl), uj * step, min((uj + 1) * step, wl)), windows

    def tiles(self) -> Iterator[Window]:
        """Compute tiles in row-major order."""
        rho, m = self.geometry.rho, self.geometry.margin
        (hl, wl), (ph, pw) = self.latent, self.padded
        step = self.tile // rho
        for cy0 in range(0, hl, step):
            for cx0 in range(0, wl, step):
                cy1, cx1 = min(cy0 + step, hl), min(cx0 + step, wl)
                pixels = (max(0, cy0 * rho - m), min(ph, cy1 * rho + m), max(0, cx0 * rho - m), min(pw, cx1 * rho + m))
                yield Window((cy0, cy1, cx0, cx1), pixels)

    def chunk_window(self, i: int, j: int) -> SynthesisWindow:
        """Synthesis window of storage chunk (i, j): its cells plus the halo (see below)."""
        cc, (hl, wl) = self.chunk_cells, self.latent
        return self.synthesis_window((i * cc, min((i + 1) * cc, hl), j * cc, min((j + 1) * cc, wl)))

    def synthesis_window(self, cells: tuple[int, int, int, int]) -> SynthesisWindow:
        """The latent window (``cells`` with the halo, clipped) whose synthesis reproduces the
        pixels of ``cells``."""
        hl, wl = self.latent
        h = self.geometry.halo
        cy0, cy1, cx0, cx1 = cells
        return SynthesisWindow(cells, (max(0, cy0 - h), min(hl, cy1 + h), max(0, cx0 - h), min(wl, cx1 + h)))
