"""`seg`: semantic segmentation (paper sections 4.1, A.1; Tables 2, 3).

One loss branch, `seg`, with inputs `yhat` (softmax probabilities) and `y` (one-hot targets),
(N, C, H, W), both multiplied by the mask of labelled pixels, so that a pixel labelled 255
gives no gradient (as the pose task masks unlabelled joints; an aggregation in a tree — a
mean, a pooling — sees zeros there). Metrics (tasks/seg/metric.py): `miou fwiou gacc macc biou
bf1`, all reported by every evaluation; `task.metric` picks the search target. The rejection
protocol scores each probe image by the target metric of that image alone.

Data: built-in synthetic scenes (tasks/seg/synthetic.py, written once into a cache directory
in the Pascal VOC layout), or `data_root` naming a VOC-layout directory, read by the same
loader. Splits: `train`, `val` (the search's score) and `test` (only `gp-losses retrain`
scores it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping

import torch
import torch.nn.functional as F

from gp_losses.config import option
from gp_losses.errors import InputError
from gp_losses.trees import Branch
from primitives import CLASSIFICATION_INPUTS
from tasks.base import LossFn, Probe, Task, TrainResult
from tasks.cache import default_cache, locked
from tasks.seg import data as seg_data
from tasks.seg import metric as seg_metric
from tasks.seg.model import build
from tasks.seg.synthetic import CLASSES as SYNTHETIC_CLASSES
from tasks.seg.synthetic import write_voc

FULL_RESOLUTION = 512
"""The image side at which the boundary metrics' usual widths are stated (VOC's ~500 px)."""


class SegTask(Task):
    """Semantic segmentation on synthetic scenes or Pascal VOC; the paper's six metrics."""

    name = "seg"
    branches = (Branch("seg", CLASSIFICATION_INPUTS),)
    metrics = seg_metric.METRICS
    baselines = {"ce": {"seg": "Neg(Mul(y, Log(yhat)))"},
                 "mse": {"seg": "Square(Add(yhat, Neg(y)))"},
                 # 1 - 2 sum(yhat y) / (sum(yhat) + sum(y)) per class, over the batch's pixels
                 "dice": {"seg": "Add(one, Neg(Mul(Add(MeanNHW(Mul(yhat, y)), MeanNHW(Mul(yhat, y))), "
                                 "Inv(Add(MeanNHW(yhat), MeanNHW(y))))))"}}
    splits = ("train", "val", "test")
    loss_inputs_doc = {"seg": "yhat = softmax(logits, dim=1) * m and y = one_hot(labels, C) * m, both "
                              "(N, C, H, W), where m is 1 on labelled pixels and 0 on those labelled "
                              "255 (m = (labels != 255)[:, None])"}

    @dataclass(frozen=True)
    class Options:
        data_root: str = ""            # Pascal VOC-layout directory; "" = built-in synthetic scenes
        train_split: str = "train"
        val_split: str = "val"
        test_split: str = "test"
        classes: int = option(0, 0, 255, help="classes incl. background; 0: 6 (synthetic) or 21 (VOC)")
        cache_dir: str = ""            # where synthetic data is written ("" = ~/.cache/gp_losses)
        synthetic_train: int = option(600, 1)
        synthetic_val: int = option(200, 1)
        synthetic_test: int = option(200, 1)
        synthetic_seed: int = option(0, 0, 2 ** 32 - 1)
        synthetic_size: int = option(96, 32, 4096, help="side of the synthetic images, pixels")
        void_border: float = option(0.5, 0, 1, help="share of synthetic objects with a void (255) outline")
        size: int = option(96, 16, help="side of the network input (images are resized to it)")
        band: float = option(5.0, 0, lo_open=True, help="BIoU band, pixels at 512 px (scaled to size)")
        tolerance: float = option(0.0075, 0, lo_open=True, help="BF1 tolerance, share of the image diagonal")
        model: str = option("small", choices=("small", "deeplabv3_resnet50"))
        width: int = option(16, 2, help="channels of the small model's first layer")
        weights_file: str = ""         # local weights for deeplabv3_resnet50
        iterations: int = option(400, 1, help="proxy training length, unless epochs > 0")
        epochs: float = option(0.0, 0)
        batch_size: int = option(8, 1)
        optimizer: str = option("adam", choices=("adam", "sgd"))
        lr: float = option(3e-3, 0, lo_open=True)
        momentum: float = option(0.9, 0, 1, help="SGD momentum")
        schedule: str = option("constant", choices=("constant", "poly"))
        eval_batch: int = option(32, 1)
        train_limit: int = option(0, 0, help="use only the first N training images (0 = all)")
        val_limit: int = option(0, 0, help="likewise for the scored split (val or test)")

    # --- data ----------------------------------------------------------------------------
    @property
    def classes(self) -> int:
        opt = self.options
        return opt.classes or (21 if opt.data_root else len(SYNTHETIC_CLASSES))

    def _root(self) -> Path:
        opt = self.options
        if opt.data_root:
            return Path(opt.data_root)
        cache = Path(opt.cache_dir) if opt.cache_dir else default_cache()
        root = cache / (f"seg-synthetic-v1-{opt.synthetic_train}-{opt.synthetic_val}-{opt.synthetic_test}-"
                        f"{opt.synthetic_seed}-{opt.synthetic_size}-{opt.void_border:g}")
        splits = (("train", opt.synthetic_train), ("val", opt.synthetic_val), ("test", opt.synthetic_test))
        with locked(cache / f".{root.name}.lock"):
            write_voc(root, splits, opt.synthetic_seed, opt.synthetic_size, opt.void_border)
        return root

    def setup(self) -> None:
        opt = self.options
        root = self._root()
        scored = {"val": opt.val_split, "test": opt.test_split}[self.split]
        self.x_train, self.y_train = seg_data.load_split(root, opt.train_split, opt.size)
        self.x_eval, self.y_eval = seg_data.load_split(root, scored, opt.size)
        if opt.train_limit:
            self.x_train, self.y_train = self.x_train[:opt.train_limit], self.y_train[:opt.train_limit]
        if opt.val_limit:
            self.x_eval, self.y_eval = self.x_eval[:opt.val_limit], self.y_eval[:opt.val_limit]
        for labels, split in ((self.y_train, opt.train_split), (self.y_eval, scored)):
            bad = labels[(labels != seg_metric.IGNORE) & (labels >= self.classes)]
            if len(bad):
                raise InputError(f"segmentation data: split {split!r} has label {int(bad[0])}, but the task "
                                 f"has {self.classes} classes (task.options.classes)")
            if bool((labels == seg_metric.IGNORE).all()):
                raise InputError(f"segmentation data: split {split!r} has no labelled pixel (all are 255)")
        self.band = opt.band * opt.size / FULL_RESOLUTION
        self.tolerance = opt.tolerance * opt.size * math.sqrt(2)

    def _network(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        opt = self.options
        return build(opt.model, self.classes, opt.width, opt.weights_file or None).to(self.device)

    # --- the protocol --------------------------------------------------------------------
    def probe(self, n: int, seed: int) -> Probe:
        self.ensure_setup()
        gen = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self.y_train), generator=gen)[:n]
        net = self._network(seed).eval()
        with torch.no_grad():
            logits = net(self.x_train[index].to(self.device))
        labels = self.y_train[index].to(self.device)
        ideal = 10.0 * F.one_hot(labels.clamp(max=self.classes - 1), self.classes).permute(0, 3, 1, 2).float()
        return Probe(outputs={"seg": logits}, targets={"seg": labels}, ideal={"seg": ideal})

    def loss_inputs(self, branch: str, outputs: torch.Tensor, targets: Any) -> Dict[str, torch.Tensor]:
        labels = targets.to(outputs.device)
        mask = (labels != seg_metric.IGNORE)[:, None].to(outputs.dtype)
        onehot = F.one_hot(torch.where(labels == seg_metric.IGNORE, 0, labels), outputs.shape[1])
        return {"yhat": outputs.softmax(dim=1) * mask, "y": onehot.permute(0, 3, 1, 2).to(outputs.dtype) * mask}

    def probe_metric(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, Any]) -> torch.Tensor:
        pred = outputs["seg"].argmax(dim=1).cpu().numpy()
        labels = targets["seg"].cpu().numpy()
        return torch.tensor([seg_metric.per_image(p, t, self.metric, self.classes, self.band, self.tolerance)
                             for p, t in zip(pred, labels)], dtype=torch.float32)

    # --- the proxy -----------------------------------------------------------------------
    def iterations(self) -> int:
        opt = self.options
        if opt.epochs > 0:
            return max(1, math.ceil(opt.epochs * len(self.y_train) / opt.batch_size))
        return opt.iterations

    def train(self, loss: LossFn, seed: int) -> TrainResult:
        self.ensure_setup()
        opt = self.options
        net = self._network(seed).train()
        if opt.optimizer == "adam":
            optim = torch.optim.Adam(net.parameters(), lr=opt.lr)
        else:
            optim = torch.optim.SGD(net.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=1e-4)
        total = self.iterations()
        if opt.schedule == "poly":
            sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda i: (1 - i / total) ** 0.9)
        gen = torch.Generator().manual_seed(seed)
        n = len(self.y_train)
        for _ in range(total):
            index = torch.randint(0, n, (opt.batch_size,), generator=gen)
            logits = net(self.x_train[index].to(self.device))
            value = loss({"seg": self.loss_inputs("seg", logits, self.y_train[index])})
            optim.zero_grad()
            value.backward()
            optim.step()
            if opt.schedule == "poly":
                sched.step()
        net.eval()
        scores = seg_metric.SegScores(self.classes, self.band, self.tolerance)
        with torch.no_grad():
            for start in range(0, len(self.y_eval), opt.eval_batch):
                logits = net(self.x_eval[start:start + opt.eval_batch].to(self.device))
                if not torch.isfinite(logits).all():
                    return TrainResult.invalid("the trained network's outputs are not finite", total)
                for pred, label in zip(logits.argmax(dim=1).cpu().numpy(),
                                       self.y_eval[start:start + opt.eval_batch].numpy()):
                    scores.add(pred, label)
        # a metric is NaN only where the split has no boundary (BIoU, BF1): the engine records
        # such an evaluation as an error, never as a score
        metrics = scores.result()
        return TrainResult(score=metrics[self.metric], metrics=metrics, iterations=total)
