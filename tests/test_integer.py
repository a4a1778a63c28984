"""The integer entropy path (cps-v4 codecs, chunk format 2; cps-v5, chunk format 3, whose spatial
convolutions run as int8 products; cps-v6, chunk format 4, every layer's products int8): exact by
construction, checked against its numpy reference, and against golden chunks written once per release
(tests/fixture/golden for r9, golden_r10 for r10, golden_r11 for r11, golden_r12 for r12; never
regenerated). The kernel, thread and device matrix over the same
golden chunks runs in test_kernels.py (slow tier)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import constriction
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cps_tiles.coding.bitstream import ChunkCoder
from cps_tiles.coding.entropy import run_parts
from cps_tiles.coding.reference import ReferenceEntropy, reference_decode
from cps_tiles.coding.tables import TableCoder
from cps_tiles.errors import CodecError, CorruptChunkError
from cps_tiles.transforms import integer
from cps_tiles.transforms.model import CPSModel
from cps_tiles.transforms.weights import load_codec

FIXTURE = Path(__file__).resolve().parent / "fixture"
#: Golden chunk sets, one per integer-entropy release: golden/ (r9), golden_r10/ (r10), golden_r11/ (r11), golden_r12/ (r12).
GOLDEN = {d.name: json.loads((d / "golden.json").read_text()) for d in sorted(FIXTURE.glob("golden*"))}
CHUNKS = [(golden, name) for golden, manifest in GOLDEN.items() for name in sorted(manifest["chunks"])]
R9 = "cps-n96m160-r9"


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a.astype(np.int16)).tobytes()).hexdigest()


@functools.cache
def golden_codec(golden: str) -> tuple[CPSModel, ChunkCoder]:
    """The model and coder of a golden set's codec, whose weights must be the ones it was written with."""
    codec = load_codec(GOLDEN[golden]["codec"])
    assert codec.sha256 == GOLDEN[golden]["codec_sha256"]
    return codec.model, ChunkCoder(codec.model)


@pytest.fixture(scope="module")
def r9():
    return golden_codec("golden")[0]


@pytest.fixture(scope="module")
def coder():
    return golden_codec("golden")[1]


def sample_latent(model: CPSModel) -> torch.Tensor:
    """A real latent: the bundled sample photo's analysis by ``model``, [1, M, 16, 24]."""
    from cps_tiles.demo import sample_mosaic

    x = torch.from_numpy(sample_mosaic(1)[200:456, 100:484].transpose(2, 0, 1).copy()).float()[None] / 255
    with torch.inference_mode():
        return model.analysis(x)


@pytest.fixture(scope="module")
def latent(r9):
    return sample_latent(r9)


@pytest.mark.parametrize("golden,name", CHUNKS)
def test_golden_chunk_decodes_to_its_latent(golden, name, monkeypatch):
    monkeypatch.setenv("CPS_TILES_REUSE", "0")
    model, coder = golden_codec(golden)
    want = GOLDEN[golden]["chunks"][name]
    data = (FIXTURE / golden / name).read_bytes()
    y_hat, q = coder.decode(data)
    assert (q, list(y_hat.shape), _sha(y_hat)) == (want["quality"], want["shape"], want["latent_sha256"])
    assert _sha(reference_decode(model, data)) == want["latent_sha256"]  # the independent numpy path too


@pytest.mark.parametrize("golden", sorted(GOLDEN))
def test_golden_chunks_decode_together(golden, monkeypatch):
    """decode_many runs the integer networks on chunks of one shape as a batch (each at its own
    quality, in lockstep): every golden chunk decodes to its latent in batches of any size and order."""
    monkeypatch.setenv("CPS_TILES_REUSE", "0")
    coder, chunks = golden_codec(golden)[1], GOLDEN[golden]["chunks"]
    names = sorted(chunks)
    datas = [(FIXTURE / golden / name).read_bytes() for name in names]
    for batch in (1, 2, 3, len(datas) * 2):
        monkeypatch.setattr("cps_tiles.coding.bitstream.BATCH", batch)
        for order in (names, names[::-1]):
            got = coder.decode_many([datas[names.index(n)] for n in order] * 2)
            assert [_sha(y) for y, _ in got] == [chunks[n]["latent_sha256"] for n in order] * 2


@pytest.mark.parametrize("golden", sorted(GOLDEN))
def test_golden_chunks_reencode_to_the_same_bytes(golden):
    """The encoder is as exact as the decoder: today's build writes the golden chunks' very bytes."""
    coder = golden_codec(golden)[1]
    for name, want in GOLDEN[golden]["chunks"].items():
        data = (FIXTURE / golden / name).read_bytes()
        assert coder.encode(coder.decode(data)[0], want["quality"]) == data, name


@pytest.mark.parametrize("golden,quality,rows,cols", [("golden", 1.0, 16, 16), ("golden", 3.37, 13, 20),
                                                      ("golden", 7.99, 5, 3), ("golden", 8.0, 16, 24),
                                                      ("golden_r11", 2.5, 16, 16), ("golden_r11", 9.87, 7, 13),
                                                      ("golden_r12", 1.0, 16, 16), ("golden_r12", 6.42, 11, 5)])
def test_fast_path_and_reference_agree_on_every_parameter(golden, quality, rows, cols):
    """r9 (every layer 10-bit), r11 (int8 convolutions) and r12 (int8 digit products everywhere): the torch path and the numpy reference
    give every symbol the same class and mean, for a real latent and a random hyperprior."""
    model = golden_codec(golden)[0]
    y_hat = model.quantize(sample_latent(model), quality)[0].numpy()[:, :rows, :cols].astype(np.int64)
    q100 = round(quality * 100)
    z = np.random.default_rng(rows).integers(-4, 5, (model.config.Nz, -(-rows // 4), -(-cols // 4)))
    ref = ReferenceEntropy.of(model)
    base = model.integer.hyper(torch.from_numpy(z)[None], rows, cols)
    ref_mean, ref_log = ref.hyper(z, rows, cols)
    assert np.array_equal(base[0, 0].transpose(2, 0, 1), ref_mean) and np.array_equal(base[1, 0].transpose(2, 0, 1), ref_log)
    fast = run_parts(model.integer.parts(base, [q100]), y_hat)
    slow = run_parts(ref.parts(ref_mean, ref_log, q100), y_hat)
    assert len(fast) == len(slow) == 2 * model.config.slices
    for (v1, c1, m1), (v2, c2, m2) in zip(fast, slow):
        assert np.array_equal(v1, v2) and np.array_equal(c1, c2) and np.array_equal(m1, m2)


def test_caller_precision_settings_change_nothing(coder, latent, r9, monkeypatch):
    """bf16 autocast (the server's --precision bfloat16) or TF32-style matmul settings around the
    coder do not reach the integer networks."""
    monkeypatch.setenv("CPS_TILES_REUSE", "0")
    y_hat = r9.quantize(latent, 4.2)[0].numpy()
    data = coder.encode(y_hat, 4.2)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert coder.encode(y_hat, 4.2) == data
            assert np.array_equal(coder.decode(data)[0], y_hat)
        assert torch.get_float32_matmul_precision() == "medium"  # restored for the caller
    finally:
        torch.set_float32_matmul_precision(before)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1, 3, 30, 3000, 30000]), st.floats(1, 8))
def test_any_latent_round_trips(coder, seed, spread, quality):
    """Any int16 latent, outliers far outside every table included (escapes), comes back exactly."""
    rng = np.random.default_rng(seed)
    y = np.clip(rng.normal(0, spread, (160, 4, 8)), -32768, 32767).astype(np.int16)
    assert np.array_equal(coder.decode(coder.encode(y, quality))[0], y)


@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 17), (3, 1)])
def test_thin_edge_chunks_round_trip(r9, coder, rows, cols):
    """A 1x1 chunk has no second checkerboard half: an empty coding part (an image 16 px past a
    chunk boundary ends in one). Fast path and reference both decode it."""
    y = np.random.default_rng(rows * cols).integers(-20, 20, (160, rows, cols)).astype(np.int16)
    data = coder.encode(y, 3.3)
    assert np.array_equal(coder.decode(data)[0], y) and np.array_equal(reference_decode(r9, data), y)


def test_every_table_codes_every_symbol(r9):
    tables = TableCoder(r9.integer.counts.numpy())
    counts = r9.integer.counts.numpy().astype(np.int64)
    ends = np.cumsum(2 * tables.radius + 1)
    for t, (model, r) in enumerate(zip(tables.models, tables.radius)):
        assert counts[ends[t] - 2 * r - 1 : ends[t]].sum() == 1 << 24 and counts.min() >= 1
        syms = np.arange(2 * r + 1, dtype=np.int32)
        enc = constriction.stream.stack.AnsCoder()
        enc.encode_reverse(syms, model)
        assert np.array_equal(constriction.stream.stack.AnsCoder(enc.get_compressed()).decode(model, len(syms)), syms)


def _fixed_parts(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """A parts generator over known (cells, classes [B, P], means Q3 [B, P]), ignoring what it is sent."""
    for part in parts:  # noqa: UP028 (yield from: a list iterator cannot be sent values)
        yield part


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.sampled_from([0, 1, 7, 300]))
def test_compiled_ans_decoder_reads_what_constriction_wrote(r9, seed, chunks, size):
    """The compiled decoder (ans.py) and constriction's own decode the same streams to the same values:
    every table, centers near the int16 limits, escapes of every length, and empty parts."""
    rng = np.random.default_rng(seed)
    tables = TableCoder(r9.integer.counts.numpy())
    cells = [np.arange(size), np.arange(size, 2 * size)]
    params = [(rng.integers(0, integer.SIGMA_CLASSES, (chunks, size)), rng.integers(-(1 << 18), 1 << 18, (chunks, size)))
              for _ in cells]
    values = []
    for _, mean3 in params:  # near the mean, or anywhere in int16: |residual| up to 2^16 escapes every length
        near = (mean3 >> integer.MEAN_FRAC_BITS).clip(-32768, 32767) + rng.integers(-3, 4, mean3.shape)
        values.append(np.where(rng.random(mean3.shape) < 0.8, near, rng.integers(-32768, 32768, mean3.shape)))
    datas = [tables.compress([(v[b], c[b : b + 1], m[b : b + 1]) for v, (c, m) in zip(values, params)]) for b in range(chunks)]
    parts = [(cl, c, m) for cl, (c, m) in zip(cells, params)]
    fast = tables.decompress(datas, _fixed_parts(parts), 2 * size)
    reference = tables.decompress_reference(datas, _fixed_parts(parts), 2 * size)
    for b in range(chunks):
        assert np.array_equal(fast[b], reference[b]) and np.array_equal(fast[b], np.concatenate([v[b] for v in values]))


def test_compiled_ans_decoder_models_are_constrictions(r9):
    """``model_cdfs`` gives each table the CDF constriction quantizes its counts to: each symbol's
    interval, decoded from a state placed inside it, is the symbol constriction decodes there."""
    tables = TableCoder(r9.integer.counts.numpy())
    for t in (0, 5, integer.FLAT_CLASS * 8, len(tables.radius) - 1):
        n = 2 * int(tables.radius[t]) + 1
        cdf = tables._cdf[tables._cdf_start[t] : tables._cdf_start[t] + n + 1]
        assert cdf[0] == 0 and cdf[-1] == 1 << 24 and np.all(np.diff(cdf) >= 1)
        for s in (0, 1, n // 2, n - 2, n - 1):  # two-word streams whose state's low 24 bits are at symbol s's ends
            for quantile in (cdf[s], cdf[s + 1] - 1):
                words = np.array([int(quantile), 1], dtype=np.uint32)
                assert int(constriction.stream.stack.AnsCoder(words).decode(tables.models[t])) == s


def test_a_stream_ending_in_a_zero_word_is_corrupt(coder):
    y = np.random.default_rng(3).integers(-20, 20, (160, 4, 4)).astype(np.int16)
    data = bytearray(coder.encode(y, 3.3))
    data[-4:] = bytes(4)
    with pytest.raises(CorruptChunkError):
        coder.decode(bytes(data))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.integers(1, 300), st.integers(0, 2**31 - 1), st.sampled_from([1, 32, 100, 1023]))
def test_exact_groups_bound_every_partial_sum(outputs, inputs, seed, bound):
    rng = np.random.default_rng(seed)
    weight = torch.from_numpy(rng.integers(-integer.WEIGHT_MAX, integer.WEIGHT_MAX + 1, (outputs, inputs))).to(torch.int16)
    bounds = torch.full((inputs,), bound, dtype=torch.int64)
    groups = integer.exact_groups(weight, bounds)
    assert groups[0][0] == 0 and groups[-1][1] == inputs and all(a[1] == b[0] for a, b in zip(groups, groups[1:]))
    for a, b in groups:
        assert int((weight[:, a:b].abs().long() * bound).sum(1).max()) < integer.FLOAT32_EXACT


def test_integer_helpers_match_their_definitions(r9):
    ref = ReferenceEntropy.of(r9)
    lg = torch.arange(-3 << 16, 3 << 16, 997)
    assert np.array_equal(r9.integer._exp2(lg).numpy(), ref._exp2(lg.numpy()))
    assert [integer.table_radius(c) for c in (0, integer.FLAT_CLASS, integer.SIGMA_CLASSES - 1)] == [3, 42, 2562]


def test_a_codec_that_could_overflow_is_refused(tmp_path):
    """The exactness proof runs when a codec loads: a multiplier that could push a layer past 2^53
    makes the codec unloadable instead of silently inexact."""
    import shutil

    from safetensors.torch import load_file, save_file

    from cps_tiles.transforms.weights import find_codec, sha256_file

    src = find_codec(R9)
    dst = tmp_path / "codecs" / "broken-r9"
    shutil.copytree(src, dst)
    shutil.copytree(src.parent / "cps-n96m160-r6", tmp_path / "codecs" / "cps-n96m160-r6")
    state = load_file(str(dst / "integer.safetensors"))
    state["integer.nets.0.1.mult"] = state["integer.nets.0.1.mult"] * (1 << 30)
    save_file(state, str(dst / "integer.safetensors"))
    meta = json.loads((dst / "codec.json").read_text())
    meta["name"] = "broken-r9"
    meta["parts"][1]["sha256"] = sha256_file(dst / "integer.safetensors")
    (dst / "codec.json").write_text(json.dumps(meta))
    with pytest.raises(CodecError, match="not provably exact"):
        load_codec(str(dst))


def test_int8_products_are_exact_on_both_paths():
    """An int8 layer's products (r11's largest convolution, operands at random within +-63, and at
    their extremes) equal the int64 product, through int8 (CPU) and through the float32 groups that
    other devices take."""
    conv = golden_codec("golden_r11")[0].integer.convs[-1]
    assert conv.int8
    rng = np.random.default_rng(7)
    k = conv.weight.shape[1]
    x = np.concatenate([rng.integers(-63, 64, (40, k)), np.full((1, k), 63), np.full((1, k), -63),
                        63 * np.sign(conv.weight.numpy()).astype(np.int64)])  # the last row: every product at its largest
    want = x @ conv.weight.numpy().T.astype(np.int64)
    assert np.array_equal(conv.accumulate(torch.from_numpy(x).to(torch.int8)).numpy(), want)
    float_path = conv._plan(0, k, 1)  # what accumulate uses off the CPU
    got = sum(torch.from_numpy(x[:, a:b]).float() @ w for a, b, w in float_path).double()
    assert np.array_equal(got.numpy(), want)


def test_int8_layer_that_could_pass_int32_is_refused():
    layer = integer.IntegerLinear(600_000, 1, [63] * 600_000, False, 63)
    layer.weight.fill_(63)
    assert layer.int8
    with pytest.raises(ValueError, match="2\\^31"):
        layer.check()


def test_digit_products_are_exact_on_both_paths():
    """A layer with 7-bit weights and 10-bit inputs (cps-v6's hidden and first layers) multiplies each
    input's two digits as int8 products: equal to the int64 product for inputs at random within their
    bounds, at both extremes and with every product at its largest, on the CPU and through the float32
    groups that other devices take."""
    rng = np.random.default_rng(11)
    bounds = [integer.ACT] * 600 + [integer.CODE_ONE] * 10 + [1]
    layer = integer.IntegerLinear(len(bounds), 96, bounds, True, integer.INT8_EXACT)
    layer.weight.copy_(torch.from_numpy(rng.integers(-63, 64, (96, len(bounds)))))
    layer.weight[0] = 63
    assert layer.digits and not layer.int8
    b = np.array(bounds)
    x = np.concatenate([rng.integers(-b, b + 1, (50, len(b))), b[None], -b[None],
                        (b * np.sign(layer.weight[0].numpy()))[None]])
    want = x @ layer.weight.numpy().T.astype(np.int64)
    both = layer.accumulate(torch.from_numpy(x).float()).long()  # the digits' sums apart, the high digits' first
    assert np.array_equal(((both[: len(x)] << integer.DIGIT_BITS) + both[len(x) :]).numpy(), want)
    groups = layer._plan(0, len(bounds), 1)  # each exact in float32, added in float64 as accumulate does
    got = sum((torch.from_numpy(x[:, lo:hi]).float() @ w).double() for lo, hi, w in groups)
    assert len(groups) > 1 and np.array_equal(got.numpy(), want)


@pytest.mark.parametrize("count", [611, 300])
@pytest.mark.parametrize("small_share", [0.0, 0.5, 1.0])
def test_digit_products_skip_columns_whose_high_digits_are_zero(count, small_share):
    """Inputs within +-63 are their own low digit (high digit 0); the columns where every high digit is zero are
    swapped to the front (of the first ``count``) and the high digits' product skips them. The products equal the
    int64 ones whichever columns are small, the boundary values +-63 and +-64 included, none, half or all."""
    rng = np.random.default_rng(5)
    bounds = [integer.ACT] * 600 + [integer.CODE_ONE] * 10 + [1]
    layer = integer.IntegerLinear(len(bounds), 64, bounds, True, integer.INT8_EXACT)
    layer.weight.copy_(torch.from_numpy(rng.integers(-63, 64, (64, len(bounds)))))
    b = np.array(bounds)
    x = rng.integers(-b, b + 1, (40, len(b)))
    small = rng.random(len(b)) < small_share
    x[:, small] = rng.integers(-63, 64, (40, int(small.sum())))
    x[0, small], x[1, ~small] = 63, np.minimum(64, b[~small])
    x[2, small], x[3, ~small] = -63, -np.minimum(64, b[~small])
    planes = layer.digit_planes(torch.from_numpy(x).to(torch.int16))
    columns = integer._small_columns_first(planes.numpy(), count)
    skipped = int((small[:count] | (np.abs(x[:, :count]) <= 63).all(0)).sum())
    assert (columns.small if columns else 0) == skipped
    both = layer.accumulate(planes, columns=columns).long()
    want = x @ layer.weight.numpy().T.astype(np.int64)
    assert np.array_equal(((both[: len(x)] << integer.DIGIT_BITS) + both[len(x) :]).numpy(), want)


@pytest.mark.parametrize("live", [0, 3, 17, 64])
def test_convolution_products_skip_channels_that_are_zero(live):
    """A convolution block's products leave out the channels that are zero in every cell (padded to 8 with zero
    ones): the same sums as over all channels, with none, some or all channels live."""
    rng = np.random.default_rng(live)
    c, h, w, taps = 64, 6, 5, np.arange(25)
    layer = integer.IntegerLinear(c * len(taps), 48, [63] * (c * len(taps)), False, integer.INT8_EXACT)
    layer.weight.copy_(torch.from_numpy(rng.integers(-63, 64, layer.weight.shape)))
    u = np.zeros((2, h * w, c), np.int8)
    u[..., rng.permutation(c)[:live]] = rng.integers(-63, 64, (2, h * w, live))
    cells = np.arange(h * w)
    near, held = integer._neighbourhoods(layer, u, h, w, 2, cells, taps)
    assert (held is None) == (live > 56) and near.shape[1] == len(taps) * (c if held is None else max(8, -(-live // 8) * 8))
    want = layer.accumulate(torch.from_numpy(integer._patches(u, h, w, 2, cells, taps)), taps=len(taps))
    assert torch.equal(layer.accumulate(near, taps=len(taps), columns=held), want)


def test_digit_layer_that_could_pass_int32_is_refused():
    layer = integer.IntegerLinear(40_000, 1, [integer.ACT] * 40_000, False, 63)
    layer.weight.fill_(63)
    assert layer.digits
    with pytest.raises(ValueError, match="2\\^31"):
        layer.check()


def test_chunk_formats_are_not_mixed_up():
    """r10, r11 and r12 code the same latents in chunk formats 2, 3 and 4: each codec refuses the others' chunks."""

    name = sorted(GOLDEN["golden_r11"]["chunks"])[0]
    sets = ("golden_r10", "golden_r11", "golden_r12")
    for mine, other in ((a, b) for a in sets for b in sets if a != b):
        with pytest.raises(CorruptChunkError, match="chunk format version"):
            golden_codec(mine)[1].decode((FIXTURE / other / name).read_bytes())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("golden", sorted(GOLDEN))
def test_golden_chunks_on_cuda(golden):
    """The integer networks on a GPU (cuBLAS, any algorithm) give the same latents."""
    coder = ChunkCoder(golden_codec(golden)[0], device="cuda")
    for name, want in GOLDEN[golden]["chunks"].items():
        assert _sha(coder.decode((FIXTURE / golden / name).read_bytes())[0]) == want["latent_sha256"], name
