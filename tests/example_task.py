"""A new task in one file: the README's "how to add a task", run by tests/test_extending.py.

Multi-source clips (the MS3 layout and reader) with sparse supervision: only the first
frame of each clip enters the loss and the metric, as S4's train split labels them.
Everything else (classes, temporal mask, saved masks) is the :class:`Task` default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avsegformer.data import AVBatch, MS3Dataset
from avsegformer.tasks import Task, register_task


def _first_frames(batch: AVBatch) -> torch.Tensor:
    flags = torch.zeros(batch.frames.shape[:2], device=batch.frames.device)
    flags[:, 0] = 1.0
    return flags.flatten()


@dataclass(frozen=True)
class FirstFrameMS3(Task):
    def loss_frame_flags(self, batch: AVBatch) -> torch.Tensor | None:
        return _first_frames(batch)

    def scored_frames(self, batch: AVBatch) -> torch.Tensor | None:
        return _first_frames(batch) > 0


FIRST_FRAME_MS3 = register_task(
    FirstFrameMS3(
        name="ms3_first",
        title="MS3, first frame only",
        num_classes=1,
        frames_per_clip=5,
        reader=MS3Dataset,
    )
)
