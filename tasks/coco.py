"""What the COCO-format tasks share: pycocotools' COCOeval on in-memory ground truth and
results, quietly (pycocotools prints; stdout is for JSON), and writing an annotation file.
Pose keypoint AP and detection / instance-segmentation AP both use them."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Dict, List


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
