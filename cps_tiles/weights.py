"""Trained codecs: find, verify (sha256) and load them; export a training checkpoint.

A codec is a directory ``codecs/<name>/`` holding ``model.safetensors`` (weights, including the
z probability table), ``codec.json`` (architecture, channel counts and the weights' sha256) and
``CARD.md`` (the model card). It is found inside the installed package (``cps_tiles/codecs``,
where the wheel puts it) or, for a source checkout, in ``codecs/`` beside the package.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .model import CPSModel, ModelConfig

DEFAULT_CODEC = "cps-n96m160-r8"
#: cps-v1: transforms + hyperprior; cps-v2 adds the channel-conditional context (``slices`` > 0),
#: cps-v3 the checkerboard spatial context on top (``spatial`` > 0). A package that predates a
#: version refuses its codecs by name instead of misreading them.
ARCHITECTURES = ("cps-v1", "cps-v2", "cps-v3")


def architecture(config: ModelConfig) -> str:
    return ARCHITECTURES[(config.slices > 0) + (config.spatial > 0)]


class CodecError(RuntimeError):
    """A codec is missing, fails its checksum, or does not match what a store was written with."""


def codec_roots() -> list[Path]:
    """Where codecs are looked up: ``$CPS_TILES_CODEC_PATH`` entries, the package, the checkout."""
    here = Path(__file__).resolve().parent
    extra = [Path(p) for p in os.environ.get("CPS_TILES_CODEC_PATH", "").split(os.pathsep) if p]
    return [*extra, here / "codecs", here.parent / "codecs"]


#: Codec directories this process loaded by path, by codec name: the Zarr codec and the workers look
#: codecs up by the name a store records, which must then find a directory given outside the roots.
_LOADED: dict[str, Path] = {}


def find_codec(name: str) -> Path:
    """Directory of the codec called ``name`` (or ``name`` itself if it is a codec directory)."""
    candidates = [Path(name), *([_LOADED[name]] if name in _LOADED else []), *(root / name for root in codec_roots())]
    for c in candidates:
        if (c / "codec.json").is_file():
            return c
    raise CodecError(f"codec {name!r} not found (looked in {', '.join(str(r) for r in codec_roots())}; "
                     "add its parent directory to CPS_TILES_CODEC_PATH)")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Codec:
    """A loaded codec: its name, the weights' sha256, the model (eval mode, CPU) and its directory."""

    name: str
    sha256: str
    model: CPSModel
    path: Path


@functools.lru_cache(maxsize=4)
def load_codec(name: str = DEFAULT_CODEC) -> Codec:
    """Load and verify a codec; cached, so each process (Dask worker) loads it once."""
    d = find_codec(name)
    meta = json.loads((d / "codec.json").read_text())
    if meta.get("architecture") not in ARCHITECTURES:
        raise CodecError(f"codec {name!r} has architecture {meta.get('architecture')!r}, this build reads "
                         f"{' and '.join(ARCHITECTURES)}")
    digest = sha256_file(d / "model.safetensors")
    if digest != meta["sha256"]:
        raise CodecError(f"codec {name!r}: weights sha256 {digest[:12]}... does not match codec.json")
    model = CPSModel(ModelConfig(**meta["config"]))
    model.load_state_dict(load_file(str(d / "model.safetensors")))
    # channels_last is the fast CPU layout; every encode/decode path uses this one model object.
    model.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    _LOADED.setdefault(meta["name"], d.resolve())
    return Codec(meta["name"], digest, model, d.resolve())


def save_codec(model: CPSModel, out_dir: Path, name: str, training: dict | None = None) -> Codec:
    """Write ``model`` (z tables refreshed) as a codec directory and load it back."""
    model.z_density.update_table()
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out_dir / "model.safetensors"))
    (out_dir / "model.safetensors").chmod(0o644)  # safetensors writes 0600; codecs are shared read-only data
    meta = {"name": name, "architecture": architecture(model.config), "config": model.config.to_dict(),
            "sha256": sha256_file(out_dir / "model.safetensors"), "training": training or {}}
    (out_dir / "codec.json").write_text(json.dumps(meta, indent=2) + "\n")
    load_codec.cache_clear()
    return load_codec(str(out_dir))


def export_checkpoint(checkpoint: Path, out_dir: Path, name: str, extra: dict | None = None) -> Codec:
    """Training checkpoint -> codec directory ``out_dir`` (see :func:`save_codec`).

    Training time comes from the run's ``log.csv`` beside the checkpoint when there is one."""
    from .train import training_minutes

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = CPSModel(ModelConfig(**state["config"]))
    model.load_state_dict(state["model"])
    log = Path(checkpoint).with_name("log.csv")
    # "minutes" counts training steps; the checkpoint's elapsed time is wall clock, stops included
    minutes = training_minutes(log) if log.exists() else state["elapsed"] / 60
    training = {"steps": state["step"], "minutes": round(minutes, 1), "wall_minutes": round(state["elapsed"] / 60, 1),
                **(extra or {})}
    return save_codec(model, out_dir, name, training)
