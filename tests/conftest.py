import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from cps_tiles.transforms.model import CPSModel, ModelConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KODAK = SHARED / "kodak"
TEST_CODECS = Path(__file__).resolve().parent / "data" / "codecs"
TINY = "tiny-test"  # random-initialised N=8/M=12 codec committed under tests/data/codecs

# Let the tests (and the subprocesses they start) resolve the tiny test codec by name.
os.environ["CPS_TILES_CODEC_PATH"] = os.pathsep.join(
    p for p in (str(TEST_CODECS), os.environ.get("CPS_TILES_CODEC_PATH", "")) if p
)


#: Hypothesis examples: a quarter of each test's full count by default, all of it in CI
#: (``HYPOTHESIS_PROFILE=ci``, what ``.ci/run`` sets).
FULL_HYPOTHESIS = os.environ.get("HYPOTHESIS_PROFILE") == "ci"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow (minutes each: clusters, kill -9, the demo); .ci/run does")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --slow (or an explicit -m), the slow tier is deselected, not skipped: it is not part
    of the default run, and the summary says how many were left for CI."""
    if config.getoption("--slow") or config.getoption("-m"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def examples(full: int) -> int:
    """The number of hypothesis examples for a test whose full run draws ``full``."""
    return full if FULL_HYPOTHESIS else max(10, full // 4)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args) -> Result:
    """``cps-tiles ARGS`` run in this process (``cli.main``), its output captured: what a user sees,
    without the cost of a fresh interpreter importing torch per command."""
    from cps_tiles.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def cli_subprocess(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``cps-tiles ARGS`` in a fresh interpreter, as a user starts it (the smoke tests)."""
    return subprocess.run([sys.executable, "-m", "cps_tiles.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def tiny_model(dtype: torch.dtype = torch.float32, seed: int = 0, slices: int = 0, spatial: int = 0) -> CPSModel:
    """A small random-initialised model: same layers and geometry as the real one. With ``slices``
    (and ``spatial``), an entropy context whose zero-initialised last layers are randomised too, so
    it changes the rate."""
    torch.manual_seed(seed)
    config = ModelConfig(N=8, M=12, Nz=8, slices=slices, context_hidden=16 if slices else ModelConfig.context_hidden,
                         spatial=spatial, spatial_hidden=8)
    model = CPSModel(config).to(dtype).eval().requires_grad_(False)
    model.z_density.update_table()
    if slices:
        for net in [*model.context.nets, *(model.context.heads if spatial else [])]:
            torch.nn.init.normal_(net[-1].weight, std=0.3)
    return model


@pytest.fixture(scope="session")
def model64() -> CPSModel:
    return tiny_model(torch.float64)


@pytest.fixture(scope="session")
def model32() -> CPSModel:
    return tiny_model(torch.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def smooth_image(h: int, w: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 test image: smooth random fields plus fine texture."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = []
    for _ in range(bands):
        f = sum(np.sin(2 * np.pi * (g.uniform(0.5, 6) * xx * np.cos(a) + g.uniform(0.5, 6) * yy * np.sin(a)) + g.uniform(0, 6))
                for a in g.uniform(0, np.pi, 4))
        chans.append(128 + 25 * f + g.normal(0, 6, (h, w)))
    return np.clip(np.stack(chans, axis=2), 0, 255).astype(np.uint8)
