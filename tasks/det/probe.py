"""The rejection protocol's probe for detection and instance segmentation (paper A.2, A.3).

B training images go through a randomly initialized network once, with torchvision's own
machinery: the RPN's anchors, matcher and sampler, its proposals, the RoI heads' sampler and
RoIAlign. What each branch's loss would see is kept per image, at a fixed number of sampled
anchors (Ka) and proposals (Kr), padded where an image has fewer, as raw outputs that the
protocol optimizes directly:

    cls_rpn   (B, Ka, 1, 1)   objectness logits of the sampled anchors
    reg_rpn   (B, Ka, 1, 4)   their box deltas
    cls_rcnn  (B, Kr, C, 1)   class logits of the sampled proposals
    reg_rcnn  (B, Kr, C, 4)   their per-class box deltas, in the RPN's units (torchvision's
                              RoI deltas divided by its box coder's weights 10, 10, 5, 5), so
                              that one protocol learning rate suits both box branches
    mask      (B, Kr, M, M)   mask logits of the positive proposals for their class (Mask R-CNN)

The per-image protocol metric multiplies one score per stage, each 1 at the ideal outputs, so
that with the other branches ideal it is the score of the stage being checked:

- RPN: class-agnostic AP of the sampled anchors' decoded boxes ranked by objectness, after the
  RPN's own NMS (IoU 0.7), against the ground-truth boxes that have a positive sampled anchor
  (paper A.2: "the predicted region proposals and the corresponding training targets");
- RoI heads: detections as torchvision's post-processing makes them (each proposal's box and
  score per foreground class, scores under 0.05 dropped, NMS per class at IoU 0.5), AP per
  class against the ground-truth boxes that have a positive sampled proposal, averaged over
  the classes in those boxes or among the detections (a class detected but absent scores 0);
- mask: for each positive proposal, the share of IoU thresholds its mask (cut at 0.5) passes
  against the ground-truth mask as torchvision crops it, averaged over the positives.

AP here is COCO's: averaged over IoU thresholds 0.50:0.05:0.95, each the 101-point
interpolated precision, detections matched greedily by score to the best unmatched box
(`average_precision`; tested against pycocotools).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.roi_heads import project_masks_on_boxes
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import batched_nms, box_iou, nms

from tasks.det.boxes import box_inputs
from tasks.det.heads import two_classes

THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALLS = np.linspace(0.0, 1.0, 101)
SCORE_THRESH = 0.05  # torchvision's box_score_thresh
RPN_NMS, ROI_NMS = 0.7, 0.5


def average_precision(boxes: torch.Tensor, scores: torch.Tensor, gt: torch.Tensor) -> float:
    """COCO AP of one image and class: detections `boxes` (D, 4) with `scores` (D,) against
    ground-truth boxes `gt` (G, 4, G > 0); mean over THRESHOLDS of the 101-point interpolated
    precision. Ties in score keep the given order (a stable sort, as COCOeval's)."""
    if len(boxes) == 0:
        return 0.0
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order].double(), gt.double()).numpy()
    # COCOeval's greedy matching, at every threshold at once: each detection in score order
    # takes the best ground truth not yet taken at that threshold, if its IoU reaches it
    levels = np.arange(len(THRESHOLDS))
    taken = np.zeros((len(THRESHOLDS), len(gt)), dtype=bool)
    hit = np.zeros((len(THRESHOLDS), len(order)), dtype=bool)
    for d in range(len(order)):
        rows = np.where(taken, -1.0, iou[d])
        best = rows.argmax(axis=1)
        ok = rows[levels, best] >= THRESHOLDS - 1e-10  # COCOeval: iou >= t, within its 1e-10
        taken[levels[ok], best[ok]] = True
        hit[ok, d] = True
    tp = np.cumsum(hit, axis=1)
    recall = tp / len(gt)
    precision = tp / np.arange(1, len(order) + 1)
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # the envelope
    total = 0.0
    for level in levels:
        at = np.searchsorted(recall[level], RECALLS, side="left")
        total += float(np.where(at < len(order), precision[level, np.minimum(at, len(order) - 1)], 0.0).mean())
    return total / len(THRESHOLDS)


def _pad(rows: List[torch.Tensor], k: int) -> torch.Tensor:
    """Per-image tensors (n_i, ...) stacked as (B, k, ...), zero-padded (n_i <= k)."""
    out = rows[0].new_zeros((len(rows), k) + tuple(rows[0].shape[1:]))
    for b, row in enumerate(rows):
        out[b, :len(row)] = row
    return out


def _valid(counts: List[int], k: int) -> torch.Tensor:
    return torch.arange(k)[None, :] < torch.tensor(counts)[:, None]


@dataclass
class DetTargets:
    """What the branches' loss inputs and the metric need besides the outputs (per image,
    padded like them): the RPN's sampled anchors, the RoI heads' sampled proposals, their
    labels and matched boxes, the ground truth and the box coders."""

    anchors: torch.Tensor        # (B, Ka, 4)
    anchor_labels: torch.Tensor  # (B, Ka) 1 object, 0 background
    anchor_matched: torch.Tensor  # (B, Ka, 4)
    anchor_valid: torch.Tensor   # (B, Ka)
    proposals: torch.Tensor      # (B, Kr, 4)
    labels: torch.Tensor         # (B, Kr) class, 0 background
    matched: torch.Tensor        # (B, Kr, 4)
    valid: torch.Tensor          # (B, Kr)
    gt_boxes: List[torch.Tensor]  # per image (G, 4)
    gt_labels: List[torch.Tensor]
    rpn_covered: List[torch.Tensor]  # per image (G,) bool: a positive sampled anchor matches it
    roi_covered: List[torch.Tensor]
    rpn_coder: object
    roi_coder: object            # unit weights: the RoI deltas here are in the RPN's units
    roi_weights: torch.Tensor    # torchvision's RoI box coder weights (10, 10, 5, 5)
    mask_targets: Optional[torch.Tensor] = None  # (B, Kr, M, M), positives first


def build_probe(net: torch.nn.Module, images: List[torch.Tensor], targets: List[Dict[str, torch.Tensor]],
                ka: int, kr: int, masks: bool):
    """(outputs, ideal, DetTargets) of a torchvision Faster / Mask R-CNN `net` on `images`."""
    with torch.no_grad():
        images_t, targets_t = net.transform(images, targets)
        features = net.backbone(images_t.tensors)
        if isinstance(features, torch.Tensor):
            features = {"0": features}
        rpn, roi = net.rpn, net.roi_heads
        feats = list(features.values())
        objectness, deltas = rpn.head(feats)
        anchors = rpn.anchor_generator(images_t, feats)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        n = len(images)
        proposals = rpn.box_coder.decode(deltas, anchors).view(n, -1, 4)
        boxes, _ = rpn.filter_proposals(proposals, objectness, images_t.image_sizes, per_level)
        labels, matched = rpn.assign_targets_to_anchors(anchors, targets_t)
        pos, neg = rpn.fg_bg_sampler(labels)
        objectness, deltas = objectness.view(n, -1), deltas.view(n, -1, 4)
        picks = [torch.where(p | q)[0] for p, q in zip(pos, neg)]
        a_obj = _pad([objectness[b, i] for b, i in enumerate(picks)], ka)
        a_deltas = _pad([deltas[b, i] for b, i in enumerate(picks)], ka)
        a_anchors = _pad([anchors[b][i] for b, i in enumerate(picks)], ka)
        a_labels = _pad([labels[b][i] for b, i in enumerate(picks)], ka)
        a_matched = _pad([matched[b][i] for b, i in enumerate(picks)], ka)
        a_valid = _valid([len(i) for i in picks], ka)

        props, idxs, r_labels, _ = roi.select_training_samples(boxes, targets_t)
        feat = roi.box_head(roi.box_roi_pool(features, props, images_t.image_sizes))
        class_logits, box_regression = roi.box_predictor(feat)
        classes = class_logits.shape[1]
        sizes = [len(p) for p in props]
        class_logits = class_logits.split(sizes)
        weights = torch.tensor(roi.box_coder.weights, dtype=box_regression.dtype, device=box_regression.device)
        box_regression = (box_regression.reshape(sum(sizes), classes, 4) / weights).split(sizes)
        r_matched = [t["boxes"][i] for t, i in zip(targets_t, idxs)]
        gt_boxes = [t["boxes"] for t in targets_t]
        gt_labels = [t["labels"] for t in targets_t]
        rpn_cov = [_covered(g, m[lab > 0]) for g, m, lab in zip(gt_boxes, a_matched, a_labels)]
        roi_cov = [_covered(g, m[lab > 0]) for g, m, lab in zip(gt_boxes, r_matched, r_labels)]
        targets_out = DetTargets(
            anchors=a_anchors, anchor_labels=a_labels, anchor_matched=a_matched, anchor_valid=a_valid,
            proposals=_pad(props, kr), labels=_pad(r_labels, kr), matched=_pad(r_matched, kr),
            valid=_valid(sizes, kr), gt_boxes=gt_boxes, gt_labels=gt_labels, rpn_covered=rpn_cov,
            roi_covered=roi_cov, rpn_coder=rpn.box_coder, roi_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)),
            roi_weights=weights)
        outputs = {"cls_rpn": a_obj[:, :, None, None], "reg_rpn": a_deltas[:, :, None, :],
                   "cls_rcnn": _pad(list(class_logits), kr)[..., None], "reg_rcnn": _pad(list(box_regression), kr)}
        if masks:
            positive = [torch.where(lab > 0)[0] for lab in r_labels]
            pos_props = [p[i] for p, i in zip(props, positive)]
            mask_logits = roi.mask_predictor(roi.mask_head(roi.mask_roi_pool(features, pos_props,
                                                                             images_t.image_sizes)))
            m = mask_logits.shape[-1]
            mask_logits = mask_logits.split([len(i) for i in positive])
            rows, target_rows = [], []
            for b, i in enumerate(positive):
                cls = r_labels[b][i]
                rows.append(mask_logits[b][torch.arange(len(i)), cls])
                target_rows.append(project_masks_on_boxes(targets_t[b]["masks"], pos_props[b], idxs[b][i], m))
            # positives first, so that a proposal's mask sits at its own row
            order = [torch.cat([i, torch.where(lab == 0)[0]]) for i, lab in zip(positive, r_labels)]
            targets_out.proposals = _pad([p[o] for p, o in zip(props, order)], kr)
            targets_out.labels = _pad([lab[o] for lab, o in zip(r_labels, order)], kr)
            targets_out.matched = _pad([mt[o] for mt, o in zip(r_matched, order)], kr)
            outputs["cls_rcnn"] = _pad([c[o] for c, o in zip(class_logits, order)], kr)[..., None]
            outputs["reg_rcnn"] = _pad([r[o] for r, o in zip(box_regression, order)], kr)
            outputs["mask"] = _pad([torch.cat([r, r.new_zeros((kr - len(r), m, m))]) for r in rows], kr)
            targets_out.mask_targets = _pad([torch.cat([t, t.new_zeros((kr - len(t), m, m))])
                                             for t in target_rows], kr)
    ideal = ideal_outputs(outputs, targets_out)
    return outputs, ideal, targets_out


def _covered(gt: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
    """(G,) bool: which ground-truth boxes some positive sample was matched to."""
    if not len(gt) or not len(matched):
        return torch.zeros(len(gt), dtype=torch.bool)
    return (gt[:, None, :] == matched[None, :, :]).all(dim=2).any(dim=1)


def ideal_outputs(outputs: Dict[str, torch.Tensor], t: DetTargets) -> Dict[str, torch.Tensor]:
    """Outputs that reproduce the targets: logits ±10, deltas that decode to the matched boxes."""
    ideal = {"cls_rpn": (20.0 * t.anchor_labels.float() - 10.0)[:, :, None, None] * t.anchor_valid[:, :, None, None]}
    b, ka = t.anchor_labels.shape
    enc = t.rpn_coder.encode_single(t.anchor_matched.reshape(-1, 4), t.anchors.reshape(-1, 4)).reshape(b, ka, 4)
    ideal["reg_rpn"] = (enc * (t.anchor_labels > 0)[..., None])[:, :, None, :]
    classes = outputs["cls_rcnn"].shape[2]
    ideal["cls_rcnn"] = 10.0 * F.one_hot(t.labels, classes).float()[..., None] * t.valid[..., None, None]
    kr = t.labels.shape[1]
    enc = t.roi_coder.encode_single(t.matched.reshape(-1, 4), t.proposals.reshape(-1, 4)).reshape(b, kr, 1, 4)
    ideal["reg_rcnn"] = (enc * (t.labels > 0)[..., None, None]).expand(-1, -1, classes, -1).contiguous()
    if t.mask_targets is not None:
        ideal["mask"] = 20.0 * (t.mask_targets >= 0.5).float() - 10.0
    return ideal


def loss_inputs(branch: str, outputs: torch.Tensor, t: DetTargets) -> Dict[str, torch.Tensor]:
    """A branch's loss inputs from its (padded) outputs: the valid samples flattened, as the
    heads hand them over in training (tasks/det/heads.py), the box branches' with what
    torchvision's smooth L1 takes (its deltas, their targets, the number sampled)."""
    if branch == "cls_rpn":
        valid = t.anchor_valid
        return two_classes(outputs[:, :, 0, 0][valid], t.anchor_labels[valid].to(outputs.dtype))
    if branch == "reg_rpn":
        pos = t.anchor_valid & (t.anchor_labels > 0)
        deltas = outputs[:, :, 0, :][pos]
        boxes = t.rpn_coder.decode_single(deltas, t.anchors[pos])
        return {**box_inputs(boxes, t.anchor_matched[pos]), "deltas": deltas,
                "target_deltas": t.rpn_coder.encode_single(t.anchor_matched[pos], t.anchors[pos]),
                "sampled": t.anchor_valid.sum().to(outputs.dtype)}
    if branch == "cls_rcnn":
        valid = t.valid
        logits = outputs[:, :, :, 0][valid]
        y = F.one_hot(t.labels[valid], logits.shape[1]).to(logits.dtype)
        return {"yhat": logits.softmax(dim=1)[:, :, None, None], "y": y[:, :, None, None]}
    if branch == "reg_rcnn":
        pos = t.valid & (t.labels > 0)
        chosen = outputs[pos]  # (P, C, 4)
        deltas = chosen[torch.arange(len(chosen)), t.labels[pos]]
        boxes = t.roi_coder.decode_single(deltas, t.proposals[pos])
        return {**box_inputs(boxes, t.matched[pos]), "deltas": deltas * t.roi_weights,
                "target_deltas": t.roi_coder.encode_single(t.matched[pos], t.proposals[pos]) * t.roi_weights,
                "sampled": t.valid.sum().to(outputs.dtype)}
    if branch == "mask":
        pos = t.valid & (t.labels > 0)
        return two_classes(outputs[pos], t.mask_targets[pos])
    raise KeyError(branch)


def image_scores(outputs: Dict[str, torch.Tensor], t: DetTargets) -> torch.Tensor:
    """The per-image protocol metric (module docstring), shape (B,)."""
    scores = []
    for b in range(t.anchors.shape[0]):
        value = _rpn_ap(outputs, t, b) * _roi_ap(outputs, t, b)
        if "mask" in outputs and t.mask_targets is not None:
            value *= _mask_score(outputs, t, b)
        scores.append(value)
    return torch.tensor(scores, dtype=torch.float32)


def _rpn_ap(outputs, t: DetTargets, b: int) -> float:
    gt = t.gt_boxes[b][t.rpn_covered[b]]
    if not len(gt):
        return 1.0
    valid = t.anchor_valid[b]
    boxes = t.rpn_coder.decode_single(outputs["reg_rpn"][b, :, 0, :][valid].float(), t.anchors[b][valid])
    scores = outputs["cls_rpn"][b, :, 0, 0][valid].float().sigmoid()
    keep = nms(boxes, scores, RPN_NMS)
    return average_precision(boxes[keep], scores[keep], gt)


def _roi_ap(outputs, t: DetTargets, b: int) -> float:
    covered = t.roi_covered[b]
    gt, gt_labels = t.gt_boxes[b][covered], t.gt_labels[b][covered]
    if not len(gt):
        return 1.0
    valid = t.valid[b]
    probs = outputs["cls_rcnn"][b, :, :, 0][valid].float().softmax(dim=1)
    deltas = outputs["reg_rcnn"][b][valid].float()
    k, classes = probs.shape
    boxes = t.roi_coder.decode_single(deltas.reshape(-1, 4), t.proposals[b][valid].repeat_interleave(classes, 0))
    boxes = boxes.reshape(k, classes, 4)[:, 1:].reshape(-1, 4)
    scores = probs[:, 1:].reshape(-1)
    labels = torch.arange(1, classes).repeat(k)
    keep = scores > SCORE_THRESH
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, ROI_NMS)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    aps = []
    for c in sorted(set(gt_labels.tolist()) | set(labels.tolist())):
        here = gt[gt_labels == c]
        aps.append(average_precision(boxes[labels == c], scores[labels == c], here) if len(here) else 0.0)
    return float(np.mean(aps))


def _mask_score(outputs, t: DetTargets, b: int) -> float:
    pos = t.valid[b] & (t.labels[b] > 0)
    if not pos.any():
        return 1.0
    pred = outputs["mask"][b][pos] >= 0
    target = t.mask_targets[b][pos] >= 0.5
    inter = (pred & target).flatten(1).sum(1).double()
    union = (pred | target).flatten(1).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return float((iou[:, None] >= torch.from_numpy(THRESHOLDS)[None, :] - 1e-10).double().mean())
