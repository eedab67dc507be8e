"""AVSS, audio-visual semantic segmentation: 71 classes (background included).

Clips of 10 frame slots (5 s clips padded; ``vid_flags`` says which slots are real and
is the model's temporal mask); every frame is scored, padded ones included, as the
published numbers were; the loss weights frames by ``gt_flags``. Predicted masks are
saved in the class palette's colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.avsbench import AVBatch, AVSSDataset
from ..data.classes import AVSS_CLASSES
from ..data.synthetic.formats import AVSS_SYNTHETIC
from .base import Task, register_task


@dataclass(frozen=True)
class AVSSTask(Task):
    def temporal_mask(self, batch: AVBatch) -> torch.Tensor | None:
        return batch.vid_flags.flatten()

    def scored_frames(self, batch: AVBatch) -> torch.Tensor | None:
        return None


AVSS = register_task(
    AVSSTask(
        name="avss",
        title="AVSS (semantic, 71 classes)",
        num_classes=len(AVSS_CLASSES),
        frames_per_clip=10,
        reader=AVSSDataset,
        irregular_masks="masks with colours outside the 71-class palette (the original reads "
        "them as background)",
        class_names=tuple(AVSS_CLASSES),
        synthetic=AVSS_SYNTHETIC,
    )
)
