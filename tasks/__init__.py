"""Task proxies (segmentation, detection, instance segmentation, pose, classification).

Built-in tasks are registered here explicitly, by name and dotted path, and imported on first
use: naming `cls` does not import torchvision's detection models. A user's own task is named
by its dotted path `package.module:TaskClass` (a subclass of `gp_losses.contract.Task`).
"""

from __future__ import annotations

from gp_losses.core.registry import Registry

TASKS: Registry = Registry("task")
TASKS.register_path("cls", "tasks.cls:DigitsTask")
TASKS.register_path("det", "tasks.det:DetTask")
TASKS.register_path("ins", "tasks.ins:InsTask")
TASKS.register_path("pose", "tasks.pose:PoseTask")
TASKS.register_path("seg", "tasks.seg:SegTask")

__all__ = ["TASKS"]
