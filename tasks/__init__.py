"""Task proxies (segmentation, detection, instance segmentation, pose, classification).

Built-in tasks are registered here explicitly, by name; a user's own task is named by its
dotted path `package.module:TaskClass`. No task ships yet: the engine and the first task
come next (see docs/).
"""

from __future__ import annotations

from gp_losses.registry import Registry

TASKS: Registry = Registry("task")
