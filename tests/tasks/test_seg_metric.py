"""The segmentation metrics (tasks/seg/metric.py), the boundary two in both forms, against
hand-computed examples, scikit-learn's formulas and a restatement of Auto Seg-Loss's
evaluation."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, jaccard_score

from tasks.seg.metric import IGNORE, METRICS, SegScores, boundary, boundary_targets, per_image, scores, trimap

X = IGNORE


def test_a_hand_computed_three_class_example_with_ignored_pixels():
    """Ten labelled pixels (two ignored). Confusion, rows ground truth: class 0 [2 1 0],
    class 1 [0 2 1], class 2 [1 0 3]; class 3 is in neither map and is left out.
    IoU 2/4, 2/4, 3/5; mIoU 1.6/3; FWIoU .3*.5 + .3*.5 + .4*.6 = .54; gAcc 7/10;
    mAcc (2/3 + 2/3 + 3/4) / 3."""
    label = np.array([[0, 0, 1, 1], [0, X, 1, 2], [2, 2, X, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 2], [2, 0, 1, 2]])
    out = scores([pred], [label], classes=4, band=1, tolerance=1)
    assert out["miou"] == pytest.approx(1.6 / 3)
    assert out["fwiou"] == pytest.approx(0.54)
    assert out["gacc"] == pytest.approx(0.7)
    assert out["macc"] == pytest.approx((2 / 3 + 2 / 3 + 3 / 4) / 3)


def test_identical_maps_score_one_on_every_metric():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 3, (20, 24)) for _ in range(3)]
    labels[0][5:9, 5:9] = X
    out = scores(labels, labels, classes=3, band=2, tolerance=2)
    assert set(out) == set(METRICS) and all(out[m] == pytest.approx(1.0) for m in METRICS)


def square(shift, size=64, side=16, at=12):
    m = np.zeros((size, size), dtype=np.int64)
    m[at:at + side, at + shift:at + shift + side] = 1
    return m


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_bf1_of_a_square_shifted_within_the_tolerance_is_one(shift):
    assert scores([square(shift)], [square(0)], 2, band=2, tolerance=3)["bf1"] == pytest.approx(1.0)


def test_bf1_of_a_square_shifted_beyond_the_tolerance_is_below_one():
    """A 16 px square shifted 4 px right, tolerance 3. The square's boundary (60 px): its
    shifted right column (16 px) and the middle 8 px of its left column are 4 px from the
    ground truth's: F1 = 36/60. The background's (the 68 px ring around the square): 18 + 10
    px are 4 px away: F1 = 40/68. Mean (36/60 + 40/68) / 2."""
    shifted = [scores([square(s)], [square(0)], 2, band=2, tolerance=3)["bf1"] for s in (4, 6, 8)]
    assert shifted[0] == pytest.approx((36 / 60 + 40 / 68) / 2)
    assert 1 > shifted[0] > shifted[1] > shifted[2] > 0


def test_bf1_of_a_class_missing_from_the_prediction_is_zero():
    """Two classes in the image's ground truth, one predicted everywhere: class 0 scores 0
    (never predicted), class 1 covers every pixel in the prediction and has no boundary
    while its ground truth has one: 0. Mean 0."""
    assert scores([np.ones((10, 10), int)], [square(0, size=10, side=4, at=3)], 2, 1, 1)["bf1"] == 0


def test_biou_counts_only_the_band_around_ground_truth_boundaries():
    label = square(0)
    band = trimap(label, 2)
    assert band.any() and not band.all()
    pred = label.copy()
    far = ~band
    pred[far & (label == 0)] = 1  # wrong, but outside the band
    out = scores([pred], [label], 2, band=2, tolerance=1)
    assert out["biou"] == pytest.approx(1.0) and out["miou"] < 0.5
    pred = label.copy()
    pred[band & (label == 1)] = 0  # wrong inside the band
    assert scores([pred], [label], 2, band=2, tolerance=1)["biou"] < 1.0


def test_the_boundary_of_a_square_is_its_outline_and_the_ring_outside_it():
    edge = boundary(square(0, size=10, side=4, at=3))
    assert edge.sum() == 4 * 4 - 2 * 2 + 6 * 6 - 4 * 4  # 12 inside pixels + 20 outside
    assert not boundary(np.zeros((5, 5), int)).any()


def test_boundary_targets_keep_the_band_around_class_boundaries_and_make_the_rest_background():
    label = square(0, size=10, side=4, at=3) * 2  # class 2 on rows and columns 3..6
    label[0, 0] = IGNORE
    targets = boundary_targets(label, 0.5)  # the band: the boundary pixels themselves
    expected = np.zeros((10, 10), int)
    expected[3:7, 3:7] = 2
    expected[4:6, 4:6] = 0  # the square's inside, more than 0.5 px from its edge
    expected[0, 0] = IGNORE  # an ignored pixel stays ignored; its edge keeps its neighbours
    assert (targets == expected).all()
    wide = boundary_targets(label, 1.0)  # 1 px further: the whole 4 x 4 square is within it
    assert (wide[3:7, 3:7] == 2).all() and wide.sum() == 16 * 2 + IGNORE


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(5))
def test_region_metrics_agree_with_scikit_learn_on_random_maps(seed):
    """Dataset-level accumulation over three images with ignored pixels: mIoU is
    scikit-learn's macro Jaccard over the classes in either map, FWIoU its support-weighted
    Jaccard, gAcc its accuracy, mAcc its balanced accuracy (mean recall over the classes in
    the ground truth)."""
    rng = np.random.default_rng(seed)
    classes = 6
    labels = [rng.integers(0, classes - 1, (16, 20)) for _ in range(3)]  # class 5 never labelled
    preds = [np.where(rng.random(l.shape) < 0.6, l, rng.integers(0, classes, l.shape)) for l in labels]
    for l in labels:
        l[rng.random(l.shape) < 0.1] = X
    out = scores(preds, labels, classes, band=2, tolerance=2)
    y_true = np.concatenate([l[l != X] for l in labels])
    y_pred = np.concatenate([p[l != X] for p, l in zip(preds, labels)])
    present = sorted(set(y_true) | set(y_pred))
    assert out["miou"] == pytest.approx(jaccard_score(y_true, y_pred, labels=present, average="macro"))
    assert out["fwiou"] == pytest.approx(jaccard_score(y_true, y_pred, average="weighted"))
    assert out["gacc"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert out["macc"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))


def test_maps_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        SegScores(2, 1, 1).add(np.zeros((4, 4), int), np.zeros((4, 5), int))


@pytest.mark.parametrize("metric", METRICS)
def test_the_per_image_metric_is_the_dataset_metric_of_that_image_alone(metric):
    rng = np.random.default_rng(1)
    label = rng.integers(0, 4, (24, 24))
    label[:3] = X
    pred = np.where(rng.random(label.shape) < 0.7, label, rng.integers(0, 4, label.shape)) % 4
    alone = scores([pred], [label], 4, band=2, tolerance=1.5)[metric]
    assert per_image(pred, label, metric, 4, band=2, tolerance=1.5) == pytest.approx(alone)
    assert per_image(pred, np.full_like(label, X), metric, 4, band=2, tolerance=1.5) == 0.0


# --- the asl form against a restatement of Auto Seg-Loss's evaluation ---------------------------
# Line by line, in torch as the reference is (fundamentalvision/Auto-Seg-Loss, commit e2349db:
# mmseg/core/evaluation/utils.py and metrics_fast.py, VOC's drop_bg=True, tol = radius), on CPU.
def _one_hot(x, num_class):
    x = x.where((x >= 0) & (x < num_class), torch.tensor([num_class], dtype=x.dtype))
    b, h, w = x.shape
    return torch.zeros((b, num_class + 1, h, w)).scatter_(1, x.long().view(b, 1, h, w), 1)[:, :-1]


def _edge(seg):
    avg = torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)(seg)
    return (seg != avg).float() * seg


def _dilate(seg, tol):
    return torch.nn.MaxPool2d(2 * int(tol) + 1, stride=1, padding=int(tol))(seg) if tol > 0 else seg


def _reference(preds, labels, num_class, tol):
    """(BIoU, BF1) of the split as metrics_fast reports them: nanmean over classes."""
    matrix = torch.zeros((num_class, num_class), dtype=torch.long)
    sums = None
    for pred, label in zip(preds, labels):
        output, target = torch.from_numpy(pred)[None], torch.from_numpy(label)[None]
        target_edge = _edge(_one_hot(target, num_class))
        trimap = _dilate(target_edge, tol)[:, 1:].max(dim=1).values.bool()
        mask = (target >= 0) & (target < num_class) & trimap
        matrix += torch.bincount(num_class * target[mask].long() + output[mask],
                                 minlength=num_class ** 2).view(num_class, num_class)
        output_edge = _edge(_one_hot(output, num_class))
        n = [output_edge.sum(dim=(0, 2, 3)), target_edge.sum(dim=(0, 2, 3)),
             (output_edge * _dilate(target_edge, tol)).sum(dim=(0, 2, 3)),
             (_dilate(output_edge, tol) * target_edge).sum(dim=(0, 2, 3))]
        sums = n if sums is None else [a + b for a, b in zip(sums, n)]
    n_fg, n_gt, match_fg, match_gt = sums
    p, r = match_fg / (n_fg + 1e-8), match_gt / n_gt
    bf1 = (2 * p * r / (p + r + 1e-8))[1:]
    diag = torch.diag(matrix).float()
    biou = diag / (matrix.sum(dim=1) + matrix.sum(dim=0) - torch.diag(matrix)).float()
    return np.nanmean(biou.numpy()), np.nanmean(bf1.numpy())


def _scene(rng, size=40, classes=5):
    """Blobs of random classes on background, some ignored pixels and a void outline or two;
    the prediction shifted, eroded or noisy."""
    label = np.zeros((size, size), dtype=np.int64)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.integers(1, 5)):
        cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(3, 10))]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if rng.random() < 0.3:
            label[disc & ~((yy - cy) ** 2 + (xx - cx) ** 2 <= (r - 1) ** 2)] = X
        label[(yy - cy) ** 2 + (xx - cx) ** 2 <= (r - 1) ** 2] = rng.integers(1, classes)
    label[rng.random(label.shape) < 0.02] = X
    pred = np.where(label == X, rng.integers(0, classes, label.shape), label)
    kind = rng.integers(3)
    if kind == 0:
        pred = np.roll(pred, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
    elif kind == 1:
        pred = np.where(boundary(pred) & (rng.random(pred.shape) < 0.8), 0, pred)
    flips = rng.random(pred.shape) < 0.03
    return np.where(flips, rng.integers(0, classes, pred.shape), pred), label


@pytest.mark.parametrize("width", [1, 2, 5])
def test_the_asl_form_equals_auto_seg_loss_evaluation_per_image_and_over_a_split(width):
    rng = np.random.default_rng(width)
    pairs = [_scene(rng) for _ in range(30)]
    for pred, label in pairs:
        biou, bf1 = _reference([pred], [label], 5, width)
        for metric, expected in (("biou_asl", biou), ("bf1_asl", bf1)):
            assert per_image(pred, label, metric, 5, 2, 1, width) == pytest.approx(
                0.0 if np.isnan(expected) else expected, abs=1e-6)
    preds, labels = zip(*pairs)
    biou, bf1 = _reference(preds, labels, 5, width)
    out = scores(preds, labels, 5, band=2, tolerance=1, width=width, boundary="asl")
    assert out["biou_asl"] == out["biou"] == pytest.approx(biou, abs=1e-6)
    assert out["bf1_asl"] == out["bf1"] == pytest.approx(bf1, abs=1e-6)
    assert out["bf1_csurka"] != pytest.approx(out["bf1_asl"], abs=1e-3)  # the two forms differ here


def test_a_spurious_blob_of_a_class_absent_from_the_ground_truth_costs_csurka_not_asl():
    """A 6x6 square of class 1, predicted exactly, and a 3x3 blob of class 2 predicted where
    the ground truth is background. asl leaves class 2 out (no ground-truth edge) and the
    background out: 1. csurka averages class 2's 0 (predicted, not in the ground truth),
    class 1's 1 and the background's F1, whose predicted boundary has the blob's ring besides
    the square's: 0.629."""
    label = np.zeros((16, 16), dtype=np.int64)
    label[4:10, 4:10] = 1
    pred = label.copy()
    pred[12:15, 12:15] = 2
    assert per_image(pred, label, "bf1_asl", 3, 5, 5.0, 5) == pytest.approx(1.0, abs=1e-6)
    assert per_image(pred, label, "bf1_csurka", 3, 5, 5.0, 5) == pytest.approx(0.629, abs=5e-4)
    assert scores([pred], [label], 3, 5, 5.0, 5, boundary="asl")["bf1"] == pytest.approx(1.0, abs=1e-6)
