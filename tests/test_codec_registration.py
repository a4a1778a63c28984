"""The cps_latent codec under numcodecs' own checks, entry points, and a built wheel."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from numcodecs.registry import get_codec
from numcodecs.tests.common import check_backwards_compatibility, check_config, check_repr

from cps_tiles.errors import CodecError
from cps_tiles.transforms.weights import load_codec
from cps_tiles.zarr_codecs.numcodec import CPSLatentCodec

TESTS = Path(__file__).resolve().parent


def _codecs():
    sha = load_codec(TINY).sha256
    return [CPSLatentCodec(codec=TINY, sha256=sha, quality=q) for q in (1.0, 4.5, 8.0)]


def test_config_round_trip_and_registry():
    for codec in _codecs():
        check_config(codec)
        assert get_codec(codec.get_config()) == codec  # found through the numcodecs.codecs entry point


def test_config_has_no_side_effects():
    """Making a codec and asking its config reads codec.json only: no weights are loaded."""
    from cps_tiles.transforms import weights

    weights._load_codec.cache_clear()
    codec = CPSLatentCodec(codec=TINY, quality=3)
    assert codec.get_config()["sha256"] == json.loads((TESTS / "data" / "codecs" / TINY / "codec.json").read_text())["sha256"]
    assert weights._load_codec.cache_info().currsize == 0 and codec._coder is None


def test_repr_is_exact(monkeypatch):
    import numcodecs.tests.common as common

    monkeypatch.setattr(common, "CPSLatentCodec", CPSLatentCodec, raising=False)  # check_repr evals there
    sha = load_codec(TINY).sha256
    check_repr(f"CPSLatentCodec(codec='{TINY}', sha256='{sha}', quality=4.5)")


def test_backwards_compatibility(monkeypatch):
    """Decodes chunks committed under tests/fixture/: a format change that breaks old stores fails here."""
    rng = np.random.default_rng(42)
    arrays = [np.rint(rng.normal(0, s, (12, h, w))).astype(np.int16) for s, h, w in ((2, 16, 16), (30, 5, 9), (0.3, 1, 1))]
    monkeypatch.chdir(TESTS)
    check_backwards_compatibility(CPSLatentCodec.codec_id, arrays, _codecs())
    assert len(list((TESTS / "fixture" / "cps_latent").glob("codec.*/encoded.*.dat"))) == 9


def test_wrong_weights_are_refused():
    codec = CPSLatentCodec(codec=TINY, sha256="0" * 64, quality=4)
    with pytest.raises(CodecError, match="sha256"):
        codec.encode(np.zeros((12, 4, 4), np.int16))


@pytest.mark.slow  # builds the wheel: a packaging test, run by .ci/run
def test_wheel_carries_the_codecs(tmp_path):
    root = TESTS.parent
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(tmp_path), str(root)], capture_output=True, text=True, timeout=300)
    if out.returncode and "hatchling" in out.stderr:
        out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)],
                             capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("cps_tiles-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    codec_dirs = {n.split("/")[2] for n in names if n.startswith("cps_tiles/codecs/") and n.endswith("codec.json")}
    repo_codecs = {p.parent.name for p in (root / "codecs").glob("*/codec.json")}
    assert codec_dirs == repo_codecs
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[numcodecs.codecs]" in entry and "[zarr.codecs]" in entry and "cps_latent" in entry
    # the default codec resolves and verifies from the unpacked wheel alone, away from the checkout
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if k not in ("CPS_TILES_CODEC_PATH", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    code = ("from cps_tiles.transforms.weights import DEFAULT_CODEC, find_codec, load_codec; "
            "print(find_codec(DEFAULT_CODEC)); print(load_codec(DEFAULT_CODEC).sha256)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    where, sha = out.stdout.split()
    assert where.startswith(str(site)) and len(sha) == 64
