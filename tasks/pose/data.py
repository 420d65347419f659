"""Top-down pose data from a COCO-layout directory: person crops, heatmap targets.

A directory holds `annotations/person_keypoints_{split}.json` and the images under
`{split}/` (synthetic data) or `{split}2017/` (COCO). Each person with at least one labelled
keypoint becomes a crop of its ground-truth box, enlarged by 25% and padded to the input's
aspect ratio, resized to the network input. Targets are Gaussian heatmaps (sigma 2 at the
heatmap resolution) with a weight per joint: 1 for labelled joints, 0 otherwise (Simple
Baselines, Xiao et al.).

Two ways to read a split: `load_split` makes every crop once and keeps them as tensors (the
small built-in proxy sets: fastest, measured in docs/performance.md); `PoseCrops` is a torch
`Dataset` that decodes, crops and draws targets on the fly, optionally with Simple Baselines'
augmentation, for sets that do not fit in memory (COCO: about 90 GB of crops at 256 x 192).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from gp_losses.core.errors import InputError
from tasks.pose.keypoints import FLIP_PAIRS, K

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


@dataclass
class PoseIndex:
    """The persons of one split without pixels: where each is, its crop and annotation."""

    files: List[Path]             # the image of each person
    keypoints: np.ndarray         # (N, K, 3) COCO keypoints (x, y, visibility), image pixels
    centers: np.ndarray           # (N, 2) crop centre in image coordinates
    scales: np.ndarray            # (N, 2) crop size (w, h) in image pixels
    areas: np.ndarray             # (N,) COCO area of each person (the OKS scale s^2)
    image_ids: List[int]
    coco: Dict


def read_index(root: Path, split: str, aspect: float, limit: Optional[int] = None) -> PoseIndex:
    """All persons of a split with at least one labelled joint (the first `limit` of them)."""
    coco = json.loads(annotation_file(root, split).read_text())
    folder = image_dir(root, split)
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    anns = [a for a in coco["annotations"] if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0)]
    if limit:
        anns = anns[:limit]
    if not anns:
        raise InputError(f"pose data: no annotated person in {split} under {str(root)!r}")
    crops = [box_to_crop(ann["bbox"], aspect) for ann in anns]
    return PoseIndex([folder / files[a["image_id"]] for a in anns],
                     np.stack([np.asarray(a["keypoints"], dtype=np.float32).reshape(K, 3) for a in anns]),
                     np.stack([c for c, _ in crops]), np.stack([s for _, s in crops]),
                     np.array([float(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in anns]),
                     [a["image_id"] for a in anns], coco)


@dataclass(frozen=True)
class Augment:
    """Simple Baselines' training augmentation: the crop scaled by a factor in
    [1 - scale, 1 + scale] (normal, sigma `scale`, clipped), rotated by an angle in
    [-rotation, rotation] degrees (normal, sigma `rotation`, clipped) with probability
    `rotate_p`, and mirrored with probability 1/2 (left and right joints swapped). Joints
    that land outside the crop get weight 0."""

    scale: float = 0.3
    rotation: float = 40.0
    rotate_p: float = 0.6
    flip: bool = True


def affine(center: np.ndarray, size: np.ndarray, out_hw: Tuple[int, int], angle: float = 0.0,
           mirror: bool = False) -> np.ndarray:
    """The 2 x 3 map from continuous crop coordinates (pixel u spans [u, u + 1)) to image
    coordinates: the crop's axes rotated by `angle` degrees, its x axis reversed if `mirror`."""
    out_h, out_w = out_hw
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    sx = (-1.0 if mirror else 1.0) * float(size[0]) / out_w
    sy = float(size[1]) / out_h
    m = np.array([[cos * sx, -sin * sy], [sin * sx, cos * sy]])
    offset = np.asarray(center, dtype=np.float64) - m @ np.array([out_w / 2, out_h / 2])
    return np.hstack([m, offset[:, None]])


def image_to_crop_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Keypoints (pixel indices, pixel k centred at k) mapped into the crop of `matrix`."""
    inverse = np.linalg.inv(matrix[:, :2])
    return ((points + 0.5 - matrix[:, 2]) @ inverse.T - 0.5).astype(np.float32)


class PoseCrops(torch.utils.data.Dataset):
    """Crops, heatmaps and joint weights of a split, made when asked for.

    `dataset[i]` is person i as `load_split` makes it; with `augment`, `dataset[(i, seed)]`
    is an augmented draw of person i whose randomness comes from `seed` alone (DrawSampler
    gives each draw its seed, so a training is the same with any number of loader workers).
    An item is a dict of tensors: image (3, H, W), heatmaps (K, h, w), weights (K,),
    joints (K, 2) in crop pixels.
    """

    def __init__(self, index: PoseIndex, input_hw: Tuple[int, int], heatmap_hw: Tuple[int, int],
                 augment: Optional[Augment] = None) -> None:
        self.index, self.input_hw, self.heatmap_hw, self.augment = index, input_hw, heatmap_hw, augment
        self.stride = input_hw[1] / heatmap_hw[1]
        self._image: Tuple[Optional[Path], Optional[Image.Image]] = (None, None)

    def __len__(self) -> int:
        return len(self.index.files)

    def _open(self, path: Path) -> Image.Image:
        if self._image[0] != path:  # persons of one image come one after another
            self._image = (path, Image.open(path).convert("RGB"))
        return self._image[1]

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, torch.Tensor]:
        i, seed = (key, None) if isinstance(key, (int, np.integer)) else key
        ix = self.index
        image = self._open(ix.files[i])
        kp = ix.keypoints[i]
        w = (kp[:, 2] > 0).astype(np.float32)
        if self.augment is None or seed is None:
            pixels = crop(image, ix.centers[i], ix.scales[i], self.input_hw)
            joints = image_to_crop(kp[:, :2], ix.centers[i], ix.scales[i], self.input_hw)
        else:
            pixels, joints, w = self._augmented(image, i, kp, w, np.random.default_rng(seed))
        return {"image": torch.from_numpy(((pixels - MEAN) / STD).transpose(2, 0, 1).copy()),
                "heatmaps": torch.from_numpy(gaussian_heatmaps(joints, w, self.heatmap_hw, self.stride)),
                "weights": torch.from_numpy(w), "joints": torch.from_numpy(joints)}

    def _augmented(self, image: Image.Image, i: int, kp: np.ndarray, w: np.ndarray,
                   rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        aug, ix = self.augment, self.index
        factor = float(np.clip(1 + aug.scale * rng.standard_normal(), 1 - aug.scale, 1 + aug.scale))
        angle = float(np.clip(aug.rotation * rng.standard_normal(), -aug.rotation, aug.rotation))
        angle = angle if rng.random() < aug.rotate_p else 0.0
        mirror = bool(aug.flip and rng.random() < 0.5)
        matrix = affine(ix.centers[i], ix.scales[i] * factor, self.input_hw, angle, mirror)
        out_h, out_w = self.input_hw
        warped = image.transform((out_w, out_h), Image.AFFINE, tuple(matrix.ravel()), resample=Image.BILINEAR)
        joints = image_to_crop_affine(kp[:, :2], matrix)
        w = w.copy()
        if mirror:
            for left, right in FLIP_PAIRS:
                joints[[left, right]] = joints[[right, left]]
                w[[left, right]] = w[[right, left]]
        inside = (joints[:, 0] >= 0) & (joints[:, 0] < out_w) & (joints[:, 1] >= 0) & (joints[:, 1] < out_h)
        w = w * inside
        return np.asarray(warped, dtype=np.float32) / 255.0, joints, w.astype(np.float32)

    def stack(self, indices: Sequence[int]) -> PoseSet:
        """The persons `indices` (no augmentation) as one PoseSet."""
        items = [self[int(i)] for i in indices]
        ix, sel = self.index, np.asarray(indices, dtype=np.int64)
        return PoseSet(torch.stack([it["image"] for it in items]), torch.stack([it["heatmaps"] for it in items]),
                       torch.stack([it["weights"] for it in items]), torch.stack([it["joints"] for it in items]),
                       ix.centers[sel], ix.scales[sel], ix.areas[sel], [ix.image_ids[k] for k in sel], ix.coco)


class DrawSampler(torch.utils.data.Sampler):
    """`draws` keys (index, seed) for PoseCrops: epochs of a seeded shuffle of the `n` persons,
    each draw with its own augmentation seed; fixed by `seed` alone."""

    def __init__(self, n: int, draws: int, seed: int) -> None:
        self.n, self.draws, self.seed = n, draws, seed

    def __len__(self) -> int:
        return self.draws

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.seed)
        seeds = np.random.SeedSequence([self.seed, 1]).generate_state(self.draws, dtype=np.uint64)
        done = 0
        while done < self.draws:
            for i in torch.randperm(self.n, generator=gen).tolist()[:self.draws - done]:
                yield i, int(seeds[done])
                done += 1


def load_split(root: Path, split: str, input_hw: Tuple[int, int], heatmap_hw: Tuple[int, int],
               limit: Optional[int] = None) -> PoseSet:
    """All persons of a split with at least one labelled joint (the first `limit` of them), as
    tensors in memory."""
    index = read_index(root, split, input_hw[1] / input_hw[0], limit)
    return PoseCrops(index, input_hw, heatmap_hw).stack(range(len(index.files)))
