"""`pose`: top-down heatmap pose estimation (Simple Baselines; paper sections 4.4, A.4).

A person crop goes in, 17 heatmaps come out (COCO keypoint order). One loss branch,
`heatmap`, with inputs `yhat` (predicted heatmaps, unbounded) and `y` (Gaussian targets),
both masked by the joint weights so that the loss applies only to labelled joints. Metric:
COCO keypoint AP by pycocotools' COCOeval (`ap`; also `ap50`, `ap75`, `ar`). The rejection
protocol scores each probe crop by its OKS with the ground truth (in [0, 1]).

Data: built-in synthetic people (generated once into a cache directory, then read as COCO),
or `data_root` pointing at a COCO-layout directory (ground-truth person boxes are used).
Splits: `train`, `val` (the search's score) and `test` (only `gp-losses retrain` scores it);
for COCO, name a split with annotations as `test_split` (COCO's test-dev has none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np
import torch

from gp_losses.contract import Branch, LossFn, Probe, TrainResult
from gp_losses.core.errors import InputError
from gp_losses.core.options import ConfigError, option
from primitives import ONE, Y, YHAT_REAL
from tasks.dataset import DataOptions, DatasetTask, not_finite
from tasks.pose import data as pose_data
from tasks.pose import metric as pose_metric
from tasks.pose.model import build_model


class PoseTask(DatasetTask):
    """Top-down heatmap pose estimation on synthetic people or COCO; COCO keypoint AP."""

    name = "pose"
    branches = (Branch("heatmap", (YHAT_REAL, Y, ONE)),)
    metrics = ("ap", "ap50", "ap75", "ar")
    baselines = {"mse": {"heatmap": "Square(Add(yhat, Neg(y)))"}}
    splits = ("train", "val", "test")
    loss_inputs_doc = {"heatmap": "yhat = predicted heatmaps * w and y = Gaussian target heatmaps "
                                  "(sigma 2 heatmap pixels) * w, both (N, 17, h, w), where w is 1 for a "
                                  "labelled joint and 0 otherwise (w[:, :, None, None])"}

    @dataclass(frozen=True)
    class Options(DataOptions):
        """data_root: a COCO-layout directory; "" = built-in synthetic people."""

        synthetic_train: int = option(1500, 1)
        synthetic_val: int = option(300, 1)
        synthetic_test: int = option(300, 1)
        synthetic_size: int = option(128, 32, 4096, help="side of the synthetic images, pixels")
        train_limit: int = option(0, 0, help="use only the first N training persons (0 = all)")
        iterations: int = option(1000, 1, help="proxy training length, unless epochs > 0")
        model: str = option("small", choices=("small", "resnet50"))
        stride: int = option(2, choices=(2, 4, 8), help="heatmap stride of the small model (resnet50: 4)")
        width: int = option(32, 2, help="channels of the small model")
        weights_file: str = ""         # local ResNet-50 weights for model=resnet50
        input_height: int = option(64, 1)
        input_width: int = option(48, 1)
        lr: float = option(3e-3, 0, lo_open=True, help="Adam")
        warmup: int = option(50, 1, help="linear warm-up iterations, then the schedule")
        schedule: str = option("cosine", choices=("cosine", "constant"))
        eval_batch: int = option(128, 1)
        loader: str = option("memory", choices=("memory", "stream"),
                             help="memory: all crops made once, as tensors; stream: a DataLoader")
        augment: bool = False          # Simple Baselines' flip, scale and rotation (stream)
        augment_scale: float = option(0.3, 0, 0.9, help="crop scale factor in [1 - s, 1 + s]")
        augment_rotation: float = option(40.0, 0, 180, help="rotation in [-r, r] degrees")

    @classmethod
    def check_options(cls, options: Any) -> None:
        multiple = 8 if options.model == "small" else 32  # the encoder's total stride
        for key in ("input_height", "input_width"):
            if getattr(options, key) % multiple:
                raise ConfigError(f"task.options.{key}: the {options.model} model needs a multiple of "
                                  f"{multiple}, got {getattr(options, key)}")
        if options.width % 2:
            raise ConfigError(f"task.options.width: expected an even number, got {options.width}")
        if options.augment and options.loader != "stream":
            raise ConfigError("task.options.augment: augmentation makes new crops at every draw; it needs "
                              "task.options.loader: stream")

    # --- data ----------------------------------------------------------------------------
    def synthetic_name(self) -> str:
        opt = self.options
        return f"pose-synthetic-v1-{opt.synthetic_train}-{opt.synthetic_val}-{opt.synthetic_seed}-{opt.synthetic_size}"

    def write_synthetic(self, root: Path) -> Path:
        from tasks.pose.synthetic import ensure_dataset

        opt = self.options
        return ensure_dataset(root, opt.synthetic_train, opt.synthetic_val, opt.synthetic_seed,
                              opt.synthetic_size, opt.synthetic_test)

    @classmethod
    def export_inputs(cls, options: Any) -> Dict[str, Any]:
        return {"kind": "dense"}  # heatmaps and (N, 17) joint weights

    def build_network(self) -> torch.nn.Module:
        opt = self.options
        return build_model(opt.model, opt.weights_file or None, opt.stride, opt.width)

    def train_size(self) -> int:
        return len(self.train_set.images) if self.train_set is not None else len(self.train_crops)

    def setup(self) -> None:
        opt = self.options
        self.input_hw = (opt.input_height, opt.input_width)
        self.stride = opt.stride if opt.model == "small" else 4
        self.heatmap_hw = (opt.input_height // self.stride, opt.input_width // self.stride)
        if opt.weights_file and not Path(opt.weights_file).is_file():
            raise InputError(f"task.options.weights_file: {opt.weights_file!r} is not a file")
        root = self.root()
        split = self.scored_split
        aspect = self.input_hw[1] / self.input_hw[0]
        if opt.loader == "memory":
            self.train_set = pose_data.load_split(root, opt.train_split, self.input_hw, self.heatmap_hw,
                                                  opt.train_limit or None)
            self.eval_set = pose_data.load_split(root, split, self.input_hw, self.heatmap_hw,
                                                 opt.val_limit or None)
            return
        augment = (pose_data.Augment(opt.augment_scale, opt.augment_rotation) if opt.augment else None)
        self.train_crops = pose_data.PoseCrops(
            pose_data.read_index(root, opt.train_split, aspect, opt.train_limit or None),
            self.input_hw, self.heatmap_hw, augment)
        self.eval_crops = pose_data.PoseCrops(pose_data.read_index(root, split, aspect, opt.val_limit or None),
                                              self.input_hw, self.heatmap_hw)
        self.train_set = self.eval_set = None

    def _eval_meta(self):
        """What evaluate() needs of the scored split: centres, scales, image ids, ground truth."""
        return self.eval_set if self.eval_set is not None else self.eval_crops.index

    def _predict(self, net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        net.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.options.eval_batch):
                out.append(net(images[start:start + self.options.eval_batch].to(self.device)).cpu())
        return torch.cat(out)

    # --- the contract --------------------------------------------------------------------
    def probe(self, n: int, seed: int) -> Probe:
        self.ensure_setup()
        gen = torch.Generator().manual_seed(seed)
        index = torch.randperm(self.train_size(), generator=gen)[:n]
        if self.train_set is not None:
            ts, index = self.train_set, index.numpy()
        else:  # the probe crops only, made without augmentation
            ts, index = self.train_crops.stack(index.tolist()), np.arange(len(index))
        outputs = self._predict(self.network(seed), ts.images[index])
        joints = image_joints(ts, index)
        targets = {"heatmaps": ts.heatmaps[index], "weights": ts.weights[index],
                   "joints": joints, "visible": ts.weights[index].numpy(), "centers": ts.centers[index],
                   "sizes": ts.scales[index], "areas": ts.areas[index]}
        return Probe(outputs={"heatmap": outputs}, targets={"heatmap": targets},
                     ideal={"heatmap": ts.heatmaps[index].clone()})

    def loss_inputs(self, branch: str, outputs: torch.Tensor, targets: Any) -> Dict[str, torch.Tensor]:
        weights = targets["weights"].to(outputs.device)[:, :, None, None]
        return {"yhat": outputs * weights, "y": targets["heatmaps"].to(outputs.device) * weights}

    def probe_metric(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, Any]) -> torch.Tensor:
        t = targets["heatmap"]
        coords, _ = pose_metric.decode(outputs["heatmap"].cpu(), self.stride)
        pred = pose_metric.to_image(coords.numpy(), t["centers"], t["sizes"], self.input_hw)
        values = pose_metric.oks_per_sample(pred, t["joints"], t["visible"], t["areas"])
        return torch.tensor(values, dtype=torch.float32)

    def _batches(self, seed: int, total: int):
        """`total` training batches (images, heatmaps, weights) drawn with `seed`."""
        opt = self.options
        if self.train_set is not None:  # in memory: random persons, with replacement
            ts = self.train_set
            gen = torch.Generator().manual_seed(seed)
            for _ in range(total):
                index = torch.randint(0, len(ts.images), (min(opt.batch_size, len(ts.images)),), generator=gen)
                yield ts.images[index], ts.heatmaps[index], ts.weights[index]
            return
        crops = self.train_crops
        batch = min(opt.batch_size, len(crops))
        sampler = pose_data.DrawSampler(len(crops), total * batch, seed)
        for item in self.loader(crops, batch_size=batch, sampler=sampler, drop_last=True):
            yield item["image"], item["heatmaps"], item["weights"]

    def train(self, loss: LossFn, seed: int) -> TrainResult:
        self.ensure_setup()
        opt = self.options
        net = self.network(seed)
        adam = self.optimizer(net.parameters())
        total = self.iterations()
        cosine = opt.schedule == "cosine"
        schedule = torch.optim.lr_scheduler.LambdaLR(
            adam, lambda it: warmup_cosine(it, total, opt.warmup) if cosine else min(1.0, (it + 1) / opt.warmup))
        net.train()
        for images, target_maps, weights in self._batches(seed, total):
            heatmaps = net(images.to(self.device, non_blocking=True))
            targets = {"heatmaps": target_maps, "weights": weights}
            value = loss({"heatmap": self.loss_inputs("heatmap", heatmaps, targets)})
            adam.zero_grad()
            value.backward()
            adam.step()
            schedule.step()
        if self.eval_set is not None:
            heatmaps = self._predict(net, self.eval_set.images)
        else:
            heatmaps = torch.cat([self._predict(net, item["image"]) for item in
                                  self.loader(self.eval_crops, batch_size=opt.eval_batch)])
        invalid = not_finite("heatmaps", [heatmaps], total)
        if invalid:
            return invalid
        metrics = self.evaluate(heatmaps)
        return TrainResult(score=metrics[self.metric], metrics=metrics, iterations=total)

    def evaluate(self, heatmaps: torch.Tensor) -> Dict[str, float]:
        """COCO keypoint AP of predicted heatmaps of the scored split (pycocotools)."""
        vs = self._eval_meta()
        coords, maxvals = pose_metric.decode(heatmaps, self.stride)
        keypoints = pose_metric.to_image(coords.numpy(), vs.centers, vs.scales, self.input_hw)
        results = pose_metric.coco_results(vs.image_ids, keypoints, maxvals.numpy())
        return pose_metric.coco_keypoint_ap(restrict(vs.coco, vs.image_ids), results)


def warmup_cosine(iteration: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` iterations, then cosine to 0."""
    if iteration < warmup:
        return (iteration + 1) / warmup
    progress = (iteration - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def restrict(coco: Dict, image_ids) -> Dict:
    """The ground truth of the evaluated images only (a `val_limit` may cut a split)."""
    keep = set(int(i) for i in image_ids)
    return {**coco, "images": [im for im in coco["images"] if im["id"] in keep],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}


def image_joints(ts: pose_data.PoseSet, index: np.ndarray) -> np.ndarray:
    """Ground-truth joints of the selected crops, in image pixels."""
    return pose_metric.to_image(ts.joints[index].numpy(), ts.centers[index], ts.scales[index],
                                (ts.images.shape[2], ts.images.shape[3]))
