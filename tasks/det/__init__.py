"""Object detection: Faster R-CNN on synthetic scenes or COCO (paper sections 4.2, A.2)."""

from tasks.det.task import DetTask

__all__ = ["DetTask"]
