"""Stores written by an earlier release keep decoding: committed under tests/fixture/stores/,
stores_r9/, stores_r10/, stores_r11/ and stores_r12/.

The three stores of stores/ (store format 1: r8 at quality 5, r6 at 2.5 and an RGBA store with r7
at 8, 64-px chunks), the r9 store of stores_r9/ (store format 2 with levels, quality 3.37: the
first integer-entropy codec and chunk format 2), the r10 store of stores_r10/ (quality 9.5: the
first high-fidelity codec, N=192/M=320), the r11 store of stores_r11/ (the same region and quality:
int8 spatial convolutions, chunk format 3; r10's transforms, so r10's latents and pixels), the r12 store
of stores_r12/ (quality 9.5, a wider region: 7-bit weights in every layer, chunk format 4) and their
expected latents and pixels were written once, by the release named in each ``expected.json``, and
are never regenerated. The latent must come back bit for bit on every
machine; the pixels bit for bit too, except that a CPU with other float kernels may round a pixel
at an exact .5 boundary the other way (the documented float tolerance, checked as such).
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

import cps_tiles

FIXTURES = sorted((Path(__file__).resolve().parent / "fixture").glob("stores*"))
EXPECTED = {name: (root, want) for root in FIXTURES for name, want in json.loads((root / "expected.json").read_text()).items()}


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_store_decodes_as_it_did(name):
    root, want = EXPECTED[name]
    img = cps_tiles.open(root / f"{name}.zarr")
    assert (img.meta.codec, img.meta.quality, list(img.shape)) == (want["codec"], want["quality"], want["shape"])
    group = zarr.open_group(str(root / f"{name}.zarr"), mode="r")
    assert _sha(group["latent"][:]) == want["latent_sha256"]
    for level, digest in want.get("level_latent_sha256", {}).items():
        assert _sha(group[f"levels/{level}/latent"][:]) == digest, level
    pixels = np.asarray(img)
    expected = np.load(root / "expected_pixels.npz")[name]
    if _sha(pixels) != want["sha256"]:
        diff = np.abs(pixels.astype(int) - expected)
        assert diff.max() <= 1 and np.count_nonzero(diff) <= 1e-4 * diff.size, "pixels differ beyond float rounding"
    assert np.array_equal(img[10:70, 33:97], pixels[10:70, 33:97])  # regions still equal crops of the whole


def test_fixture_is_intact():
    """The fixture itself is what was committed: 7 stores, their expected arrays, nothing regenerated."""
    assert sorted(EXPECTED) == ["r10-q9.5", "r11-q9.5", "r12-q9.5", "r6-q2.5", "r7-q8-rgba", "r8-q5", "r9-q3.37"]
    for name, (root, want) in EXPECTED.items():
        assert _sha(np.load(root / "expected_pixels.npz")[name]) == want["sha256"]
