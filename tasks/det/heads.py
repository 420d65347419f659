"""The extension point: torchvision's Faster R-CNN and Mask R-CNN with their built-in losses
replaced by searched (or any) branch losses (paper sections 4.2, 4.3, A.2, A.3).

    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, num_classes=6)
    use_losses(model, BranchLosses(compiled))     # compiled: CompiledLoss over BRANCHES
    losses = model(images, targets)               # {"loss_objectness": ..., ...}; sum them

`use_losses` swaps the model's RPN and RoI heads for subclasses that keep everything of
torchvision's — anchors, matching, the positive/negative samplers, RoIAlign, the box coder,
NMS — and hand what the built-in losses would have seen, as loss inputs, to a loss object:
a callable `(branch name, inputs) -> weighted branch loss`. Five branches:

- `cls_rpn`: objectness of the RPN's sampled anchors as two classes, `yhat` = (1 − σ, σ) and
  `y` one-hot of background / object, (K, 2, 1, 1).
- `reg_rpn`: for the positive anchors, `i`, `u`, `e` of the decoded predicted box and its
  matched ground-truth box (tasks/det/boxes.py), (K, 1, 1, 1).
- `cls_rcnn`: softmax class probabilities of the sampled proposals and one-hot labels,
  (K, C, 1, 1) with background as class 0.
- `reg_rcnn`: `i`, `u`, `e` of each positive proposal's decoded box for its ground-truth
  class against its matched ground-truth box.
- `mask` (Mask R-CNN): for each positive proposal, per-pixel `yhat` = (1 − σ, σ) of the mask
  logits of its class and `y` = (1 − t, t), t the ground-truth mask cropped to the proposal
  and resized by RoIAlign as torchvision does (soft at the edges), (K, 2, M, M).

Regression inputs also carry what torchvision's own smooth L1 uses — `deltas` and
`target_deltas` (encoded by the box coder) and `sampled`, the number of sampled anchors or
proposals it divides by — so that `smooth_l1` below, at weight 1, is torchvision's loss. A
branch with no positive sample contributes 0, as torchvision's does.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads, project_masks_on_boxes
from torchvision.models.detection.rpn import RegionProposalNetwork

from gp_losses.contract import Branch
from primitives import BOX_INPUTS, CLASSIFICATION_INPUTS
from tasks.det.boxes import box_inputs

BRANCHES = (Branch("cls_rpn", CLASSIFICATION_INPUTS, 1.0), Branch("reg_rpn", BOX_INPUTS, 10.0),
            Branch("cls_rcnn", CLASSIFICATION_INPUTS, 1.0), Branch("reg_rcnn", BOX_INPUTS, 10.0))
"""Faster R-CNN's loss branches, weighted as the paper does (1.0 classification, 10.0
regression, after GIoU)."""
MASK_BRANCH = Branch("mask", CLASSIFICATION_INPUTS, 1.0)
"""Mask R-CNN's fifth branch."""

LossFn = Callable[[str, Dict[str, torch.Tensor]], torch.Tensor]


def smooth_l1(inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
    """torchvision's box loss: smooth L1 (beta 1/9) of the encoded deltas, summed over the
    positives, divided by the number sampled. A Python baseline at weight 1."""
    value = F.smooth_l1_loss(inputs["deltas"], inputs["target_deltas"], beta=1 / 9, reduction="sum")
    return value / inputs["sampled"]


smooth_l1.weight = 1.0


class BranchLosses:
    """The loss object of a compiled loss (gp_losses.torch_loss.CompiledLoss) over some of
    the branches: name -> weight × branch loss (Eq. 4)."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self.index = {b.name: k for k, b in enumerate(compiled.branches)}

    def __call__(self, name: str, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        k = self.index[name]
        if len(next(iter(inputs.values()))) == 0:  # no positive sample: nothing to learn from
            live = [v.sum() for v in inputs.values() if v.requires_grad]
            return sum(live) * 0.0 if live else torch.zeros(())
        return self.compiled.weight(k) * self.compiled.branch(k, inputs)


def two_classes(logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Binary logits as two-class softmax probabilities (1 − σ, σ) and their targets in [0, 1]
    as (1 − t, t), class as dimension 1: (K, 2, 1, 1) for K logits, (K, 2, M, M) for K masks."""
    p = torch.sigmoid(logits)
    yhat = torch.stack([1 - p, p], dim=1)
    y = torch.stack([1 - targets, targets], dim=1).to(yhat.dtype)
    while yhat.dim() < 4:
        yhat, y = yhat[..., None], y[..., None]
    return {"yhat": yhat, "y": y}


class LossRPN(RegionProposalNetwork):
    """torchvision's RPN, its two losses handed to `branch_loss` (branches cls_rpn, reg_rpn)."""

    branch_loss: Optional[LossFn] = None

    def assign_targets_to_anchors(self, anchors, targets):
        labels, matched_gt_boxes = super().assign_targets_to_anchors(anchors, targets)
        self._matched = (anchors, matched_gt_boxes)
        return labels, matched_gt_boxes

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
        anchors, matched_gt_boxes = self._matched
        self._matched = None
        pos, neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos, dim=0))[0]
        neg = torch.where(torch.cat(neg, dim=0))[0]
        sampled = torch.cat([pos, neg], dim=0)
        labels = torch.cat(labels, dim=0)
        cls_inputs = two_classes(objectness.flatten()[sampled], labels[sampled])
        anchors_pos = torch.cat(anchors, dim=0)[pos]
        predicted = self.box_coder.decode_single(pred_bbox_deltas[pos], anchors_pos)
        reg_inputs = {**box_inputs(predicted, torch.cat(matched_gt_boxes, dim=0)[pos]),
                      "deltas": pred_bbox_deltas[pos],
                      "target_deltas": torch.cat(regression_targets, dim=0)[pos],
                      "sampled": torch.tensor(float(sampled.numel()))}
        return self.branch_loss("cls_rpn", cls_inputs), self.branch_loss("reg_rpn", reg_inputs)


class LossRoIHeads(RoIHeads):
    """torchvision's RoI heads, their losses handed to `branch_loss` (cls_rcnn, reg_rcnn and,
    with a mask head, mask). torchvision computes its own losses too, in `forward`; they are
    replaced in the dict it returns."""

    branch_loss: Optional[LossFn] = None

    def select_training_samples(self, proposals, targets):
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(proposals, targets)
        matched = []
        for boxes, idxs in zip((t["boxes"] for t in targets), matched_idxs):
            boxes = boxes.to(proposals[0].dtype)
            matched.append((boxes if boxes.numel() else boxes.new_zeros((1, 4)))[idxs])
        self._samples = (proposals, matched_idxs, labels, regression_targets, matched)
        return proposals, matched_idxs, labels, regression_targets

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        seen: Dict[str, object] = {}
        hooks = [self.box_predictor.register_forward_hook(lambda m, i, o: seen.__setitem__("box", o))]
        if self.has_mask():
            hooks.append(self.mask_predictor.register_forward_hook(lambda m, i, o: seen.__setitem__("mask", o)))
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
        finally:
            for hook in hooks:
                hook.remove()
        proposals, matched_idxs, labels, regression_targets, matched = self._samples
        self._samples = None
        class_logits, box_regression = seen["box"]
        losses["loss_classifier"], losses["loss_box_reg"] = self._box_losses(
            class_logits, box_regression, proposals, labels, regression_targets, matched)
        if self.has_mask():
            losses["loss_mask"] = self._mask_loss(seen["mask"], proposals, matched_idxs, labels, targets)
        return result, losses

    def _box_losses(self, class_logits, box_regression, proposals, labels, regression_targets, matched):
        labels = torch.cat(labels, dim=0)
        n, classes = class_logits.shape
        cls_inputs = {"yhat": class_logits.softmax(dim=1)[:, :, None, None],
                      "y": F.one_hot(labels, classes).to(class_logits.dtype)[:, :, None, None]}
        pos = torch.where(labels > 0)[0]
        deltas = box_regression.reshape(n, box_regression.size(-1) // 4, 4)[pos, labels[pos]]
        predicted = self.box_coder.decode_single(deltas, torch.cat(proposals, dim=0)[pos])
        reg_inputs = {**box_inputs(predicted, torch.cat(matched, dim=0)[pos]), "deltas": deltas,
                      "target_deltas": torch.cat(regression_targets, dim=0)[pos],
                      "sampled": torch.tensor(float(labels.numel()))}
        return self.branch_loss("cls_rcnn", cls_inputs), self.branch_loss("reg_rcnn", reg_inputs)

    def _mask_loss(self, mask_logits, proposals, matched_idxs, labels, targets):
        size = mask_logits.shape[-1]
        logits: List[torch.Tensor] = []
        masks: List[torch.Tensor] = []
        start = 0
        for img_props, img_idxs, img_labels, target in zip(proposals, matched_idxs, labels, targets):
            pos = torch.where(img_labels > 0)[0]
            count = len(pos)
            gt_labels = target["labels"][img_idxs[pos]]
            logits.append(mask_logits[start:start + count][torch.arange(count), gt_labels])
            masks.append(project_masks_on_boxes(target["masks"], img_props[pos], img_idxs[pos], size))
            start += count
        return self.branch_loss("mask", two_classes(torch.cat(logits, dim=0), torch.cat(masks, dim=0)))


def _wrap(cls, module: torch.nn.Module, branch_loss: LossFn) -> torch.nn.Module:
    """`module` as an instance of its subclass `cls`: the same parameters, buffers and
    settings (shared, not copied), with `branch_loss` for its losses."""
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    new.branch_loss = branch_loss
    return new


def use_losses(model: torch.nn.Module, branch_loss: LossFn) -> torch.nn.Module:
    """Give a torchvision Faster R-CNN or Mask R-CNN (any backbone) these losses, in place."""
    model.rpn = _wrap(LossRPN, model.rpn, branch_loss)
    model.roi_heads = _wrap(LossRoIHeads, model.roi_heads, branch_loss)
    return model
