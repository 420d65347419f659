"""Detection data: synthetic scenes written as COCO, read back by the COCO loader; COCO AP of
perfect predictions through the evaluation path is 1.0 (pycocotools' COCOeval)."""

import json

import numpy as np
import pytest
import torch

from gp_losses.core.errors import InputError
from tasks.det.data import CocoDetection, decode_mask
from tasks.det.metric import coco_ap, coco_results
from tasks.det.synthetic import CATEGORIES, MIN_AREA, ensure_dataset


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return ensure_dataset(tmp_path_factory.mktemp("det") / "coco", {"train": 6, "val": 4, "test": 3}, 0, 64)


def _results(data, shift=0.0, drop_masks=False):
    results = []
    for i in range(len(data)):
        _, target = data[i]
        boxes = target["boxes"] + shift
        scores = torch.ones(len(boxes))
        masks = None if drop_masks else target["masks"][:, None].float()
        results += coco_results(int(target["image_id"]), boxes, scores, target["labels"], data.category_ids, masks)
    return results


def test_synthetic_scenes_are_a_coco_dataset_the_loader_reads(coco_root):
    coco = json.loads((coco_root / "annotations" / "instances_val.json").read_text())
    assert coco["categories"] == CATEGORIES and len(coco["images"]) == 4
    assert {a["category_id"] for a in coco["annotations"]} <= {c["id"] for c in CATEGORIES}
    data = CocoDetection(coco_root, "val", masks=True)
    assert data.classes == 6 and len(data) == 4
    seen = 0
    for i in range(len(data)):
        image, target = data[i]
        assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
        masks, boxes = target["masks"], target["boxes"]
        assert masks.shape[0] == boxes.shape[0] == target["labels"].shape[0]
        assert int(masks.sum(dim=0).max()) <= 1  # visible parts: no pixel in two instances
        for mask, box in zip(masks, boxes):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert int(mask.sum()) >= MIN_AREA
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        seen += len(boxes)
    assert seen == len(coco["annotations"]) and seen >= 4
    again = ensure_dataset(coco_root, {"train": 6, "val": 4, "test": 3}, 0, 64)
    assert json.loads((again / "annotations" / "instances_val.json").read_text()) == coco


def test_perfect_predictions_score_ap_one_and_shifted_ones_less(coco_root):
    data = CocoDetection(coco_root, "val", masks=True)
    perfect = _results(data)
    assert coco_ap(data.coco, perfect, "bbox") == {"ap": 1.0, "ap50": 1.0, "ap75": 1.0}
    assert coco_ap(data.coco, perfect, "segm") == {"ap": 1.0, "ap50": 1.0, "ap75": 1.0}
    shifted = coco_ap(data.coco, _results(data, shift=2.0, drop_masks=True), "bbox")
    assert shifted["ap"] < 1.0 and shifted["ap50"] <= 1.0
    assert coco_ap(data.coco, [], "bbox") == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}


def test_polygon_masks_decode_and_bad_input_is_named(tmp_path):
    mask = decode_mask([[1, 1, 5, 1, 5, 4, 1, 4]], 8, 8)
    assert mask.shape == (8, 8) and mask[2, 2] == 1 and mask[6, 6] == 0 and 12 <= mask.sum() <= 20
    with pytest.raises(InputError, match="instances_train.json"):
        CocoDetection(tmp_path, "train")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        CocoDetection(tmp_path, "train")
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="no 'annotations' list"):
        CocoDetection(tmp_path, "train")
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}], "annotations": [], "categories": []}))
    with pytest.raises(InputError, match="a.jpg"):
        CocoDetection(tmp_path, "train")[0]
    assert np.array_equal(decode_mask({"size": [2, 2], "counts": [1, 2, 1]}, 2, 2), [[0, 1], [1, 0]])
