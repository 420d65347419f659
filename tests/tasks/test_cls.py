"""The digits classification task: the contract, and that losses separate on it."""

import pytest

from gp_losses.testing import TaskContract
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
    assert ce.score > 0.8 and bad.score < 0.3


def test_a_loss_without_the_prediction_is_invalid_with_a_clear_message(small_task):
    space = SearchSpace(small_task.branches)
    result = proxy_evaluate(small_task, space.compile(space.parse("Square(Add(y, one))")), 0, 60)
    assert result.status == "invalid" and result.score is None
    assert "does not depend on the prediction" in result.error and result.iterations == 1


def test_the_three_splits_are_disjoint_and_cover_the_digits():
    val = DigitsTask(DigitsTask.Options(iterations=1))
    test = DigitsTask(DigitsTask.Options(iterations=1), split="test")
    val.ensure_setup()
    test.ensure_setup()
    assert (len(val.y_train), len(val.y_eval), len(test.y_eval)) == (897, 500, 400)
    rows = lambda x: {tuple(r) for r in x.tolist()}  # noqa: E731 - digits images as row sets
    train, scored_val, scored_test = rows(val.x_train), rows(val.x_eval), rows(test.x_eval)
    assert rows(test.x_train) == train  # the same training data whichever split is scored
    # sklearn's digits hold a few duplicate images; no image may be in two splits all the same
    assert not (train & scored_val) and not (train & scored_test) and not (scored_val & scored_test)


def test_a_split_the_task_does_not_have_is_refused():
    with pytest.raises(ValueError, match="cannot score split 'train'"):
        DigitsTask(split="train")
    with pytest.raises(ValueError, match="cannot score split 'holdout'"):
        DigitsTask(split="holdout")


def test_the_digits_read_from_their_file_are_scikit_learns(monkeypatch):
    """The task reads the digits without importing scikit-learn; they are its loader's, and
    where the file is not found the loader itself gives them."""
    import importlib.util

    from sklearn.datasets import load_digits as sklearn_digits

    import tasks.cls as cls_task

    reference = sklearn_digits()
    data, target = cls_task.load_digits()
    assert (data == reference.data).all() and (target == reference.target).all()
    assert data.shape == (cls_task.NUM_IMAGES, 64) and target.dtype == reference.target.dtype
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    data, target = cls_task.load_digits()
    assert (data == reference.data).all() and (target == reference.target).all()
