"""Segmentation tasks as registered objects: S4, MS3, AVSS (see :mod:`.base`).

Example::

    from avsegformer.tasks import get_task
    task = get_task("avss")
    task.num_classes, task.frames_per_clip        # 71, 10
    dataset = task.dataset("/data/AVSBench", "test", img_size=224)
"""

from __future__ import annotations

from .base import Task, get_task, iter_tasks, register_task, task_names, unregister_task

# The built-in tasks register themselves on import: one line per task.
from .s4 import S4  # isort: skip
from .ms3 import MS3  # isort: skip
from .avss import AVSS  # isort: skip

__all__ = [
    "AVSS",
    "MS3",
    "S4",
    "Task",
    "get_task",
    "iter_tasks",
    "register_task",
    "task_names",
    "unregister_task",
]
