"""Synthetic people, generated deterministically from a seed, written as a COCO dataset.

Each image holds one articulated 17-joint person with human-like proportions and joint-angle
ranges: a torso, limbs of varying width and shade, a head; on a cluttered, noisy background;
sometimes partly hidden by an occluder (its joints are labelled with visibility 1) or partly
outside the image (those joints get visibility 0). The result is written once, as
`person_keypoints_{train,val,test}.json` plus PNG images, and read back through the same loader
as real COCO data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw

from tasks import coco
from tasks.pose.keypoints import CATEGORY, K

# keypoint indices
NOSE, LEYE, REYE, LEAR, REAR, LSHO, RSHO, LELB, RELB, LWRI, RWRI, LHIP, RHIP, LKNE, RKNE, LANK, RANK = range(K)
LIMBS = [(LSHO, LELB), (LELB, LWRI), (RSHO, RELB), (RELB, RWRI), (LHIP, LKNE), (LKNE, LANK),
         (RHIP, RKNE), (RKNE, RANK)]


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def skeleton(rng: np.random.RandomState, center: np.ndarray, scale: float) -> Tuple[np.ndarray, float]:
    """(17, 2) joint positions of a random pose (image coordinates, y down) and head radius.

    `scale` is the torso length (neck to pelvis). Proportions follow adult humans roughly:
    upper arm 0.55, forearm 0.5, thigh 0.7, shin 0.65 torso lengths.
    """
    lean = rng.uniform(-0.35, 0.35)
    down = _rotate(np.array([0.0, 1.0]), lean)
    side = _rotate(np.array([1.0, 0.0]), lean)  # image right
    facing = 1.0 if rng.rand() < 0.8 else -1.0  # facing the camera: the person's left is on the right
    width = rng.uniform(0.85, 1.15)
    pelvis = center
    neck = pelvis - scale * down
    head = neck - 0.42 * scale * down + rng.uniform(-0.06, 0.06) * scale * side
    head_r = 0.2 * scale
    pts = np.zeros((K, 2))
    pts[LSHO], pts[RSHO] = neck + facing * 0.26 * width * scale * side, neck - facing * 0.26 * width * scale * side
    pts[LHIP], pts[RHIP] = pelvis + facing * 0.16 * width * scale * side, pelvis - facing * 0.16 * width * scale * side
    turn = rng.uniform(-0.4, 0.4) * head_r  # head turned left/right
    pts[NOSE] = head + turn * side + 0.15 * head_r * down
    for eye, ear, sign in ((LEYE, LEAR, facing), (REYE, REAR, -facing)):
        pts[eye] = head + (sign * 0.35 * head_r + turn) * side - 0.2 * head_r * down
        pts[ear] = head + sign * 0.95 * head_r * side + 0.5 * turn * side
    for (root, mid, end), outward, (l1, l2), (a_lo, a_hi), (f_lo, f_hi) in (
            ((LSHO, LELB, LWRI), facing, (0.55, 0.5), (-0.3, 2.6), (0.0, 2.4)),
            ((RSHO, RELB, RWRI), -facing, (0.55, 0.5), (-0.3, 2.6), (0.0, 2.4)),
            ((LHIP, LKNE, LANK), facing, (0.7, 0.65), (-0.25, 1.0), (0.0, 1.6)),
            ((RHIP, RKNE, RANK), -facing, (0.7, 0.65), (-0.25, 1.0), (0.0, 1.6))):
        a = rng.uniform(a_lo, a_hi) * outward
        bend = rng.uniform(f_lo, f_hi) * (1 if rng.rand() < 0.5 else -1)
        upper = _rotate(down, -a) * l1 * scale
        lower = _rotate(upper / np.linalg.norm(upper), -bend) * l2 * scale
        pts[mid] = pts[root] + upper
        pts[end] = pts[mid] + lower
    return pts, head_r


def _shade(rng: np.random.RandomState) -> Tuple[int, int, int]:
    return tuple(int(v) for v in rng.randint(30, 230, size=3))


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.RandomState, size: int, n: int) -> None:
    for _ in range(n):
        x0, y0 = rng.randint(-10, size, size=2)
        w, h = rng.randint(4, size // 2, size=2)
        kind = rng.randint(3)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        if kind == 0:
            draw.rectangle(box, fill=_shade(rng))
        elif kind == 1:
            draw.ellipse(box, fill=_shade(rng))
        else:
            draw.line(box, fill=_shade(rng), width=int(rng.randint(1, 4)))


def render(rng: np.random.RandomState, size: int) -> Tuple[Image.Image, Dict]:
    """One image and its COCO annotation fields (keypoints, bbox, area, num_keypoints)."""
    bg = np.linspace(rng.randint(0, 120, 3), rng.randint(100, 255, 3), size)[:, None, :]
    image = Image.fromarray(np.repeat(bg, size, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    _clutter(draw, rng, size, rng.randint(4, 12))
    scale = rng.uniform(0.15, 0.26) * size
    center = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.45, 0.6)]) * size
    pts, head_r = skeleton(rng, center, scale)
    mask = Image.new("L", (size, size), 0)
    mdraw = ImageDraw.Draw(mask)
    skin, cloth, legs = _shade(rng), _shade(rng), _shade(rng)
    limb_w = max(2, int(rng.uniform(0.14, 0.24) * scale))
    torso = [tuple(pts[i]) for i in (LSHO, RSHO, RHIP, LHIP)]
    for target, color in ((draw, cloth), (mdraw, 255)):
        target.polygon(torso, fill=color)
        for (a, b) in LIMBS:
            fill = color if target is mdraw else (legs if a in (LHIP, RHIP, LKNE, RKNE) else cloth)
            target.line([tuple(pts[a]), tuple(pts[b])], fill=fill, width=limb_w)
        hx, hy = (pts[LEAR] + pts[REAR]) / 2
        target.ellipse([hx - head_r, hy - head_r * 1.2, hx + head_r, hy + head_r * 1.1],
                       fill=color if target is mdraw else skin)
    for eye in (LEYE, REYE):  # small dark marks make the face keypoints findable
        x, y = pts[eye]
        draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=(20, 20, 20))
    visible = np.full(K, 2)
    if rng.rand() < 0.35:  # an occluder in front of part of the body
        ox, oy = pts[rng.randint(K)] + rng.uniform(-0.3, 0.3, 2) * scale
        w, h = rng.uniform(0.4, 0.9, 2) * scale
        box = [ox - w / 2, oy - h / 2, ox + w / 2, oy + h / 2]
        draw.rectangle(box, fill=_shade(rng))
        mdraw.rectangle(box, fill=0)
        inside = (pts[:, 0] >= box[0]) & (pts[:, 0] <= box[2]) & (pts[:, 1] >= box[1]) & (pts[:, 1] <= box[3])
        visible[inside] = 1
    outside = (pts[:, 0] < 0) | (pts[:, 0] > size - 1) | (pts[:, 1] < 0) | (pts[:, 1] > size - 1)
    visible[outside] = 0
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(4, 14), (size, size, 3))
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    m = np.asarray(mask) > 0
    ys, xs = np.nonzero(m)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    keypoints = []
    for (x, y), v in zip(pts, visible):
        keypoints += [round(float(x), 2), round(float(y), 2), int(v)] if v else [0, 0, 0]
    return image, {"keypoints": keypoints, "num_keypoints": int((visible > 0).sum()),
                   "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                   "area": float(m.sum())}


def write_split(root: Path, split: str, n: int, seed: int, size: int) -> Path:
    """Write `n` images and `annotations/person_keypoints_{split}.json` under `root`."""
    def person(rng: np.random.RandomState):
        image, ann = render(rng, size)
        return image, [{"category_id": 1, "iscrowd": 0, **ann}]

    return coco.write_split(root, split, n, seed, f"person_keypoints_{split}.json", [CATEGORY], person)


def ensure_dataset(root: Path, n_train: int, n_val: int, seed: int, size: int,
                   n_test: int = 300) -> Path:
    """Generate the dataset under `root` unless it is already there (same parameters). Each
    split has its own random stream (seed, seed + 1, seed + 2), so adding or resizing the test
    split leaves train and val as they were; the directory's name carries the other sizes."""
    root = Path(root)
    for split, n, s in (("train", n_train, seed), ("val", n_val, seed + 1), ("test", n_test, seed + 2)):
        path = root / "annotations" / f"person_keypoints_{split}.json"
        if not path.is_file() or (split == "test" and len(json.loads(path.read_text())["images"]) != n):
            write_split(root, split, n, s, size)
    return root
