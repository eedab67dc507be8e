"""MS3, multi-source segmentation: one or more sounding objects, binary masks.

Five frames a clip, all labelled in every split: the loss takes every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.avsbench import AVBatch, MS3Dataset
from ..data.synthetic.formats import MS3_SYNTHETIC
from .base import Task, register_task


@dataclass(frozen=True)
class MS3Task(Task):
    def loss_frame_flags(self, batch: AVBatch) -> torch.Tensor | None:
        return None  # every frame is labelled (the reference weights none out)


MS3 = register_task(
    MS3Task(
        name="ms3",
        title="MS3 (multiple sources)",
        num_classes=1,
        frames_per_clip=5,
        reader=MS3Dataset,
        irregular_masks="masks not pure black/white (values other than 0 and 255: the "
        "original's convert('P')/255 would not give 0/1)",
        release_frame_size="224x224",
        audio_files=True,
        skips_unlabelled_frames=True,
        synthetic=MS3_SYNTHETIC,
    )
)
