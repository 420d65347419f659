"""The contract every task passes, shipped with the package (as `optuna.testing` is): in a
test module of your own, subclass `TaskContract` and give it a `task` fixture returning a
small, fast configuration of your task; pytest then runs every check on it. The built-in tasks
pass it the same way (tests/tasks/).

    import pytest
    from gp_losses.testing import TaskContract
    from mymodule import Digits

    class TestDigits(TaskContract):
        @pytest.fixture
        def task(self):
            return Digits(Digits.Options(iterations=50))

Needs pytest (the `test` extra: pip install gp-losses[test]).
"""

import math

try:
    import pytest
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("gp_losses.testing needs pytest: pip install pytest (or gp-losses[test])") from exc
import torch

from gp_losses.evaluate import proxy_evaluate
from gp_losses.space import SearchSpace

B = 5


class TaskContract:
    """Subclasses provide a `task` fixture (a small, fast configuration of the task)."""

    ideal_metric = 1.0
    """The probe metric that `ideal` outputs reach (heatmap decoding quantizes: below 1)."""

    @pytest.fixture
    def space(self, task):
        return SearchSpace(task.branches, python_losses=task.python_losses)

    @pytest.fixture
    def probe(self, task):
        return task.probe(B, seed=0)

    def test_declares_branches_metrics_and_baselines(self, task):
        assert task.name and task.branches and task.metrics
        assert task.metric in task.metrics
        names = {b.name for b in task.branches}
        assert task.baselines, "a task names at least one baseline loss"
        for exprs in task.baselines.values():
            assert set(exprs) == names

    def test_probe_samples_have_the_declared_shapes(self, task, probe):
        """Outputs are (B, ...), one row per probe sample; a branch's inputs are (N, C, H, W),
        all of one shape (the outputs' own, or, where a task flattens the samples that count,
        as detection does its sampled anchors, K rows of them)."""
        for branch in task.branches:
            outputs = probe.outputs[branch.name]
            assert outputs.dim() == 4 and outputs.shape[0] == B
            inputs = task.loss_inputs(branch.name, outputs, probe.targets[branch.name])
            needed = {t.name for t in branch.inputs if t.constant is None}
            assert needed <= set(inputs)
            shapes = {inputs[name].shape for name in needed}
            assert len(shapes) == 1 and len(next(iter(shapes))) == 4, shapes
            assert next(iter(shapes))[0] > 0, f"{branch.name}: no sample to check a loss on"
            for name in needed:
                assert torch.isfinite(inputs[name]).all()

    def test_probe_metric_is_per_sample_in_unit_interval(self, task, probe):
        values = task.probe_metric(probe.outputs, probe.targets)
        assert values.shape == (B,)
        assert ((values >= 0) & (values <= 1)).all()

    def test_ideal_outputs_reproduce_the_targets(self, task, probe):
        ideal = {b.name: probe.ideal[b.name] for b in task.branches}
        values = task.probe_metric(ideal, probe.targets)
        assert (values >= self.ideal_metric - 1e-6).all()
        assert (values >= task.probe_metric(probe.outputs, probe.targets)).all()

    def test_probe_is_deterministic(self, task):
        a, b = task.probe(B, seed=3), task.probe(B, seed=3)
        for name in a.outputs:
            assert torch.equal(a.outputs[name], b.outputs[name])

    def test_baselines_train_to_a_finite_score_and_the_same_seed_repeats(self, task, space):
        for name, exprs in task.baselines.items():
            loss = space.compile(space.parse(exprs))
            first = proxy_evaluate(task, loss, seed=1, timeout_s=300)
            assert first.status == "ok", (name, first)
            assert math.isfinite(first.score) and 0 <= first.score <= 1
            again = proxy_evaluate(task, loss, seed=1, timeout_s=300)
            assert again.score == first.score and again.metrics == first.metrics

    def test_a_nan_loss_stops_early_as_invalid(self, task, space):
        exprs = {b.name: "Mul(Log(Neg(one)), Mul(yhat, y))" if "yhat" in b.input_names
                 else "Mul(Log(Neg(one)), Mul(i, u))" for b in task.branches}
        loss = space.compile(space.parse(exprs))
        nan_loss = lambda values: loss(values) * float("nan")  # noqa: E731
        result = proxy_evaluate(task, nan_loss, seed=0, timeout_s=300)
        assert result.status == "invalid" and result.iterations == 1
        assert result.score is None
