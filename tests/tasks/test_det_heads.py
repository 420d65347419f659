"""The extension point: torchvision's Faster R-CNN and Mask R-CNN with their losses handed to a
loss object. `ce_l1` (cross-entropy trees and torchvision's smooth L1) through it gives the
values torchvision's own losses give on the same batch; searched trees train through it."""

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from gp_losses.space import SearchSpace
from tasks.det.data import CocoDetection, collate
from tasks.det.heads import BRANCHES, MASK_BRANCH, BranchLosses, smooth_l1, use_losses
from tasks.det.synthetic import ensure_dataset

CE = "Neg(Mul(y, Log(yhat)))"
CE_L1 = {"cls_rpn": CE, "reg_rpn": "smooth_l1", "cls_rcnn": CE, "reg_rcnn": "smooth_l1", "mask": CE}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = ensure_dataset(tmp_path_factory.mktemp("det-heads") / "coco", {"train": 3, "val": 1, "test": 1}, 0, 64)
    data = CocoDetection(root, "train", masks=True)
    return collate([data[i] for i in range(3)])


def _model(masks: bool):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
    backbone.out_channels = 16
    common = dict(num_classes=6, min_size=64, max_size=64,
                  rpn_anchor_generator=AnchorGenerator(((8, 16, 32),), ((0.5, 1.0, 2.0),)),
                  box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), rpn_batch_size_per_image=64,
                  box_batch_size_per_image=32)
    if masks:
        return MaskRCNN(backbone, mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2), **common)
    return FasterRCNN(backbone, **common)


def _space(masks: bool):
    branches = BRANCHES + ((MASK_BRANCH,) if masks else ())
    return SearchSpace(branches, python_losses={"reg_rpn": {"smooth_l1": smooth_l1},
                                                "reg_rcnn": {"smooth_l1": smooth_l1}})


@pytest.mark.parametrize("masks", [False, True], ids=["faster", "mask"])
def test_ce_l1_through_the_extension_point_is_torchvisions_own_loss(batch, masks):
    images, targets = batch
    model = _model(masks).train()
    torch.manual_seed(1)
    stock = model(images, targets)
    space = _space(masks)
    exprs = {b.name: CE_L1[b.name] for b in space.branches}
    use_losses(model, BranchLosses(space.compile(space.parse(exprs))))
    torch.manual_seed(1)
    ours = model(images, targets)
    assert set(ours) == set(stock) == ({"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
                                       | ({"loss_mask"} if masks else set()))
    for key, value in stock.items():
        assert ours[key].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-7), key
    assert stock["loss_rpn_box_reg"].item() > 0 and stock["loss_box_reg"].item() > 0  # positives were there
    sum(ours.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_searched_trees_train_through_it(batch):
    """The paper's Table 8 Ins losses on every branch (weights 1 and 10): finite losses, and a
    few SGD steps lower their total on the batch."""
    images, targets = batch
    model = _model(True).train()
    space = _space(True)
    table8 = {"cls_rpn": "Neg(Mul(Mul(y, yhat), Inv(Tanh(yhat))))", "reg_rpn": "Mul(e, Inv(Add(i, u)))",
              "cls_rcnn": CE, "reg_rcnn": "Neg(Mul(Sqrt(i), Inv(Sqrt(e))))", "mask": "Abs(Log(Mul(y, yhat)))"}
    use_losses(model, BranchLosses(space.compile(space.parse(table8))))
    optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    totals = []
    for step in range(6):
        torch.manual_seed(step)
        losses = model(images, targets)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        total = sum(losses.values())
        optim.zero_grad()
        total.backward()
        optim.step()
        totals.append(total.item())
    assert min(totals[3:]) < totals[0]


def test_an_exported_loss_drops_into_a_torchvision_model(batch):
    """`gp-losses export`'s module for the paper's Table 8 Ins losses, given to use_losses as
    `criterion.branch_loss`, makes the same five loss values as the compiled trees (the box
    branches' extra inputs, deltas and the like, are ignored)."""
    from gp_losses.export import load_source, to_source

    images, targets = batch
    space = _space(True)
    table8 = {"cls_rpn": "Neg(Mul(Mul(y, yhat), Inv(Tanh(yhat))))", "reg_rpn": "Mul(e, Inv(Add(i, u)))",
              "cls_rcnn": CE, "reg_rcnn": "Neg(Mul(Sqrt(i), Inv(Sqrt(e))))", "mask": "Abs(Log(Mul(y, yhat)))"}
    loss = space.parse(table8)
    criterion = load_source(to_source(space, loss)).FoundLoss()
    values = []
    for branch_loss in (BranchLosses(space.compile(loss)), criterion.branch_loss):
        model = use_losses(_model(True).train(), branch_loss)
        torch.manual_seed(1)
        values.append({k: v.item() for k, v in model(images, targets).items()})
    assert values[0].keys() == values[1].keys() and len(values[0]) == 5
    for key, value in values[0].items():
        assert values[1][key] == pytest.approx(value, rel=1e-6), key
