"""Segmentation data from a Pascal VOC-layout directory: images and class-index label maps.

    JPEGImages/<name>.jpg
    SegmentationClass/<name>.png           palette (or 8-bit) PNGs: class index, 255 ignored
    ImageSets/Segmentation/<split>.txt     one name per line

The built-in synthetic data (tasks/seg/synthetic.py) is written in this layout and read by
the same code as a real VOC directory (`task.options.data_root`). `VocSegmentation` is a torch
`Dataset` that decodes on the fly, resizing images bilinearly and labels by nearest neighbour
to `size`; `load_split` stacks a whole (small) split as tensors. A split in memory takes
3·size²·4 bytes an image: 2.1 GB for VOC's 10,582 training images at 128 px, 33 GB at 512 px,
in every worker process; `task.options.loader: stream` reads them through a DataLoader instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from gp_losses.core.errors import InputError

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def split_names(root: Path, split: str) -> List[str]:
    """The image names a split lists; InputError naming what is missing."""
    path = Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        raise InputError(f"segmentation data: {str(path)!r} not found; task.options.data_root must be a "
                         "Pascal VOC-layout directory with ImageSets/Segmentation/<split>.txt, "
                         "JPEGImages/ and SegmentationClass/")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise InputError(f"segmentation data: {str(path)!r} lists no images")
    return names


def read_pair(root: Path, name: str, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(3, size, size) normalized float32 image and (size, size) int64 labels of one name."""
    image_path = Path(root) / "JPEGImages" / f"{name}.jpg"
    label_path = Path(root) / "SegmentationClass" / f"{name}.png"
    for path in (image_path, label_path):
        if not path.is_file():
            raise InputError(f"segmentation data: {str(path)!r} not found (listed in the split file)")
    image = Image.open(image_path).convert("RGB")
    label = Image.open(label_path)
    if label.mode not in ("P", "L"):
        raise InputError(f"segmentation data: {str(label_path)!r} is a {label.mode} image; a label map "
                         "is a palette or 8-bit PNG of class indices")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
        label = label.resize((size, size), Image.NEAREST)
    pixels = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
    return pixels.transpose(2, 0, 1).copy(), np.asarray(label, dtype=np.int64).copy()


class VocSegmentation(torch.utils.data.Dataset):
    """One split of a VOC-layout directory at `size` x `size` (its first `limit` images)."""

    def __init__(self, root: Path, split: str, size: int, limit: Optional[int] = None) -> None:
        self.root, self.size = Path(root), size
        self.names = split_names(self.root, split)[:limit]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image, label = read_pair(self.root, self.names[index], self.size)
        return torch.from_numpy(image), torch.from_numpy(label)


def load_split(root: Path, split: str, size: int,
               limit: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """A whole split (its first `limit` images) as (N, 3, size, size) images and (N, size,
    size) labels."""
    data = VocSegmentation(root, split, size, limit)
    pairs = [data[i] for i in range(len(data))]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
