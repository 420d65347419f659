"""The box-regression loss inputs `i`, `u`, `e` (paper section A.2, after CSE-Autoloss and
GIoU): for each pair of a decoded predicted box and its target box, the area of their
intersection, of their union, and of the smallest box enclosing both.

Boxes are (K, 4) tensors in (x1, y1, x2, y2) order, as torchvision's box ops take them; pair k
is row k of each. The inputs come back as (K, 1, 1, 1) tensors, the (N, C, H, W) shape every
loss tree takes: a branch loss, sum(o) / (N·H·W) (Eq. 3), is then the mean over the K pairs.

    IoU = i / u          GIoU loss = 1 - i / u + (e - u) / e
"""

from __future__ import annotations

from typing import Dict

import torch
from torchvision.ops import box_area


def box_inputs(pred: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
    """{"i", "u", "e"}: intersection, union and enclosing areas of aligned box pairs."""
    if pred.shape != target.shape or pred.dim() != 2 or pred.shape[1] != 4:
        raise ValueError(f"box pairs must be two (K, 4) tensors, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    top_left = torch.max(pred[:, :2], target[:, :2])
    bottom_right = torch.min(pred[:, 2:], target[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    union = box_area(pred) + box_area(target) - inter
    enclosing = (torch.max(pred[:, 2:], target[:, 2:]) - torch.min(pred[:, :2], target[:, :2])).prod(dim=1)
    shape = (-1, 1, 1, 1)
    return {"i": inter.reshape(shape), "u": union.reshape(shape), "e": enclosing.reshape(shape)}
