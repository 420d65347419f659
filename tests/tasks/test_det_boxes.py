"""Box-regression loss inputs: i, u, e of hand-made pairs, and the paper's Table 8 box loss and
GIoU written as trees against their closed forms (GIoU against torchvision's own)."""

import math

import pytest
import torch
from torchvision.ops import generalized_box_iou_loss

from gp_losses.space import SearchSpace
from gp_losses.contract import Branch
from primitives import BOX_INPUTS
from tasks.det.boxes import box_inputs

PAIRS = {  # name: (predicted box, target box, (i, u, e)) worked by hand
    "identical": ([0, 0, 2, 2], [0, 0, 2, 2], (4, 4, 4)),
    "disjoint": ([0, 0, 1, 1], [2, 2, 3, 3], (0, 2, 9)),
    "nested": ([1, 1, 2, 2], [0, 0, 4, 4], (1, 16, 16)),
    "partial": ([0, 0, 2, 2], [1, 1, 3, 3], (1, 7, 9)),
    "touching": ([0, 0, 2, 1], [2, 0, 3, 1], (0, 3, 3)),
    "offset": ([0.5, 0, 2.5, 3], [1, 1, 4, 2], (1.5, 7.5, 10.5)),
}


def _boxes(names):
    pred = torch.tensor([PAIRS[n][0] for n in names], dtype=torch.float64)
    target = torch.tensor([PAIRS[n][1] for n in names], dtype=torch.float64)
    return pred, target


def test_i_u_e_of_hand_made_pairs():
    names = list(PAIRS)
    inputs = box_inputs(*_boxes(names))
    assert all(t.shape == (len(names), 1, 1, 1) for t in inputs.values())
    for k, name in enumerate(names):
        got = tuple(inputs[key][k].item() for key in "iue")
        assert got == pytest.approx(PAIRS[name][2], abs=1e-12), name


def test_bad_box_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        box_inputs(torch.zeros(3, 4), torch.zeros(2, 4))


@pytest.fixture
def box_space():
    return SearchSpace((Branch("reg", BOX_INPUTS),))


def test_giou_as_a_tree_is_torchvisions_giou_loss(box_space):
    names = list(PAIRS)
    pred, target = _boxes(names)
    tree = box_space.parse("Add(Add(one, Neg(Mul(i, Inv(u)))), Mul(Add(e, Neg(u)), Inv(e)))")
    loss = box_space.compile(tree)
    per_pair = loss.outputs[0](box_inputs(pred, target)).flatten()
    reference = generalized_box_iou_loss(pred, target, reduction="none", eps=0.0)
    assert torch.allclose(per_pair, reference, atol=1e-9)
    # reduced as every branch loss is (Eq. 3): the mean over the pairs
    assert loss({"reg": box_inputs(pred, target)}).item() == pytest.approx(reference.mean().item(), abs=1e-9)


def test_the_papers_det_regrcnn_loss_is_minus_log_i_over_e(box_space):
    """Table 8, Det, RegRCNN: -log(i / e). Log is signed, sign(x)·log(|x| + 1e-12), so a
    disjoint pair (i = 0) costs 0 here, where the paper's log(x + 1e-12) costs 27.6; i has
    no gradient there either way."""
    names = [n for n in PAIRS if PAIRS[n][2][0] > 0]
    pred, target = _boxes(names)
    loss = box_space.compile(box_space.parse("Neg(Log(Mul(i, Inv(e))))"))
    per_pair = loss.outputs[0](box_inputs(pred, target)).flatten()
    closed = torch.tensor([-math.log(PAIRS[n][2][0] / PAIRS[n][2][2]) for n in names], dtype=torch.float64)
    assert torch.allclose(per_pair, closed, atol=1e-9)
    disjoint = loss.outputs[0](box_inputs(*_boxes(["disjoint"]))).item()
    assert disjoint == 0.0
