"""The digits classification task: the contract, and that losses separate on it."""

import pytest

from contracts.task_contract import TaskContract
from gp_losses.evaluate import proxy_evaluate
from gp_losses.space import SearchSpace
from tasks.cls import DigitsTask


@pytest.fixture(scope="module")
def small_task():
    return DigitsTask(DigitsTask.Options(iterations=60))


class TestDigitsContract(TaskContract):
    @pytest.fixture
    def task(self, small_task):
        return small_task


def test_cross_entropy_beats_a_loss_that_ignores_the_target(small_task):
    space = SearchSpace(small_task.branches)
    ce = proxy_evaluate(small_task, space.compile(space.parse("Neg(Mul(y, Log(yhat)))")), 0, 60)
    bad = proxy_evaluate(small_task, space.compile(space.parse("Square(yhat)")), 0, 60)
    assert ce["score"] > 0.8 and bad["score"] < 0.3


def test_a_loss_without_the_prediction_is_invalid_with_a_clear_message(small_task):
    space = SearchSpace(small_task.branches)
    result = proxy_evaluate(small_task, space.compile(space.parse("Square(Add(y, one))")), 0, 60)
    assert result["status"] == "invalid" and result["score"] is None
    assert "does not depend on the prediction" in result["error"] and result["iterations"] == 1
