"""The six segmentation metrics (tasks/seg/metric.py) against hand-computed examples and
scikit-learn's formulas."""

import numpy as np
import pytest
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


def test_identical_maps_score_one_on_all_six():
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
