"""COCO person keypoints: names, OKS sigmas, skeleton."""

from __future__ import annotations

import numpy as np

NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
         "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
         "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
K = len(NAMES)

FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
"""Left/right keypoint pairs, swapped when an image is mirrored."""

SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                   .89, .89]) / 10.0
"""The 17 standard COCO OKS sigmas (as in pycocotools' COCOeval)."""

SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
            [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
"""COCO's skeleton, 1-based keypoint indices."""

CATEGORY = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(NAMES),
            "skeleton": SKELETON}


def oks(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, area: float) -> float:
    """Object keypoint similarity of one prediction (K, 2) with one ground truth (K, 2):
    mean over labelled joints of exp(-d^2 / (2 s^2 k^2)), s^2 = area, k = 2 sigma (COCO)."""
    labelled = visible > 0
    if not labelled.any():
        return 0.0
    d2 = ((pred - gt) ** 2).sum(axis=1)
    var = (2 * SIGMAS) ** 2
    e = d2 / var / (area + np.spacing(1)) / 2
    return float(np.exp(-e[labelled]).mean())
