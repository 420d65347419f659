"""Proxy networks for segmentation: a small DeepLab-style net in plain torch (the default), and
torchvision's DeepLabV3 ResNet-50 (the paper's setting, `model: deeplabv3_resnet50`).

`DeepLabLite`: two stride-2 convolutions, atrous convolutions at stride 4 (dilation 2), an
ASPP-lite head (1x1, 3x3 dilated 2 and 4, and image pooling, concatenated and fused by a 1x1)
and a classifier, upsampled bilinearly to the input. Batch norm throughout.

Both name their segmentation head (`head_parameters`), whose learning rate the paper multiplies
by 10 (`task.options.head_lr`).
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class AsppLite(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_conv(cin, cout, 1), _conv(cin, cout, 3, dilation=2),
                                       _conv(cin, cout, 3, dilation=4)])
        self.pool = _conv(cin, cout, 1)
        self.fuse = _conv(4 * cout, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, x.shape[2], x.shape[3])
        return self.fuse(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabLite(nn.Module):
    """Logits (N, classes, H, W) of (N, 3, H, W) images; `width` channels in the encoder."""

    def __init__(self, classes: int, width: int = 24) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            _conv(3, width, stride=2), _conv(width, 2 * width, stride=2),
            _conv(2 * width, 2 * width, dilation=2), _conv(2 * width, 2 * width, dilation=2))
        self.head = AsppLite(2 * width, 2 * width)
        self.classifier = nn.Conv2d(2 * width, classes, 1)

    def head_parameters(self) -> List[nn.Parameter]:
        return list(self.head.parameters()) + list(self.classifier.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.head(self.encoder(x)))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


class TorchvisionDeepLab(nn.Module):
    """torchvision's DeepLabV3 ResNet-50, logits only; `weights` a local state-dict file or
    None (trained from scratch: nothing is downloaded)."""

    def __init__(self, classes: int, weights: Optional[str] = None) -> None:
        super().__init__()
        from torchvision.models.segmentation import deeplabv3_resnet50

        self.net = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=classes, aux_loss=False)
        if weights:
            self.net.load_state_dict(torch.load(weights, map_location="cpu"), strict=False)

    def head_parameters(self) -> List[nn.Parameter]:
        return list(self.net.classifier.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def build(name: str, classes: int, width: int = 24, weights: Optional[str] = None) -> nn.Module:
    if name == "small":
        return DeepLabLite(classes, width)
    if name == "deeplabv3_resnet50":
        return TorchvisionDeepLab(classes, weights)
    raise ValueError(f"unknown segmentation model {name!r}: small or deeplabv3_resnet50")
