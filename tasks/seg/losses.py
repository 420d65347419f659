"""Segmentation baselines that no loss tree expresses, written in Python (paper Table 2 rows).

Each function maps the `seg` branch inputs, `yhat` (softmax probabilities) and `y` (one-hot
targets), (N, C, H, W) and both zero on pixels labelled 255, to a scalar loss. The task lists
them in `SegTask.python_losses`, so `--loss wce`, `gp-losses train` and `gp-losses retrain`
take them by name like any baseline.

- `wce`: class-balanced cross-entropy (U-Net's weighting, the paper's WCE [49]): each class
  present in the batch weighs the inverse of its share of the batch's labelled pixels, so
  every present class adds the same total weight. The weighting alone is a tree up to a
  factor per batch, `Neg(Mul(Mul(y, Log(yhat)), Inv(MeanNHW(y))))` (class c weighs
  N·H·W / n_c); the normalization by labelled pixels and classes present is not (no
  primitive counts classes).
- `lovasz`: Lovász-softmax (Berman et al., CVPR 2018, the paper's [2]), the reference
  implementation's defaults: the batch's labelled pixels together, classes present in the
  ground truth, absolute errors |y - yhat| sorted and weighted by the Lovász extension's
  gradient of the Jaccard loss. It needs a sort, which no primitive offers.
- `ssim`: cross-entropy plus 1 - SSIM between `yhat` and `y` per class (BASNet, the paper's
  [40], pairs its SSIM term with a cross-entropy in the same way): Gaussian window 11 × 11
  with sigma 1.5, C1 = 0.01², C2 = 0.03², zero padding, SSIM averaged over classes and
  pixels. The trees have no Gaussian window. (The SSIM term alone, trained from scratch with
  the default proxy, reached val mIoU 0.15 with seed 0, against 0.59 for `ce`.)
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

EPS = 1e-12
"""Floor of a probability under a log (a masked pixel's `yhat` is 0)."""


def weighted_ce(inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Class-balanced cross-entropy, sum over pixels and classes / (N·H·W) like Eq. 3."""
    yhat, y = inputs["yhat"], inputs["y"]
    counts = y.detach().sum(dim=(0, 2, 3))
    present = counts > 0
    weights = torch.where(present, counts.sum() / (present.sum().clamp(min=1) * counts.clamp(min=1)),
                          torch.zeros_like(counts))
    n, _, h, w = y.shape
    return -(weights[None, :, None, None] * y * torch.log(yhat.clamp(min=EPS))).sum() / (n * h * w)


def lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """The gradient of the Lovász extension of the Jaccard loss at errors sorted in decreasing
    order, with `fg_sorted` the ground truth (0/1) in that order (Berman et al., Eq. 8-9)."""
    total = fg_sorted.sum()
    intersection = total - fg_sorted.cumsum(0)
    union = total + (1 - fg_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def lovasz_softmax(inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Lovász-softmax over the batch's labelled pixels, mean over the classes present."""
    yhat, y = inputs["yhat"], inputs["y"]
    c = yhat.shape[1]
    probs = yhat.permute(0, 2, 3, 1).reshape(-1, c)
    fg_all = y.permute(0, 2, 3, 1).reshape(-1, c)
    labelled = fg_all.sum(dim=1) > 0
    probs, fg_all = probs[labelled], fg_all[labelled]
    losses = []
    for k in range(c):
        fg = fg_all[:, k]
        if not bool(fg.any()):
            continue
        errors, order = (fg - probs[:, k]).abs().sort(descending=True)
        losses.append(errors @ lovasz_grad(fg[order]))
    if not losses:  # no labelled pixel: a zero that keeps the graph
        return yhat.sum() * 0.0
    return torch.stack(losses).mean()


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(yhat: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The SSIM of `yhat` against `y` at each pixel and channel (zero padding at the border)."""
    c = yhat.shape[1]
    window = _gaussian_window(size, sigma, c, yhat)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, padding=size // 2, groups=c)

    mu_x, mu_y = blur(yhat), blur(y)
    var_x = blur(yhat * yhat) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(yhat * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


def cross_entropy(inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """-sum(y log yhat) / (N·H·W): the `ce` tree's value (Eq. 3)."""
    yhat, y = inputs["yhat"], inputs["y"]
    n, _, h, w = y.shape
    return -(y * torch.log(yhat.clamp(min=EPS))).sum() / (n * h * w)


def ssim_loss(inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy + 1 - the mean SSIM of `yhat` against `y` over pixels and channels."""
    return cross_entropy(inputs) + 1 - ssim_map(inputs["yhat"], inputs["y"]).mean()


LOSSES = {"wce": weighted_ce, "lovasz": lovasz_softmax, "ssim": ssim_loss}
"""The Python baselines of the `seg` branch, by name."""
