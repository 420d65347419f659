"""Every Table 1 operator against an independent numpy formula, at zero and negative inputs."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from primitives import EPS, TABLE1

EPS64 = EPS


def _pool(x: np.ndarray, reduce) -> np.ndarray:
    """3x3 window, stride 1, padding 1; padded cells are ignored."""
    n, c, h, w = x.shape
    out = np.empty_like(x)
    for i in range(h):
        for j in range(w):
            window = x[:, :, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
            out[:, :, i, j] = reduce(window, axis=(2, 3))
    return out


REFERENCE = {
    "Add": lambda x, y: x + y,
    "Mul": lambda x, y: x * y,
    "Neg": lambda x: -x,
    "Abs": np.abs,
    "Inv": lambda x: 1.0 / (x + EPS64),
    "Log": lambda x: np.sign(x) * np.log(np.abs(x) + EPS64),
    "Exp": np.exp,
    "Tanh": np.tanh,
    "Square": lambda x: x * x,
    "Sqrt": lambda x: np.sign(x) * np.sqrt(np.abs(x) + EPS64),
    "MeanNHW": lambda x: np.broadcast_to(x.mean(axis=(0, 2, 3), keepdims=True), x.shape),
    "MeanC": lambda x: np.broadcast_to(x.mean(axis=1, keepdims=True), x.shape),
    "MaxPool": lambda x: _pool(x, np.max),
    "MinPool": lambda x: _pool(x, np.min),
}

BY_NAME = {p.name: p for p in TABLE1}


def test_table1_has_the_papers_14_operators():
    assert [p.name for p in TABLE1] == list(REFERENCE)
    assert {p.name: p.arity for p in TABLE1} == {n: (2 if n in ("Add", "Mul") else 1) for n in REFERENCE}


def _shapes():
    return st.tuples(*(st.integers(1, 4) for _ in range(4)))


# Values include exact zeros and negatives; |x| <= 20 keeps Exp finite in float64.
_values = st.one_of(st.just(0.0), st.just(-1.0), st.floats(-20, 20, allow_nan=False, width=64))


@pytest.mark.parametrize("name", list(REFERENCE))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_operator_matches_formula(name, data):
    prim = BY_NAME[name]
    shape = data.draw(_shapes())
    xs = [data.draw(arrays(np.float64, shape, elements=_values)) for _ in range(prim.arity)]
    got = prim.torch_fn(*(torch.from_numpy(x) for x in xs)).numpy()
    want = REFERENCE[name](*xs)
    assert got.shape == shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_operator_at_zero_and_negative_values_has_finite_gradient(name):
    prim = BY_NAME[name]
    x = torch.tensor([0.0, -2.5, 3.0, -1e-3, 1e-3, 0.0, -7.0, 2.0, 0.5], dtype=torch.float64)
    x = x.reshape(1, 1, 3, 3).requires_grad_()
    out = prim.torch_fn(*([x] * prim.arity))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()


def test_signed_log_and_sqrt_are_odd_and_epsilon_guards_zero():
    x = torch.tensor([-4.0, 0.0, 4.0], dtype=torch.float64).reshape(1, 1, 1, 3)
    log = BY_NAME["Log"].torch_fn(x).flatten().tolist()
    sqrt = BY_NAME["Sqrt"].torch_fn(x).flatten().tolist()
    assert log[0] == pytest.approx(-np.log(4.0)) and log[1] == 0.0 and log[2] == pytest.approx(np.log(4.0))
    assert sqrt == pytest.approx([-2.0, 0.0, 2.0])
    assert BY_NAME["Inv"].torch_fn(torch.zeros(1, 1, 1, 1, dtype=torch.float64)).item() == pytest.approx(1e12)


def test_min_pool_ignores_padding():
    """All-positive input: a padded zero must never be the minimum at the border."""
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    out = BY_NAME["MinPool"].torch_fn(x)
    assert out[0, 0, 0, 0].item() == 1.0 and out[0, 0, 2, 2].item() == 5.0
    out = BY_NAME["MaxPool"].torch_fn(-x)
    assert out[0, 0, 2, 2].item() == -5.0


def test_every_table1_operator_passes_the_check_user_operators_get():
    """operator_set() skips the check for Table 1 (every process builds one); here it runs."""
    from primitives.opset import check_primitive

    for prim in TABLE1:
        check_primitive(prim)
