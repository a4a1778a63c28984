"""Work reused for repeated content (coding/memo.py) changes no stored byte and no decoded pixel:
a store written and read with reuse is byte-identical to one written and read without it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import smooth_image

import cps_tiles
from cps_tiles.coding.memo import ContentMemo, content_key


def slide_like(h: int = 1100, w: int = 900) -> np.ndarray:
    """Mostly flat 'glass' (one colour) with textured 'tissue' islands and a nodata-black band."""
    img = np.full((h, w, 3), (236, 232, 240), np.uint8)
    img[100:420, 150:520] = smooth_image(320, 370, seed=4)
    img[480:650, 600:860] = smooth_image(170, 260, seed=5)
    img[:, -60:] = 0
    return img


def store_files(path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.slow  # two conversions of a 1-MP image with the default codec and a pyramid: half a minute
def test_reuse_changes_no_byte_and_no_pixel(tmp_path, monkeypatch, shard=512):
    pixels = slide_like()
    monkeypatch.setenv("CPS_TILES_REUSE", "0")
    plain = cps_tiles.convert(pixels, tmp_path / "plain.zarr", quality=4, tile=256, shard=shard, levels=2,
                              progress=False)
    expected = [np.asarray(lv) for lv in plain.levels]
    monkeypatch.setenv("CPS_TILES_REUSE", "1")
    from cps_tiles.store import reader, writer

    before = writer._ANALYZED.hits, reader._SYNTHESIZED.hits
    reused = cps_tiles.convert(pixels, tmp_path / "reused.zarr", quality=4, tile=256, shard=shard, levels=2,
                               progress=False)
    assert store_files(tmp_path / "plain.zarr") == store_files(tmp_path / "reused.zarr")
    for level, want in zip(cps_tiles.open(tmp_path / "reused.zarr", cache_mb=0).levels, expected):
        assert np.array_equal(np.asarray(level), want)
        assert np.array_equal(level[37:301, 410:777], want[37:301, 410:777])  # a region reads the same
    # the glass was analysed and synthesized once, then reused
    assert writer._ANALYZED.hits > before[0] and reader._SYNTHESIZED.hits > before[1]
    assert reused.shape == plain.shape


def test_memo_returns_copies_and_evicts():
    memo = ContentMemo(entries=2)
    a = np.arange(6).reshape(2, 3)
    memo.put(content_key(a), a)
    got = memo.get(content_key(a))
    got[:] = 0
    assert np.array_equal(memo.get(content_key(a)), np.arange(6).reshape(2, 3))
    for k in range(3):
        memo.put(content_key(k), k)
    assert memo.get(content_key(a)) is None and memo.get(content_key(2)) == 2
    assert content_key(np.zeros(4, np.int16)) != content_key(np.zeros(2, np.int32))  # dtype and shape count
