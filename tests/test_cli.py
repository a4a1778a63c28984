"""The command line: success paths and one-line errors with non-zero exits."""

import json

import numpy as np
import pytest
import pyvips
from conftest import TINY, cli, cli_subprocess, smooth_image, tiny_model

from cps_tiles.transforms.weights import save_codec

run = cli


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    pyvips.Image.new_from_array(smooth_image(200, 300, seed=4)).copy(interpretation="srgb").tiffsave(
        str(d / "in.tif"), tile=True, tile_width=64, tile_height=64)
    return d


def test_convert_info_decode_export(src):
    store = src / "s.zarr"
    r = run("convert", src / "in.tif", store, "--codec", TINY, "--chunk", "64", "--tile", "128", "--quality", "3.5")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no progress bar when not a terminal
    info = json.loads(run("info", store, "--json").stdout)
    assert info["width"] == 300 and info["height"] == 200 and info["quality"] == 3.5 and info["codec"] == TINY
    assert info["bpp"] > 0 and info["ratio"] > 1
    r = run("decode", store, src / "r.png", "--region", "10,20,100,50")
    assert r.returncode == 0, r.stderr
    region = pyvips.Image.new_from_file(str(src / "r.png")).numpy()
    assert run("decode", store, src / "all.png").returncode == 0
    whole = pyvips.Image.new_from_file(str(src / "all.png")).numpy()
    assert np.array_equal(region, whole[20:70, 10:110])
    r = run("export", store, src / "p.tif")
    assert r.returncode == 0, r.stderr
    tif = pyvips.Image.new_from_file(str(src / "p.tif"))
    assert (tif.width, tif.height) == (300, 200) and np.array_equal(tif.numpy(), whole)
    # the store's own pyramid levels, decoded, are the TIFF's reduced-resolution sub-IFDs
    import tifffile

    import cps_tiles

    levels = cps_tiles.open(store).levels
    with tifffile.TiffFile(src / "p.tif") as t:
        subs = t.pages[0].pages
        assert len(subs) == len(levels) - 1 == 3
        for page, level in zip(subs, levels[1:]):
            assert page.subfiletype == 1 and np.array_equal(page.asarray(), np.asarray(level))


@pytest.mark.parametrize("args,needle", [
    (("convert", "/nonexistent.tif", "x.zarr"), "no such file"),
    (("convert", "{src}/in.tif", "{src}/bad.zarr", "--chunk", "100", "--codec", TINY), "multiple of 64"),
    (("convert", "{src}/in.tif", "{src}/bad.zarr", "--quality", "9", "--codec", TINY), "quality"),
    (("convert", "{src}/in.tif", "{src}/bad.zarr", "--quality", "10.5"), "quality must be between 1 and 10"),
    (("decode", "{src}/nothere.zarr", "{src}/x.png"), "no such cps-tiles store"),
    (("info", "{src}"), "no such cps-tiles store"),
    (("decode", "{src}/in.tif", "{src}/x.png"), "no such cps-tiles store"),
    (("decode", "{src}/nothere.zarr", "{src}/x.bmp"), "must end in"),
    (("decode", "{src}/nothere.zarr", "{src}/x.png", "--region", "1,2,3"), "X,Y,W,H"),
    (("train", "{src}"), "required: --out"),
    (("train", "{src}", "--out", "{src}/run", "--crop", "4096"), "no training images"),
    (("train", "{src}/nothere", "--out", "{src}/run"), "does not exist"),
])
def test_errors_are_one_line(src, args, needle):
    r = run(*[a.format(src=src) for a in args])
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cps-tiles: error:") and needle in lines[0], r.stderr


def test_refuses_overwrite_then_allows(src):
    store = src / "o.zarr"
    assert run("convert", src / "in.tif", store, "--codec", TINY, "--chunk", "64").returncode == 0
    r = run("convert", src / "in.tif", store, "--codec", TINY, "--chunk", "64")
    assert r.returncode == 1 and "already exists" in r.stderr
    assert run("convert", src / "in.tif", store, "--codec", TINY, "--chunk", "64", "--overwrite").returncode == 0


def test_help_on_every_command():
    for cmd in ("convert", "decode", "info", "export", "verify", "train", "train-context", "quantize-context", "demo"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "usage" in r.stdout


def test_quantize_context_refuses_a_codec_without_a_spatial_context(tmp_path):
    r = run("quantize-context", tmp_path, "--init", "cps-n96m160-r7", "--out", tmp_path / "q", "--name", "q")
    assert r.returncode != 0 and "has no spatial entropy context" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "q").exists()


def test_quantize_context_refuses_a_codec_with_its_context_in_one_file(tmp_path):
    """A train-context run exported whole (transforms and context in one file) cannot share its
    transforms file with the integer codec: refused in one line, before the calibration."""
    save_codec(tiny_model(slices=3, spatial=3), tmp_path / "whole", "tiny-whole")
    r = run("quantize-context", tmp_path, "--init", tmp_path / "whole", "--out", tmp_path / "q", "--name", "q")
    assert r.returncode == 1 and "in one file" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "q").exists()


def test_command_line_smoke(src):
    """The real entry point in a fresh interpreter: a success and a one-line failure."""
    r = cli_subprocess("info", src / "missing.zarr")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no such cps-tiles store" in r.stderr
    r = cli_subprocess("convert", src / "in.tif", src / "smoke.zarr", "--codec", TINY, "--chunk", "64", "--quality", "2")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "300x200x3" in r.stdout


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    """The README's first command: the bundled sample through the default codec."""
    r = cli_subprocess("demo", tmp_path / "demo", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "bpp" in r.stdout and "PSNR" in r.stdout
    assert (tmp_path / "demo" / "region.png").is_file() and (tmp_path / "demo" / "mosaic.zarr" / "zarr.json").is_file()


def test_emulated_bf16_warns_in_one_line(src, monkeypatch, capsys):
    """--precision bfloat16 on a CPU without native bf16 works, and says in one line that it is slow."""
    import warnings

    from cps_tiles import cli
    from cps_tiles.transforms import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device_type="cpu": False)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown even if an earlier test already raised it
        assert cli.main(["convert", str(src / "in.tif"), str(src / "bf.zarr"), "--codec", TINY, "--chunk", "64",
                         "--precision", "bfloat16"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and all(line.startswith("cps-tiles: warning: cpu has no native bf16") for line in lines), lines
    assert warnings.showwarning is not cli._one_line_warning  # the hook does not outlive main()
