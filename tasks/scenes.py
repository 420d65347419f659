"""Synthetic scenes, generated from a seed: what the segmentation and the detection tasks draw.

Each scene holds 2-5 objects on a cluttered background. The five object classes differ in
shape (disc, box, triangle, ring, thin bar), colour and texture (stripe frequency, grain), but
each statistic overlaps with another class's — no single cue decides a pixel — and the clutter
uses the same colours. Objects occlude each other; the bars are 2-3 px thin structures. As in
VOC, a thin band along object outlines can be labelled 255 (not scored), with probability
`void_border` per object. tasks/seg/synthetic.py writes them as Pascal VOC, tasks/det/synthetic.py
as COCO instances.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

CLASSES = ("background", "disc", "box", "triangle", "ring", "bar")
IGNORE = 255

# per class: mean colour (RGB), colour spread, stripe period (px), grain (noise sd)
LOOKS = {
    1: ((200, 80, 60), 40, 0, 18),
    2: ((170, 110, 60), 40, 6, 10),
    3: ((70, 150, 190), 45, 0, 25),
    4: ((110, 120, 200), 40, 9, 12),
    5: ((190, 170, 80), 45, 4, 15),
}


def _mask(kind: int, yy: np.ndarray, xx: np.ndarray, rng: np.random.RandomState, size: int) -> np.ndarray:
    cy, cx = rng.uniform(0.1, 0.9, 2) * size
    angle = rng.uniform(0, math.pi)
    u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
    r = rng.uniform(0.08, 0.2) * size
    if kind == 1:  # disc (an ellipse)
        return (u / r) ** 2 + (v / (r * rng.uniform(0.6, 1.0))) ** 2 <= 1
    if kind == 2:  # box
        return (np.abs(u) <= r) & (np.abs(v) <= r * rng.uniform(0.4, 1.0))
    if kind == 3:  # triangle
        h = r * 1.6
        return (v >= -h / 2) & (v <= h / 2) & (np.abs(u) <= (h / 2 - v) * 0.6)
    if kind == 4:  # ring
        d = np.sqrt(u ** 2 + v ** 2)
        return (d <= r) & (d >= r * rng.uniform(0.45, 0.65))
    # thin bar: 2-3 px wide, long
    return (np.abs(v) <= rng.uniform(1.0, 1.6)) & (np.abs(u) <= rng.uniform(0.25, 0.45) * size)


def _paint(image: np.ndarray, mask: np.ndarray, kind: int, rng: np.random.RandomState,
           yy: np.ndarray, xx: np.ndarray) -> None:
    mean, spread, period, grain = LOOKS[kind]
    colour = np.clip(np.array(mean) + rng.normal(0, spread, 3), 0, 255)
    shade = np.ones(mask.shape)
    if period:
        phase, angle = rng.uniform(0, 2 * math.pi), rng.uniform(0, math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        shade = 1 + 0.25 * np.sin(2 * math.pi * t / (period * rng.uniform(0.8, 1.25)) + phase)
    pixels = colour[None, :] * shade[mask][:, None] + rng.normal(0, grain, (int(mask.sum()), 3))
    image[mask] = pixels


def render_instances(rng: np.random.RandomState, size: int,
                     void_border: float) -> Tuple[np.ndarray, np.ndarray, List[Tuple[int, np.ndarray]]]:
    """One scene: (H, W, 3) uint8 image, (H, W) uint8 labels, and its objects in painting
    order: (class, mask) each, the whole shape (a later object may cover part of it)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    base = rng.uniform(60, 190, 3)
    tilt = rng.uniform(-0.3, 0.3, 2)
    image = base[None, None, :] * (1 + tilt[0] * (yy / size - 0.5) + tilt[1] * (xx / size - 0.5))[..., None]
    image = image + rng.normal(0, 12, image.shape)
    for _ in range(rng.randint(4, 9)):  # clutter: blobs in the objects' colours, unlabelled
        look = LOOKS[rng.randint(1, 6)]
        cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(0.03, 0.12) * size]
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 * rng.uniform(0.3, 3) <= r ** 2
        image[blob] = 0.6 * image[blob] + 0.4 * (np.array(look[0]) + rng.normal(0, look[1], 3))
    labels = np.zeros((size, size), dtype=np.uint8)
    instances = []
    for _ in range(rng.randint(2, 6)):
        kind = rng.randint(1, 6)
        mask = _mask(kind, yy, xx, rng, size)
        if mask.sum() < 6:
            continue
        _paint(image, mask, kind, rng, yy, xx)
        labels[mask] = kind
        instances.append((kind, mask))
        if rng.rand() < void_border:  # VOC marks object outlines as void
            from scipy import ndimage

            ring = ndimage.binary_dilation(mask, iterations=1) & ~ndimage.binary_erosion(mask, iterations=1)
            labels[ring] = IGNORE
    return np.clip(image, 0, 255).astype(np.uint8), labels, instances
