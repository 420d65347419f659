"""Instance segmentation: Mask R-CNN on synthetic scenes or COCO (paper sections 4.3, A.3).
The task shares everything with `det` (tasks/det/) but the mask branch and the metric."""

from tasks.det.task import InsTask

__all__ = ["InsTask"]
