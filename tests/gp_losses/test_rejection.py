"""Static checks, the loss-rejection protocol (Eq. 5-6) and gradient fingerprints on digits;
the monotone and unbounded checks on digits and on pose heatmaps."""

import math

import pytest
import torch

from gp_losses.config import ProtocolConfig
from gp_losses.rejection import (Protocol, falls_without_bound, one_sign, round_significant,
                                 static_reason)
from gp_losses.space import SearchSpace
from gp_losses.contract import Branch
from primitives import BOX_INPUTS
from tasks.cls import DigitsTask


@pytest.fixture(scope="module")
def protocol():
    task = DigitsTask()
    space = SearchSpace(task.branches)
    return Protocol(task, space.branches, space.operators, ProtocolConfig()), space


def check(protocol, expr, **cfg):
    proto, space = protocol
    if cfg:
        proto = Protocol(proto.task, proto.branches, proto.operators, ProtocolConfig(**cfg))
    return proto.check(0, space.parse({"cls": expr})[0])


@pytest.mark.parametrize("expr, reason", [
    ("one", "no_prediction"), ("Exp(MaxPool(one))", "no_prediction"),
    ("Square(Add(y, one))", "no_prediction"), ("Log(Square(yhat))", "no_target"),
])
def test_constant_and_one_sided_losses_are_rejected_without_optimization(protocol, expr, reason):
    result = check(protocol, expr)
    assert not result.passed and result.reason == reason
    assert result.steps == 0 and result.fingerprint == ()


@pytest.mark.parametrize("expr, reason", [
    ("Add(Log(yhat), y)", "no_interaction"),
    ("MeanC(Add(Neg(yhat), Square(y)))", "no_interaction"),
    ("Mul(Add(one, one), Add(yhat, y))", "no_interaction"),
    ("Add(Log(yhat), Mul(y, yhat))", None),
    ("MaxPool(Add(yhat, y))", None),
    ("Mul(Add(y, one), yhat)", None),
    ("Neg(Mul(y, Log(yhat)))", None),
])
def test_sums_of_terms_that_never_combine_prediction_and_target(protocol, expr, reason):
    _, space = protocol
    assert static_reason(space.parse({"cls": expr})[0], space.branches[0]) == reason
    if reason:  # and the full protocol, run anyway, agrees: such a loss does not pass
        proto, _ = protocol
        full = Protocol(proto.task, proto.branches, proto.operators, ProtocolConfig(early_exit=False))
        assert not full.check(0, space.parse({"cls": expr})[0], static=False).passed


def test_static_reason_for_box_inputs():
    space = SearchSpace((Branch("reg", BOX_INPUTS),))
    assert static_reason(space.parse("Log(Mul(i, Inv(u)))")[0], space.branches[0]) is None
    assert static_reason(space.parse("Log(one)")[0], space.branches[0]) == "no_prediction"


def test_cross_entropy_passes_and_its_negation_is_rejected(protocol):
    ce = check(protocol, "Neg(Mul(y, Log(yhat)))")
    assert ce.passed and ce.gain >= 0.6 and ce.reason is None
    neg = check(protocol, "Mul(y, Log(yhat))")
    assert not neg.passed and neg.reason == "low_gain" and neg.gain < 0.6
    assert neg.steps == 500  # a rejection runs the full schedule


def test_early_exit_agrees_with_the_full_schedule_and_saves_steps(protocol):
    decisions = {}
    for expr in ("Neg(Mul(y, Log(yhat)))", "Square(Add(yhat, Neg(y)))", "Mul(y, yhat)", "Neg(Mul(y, yhat))"):
        full = check(protocol, expr, early_exit=False)
        fast = check(protocol, expr, early_exit=True, check_every=25)
        assert fast.passed == full.passed, expr
        decisions[expr] = full.passed
        if full.passed:  # an accepted candidate stops at the first check where the gain reached eta
            assert fast.steps < full.steps and fast.steps % 25 == 0 and fast.gain >= 0.6, expr
        else:  # a rejected one runs the whole schedule either way
            assert fast.steps == full.steps, expr
    assert decisions["Neg(Mul(y, Log(yhat)))"] and not decisions["Mul(y, yhat)"]  # both kinds met


def test_non_finite_loss_is_rejected_at_once(protocol):
    result = check(protocol, "Mul(Exp(Exp(Exp(Exp(Add(one, one))))), Mul(y, yhat))")  # inf
    assert not result.passed and result.reason == "nonfinite" and result.steps == 0


def test_zero_gradient_is_rejected_at_step_zero(protocol):
    result = check(protocol, "Mul(y, Add(yhat, Neg(yhat)))")
    assert not result.passed and result.reason == "zero_grad" and result.steps == 1


def test_equivalent_losses_share_a_fingerprint(protocol):
    a = check(protocol, "Add(Mul(y, yhat), Mul(y, yhat))")
    b = check(protocol, "Mul(Add(y, y), yhat)")
    c = check(protocol, "Mul(y, yhat)")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 5
    assert a.fingerprint != c.fingerprint


def test_fingerprint_only_mode_does_not_optimize(protocol):
    proto, space = protocol
    result = proto.check(0, space.parse({"cls": "Mul(y, Log(yhat))"})[0], optimize=False)
    assert result.passed and result.steps == 1 and len(result.fingerprint) == 5


@pytest.mark.parametrize("value, rounded", [(0.123456, 0.12), (987.6, 990.0), (0.0, 0.0),
                                            (1.04e-7, 1.0e-7), (-2.349, -2.3)])
def test_two_significant_digits(value, rounded):
    assert round_significant(value) == pytest.approx(rounded, rel=1e-12)


@pytest.mark.parametrize("values, falling", [
    ([-10.0, -100.0, -1000.0], True),            # linear descent to -inf
    ([-2.3, -4.6, -6.9], True),                  # logarithmic descent
    ([-3.16, -10.0, -31.6], True),               # square-root descent
    ([5.0, -math.inf, -math.inf], True),         # reaches -inf
    ([0.1, 0.01, 0.001], False),                 # 1/k: levels off at 0
    ([1.0, 1.0, 1.0], False),                    # flat (saturated)
    ([1e2, 1e4, 1e6], False),                    # rising (mse along its overshoot)
    ([1.0, math.inf, math.inf], False),          # rises to +inf
    ([1.0, math.nan, -5.0], False),              # NaN decides nothing
    ([-4.0, -6.0, -6.0000001], False),           # a last drop lost in rounding
])
def test_falls_without_bound(values, falling):
    assert falls_without_bound(values) is falling


def test_one_sign():
    assert one_sign(torch.tensor([0.0, 2.0, 1e-9])) == 1
    assert one_sign(torch.tensor([[-1.0, 0.0], [-3.0, -0.5]])) == -1
    assert one_sign(torch.tensor([-1.0, 1.0])) == 0
    assert one_sign(torch.zeros(3)) == 0


def test_softmax_losses_are_never_monotone_and_ce_is_bounded(protocol):
    """On digits the prediction is a softmax: its gradient sums to 0 over classes, so it always
    has both signs, and cross-entropy levels off at 0 along its direction."""
    for expr in ("Neg(Mul(y, Log(yhat)))", "Square(Add(yhat, Neg(y)))", "Inv(Mul(yhat, y))"):
        result = check(protocol, expr)
        assert result.passed and result.reason is None, expr


@pytest.fixture(scope="module")
def pose_protocol(tiny_pose):
    space = SearchSpace(tiny_pose.branches)

    def run(expr, **cfg):
        proto = Protocol(tiny_pose, space.branches, space.operators,
                         ProtocolConfig(lr=5e-3, steps=100, **cfg))
        return proto.check(0, space.parse(expr)[0])
    return run


@pytest.mark.parametrize("expr", [
    "Square(Add(yhat, Neg(y)))",                                                       # mse
    "Add(Square(Add(yhat, Neg(Square(Square(Add(y, y)))))), Square(Square(yhat)))",  # Table 8
    "Add(Exp(yhat), Neg(Mul(y, yhat)))",                                               # Poisson
])
def test_heatmap_losses_with_a_minimum_pass(pose_protocol, expr):
    result = pose_protocol(expr)
    assert result.passed and result.reason is None and result.gain >= 0.6


@pytest.mark.parametrize("expr, reason", [
    ("Mul(Exp(y), Neg(Add(yhat, y)))", "monotone"),          # -e^y (yhat + y): all pushed up
    ("Tanh(Add(Exp(yhat), y))", "monotone"),                 # all pushed down, ever slower
    ("Inv(MeanNHW(Mul(y, yhat)))", "monotone"),              # peaks up, background ignored
    ("Mul(Square(Add(y, yhat)), Neg(Exp(one)))", "unbounded"),  # concave: -e (y + yhat)^2
])
def test_heatmap_losses_without_a_minimum_pass_the_paper_protocol_only(pose_protocol, expr, reason):
    paper = pose_protocol(expr, reject_monotone=False, reject_unbounded=False)
    assert paper.passed and paper.gain >= 0.6, expr
    result = pose_protocol(expr)
    assert not result.passed and result.reason == reason and result.gain == paper.gain


def test_a_metric_that_is_not_a_number_never_passes():
    """A task whose probe metric is NaN: the gain is NaN, which `g < eta` would let through."""
    from toy_tasks import FaultyDigits

    task = FaultyDigits(FaultyDigits.Options(probe_nan=True))
    space = SearchSpace(task.branches)
    for early_exit in (True, False):
        proto = Protocol(task, space.branches, space.operators, ProtocolConfig(early_exit=early_exit))
        result = proto.check(0, space.parse(dict(DigitsTask.baselines["ce"]))[0])
        assert not result.passed and result.reason == "nonfinite" and result.gain is None
