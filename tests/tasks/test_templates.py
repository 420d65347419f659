"""Task templates: the contract on a classification, a segmentation and a heatmap task built
from parts; their metrics against scikit-learn and hand-computed values; bad parts stopped at
setup with a message naming what is wrong."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset
from sklearn.metrics import accuracy_score, jaccard_score, r2_score

from gp_losses.core.errors import InputError
from gp_losses.evaluate import proxy_evaluate
from gp_losses.space import SearchSpace
from gp_losses.testing import TaskContract
import template_tasks as tt
from tasks.templates import LabelTask, PCK, R2, pck_counts


class TestDigitsTemplate(TaskContract):
    @pytest.fixture
    def task(self):
        return tt.Digits()


class TestSquaresTemplate(TaskContract):
    @pytest.fixture
    def task(self):
        return tt.Squares()


class TestPeaksTemplate(TaskContract):
    @pytest.fixture
    def task(self):
        return tt.Peaks()


def test_the_template_trains_like_the_built_in_digits_task_and_scores_each_split():
    task = tt.Digits(tt.Digits.Options(iterations=300))
    space = SearchSpace(task.branches)
    ce = proxy_evaluate(task, space.compile(space.parse(task.baselines["ce"])), 0, 120)
    flat = proxy_evaluate(task, space.compile(space.parse({"labels": "Square(yhat)"})), 0, 120)
    assert ce.status == "ok" and ce.score > 0.9 and flat.score < 0.3
    assert set(ce.metrics) == {"accuracy", "miou"}
    test = tt.Digits(tt.Digits.Options(iterations=300), split="test")
    again = proxy_evaluate(test, space.compile(space.parse(task.baselines["ce"])), 0, 120)
    assert again.status == "ok" and again.score != ce.score  # another split: 400 other images
    test.ensure_setup()
    assert test.n_eval == 400 and test.n_train == 897


def test_ignored_pixels_give_no_loss_input_and_no_metric():
    task = tt.Squares()
    probe = task.probe(4, seed=0)
    labels = probe.targets["labels"]
    assert (labels == 255).any()
    inputs = task.loss_inputs("labels", probe.outputs["labels"], labels)
    ignored = (labels == 255)[:, None].expand_as(inputs["yhat"])
    assert (inputs["yhat"][ignored] == 0).all() and (inputs["y"][ignored] == 0).all()
    assert torch.allclose(inputs["y"].sum(dim=1), (labels != 255).float())


def test_accuracy_and_miou_agree_with_scikit_learn_on_labelled_pixels():
    task = tt.Squares()
    task.ensure_setup()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, 16, 16, generator=gen)
    labels = torch.randint(0, 3, (6, 16, 16), generator=gen)
    labels[:, :3] = 255
    keep = labels != 255
    pred, true = logits.argmax(dim=1)[keep].numpy(), labels[keep].numpy()
    acc, miou = task.metric_table["accuracy"](task), task.metric_table["miou"](task)
    for part in (slice(0, 2), slice(2, 6)):  # accumulated over batches
        acc.update(logits[part], labels[part])
        miou.update(logits[part], labels[part])
    assert acc.value() == pytest.approx(accuracy_score(true, pred), abs=1e-12)
    assert miou.value() == pytest.approx(jaccard_score(true, pred, average="macro"), abs=1e-12)
    # a class in neither prediction nor label is left out of the mean, as jaccard_score's labels=
    only = task.metric_table["miou"](task)
    only.update(torch.tensor([[[[5.0]], [[0.0]], [[0.0]]]]), torch.tensor([[[0]]]))
    assert only.value() == 1.0


def test_r2_agrees_with_scikit_learn_and_pck_with_a_hand_count():
    task = tt.Peaks()
    task.ensure_setup()
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(5, 2, 4, 4, generator=gen)
    output = target + 0.3 * torch.randn(5, 2, 4, 4, generator=gen)
    weight = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.5, 1.0], [1.0, 1.0], [0.0, 0.0]])
    r2 = R2(task)
    r2.update(output, (target, weight))
    w = weight[:, :, None, None].expand_as(target).flatten().numpy()
    expected = r2_score(target.flatten().numpy(), output.flatten().numpy(), sample_weight=w)
    assert r2.value() == pytest.approx(max(expected, 0.0), abs=1e-9)
    # PCK by hand: peaks at (0, 0) and (3, 3); predictions at distance 1 and sqrt(8)
    t = torch.zeros(1, 2, 4, 4)
    t[0, 0, 0, 0] = t[0, 1, 3, 3] = 1.0
    o = torch.zeros(1, 2, 4, 4)
    o[0, 0, 1, 0] = o[0, 1, 1, 1] = 1.0
    assert pck_counts(o, t, None, radius=1.0) == (1, 2)
    assert pck_counts(o, t, None, radius=3.0) == (2, 2)
    assert pck_counts(o, t, torch.tensor([[1.0, 0.0]]), radius=3.0) == (1, 1)  # weight 0: not counted
    metric = PCK(task)
    metric.update(o, (t, None))
    assert metric.value() == (0.5 if task.options.pck_radius < math.sqrt(8) else 1.0)


def test_define_and_subclass_give_the_engine_a_task_class():
    assert issubclass(tt.Digits, LabelTask) and tt.Digits.__module__ == "template_tasks"
    assert tt.Digits.__qualname__ == "Digits" and tt.Digits.metrics == ("accuracy", "miou")
    assert tt.Digits.Options().iterations == 40 and tt.Squares.Options().lr == 0.01
    assert tt.Squares.splits == ("train", "val", "test")
    with pytest.raises(InputError, match="'iteration' is not an option"):
        LabelTask.with_options(iteration=5)
    with pytest.raises(InputError, match="unknown metric 'f1'"):
        LabelTask.define("x", model=tt.mlp, train=tt.digits("train"), val=tt.digits("val"), metrics="f1")
    with pytest.raises(InputError, match="needs splits train and val"):
        LabelTask.define("x", model=tt.mlp, train=tt.digits("train"), val=None)


@pytest.mark.parametrize("name,message", [
    ("NoClassDim", r"the class dimension \(1\) has size 1"),
    ("WrongShapes", r"the output needs a class dimension, shape \(N, C, \*target.shape\[1:\]\) = \(2, 'C', 5\)"),
    ("StringMetric", r"metric 'words' returned 'high' \(str\): a metric returns a number in \[0, 1\]"),
    ("FloatTargets", r"targets must be integer class indices"),
    ("NotPairs", r"item 0 of the 'train' dataset is a tensor of shape \(64,\).*expected a pair \(input, target\)"),
])
def test_bad_parts_stop_at_setup_with_what_is_wrong(name, message):
    with pytest.raises(InputError, match=message):
        getattr(tt, name)().ensure_setup()


def test_a_custom_metric_and_its_per_sample_values():
    def top2(outputs, targets):
        return float((outputs.topk(2, dim=1).indices == targets[:, None]).any(dim=1).float().mean())

    Top2 = LabelTask.define("top2", model=tt.mlp, train=tt.digits("train"), val=tt.digits("val"),
                            metrics={"top2": top2, "accuracy": "accuracy"}, options={"iterations": 20})
    task = Top2()
    probe = task.probe(6, seed=0)
    values = task.probe_metric(probe.outputs, probe.targets)
    logits = probe.outputs["labels"][:, :, 0, 0]
    expected = (logits.topk(2, dim=1).indices == probe.targets["labels"][:, None]).any(dim=1).float()
    assert torch.equal(values, expected)
    space = SearchSpace(task.branches)
    result = proxy_evaluate(task, space.compile(space.parse(task.baselines["ce"])), 0, 60)
    assert result.status == "ok" and result.score >= result.metrics["accuracy"]


def test_integer_targets_of_any_width_train_as_class_indices():
    """uint8 masks (np.array of a VOC png) and int32 labels: the template takes them as long."""
    images, labels = tt.squares(24, 0).tensors
    as_uint8 = LabelTask.define("squares8", model=lambda: torch.nn.Conv2d(3, 3, 3, padding=1), ignore_index=255,
                                train=TensorDataset(images, labels.to(torch.uint8)),
                                val=TensorDataset(images, labels.to(torch.int32)), options={"iterations": 4})
    task = as_uint8()
    space = SearchSpace(task.branches)
    result = proxy_evaluate(task, space.compile(space.parse(task.baselines["ce"])), 0, 60)
    assert result.status == "ok", result.error


def test_define_refuses_an_unknown_argument_with_the_ones_it_takes():
    with pytest.raises(InputError, match=r"unknown argument 'ignore_idx' \(did you mean 'ignore_index'\?\)"):
        LabelTask.define("x", model=tt.mlp, train=tt.digits("train"), val=tt.digits("val"), ignore_idx=255)


def test_samples_that_cannot_be_collated_stop_at_setup_with_the_remedy():
    class Ragged(torch.utils.data.Dataset):  # images of two sizes, as a real VOC folder has
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.zeros(3, 16 + i % 2, 16), torch.zeros(16 + i % 2, 16, dtype=torch.long)

    task = LabelTask.define("ragged", model=lambda: torch.nn.Conv2d(3, 2, 1), train=Ragged(), val=Ragged())()
    with pytest.raises(InputError, match=r"'train' samples cannot be collated.*loader: stream"):
        task.ensure_setup()


def test_a_per_sample_metric_that_fails_stops_at_setup():
    def broken(outputs, targets):
        raise ValueError("only one class present")

    task = LabelTask.define("auc", model=tt.mlp, train=tt.digits("train"), val=tt.digits("val"),
                            metrics={"auc": lambda outputs, targets: 0.5}, sample_metrics={"auc": broken})()
    with pytest.raises(InputError, match=r"metric 'auc': sample_metrics\['auc'\] failed.*only one class present"):
        task.ensure_setup()


def test_a_train_split_smaller_than_the_probe_is_refused():
    task = LabelTask.define("tiny", model=tt.mlp, train=TensorDataset(tt._x[:3], tt._y[:3]), val=tt.digits("val"))()
    with pytest.raises(InputError, match=r"the probe needs 5 training samples \(protocol.samples\), the train split has 3"):
        task.probe(5, seed=0)


def test_options_of_a_defined_task_pickle():
    import pickle

    options = tt.Squares.Options(iterations=7)
    assert pickle.loads(pickle.dumps(options)) == options
    assert type(options).__module__ == "template_tasks" and type(options).__qualname__ == "Squares.Options"
    defined = tt.Digits.Options(iterations=3)  # made by define()
    assert pickle.loads(pickle.dumps(defined)) == defined
