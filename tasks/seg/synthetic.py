"""Synthetic scenes for semantic segmentation, generated from a seed, written in the Pascal VOC
layout and read back through the same loader as a real VOC directory. The scenes are
tasks/scenes.py's.

    JPEGImages/NNNNNN.jpg                  the images (RGB)
    SegmentationClass/NNNNNN.png           palette PNGs: a class index per pixel, 255 ignored
    ImageSets/Segmentation/{train,val,test}.txt
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Tuple

import numpy as np
from PIL import Image

from tasks.scenes import render_instances


def voc_palette() -> List[int]:
    """Pascal VOC's colour map: index i -> the RGB bits of i spread over the three channels."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def render(rng: np.random.RandomState, size: int, void_border: float) -> Tuple[np.ndarray, np.ndarray]:
    """One scene: (H, W, 3) uint8 image, (H, W) uint8 labels."""
    image, labels, _ = render_instances(rng, size, void_border)
    return image, labels


def write_voc(root: Path, splits: Tuple[Tuple[str, int], ...], seed: int, size: int, void_border: float) -> Path:
    """Write the dataset under `root` unless a complete one is there: generated in a temporary
    directory beside it and renamed into place, so that workers starting together neither
    write over one another nor read half a dataset. Each split draws from its own stream
    (seed + its position), so changing one split's size leaves the others as they were."""
    root = Path(root)
    if (root / "ImageSets" / "Segmentation" / f"{splits[-1][0]}.txt").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    try:
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (tmp / sub).mkdir(parents=True)
        palette = voc_palette()
        number = 0
        for position, (split, n) in enumerate(splits):
            rng = np.random.RandomState(seed + position)
            names = []
            for _ in range(n):
                name = f"{number:06d}"
                number += 1
                image, labels = render(rng, size, void_border)
                Image.fromarray(image).save(tmp / "JPEGImages" / f"{name}.jpg", quality=95)
                png = Image.fromarray(labels, mode="P")
                png.putpalette(palette)
                png.save(tmp / "SegmentationClass" / f"{name}.png")
                names.append(name)
            (tmp / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first: keep its copy
            if not (root / "ImageSets" / "Segmentation" / f"{splits[-1][0]}.txt").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
