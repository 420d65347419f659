"""Template tasks for tests, each in a few lines as a user writes them: digits classification,
segmentation of squares with ignored outlines, heatmap peaks; and templates given bad parts
(each must stop at setup with a message naming what is wrong)."""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from tasks.templates import DenseTask, LabelTask

_digits = load_digits()
_x = torch.tensor(_digits.data / 16.0, dtype=torch.float32)
_y = torch.tensor(_digits.target)


def digits(part):
    """Train 0-896, val 897-1396, test 1397-1796 of scikit-learn's digits."""
    lo, hi = {"train": (0, 897), "val": (897, 1397), "test": (1397, 1797)}[part]
    return TensorDataset(_x[lo:hi], _y[lo:hi])


def mlp():
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


Digits = LabelTask.define(
    "digits", model=mlp, train=lambda: digits("train"), val=lambda: digits("val"),
    test=lambda: digits("test"), metrics=("accuracy", "miou"),
    optimizer=lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    options={"iterations": 40, "batch_size": 64})


def squares(n, seed, size=16):
    """Images of one square (class 1 or 2) on background 0; its outline is labelled 255."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=gen) * 0.2
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        cls = int(torch.randint(1, 3, (1,), generator=gen))
        top, left = (int(v) for v in torch.randint(1, size - 8, (2,), generator=gen))
        side = int(torch.randint(4, 7, (1,), generator=gen))
        labels[i, top - 1:top + side + 1, left - 1:left + side + 1] = 255
        labels[i, top:top + side, left:left + side] = cls
        images[i, cls, top:top + side, left:left + side] += 0.8
    return TensorDataset(images, labels)


class Squares(LabelTask):
    """Per-pixel labels with 255 ignored, written as a subclass."""

    name = "squares"
    metrics = ("miou", "accuracy")
    ignore_index = 255
    data = {"train": lambda: squares(64, 0), "val": lambda: squares(24, 1), "test": lambda: squares(24, 2)}
    Options = LabelTask.with_options(iterations=30, batch_size=8, lr=0.01)

    def model(self):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))


def peaks(n, seed, size=12):
    """(image, heatmap, weight): a bright dot and a Gaussian at it; weight 0 on a third of them."""
    gen = torch.Generator().manual_seed(seed)
    where = torch.randint(0, size, (n, 2), generator=gen)
    grid = torch.arange(size, dtype=torch.float32)
    heat = torch.exp(-((grid[None, :, None] - where[:, 0, None, None]) ** 2
                       + (grid[None, None, :] - where[:, 1, None, None]) ** 2) / 4.0)[:, None]
    images = heat + 0.1 * torch.randn(n, 1, size, size, generator=gen)
    weight = (torch.arange(n) % 3 != 0).float()[:, None]
    return TensorDataset(images, heat, weight)


Peaks = DenseTask.define(
    "peaks", model=lambda: nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1)),
    train=peaks(48, 0), val=peaks(24, 1), test=peaks(24, 2), metrics=("pck", "r2"),
    options={"iterations": 30, "batch_size": 8, "lr": 0.01})


def make_digits():
    """A factory: `--task template_tasks:make_digits` gets the class it returns."""
    return Digits


# --- bad parts: each stops at setup ----------------------------------------------------------------
NoClassDim = LabelTask.define("no_class_dim", model=lambda: nn.Linear(64, 1), train=digits("train"),
                              val=digits("val"))
"""Outputs (N, 1): no class dimension for class labels (N,)."""

WrongShapes = LabelTask.define("wrong_shapes", model=mlp,
                               train=TensorDataset(_x[:100], _y[:100, None].repeat(1, 5)), val=digits("val"))
"""Targets (N, 5) for logits (N, 10)."""

StringMetric = LabelTask.define("string_metric", model=mlp, train=digits("train"), val=digits("val"),
                                metrics={"words": lambda outputs, targets: "high"})
"""A metric that returns a string."""

FloatTargets = LabelTask.define("float_targets", model=mlp, train=TensorDataset(_x[:100], _y[:100].float()),
                                val=digits("val"))

NotPairs = LabelTask.define("not_pairs", model=mlp, train=_x[:100], val=digits("val"))
"""A dataset of bare inputs, not (input, target) pairs."""
