"""Heatmaps to keypoints, and COCO keypoint AP computed by pycocotools' COCOeval.

Decoding (Simple Baselines): each joint at its heatmap's maximum, shifted a quarter pixel
toward the higher neighbour in x and in y, scaled to the crop, mapped back to the image.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch

from tasks.coco import coco_stats
from tasks.pose.data import crop_to_image
from tasks.pose.keypoints import oks


def decode(heatmaps: torch.Tensor, stride: float) -> tuple:
    """(N, K, h, w) heatmaps -> (N, K, 2) keypoints in input (crop) pixels and (N, K) maxima."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.detach().reshape(n, k, -1)
    maxval, index = flat.max(dim=2)
    x = (index % w).float()
    y = torch.div(index, w, rounding_mode="floor").float()
    hm = heatmaps.detach()
    xi, yi = x.long(), y.long()
    rows = torch.arange(n)[:, None].expand(n, k)
    cols = torch.arange(k)[None, :].expand(n, k)

    def at(yy, xx):
        return hm[rows, cols, yy.clamp(0, h - 1), xx.clamp(0, w - 1)]

    inside_x = (xi > 0) & (xi < w - 1)
    inside_y = (yi > 0) & (yi < h - 1)
    dx = torch.sign(at(yi, xi + 1) - at(yi, xi - 1)) * inside_x
    dy = torch.sign(at(yi + 1, xi) - at(yi - 1, xi)) * inside_y
    coords = (torch.stack([x + 0.25 * dx, y + 0.25 * dy], dim=2) + 0.5) * stride - 0.5
    return coords, maxval


def to_image(coords: np.ndarray, centers: np.ndarray, sizes: np.ndarray, input_hw) -> np.ndarray:
    """Crop pixels -> image pixels, for (N, K, 2) coords and per-crop centre and (w, h)."""
    return crop_to_image(coords, centers[:, None, :], sizes[:, None, :], input_hw)


def coco_results(image_ids: Sequence[int], keypoints: np.ndarray, maxvals: np.ndarray) -> List[Dict]:
    """COCO-format keypoint detections, one per crop; score = mean heatmap maximum."""
    out = []
    for image_id, kp, mv in zip(image_ids, keypoints, maxvals):
        triples = np.concatenate([kp, np.asarray(mv, dtype=np.float64)[:, None]], axis=1)
        out.append({"image_id": int(image_id), "category_id": 1,
                    "keypoints": [float(v) for v in triples.reshape(-1)],
                    "score": float(np.clip(np.mean(mv), 1e-6, None))})
    return out


def coco_keypoint_ap(ground_truth: Dict, results: List[Dict]) -> Dict[str, float]:
    """AP, AP50, AP75 and AR by pycocotools' COCOeval (iouType "keypoints", 17 sigmas)."""
    if not results:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, "ar": 0.0}
    stats = [max(0.0, s) for s in coco_stats(ground_truth, results, "keypoints")]  # -1: no ground truth in range
    return {"ap": stats[0], "ap50": stats[1], "ap75": stats[2], "ar": stats[5]}


def oks_per_sample(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """OKS of each prediction (N, K, 2) with its own ground truth; used by the probe metric."""
    return np.array([oks(p, g, v, a) for p, g, v, a in zip(pred, gt, visible, areas)])


__all__ = ["decode", "to_image", "coco_results", "coco_keypoint_ap", "oks_per_sample"]
