"""The detection and instance-segmentation networks: torchvision's `FasterRCNN` and `MaskRCNN`
classes (their RPN, RoIAlign, box coder, samplers and NMS), around a backbone of either size.

- `small`: the proxy. Four 3×3 convolutions (stride 8 in all, `width`·4 channels out), one
  feature map, anchors of 8–64 px at three aspect ratios, a 7×7 RoIAlign into a two-layer
  head of 128 units; for Mask R-CNN a 14×14 RoIAlign into two 3×3 convolutions and 28×28
  masks. Fewer anchors and RoIs sampled per image than torchvision's defaults (`rpn_batch`,
  `roi_batch`), fewer proposals kept.
- `resnet50_fpn`: the paper's setting (A.2): ResNet-50 with an FPN on its last three stages,
  the box head at half its channels (512 units); `weights=None` unless `weights_file` names a
  local state dict.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from gp_losses.core.errors import InputError

MODELS = ("small", "resnet50_fpn")


def small_backbone(width: int) -> nn.Module:
    """Four 3×3 convolutions with batch norm, strides 2, 2, 2, 1: one stride-8 feature map."""
    layers, channels = [], 3
    for out, stride in ((width, 2), (2 * width, 2), (4 * width, 2), (4 * width, 1)):
        layers += [nn.Conv2d(channels, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        channels = out
    backbone = nn.Sequential(*layers)
    backbone.out_channels = channels
    return backbone


def build(model: str, classes: int, masks: bool, size: int, max_size: int, width: int = 8, rpn_batch: int = 64,
          roi_batch: int = 64, weights_file: Optional[str] = None) -> nn.Module:
    """A Faster R-CNN (`masks=False`) or Mask R-CNN for `classes` classes (background
    included), taking images resized to a shorter side of `size` and a longer side of at most
    `max_size` (torchvision's `min_size`, `max_size`)."""
    common = dict(min_size=size, max_size=max_size, rpn_batch_size_per_image=rpn_batch,
                  box_batch_size_per_image=roi_batch)
    cls = MaskRCNN if masks else FasterRCNN
    if model == "small":
        backbone = small_backbone(width)
        channels = backbone.out_channels
        extra = dict(rpn_anchor_generator=AnchorGenerator(sizes=((8, 16, 32, 64),), aspect_ratios=((0.5, 1.0, 2.0),)),
                     box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
                     box_head=TwoMLPHead(channels * 7 * 7, 128), box_predictor=FastRCNNPredictor(128, classes),
                     rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
                     rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=50, box_detections_per_img=30)
        if masks:
            extra.update(mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
                         mask_head=MaskRCNNHeads(channels, (4 * width, 4 * width), 1),
                         mask_predictor=MaskRCNNPredictor(4 * width, 4 * width, classes))
        net = cls(backbone, num_classes=None, **common, **extra)
    elif model == "resnet50_fpn":
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

        backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=5,
                                       returned_layers=[2, 3, 4])
        levels = ["0", "1", "2"]  # P3-P5, and the pooled P6: torchvision's anchor sizes for those levels
        representation = 512  # half of torchvision's 1024 (A.2: the head's channels halved)
        extra = dict(rpn_anchor_generator=AnchorGenerator(sizes=((64,), (128,), (256,), (512,)),
                                                          aspect_ratios=((0.5, 1.0, 2.0),) * 4),
                     box_roi_pool=MultiScaleRoIAlign(levels, 7, 2),
                     box_head=TwoMLPHead(backbone.out_channels * 7 * 7, representation),
                     box_predictor=FastRCNNPredictor(representation, classes))
        if masks:
            extra.update(mask_roi_pool=MultiScaleRoIAlign(levels, 14, 2),
                         mask_predictor=MaskRCNNPredictor(256, 256, classes))
        net = cls(backbone, num_classes=None, **common, **extra)
    else:
        raise InputError(f"unknown detection model {model!r}; choose one of {', '.join(MODELS)}")
    if weights_file:
        try:
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise InputError(f"task.options.weights_file: cannot read {weights_file!r}: {exc}") from None
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or len(missing) == len(net.state_dict()):
            raise InputError(f"task.options.weights_file {weights_file!r} does not fit the {model} network "
                             f"({len(unexpected)} unexpected, {len(missing)} missing keys)")
    return net
