"""What the COCO-format tasks share: pycocotools' COCOeval on in-memory ground truth and
results, quietly (pycocotools prints; stdout is for JSON), and writing a generated split.
Pose keypoint AP and detection / instance-segmentation AP both use them."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np


def coco_stats(ground_truth: Dict, results: List[Dict], iou_type: str) -> List[float]:
    """COCOeval's summary `stats` for `iou_type` ("bbox", "segm" or "keypoints"): AP at
    IoU .50:.95, AP50, AP75, then the rest of its summary. -1 where COCOeval has no ground
    truth in range. `results` must be non-empty (loadRes refuses an empty list)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


def write_annotations(path: Path, images: List[Dict], annotations: List[Dict], categories: List[Dict]) -> Path:
    """A COCO annotation file, written beside and renamed into place: it appears last, so a
    generated split is complete once its file exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    tmp.replace(path)
    return path


def write_split(root: Path, split: str, n: int, seed: int, annotations_file: str, categories: List[Dict],
                render: Callable[[np.random.RandomState], Tuple[Any, List[Dict]]], suffix: str = ".png",
                **save: Any) -> Path:
    """Write `n` generated images of `split` under root/split and their COCO file root/
    annotations/`annotations_file`: `render(rng)` makes one image (PIL) and its annotations
    (without ids), all drawn from one RandomState(seed); images and annotations are numbered
    from 1 in order. `save`: PIL's options for the image files."""
    rng = np.random.RandomState(seed)
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images: List[Dict] = []
    annotations: List[Dict] = []
    for k in range(n):
        image, anns = render(rng)
        name = f"{k:06d}{suffix}"
        image.save(image_dir / name, **save)
        images.append({"id": k + 1, "file_name": name, "width": image.width, "height": image.height})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, **ann})
    return write_annotations(root / "annotations" / annotations_file, images, annotations, categories)
