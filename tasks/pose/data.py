"""Top-down pose data from a COCO-layout directory: person crops, heatmap targets.

A directory holds `annotations/person_keypoints_{split}.json` and the images under
`{split}/` (synthetic data) or `{split}2017/` (COCO). Each person with at least one labelled
keypoint becomes a crop of its ground-truth box, enlarged by 25% and padded to the input's
aspect ratio, resized to the network input. Targets are Gaussian heatmaps (sigma 2 at the
heatmap resolution) with a weight per joint: 1 for labelled joints, 0 otherwise (Simple
Baselines, Xiao et al.).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from gp_losses.errors import InputError
from tasks.pose.keypoints import K

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass
class PoseSet:
    """Crops of one split as tensors, with what is needed to map predictions back."""

    images: torch.Tensor          # (N, 3, H, W) normalized crops
    heatmaps: torch.Tensor        # (N, K, h, w) Gaussian targets
    weights: torch.Tensor         # (N, K) 1 for labelled joints
    joints: torch.Tensor          # (N, K, 2) keypoints in crop (input) pixels
    centers: np.ndarray           # (N, 2) crop centre in image coordinates
    scales: np.ndarray            # (N, 2) crop size (w, h) in image pixels
    areas: np.ndarray             # (N,) COCO area of each person (the OKS scale s^2)
    image_ids: List[int]
    coco: Dict                    # the annotation file's content (ground truth for COCOeval)


def annotation_file(root: Path, split: str) -> Path:
    path = Path(root) / "annotations" / f"person_keypoints_{split}.json"
    if not path.is_file():
        raise InputError(f"pose data: {str(path)!r} not found; task.options.data_root must be a COCO-layout "
                         "directory with annotations/person_keypoints_<split>.json")
    return path


def image_dir(root: Path, split: str) -> Path:
    for name in (split, f"{split}2017", "images"):
        if (Path(root) / name).is_dir():
            return Path(root) / name
    raise InputError(f"pose data: no image directory {split}/ or {split}2017/ under {str(root)!r}")


def box_to_crop(box: List[float], aspect: float, enlarge: float = 1.25) -> Tuple[np.ndarray, np.ndarray]:
    """Centre and (w, h) of the crop for a COCO box [x, y, w, h] at aspect w/h = `aspect`."""
    x, y, w, h = box
    center = np.array([x + w / 2, y + h / 2], dtype=np.float32)
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h], dtype=np.float32) * enlarge


# Coordinates: keypoints are pixel indices (pixel k has its centre at k, as in COCO); a crop
# maps the continuous region [centre - size/2, centre + size/2) onto the output pixels.
def image_to_crop(points: np.ndarray, center: np.ndarray, size: np.ndarray, out_hw) -> np.ndarray:
    scale = np.array([out_hw[1], out_hw[0]], dtype=np.float32) / size
    return (points + 0.5 - (center - size / 2)) * scale - 0.5


def crop_to_image(points: np.ndarray, center: np.ndarray, size: np.ndarray, out_hw) -> np.ndarray:
    scale = size / np.array([out_hw[1], out_hw[0]], dtype=np.float32)
    return (points + 0.5) * scale + (center - size / 2) - 0.5


def crop(image: Image.Image, center: np.ndarray, size: np.ndarray, out_hw: Tuple[int, int]) -> np.ndarray:
    """The region `size` around `center`, resized to out_hw (bilinear), as float RGB in [0, 1]."""
    out_h, out_w = out_hw
    x0, y0 = center - size / 2
    # PIL samples output pixel (u, v) at continuous input (a (u + 1/2) + c, e (v + 1/2) + f)
    a, e = size[0] / out_w, size[1] / out_h
    data = (a, 0, x0, 0, e, y0)
    warped = image.transform((out_w, out_h), Image.AFFINE, data, resample=Image.BILINEAR)
    return np.asarray(warped, dtype=np.float32) / 255.0


def gaussian_heatmaps(joints: np.ndarray, weights: np.ndarray, hw: Tuple[int, int], stride: float,
                      sigma: float = 2.0) -> np.ndarray:
    """(K, h, w) Gaussians at the joints (input pixels) in heatmap pixels; all-zero maps for
    unlabelled joints."""
    h, w = hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    maps = np.zeros((len(joints), h, w), dtype=np.float32)
    for k, ((x, y), wk) in enumerate(zip((joints + 0.5) / stride - 0.5, weights)):
        if wk > 0:
            maps[k] = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    return maps


def load_split(root: Path, split: str, input_hw: Tuple[int, int], heatmap_hw: Tuple[int, int],
               limit: Optional[int] = None) -> PoseSet:
    """All persons of a split with at least one labelled joint (the first `limit` of them)."""
    coco = json.loads(annotation_file(root, split).read_text())
    folder = image_dir(root, split)
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    anns = [a for a in coco["annotations"] if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0)]
    if limit:
        anns = anns[:limit]
    if not anns:
        raise InputError(f"pose data: no annotated person in {split} under {str(root)!r}")
    stride = input_hw[1] / heatmap_hw[1]
    images, heatmaps, weights, joints, centers, scales, areas, ids = [], [], [], [], [], [], [], []
    cache: Dict[int, Image.Image] = {}
    for ann in anns:
        if ann["image_id"] not in cache:
            cache.clear()
            cache[ann["image_id"]] = Image.open(folder / files[ann["image_id"]]).convert("RGB")
        center, size = box_to_crop(ann["bbox"], input_hw[1] / input_hw[0])
        pixels = crop(cache[ann["image_id"]], center, size, input_hw)
        kp = np.asarray(ann["keypoints"], dtype=np.float32).reshape(K, 3)
        in_crop = image_to_crop(kp[:, :2], center, size, input_hw)
        w = (kp[:, 2] > 0).astype(np.float32)
        images.append(((pixels - MEAN) / STD).transpose(2, 0, 1))
        heatmaps.append(gaussian_heatmaps(in_crop, w, heatmap_hw, stride))
        weights.append(w)
        joints.append(in_crop)
        centers.append(center)
        scales.append(size)
        areas.append(float(ann.get("area", ann["bbox"][2] * ann["bbox"][3])))
        ids.append(ann["image_id"])
    return PoseSet(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(heatmaps)),
                   torch.from_numpy(np.stack(weights)), torch.from_numpy(np.stack(joints)),
                   np.stack(centers), np.stack(scales), np.array(areas), ids, coco)
