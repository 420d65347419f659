"""The six segmentation metrics of the paper's Table 2, accumulated over a dataset.

    miou   mean over classes of TP / (TP + FP + FN); a class absent from both the prediction
           and the ground truth (union 0) is left out of the mean
    fwiou  IoU weighted by each class's share of the ground-truth pixels
    gacc   global pixel accuracy: TP summed over classes / labelled pixels
    macc   mean over the classes present in the ground truth of TP / ground-truth pixels
    biou   boundary IoU: mIoU counted only on the pixels near a ground-truth class boundary
    bf1    boundary F1: the share of predicted boundary pixels near a ground-truth boundary
           (precision) and the reverse (recall), their F1

The first four come from one confusion matrix summed over all images (as mmsegmentation
computes them), not from per-image means. Auto Seg-Loss's evaluation (`metrics_fast`, the one
the paper's Table 2 used) computes FWIoU as nanmean(freq * IoU) * C instead, which is not a
weighted mean once a class is absent (1.5 for identical maps with one of three classes in
neither): ours is the weighted sum, sum(freq * IoU). Pixels labelled `ignore` (255) take part
in none of the region metrics.

The two boundary metrics come in two forms, each reported under its own key (`biou_csurka`,
`bf1_csurka`, `biou_asl`, `bf1_asl`); `biou` and `bf1` are the form the task's `boundary`
option names (the one a search targets):

    csurka  a careful reading of Csurka et al. (BF1, the paper's [11]) and Kohli et al. (the
            trimap BIoU, [24]): Euclidean distances (scipy.ndimage.distance_transform_edt);
            BIoU's band on both sides of every ground-truth edge, ignored regions an edge of
            their own; BF1 per image and class, over the labelled pixels only, averaged over
            the classes in the image's ground truth or prediction (a class in only one of the
            two scores 0), then over images
    asl     exactly as Auto Seg-Loss's evaluation computes them for VOC (its
            mmseg/core/evaluation/utils.py and metrics_fast.py, drop_bg on): square
            (Chebyshev) windows of half-width `width`; the BIoU band from the ground-truth
            edges of the classes >= 1; BF1 from edge counts pooled per class over the split
            (predicted edges on ignored pixels count), then F1 per class, background left
            out and so is a class with no ground-truth edge in the split, even if predicted

A pixel of class c is on c's edge (both forms) when one of its 8 neighbours inside the image
is not c (an ignored pixel is not c); the image border is no edge.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from scipy import ndimage

IGNORE = 255
FORMS = ("csurka", "asl")
"""The boundary metrics' forms: `biou` and `bf1` are one of them, `biou_<form>` each."""
METRICS = ("miou", "fwiou", "gacc", "macc", "biou", "bf1") + tuple(
    f"{metric}_{form}" for form in FORMS for metric in ("biou", "bf1"))


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


# --- the asl form: Auto Seg-Loss's evaluation -------------------------------------------------
def within_square(points: np.ndarray, width: int) -> np.ndarray:
    """Pixels whose (2 width + 1)-square window holds a True pixel of `points` (a max-pool of
    that size, stride 1, the image border padded as nothing)."""
    if width <= 0:
        return points.copy()
    return ndimage.maximum_filter(points.astype(np.uint8), size=2 * width + 1, mode="constant", cval=0) > 0


def class_edges(labels: np.ndarray, classes: int) -> np.ndarray:
    """(classes, H, W): the edge of each class c, its pixels with an 8-neighbour that is not c."""
    out = np.zeros((classes,) + labels.shape, dtype=bool)
    for c in range(classes):
        mask = labels == c
        if mask.any():
            out[c] = boundary(mask) & mask
    return out


def asl_band(label: np.ndarray, classes: int, width: int, gt_edges: Optional[np.ndarray] = None) -> np.ndarray:
    """Auto Seg-Loss's BIoU band: within the square window of the edges of the ground truth's
    classes >= 1 (the background's own edges dropped). `gt_edges`: class_edges(label), if made."""
    gt_edges = class_edges(label, classes) if gt_edges is None else gt_edges
    return within_square(gt_edges[1:].any(axis=0), width)


def asl_edge_counts(pred: np.ndarray, label: np.ndarray, classes: int, width: int,
                    gt_edges: Optional[np.ndarray] = None) -> np.ndarray:
    """(4, classes): per class, the predicted edge pixels, the ground-truth edge pixels, the
    predicted ones within `width` of a ground-truth one and the reverse (Auto Seg-Loss's n_fg,
    n_gt, match_fg, match_gt); the prediction's edges everywhere, ignored pixels included."""
    pred_edges = class_edges(pred, classes)
    gt_edges = class_edges(label, classes) if gt_edges is None else gt_edges
    counts = np.zeros((4, classes), dtype=np.int64)
    for c in range(classes):
        p, g = pred_edges[c], gt_edges[c]
        counts[:, c] = (p.sum(), g.sum(), (p & within_square(g, width)).sum(), (g & within_square(p, width)).sum())
    return counts


def asl_bf1(counts: np.ndarray) -> float:
    """BF1 of pooled edge counts as Auto Seg-Loss computes it: per class p = match_fg /
    (n_fg + 1e-8), r = match_gt / n_gt, F1 = 2pr / (p + r + 1e-8); the mean over the classes
    >= 1 that have a ground-truth edge (NaN when none has)."""
    n_fg, n_gt, match_fg, match_gt = counts.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = match_fg / (n_fg + 1e-8)
        r = match_gt / n_gt
        f1 = 2 * p * r / (p + r + 1e-8)
    f1 = f1[1:]
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")


class SegScores:
    """Accumulates the metrics over images: `add(pred, label)` per image (H, W integer maps),
    then `result()`. `band` and `tolerance` (the csurka form's) are in pixels of the maps
    given, and so is `width`, the asl form's window half-width (whole pixels); `boundary`
    names the form that `biou` and `bf1` are."""

    def __init__(self, classes: int, band: float, tolerance: float, width: int = 1,
                 boundary: str = "csurka") -> None:
        if boundary not in FORMS:
            raise ValueError(f"boundary {boundary!r}: expected one of {', '.join(FORMS)}")
        self.classes, self.band, self.tolerance, self.width, self.form = classes, band, tolerance, width, boundary
        self.matrix = np.zeros((classes, classes), dtype=np.int64)
        self.band_matrix = np.zeros((classes, classes), dtype=np.int64)
        self.asl_band_matrix = np.zeros((classes, classes), dtype=np.int64)
        self.asl_counts = np.zeros((4, classes), dtype=np.int64)
        self.bf1: list = []

    def add(self, pred: np.ndarray, label: np.ndarray) -> None:
        pred, label = np.asarray(pred), np.asarray(label)
        if pred.shape != label.shape:
            raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
        self.matrix += confusion(pred, label, self.classes)
        self.band_matrix += confusion(pred, label, self.classes, trimap(label, self.band))
        gt_edges = class_edges(label, self.classes)
        self.asl_band_matrix += confusion(pred, label, self.classes,
                                          asl_band(label, self.classes, self.width, gt_edges))
        self.asl_counts += asl_edge_counts(pred, label, self.classes, self.width, gt_edges)
        score = image_bf1(pred, label, self.classes, self.tolerance)
        if score is not None:
            self.bf1.append(score)

    def result(self) -> Dict[str, float]:
        out = region_scores(self.matrix)
        out["biou_csurka"] = region_scores(self.band_matrix)["miou"]
        out["bf1_csurka"] = float(np.mean(self.bf1)) if self.bf1 else float("nan")
        out["biou_asl"] = region_scores(self.asl_band_matrix)["miou"]
        out["bf1_asl"] = asl_bf1(self.asl_counts)
        out["biou"], out["bf1"] = out[f"biou_{self.form}"], out[f"bf1_{self.form}"]
        return {m: out[m] for m in METRICS}


def scores(preds, labels, classes: int, band: float, tolerance: float, width: int = 1,
           boundary: str = "csurka") -> Dict[str, float]:
    """The metrics of paired prediction and label maps."""
    acc = SegScores(classes, band, tolerance, width, boundary)
    for pred, label in zip(preds, labels):
        acc.add(pred, label)
    return acc.result()


def per_image(pred: np.ndarray, label: np.ndarray, metric: str, classes: int, band: float,
              tolerance: float, width: int = 1, boundary: str = "csurka") -> float:
    """The target metric of one image alone (the rejection protocol's per-sample score, so
    only that metric is computed; the asl form's pooled counts are the image's own); 0.0
    where it is undefined (no labelled pixel, no boundary)."""
    if metric in ("biou", "bf1"):
        metric = f"{metric}_{boundary}"
    if metric == "bf1_csurka":
        value = image_bf1(pred, label, classes, tolerance)
        value = float("nan") if value is None else value
    elif metric == "biou_csurka":
        value = region_scores(confusion(pred, label, classes, trimap(label, band)))["miou"]
    elif metric == "bf1_asl":
        value = asl_bf1(asl_edge_counts(pred, label, classes, width))
    elif metric == "biou_asl":
        value = region_scores(confusion(pred, label, classes, asl_band(label, classes, width)))["miou"]
    else:
        value = region_scores(confusion(pred, label, classes))[metric]
    return 0.0 if np.isnan(value) else value
