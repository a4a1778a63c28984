#!/usr/bin/env bash
# Extra training photographs for `cps-tiles train`: the high-resolution JPEG wallpapers of two Debian
# packages (15 from lomiri-wallpapers-16.04, 12 from mate-backgrounds' nature/ folder; its abstract
# and desktop renderings are left out), copied into DEST. The trainer downsamples JPEGs 2x itself.
#   bash scripts/training_data.sh ~/data/wallpapers
# Needs apt-get and the Debian package registry; run it once, before training, never at run time.
set -euo pipefail
dest=${1:?usage: bash scripts/training_data.sh DEST}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q mate-backgrounds lomiri-wallpapers-16.04)
for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
mkdir -p "$dest"
bg="$tmp/root/usr/share/backgrounds"  # inside the unpacked packages, not this machine's /usr
cp "$bg"/*.jpg "$bg"/mate/nature/*.jpg "$dest"/
echo "$(ls "$dest" | wc -l) photographs in $dest"
