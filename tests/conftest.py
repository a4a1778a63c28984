import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cps_tiles.model import CPSModel, ModelConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KODAK = SHARED / "kodak"
TEST_CODECS = Path(__file__).resolve().parent / "data" / "codecs"
TINY = "tiny-test"  # random-initialised N=8/M=12 codec committed under tests/data/codecs

# Let the tests (and the subprocesses they start) resolve the tiny test codec by name.
os.environ["CPS_TILES_CODEC_PATH"] = os.pathsep.join(
    p for p in (str(TEST_CODECS), os.environ.get("CPS_TILES_CODEC_PATH", "")) if p
)


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
