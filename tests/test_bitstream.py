"""Per-chunk bitstreams: exact round trip, bit-exact parameters, and hostile input."""

import contextlib
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import examples, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_tiles.coding.bitstream import MAX_CELLS, ChunkCoder
from cps_tiles.errors import CorruptChunkError
from cps_tiles.transforms.model import CPSModel, ModelConfig


@pytest.fixture(scope="module", params=[(0, 0, False), (3, 0, False), (3, 3, False), (3, 3, True)],
                ids=["hyperprior", "channel-context", "spatial-context", "integer"])
def coder(request):
    """Every test below runs on all entropy models: hyperprior alone, with a 3-slice channel
    context, with a 3x3 checkerboard spatial context on top, and that last one quantized to the
    exact integer networks and table coding (chunk format 2)."""
    slices, spatial, integer = request.param
    model = tiny_model(torch.float32, slices=slices, spatial=spatial)
    if integer:
        from cps_tiles.training.quantize import quantize_entropy

        units = {name: 0.01 for name in ("hyper.1", "hyper.3", *(f"{part}.{k}{end}" for k in range(slices)
                 for part, ends in (("nets", (".1", ".3")), ("heads", (".1", ".3")), ("convs", ("",))) for end in ends))}
        model = quantize_entropy(model, units)
    return ChunkCoder(model)


def _latent(rng, m, h, w, spread=4.0):
    return np.rint(rng.normal(0, spread, (m, h, w)) * rng.uniform(0.1, 1, (m, 1, 1))).astype(np.int16)


@settings(max_examples=examples(40), deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.floats(1, 8), st.integers(0, 2**32 - 1), st.floats(0.1, 300))
def test_round_trip_exact(coder, h, w, quality, seed, spread):
    y = _latent(np.random.default_rng(seed), coder.M, h, w, spread)
    data = coder.encode(y, quality)
    back, q = coder.decode(data, shape=y.shape)
    assert back.dtype == np.int16 and np.array_equal(back, y)
    assert q == round(quality * 100) / 100


def test_extreme_values_round_trip(coder):
    y = np.zeros((coder.M, 4, 4), np.int16)
    y[0, 0, 0], y[1, 1, 1] = -32768, 32767
    assert np.array_equal(coder.decode(coder.encode(y, 1))[0], y)


def test_encode_rejects_bad_blocks(coder):
    with pytest.raises(ValueError):
        coder.encode(np.zeros((coder.M + 1, 4, 4), np.int16), 4)
    with pytest.raises(ValueError):
        coder.encode(np.zeros((coder.M, MAX_CELLS + 1, 4), np.int16), 4)
    with pytest.raises(ValueError):
        coder.encode(np.zeros((coder.M, 4, 4), np.int16), 9)


def test_two_thread_encode_one_thread_decode_other_process(tmp_path, rng):
    """The coder's means/scales must match across thread counts and processes."""
    model = tiny_model(torch.float32, seed=3)
    y = _latent(rng, model.config.M, 64, 64, 20)
    torch.set_num_threads(2)
    data = ChunkCoder(model).encode(y, 5.3)
    (tmp_path / "chunk.bin").write_bytes(data)
    np.save(tmp_path / "y.npy", y)
    script = f"""
import sys, numpy as np, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
torch.set_num_threads(1)
from conftest import tiny_model
from cps_tiles.coding.bitstream import ChunkCoder
y, q = ChunkCoder(tiny_model(torch.float32, seed=3)).decode(open({str(tmp_path / 'chunk.bin')!r}, 'rb').read())
assert q == 5.3 and np.array_equal(y, np.load({str(tmp_path / 'y.npy')!r})), 'mismatch'
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr
    torch.set_num_threads(1)
    try:
        assert np.array_equal(ChunkCoder(model).decode(data)[0], y)
    finally:
        torch.set_num_threads(2)


def test_wrong_expected_shape(coder, rng):
    data = coder.encode(_latent(rng, coder.M, 8, 8), 4)
    with pytest.raises(CorruptChunkError, match="expected"):
        coder.decode(data, shape=(coder.M, 8, 4))


def _reframe(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_forged_headers_with_valid_crc(coder, rng):
    good = coder.encode(_latent(rng, coder.M, 8, 8), 4)[:-4]
    other_version = 3 - good[4]  # a format-1 chunk to an integer codec, or format 2 to a float one
    for field, value in [(4, other_version), (4, 9), (5, 1), (6, 99), (6, 801), (8, coder.M + 1), (10, 0), (10, MAX_CELLS + 1),
                         (12, 60000), (18, 1 << 31), (22, 3)]:
        forged = bytearray(good)
        fmt = "<B" if field in (4, 5) else ("<I" if field in (18, 22) else "<H")
        struct.pack_into(fmt, forged, field, value)
        with pytest.raises(CorruptChunkError):
            coder.decode(_reframe(bytes(forged)))
    lo_hi = bytearray(good)
    struct.pack_into("<hh", lo_hi, 14, 5, -5)
    with pytest.raises(CorruptChunkError):
        coder.decode(_reframe(bytes(lo_hi)))


def test_payload_garbage_with_valid_crc_is_bounded(coder, rng):
    """Forged payloads (valid framing and CRC) either decode to something or raise; never hang."""
    good = bytearray(coder.encode(_latent(rng, coder.M, 16, 16), 4)[:-4])
    for _i in range(30):
        forged = bytearray(good)
        start = 26 + int(rng.integers(0, len(forged) - 30))
        forged[start : start + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        try:
            y, _ = coder.decode(_reframe(bytes(forged)))
            assert y.shape == (coder.M, 16, 16)
        except CorruptChunkError:
            pass


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=400) | st.builds(lambda n, b, p: (n, b, p), st.integers(0, 10**6), st.binary(max_size=8), st.integers(0, 10**6)))
def test_fuzz_only_documented_exception(coder, sample):
    if isinstance(sample, tuple):  # mutate a valid chunk: splice bytes in at a position
        seed, patch, pos = sample
        good = coder.encode(_latent(np.random.default_rng(seed), coder.M, 4, 8), 2)
        pos %= len(good)
        sample = good[:pos] + patch + good[pos + len(patch) :]
        if sample == good:
            return
    with warnings.catch_warnings(record=True) as caught:  # nor any warning on the way
        warnings.simplefilter("always")
        with contextlib.suppress(CorruptChunkError):
            coder.decode(sample)
    assert not caught, [str(w.message) for w in caught]


def test_batch_decode_equals_alone(coder, rng):
    """The hyper decoder runs batched in decode_many; parameters (and so symbols) must not change."""
    blocks = [_latent(rng, coder.M, h, w, s) for h, w, s in ((16, 16, 3), (16, 16, 40), (5, 7, 2), (16, 16, 0.5), (5, 7, 9))]
    datas = [coder.encode(b, q) for b, q in zip(blocks, (1, 4.5, 8, 2.25, 6))]
    together = coder.decode_many(datas)
    for b, d, (y, q) in zip(blocks, datas, together):
        alone, q1 = coder.decode(d)
        assert np.array_equal(alone, y) and np.array_equal(y, b) and q == q1
    for k in range(len(datas)):  # every chunk in a batch of the others, in reverse order too
        rev = coder.decode_many(datas[k:] + datas[:k])
        assert np.array_equal(rev[0][0], blocks[k])
    bad = bytearray(datas[2])
    bad[30] ^= 1
    with pytest.raises(CorruptChunkError):
        coder.decode_many([datas[0], bytes(bad)])


def test_context_changes_bits_not_values(rng):
    """The context codes the same latent in fewer or more bits; a zero-initialised one (where
    ``train-context`` starts) writes exactly the chunks of the codec it starts from."""
    plain, ctx = tiny_model(seed=5), tiny_model(seed=5, slices=3)
    y = _latent(rng, plain.config.M, 16, 16, 6)
    a, b = ChunkCoder(plain).encode(y, 3.5), ChunkCoder(ctx).encode(y, 3.5)
    assert a != b
    assert np.array_equal(ChunkCoder(ctx).decode(b)[0], y) and np.array_equal(ChunkCoder(plain).decode(a)[0], y)
    for net in ctx.context.nets:
        torch.nn.init.zeros_(net[-1].weight)
    assert ChunkCoder(ctx).encode(y, 3.5) == a


def test_context_is_local_to_each_cell(rng):
    """1x1 networks only: changing one cell's decoded slices moves that cell's parameters alone,
    which is what keeps a chunk's rate independent of its neighbours."""
    model = tiny_model(torch.float64, slices=3)
    y = torch.from_numpy(_latent(rng, 12, 6, 6, 5).astype(np.float64))[None]
    means, scales = torch.randn(1, 12, 6, 6, dtype=torch.float64), torch.rand(1, 12, 6, 6, dtype=torch.float64) + 0.2
    code = model.level_code(2.5)
    m0, s0 = model.context(y, means, scales, code)
    y2 = y.clone()
    y2[0, :, 2, 3] += 7
    m1, s1 = model.context(y2, means, scales, code)
    changed = ((m0 != m1) | (s0 != s1)).any(dim=1)[0]
    assert changed[2, 3] and changed.sum() == 1


def test_context_overflow_is_bounded_without_warnings(rng):
    """Context outputs near the float64 limit (what a forged stream's absurd slices can produce)
    are clipped by the snapping: the chunk still round-trips, and nothing warns."""
    model = tiny_model(slices=3)
    for net in model.context.nets:
        torch.nn.init.zeros_(net[-1].weight)
        net[-1].bias.data[net[-1].bias.shape[0] // 2 :] = 709.7  # log-scale factor 1.65e308: x a gain of 3, overflow
    coder = ChunkCoder(model)
    y = _latent(rng, 12, 8, 8, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back, _ = coder.decode(coder.encode(y, 8))
    assert np.array_equal(back, y)
    assert not caught, [str(w.message) for w in caught]


def _coded_params(coder: ChunkCoder, y: np.ndarray, quality: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coder's (cells in coding order, snapped means, snapped scales) for block ``y`` ``[M, h, w]``
    (h, w multiples of 4: no edge padding for the hyperprior)."""
    gain = coder._gain64(quality)
    z = torch.round(coder._h_a(torch.from_numpy(y / gain).float()[None]))[0].numpy().astype(np.int32)
    ((means, scales),) = coder._hyper([z], [y.shape[1:]])
    parts, order = coder._y_params(means, scales, quality), []
    cells, m, s = next(parts)
    all_m, all_s = [m], [s]
    while True:
        order.append(cells)
        try:
            cells, m, s = parts.send(y.ravel()[cells].astype(np.float64))
        except StopIteration:
            return np.concatenate(order), np.concatenate(all_m), np.concatenate(all_s)
        all_m.append(m)
        all_s.append(s)


def test_spatial_context_training_sees_what_the_coder_codes_with(rng):
    """``forward`` (training, all parts at once from the whole latent) must give the parameters the
    coder derives part by part from what is decoded before each part: else training would lower a
    rate nobody codes at. Also: every cell coded exactly once, anchors of a slice before the rest."""
    model = tiny_model(seed=3, slices=3, spatial=3)
    coder = ChunkCoder(model)
    y = _latent(rng, 12, 8, 8, 5)
    order, means, scales = _coded_params(coder, y, 2.5)
    assert np.array_equal(np.sort(order), np.arange(y.size))
    first = order[: 4 * 8 * 8 // 2]  # slice 0 = channels 0..3; its anchors come first
    ch, i, j = np.unravel_index(first, y.shape)
    assert (ch < 4).all() and ((i + j) % 2 == 0).all()
    gain = coder._gain64(2.5)
    z = torch.round(model.h_a(torch.from_numpy(y / gain).float()[None]))[0].numpy().astype(np.int32)
    ((hm, hs),) = coder._hyper([z], [y.shape[1:]])
    fm, fs = coder._context64(torch.from_numpy(y / gain)[None], hm, hs, model.level_code(2.5))
    fm, fs = (fm[0].numpy() * gain).ravel()[order], (fs[0].numpy() * gain).ravel()[order]
    assert np.abs(means - fm).max() <= 1 / 128 + 1e-12  # half a step of the mean grid
    assert np.abs(np.log(scales) - np.log(np.clip(fs, 0.11, 256))).max() <= 1 / 64 + 1e-12  # of the scale grid


def test_spatial_context_is_local_and_causal(rng):
    """Changing one cell of slice 1 moves parameters only within the kernel's reach of that cell,
    only of cells coded after it (slice 1's other half, slice 2), never those of slice 0."""
    model = tiny_model(torch.float64, slices=3, spatial=3)
    y = torch.from_numpy(_latent(rng, 12, 8, 8, 5).astype(np.float64))[None]
    means, scales = torch.randn(1, 12, 8, 8, dtype=torch.float64), torch.rand(1, 12, 8, 8, dtype=torch.float64) + 0.2
    code = model.level_code(2.5)
    m0, s0 = model.context(y, means, scales, code)
    y2 = y.clone()
    y2[0, 5, 4, 4] += 7  # slice 1 (channels 4..7), an anchor cell
    m1, s1 = model.context(y2, means, scales, code)
    changed = (m0 != m1) | (s0 != s1)
    assert not changed[0, :4].any()
    rows, cols = np.nonzero(changed[0, 4:8].any(dim=0).numpy())
    assert len(rows) and (abs(rows - 4) <= 1).all() and (abs(cols - 4) <= 1).all()
    assert not changed[0, 4:8][:, 4, 4].any() and ((rows + cols) % 2 == 1).all()  # the non-anchors around it
    rows, cols = np.nonzero(changed[0, 8:].any(dim=0).numpy())
    assert changed[0, 8:, 4, 4].any() and (abs(rows - 4) <= 1).all() and (abs(cols - 4) <= 1).all()


def test_zero_spatial_context_writes_the_channel_context_chunks(rng):
    """A fresh spatial part (zero last layers, where ``train-context --spatial`` starts from a cps-v2
    codec) codes exactly as the channel context alone does, although its chunks split each slice."""
    plain, spatial = tiny_model(seed=5, slices=3), tiny_model(seed=5, slices=3, spatial=3)
    spatial.load_state_dict(plain.state_dict(), strict=False)
    for net in spatial.context.heads:
        torch.nn.init.zeros_(net[-1].weight)
    y = _latent(rng, 12, 16, 16, 6)
    a, b = ChunkCoder(plain).encode(y, 3.5), ChunkCoder(spatial).encode(y, 3.5)
    assert np.array_equal(ChunkCoder(spatial).decode(b)[0], y)
    # same parameters for each cell; only the order of the symbols in the stream differs
    oa, ma, sa = _coded_params(ChunkCoder(plain), y, 3.5)
    ob, mb, sb = _coded_params(ChunkCoder(spatial), y, 3.5)
    back = np.argsort(ob)[oa]
    assert np.array_equal(ma, mb[back]) and np.array_equal(sa, sb[back])
    assert abs(len(a) - len(b)) <= 8  # ANS: same information, within a word or two


def test_spatial_context_needs_slices_and_an_odd_kernel():
    with pytest.raises(ValueError, match="slices"):
        CPSModel(ModelConfig(N=8, M=12, Nz=8, spatial=3))
    with pytest.raises(ValueError, match="odd"):
        CPSModel(ModelConfig(N=8, M=12, Nz=8, slices=3, spatial=4))


class _FakeLibc:
    """ctypes.CDLL(None) standing in for glibc: records the mallopt calls."""

    calls: list[tuple[int, int]] = []

    def __init__(self, _name):
        self.gnu_get_libc_version = object()

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


@pytest.mark.parametrize("env,tuned", [({}, True), ({"MALLOC_ARENA_MAX": "2"}, False),
                                       ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, False)])
def test_freed_memory_is_retained_unless_the_user_tuned_malloc(monkeypatch, env, tuned):
    """A coder raises glibc's mmap and trim thresholds once per process (heap.py), and leaves a malloc
    the user configured alone."""
    from cps_tiles.coding import heap

    for name in [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(heap, "_tuned", False)
    monkeypatch.setattr(heap.ctypes, "CDLL", _FakeLibc)
    monkeypatch.setattr(_FakeLibc, "calls", [])
    heap.retain_freed_memory()
    heap.retain_freed_memory()
    want = [(heap._M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD), (heap._M_TRIM_THRESHOLD, heap.TRIM_THRESHOLD)]
    assert _FakeLibc.calls == (want if tuned and sys.platform.startswith("linux") else [])
