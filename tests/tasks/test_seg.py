"""Seg: the task contract on tiny synthetic scenes, and what the loss inputs hide."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gp_losses.testing import TaskContract
from search_helpers import paper_task, trains_two_iterations
from tasks.seg.metric import IGNORE, METRICS

ROOT = Path(__file__).resolve().parents[2]


class TestSegContract(TaskContract):
    @pytest.fixture
    def task(self, tiny_seg):
        return tiny_seg


def test_ignored_pixels_give_no_gradient(tiny_seg):
    """yhat and y are masked: a loss's gradient at a pixel labelled 255 is zero."""
    logits = torch.randn(2, tiny_seg.classes, 8, 8, requires_grad=True)
    labels = torch.randint(0, tiny_seg.classes, (2, 8, 8))
    labels[0, 2:5, 3:6] = IGNORE
    inputs = tiny_seg.loss_inputs("seg", logits, labels)
    assert inputs["y"][0, :, 2:5, 3:6].abs().sum() == 0 and inputs["y"][1].sum() == 64
    (-(inputs["y"] * (inputs["yhat"] + 1e-12).log()).sum() + (inputs["yhat"] ** 2).sum()).backward()
    assert logits.grad[0, :, 2:5, 3:6].abs().sum() == 0
    assert logits.grad[0, :, 0:2].abs().sum() > 0


def test_every_evaluation_reports_the_six_metrics_and_both_boundary_forms(tiny_seg):
    from gp_losses.evaluate import proxy_evaluate
    from gp_losses.space import SearchSpace

    space = SearchSpace(tiny_seg.branches)
    result = proxy_evaluate(tiny_seg, space.compile(space.parse("Neg(Mul(y, Log(yhat)))")), 0, 300)
    assert result.status == "ok"
    assert set(result.metrics) == {"miou", "fwiou", "gacc", "macc", "biou", "bf1",
                                   "biou_csurka", "bf1_csurka", "biou_asl", "bf1_asl"}
    assert all(0 <= v <= 1 for v in result.metrics.values())
    assert (result.metrics["biou"], result.metrics["bf1"]) == (result.metrics["biou_csurka"],
                                                               result.metrics["bf1_csurka"])  # the default
    assert result.score == result.metrics["miou"]


TABLE_8 = {  # the paper's Table 8 (Seg), written with Table 1's operators (1/2 = Inv(one + one))
    "miou": "Mul(Inv(Add(one, one)), Neg(Log(Mul(Tanh(Mul(Mul(y, Inv(Add(one, y))), Sqrt(yhat))), "
            "Add(Square(yhat), y)))))",
    "fwiou": "Log(Mul(y, Log(Add(y, Mul(Add(y, yhat), Inv(yhat))))))",
    "gacc": "Exp(Square(Add(y, Neg(Sqrt(yhat)))))",
    "macc": "Tanh(Sqrt(MeanNHW(Mul(Neg(Log(yhat)), Sqrt(MaxPool(Sqrt(Add(y, y))))))))",
    "biou": "Neg(Log(Mul(Mul(Mul(Mul(yhat, Square(yhat)), y), Sqrt(Neg(MinPool(Neg(yhat))))), "
            "Exp(Square(Mul(yhat, Exp(yhat)))))))",
    "bf1": "Exp(Add(MeanNHW(Mul(Neg(MaxPool(y)), Log(MaxPool(yhat)))), "
           "Tanh(MeanNHW(Add(Add(yhat, yhat), one)))))",
}


@pytest.fixture(scope="module")
def default_size_options(tmp_path_factory):
    """runs/seg.yaml's task options (96 px images and network) on 20 scenes."""
    from gp_losses.context import build_context, load_run_config

    cache = tmp_path_factory.mktemp("seg96")
    config = load_run_config("seg", None, [f"task.options.cache_dir={cache}", "task.options.synthetic_train=12",
                                           "task.options.synthetic_val=4", "task.options.synthetic_test=4"])
    return build_context(config).options


@pytest.mark.parametrize("metric", sorted(TABLE_8))
def test_the_papers_segmentation_losses_pass_the_protocol_for_their_metric(metric, default_size_options):
    """With the protocol and task options of runs/seg.yaml, each scored by the loss's own
    target metric; the negated loss fails."""
    from gp_losses.context import build_context, load_run_config
    from gp_losses.rejection import Protocol
    from tasks.seg import SegTask

    config = load_run_config("seg", None, [f"task.metric={metric}"])
    task = SegTask(default_size_options, metric=metric)
    space = build_context(config).space
    protocol = Protocol(task, space.branches, space.operators, config.protocol)
    (tree,) = space.parse(TABLE_8[metric])
    result = protocol.check(0, tree)
    assert result.passed, (metric, result)
    (negated,) = space.parse(f"Neg({TABLE_8[metric]})")
    assert not protocol.check(0, negated).passed


def test_the_dice_baseline_is_one_minus_the_dice_coefficient_per_class(tiny_seg):
    """Its tree, reduced as every loss is (sum / (N H W)), equals the sum over classes of
    1 - 2 |P ∩ G| / (|P| + |G|) with soft counts, computed here by hand."""
    from gp_losses.space import SearchSpace

    space = SearchSpace(tiny_seg.branches)
    loss = space.compile(space.parse(tiny_seg.baselines["dice"]["seg"]))
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, tiny_seg.classes, 10, 12, generator=gen)
    labels = torch.randint(0, tiny_seg.classes, (3, 10, 12), generator=gen)
    inputs = tiny_seg.loss_inputs("seg", logits, labels)
    p, g = inputs["yhat"], inputs["y"]
    by_hand = (1 - 2 * (p * g).sum((0, 2, 3)) / (p.sum((0, 2, 3)) + g.sum((0, 2, 3)))).sum()
    assert loss({"seg": inputs}).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_a_split_with_no_labelled_pixel_is_refused(tmp_path):
    """A VOC directory whose val labels are all 255: the task says so at setup (exit 2 on
    the command line) instead of scoring its evaluations."""
    from PIL import Image

    from gp_losses.core.errors import InputError
    from tasks.seg import SegTask

    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / sub).mkdir(parents=True)
    for split, value in (("train", 1), ("val", IGNORE)):
        Image.new("RGB", (16, 16)).save(tmp_path / "JPEGImages" / f"{split}0.jpg")
        Image.new("L", (16, 16), value).save(tmp_path / "SegmentationClass" / f"{split}0.png")
        (tmp_path / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(f"{split}0\n")
    task = SegTask(SegTask.Options(data_root=str(tmp_path), size=16))
    with pytest.raises(InputError, match="split 'val' has no labelled pixel"):
        task.ensure_setup()


def _voc_fixture(root, splits):
    """A VOC-layout directory of 21-class palette labels (with 255 outlines), written here."""
    from PIL import Image

    from tasks.seg.synthetic import voc_palette

    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for split, count in splits.items():
        names = [f"{split}{k}" for k in range(count)]
        for name in names:
            label = np.zeros((40, 56), dtype=np.uint8)
            cls = rng.randint(1, 21)
            top, left = rng.randint(0, 20), rng.randint(0, 30)
            label[top:top + 16, left:left + 20] = cls
            label[top, left:left + 20] = IGNORE
            image = rng.randint(0, 255, (40, 56, 3)).astype(np.uint8)
            image[label == cls] = (cls * 12, 255 - cls * 12, 128)
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg")
            png = Image.fromarray(label, mode="P")
            png.putpalette(voc_palette())
            png.save(root / "SegmentationClass" / f"{name}.png")
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")


def test_paper_config_runs_two_iterations_on_a_voc_fixture(tmp_path):
    """runs/paper/seg_voc.yaml validates, and its DeepLabV3-R50 at 128 px trains two SGD
    iterations (poly schedule, head at 10x) on a VOC layout the test writes."""
    _voc_fixture(tmp_path / "voc", {"train_search": 4, "train_eval": 2, "val": 2})
    config, task = paper_task("runs/paper/seg_voc.yaml", [
        f"task.options.data_root={tmp_path / 'voc'}", "task.options.epochs=0",
        "task.options.iterations=2", "task.options.batch_size=2", "task.options.loader_workers=1"])
    assert config.task.options["model"] == "deeplabv3_resnet50" and config.search.evaluations == 500
    opt = task.options
    assert (opt.size, opt.optimizer, opt.lr, opt.head_lr, opt.schedule, opt.classes) == (128, "sgd", 0.02, 10, "poly", 21)
    assert opt.boundary == "asl"  # as the paper's Table 2 was scored
    trains_two_iterations(task, "ce", set(METRICS))
    assert task.x_train is None and len(task.train_data) == 4  # streamed
    image, label = task.train_data[0]
    assert image.shape == (3, 128, 128) and int(label.max()) == IGNORE


def test_streamed_data_trains_exactly_as_data_in_memory(tmp_path):
    """The same seed draws the same batches from a DataLoader (two loader processes) as from
    tensors in memory: the same scores; a streamed label the task has no class for is bad
    input, named."""
    from dataclasses import replace

    from gp_losses.core.errors import InputError
    from gp_losses.evaluate import proxy_evaluate
    from gp_losses.space import SearchSpace
    from tasks.seg import SegTask

    _voc_fixture(tmp_path / "voc", {"train": 6, "val": 3})
    memory = SegTask(SegTask.Options(data_root=str(tmp_path / "voc"), size=32, iterations=3, batch_size=2,
                                     width=4, eval_batch=2))
    stream = SegTask(replace(memory.options, loader="stream", loader_workers=2))
    space = SearchSpace(SegTask.branches, python_losses=SegTask.python_losses)
    loss = space.compile(space.parse("lovasz"))
    a, b = (proxy_evaluate(t, loss, 1, 300) for t in (memory, stream))
    assert a.status == b.status == "ok" and a.metrics == b.metrics
    assert torch.equal(memory.probe(3, 0).outputs["seg"], stream.probe(3, 0).outputs["seg"])
    few = SegTask(replace(stream.options, classes=3))
    with pytest.raises(InputError, match="has label .* but the task has 3 classes"):
        few.train(loss, 0)


def test_boundary_targets_make_y_and_the_metric_scores_the_labels(tmp_path):
    """`targets: boundary` (the paper's for BIoU and BF1): y is one-hot of the boundary
    targets, in memory and streamed alike, while the protocol and the evaluation score the
    label maps themselves."""
    from dataclasses import replace

    from gp_losses.evaluate import proxy_evaluate
    from gp_losses.space import SearchSpace
    from tasks.seg import SegTask
    from tasks.seg.metric import boundary_targets

    _voc_fixture(tmp_path / "voc", {"train": 6, "val": 3})
    memory = SegTask(SegTask.Options(data_root=str(tmp_path / "voc"), size=32, iterations=3, batch_size=2,
                                     width=4, eval_batch=2, targets="boundary", target_band=40))
    probe = memory.probe(3, 0)
    labels, targets = probe.targets["labels"], probe.targets["seg"]
    assert torch.equal(targets, torch.from_numpy(np.stack([boundary_targets(x, memory.target_band)
                                                            for x in labels.numpy()])))
    assert (targets == 0).sum() > (labels == 0).sum()  # object insides became background
    ideal = {"seg": probe.ideal["seg"]}
    assert (memory.probe_metric(ideal, probe.targets) == 1).all()
    stream = SegTask(replace(memory.options, loader="stream"))
    space = SearchSpace(SegTask.branches, python_losses=SegTask.python_losses)
    loss = space.compile(space.parse(SegTask.baselines["ce"]["seg"]))
    a, b = (proxy_evaluate(t, loss, 1, 300) for t in (memory, stream))
    assert a.status == b.status == "ok" and a.metrics == b.metrics
    region = proxy_evaluate(SegTask(replace(memory.options, targets="region")), loss, 1, 300)
    assert region.metrics != a.metrics


@pytest.mark.parametrize("metric", ["fwiou", "gacc", "macc", "biou", "bf1"])
def test_each_metric_has_a_run_config_over_the_task_defaults(metric):
    from gp_losses.context import load_run_config

    config = load_run_config(None, str(ROOT / f"runs/seg_{metric}.yaml"), [])
    assert (config.task.name, config.task.metric, config.name) == ("seg", metric, f"seg-{metric}")
    assert config.protocol.early_exit and config.task.options["width"] == 16  # from runs/seg.yaml
    longer = metric == "bf1"  # seg_bf1.yaml: a 4x longer proxy, fewer evaluations (docs/tasks.md)
    assert (config.search.evaluations, config.task.options["iterations"]) == ((30, 1600) if longer else (100, 400))
    assert config.retrain.options["iterations"] == 4000  # from runs/seg.yaml


def test_the_pareto_configs_search_two_metrics_at_the_one_metric_configs_cost():
    from gp_losses.context import build_context, load_run_config

    config = load_run_config(None, str(ROOT / "runs/seg_pareto.yaml"), [])
    bf1 = load_run_config(None, str(ROOT / "runs/seg_bf1.yaml"), [])
    context = build_context(config)
    assert [o.metric for o in context.pareto] == ["miou", "bf1"] and context.metric == "miou"
    assert (config.search.evaluations, config.search.population_init, config.task.options["iterations"]) == (
        bf1.search.evaluations, bf1.search.population_init, bf1.task.options["iterations"])
    det = load_run_config(None, str(ROOT / "runs/det_pareto.yaml"), [])
    assert [o.metric for o in build_context(det).pareto] == ["ap", "ap75"]
    assert det.search.evaluations == load_run_config("det", None, []).search.evaluations  # runs/det.yaml's cost
