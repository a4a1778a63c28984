"""The training forward path learns: a tiny model overfits one small image."""

import numpy as np
import torch

from cps_tiles.model import CPSModel, ModelConfig, rd_loss


def test_overfit_tiny_model_loss_drops():
    torch.manual_seed(0)
    model = CPSModel(ModelConfig(N=16, M=24, Nz=16)).train()
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    img = np.stack([0.5 + 0.4 * np.sin(6 * xx), 0.5 + 0.4 * np.cos(5 * yy), xx * yy])
    x = torch.tensor(img, dtype=torch.float32)[None]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(150):
        out = model(x, 3)
        loss = rd_loss(out, x, 3)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])
    assert out["x_hat"].shape == x.shape
