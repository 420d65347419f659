"""`seg`: semantic segmentation (paper sections 4.1, A.1; Tables 2, 3).

One loss branch, `seg`, with inputs `yhat` (softmax probabilities) and `y` (one-hot targets),
(N, C, H, W), both multiplied by the mask of labelled pixels, so that a pixel labelled 255
gives no gradient (as the pose task masks unlabelled joints; an aggregation in a tree — a
mean, a pooling — sees zeros there). Metrics (tasks/seg/metric.py): `miou fwiou gacc macc biou
bf1`, the boundary two in the form `options.boundary` names, and both forms of those two under
their own keys (`biou_csurka bf1_csurka biou_asl bf1_asl`), all reported by every evaluation;
`task.metric` picks the search target. The rejection protocol scores each probe image by the
target metric of that image alone.

Data: built-in synthetic scenes (tasks/scenes.py, tasks/seg/synthetic.py, written once into a cache directory
in the Pascal VOC layout), or `data_root` naming a VOC-layout directory, read by the same
loader; decoded once and held in memory, or with `loader: stream` read through a DataLoader
(the paper config; a seed draws the same batches either way). Splits: `train`, `val` (the
search's score) and `test` (only `gp-losses retrain` scores it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from gp_losses.contract import Branch, LossFn, Probe, TrainResult
from gp_losses.core.errors import InputError
from gp_losses.core.options import option
from primitives import CLASSIFICATION_INPUTS
from tasks.dataset import DataOptions, DatasetTask, Draws, not_finite
from tasks.seg import data as seg_data
from tasks.seg import losses as seg_losses
from tasks.seg import metric as seg_metric
from tasks.seg.model import build
from tasks.scenes import CLASSES as SYNTHETIC_CLASSES
from tasks.seg.synthetic import write_voc

FULL_RESOLUTION = 512
"""The image side at which the boundary metrics' usual widths are stated (VOC's ~500 px)."""


class SegTask(DatasetTask):
    """Semantic segmentation on synthetic scenes or Pascal VOC; the paper's six metrics."""

    name = "seg"
    branches = (Branch("seg", CLASSIFICATION_INPUTS),)
    metrics = seg_metric.METRICS
    baselines = {"ce": {"seg": "Neg(Mul(y, Log(yhat)))"},
                 "mse": {"seg": "Square(Add(yhat, Neg(y)))"},
                 # 1 - 2 sum(yhat y) / (sum(yhat) + sum(y)) per class, over the batch's pixels
                 "dice": {"seg": "Add(one, Neg(Mul(Add(MeanNHW(Mul(yhat, y)), MeanNHW(Mul(yhat, y))), "
                                 "Inv(Add(MeanNHW(yhat), MeanNHW(y))))))"},
                 **{name: {"seg": name} for name in seg_losses.LOSSES}}
    python_losses = {"seg": seg_losses.LOSSES}
    splits = ("train", "val", "test")
    loss_inputs_doc = {"seg": "yhat = softmax(logits, dim=1) * m and y = one_hot(labels, C) * m, both "
                              "(N, C, H, W), where m is 1 on labelled pixels and 0 on those labelled "
                              "255 (m = (labels != 255)[:, None]); with task.options.targets: boundary "
                              "(a search for BIoU or BF1), y is made from the boundary targets "
                              "tasks.seg.metric.boundary_targets(labels, band) instead"}

    @dataclass(frozen=True)
    class Options(DataOptions):
        """data_root: a Pascal VOC-layout directory; "" = built-in synthetic scenes."""

        iterations: int = option(400, 1, help="proxy training length, unless epochs > 0")
        classes: int = option(0, 0, 255, help="classes incl. background; 0: 6 (synthetic) or 21 (VOC)")
        void_border: float = option(0.5, 0, 1, help="share of synthetic objects with a void (255) outline")
        size: int = option(96, 16, help="side of the network input (images are resized to it)")
        band: float = option(5.0, 0, lo_open=True, help="BIoU band, pixels at 512 px (scaled to size)")
        tolerance: float = option(0.0075, 0, lo_open=True, help="BF1 tolerance, share of the image diagonal")
        boundary: str = option("csurka", choices=seg_metric.FORMS,
                               help="the form biou and bf1 take (both are reported): csurka, Euclidean "
                                    "band and tolerance, BF1 per image; asl, Auto Seg-Loss's evaluation, "
                                    "square windows of band's width, BF1 counts pooled over the split")
        targets: str = option("region", choices=("region", "boundary"),
                              help="what y holds: the label maps, or (the paper's for BIoU and BF1) "
                                   "only their pixels within target_band of a class boundary")
        target_band: float = option(5.0, 0, lo_open=True,
                                    help="boundary targets' band, pixels at 512 px (scaled to size)")
        model: str = option("small", choices=("small", "deeplabv3_resnet50"))
        width: int = option(16, 2, help="channels of the small model's first layer")
        weights_file: str = ""         # local weights for deeplabv3_resnet50
        optimizer: str = option("adam", choices=("adam", "sgd"))
        lr: float = option(3e-3, 0, lo_open=True)
        momentum: float = option(0.9, 0, 1, help="SGD momentum")
        weight_decay: float = option(1e-4, 0, help="SGD weight decay")
        head_lr: float = option(1.0, 0, lo_open=True, help="learning-rate multiplier of the segmentation head")
        schedule: str = option("constant", choices=("constant", "poly"))
        min_lr: float = option(0.0, 0, help="the poly schedule's floor")
        eval_batch: int = option(32, 1)
        loader: str = option("memory", choices=("memory", "stream"),
                             help="memory: every image decoded once, as tensors; stream: a DataLoader")

    @classmethod
    def export_inputs(cls, options: Any) -> Any:
        """Logits and label maps with 255 ignored; boundary targets are the task's own transform."""
        return {"kind": "labels", "ignore_index": seg_metric.IGNORE} if options.targets == "region" else None

    # --- data ----------------------------------------------------------------------------
    @property
    def classes(self) -> int:
        opt = self.options
        return opt.classes or (21 if opt.data_root else len(SYNTHETIC_CLASSES))

    def synthetic_name(self) -> str:
        opt = self.options
        return (f"seg-synthetic-v1-{opt.synthetic_train}-{opt.synthetic_val}-{opt.synthetic_test}-"
                f"{opt.synthetic_seed}-{opt.synthetic_size}-{opt.void_border:g}")

    def write_synthetic(self, root: Path) -> Path:
        opt = self.options
        splits = (("train", opt.synthetic_train), ("val", opt.synthetic_val), ("test", opt.synthetic_test))
        return write_voc(root, splits, opt.synthetic_seed, opt.synthetic_size, opt.void_border)

    def build_network(self) -> torch.nn.Module:
        opt = self.options
        return build(opt.model, self.classes, opt.width, opt.weights_file or None)

    def train_size(self) -> int:
        return len(self.train_data)

    def setup(self) -> None:
        opt = self.options
        root = self.root()
        train_limit, eval_limit = opt.train_limit or None, opt.val_limit or None
        self.train_data = seg_data.VocSegmentation(root, opt.train_split, opt.size, train_limit)
        self.eval_data = seg_data.VocSegmentation(root, self.scored_split, opt.size, eval_limit)
        self.band = opt.band * opt.size / FULL_RESOLUTION
        self.tolerance = opt.tolerance * opt.size * math.sqrt(2)
        self.width = max(1, round(self.band))  # asl: whole pixels, at least the 3x3 window
        self.target_band = opt.target_band * opt.size / FULL_RESOLUTION
        self.x_train = self.y_train = self.t_train = self.x_eval = self.y_eval = None
        if opt.loader == "memory":
            self.x_train, self.y_train = seg_data.load_split(root, opt.train_split, opt.size, train_limit)
            self.x_eval, self.y_eval = seg_data.load_split(root, self.scored_split, opt.size, eval_limit)
            self._check_labels(self.y_train, opt.train_split, whole=True)
            self._check_labels(self.y_eval, self.scored_split, whole=True)
            self.t_train = self._targets(self.y_train)  # precomputed once, as the paper's

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        """The label maps the loss's `y` is made from: `labels` themselves, or their boundary
        targets (`targets: boundary`)."""
        if self.options.targets == "region":
            return labels
        return torch.from_numpy(np.stack([seg_metric.boundary_targets(label, self.target_band)
                                          for label in labels.numpy()]))

    def _check_labels(self, labels: torch.Tensor, split: str, whole: bool = False) -> None:
        """InputError for a label the task has no class for, or (`whole`: a whole split) for
        a split without a labelled pixel. Streamed data is checked batch by batch."""
        bad = labels[(labels != seg_metric.IGNORE) & (labels >= self.classes)]
        if len(bad):
            raise InputError(f"segmentation data: split {split!r} has label {int(bad[0])}, but the task "
                             f"has {self.classes} classes (task.options.classes)")
        if whole and bool((labels == seg_metric.IGNORE).all()):
            raise InputError(f"segmentation data: split {split!r} has no labelled pixel (all are 255)")

    def _train_batches(self, draws: Draws):
        """(images, labels, targets) of each batch of `draws`, from memory or through a
        DataLoader; `targets` are the label maps `y` is made from (`_targets`)."""
        opt = self.options
        if self.x_train is not None:
            for index in draws:
                yield self.x_train[index], self.y_train[index], self.t_train[index]
            return
        for images, labels in self.loader(self.train_data, batch_sampler=draws):
            self._check_labels(labels, opt.train_split)
            yield images, labels, self._targets(labels)

    def _eval_batches(self):
        opt = self.options
        if self.x_eval is not None:
            for start in range(0, len(self.y_eval), opt.eval_batch):
                yield self.x_eval[start:start + opt.eval_batch], self.y_eval[start:start + opt.eval_batch]
            return
        labelled = False
        for images, labels in self.loader(self.eval_data, batch_size=opt.eval_batch):
            self._check_labels(labels, self.scored_split)
            labelled = labelled or bool((labels != seg_metric.IGNORE).any())
            yield images, labels
        if not labelled:
            raise InputError(f"segmentation data: split {self.scored_split!r} has no labelled pixel (all are 255)")

    # --- the protocol --------------------------------------------------------------------
    def probe(self, n: int, seed: int) -> Probe:
        self.ensure_setup()
        gen = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self.train_data), generator=gen)[:n].tolist()
        (images, labels, targets), = self._train_batches([index])
        net = self.network(seed).eval()
        with torch.no_grad():
            logits = net(images.to(self.device))
        labels = labels.to(self.device)
        ideal = 10.0 * F.one_hot(labels.clamp(max=self.classes - 1), self.classes).permute(0, 3, 1, 2).float()
        # "seg": what the loss's y is made from; "labels": what the metric scores against
        return Probe(outputs={"seg": logits}, targets={"seg": targets.to(self.device), "labels": labels},
                     ideal={"seg": ideal})

    def loss_inputs(self, branch: str, outputs: torch.Tensor, targets: Any) -> Dict[str, torch.Tensor]:
        labels = targets.to(outputs.device)
        mask = (labels != seg_metric.IGNORE)[:, None].to(outputs.dtype)
        onehot = F.one_hot(torch.where(labels == seg_metric.IGNORE, 0, labels), outputs.shape[1])
        return {"yhat": outputs.softmax(dim=1) * mask, "y": onehot.permute(0, 3, 1, 2).to(outputs.dtype) * mask}

    def probe_metric(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, Any]) -> torch.Tensor:
        pred = outputs["seg"].argmax(dim=1).cpu().numpy()
        labels = targets["labels"].cpu().numpy()
        return torch.tensor([seg_metric.per_image(p, t, self.metric, self.classes, self.band, self.tolerance,
                                                  self.width, self.options.boundary)
                             for p, t in zip(pred, labels)], dtype=torch.float32)

    # --- the proxy -----------------------------------------------------------------------
    def train(self, loss: LossFn, seed: int) -> TrainResult:
        self.ensure_setup()
        opt = self.options
        net = self.network(seed).train()
        head = {id(p) for p in net.head_parameters()}
        optim = self.optimizer([{"params": [p for p in net.parameters() if id(p) not in head], "lr": opt.lr},
                                {"params": net.head_parameters(), "lr": opt.lr * opt.head_lr}])
        total = self.iterations()
        if opt.schedule == "poly":  # (1 - i/T)^0.9 from lr down to min_lr (the head's in proportion)
            floor = min(opt.min_lr / opt.lr, 1.0)
            sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda i: floor + (1 - floor) * (1 - i / total) ** 0.9)
        draws = Draws(len(self.train_data), total, opt.batch_size, seed)
        for images, _, targets in self._train_batches(draws):
            logits = net(images.to(self.device))
            value = loss({"seg": self.loss_inputs("seg", logits, targets)})
            optim.zero_grad()
            value.backward()
            optim.step()
            if opt.schedule == "poly":
                sched.step()
        net.eval()
        scores = seg_metric.SegScores(self.classes, self.band, self.tolerance, self.width, opt.boundary)
        with torch.no_grad():
            for images, labels in self._eval_batches():
                logits = net(images.to(self.device))
                invalid = not_finite("outputs", [logits], total)
                if invalid:
                    return invalid
                for pred, label in zip(logits.argmax(dim=1).cpu().numpy(), labels.numpy()):
                    scores.add(pred, label)
        # a metric is NaN only where the split has no boundary (BIoU, BF1): the engine records
        # such an evaluation as an error, never as a score
        metrics = scores.result()
        return TrainResult(score=metrics[self.metric], metrics=metrics, iterations=total)
