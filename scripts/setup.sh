#!/usr/bin/env bash
# Set up a virtual environment in .venv with cps-tiles (editable) and its test tools.
#
# torch: if pip can find a CPU torch wheel without any index (a machine that keeps one in its
# pip find-links, as our build machines do), that wheel is installed first, so the `torch>=2.2`
# requirement is already met and pip never downloads a multi-GB CUDA build. Anywhere else pip
# resolves torch as usual (or keeps the torch you installed yourself: set CPS_VENV to an existing
# environment).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CPS_VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip -q --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  tmp=$(mktemp -d)
  if "${PIP[@]}" download --no-index --no-deps -d "$tmp" torch >/dev/null 2>&1; then
    "${PIP[@]}" install "$tmp"/torch-*.whl
  fi
  rm -rf "$tmp"
fi
"${PIP[@]}" install -e ".[dev]"
"$VENV/bin/python" -c "import cps_tiles, torch; print('cps-tiles', cps_tiles.__version__, 'torch', torch.__version__)"
# Compile the entropy decoder's kernels now (numba caches them beside the package), so that no first
# command waits for it: code and decode two small blocks with the default codec, alone and together.
CPS_TILES_REUSE=0 "$VENV/bin/python" - <<'EOF'
import numpy as np
from cps_tiles.coding.bitstream import ChunkCoder
from cps_tiles.transforms.weights import DEFAULT_CODEC, load_codec

coder = ChunkCoder(load_codec(DEFAULT_CODEC).model)
blocks = [np.random.default_rng(i).integers(-3, 4, (coder.M, 16, 16)).astype(np.int16) for i in range(2)]
datas = [coder.encode(b, 5.0) for b in blocks]
assert all(np.array_equal(coder.decode(d)[0], b) for d, b in zip(datas, blocks))
assert all(np.array_equal(y, b) for (y, _), b in zip(coder.decode_many(datas), blocks))
EOF
