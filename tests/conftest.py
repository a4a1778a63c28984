from pathlib import Path

import numpy as np
import pytest
import torch

from cps_tiles.model import CPSModel, ModelConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KODAK = SHARED / "kodak"


def tiny_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> CPSModel:
    """A small random-initialised model: same layers and geometry as the real one."""
    torch.manual_seed(seed)
    model = CPSModel(ModelConfig(N=8, M=12, Nz=8)).to(dtype).eval().requires_grad_(False)
    model.z_density.update_table()
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
