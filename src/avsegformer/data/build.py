"""A dataset reader by task name, through the task registry (:mod:`avsegformer.tasks`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..tasks import Task, get_task


def build_dataset(
    task: str | Task, root: str | Path, split: str = "train", **options: Any
) -> Dataset:
    """The reader of ``task`` (``"s4"``, ``"ms3"``, ``"avss"`` or any registered task)
    for ``split`` under ``root``.

    ``options`` go to the task's reader (:class:`~avsegformer.data.S4Dataset`,
    :class:`~avsegformer.data.MS3Dataset`, :class:`~avsegformer.data.AVSSDataset`), e.g.
    ``img_size=224``, ``audio_policy="silence"``; an unknown option is a
    :class:`~avsegformer.errors.DataError` that lists the accepted ones.
    """
    return get_task(task).dataset(root, split, **options)
