"""Shared fixtures. Tests run on CPU with one torch thread, as a search worker does."""

import os
import random
import sys

import pytest
import torch

torch.set_num_threads(1)
# tests/ holds shared helpers (search_helpers, toy tasks) imported by module name
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def rng() -> random.Random:
    return random.Random(0)


@pytest.fixture(scope="session")
def space():
    from gp_losses.space import SearchSpace

    return SearchSpace()


@pytest.fixture(scope="session")
def tiny_pose(tmp_path_factory):
    """The pose task on 48 training, 16 validation and 12 test synthetic people (written once)."""
    from tasks.pose import PoseTask

    cache = tmp_path_factory.mktemp("pose-cache")
    task = PoseTask(PoseTask.Options(cache_dir=str(cache), synthetic_train=48, synthetic_val=16, synthetic_test=12,
                                     iterations=8, batch_size=8, warmup=2))
    task.ensure_setup()
    return task


@pytest.fixture(scope="session")
def tiny_seg(tmp_path_factory):
    """The seg task on 24 training, 8 validation and 8 test synthetic scenes at 48 px."""
    from tasks.seg import SegTask

    cache = tmp_path_factory.mktemp("seg-cache")
    task = SegTask(SegTask.Options(cache_dir=str(cache), synthetic_train=24, synthetic_val=8, synthetic_test=8,
                                   synthetic_size=48, size=48, iterations=6, batch_size=4, width=4))
    task.ensure_setup()
    return task


def _tiny_det(cls, tmp_path_factory):
    cache = tmp_path_factory.mktemp(f"{cls.name}-cache")
    task = cls(cls.Options(cache_dir=str(cache), synthetic_train=16, synthetic_val=6, synthetic_test=6,
                           synthetic_size=64, size=64, iterations=4, batch_size=2, width=4, warmup=2,
                           rpn_batch=32, roi_batch=32))
    task.ensure_setup()
    return task


@pytest.fixture(scope="session")
def tiny_det(tmp_path_factory):
    """The det task on 16 training, 6 validation and 6 test synthetic scenes at 64 px."""
    from tasks.det import DetTask

    return _tiny_det(DetTask, tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_ins(tmp_path_factory):
    """The ins task on the same scenes as tiny_det."""
    from tasks.ins import InsTask

    return _tiny_det(InsTask, tmp_path_factory)
