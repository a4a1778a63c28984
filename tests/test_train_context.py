"""train-context: trains only the entropy context, on the exact coded rate, from a released codec."""

import csv
import json

import pyvips
import torch
from conftest import TINY, smooth_image

from cps_tiles.cli import main
from cps_tiles.training.context import context_bits
from cps_tiles.training.data import image_latents
from cps_tiles.training.run import export_checkpoint
from cps_tiles.transforms.weights import load_codec


def test_train_context_lowers_the_rate_and_keeps_the_transforms(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    images = [smooth_image(160, 192, seed=s) for s in range(3)]
    for k, a in enumerate(images):
        pyvips.Image.new_from_array(a).write_to_file(str(data / f"{k}.png"))
    run = tmp_path / "run"
    args = ["train-context", str(data), "--init", TINY, "--out", str(run), "--slices", "3", "--hidden", "16",
            "--cells", "8", "--lr", "3e-3", "--steps", "60"]
    assert main(args) == 0
    steps = [int(r["step"]) for r in csv.DictReader(open(run / "context_log.csv"))]
    assert steps == list(range(1, 61))

    codec = export_checkpoint(run / "checkpoint.pt", tmp_path / "codec", "tiny-context")
    base = load_codec(TINY)
    # exported as parts: the --init codec's transforms file, shared, and the trained context
    parts = json.loads((codec.path / "codec.json").read_text())["parts"]
    assert (codec.path / parts[0]["file"]).resolve() == (base.path / "model.safetensors").resolve()
    assert parts[1]["file"] == "context.safetensors"
    assert codec.model.config.slices == 3 and (codec.path / "codec.json").read_text().count('"cps-v2"') == 1
    trained, start = codec.model.state_dict(), base.model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in start.items())  # transforms, hyperprior, gains untouched

    # the rate of the training latents at every level, trained context vs a zero (untrained) one
    zero = export_checkpoint(run / "checkpoint.pt", tmp_path / "zero", "tiny-zero").model
    for net in zero.context.nets:
        torch.nn.init.zeros_(net[-1].weight)
        torch.nn.init.zeros_(net[-1].bias)
    levels = torch.arange(zero.config.levels)
    with torch.no_grad():
        crops = [y[None, :, : y.shape[1] // 4 * 4, : y.shape[2] // 4 * 4] for y in image_latents(zero, images)]
        rates = [sum(context_bits(m, y.expand(len(levels), -1, -1, -1), levels).item() for y in crops)
                 for m in (codec.model, zero)]
    assert rates[0] < 0.98 * rates[1]

    # resume carries on the step count
    assert main([*args[:-1], "80", "--resume"]) == 0
    assert [int(r["step"]) for r in csv.DictReader(open(run / "context_log.csv"))] == list(range(1, 81))

    # a spatial context on top of that channel context (the cps-v2 codec as init, whose context
    # the new model starts from): fewer bits again, and a cps-v3 codec
    spatial_run = tmp_path / "spatial"
    assert main(["train-context", str(data), "--init", str(codec.path), "--out", str(spatial_run), "--slices", "3",
                 "--hidden", "16", "--spatial", "3", "--cells", "8", "--lr", "3e-3", "--steps", "60"]) == 0
    spatial = export_checkpoint(spatial_run / "checkpoint.pt", tmp_path / "spatial-codec", "tiny-spatial")
    assert (spatial.path / "codec.json").read_text().count('"cps-v3"') == 1
    assert all(torch.equal(spatial.model.state_dict()[k], v) for k, v in start.items())
    with torch.no_grad():
        rate = sum(context_bits(spatial.model, y.expand(len(levels), -1, -1, -1), levels).item() for y in crops)
    assert rate < 0.98 * rates[0]

    # --context-from: a fresh run starts from another codec's trained context (here on the same
    # transforms), and keeps its own transforms
    common = ["--slices", "3", "--hidden", "16", "--spatial", "3", "--cells", "8", "--lr", "1e-12", "--steps", "1"]
    assert main(["train-context", str(data), "--init", TINY, "--context-from", str(spatial.path),
                 "--out", str(tmp_path / "carried"), *common]) == 0
    carried = export_checkpoint(tmp_path / "carried" / "checkpoint.pt", tmp_path / "carried-codec", "tiny-carried").model
    state = carried.state_dict()
    assert all(torch.equal(state[k], v) for k, v in start.items())
    assert all(torch.allclose(state[k], v, atol=1e-8) for k, v in spatial.model.state_dict().items() if k.startswith("context."))
    # a context of another shape (channel only) is refused in one line
    capsys.readouterr()
    assert main(["train-context", str(data), "--init", TINY, "--context-from", str(codec.path),
                 "--out", str(tmp_path / "refused"), *common]) == 1
    assert "has no entropy context of this shape" in capsys.readouterr().err


def test_train_context_rejects_a_codec_of_other_channels(tmp_path, capsys):
    assert main(["train-context", str(tmp_path), "--init", TINY, "--out", str(tmp_path / "r"), "--slices", "5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cps-tiles: error:") and "12 latent channels do not split into 5 slices" in err


def test_quantization_aware_training_rounds_as_quantize_context(tmp_path):
    """--qat-weight-max trains through the rounding quantize-context applies: the fake-quantized
    weights are already on quantize_layer's grid (rounding them again changes nothing), and a run
    trains and exports like any other, here from an integer codec's transforms."""
    from cps_tiles.training.quantize import fake_quantized, quantize_layer
    from cps_tiles.transforms.integer import ACT, IntegerLinear

    gen = torch.Generator().manual_seed(0)
    weight, units = torch.randn(8, 12, generator=gen, dtype=torch.float64), torch.rand(12, generator=gen, dtype=torch.float64) + 0.1
    rounded = fake_quantized(weight, units, 63)
    assert torch.allclose(fake_quantized(rounded, units, 63), rounded, rtol=1e-12)
    layer = IntegerLinear(12, 8, [ACT] * 12, True, 63)
    quantize_layer(layer, rounded, torch.zeros(8, dtype=torch.float64), units, torch.full((8,), 1e-3, dtype=torch.float64))
    scale = (weight * units).abs().amax(1, keepdim=True) / 63
    assert torch.allclose(layer.weight.double() * scale, rounded * units, rtol=1e-9)
    assert int(layer.weight.abs().max()) == 63
    straight = weight.clone().requires_grad_(True)
    fake_quantized(straight, units, 63).sum().backward()
    assert torch.allclose(straight.grad, torch.ones_like(weight))  # straight-through

    data = tmp_path / "data"
    data.mkdir()
    for k in range(2):
        pyvips.Image.new_from_array(smooth_image(160, 192, seed=k)).write_to_file(str(data / f"{k}.png"))
    run = tmp_path / "qat"
    # from an integer codec (r9): its transforms, and a float context to train
    assert main(["train-context", str(data), "--init", "cps-n96m160-r9", "--out", str(run), "--spatial", "5",
                 "--cells", "8", "--lr", "1e-3", "--steps", "2", "--qat-weight-max", "63"]) == 0
    codec = export_checkpoint(run / "checkpoint.pt", tmp_path / "codec", "r9-qat")
    assert (codec.model.config.entropy, codec.model.config.slices, codec.model.config.spatial) == ("float", 5, 5)
    # the grid it trained for travels with it, and quantize-context quantizes on that grid (no calibration)
    qat = json.loads((codec.path / "codec.json").read_text())["training"]["qat"]
    assert qat["weight_max"] == 63 and qat["units"] == torch.load(run / "checkpoint.pt", weights_only=False)["qat_units"]
    quantize = ["quantize-context", str(data), "--init", str(codec.path), "--name", "r9-qat-int", "--out", str(tmp_path / "int")]
    assert main([*quantize, "--entropy", "integer8"]) == 1  # 10-bit weights: not the grid it trained for
    assert main([*quantize, "--entropy", "integer8all"]) == 0
    integer = load_codec(str(tmp_path / "int"))
    assert integer.model.config.entropy == "integer8all"
    assert json.loads((integer.path / "codec.json").read_text())["training"]["integer_entropy"]["calibration"].startswith(
        "the activation units its quantization-aware training used")


def test_an_integer_codecs_networks_dequantize_to_the_float_context_they_came_from():
    """train-context from an integer codec starts from its networks turned back into float ones:
    r9's, so rebuilt, code a real latent within 1% of the bits of r8's float context, which r9 was
    quantized from (+0.07% when written), where a fresh context spends more than 3% more (8%)."""
    from cps_tiles.demo import sample_mosaic
    from cps_tiles.training.quantize import dequantize_context
    from cps_tiles.transforms.model import CPSModel, ModelConfig

    r8, r9 = load_codec("cps-n96m160-r8").model, load_codec("cps-n96m160-r9").model
    rebuilt = CPSModel(ModelConfig(**{**r9.config.to_dict(), "entropy": "float"})).eval()
    rebuilt.load_state_dict(r9.state_dict(), strict=False)
    x = torch.from_numpy(sample_mosaic(1)[:256, :384].transpose(2, 0, 1).copy()).float()[None] / 255
    with torch.inference_mode():
        y = r8.analysis(x).expand(3, -1, -1, -1)
    levels = torch.tensor([1, 4, 7])
    with torch.no_grad():
        fresh_bits = float(context_bits(rebuilt, y, levels))
        rebuilt.context.load_state_dict(dequantize_context(r9.integer, r9.config))
        bits, r8_bits = float(context_bits(rebuilt, y, levels)), float(context_bits(r8, y, levels))
    assert abs(bits / r8_bits - 1) < 0.01 and fresh_bits > 1.03 * r8_bits
