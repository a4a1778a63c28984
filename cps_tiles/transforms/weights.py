"""Trained codecs: find, verify (sha256) and load them.

A codec is a directory ``codecs/<name>/`` holding ``codec.json`` (architecture, channel counts and
the sha256 of the weights), ``CARD.md`` (the model card) and its weights, either

* ``model.safetensors``, whose sha256 is the codec's, or
* ``parts``: safetensors files listed in ``codec.json`` with their own sha256, whose tensors
  together are the weights (releases that share their transforms share that file). The codec's
  sha256 is still that of the single ``model.safetensors`` the parts make when saved together
  (``composed_bytes``), so a store's recorded sha256 means the same weights either way.

The weights include the z probability table. A codec is found inside the installed package
(``cps_tiles/codecs``, where the wheel puts it) or, for a source checkout, in ``codecs/`` beside
the package, or in a directory of ``$CPS_TILES_CODEC_PATH``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save, save_file

from ..errors import CodecError
from .model import ENTROPY_ARITHMETIC, CPSModel, ModelConfig

DEFAULT_CODEC = "cps-n192m320-r12"
#: cps-v1: transforms + hyperprior; cps-v2 adds the channel-conditional context (``slices`` > 0),
#: cps-v3 the checkerboard spatial context on top (``spatial`` > 0), cps-v4 computes cps-v3's entropy
#: networks in exact integer arithmetic (``entropy == "integer"``), cps-v5 with the spatial
#: convolutions in 7-bit operands, computed as int8 products (``entropy == "integer8"``), cps-v6 with
#: every layer's weights in 7 bits (``entropy == "integer8all"``). A package that predates a version
#: refuses its codecs by name instead of misreading them.
ARCHITECTURES = ("cps-v1", "cps-v2", "cps-v3", "cps-v4", "cps-v5", "cps-v6")


def architecture(config: ModelConfig) -> str:
    # ENTROPY_ARITHMETIC's order: float, integer (cps-v4), integer8 (cps-v5), integer8all (cps-v6)
    return ARCHITECTURES[(config.slices > 0) + (config.spatial > 0) + ENTROPY_ARITHMETIC.index(config.entropy)]


def codec_roots() -> list[Path]:
    """Where codecs are looked up: ``$CPS_TILES_CODEC_PATH`` entries, the package, the checkout."""
    here = Path(__file__).resolve().parents[1]  # the cps_tiles package
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


def load_codec(name: str = DEFAULT_CODEC, sha256: str | None = None, where: str = "") -> Codec:
    """Load and verify a codec; cached, so each process (Dask worker) loads it once.

    With ``sha256`` (what a store or a chunk codec config records), the installed weights must be
    exactly those: otherwise :class:`~cps_tiles.errors.CodecError`, prefixed with ``where`` (the
    store it is for), since other weights would decode the store into garbage.
    """
    codec = _load_codec(name)
    if sha256 is not None and codec.sha256 != sha256:
        prefix = f"{where}: " if where else ""
        raise CodecError(f"{prefix}written with codec {name!r} sha256 {sha256[:12]}..., but the installed weights "
                         f"are {codec.sha256[:12]}...; install the matching codec to decode it")
    return codec


def codec_sha256(name: str) -> str:
    """The sha256 a codec's ``codec.json`` declares, without loading (or checking) its weights."""
    return json.loads((find_codec(name) / "codec.json").read_text())["sha256"]


@functools.lru_cache(maxsize=4)
def _load_codec(name: str) -> Codec:
    d = find_codec(name)
    meta = json.loads((d / "codec.json").read_text())
    if meta.get("architecture") not in ARCHITECTURES:
        raise CodecError(f"codec {name!r} has architecture {meta.get('architecture')!r}, this build reads "
                         f"{' and '.join(ARCHITECTURES)}")
    parts = meta.get("parts", [{"file": "model.safetensors", "sha256": meta["sha256"]}])
    files = [(d / p["file"], p["sha256"]) for p in parts]
    state = {}
    for path, expected in files:
        if not path.is_file():
            raise CodecError(f"codec {name!r}: weights file {path} is missing")
        digest = sha256_file(path)
        if digest != expected:
            raise CodecError(f"codec {name!r}: {path.name} sha256 {digest[:12]}... does not match codec.json")
        state.update(load_file(str(path)))
    model = CPSModel(ModelConfig(**meta["config"]))
    model.load_state_dict(state)
    if model.integer is not None:
        try:
            model.integer.check()
        except ValueError as exc:
            raise CodecError(f"codec {name!r}: its integer entropy networks are not provably exact ({exc})") from None
    # channels_last is the fast CPU layout; every encode/decode path uses this one model object.
    model.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    _LOADED.setdefault(meta["name"], d.resolve())
    return Codec(meta["name"], meta["sha256"], model, d.resolve())


def composed_bytes(codec: Codec) -> bytes:
    """The codec's weights as one safetensors file: for a codec stored in ``parts``, the
    ``model.safetensors`` its sha256 names (safetensors writes a given set of tensors to the same
    bytes, so this reproduces the released file)."""
    return save({k: v.contiguous() for k, v in codec.model.state_dict().items()})


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
    _load_codec.cache_clear()
    return load_codec(str(out_dir))


def _tensor_names(path: Path) -> list[str]:
    """The tensor names a safetensors file holds, read from its header only."""
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


#: Tensor-name prefixes of the entropy networks: a float context (cps-v2/v3) or integer networks (cps-v4/v5).
ENTROPY_PREFIXES = ("context.", "integer.")


def transforms_part(codec: Codec) -> tuple[Path, str]:
    """(file, sha256) of the part of ``codec``'s weights that holds its transforms and no entropy
    networks, which a codec made from it shares (and codecs that share it decode the same latents);
    CodecError where one file holds both."""
    meta = json.loads((codec.path / "codec.json").read_text())
    free = [p for p in meta.get("parts", [{"file": "model.safetensors", "sha256": codec.sha256}])
            if not any(k.startswith(ENTROPY_PREFIXES) for k in _tensor_names(codec.path / p["file"]))]
    if len(free) != 1:
        raise CodecError(f"codec {codec.name} keeps its transforms and its entropy context in one file; a codec "
                         "made from it needs them as separate parts (export_checkpoint writes a train-context run so)")
    return (codec.path / free[0]["file"]).resolve(), free[0]["sha256"]


def save_codec_parts(model: CPSModel, out_dir: Path, name: str, base: Codec, prefix: str, training: dict) -> Codec:
    """Write ``model`` as a codec whose weights are ``base``'s transforms file (shared through
    ``parts``, not copied) plus its own tensors whose names start with ``prefix`` (in
    ``<prefix-without-dot>.safetensors``), and load it back. ``out_dir`` must sit beside ``base``'s
    directory, as the codecs in ``codecs/`` do."""
    shared_file, shared_sha = transforms_part(base)
    out_dir.mkdir(parents=True, exist_ok=True)
    own = out_dir / f"{prefix.rstrip('.')}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k.startswith(prefix)}, str(own))
    own.chmod(0o644)
    sha = hashlib.sha256(composed_bytes(Codec(name, "", model, out_dir))).hexdigest()
    meta = {"name": name, "architecture": architecture(model.config), "config": model.config.to_dict(), "sha256": sha,
            "parts": [{"file": os.path.relpath(shared_file, out_dir.resolve()), "sha256": shared_sha},
                      {"file": own.name, "sha256": sha256_file(own)}],
            "training": training}
    (out_dir / "codec.json").write_text(json.dumps(meta, indent=2) + "\n")
    _load_codec.cache_clear()
    return load_codec(str(out_dir))
