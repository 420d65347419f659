"""COCO AP of detections (iouType "bbox") and instance masks ("segm") by pycocotools'
COCOeval, from what torchvision's detection models return."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch

from tasks.coco import coco_stats
from tasks.det.synthetic import encode_mask


def coco_results(image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                 category_ids: Sequence[int], masks: Optional[torch.Tensor] = None) -> List[Dict]:
    """COCO result entries of one image: boxes (K, 4) x1 y1 x2 y2 become [x, y, w, h]; label k
    (1-based, 0 is background) becomes category_ids[k - 1]; masks (K, 1, H, W) probabilities,
    as Mask R-CNN pastes them, are cut at 0.5 and run-length encoded."""
    out = []
    for k in range(len(boxes)):
        x0, y0, x1, y1 = (float(v) for v in boxes[k])
        entry = {"image_id": int(image_id), "category_id": int(category_ids[int(labels[k]) - 1]),
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(scores[k])}
        if masks is not None:
            entry["segmentation"] = encode_mask(masks[k].reshape(masks.shape[-2:]).cpu().numpy() >= 0.5)
        out.append(entry)
    return out


def coco_ap(ground_truth: Dict, results: List[Dict], iou_type: str = "bbox") -> Dict[str, float]:
    """{"ap", "ap50", "ap75"}; no detections at all score 0; a split without ground truth in
    range gives NaN (COCOeval's -1), which the engine records as an error, not a score."""
    if not results:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    stats = coco_stats(ground_truth, results, iou_type)
    return {key: (math.nan if stats[k] < 0 else stats[k]) for k, key in enumerate(("ap", "ap50", "ap75"))}


__all__ = ["coco_results", "coco_ap"]
