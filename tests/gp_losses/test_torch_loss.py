"""Compiled losses against torch.nn.functional (Eq. 3) and the weighted branch sum (Eq. 4)."""

import pytest
import torch
import torch.nn.functional as F

from gp_losses.core.errors import InputError
from gp_losses.space import SearchSpace
from gp_losses.torch_loss import reduce_output
from gp_losses.contract import Branch
from primitives import BOX_INPUTS


def _softmax_onehot(seed, n=3, c=5, h=4, w=6):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, c, (n, h, w), generator=gen)
    onehot = F.one_hot(labels, c).permute(0, 3, 1, 2).to(torch.float64)
    return logits, labels, onehot


@pytest.mark.parametrize("seed", range(5))
def test_tree_cross_entropy_equals_torch_cross_entropy(space, seed):
    logits, labels, onehot = _softmax_onehot(seed)
    loss = space.compile(space.parse("Neg(Mul(y, Log(yhat)))"))
    got = loss({"loss": {"yhat": logits.softmax(1), "y": onehot}})
    want = F.cross_entropy(logits, labels)  # sum over C, mean over N, H, W
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_cross_entropy_in_float32_to_1e6(space):
    logits, labels, onehot = _softmax_onehot(0)
    logits, onehot = logits.float(), onehot.float()
    loss = space.compile(space.parse("Neg(Mul(y, Log(yhat)))"))
    got = loss({"loss": {"yhat": logits.softmax(1), "y": onehot}})
    assert abs(got.item() - F.cross_entropy(logits, labels).item()) < 1e-6


def test_gradient_matches_torch_cross_entropy(space):
    logits, labels, onehot = _softmax_onehot(1)
    logits.requires_grad_()
    loss = space.compile(space.parse("Neg(Mul(y, Log(yhat)))"))
    (g1,) = torch.autograd.grad(loss({"loss": {"yhat": logits.softmax(1), "y": onehot}}), logits)
    (g2,) = torch.autograd.grad(F.cross_entropy(logits, labels), logits)
    assert torch.allclose(g1, g2, atol=1e-9)


def test_squared_error_tree_and_sum_reduction(space):
    gen = torch.Generator().manual_seed(0)
    yhat, y = torch.rand(2, 3, 4, 4, generator=gen), torch.rand(2, 3, 4, 4, generator=gen)
    loss = space.compile(space.parse("Square(Add(yhat, Neg(y)))"))
    values = {"yhat": yhat, "y": y}
    sse = F.mse_loss(yhat, y, reduction="sum")
    assert torch.allclose(loss.branch(0, values, "sum"), sse)
    assert torch.allclose(loss.branch(0, values), sse / (2 * 4 * 4))  # no normalization over C


def test_constant_input_one_is_a_full_tensor(space):
    yhat = torch.rand(2, 3, 4, 5)
    loss = space.compile(space.parse("Add(one, Mul(yhat, Neg(yhat)))"))
    o = loss.outputs[0]({"yhat": yhat, "y": yhat})
    assert o.shape == yhat.shape
    assert torch.allclose(o, 1 - yhat * yhat)
    const = space.compile(space.parse("MaxPool(one)"))
    assert const({"loss": {"yhat": yhat, "y": yhat}}).item() == pytest.approx(3.0)


def test_multi_branch_loss_is_the_weighted_sum():
    space = SearchSpace((Branch("cls"), Branch("reg", BOX_INPUTS, weight=10.0)))
    loss = space.compile(space.parse({"cls": "Neg(Mul(y, Log(yhat)))", "reg": "Neg(Log(Mul(i, Inv(u))))"}))
    gen = torch.Generator().manual_seed(0)
    cls = {"yhat": torch.rand(2, 3, 1, 1, generator=gen) + 0.1, "y": torch.rand(2, 3, 1, 1, generator=gen)}
    i = torch.rand(4, 1, 1, 1, generator=gen) + 0.1
    reg = {"i": i, "u": i + 1, "e": i + 2}
    total = loss({"cls": cls, "reg": reg})
    want = (-(cls["y"] * cls["yhat"].log()).sum() / 2) + 10.0 * (-(i / (i + 1)).log()).sum() / 4
    assert torch.allclose(total, want, atol=1e-5)


def test_missing_input_and_bad_shape_are_clear(space):
    loss = space.compile(space.parse("Mul(y, yhat)"))
    with pytest.raises(InputError, match="'y' was not given"):
        loss.outputs[0]({"yhat": torch.rand(1, 2, 3, 3)})
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        reduce_output(torch.rand(3, 3))


def test_fixed_inputs_fold_target_subtrees_without_changing_the_value(space):
    from gp_losses.torch_loss import compile_tree

    gen = torch.Generator().manual_seed(0)
    yhat, y = torch.rand(2, 3, 4, 4, generator=gen), torch.rand(2, 3, 4, 4, generator=gen)
    inputs = space.branches[0].inputs
    for expr in ["Mul(Exp(MaxPool(Add(y, one))), Log(yhat))", "Add(Square(y), Tanh(one))",
                 "Neg(Mul(y, Log(yhat)))", "Mul(MeanNHW(y), Mul(yhat, Inv(Add(y, one))))"]:
        (tree,) = space.parse(expr)
        plain = compile_tree(tree, space.operators, inputs)({"yhat": yhat, "y": y})
        folded = compile_tree(tree, space.operators, inputs, fixed={"y": y})({"yhat": yhat, "y": y})
        assert torch.equal(plain, folded), expr
