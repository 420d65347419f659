"""Synthetic scenes for detection and instance segmentation, generated from a seed and written
as a COCO dataset, read back through the same loader as real COCO data (tasks/det/data.py).

    annotations/instances_{train,val,test}.json     boxes, RLE instance masks, categories
    {train,val,test}/NNNNNN.jpg

The scenes are the segmentation task's (tasks/scenes.py: five shape categories of
varied size, aspect, colour and texture, overlapping one another, on clutter), drawn without
void outlines. An object's instance mask is the part of it left visible by the objects painted
after it, and its box that mask's extent; an object left with fewer than `MIN_AREA` visible
pixels, or a box under 2 px on a side, is not annotated (as COCO leaves out what a person
cannot see).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

from tasks import coco
from tasks.scenes import CLASSES, render_instances

CATEGORIES = [{"id": k, "name": name, "supercategory": "shape"} for k, name in enumerate(CLASSES) if k]
MIN_AREA = 12


def encode_mask(mask: np.ndarray) -> Dict:
    """A binary (H, W) mask as COCO's compressed RLE, JSON-ready (counts as text)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def annotate(instances) -> List[Dict]:
    """COCO annotations (without ids) of one scene's objects (painting order, later ones on top)."""
    anns = []
    covered = np.zeros_like(instances[0][1]) if instances else None
    visible_masks = []
    for kind, mask in reversed(instances):  # from the top: what is still visible of each
        visible_masks.append((kind, mask & ~covered))
        covered = covered | mask
    for kind, visible in reversed(visible_masks):
        area = int(visible.sum())
        if area < MIN_AREA:
            continue
        ys, xs = np.nonzero(visible)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        anns.append({"category_id": int(kind), "bbox": [x0, y0, x1 - x0, y1 - y0], "area": area,
                     "iscrowd": 0, "segmentation": encode_mask(visible)})
    return anns


def write_split(root: Path, split: str, n: int, seed: int, size: int) -> Path:
    """Write `n` images and `annotations/instances_{split}.json` under `root`."""
    def scene(rng: np.random.RandomState):
        image, _, instances = render_instances(rng, size, 0.0)
        return Image.fromarray(image), annotate(instances)

    return coco.write_split(root, split, n, seed, f"instances_{split}.json", CATEGORIES, scene,
                            ".jpg", quality=95)


def ensure_dataset(root: Path, sizes: Dict[str, int], seed: int, size: int) -> Path:
    """Generate each split under `root` unless it is there: split i of ("train", "val",
    "test") draws from seed + i, so resizing one split leaves the others as they were (the
    directory's name carries the sizes)."""
    root = Path(root)
    for position, split in enumerate(("train", "val", "test")):
        if not (root / "annotations" / f"instances_{split}.json").is_file():
            write_split(root, split, sizes[split], seed + position, size)
    return root
