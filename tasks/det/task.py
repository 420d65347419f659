"""`det` and `ins`: object detection with Faster R-CNN and instance segmentation with Mask
R-CNN, torchvision's own classes (paper sections 4.2, 4.3, A.2, A.3; Tables 4, 6a).

Branches, searched together: `cls_rpn`, `reg_rpn`, `cls_rcnn`, `reg_rcnn` (+ `mask` for `ins`),
weighted 1.0 (classification) and 10.0 (regression); their inputs are what the extension point
(tasks/det/heads.py) hands over. Metric: COCO AP by pycocotools (`bbox` for det, `segm` for
ins): `ap ap50 ap75`. The rejection protocol's probe and per-image metric: tasks/det/probe.py.

Data: built-in synthetic scenes (tasks/det/synthetic.py, written once into a cache directory
as COCO instances), or `data_root` naming a COCO-layout directory, read by the same loader,
decoded on the fly by a DataLoader (a seed draws the same batches whatever `loader_workers`
is). Splits: `train`, `val` (the search's score) and `test` (only `gp-losses retrain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

from gp_losses.contract import LossFn, Probe, TrainResult
from gp_losses.core.errors import InputError
from gp_losses.core.options import ConfigError, option
from tasks.dataset import DataOptions, DatasetTask, Draws
from tasks.det import probe as det_probe
from tasks.det.data import CocoDetection, collate
from tasks.det.heads import BRANCHES, MASK_BRANCH, smooth_l1, use_losses
from tasks.det.metric import coco_ap, coco_results
from tasks.det.model import MODELS, build
from tasks.det.synthetic import ensure_dataset

CE = "Neg(Mul(y, Log(yhat)))"
IOU = "Neg(Log(Mul(i, Inv(u))))"  # -log(IoU), UnitBox (the paper's [59])
GIOU = "Add(Add(one, Neg(Mul(i, Inv(u)))), Mul(Add(e, Neg(u)), Inv(e)))"  # 1 - IoU + (e - u) / e
BOX_DOC = ("i, u, e = the areas of the intersection, union and smallest enclosing box of each "
           "positive sample's decoded predicted box and its matched ground-truth box, each (K, 1, 1, 1) "
           "(tasks.det.boxes.box_inputs)")


class Collector:
    """The loss object the heads call during training: it keeps each branch's inputs, so that
    the engine's loss sees all branches of one iteration together (as Eq. 4's sum)."""

    def __init__(self) -> None:
        self.inputs: Dict[str, Dict[str, torch.Tensor]] = {}

    def __call__(self, name: str, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        self.inputs[name] = inputs
        return torch.zeros(())


class DetTask(DatasetTask):
    """Object detection, Faster R-CNN, on synthetic scenes or COCO; COCO box AP."""

    name = "det"
    masks = False
    branches = BRANCHES
    metrics = ("ap", "ap50", "ap75")
    baselines = {"ce_l1": {"cls_rpn": CE, "reg_rpn": "smooth_l1", "cls_rcnn": CE, "reg_rcnn": "smooth_l1"},
                 "iou": {"cls_rpn": CE, "reg_rpn": "smooth_l1", "cls_rcnn": CE, "reg_rcnn": IOU},
                 "giou": {"cls_rpn": CE, "reg_rpn": "smooth_l1", "cls_rcnn": CE, "reg_rcnn": GIOU}}
    python_losses = {"reg_rpn": {"smooth_l1": smooth_l1}, "reg_rcnn": {"smooth_l1": smooth_l1}}
    splits = ("train", "val", "test")
    loss_inputs_doc = {
        "cls_rpn": "yhat = (1 - sigmoid(o), sigmoid(o)) of the objectness logits o of the RPN's sampled "
                   "anchors and y = (1 - t, t), t = 1 for an object anchor, each (K, 2, 1, 1)",
        "reg_rpn": BOX_DOC + "; the positive anchors",
        "cls_rcnn": "yhat = softmax(class logits, dim=1) and y = one_hot(labels, C) of the sampled "
                    "proposals, background as class 0, each (K, C, 1, 1)",
        "reg_rcnn": BOX_DOC + "; the positive proposals, the box of their ground-truth class",
    }

    @dataclass(frozen=True)
    class Options(DataOptions):
        """data_root: a COCO-layout directory; "" = built-in synthetic scenes."""

        batch_size: int = option(4, 1)
        size: int = option(96, 16, help="images are resized so that their shorter side is this...")
        max_size: int = option(0, 0, help="...and their longer side at most this (0: size)")
        model: str = option("small", choices=MODELS)
        width: int = option(16, 2, help="channels of the small backbone's first layer")
        weights_file: str = ""         # local weights for resnet50_fpn (a state dict)
        rpn_batch: int = option(64, 2, help="anchors sampled per image for the RPN's losses")
        roi_batch: int = option(64, 2, help="proposals sampled per image for the RoI heads' losses")
        optimizer: str = option("sgd", choices=("sgd", "adam"))
        lr: float = option(0.02, 0, lo_open=True)
        momentum: float = option(0.9, 0, 1, help="SGD momentum")
        weight_decay: float = option(1e-4, 0, help="SGD weight decay")
        warmup: int = option(50, 0, help="linear learning-rate warm-up, iterations")
        schedule: str = option("step", choices=("constant", "step"),
                               help="step: ×0.1 at 8/12 and 11/12 of training (MMDetection's 1x, in proportion)")
        clip_grad: float = option(10.0, 0, help="gradient norm clip (0: none)")
        eval_batch: int = option(16, 1)

    @classmethod
    def check_options(cls, options: Any) -> None:
        if options.max_size and options.max_size < options.size:
            raise ConfigError(f"task.options.max_size: {options.max_size} is below task.options.size "
                              f"({options.size}); the longer side cannot be shorter than the shorter one")

    # --- data ----------------------------------------------------------------------------
    collate = staticmethod(collate)

    def _sizes(self) -> Dict[str, int]:
        opt = self.options
        return {"train": opt.synthetic_train, "val": opt.synthetic_val, "test": opt.synthetic_test}

    def synthetic_name(self) -> str:
        opt = self.options
        return f"det-synthetic-v1-{'-'.join(map(str, self._sizes().values()))}-{opt.synthetic_seed}-{opt.synthetic_size}"

    def write_synthetic(self, root: Path) -> Path:
        return ensure_dataset(root, self._sizes(), self.options.synthetic_seed, self.options.synthetic_size)

    def build_network(self) -> torch.nn.Module:
        opt = self.options
        return build(opt.model, self.classes, self.masks, opt.size, opt.max_size or opt.size, opt.width,
                     opt.rpn_batch, opt.roi_batch, opt.weights_file or None)

    def train_size(self) -> int:
        return len(self.train_data)

    def setup(self) -> None:
        opt = self.options
        root = self.root()
        self.train_data = CocoDetection(root, opt.train_split, self.masks, opt.train_limit or None)
        self.eval_data = CocoDetection(root, self.scored_split, self.masks, opt.val_limit or None)
        if self.train_data.category_ids != self.eval_data.category_ids:
            raise InputError(f"detection data: splits {opt.train_split!r} and {self.scored_split!r} list "
                             "different categories")
        self.classes = self.train_data.classes
        labelled = [k for k, im in enumerate(self.train_data.images) if self.train_data.anns.get(im["id"])]
        if not labelled:
            raise InputError(f"detection data: split {opt.train_split!r} has no annotated object")
        self.labelled = labelled
        if not any(a.get("iscrowd", 0) == 0 for im in self.eval_data.images
                   for a in self.eval_data.anns.get(im["id"], [])):
            raise InputError(f"detection data: split {self.scored_split!r} has no annotated object to score")

    def _to_device(self, images, targets):
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets]
        return images, targets

    # --- the protocol --------------------------------------------------------------------
    def probe(self, n: int, seed: int) -> Probe:
        self.ensure_setup()
        opt = self.options
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.labelled), generator=gen)[:n].tolist()
        images, targets = self._to_device(*collate([self.train_data[self.labelled[k]] for k in order]))
        net = self.network(seed).train()
        outputs, ideal, det_targets = det_probe.build_probe(net, images, targets, opt.rpn_batch,
                                                            opt.roi_batch, self.masks)
        names = [b.name for b in BRANCHES + ((MASK_BRANCH,) if self.masks else ())]  # searched or not
        return Probe(outputs={b: outputs[b] for b in names}, targets={b: det_targets for b in names},
                     ideal={b: ideal[b] for b in names})

    def loss_inputs(self, branch: str, outputs: torch.Tensor, targets: Any) -> Dict[str, torch.Tensor]:
        return det_probe.loss_inputs(branch, outputs, targets)

    def probe_metric(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, Any]) -> torch.Tensor:
        return det_probe.image_scores(dict(outputs), targets[self.branches[0].name])

    # --- the proxy -----------------------------------------------------------------------
    def _lr_factor(self, iteration: int, total: int) -> float:
        opt = self.options
        factor = min(1.0, (iteration + 1) / opt.warmup) if opt.warmup else 1.0
        if opt.schedule == "step":
            factor *= 0.1 ** sum(iteration >= total * f for f in (8 / 12, 11 / 12))
        return factor

    def train(self, loss: LossFn, seed: int) -> TrainResult:
        self.ensure_setup()
        opt = self.options
        net = self.network(seed).train()
        collector = Collector()
        use_losses(net, collector)
        params = [p for p in net.parameters() if p.requires_grad]
        optim = self.optimizer(params)
        total = self.iterations()
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda i: self._lr_factor(i, total))
        draws = Draws(len(self.labelled), total, opt.batch_size, seed)
        labelled = torch.utils.data.Subset(self.train_data, self.labelled)
        for images, targets in self.loader(labelled, batch_sampler=draws):
            collector.inputs = {}
            net(*self._to_device(images, targets))
            value = loss(collector.inputs)
            optim.zero_grad()
            value.backward()
            if opt.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, opt.clip_grad)
            optim.step()
            sched.step()
        metrics = self.evaluate(net.eval())
        if metrics is None:
            return TrainResult.invalid("the trained network's detections are not finite", total)
        return TrainResult(score=metrics[self.metric], metrics=metrics, iterations=total)

    def evaluate(self, net) -> Optional[Dict[str, float]]:
        """COCO AP (`bbox`, or `segm` for ins) of `net`'s detections on the scored split, as
        torchvision's models return them in eval mode; None if one is not finite."""
        results: List[Dict] = []
        ids = self.eval_data.category_ids
        with torch.no_grad():
            for images, targets in self.loader(self.eval_data, batch_size=self.options.eval_batch):
                detections = net([im.to(self.device) for im in images])
                for det, target in zip(detections, targets):
                    if not all(torch.isfinite(v).all() for v in det.values() if v.is_floating_point()):
                        return None
                    det = {k: v.cpu() for k, v in det.items()}
                    results += coco_results(int(target["image_id"]), det["boxes"], det["scores"], det["labels"],
                                            ids, det.get("masks"))
        return coco_ap(self._ground_truth(), results, "segm" if self.masks else "bbox")

    def _ground_truth(self) -> Dict:
        """The scored split's COCO dict, only its evaluated images (a `val_limit` may cut it)."""
        coco = self.eval_data.coco
        keep = {im["id"] for im in self.eval_data.images}
        return {**coco, "images": list(self.eval_data.images),
                "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}


class InsTask(DetTask):
    """Instance segmentation, Mask R-CNN, on synthetic scenes or COCO; COCO mask AP."""

    name = "ins"
    masks = True
    branches = BRANCHES + (MASK_BRANCH,)
    baselines = {name: {**exprs, "mask": CE} for name, exprs in DetTask.baselines.items()}
    loss_inputs_doc = {**DetTask.loss_inputs_doc,
                       "mask": "yhat = (1 - sigmoid(m), sigmoid(m)) of the mask logits m of each positive "
                               "proposal for its ground-truth class and y = (1 - t, t), t its ground-truth "
                               "mask cropped to the proposal by RoIAlign (soft at the edges), each (K, 2, M, M)"}
