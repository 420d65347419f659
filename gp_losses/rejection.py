"""Static checks, the loss-rejection protocol (paper Eq. 5-6) and gradient fingerprints.

For one branch tree, in order, stopping at the first decision:
1. static: a loss that uses no input depending on the prediction has a zero gradient; one
   that uses no input depending on the target, or that is a sum of terms none of which uses
   both, has a gradient that ignores the target. Rejected without running.
2. the protocol: the B probe outputs of the branch are optimized directly with the candidate
   (SGD with momentum, summed loss, Appendix A); the other branches sit at their targets.
   g = mean over samples of metric(after) - metric(before); reject if g < eta. With
   `relative_gain` (not in the paper), g is divided by the mean of 1 - metric(before).
   Exact early decisions: a non-finite loss rejects at once (a non-finite gradient makes the
   next loss or the outputs non-finite; the outputs are checked at every gain check and at
   the end); an all-zero gradient at step 0 rejects (nothing can move). With `early_exit`, a check every
   `check_every` steps accepts as soon as g >= eta (measured against the full schedule in
   bench/rejection.py); with `reject_step` > 0, a gain still below `reject_gain` at that step
   rejects (measured in bench/protocol_steps.py). Both are heuristics, off by default.
   Not in the paper, on by default: a candidate whose gain reached eta is still rejected as
   'monotone' when its gradient has one sign at every probe entry at step 0 and at the last
   step, or as 'unbounded' when its loss keeps falling along the direction the protocol
   moved the outputs (falls_without_bound). Neither has a minimum a network can settle at
   (docs/engine.md).
3. the fingerprint (section 3.2): the B gradient norms at the probe outputs, each rounded to
   two significant digits, taken at step 0 of the protocol.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch

from gp_losses.config import ProtocolConfig
from gp_losses.outcomes import ProtocolResult
from gp_losses.pareto import Objective
from gp_losses.contract import Branch
from gp_losses.torch_loss import compile_tree
from gp_losses.trees import LossTree
from primitives import OperatorSet

LINEAR = frozenset({"Add", "Neg", "MeanNHW", "MeanC"})
"""Table 1 operators that are linear: a loss built from them splits into a sum of terms."""


def _terms(tree: LossTree, index: int, variables: frozenset) -> list:
    """Input-name sets of the terms whose sum the subtree at `index` is, splitting it through
    linear operators and through Mul by a constant subtree."""
    node = tree[index]
    if node.name in LINEAR:
        return [t for child in tree.children(index) for t in _terms(tree, child.start, variables)]
    if node.name == "Mul":
        left, right = tree.children(index)
        used = [frozenset(n.name for n in tree[s] if n.arity == 0) & variables for s in (left, right)]
        if not used[0]:
            return _terms(tree, right.start, variables)
        if not used[1]:
            return _terms(tree, left.start, variables)
    return [frozenset(n.name for n in tree[tree.searchSubtree(index)] if n.arity == 0) & variables]


def static_reason(tree: LossTree, branch: Branch) -> Optional[str]:
    """Why the tree cannot work, decided without running it; None if it may.

    'no_prediction' / 'no_target': no input depends on the prediction (zero gradient) or on
    the target. 'no_interaction': the loss is a sum of terms, none of which uses both, so its
    gradient with respect to the prediction ignores the target (e.g. Add(Log(yhat), y)).
    """
    used = [t for t in branch.inputs if t.name in tree.input_names()]
    if not any(t.prediction for t in used):
        return "no_prediction"
    if not any(t.target for t in used):
        return "no_target"
    by_name = {t.name: t for t in branch.inputs}
    variables = frozenset(t.name for t in branch.inputs if t.constant is None)
    for term in _terms(tree, 0, variables):
        kinds = [by_name[name] for name in term]
        if any(t.prediction for t in kinds) and any(t.target for t in kinds):
            return None
    return "no_interaction"


RAY = (10.0, 100.0, 1000.0)
"""Multiples of the protocol's displacement at which the unbounded check evaluates the loss."""


def falls_without_bound(values) -> bool:
    """Whether losses measured at z + k d, k = RAY, keep falling: -inf anywhere, or a drop over
    the last decade at least half the drop over the one before (a curve that levels off, such
    as 1/k or exp(-k), drops ten times less or more). NaN decides nothing (False)."""
    if any(math.isnan(v) for v in values):
        return False
    if any(v == -math.inf for v in values):
        return True
    if any(math.isinf(v) for v in values):
        return False
    first, last = values[0] - values[1], values[1] - values[2]
    scale = max(abs(v) for v in values)
    return first > 0 and last > 1e-6 * scale and last >= 0.5 * first


def one_sign(grad: torch.Tensor) -> int:
    """+1 or -1 if every nonzero entry of `grad` has that sign, else 0 (mixed, or all zero)."""
    positive, negative = bool((grad > 0).any()), bool((grad < 0).any())
    return 0 if positive == negative else (1 if positive else -1)


def round_significant(value: float, digits: int = 2) -> float:
    """`value` rounded to `digits` significant digits (0 stays 0)."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits - 1}e}")


@dataclass
class Protocol:
    """The rejection protocol of one task, on its B probe samples (built once per worker)."""

    task: object
    branches: Tuple[Branch, ...]
    operators: OperatorSet
    config: ProtocolConfig
    objectives: Tuple[Objective, ...] = ()
    """A Pareto search's objectives (search.objectives): the gain is the largest over them."""
    _base: Dict[Tuple[int, str], torch.Tensor] = field(default_factory=dict, init=False)
    _fixed: Dict[int, Dict[str, torch.Tensor]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.probe = self.task.probe(self.config.samples, self.config.seed)

    def _outputs_with(self, index: int, z: torch.Tensor) -> Dict[str, torch.Tensor]:
        """All branches at their targets (`ideal`; those not searched too), except branch
        `index` at z."""
        name = self.branches[index].name
        outputs = dict(self.probe.ideal)
        outputs[name] = z
        return outputs

    def _fixed_inputs(self, index: int) -> Dict[str, torch.Tensor]:
        """The branch's inputs that do not depend on the prediction (computed once per probe):
        subtrees over them are folded into constants when a candidate is compiled."""
        if index not in self._fixed:
            branch = self.branches[index]
            values = self.task.loss_inputs(branch.name, self.probe.outputs[branch.name],
                                           self.probe.targets[branch.name])
            self._fixed[index] = {t.name: values[t.name].detach() for t in branch.inputs
                                  if not t.prediction and t.constant is None and t.name in values}
        return self._fixed[index]

    def _metric(self, index: int, z: torch.Tensor, objective: Optional[Objective] = None) -> torch.Tensor:
        """The per-sample metric at z: the task's, or `objective`'s (the task scoring that
        metric for the call), as higher-is-better (1 - m for one to minimize)."""
        if objective is None:
            with torch.no_grad():
                return self.task.probe_metric(self._outputs_with(index, z), self.probe.targets)
        own = self.task.metric
        self.task.metric = objective.metric
        try:
            with torch.no_grad():
                values = self.task.probe_metric(self._outputs_with(index, z), self.probe.targets)
        finally:
            self.task.metric = own
        return values if objective.weight > 0 else 1 - values

    def gain(self, index: int, z: torch.Tensor) -> float:
        """Eq. 5: mean over probe samples of metric(z) - metric(initial outputs); with
        `relative_gain`, divided by the mean room left, 1 - metric(initial outputs) (0 where
        there is none: a branch whose probe is already perfect teaches nothing). With several
        objectives, the largest of their gains: a candidate passes when it improves one of
        them by eta."""
        if not self.objectives:
            return self._gain(index, z, None)
        gains = [self._gain(index, z, objective) for objective in self.objectives]
        return max(gains) if all(math.isfinite(g) for g in gains) else math.nan  # NaN: not a number, rejected

    def _gain(self, index: int, z: torch.Tensor, objective: Optional[Objective]) -> float:
        key = (index, objective.metric if objective else "")
        if key not in self._base:
            self._base[key] = self._metric(index, self.probe.outputs[self.branches[index].name], objective)
        base = self._base[key].double()
        gain = float((self._metric(index, z, objective).double() - base).mean())
        if self.config.relative_gain:
            room = float((1 - base).mean())
            return gain / room if room > 1e-9 else 0.0
        return gain

    def check(self, index: int, tree: LossTree, optimize: bool = True,
              static: bool = True) -> ProtocolResult:
        """Run the protocol for branch `index`; with `optimize=False` only the fingerprint
        (one gradient) is computed and the candidate passes unless that gradient is bad;
        `static=False` skips the static checks (to measure them against the protocol)."""
        start = time.perf_counter()
        result = self._check(index, tree, optimize, static)
        return dataclasses.replace(result, seconds=time.perf_counter() - start)

    def _check(self, index: int, tree: LossTree, optimize: bool, static: bool) -> ProtocolResult:
        cfg, branch = self.config, self.branches[index]
        if optimize and static:
            reason = static_reason(tree, branch)
            if reason:
                return ProtocolResult(False, reason)
        targets = self.probe.targets[branch.name]
        z = self.probe.outputs[branch.name].detach().clone().requires_grad_(True)
        output = compile_tree(tree, self.operators, branch.inputs, self._fixed_inputs(index))
        sgd = torch.optim.SGD([z], lr=cfg.lr, momentum=cfg.momentum)
        fingerprint: Tuple[float, ...] = ()
        steps = cfg.steps if optimize else 1
        for step in range(steps):
            loss = output(self.task.loss_inputs(branch.name, z, targets)).sum()
            if not torch.isfinite(loss):
                return ProtocolResult(False, "nonfinite", None, fingerprint, step)
            if not loss.requires_grad:  # nothing in it depends on the prediction
                return ProtocolResult(False, "zero_grad", 0.0, fingerprint, step)
            sgd.zero_grad()
            loss.backward()
            grad = z.grad
            if step == 0:
                if not torch.isfinite(grad).all():
                    return ProtocolResult(False, "nonfinite", None, fingerprint, step)
                norms = grad.flatten(1).norm(dim=1).tolist()
                fingerprint = tuple(round_significant(v) for v in norms)
                if not grad.any():
                    return ProtocolResult(False, "zero_grad", 0.0, fingerprint, 1)
                first_sign = one_sign(grad)
                if not optimize:
                    return ProtocolResult(True, None, None, fingerprint, 1)
            sgd.step()
            if step + 1 == cfg.reject_step and step + 1 < steps:
                if not torch.isfinite(z).all():
                    return ProtocolResult(False, "nonfinite", None, fingerprint, step + 1)
                g = self.gain(index, z)
                if g < cfg.reject_gain:
                    return ProtocolResult(False, "low_gain", g, fingerprint, step + 1)
            if cfg.early_exit and (step + 1) % cfg.check_every == 0 and step + 1 < steps:
                if not torch.isfinite(z).all():
                    return ProtocolResult(False, "nonfinite", None, fingerprint, step + 1)
                g = self.gain(index, z)
                if g >= cfg.eta:
                    return self._accept(index, output, z, first_sign, g, fingerprint, step + 1)
        if not torch.isfinite(z).all():
            return ProtocolResult(False, "nonfinite", None, fingerprint, steps)
        g = self.gain(index, z)
        if not math.isfinite(g):  # the task's metric is not a number: nothing was shown to gain
            return ProtocolResult(False, "nonfinite", None, fingerprint, steps)
        if g < cfg.eta:
            return ProtocolResult(False, "low_gain", g, fingerprint, steps)
        return self._accept(index, output, z, first_sign, g, fingerprint, steps)

    def _accept(self, index: int, output, z: torch.Tensor, first_sign: int, gain: float,
                fingerprint: Tuple[float, ...], steps: int) -> ProtocolResult:
        """The result for a candidate whose gain reached eta, after the checks that the paper
        does not have. `first_sign` is one_sign of the gradient at step 0; z.grad holds the
        gradient of the last step taken."""
        cfg = self.config
        if cfg.reject_monotone and first_sign and one_sign(z.grad) == first_sign:
            return ProtocolResult(False, "monotone", gain, fingerprint, steps)
        if cfg.reject_unbounded and self.unbounded(index, output, z.detach()):
            return ProtocolResult(False, "unbounded", gain, fingerprint, steps)
        return ProtocolResult(True, None, gain, fingerprint, steps)

    def unbounded(self, index: int, output, z: torch.Tensor) -> bool:
        """Whether the compiled loss `output` keeps falling along the protocol's displacement
        z - z0 of branch `index` (see falls_without_bound)."""
        branch = self.branches[index]
        targets = self.probe.targets[branch.name]
        direction = z - self.probe.outputs[branch.name]
        values = []
        with torch.no_grad():
            for k in RAY:
                loss = output(self.task.loss_inputs(branch.name, z + k * direction, targets)).sum()
                values.append(float(loss.double()))
        return falls_without_bound(values)
