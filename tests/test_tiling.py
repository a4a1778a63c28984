"""Tiled analysis/synthesis equal the whole-image transforms (the CPS claim)."""

import torch
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_tiles.transforms.geometry import Geometry, Plan
from cps_tiles.transforms.tiling import analyze_tiled, synthesize_tiled


@st.composite
def layouts(draw):
    h = draw(st.integers(16, 700))
    w = draw(st.integers(16, 700))
    chunk = draw(st.sampled_from([64, 128, 256]))
    longest = max(-(-h // chunk), -(-w // chunk))
    tile = chunk * draw(st.integers(1, longest))  # from one tile per row to one chunk per tile
    return h, w, chunk, tile


def _image(h, w, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, -(-h // 16) * 16, -(-w // 16) * 16, generator=g, dtype=dtype)


@settings(max_examples=examples(25), deadline=None)
@given(layouts(), st.integers(0, 2**16))
def test_analysis_tiled_equals_whole_float64(model64, layout, seed):
    h, w, chunk, tile = layout
    x = _image(h, w, torch.float64, seed)
    plan = Plan(h, w, Geometry.of(model64), chunk=chunk, tile=tile)
    whole = model64.analysis(x)
    tiled = analyze_tiled(model64, x, plan)
    assert torch.allclose(tiled, whole, rtol=0, atol=1e-9 * whole.abs().max().item())


@settings(max_examples=examples(25), deadline=None)
@given(layouts(), st.integers(0, 2**16), st.floats(1, 8))
def test_synthesis_tiled_equals_whole_float64(model64, layout, seed, quality):
    h, w, chunk, tile = layout
    plan = Plan(h, w, Geometry.of(model64), chunk=chunk, tile=tile)
    g = torch.Generator().manual_seed(seed)
    y_hat = torch.randint(-6, 7, (1, model64.config.M, *plan.latent), generator=g).to(torch.float64)
    whole = model64.synthesis(y_hat, quality)
    tiled = synthesize_tiled(model64, y_hat, quality, plan)
    assert torch.allclose(tiled, whole, rtol=0, atol=1e-9 * whole.abs().max().item())


@settings(max_examples=examples(10), deadline=None)
@given(layouts(), st.integers(0, 2**16))
def test_tiled_equals_whole_float32(model32, layout, seed):
    h, w, chunk, tile = layout
    x = _image(h, w, torch.float32, seed)
    plan = Plan(h, w, Geometry.of(model32), chunk=chunk, tile=tile)
    whole = model32.analysis(x)
    assert torch.allclose(analyze_tiled(model32, x, plan), whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())
    y_hat = torch.round(whole * 4)
    xs = model32.synthesis(y_hat, 4)
    assert torch.allclose(synthesize_tiled(model32, y_hat, 4, plan), xs, rtol=1e-5, atol=1e-5 * xs.abs().max().item())


def test_margin_is_needed(model64):
    """A margin smaller than POPS' o/2 breaks exactness, so the tests above can fail."""
    from dataclasses import replace

    g = Geometry.of(model64)
    short = replace(g, o=g.o - 2 * g.rho)
    x = _image(256, 256, torch.float64, 7)
    plan = Plan(256, 256, short, chunk=64, tile=64)
    assert not torch.allclose(analyze_tiled(model64, x, plan), model64.analysis(x), atol=1e-9)
