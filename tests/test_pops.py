import pytest
from torch import nn

from cps_tiles.transforms.geometry import (
    Conv,
    Geometry,
    Plan,
    conv_chain,
    overlap,
    receptive_field,
    synthesis_halo,
    synthesis_trims,
    total_stride,
)


def test_default_stack_geometry(model32):
    g = Geometry.of(model32)
    assert (g.r, g.rho, g.o, g.halo, g.margin, g.hyper_block, g.chunk_multiple) == (72, 16, 64, 2, 32, 4, 64)


def test_eq1_by_hand():
    # 2x2/s2 then 3x3/s1 then 2x2/s2: 1 + 1 + 2*2 + 1*2 = 8
    assert receptive_field([Conv(2, 2), Conv(3, 1), Conv(2, 2)]) == 8
    assert total_stride([Conv(2, 2), Conv(3, 1), Conv(2, 2)]) == 4


@pytest.mark.parametrize("r,rho,o", [(72, 16, 64), (64, 16, 48), (35, 8, 32), (16, 16, 0)])
def test_eq4_both_branches(r, rho, o):
    assert overlap(r, rho) == o


def test_halo_counts_fractional_context():
    # three 3x3 pairs at 1/8, 1/4 and 1/2 latent scale: 1 + 0.5 + 0.25 cells -> 2
    chain = [Conv(2, 2, True), Conv(3, 1), Conv(3, 1, True), Conv(2, 2, True), Conv(3, 1), Conv(3, 1, True),
             Conv(2, 2, True), Conv(3, 1), Conv(3, 1, True), Conv(2, 2, True)]
    assert synthesis_halo(chain) == 2


def test_padding_is_refused():
    with pytest.raises(ValueError, match="padding-free"):
        conv_chain(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1)))


@pytest.mark.parametrize("h,w,chunk,tile", [(1, 1, 64, 64), (700, 333, 64, 192), (1500, 1100, 128, 512), (64, 64, 256, 256)])
def test_tiles_cover_latent_once(model32, h, w, chunk, tile):
    plan = Plan(h, w, Geometry.of(model32), chunk=chunk, tile=tile)
    hl, wl = plan.latent
    count = [[0] * wl for _ in range(hl)]
    for t in plan.tiles():
        cy0, cy1, cx0, cx1 = t.cells
        py0, py1, px0, px1 = t.pixels
        assert py0 % 16 == 0 and px0 % 16 == 0 and py1 <= plan.padded[0] and px1 <= plan.padded[1]
        for y in range(cy0, cy1):
            for x in range(cx0, cx1):
                count[y][x] += 1
    assert all(c == 1 for row in count for c in row)


@pytest.mark.parametrize("chunk,tile", [(32, 64), (96, 192), (128, 192), (128, 64)])
def test_plan_rejects_bad_sizes(model32, chunk, tile):
    with pytest.raises(ValueError):
        Plan(100, 100, Geometry.of(model32), chunk=chunk, tile=tile)


def test_synthesis_trims_by_hand(model32):
    # backwards from the output: BRB/2 needs 2 px, EURB halves (1), BRB/4 adds 2 (3), EURB (2),
    # BRB/8 (4), conv_up (2 cells = the halo)
    trims = synthesis_trims(model32.g_s)
    assert trims == [(2, 2), (4, 1), (2, 2), (3, 1), (1, 2), (2, 1), (0, 2)]
    assert trims[0][0] == Geometry.of(model32).halo


def test_synthesis_trims_skip_activations():
    stack = nn.Sequential(nn.ConvTranspose2d(4, 4, 2, stride=2), nn.LeakyReLU(), nn.Conv2d(4, 4, 3),
                          nn.ConvTranspose2d(4, 4, 3))
    assert synthesis_trims(stack) == [(1, 2), (2, 1), (2, 1), (1, 1)]
