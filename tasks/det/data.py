"""Detection data in the COCO layout, for torchvision's detection models.

    annotations/instances_<split>.json     COCO instances: boxes [x, y, w, h], RLE or polygon masks
    <split>/<file_name>                    the images

The built-in synthetic data (tasks/det/synthetic.py) is written in this layout and read by the
same code as a real COCO directory (`task.options.data_root`, with `train_split` such as
`train2017`). `CocoDetection` decodes on the fly; its items are what torchvision's
`FasterRCNN` and `MaskRCNN` take: a (3, H, W) float image in [0, 1] (the model normalizes and
resizes) and a target {"boxes": (K, 4) x1 y1 x2 y2, "labels": (K,), "image_id", and with
`masks=True` "masks": (K, H, W) uint8}. Crowd regions are left out of the targets (COCOeval
ignores matches to them), and so are boxes under 1 px on a side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from gp_losses.core.errors import InputError


def read_annotations(root: Path, split: str) -> Dict:
    """The split's COCO annotation file, read; InputError naming what is missing."""
    path = Path(root) / "annotations" / f"instances_{split}.json"
    if not path.is_file():
        raise InputError(f"detection data: {str(path)!r} not found; task.options.data_root must be a COCO-layout "
                         "directory with annotations/instances_<split>.json and the images under <split>/")
    try:
        coco = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"detection data: {str(path)!r} is not valid JSON: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise InputError(f"detection data: {str(path)!r} has no {key!r} list (not a COCO instances file)")
    return coco


def decode_mask(segmentation, height: int, width: int) -> np.ndarray:
    """An annotation's mask (compressed or plain RLE, or polygons) as an (H, W) uint8 array."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects(segmentation, height, width)
        return mask_utils.decode(mask_utils.merge(rles))
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        segmentation = mask_utils.frPyObjects(segmentation, height, width)
    return mask_utils.decode(segmentation)


class CocoDetection(torch.utils.data.Dataset):
    """One split of a COCO-layout directory (its first `limit` images)."""

    def __init__(self, root: Path, split: str, masks: bool = False, limit: Optional[int] = None) -> None:
        self.root, self.split, self.masks = Path(root), split, masks
        self.coco = read_annotations(self.root, split)
        self.images = self.coco["images"][:limit]
        self.category_ids = sorted(c["id"] for c in self.coco["categories"])
        self.label_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}  # 0 is background
        by_image: Dict[int, List[Dict]] = {}
        for ann in self.coco["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        self.anns = by_image

    @property
    def classes(self) -> int:
        """Categories plus background: torchvision's `num_classes`."""
        return len(self.category_ids) + 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        info = self.images[index]
        path = self.root / self.split / info["file_name"]
        if not path.is_file():
            raise InputError(f"detection data: {str(path)!r} not found (listed in instances_{self.split}.json)")
        image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        h, w = image.shape[:2]
        boxes, labels, masks = [], [], []
        for ann in self.anns.get(info["id"], []):
            x, y, bw, bh = ann["bbox"]
            if ann.get("iscrowd", 0) or bw < 1 or bh < 1:
                continue
            boxes.append([x, y, x + bw, y + bh])
            labels.append(self.label_of[ann["category_id"]])
            if self.masks:
                masks.append(decode_mask(ann["segmentation"], h, w))
        target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.tensor(labels, dtype=torch.int64),
                  "image_id": torch.tensor(info["id"])}
        if self.masks:
            target["masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), target


def collate(batch):
    """Lists of images and targets, as torchvision's detection models take them."""
    return [item[0] for item in batch], [item[1] for item in batch]
