"""Top-down heatmap pose estimation: synthetic people or a COCO-layout directory."""

from tasks.pose.task import PoseTask

__all__ = ["PoseTask"]
