"""Segmentation-shaped probes for benchmarks, until the segmentation task exists.

B images with blob-shaped targets over 21 classes (class 0 is background), and the logits a
randomly initialized small conv net gives for them. Per-sample metric: mIoU over the classes
present in the target or the prediction. Implements only what the rejection protocol needs.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gp_losses.contract import Branch, Probe, Task
from primitives import CLASSIFICATION_INPUTS


def blob_labels(n: int, size: int, classes: int, gen: torch.Generator) -> torch.Tensor:
    """(n, size, size) labels: background plus 2-4 random ellipses of random classes."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for b in range(n):
        for _ in range(int(torch.randint(2, 5, (1,), generator=gen))):
            cy, cx = (torch.rand(2, generator=gen) * size).tolist()
            ry, rx = (size * (0.1 + 0.25 * torch.rand(2, generator=gen))).tolist()
            angle = float(torch.rand(1, generator=gen)) * math.pi
            dy, dx = yy - cy, xx - cx
            u = dx * math.cos(angle) + dy * math.sin(angle)
            v = -dx * math.sin(angle) + dy * math.cos(angle)
            mask = (u / rx) ** 2 + (v / ry) ** 2 <= 1
            labels[b][mask] = int(torch.randint(1, classes, (1,), generator=gen))
    return labels


def per_sample_miou(pred: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """mIoU of each sample over the classes present in its target or prediction."""
    out = []
    for p, t in zip(pred, labels):
        p1 = F.one_hot(p.flatten(), classes).bool()
        t1 = F.one_hot(t.flatten(), classes).bool()
        inter = (p1 & t1).sum(0).float()
        union = (p1 | t1).sum(0).float()
        present = union > 0
        out.append((inter[present] / union[present]).mean())
    return torch.stack(out)


class SegProbeTask(Task):
    name = "seg-probe"
    branches = (Branch("seg", CLASSIFICATION_INPUTS),)
    metrics = ("miou",)
    baselines = {"ce": {"seg": "Neg(Mul(y, Log(yhat)))"}}

    def __init__(self, size: int = 64, classes: int = 21) -> None:
        super().__init__()
        self.size, self.classes = size, classes

    def probe(self, n: int, seed: int) -> Probe:
        gen = torch.Generator().manual_seed(seed)
        labels = blob_labels(n, self.size, self.classes, gen)
        colors = torch.rand(self.classes, 3, generator=gen)
        images = colors[labels].permute(0, 3, 1, 2) + 0.1 * torch.randn(n, 3, self.size, self.size, generator=gen)
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, self.classes, 3, padding=1))
        with torch.no_grad():
            logits = net(images)
        onehot = F.one_hot(labels, self.classes).permute(0, 3, 1, 2).float()
        return Probe(outputs={"seg": logits}, targets={"seg": {"labels": labels, "onehot": onehot}},
                     ideal={"seg": 10.0 * onehot})

    def loss_inputs(self, branch: str, outputs: torch.Tensor, targets: Any) -> Dict[str, torch.Tensor]:
        return {"yhat": outputs.softmax(dim=1), "y": targets["onehot"]}

    def probe_metric(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, Any]) -> torch.Tensor:
        return per_sample_miou(outputs["seg"].argmax(dim=1), targets["seg"]["labels"], self.classes)
