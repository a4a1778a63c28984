"""The committed fixture stores' latents and the golden integer-entropy chunks decode bit for bit
under every CPU kernel set torch can pick here, with 1 and 2 threads and with deterministic
algorithms (and on CUDA where there is a GPU: test_integer.py).

For r6-r8 the entropy parameters come from float64 networks snapped to grids, and this checks
that no kernel choice lands a parameter on the other side of a grid line for these chunks; for r9
and r10 (chunk format 2), r11 (format 3, int8 convolutions) and r12 (format 4, int8 digit products in
every layer; both also under every oneDNN instruction set) they are exact integers by construction, and this checks the construction.
(Pixels may differ by float rounding; not checked here.) Each setting runs in a fresh process, as
``ATEN_CPU_CAPABILITY`` is read at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixture"
STORES = {name: f"{root.name}/{name}.zarr" for root in sorted(FIXTURE.glob("stores*"))
          for name in json.loads((root / "expected.json").read_text())}
#: golden chunk set (directory) -> its manifest, one set per integer-entropy release
GOLDEN = {d.name: json.loads((d / "golden.json").read_text()) for d in sorted(FIXTURE.glob("golden*"))}
CHECK = """
import hashlib, json, sys, numpy as np, torch, zarr
import cps_tiles  # registers the codec
from cps_tiles.coding.bitstream import ChunkCoder
from cps_tiles.transforms.weights import load_codec
threads, deterministic, root = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
torch.set_num_threads(threads)
torch.use_deterministic_algorithms(deterministic)
sha = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
out = {name: sha(zarr.open_group(f"{root}/{path}", mode="r")["latent"][:]) for name, path in json.loads(sys.argv[4]).items()}
for golden, (codec, names) in json.loads(sys.argv[5]).items():
    coder = ChunkCoder(load_codec(codec).model)
    datas = [open(f"{root}/{golden}/{name}", "rb").read() for name in names]
    for name, data, (together, _) in zip(names, datas, coder.decode_many(datas)):  # alone, and batched in lockstep
        out[f"{golden}/{name}"] = sha(coder.decode(data)[0])
        out[f"{golden}/{name} together"] = sha(together)
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "latents": out}))
"""


def _cpu_flags() -> set[str]:
    return set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()


AVX512 = {"avx512f", "avx512bw", "avx512vl"}


def _capabilities() -> list[str]:
    """The ATen CPU capabilities this CPU runs."""
    flags = _cpu_flags()
    return [name for name, want in (("default", set()), ("avx2", {"avx2"}), ("avx512", AVX512)) if want <= flags]


def _decode_fixtures(env: dict, threads: int = 1, deterministic: bool = False) -> dict:
    """Decode every fixture latent and golden chunk in a fresh process under ``env`` -> CHECK's result,
    after asserting that every latent came out as expected."""
    expected = {name: json.loads((FIXTURE / path.split("/")[0] / "expected.json").read_text())[name]["latent_sha256"]
                for name, path in STORES.items()}
    for golden, manifest in GOLDEN.items():
        expected |= {f"{golden}/{name}{how}": want["latent_sha256"] for name, want in manifest["chunks"].items()
                     for how in ("", " together")}
    run = subprocess.run([sys.executable, "-c", CHECK, str(threads), "1" if deterministic else "0", str(FIXTURE),
                          json.dumps(STORES), json.dumps({g: [m["codec"], sorted(m["chunks"])] for g, m in GOLDEN.items()})],
                         env={**os.environ, "CPS_TILES_REUSE": "0", **env}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["latents"] == expected
    return result


@pytest.mark.slow
@pytest.mark.parametrize("capability", _capabilities())
@pytest.mark.parametrize("threads,deterministic", [(1, False), (2, False), (2, True)])
def test_fixture_latents_under_every_kernel_set(capability, threads, deterministic):
    result = _decode_fixtures({"ATEN_CPU_CAPABILITY": capability}, threads, deterministic)
    assert result["capability"].lower() == capability  # torch ran the kernels asked for


def _onednn_isas() -> list[str]:
    """The oneDNN instruction sets this CPU runs, from plain SSE4.1 up to VNNI."""
    need = {"SSE41": {"sse4_1"}, "AVX2": {"avx2"}, "AVX512_CORE": AVX512, "AVX512_CORE_VNNI": AVX512 | {"avx512_vnni"}}
    return [isa for isa, want in need.items() if want <= _cpu_flags()]


@pytest.mark.slow
@pytest.mark.parametrize("isa", _onednn_isas())
def test_int8_products_under_every_onednn_isa(isa):
    """cps-v5's int8 products (oneDNN, through torch._int_mm) are exact with or without VNNI: below
    VNNI, oneDNN adds byte products in pairs with a saturating 16-bit instruction, which 7-bit
    operands keep clear of. ``ONEDNN_MAX_CPU_ISA`` is read at start, so each runs in a fresh process."""
    _decode_fixtures({"ONEDNN_MAX_CPU_ISA": isa})
