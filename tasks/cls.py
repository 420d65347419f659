"""`cls`: digit classification on scikit-learn's bundled digits (1,797 real 8x8 images).

The engine's fast task: a small MLP trains in about a second on one CPU thread, so the
search, its tests and its benchmarks run in minutes. One loss branch, inputs `yhat` (softmax
probabilities, shape (N, 10, 1, 1)) and `y` (one-hot labels); metric: accuracy. Splits, from
one fixed permutation: `val` 500 images (the search's score), `test` 400 (only
`gp-losses retrain` scores it), `train` the other 897. No download: the data ships inside
scikit-learn.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gp_losses.contract import Branch, LossFn, Probe, Task, TrainResult
from gp_losses.core.options import ConfigError, option
from primitives import CLASSIFICATION_INPUTS
from tasks.dataset import not_finite

NUM_CLASSES = 10
NUM_IMAGES = 1797
"""scikit-learn's digits: val, test and train are cut from one permutation of them."""


def load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (data, target): data (1797, 64) in 0..16, target (1797,).

    Read from the file scikit-learn ships them in, without importing scikit-learn, whose import
    takes longer than a proxy training of this task (every sandbox of a digits run sets the
    task up); with scikit-learn's own loader where that file is not found."""
    spec = importlib.util.find_spec("sklearn")
    package = os.path.dirname(spec.origin) if spec and spec.origin else ""
    path = os.path.join(package, "datasets", "data", "digits.csv.gz")
    if package and os.path.isfile(path):
        table = np.loadtxt(path, delimiter=",")
        return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return digits.data, digits.target


def _mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, NUM_CLASSES))


class DigitsTask(Task):
    """Digit classification on scikit-learn's digits with a small MLP; accuracy (the fast task)."""

    name = "cls"
    branches = (Branch("cls", CLASSIFICATION_INPUTS),)
    metrics = ("accuracy",)
    baselines = {"ce": {"cls": "Neg(Mul(y, Log(yhat)))"},
                 "mse": {"cls": "Square(Add(yhat, Neg(y)))"}}
    splits = ("train", "val", "test")
    loss_inputs_doc = {"cls": "yhat = softmax(logits, dim=1) and y = one_hot(labels, 10), both of "
                              "shape (N, 10, 1, 1) (logits[:, :, None, None])"}

    @dataclass(frozen=True)
    class Options:
        hidden: int = option(32, 1, help="hidden units of the MLP")
        iterations: int = option(300, 1)
        batch_size: int = option(64, 1)
        lr: float = option(0.1, 0, lo_open=True)
        momentum: float = option(0.9, 0, 1)
        eval_size: int = option(500, 1, 1697, help="val images (the search's score)")
        test_size: int = option(400, 1, 1697, help="test images (only a retrain scores them)")
        split_seed: int = option(0, 0, 2 ** 32 - 1)

    @classmethod
    def export_inputs(cls, options: Any) -> Dict[str, Any]:
        return {"kind": "labels", "ignore_index": -100}  # no ignored label: torch's default

    @classmethod
    def check_options(cls, options: Any) -> None:
        if NUM_IMAGES - options.eval_size - options.test_size < 100:
            raise ConfigError(f"task.options.eval_size + test_size: {options.eval_size} + {options.test_size} "
                              f"leave fewer than 100 of the {NUM_IMAGES} images to train on")

    def setup(self) -> None:
        data, target = load_digits()
        x = torch.tensor(data / 16.0, dtype=torch.float32)
        y = torch.tensor(target, dtype=torch.long)
        order = torch.from_numpy(np.random.RandomState(self.options.split_seed).permutation(len(y)))
        n_val, n_test = self.options.eval_size, self.options.test_size
        parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
        scored = parts[self.split]
        self.x_eval, self.y_eval = x[scored].to(self.device), y[scored].to(self.device)
        self.x_train, self.y_train = x[parts["train"]].to(self.device), y[parts["train"]].to(self.device)

    def _network(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return _mlp(self.options.hidden).to(self.device)

    def probe(self, n: int, seed: int) -> Probe:
        self.ensure_setup()
        gen = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self.y_train), generator=gen)[:n].to(self.device)
        with torch.no_grad():
            logits = self._network(seed)(self.x_train[index])
        labels = self.y_train[index]
        ideal = 10.0 * F.one_hot(labels, NUM_CLASSES).float()
        return Probe(outputs={"cls": logits[:, :, None, None]}, targets={"cls": labels},
                     ideal={"cls": ideal[:, :, None, None]})

    def loss_inputs(self, branch: str, outputs: torch.Tensor, targets: Any) -> Dict[str, torch.Tensor]:
        onehot = F.one_hot(targets, NUM_CLASSES).to(outputs.dtype)
        return {"yhat": outputs.softmax(dim=1), "y": onehot.reshape(outputs.shape)}

    def probe_metric(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, Any]) -> torch.Tensor:
        return (outputs["cls"].flatten(1).argmax(dim=1) == targets["cls"]).float()

    def train(self, loss: LossFn, seed: int) -> TrainResult:
        self.ensure_setup()
        opt = self.options
        net = self._network(seed)
        sgd = torch.optim.SGD(net.parameters(), lr=opt.lr, momentum=opt.momentum)
        gen = torch.Generator().manual_seed(seed)
        n = len(self.y_train)
        for _ in range(opt.iterations):
            index = torch.randint(0, n, (opt.batch_size,), generator=gen).to(self.device)
            logits = net(self.x_train[index])[:, :, None, None]
            value = loss({"cls": self.loss_inputs("cls", logits, self.y_train[index])})
            sgd.zero_grad()
            value.backward()
            sgd.step()
        with torch.no_grad():
            logits = net(self.x_eval)
        invalid = not_finite("outputs", [logits], opt.iterations)  # NaN logits' argmax: about 10 %
        if invalid:
            return invalid
        accuracy = (logits.argmax(dim=1) == self.y_eval).float().mean().item()
        return TrainResult(score=accuracy, metrics={"accuracy": accuracy}, iterations=opt.iterations)
