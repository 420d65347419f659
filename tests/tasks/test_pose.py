"""Pose: the task contract on tiny synthetic data, golden OKS/AP against the formula and
pycocotools, heatmap decoding, and the paper's ResNet-50 configuration on a COCO fixture."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gp_losses.testing import TaskContract
from search_helpers import paper_task, trains_two_iterations
from gp_losses.context import build_context, load_run_config
from gp_losses.evaluate import proxy_evaluate
from tasks.pose import PoseTask
from tasks.pose import metric as pm
from tasks.pose.data import gaussian_heatmaps
from tasks.pose.keypoints import K, SIGMAS, oks
from tasks.pose.synthetic import render, write_split

ROOT = Path(__file__).resolve().parents[2]


class TestPoseContract(TaskContract):
    ideal_metric = 0.8  # decoding quantizes to a quarter heatmap pixel: OKS of ideal maps < 1

    @pytest.fixture
    def task(self, tiny_pose):
        return tiny_pose


def _gt(keypoints, area=900.0, width=64, height=64):
    anns = [{"id": k + 1, "image_id": k + 1, "category_id": 1, "iscrowd": 0, "area": area,
             "bbox": [0, 0, 30, 30], "keypoints": [float(v) for v in kp.reshape(-1)],
             "num_keypoints": int((kp[:, 2] > 0).sum())} for k, kp in enumerate(keypoints)]
    images = [{"id": k + 1, "width": width, "height": height, "file_name": f"{k}.png"}
              for k in range(len(keypoints))]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def _people(n, seed=0):
    rng = np.random.RandomState(seed)
    kp = np.zeros((n, K, 3))
    kp[:, :, :2] = rng.uniform(5, 55, (n, K, 2))
    kp[:, :, 2] = 2
    kp[:, 3, 2] = 0  # one unlabelled joint each
    return kp


def test_exact_keypoints_give_ap_1():
    kp = _people(6)
    results = pm.coco_results(range(1, 7), kp[:, :, :2], np.ones((6, K)))
    metrics = pm.coco_keypoint_ap(_gt(kp), results)
    assert metrics == {"ap": 1.0, "ap50": 1.0, "ap75": 1.0, "ar": 1.0}


def test_known_displacement_gives_the_oks_of_the_formula():
    kp = _people(1)
    area, d = 900.0, 3.0
    pred = kp[:, :, :2] + np.array([d, 0.0])
    labelled = kp[0, :, 2] > 0
    by_hand = np.mean(np.exp(-d ** 2 / (2 * area * (2 * SIGMAS[labelled]) ** 2)))
    assert oks(pred[0], kp[0, :, :2], kp[0, :, 2], area) == pytest.approx(by_hand, rel=1e-12)
    metrics = pm.coco_keypoint_ap(_gt(kp, area), pm.coco_results([1], pred, np.ones((1, K))))
    # one person, one detection: AP = share of the thresholds .50:.05:.95 that the OKS reaches
    thresholds = np.linspace(0.5, 0.95, 10)
    assert metrics["ap"] == pytest.approx(float((thresholds <= by_hand + 1e-9).mean()), abs=1e-9)
    assert 0 < metrics["ap"] < 1  # the displacement is large enough to matter, small enough to count


def test_decoding_recovers_joints_placed_on_heatmap_pixels():
    joints = np.array([[5.0, 9.0], [13.0, 3.0], [20.0, 27.0]], dtype=np.float32)  # input pixels
    stride = 2
    maps = gaussian_heatmaps(joints, np.ones(3), (32, 24), stride)
    coords, maxval = pm.decode(torch.from_numpy(maps)[None], stride)
    # a joint at input pixel j sits at heatmap pixel (j + 0.5) / stride - 0.5: within a quarter
    assert np.abs(coords[0].numpy() - joints).max() <= 0.25 * stride + 1e-6
    assert (maxval > 0.5).all()


def test_the_tasks_evaluation_path_scores_target_heatmaps_near_1(tiny_pose):
    vs = tiny_pose.eval_set
    coords, maxvals = pm.decode(vs.heatmaps, tiny_pose.stride)
    keypoints = pm.to_image(coords.numpy(), vs.centers, vs.scales, tiny_pose.input_hw)
    from tasks.pose.task import restrict

    metrics = pm.coco_keypoint_ap(restrict(vs.coco, vs.image_ids),
                                  pm.coco_results(vs.image_ids, keypoints, maxvals.numpy()))
    assert metrics["ap50"] == 1.0 and metrics["ap"] > 0.85


def test_synthetic_data_is_deterministic_and_coco_shaped(tmp_path):
    a = write_split(tmp_path / "a", "train", 5, seed=3, size=96)
    b = write_split(tmp_path / "b", "train", 5, seed=3, size=96)
    assert a.read_text() == b.read_text()
    data = json.loads(a.read_text())
    ann = data["annotations"][0]
    assert len(ann["keypoints"]) == 3 * K and ann["area"] > 0 and len(ann["bbox"]) == 4
    assert data["categories"][0]["keypoints"][0] == "nose"
    _, ann = render(np.random.RandomState(1), 96)
    vis = ann["keypoints"][2::3]
    assert set(vis) <= {0, 1, 2} and ann["num_keypoints"] == sum(v > 0 for v in vis)


def _coco_fixture(root: Path) -> None:
    """A two-image COCO layout (train2017/, val2017/, annotations/) written by the test."""
    for split in ("train2017", "val2017"):
        rng = np.random.RandomState(len(split))
        (root / split).mkdir(parents=True)
        images, anns = [], []
        for k in range(2):
            image, ann = render(rng, 96)
            image.save(root / split / f"{k:012d}.jpg")
            images.append({"id": k + 1, "file_name": f"{k:012d}.jpg", "width": 96, "height": 96})
            anns.append({"id": k + 1, "image_id": k + 1, "category_id": 1, "iscrowd": 0, **ann})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"person_keypoints_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))


def test_paper_config_runs_two_iterations_on_a_coco_fixture(tmp_path):
    _coco_fixture(tmp_path / "coco")
    config, task = paper_task("runs/paper/pose_coco.yaml", [
        f"task.options.data_root={tmp_path / 'coco'}", "task.options.epochs=0",
        "task.options.iterations=2", "task.options.batch_size=2", "task.options.warmup=1"])
    assert config.task.options["model"] == "resnet50" and config.search.evaluations == 500
    assert (task.options.input_height, task.options.input_width) == (256, 192)
    trains_two_iterations(task, "mse", {"ap", "ap50", "ap75", "ar"})
    assert task.train_crops[0]["heatmaps"].shape[1:] == (64, 48) and task.train_crops.augment is not None


def test_missing_data_root_is_bad_input(tmp_path):
    from gp_losses.core.errors import InputError

    task = PoseTask(PoseTask.Options(data_root=str(tmp_path / "nowhere")))
    with pytest.raises(InputError, match="person_keypoints_train.json"):
        task.ensure_setup()


@pytest.mark.parametrize("override, key", [("task.options.schedule=linear", "task.options.schedule"),
                                           ("task.options.model=vgg", "task.options.model"),
                                           ("task.options.iterations=0", "task.options.iterations")])
def test_bad_pose_options_are_config_errors(override, key):
    from gp_losses.core.options import ConfigError

    with pytest.raises(ConfigError, match=key):
        load_run_config("pose", None, [override])


def test_the_test_split_is_other_people_and_leaves_train_and_val_unchanged(tiny_pose):
    opt = tiny_pose.options
    test = PoseTask(opt, split="test")
    test.ensure_setup()
    assert len(test.eval_set.images) == opt.synthetic_test == 12
    assert torch.equal(test.train_set.images, tiny_pose.train_set.images)
    val_images, test_images = tiny_pose.eval_set.images, test.eval_set.images
    assert not any(torch.equal(v, t) for v in val_images for t in test_images)
    root = Path(opt.cache_dir)
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    names = {p.name for p in (folder / "annotations").iterdir()}
    assert names == {f"person_keypoints_{s}.json" for s in ("train", "val", "test")}


def _two_dots(tmp_path):
    """One 128 x 128 image: a red dot at the person's left wrist, a green one at the right."""
    from PIL import Image

    from tasks.pose.data import box_to_crop, PoseIndex

    pixels = np.zeros((128, 128, 3), dtype=np.uint8)
    kp = np.zeros((K, 3), dtype=np.float32)
    for joint, (x, y), channel in ((9, (52, 58), 0), (10, (74, 66), 1)):
        pixels[y - 1:y + 2, x - 1:x + 2, channel] = 255
        kp[joint] = (x, y, 2)
    path = tmp_path / "dots.png"
    Image.fromarray(pixels).save(path)
    center, size = box_to_crop([34, 30, 60, 70], 48 / 64)
    return PoseIndex([path], kp[None], center[None], size[None], np.array([4200.0]), [1], {})


def test_augmentation_moves_the_joints_with_the_pixels_and_swaps_left_and_right(tmp_path):
    from tasks.pose.data import Augment, PoseCrops

    crops = PoseCrops(_two_dots(tmp_path), (64, 48), (32, 24), Augment())
    mirrored = 0
    for seed in range(40):
        item = crops[(0, seed)]
        image = item["image"].numpy() * np.array([0.229, 0.224, 0.225])[:, None, None] \
            + np.array([0.485, 0.456, 0.406])[:, None, None]
        red = np.unravel_index(np.argmax(image[0] - image[1]), image.shape[1:])[::-1]
        green = np.unravel_index(np.argmax(image[1] - image[0]), image.shape[1:])[::-1]
        joints = item["joints"].numpy()
        if np.abs(joints[10] - red).max() <= 1.5:  # mirrored: the red wrist is now the right one
            mirrored += 1
            assert np.abs(joints[9] - green).max() <= 1.5, seed
        else:
            assert np.abs(joints[9] - red).max() <= 1.5 and np.abs(joints[10] - green).max() <= 1.5, seed
        assert item["weights"][9] == item["weights"][10] == 1
    assert 5 < mirrored < 35  # about half the draws


def test_the_streamed_augmented_training_is_the_same_with_loader_workers(tiny_pose):
    import dataclasses

    results = []
    for workers in (0, 2):
        task = PoseTask(dataclasses.replace(tiny_pose.options, loader="stream", augment=True,
                                            loader_workers=workers))
        space = build_context(load_run_config("pose", None, [])).space
        loss = space.compile(space.parse(PoseTask.baselines["mse"]))
        results.append(proxy_evaluate(task, loss, seed=3, timeout_s=300))
        assert task.train_set is None and len(task.train_crops) == 48
    assert results[0].status == "ok" and results[0].metrics == results[1].metrics


def test_augmentation_needs_the_streaming_loader():
    from gp_losses.core.options import ConfigError

    with pytest.raises(ConfigError, match="task.options.augment.*loader: stream"):
        load_run_config("pose", None, ["task.options.augment=true"])
