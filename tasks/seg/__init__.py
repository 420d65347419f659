"""Semantic segmentation: synthetic scenes or Pascal VOC; the paper's six metrics."""

from tasks.seg.task import SegTask

__all__ = ["SegTask"]
