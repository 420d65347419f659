"""Synthetic segmentation scenes in the Pascal VOC layout, read back by the VOC loader."""

import numpy as np
import pytest
from PIL import Image

from gp_losses.core.errors import InputError
from tasks.seg.data import VocSegmentation, load_split, split_names
from tasks.scenes import CLASSES, IGNORE
from tasks.seg.synthetic import render, write_voc

SPLITS = (("train", 6), ("val", 3), ("test", 3))


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return write_voc(tmp_path_factory.mktemp("seg") / "voc", SPLITS, seed=0, size=64, void_border=0.5)


def test_the_layout_is_pascal_vocs(voc):
    assert [len(split_names(voc, s)) for s, _ in SPLITS] == [6, 3, 3]
    names = split_names(voc, "val")
    label = Image.open(voc / "SegmentationClass" / f"{names[0]}.png")
    assert label.mode == "P" and label.getpalette()[3:6] == [128, 0, 0]  # VOC's colour of class 1
    assert Image.open(voc / "JPEGImages" / f"{names[0]}.jpg").size == (64, 64)
    assert not set(split_names(voc, "train")) & set(names)


def test_the_loader_reads_images_and_labels_at_the_asked_size(voc):
    images, labels = load_split(voc, "train", 32)
    assert images.shape == (6, 3, 32, 32) and labels.shape == (6, 32, 32)
    values = set(np.unique(labels.numpy()))
    assert values <= set(range(len(CLASSES))) | {IGNORE} and len(values - {0, IGNORE}) >= 2
    image, label = VocSegmentation(voc, "val", 64)[1]
    assert image.shape == (3, 64, 64) and abs(float(image.mean())) < 3


def test_scenes_come_from_the_seed_and_hold_objects_voids_and_thin_bars():
    a = render(np.random.RandomState(3), 96, void_border=1.0)
    b = render(np.random.RandomState(3), 96, void_border=1.0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    labels = np.concatenate([render(np.random.RandomState(s), 96, 0.3)[1].ravel() for s in range(40)])
    counts = np.bincount(labels[labels != IGNORE], minlength=len(CLASSES))
    assert (counts > 0).all()  # every class occurs
    assert (labels == IGNORE).any() and counts[0] > counts[1:].max()  # background is the largest


def test_a_dataset_already_written_is_kept(voc):
    before = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text()
    assert write_voc(voc, SPLITS, seed=99, size=64, void_border=0.0) == voc
    assert (voc / "ImageSets" / "Segmentation" / "train.txt").read_text() == before
    assert not [p for p in voc.parent.iterdir() if p.name.startswith("voc.")]  # no temporary left


def test_a_directory_that_is_not_voc_is_refused_with_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="ImageSets/Segmentation/train.txt"):
        VocSegmentation(tmp_path, "train", 32)
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    with pytest.raises(InputError, match="JPEGImages/a.jpg"):
        VocSegmentation(tmp_path, "train", 32)[0]
