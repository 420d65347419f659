"""Det and ins: the task contract on tiny synthetic scenes, the probe's per-image AP against
pycocotools, and the branch-by-branch protocol metric."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gp_losses.testing import TaskContract
from search_helpers import paper_task, trains_two_iterations
from tasks.coco import coco_stats
from tasks.det.probe import average_precision

ROOT = Path(__file__).resolve().parents[2]


class TestDetContract(TaskContract):
    @pytest.fixture
    def task(self, tiny_det):
        return tiny_det


class TestInsContract(TaskContract):
    @pytest.fixture
    def task(self, tiny_ins):
        return tiny_ins


def _random_image(rng, gts, dets):
    xy = rng.uniform(0, 60, (gts, 2))
    gt = np.concatenate([xy, xy + rng.uniform(4, 30, (gts, 2))], axis=1)
    pick = rng.randint(0, gts, dets)
    boxes = gt[pick] + rng.normal(0, 3, (dets, 4))  # near a ground-truth box, some far off
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    scores = rng.uniform(0, 1, dets).round(2)  # ties among scores, as COCOeval sees them
    return gt, boxes, scores


@pytest.mark.parametrize("seed", range(6))
def test_per_image_ap_is_cocoevals_ap_of_that_image(seed):
    """One image, one class: COCOeval (bbox, all areas, up to 100 detections) is the reference."""
    rng = np.random.RandomState(seed)
    gt, boxes, scores = _random_image(rng, rng.randint(1, 6), rng.randint(1, 30))
    ground_truth = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 1, "name": "x"}],
                    "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                     "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                     "area": float((b[2] - b[0]) * (b[3] - b[1]))} for k, b in enumerate(gt)]}
    results = [{"image_id": 1, "category_id": 1, "score": float(s),
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for b, s in zip(boxes, scores)]
    reference = coco_stats(ground_truth, results, "bbox")[0]
    ours = average_precision(torch.tensor(boxes), torch.tensor(scores), torch.tensor(gt))
    assert ours == pytest.approx(reference, abs=1e-9)


def test_per_image_ap_of_hand_made_cases():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    assert average_precision(gt.clone(), torch.tensor([0.9, 0.8]), gt) == 1.0
    assert average_precision(gt[:1].clone(), torch.tensor([0.9]), gt) == pytest.approx(101 // 2 / 101 + 1 / 101)
    # a false positive ranked first halves the precision of both hits
    boxes = torch.cat([torch.tensor([[50.0, 50, 60, 60]]), gt])
    assert average_precision(boxes, torch.tensor([0.95, 0.9, 0.8]), gt) == pytest.approx(2 / 3)
    assert average_precision(torch.zeros((0, 4)), torch.zeros(0), gt) == 0.0


@pytest.mark.parametrize("fixture", ["tiny_det", "tiny_ins"])
def test_each_branch_alone_away_from_its_ideal_lowers_the_metric(fixture, request):
    """With the other branches ideal, each branch's initial outputs score below 1 on some
    image: the metric sees every branch (the RPN's through its proposals' AP)."""
    task = request.getfixturevalue(fixture)
    probe = task.probe(5, seed=0)
    for branch in task.branch_names():
        outputs = dict(probe.ideal)
        outputs[branch] = probe.outputs[branch]
        values = task.probe_metric(outputs, probe.targets)
        assert (values < 1).any() and (values >= 0).all(), branch


def test_an_empty_box_branch_contributes_zero(tiny_det):
    """A batch without a positive proposal gives the box branches nothing to learn from: the
    branch loss is 0, as torchvision's, not 0 / 0."""
    from gp_losses.space import SearchSpace
    from tasks.det.task import GIOU

    space = SearchSpace(tiny_det.branches)
    loss = space.compile(space.parse({"cls_rpn": "Neg(Mul(y, Log(yhat)))", "reg_rpn": GIOU,
                                      "cls_rcnn": "Neg(Mul(y, Log(yhat)))", "reg_rcnn": GIOU}))
    empty = {k: torch.zeros((0, 1, 1, 1), requires_grad=True) for k in "iue"}
    value = loss.branch(3, empty)
    assert value.item() == 0.0 and torch.isfinite(value)


TABLE_8 = {  # the paper's Table 8 (Det), written with Table 1's operators
    "cls_rpn": "Mul(Exp(Tanh(y)), Inv(yhat))",
    "reg_rpn": "Mul(e, Inv(Add(i, u)))",
    "cls_rcnn": "Neg(Mul(y, Log(yhat)))",
    "reg_rcnn": "Neg(Log(Mul(i, Inv(e))))",
}


@pytest.fixture(scope="module")
def det_protocol(tmp_path_factory):
    """The rejection protocol of runs/det.yaml on its task options, over 30 training scenes."""
    from gp_losses.context import build_context, load_run_config
    from gp_losses.rejection import Protocol

    cache = tmp_path_factory.mktemp("det-protocol")
    config = load_run_config("det", None, [f"task.options.cache_dir={cache}", "task.options.synthetic_train=30",
                                           "task.options.synthetic_val=2", "task.options.synthetic_test=2"])
    context = build_context(config)
    task = context.make_task("cpu")
    return Protocol(task, task.branches, context.space.operators, config.protocol), context.space


@pytest.mark.parametrize("branch", sorted(TABLE_8))
def test_the_papers_detection_losses_pass_on_their_branch_and_their_negations_fail(branch, det_protocol):
    protocol, space = det_protocol
    index = space.branch_names.index(branch)
    tree = space.parse(TABLE_8)[index]
    negated = space.parse({b: f"Neg({expr})" for b, expr in TABLE_8.items()})[index]
    passed = protocol.check(index, tree)
    assert passed.passed, (branch, passed)
    failed = protocol.check(index, negated)
    assert not failed.passed and failed.reason == "low_gain" and failed.gain < 0, (branch, failed)


@pytest.mark.parametrize("task_name", ["det", "ins"])
def test_paper_config_runs_two_iterations_on_a_coco_fixture(task_name, tmp_path):
    """runs/paper/{det,ins}_coco.yaml validate, and their ResNet-50 FPN networks train two SGD
    iterations on a COCO layout written here (at 64 px, not 800, to stay quick)."""
    from tasks.det.synthetic import ensure_dataset

    root = ensure_dataset(tmp_path / "coco", {"train": 4, "val": 2, "test": 2}, 0, 64)
    config, task = paper_task(f"runs/paper/{task_name}_coco.yaml", [
        f"task.options.data_root={root}", "task.options.train_split=train", "task.options.val_split=val",
        "task.options.epochs=0", "task.options.iterations=2", "task.options.batch_size=2",
        "task.options.size=64", "task.options.max_size=64", "task.options.loader_workers=1"])
    assert config.task.name == task_name and config.search.evaluations == 500
    assert config.protocol.lr == 0.005 and config.protocol.relative_gain  # runs/<task>.yaml's, laid under
    opt = task.options
    assert (opt.model, opt.optimizer, opt.lr, opt.warmup, opt.rpn_batch, opt.roi_batch) == \
        ("resnet50_fpn", "sgd", 0.04, 250, 256, 512)
    trains_two_iterations(task, "ce_l1", {"ap", "ap50", "ap75"})


def test_a_search_over_some_branches_trains_the_others_with_a_fixed_baseline(tiny_det, monkeypatch):
    """search.branches: [cls_rcnn, reg_rcnn] with search.fixed: ce_l1 (the paper's Table 4
    rows that search the Fast R-CNN branches only): the task has those two branches; training
    adds ce_l1's RPN losses; the protocol checks a searched branch with the RPN's outputs ideal."""
    from gp_losses.core.options import ConfigError
    from gp_losses.context import partial_task
    from gp_losses.rejection import Protocol
    from gp_losses.space import SearchSpace
    from tasks.det import DetTask

    Partial = partial_task(DetTask, ("cls_rcnn", "reg_rcnn"), "ce_l1")
    assert [b.name for b in Partial.branches] == ["cls_rcnn", "reg_rcnn"] and Partial.name == "det"
    assert Partial.fixed == {"cls_rpn": DetTask.baselines["ce_l1"]["cls_rpn"], "reg_rpn": "smooth_l1"}
    assert set(Partial.baselines["giou"]) == {"cls_rcnn", "reg_rcnn"}
    task = Partial(tiny_det.options)
    searched = SearchSpace(Partial.branches, python_losses=Partial.python_losses)
    trees = searched.parse({"cls_rcnn": TABLE_8["cls_rcnn"], "reg_rcnn": TABLE_8["reg_rcnn"]})
    loss = searched.compile(trees)
    seen = {}
    monkeypatch.setattr(DetTask, "train", lambda self, total, seed: seen.setdefault("total", total))
    task.train(loss, 0)
    probe = tiny_det.probe(5, seed=0)
    values = {b: tiny_det.loss_inputs(b, probe.outputs[b], probe.targets[b]) for b in tiny_det.branch_names()}
    full = SearchSpace(DetTask.branches, python_losses=DetTask.python_losses)
    whole = full.compile(full.parse({**DetTask.baselines["ce_l1"], "cls_rcnn": TABLE_8["cls_rcnn"],
                                     "reg_rcnn": TABLE_8["reg_rcnn"]}))
    assert seen["total"](values).item() == pytest.approx(whole(values).item(), rel=1e-6)
    monkeypatch.undo()
    protocol = Protocol(task, Partial.branches, searched.operators, det_protocol_config())
    assert protocol.check(1, trees[1]).passed
    with pytest.raises(ConfigError, match="no branch 'reg_rnn' .did you mean 'reg_rcnn'"):
        partial_task(DetTask, ("reg_rnn",), "")
    with pytest.raises(ConfigError, match="search.fixed: task 'det' has no baseline 'l1'"):
        partial_task(DetTask, ("reg_rcnn",), "l1")
    with pytest.raises(ConfigError, match="search.fixed: 'giou' names the baseline .* set search.branches too"):
        partial_task(DetTask, (), "giou")


def det_protocol_config():
    from gp_losses.context import load_run_config

    return load_run_config("det", None, []).protocol


class _Oracle(torch.nn.Module):
    """Returns each image's ground truth as its detections (score 1), found by its pixel sum."""

    def __init__(self, data, masks):
        super().__init__()
        self.by_shape = {}
        for k in range(len(data)):
            image, target = data[k]
            self.by_shape.setdefault(image.sum().item(), target)
        self.masks = masks

    def forward(self, images):
        out = []
        for image in images:
            target = self.by_shape[image.sum().item()]
            det = {"boxes": target["boxes"], "labels": target["labels"],
                   "scores": torch.ones(len(target["boxes"]))}
            if self.masks:
                det["masks"] = target["masks"][:, None].float()
            out.append(det)
        return out


@pytest.mark.parametrize("fixture", ["tiny_det", "tiny_ins"])
def test_perfect_detections_score_one_through_the_tasks_evaluation(fixture, request):
    """The task's own evaluation path (loader, label-to-category mapping, COCO results of a
    torchvision-style output, COCOeval on the split's ground truth) gives AP 1.0 to the ground
    truth; a NaN box is refused as not finite."""
    task = request.getfixturevalue(fixture)
    oracle = _Oracle(task.eval_data, task.masks)
    assert task.evaluate(oracle) == {"ap": 1.0, "ap50": 1.0, "ap75": 1.0}
    forward = oracle.forward
    oracle.forward = lambda images: [{**d, "boxes": d["boxes"] * float("nan")} for d in forward(images)]
    assert task.evaluate(oracle) is None
