"""Task proxies (segmentation, detection, instance segmentation, pose, classification).

Built-in tasks are registered here explicitly, by name; a user's own task is named by its
dotted path `package.module:TaskClass` (a subclass of `tasks.base.Task`).
"""

from __future__ import annotations

from gp_losses.registry import Registry
from tasks.base import Probe, Task, TrainResult
from tasks.cls import DigitsTask
from tasks.det import DetTask
from tasks.ins import InsTask
from tasks.pose import PoseTask
from tasks.seg import SegTask

TASKS: Registry = Registry("task")
TASKS.register("cls", DigitsTask)
TASKS.register("det", DetTask)
TASKS.register("ins", InsTask)
TASKS.register("pose", PoseTask)
TASKS.register("seg", SegTask)

__all__ = ["TASKS", "Task", "Probe", "TrainResult", "DigitsTask", "DetTask", "InsTask", "PoseTask", "SegTask"]
