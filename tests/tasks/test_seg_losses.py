"""The seg baselines written in Python: hand-computed values, an independent SSIM, and the
paths that take a loss by name (train, probe, export)."""

import json
import math

import numpy as np
import pytest
import torch

from gp_losses.cli import main
from tasks.seg.losses import lovasz_softmax, ssim_loss, ssim_map, weighted_ce
from tasks.seg.metric import METRICS


def inputs_from(probs, labels, classes):
    """Masked seg inputs as the task builds them: probs (P, C) and labels (P,) as a 1 × P image."""
    probs = torch.tensor(probs, dtype=torch.float64).T.reshape(1, classes, 1, -1)
    labels = torch.tensor(labels)
    mask = (labels != 255).to(torch.float64)
    onehot = torch.nn.functional.one_hot(torch.where(labels == 255, 0, labels), classes).T
    return {"yhat": probs * mask, "y": (onehot.to(torch.float64) * mask).reshape(1, classes, 1, -1)}


def test_lovasz_of_crisp_predictions_is_the_jaccard_loss():
    """On 0/1 predictions the Lovász extension equals 1 - IoU per class (Berman et al.):
    class 0: I 1, U 3; class 1: I 2, U 3; class 2: I 0, U 1; the 255 pixel takes no part."""
    labels = [0, 0, 1, 1, 2, 255]
    pred = [0, 1, 1, 1, 0, 2]
    probs = np.eye(3)[pred]
    value = lovasz_softmax(inputs_from(probs, labels, 3))
    assert value.item() == pytest.approx(((1 - 1 / 3) + (1 - 2 / 3) + 1) / 3, abs=1e-12)


def test_lovasz_softmax_by_hand():
    """Two pixels, two classes. Class 0: errors 0.2 (fg) and 0.3 (bg), sorted 0.3, 0.2; the
    Jaccard loss is 1/2 after the first and 1 after both: 0.3·1/2 + 0.2·1/2 = 0.25. Class 1:
    errors 0.2 (bg) and 0.3 (fg): 1 after the first, 1 after both: 0.3·1 + 0.2·0 = 0.3."""
    value = lovasz_softmax(inputs_from([[0.8, 0.2], [0.3, 0.7]], [0, 1], 2))
    assert value.item() == pytest.approx((0.25 + 0.3) / 2, abs=1e-12)


def test_lovasz_skips_classes_absent_from_the_ground_truth_and_has_a_gradient():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], dtype=torch.float64, requires_grad=True)
    inputs = inputs_from(probs.detach().numpy(), [0, 0], 3)
    only_class_0 = lovasz_softmax(inputs_from([[0.6, 0.4], [0.2, 0.8]], [0, 0], 2)).item()
    assert lovasz_softmax(inputs).item() == pytest.approx(only_class_0, abs=1e-12)
    yhat = inputs["yhat"].clone().requires_grad_(True)
    lovasz_softmax({"yhat": yhat, "y": inputs["y"]}).backward()
    assert torch.isfinite(yhat.grad).all() and yhat.grad.abs().sum() > 0


def test_weighted_ce_by_hand():
    """Three class-0 pixels, one class-1 pixel, one ignored: weights 4/(2·3) and 4/(2·1)."""
    probs = [[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.5, 0.5]]
    value = weighted_ce(inputs_from(probs, [0, 0, 0, 1, 255], 2))
    expected = (2 / 3 * 3 * -math.log(0.9) + 2 * -math.log(0.4)) / 5  # / (N·H·W), 5 pixels
    assert value.item() == pytest.approx(expected, abs=1e-12)


def test_ssim_of_identical_maps_is_zero_and_matches_scikit_image_inside_the_border():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    gen = torch.Generator().manual_seed(0)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (1, 32, 32), generator=gen), 3).permute(0, 3, 1, 2)
    y = y.to(torch.float64)
    yhat = torch.rand(1, 3, 32, 32, generator=gen, dtype=torch.float64).softmax(dim=1)
    assert ssim_map(y, y).min().item() == pytest.approx(1.0, abs=1e-12)
    assert ssim_loss({"yhat": y, "y": y}).item() == pytest.approx(0.0, abs=1e-9)  # and CE 0
    ours = ssim_map(yhat, y)
    ce = -(y * yhat.log()).sum().item() / (32 * 32)
    assert ssim_loss({"yhat": yhat, "y": y}).item() == pytest.approx(ce + 1 - ours.mean().item(), abs=1e-12)
    for c in range(3):  # scikit-image pads by reflection, we by zeros: compare 5 px from the border
        _, ref = skimage_metrics.structural_similarity(yhat[0, c].numpy(), y[0, c].numpy(), data_range=1.0,
                                                       gaussian_weights=True, sigma=1.5,
                                                       use_sample_covariance=False, full=True)
        assert np.allclose(ours[0, c, 5:-5, 5:-5].numpy(), ref[5:-5, 5:-5], atol=1e-6)


def test_the_python_baselines_train_by_name(tiny_seg):
    from gp_losses.evaluate import proxy_evaluate
    from gp_losses.space import SearchSpace
    from gp_losses.torch_loss import PythonLoss

    space = SearchSpace(tiny_seg.branches, python_losses=tiny_seg.python_losses)
    for name in ("wce", "lovasz", "ssim"):
        (branch,) = space.parse(name)
        assert isinstance(branch, PythonLoss) and str(branch) == name
        assert space.format(space.parse({"seg": name})) == {"seg": name}
        result = proxy_evaluate(tiny_seg, space.compile([branch]), 0, 300)
        assert result.status == "ok", result
        assert set(result.metrics) == set(METRICS)


def test_probe_export_and_formula_refuse_a_python_loss_by_name(capsys, tmp_path):
    from gp_losses import export
    from gp_losses.context import build_context, load_run_config
    from gp_losses.core.errors import InputError

    small = ["--set", f"task.options.cache_dir={tmp_path}", "--set", "task.options.synthetic_train=8",
             "--set", "task.options.synthetic_val=4", "--set", "task.options.synthetic_test=4"]
    assert main(["probe", "--task", "seg", "--loss", "lovasz", *small]) == 2
    assert "Python loss 'lovasz'" in capsys.readouterr().err
    with pytest.raises(InputError, match="import tasks.seg.losses.weighted_ce"):
        export.to_module("wce", task="seg")
    space = build_context(load_run_config("seg", None, [])).space
    with pytest.raises(InputError, match="no formula"):
        space.formulas(space.parse("ssim"))


def test_train_prints_all_six_metrics_for_a_python_baseline(capsys, tmp_path):
    code = main(["train", "--task", "seg", "--metric", "bf1", "--loss", "lovasz",
                 "--set", f"task.options.cache_dir={tmp_path}", "--set", "task.options.synthetic_train=8",
                 "--set", "task.options.synthetic_val=4", "--set", "task.options.synthetic_test=4",
                 "--set", "task.options.synthetic_size=48", "--set", "task.options.size=48",
                 "--set", "task.options.iterations=3", "--set", "task.options.width=4"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["status"] == "ok" and data["loss"] == {"seg": "lovasz"}
    assert data["score"] == data["metrics"]["bf1"]
    assert set(data["metrics"]) == set(METRICS)
