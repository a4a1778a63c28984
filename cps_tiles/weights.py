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
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .model import CPSModel, ModelConfig

DEFAULT_CODEC = "cps-base"
ARCHITECTURE = "cps-v1"


class CodecError(RuntimeError):
    """A codec is missing, fails its checksum, or does not match what a store was written with."""


def codec_roots() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [here / "codecs", here.parent / "codecs"]


def find_codec(name: str) -> Path:
    """Directory of the codec called ``name`` (or ``name`` itself if it is a codec directory)."""
    candidates = [Path(name)] + [root / name for root in codec_roots()]
    for c in candidates:
        if (c / "codec.json").is_file():
            return c
    raise CodecError(f"codec {name!r} not found (looked in {', '.join(str(r) for r in codec_roots())})")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Codec:
    """A loaded codec: its name, the weights' sha256 and the model (eval mode, CPU)."""

    name: str
    sha256: str
    model: CPSModel


@functools.lru_cache(maxsize=4)
def load_codec(name: str = DEFAULT_CODEC) -> Codec:
    """Load and verify a codec; cached, so each process (Dask worker) loads it once."""
    d = find_codec(name)
    meta = json.loads((d / "codec.json").read_text())
    if meta.get("architecture") != ARCHITECTURE:
        raise CodecError(f"codec {name!r} has architecture {meta.get('architecture')!r}, expected {ARCHITECTURE!r}")
    digest = sha256_file(d / "model.safetensors")
    if digest != meta["sha256"]:
        raise CodecError(f"codec {name!r}: weights sha256 {digest[:12]}... does not match codec.json")
    model = CPSModel(ModelConfig(**meta["config"]))
    model.load_state_dict(load_file(str(d / "model.safetensors")))
    model.eval().requires_grad_(False)
    return Codec(meta["name"], digest, model)


def export_checkpoint(checkpoint: Path, out_dir: Path, name: str, extra: dict | None = None) -> Codec:
    """Training checkpoint -> ``out_dir/{model.safetensors, codec.json}`` with fresh z tables."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = CPSModel(ModelConfig(**state["config"]))
    model.load_state_dict(state["model"])
    model.z_density.update_table()
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out_dir / "model.safetensors"))
    meta = {"name": name, "architecture": ARCHITECTURE, "config": state["config"],
            "sha256": sha256_file(out_dir / "model.safetensors"),
            "training": {"steps": state["step"], "minutes": round(state["elapsed"] / 60, 1), **(extra or {})}}
    (out_dir / "codec.json").write_text(json.dumps(meta, indent=2) + "\n")
    load_codec.cache_clear()
    return load_codec(str(out_dir))
