"""Heatmap networks: a small proxy net for CPUs, and Simple Baselines on a ResNet-50."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from gp_losses.core.errors import InputError


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SmallPoseNet(nn.Module):
    """A stride-8 encoder and deconvolutions up to `stride` (4: 64x48 -> 16x12 heatmaps)."""

    def __init__(self, keypoints: int = 17, width: int = 32, stride: int = 4) -> None:
        super().__init__()
        if stride not in (2, 4, 8):
            raise InputError(f"task.options.stride: expected 2, 4 or 8, got {stride}")
        self.stride = stride
        layers = [_conv(3, width // 2, 2), _conv(width // 2, width), _conv(width, width, 2),
                  _conv(width, 2 * width, 2), _conv(2 * width, 2 * width)]
        channels = 2 * width
        for _ in range({8: 0, 4: 1, 2: 2}[stride]):
            layers.append(_deconv(channels, width))
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SimpleBaseline(nn.Module):
    """Xiao et al.: ResNet-50 (torchvision, weights=None unless a local file is given), three
    256-channel deconvolutions and a 1x1 head: heatmaps at stride 4 (256x192 -> 64x48)."""

    stride = 4

    def __init__(self, keypoints: int = 17, weights_file: Optional[str] = None) -> None:
        super().__init__()
        from torchvision.models import resnet50

        backbone = resnet50(weights=None)
        if weights_file:
            try:
                state = torch.load(weights_file, map_location="cpu", weights_only=True)
            except OSError as exc:
                raise InputError(f"task.options.weights_file: cannot read {weights_file!r}: {exc}") from None
            backbone.load_state_dict(state)
        self.body = nn.Sequential(*list(backbone.children())[:-2], _deconv(2048, 256), _deconv(256, 256),
                                  _deconv(256, 256))
        self.head = nn.Conv2d(256, keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build_model(name: str, weights_file: Optional[str] = None, stride: int = 4,
                width: int = 32) -> nn.Module:
    if name == "small":
        return SmallPoseNet(width=width, stride=stride)
    if name == "resnet50":
        return SimpleBaseline(weights_file=weights_file)
    raise InputError(f"task.options.model: expected 'small' or 'resnet50', got {name!r}")
