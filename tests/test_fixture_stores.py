"""Stores written by an earlier release keep decoding: committed under tests/fixture/stores/.

The three stores (store format 1: r8 at quality 5, r6 at 2.5 and an RGBA store with r7 at 8,
64-px chunks) and their expected latents and pixels were written once, by the release named in
``expected.json``, and are never regenerated. The latent must come back bit for bit on every
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

FIXTURE = Path(__file__).resolve().parent / "fixture" / "stores"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_store_decodes_as_it_did(name):
    want = EXPECTED[name]
    img = cps_tiles.open(FIXTURE / f"{name}.zarr")
    assert (img.meta.codec, img.meta.quality, list(img.shape)) == (want["codec"], want["quality"], want["shape"])
    assert _sha(zarr.open_group(str(FIXTURE / f"{name}.zarr"), mode="r")["latent"][:]) == want["latent_sha256"]
    pixels = np.asarray(img)
    expected = np.load(FIXTURE / "expected_pixels.npz")[name]
    if _sha(pixels) != want["sha256"]:
        diff = np.abs(pixels.astype(int) - expected)
        assert diff.max() <= 1 and np.count_nonzero(diff) <= 1e-4 * diff.size, "pixels differ beyond float rounding"
    assert np.array_equal(img[10:70, 33:97], pixels[10:70, 33:97])  # regions still equal crops of the whole


def test_fixture_is_intact():
    """The fixture itself is what was committed: 3 stores, their expected arrays, nothing regenerated."""
    assert sorted(EXPECTED) == ["r6-q2.5", "r7-q8-rgba", "r8-q5"]
    arrays = np.load(FIXTURE / "expected_pixels.npz")
    assert all(_sha(arrays[k]) == EXPECTED[k]["sha256"] for k in EXPECTED)
