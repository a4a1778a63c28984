"""Training data: lossless photos (and 2x-downsampled JPEGs) as uint8 arrays, random crops, and a
model's latents of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..transforms.geometry import Geometry
from ..transforms.model import CPSModel

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}
JPEG_SUFFIXES = {".jpg", ".jpeg"}


def load_training_images(dirs: list[Path], min_side: int) -> list[np.ndarray]:
    """All RGB images under ``dirs`` as uint8 ``[h, w, 3]``; JPEGs downsampled 2x (area)."""
    import pyvips

    images = []
    for d in dirs:
        if not Path(d).is_dir():
            raise ValueError(f"training data directory {d} does not exist")
        for path in sorted(p for p in Path(d).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            im = pyvips.Image.new_from_file(str(path), access="sequential")
            shrink = 2 if path.suffix.lower() in JPEG_SUFFIXES else 1
            if min(im.width, im.height) // shrink < min_side:
                continue  # decided from the header: a too-small image is never decoded
            if im.hasalpha():
                im = im.flatten()
            im = im.colourspace("srgb") if im.bands < 3 else im
            im = im.cast("uchar")[0:3] if im.bands > 3 else im.cast("uchar")
            if shrink > 1:
                im = im.shrink(shrink, shrink)
            images.append(np.ascontiguousarray(im.numpy()))
    if not images:
        where = ", ".join(map(str, dirs))
        raise ValueError(f"no training images of at least {min_side} px found under {where}")
    return images


class CropSampler:
    """Random ``crop x crop`` patches with flips, images picked in proportion to their area."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int) -> None:
        self.images, self.crop = images, crop
        areas = np.array([a.shape[0] * a.shape[1] for a in images], dtype=np.float64)
        self.p = areas / areas.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        out = np.empty((n, self.crop, self.crop, 3), dtype=np.uint8)
        for i, k in enumerate(self.rng.choice(len(self.images), size=n, p=self.p)):
            a = self.images[k]
            y = self.rng.integers(0, a.shape[0] - self.crop + 1)
            x = self.rng.integers(0, a.shape[1] - self.crop + 1)
            patch = a[y : y + self.crop, x : x + self.crop]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            if self.rng.random() < 0.5:
                patch = patch[::-1]
            out[i] = patch
        x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)
        return x.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def image_latents(model: CPSModel, images: list[np.ndarray]) -> list[torch.Tensor]:
    """uint8 images ``[h, w, 3]`` -> unit-gain latents ``float32 [M, h/rho, w/rho]`` (cropped to whole cells)."""
    rho = Geometry.of(model).rho
    out = []
    for a in images:
        h, w = a.shape[0] // rho * rho, a.shape[1] // rho * rho
        x = torch.from_numpy(np.ascontiguousarray(a[:h, :w].transpose(2, 0, 1))).float().div_(255)[None]
        out.append(model.analysis(x.contiguous(memory_format=torch.channels_last))[0].float().contiguous())
    return out
