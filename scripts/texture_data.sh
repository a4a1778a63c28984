#!/usr/bin/env bash
# Texture-rich and microscopy-like images that ship inside the scikit-image wheel (PyPI), for
# training and for an evaluation set that training never sees:
#   DEST/train: astronaut, coffee, chelsea, rocket, motorcycle_left (photos), hubble_deep_field
#               (astronomy), retina (fundus photograph)
#   DEST/eval:  ihc (immunohistochemistry micrograph), brick, grass, gravel (greyscale textures)
#   bash scripts/texture_data.sh ~/data/skimage
# Needs pip and the package registry; run it once, before training or benchmarking, never at run time.
set -euo pipefail
dest=${1:?usage: bash scripts/texture_data.sh DEST}
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "scikit-image==0.26.0"
mkdir -p "$dest/train" "$dest/eval"
"$py" - "$tmp"/scikit_image-*.whl "$dest" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
sets = {"train": ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "retina.jpg"],
        "eval": ["ihc.png", "brick.png", "grass.png", "gravel.png"]}
with zipfile.ZipFile(wheel) as z:
    for part, names in sets.items():
        for name in names:
            with open(f"{dest}/{part}/{name}", "wb") as f:
                f.write(z.read(f"skimage/data/{name}"))
print(f"{sum(map(len, sets.values()))} images from {wheel.rsplit('/', 1)[-1]} in {dest}/train and {dest}/eval")
PY
