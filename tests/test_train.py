"""The training forward path learns: a tiny model overfits one small image."""

import numpy as np
import pytest
import torch

from cps_tiles.transforms.model import CPSModel, ModelConfig, rd_loss


@pytest.mark.parametrize("slices", [0, 4])
def test_overfit_tiny_model_loss_drops(slices):
    """Also with a channel context, which joint training (``--slices``) trains with the rest."""
    torch.manual_seed(0)
    model = CPSModel(ModelConfig(N=16, M=24, Nz=16, slices=slices)).train()
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    img = np.stack([0.5 + 0.4 * np.sin(6 * xx), 0.5 + 0.4 * np.cos(5 * yy), xx * yy])
    x = torch.tensor(img, dtype=torch.float32)[None]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _step in range(150):
        out = model(x, 3)
        loss = rd_loss(out, x, 3)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])
    assert out["x_hat"].shape == x.shape
    if slices:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.context.nets[-1][-1].parameters())


def test_train_cli_checkpoints_logs_and_resumes(tmp_path):
    import csv
    import shutil

    import pyvips
    from conftest import smooth_image

    from cps_tiles.training.train import main

    data = tmp_path / "data"
    data.mkdir()
    for k in range(3):
        pyvips.Image.new_from_array(smooth_image(160, 200, seed=k)).copy(interpretation="srgb").pngsave(str(data / f"{k}.png"))
    pyvips.Image.new_from_array(smooth_image(300, 300, seed=9)).copy(interpretation="srgb").jpegsave(str(data / "j.jpg"))
    run = tmp_path / "run"
    args = [str(data), "--out", str(run), "--N", "8", "--M", "12", "--crop", "64", "--batch", "2", "--minutes", "5"]
    main(args + ["--steps", "4"])
    with open(run / "log.csv", "a") as log:  # a kill after the checkpoint: steps 5-6 logged, 7 cut short
        log.write("5,0.1,1,1e-3,1,1,20\n6,0.1,1,1e-3,1,1,20\n7,0.1,1")
    main(args + ["--steps", "7", "--resume"])
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 8))
    assert (run / "checkpoint.pt").is_file() and (run / "log.png").is_file()
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 7 and "optimizer" in state
    # a checkpoint written before a config field existed (here: entropy) resumes with its default
    del state["config"]["entropy"]
    torch.save(state, run / "checkpoint.pt")
    main(args + ["--steps", "8", "--resume"])
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 8
    # continue from a committed codec's weights in a fresh run directory
    from cps_tiles.transforms.weights import load_codec

    main([str(data), "--out", str(tmp_path / "run2"), "--N", "8", "--M", "12", "--crop", "64", "--batch", "2",
          "--steps", "1", "--lr", "0", "--init", "tiny-test"])
    state = torch.load(tmp_path / "run2" / "checkpoint.pt", weights_only=False)
    ref = load_codec("tiny-test").model.state_dict()
    assert torch.equal(state["model"]["g_a.0.down.weight"], ref["g_a.0.down.weight"])  # lr 0: unchanged
    # a released codec's training log carries on: steps numbered on, its rows kept in the new log
    released = tmp_path / "released"
    shutil.copytree(load_codec("tiny-test").path, released)
    shutil.copy(run / "log.csv", released / "training_log.csv")
    main([str(data), "--out", str(tmp_path / "run3"), "--N", "8", "--M", "12", "--crop", "64", "--batch", "2",
          "--steps", "9", "--minutes", "60", "--init", str(released)])
    rows = list(csv.DictReader(open(tmp_path / "run3" / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 10))
    assert float(rows[7]["minutes"]) >= float(rows[6]["minutes"])  # the wall clock carries on too
    assert torch.load(tmp_path / "run3" / "checkpoint.pt", weights_only=False)["step"] == 9


def test_training_minutes_leave_out_stops(tmp_path):
    """A codec's training time counts steps, not the minutes the run's process was stopped."""
    from cps_tiles.training.run import training_minutes

    log = tmp_path / "log.csv"
    log.write_text("step,minutes,level,lr,loss,bpp,psnr\n" + "".join(
        f"{k + 1},{m},1,1e-3,1,1,20\n" for k, m in enumerate([0.1, 0.2, 0.3, 30.3, 30.4])))
    # 0.1 + two 0.1-min steps, the 30-min stop left out, then one more 0.1-min step
    assert training_minutes(log) == pytest.approx(0.4)


def test_widened_model_computes_what_the_narrow_one_does():
    """Net2Net-style widening (more N, M and quality levels) starts from the narrow codec's function:
    same reconstruction and the same rate at every old level, and every new weight block trainable."""
    from cps_tiles.training.widen import widen

    narrow = CPSModel(ModelConfig(N=8, M=12, Nz=8)).eval()
    wide = widen(narrow, ModelConfig(N=16, M=20, Nz=8, levels=10)).eval()
    x = torch.rand(1, 3, 64, 64)
    for level in range(8):
        torch.manual_seed(level)
        a = narrow(x, level)
        torch.manual_seed(level)
        b = wide(x, level)
        assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-5)
        assert torch.allclose(a["z_likelihoods"], b["z_likelihoods"], atol=1e-5)
    assert bool((wide.gains(9.5)[0] > wide.gains(8)[0]).all())  # the new levels continue upwards
    wide.train()
    loss = rd_loss(wide(x, 9), x, 9)["loss"]
    loss.backward()
    assert wide.g_a[6].weight.grad[12:].abs().sum() > 0  # the analysis learns to fill new latent channels
    assert wide.g_s[0].weight[12:].abs().sum() > 0  # ... which the synthesis already reads
    assert wide.g_a[1].conv.weight.grad[:, 8:].abs().sum() > 0  # links from new transform channels


def test_widen_refuses_to_shrink():
    from cps_tiles.training.widen import widen

    with pytest.raises(ValueError, match="may only grow"):
        widen(CPSModel(ModelConfig(N=16, M=12, Nz=8)), ModelConfig(N=8, M=12, Nz=8))


def test_train_levels_choose_the_levels_drawn():
    from cps_tiles.training.train import trained_levels

    assert trained_levels(None, 10) == (0, 9)
    assert trained_levels("9-10", 10) == (8, 9)
    assert trained_levels("4", 8) == (3, 3)
    for bad in ("0-2", "9-11", "x", "5-3"):
        with pytest.raises(ValueError, match="--train-levels"):
            trained_levels(bad, 10)
