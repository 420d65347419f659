"""The six segmentation metrics of the paper's Table 2, accumulated over a dataset.

    miou   mean over classes of TP / (TP + FP + FN); a class absent from both the prediction
           and the ground truth (union 0) is left out of the mean
    fwiou  IoU weighted by each class's share of the ground-truth pixels
    gacc   global pixel accuracy: TP summed over classes / labelled pixels
    macc   mean over the classes present in the ground truth of TP / ground-truth pixels
    biou   the trimap boundary IoU of Kohli et al. (the paper's [24]): mIoU counted only on the
           pixels within `band` pixels of a ground-truth class boundary
    bf1    the boundary F1 of Csurka et al. (the paper's [11]): per image and class, the share
           of the predicted mask's boundary pixels (those with an 8-neighbour outside it)
           within `tolerance` pixels of the ground-truth mask's boundary (precision) and the
           reverse (recall), their F1; averaged over the classes in the image's ground truth
           or prediction, then over images. A class in only one of the two maps scores 0

The first four come from one confusion matrix summed over all images (as mmsegmentation and
Auto Seg-Loss compute them), not from per-image means. Pixels labelled `ignore` (255) take
part in none of them. Distances are Euclidean (scipy.ndimage.distance_transform_edt).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from scipy import ndimage

IGNORE = 255
METRICS = ("miou", "fwiou", "gacc", "macc", "biou", "bf1")


def confusion(pred: np.ndarray, label: np.ndarray, classes: int,
              where: Optional[np.ndarray] = None) -> np.ndarray:
    """(classes, classes) counts, rows ground truth, columns prediction, over the labelled
    pixels (and those of `where`, when given)."""
    keep = label != IGNORE
    if where is not None:
        keep &= where
    index = label[keep].astype(np.int64) * classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def region_scores(matrix: np.ndarray) -> Dict[str, float]:
    """mIoU, FWIoU, gAcc and mAcc of a confusion matrix (rows ground truth)."""
    matrix = matrix.astype(np.float64)
    tp = np.diag(matrix)
    gt, predicted = matrix.sum(1), matrix.sum(0)
    union = gt + predicted - tp
    total = gt.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
        acc = tp / gt
    present = union > 0
    labelled = gt > 0
    return {
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "fwiou": float((gt[labelled] / total * iou[labelled]).sum()) if total else float("nan"),
        "gacc": float(tp.sum() / total) if total else float("nan"),
        "macc": float(acc[labelled].mean()) if labelled.any() else float("nan"),
    }


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of a label map (or a boolean mask) with an 8-neighbour of another value, on both
    sides of each edge; the image border is not a boundary. A mask's own boundary (as BF1
    takes it) is `boundary(mask) & mask`."""
    padded = np.pad(mask, 1, mode="edge")
    h, w = mask.shape
    edge = np.zeros(mask.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                edge |= padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] != mask
    return edge


def near(points: np.ndarray, distance: float) -> np.ndarray:
    """Pixels within `distance` (Euclidean) of any True pixel of `points`."""
    if not points.any():
        return np.zeros(points.shape, dtype=bool)
    return ndimage.distance_transform_edt(~points) <= distance


def trimap(label: np.ndarray, band: float) -> np.ndarray:
    """The band of pixels within `band` pixels of a ground-truth class boundary (the edges of
    ignored regions included, as a class of their own)."""
    return near(boundary(label), band)


def boundary_targets(label: np.ndarray, band: float) -> np.ndarray:
    """The paper's targets for the boundary metrics (Appendix A.1): a label map whose pixels
    within `band` pixels of a class boundary (`trimap`) keep their class and whose other
    labelled pixels become background (0); pixels labelled 255 stay 255."""
    return np.where(trimap(label, band) | (label == IGNORE), label, 0)


def image_bf1(pred: np.ndarray, label: np.ndarray, classes: int, tolerance: float) -> Optional[float]:
    """BF1 of one image: mean over the classes in its ground truth or prediction of the
    boundary F1 (None when the image has no labelled pixel)."""
    valid = label != IGNORE
    if not valid.any():
        return None
    scores = []
    for c in range(classes):
        gt_mask, pred_mask = (label == c) & valid, (pred == c) & valid
        if not gt_mask.any() and not pred_mask.any():
            continue
        if not gt_mask.any() or not pred_mask.any():
            scores.append(0.0)
            continue
        gt_edge, pred_edge = boundary(gt_mask) & gt_mask, boundary(pred_mask) & pred_mask
        if not gt_edge.any() and not pred_edge.any():  # both cover all labelled pixels
            scores.append(1.0)
            continue
        if not gt_edge.any() or not pred_edge.any():
            scores.append(0.0)
            continue
        precision = (pred_edge & near(gt_edge, tolerance)).sum() / pred_edge.sum()
        recall = (gt_edge & near(pred_edge, tolerance)).sum() / gt_edge.sum()
        scores.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(scores)) if scores else None


class SegScores:
    """Accumulates the six metrics over images: `add(pred, label)` per image (H, W integer
    maps), then `result()`. `band` and `tolerance` are in pixels of the maps given."""

    def __init__(self, classes: int, band: float, tolerance: float) -> None:
        self.classes, self.band, self.tolerance = classes, band, tolerance
        self.matrix = np.zeros((classes, classes), dtype=np.int64)
        self.band_matrix = np.zeros((classes, classes), dtype=np.int64)
        self.bf1: list = []

    def add(self, pred: np.ndarray, label: np.ndarray) -> None:
        pred, label = np.asarray(pred), np.asarray(label)
        if pred.shape != label.shape:
            raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
        self.matrix += confusion(pred, label, self.classes)
        self.band_matrix += confusion(pred, label, self.classes, trimap(label, self.band))
        score = image_bf1(pred, label, self.classes, self.tolerance)
        if score is not None:
            self.bf1.append(score)

    def result(self) -> Dict[str, float]:
        out = region_scores(self.matrix)
        out["biou"] = region_scores(self.band_matrix)["miou"]
        out["bf1"] = float(np.mean(self.bf1)) if self.bf1 else float("nan")
        return out


def scores(preds, labels, classes: int, band: float, tolerance: float) -> Dict[str, float]:
    """The six metrics of paired prediction and label maps."""
    acc = SegScores(classes, band, tolerance)
    for pred, label in zip(preds, labels):
        acc.add(pred, label)
    return acc.result()


def per_image(pred: np.ndarray, label: np.ndarray, metric: str, classes: int, band: float,
              tolerance: float) -> float:
    """The target metric of one image alone (the rejection protocol's per-sample score, so
    only that metric is computed); 0.0 where it is undefined (no labelled pixel)."""
    if metric == "bf1":
        value = image_bf1(pred, label, classes, tolerance)
        value = float("nan") if value is None else value
    elif metric == "biou":
        value = region_scores(confusion(pred, label, classes, trimap(label, band)))["miou"]
    else:
        value = region_scores(confusion(pred, label, classes))[metric]
    return 0.0 if np.isnan(value) else value
