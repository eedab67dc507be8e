"""S4, single-source segmentation: one sounding object per clip, binary masks.

Five frames a clip; the train split labels only the first frame (loss and training
frames follow ``gt_flags``), val/test label all five. Predicted masks are saved under
``<category>/<name>/``, as the official scripts do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.avsbench import AVBatch, S4Dataset
from ..data.synthetic.formats import S4_SYNTHETIC
from .base import Task, register_task


@dataclass(frozen=True)
class S4Task(Task):
    def mask_folder(self, root: Path, batch: AVBatch, clip: int) -> Path:
        return root / batch.categories[clip] / batch.video_ids[clip]


S4 = register_task(
    S4Task(
        name="s4",
        title="S4 (single source)",
        num_classes=1,
        frames_per_clip=5,
        reader=S4Dataset,
        irregular_masks="masks not pure black/white (values other than 0 and 255; the "
        "original's dithered convert('1') would decode them)",
        release_frame_size="224x224",
        audio_files=True,
        skips_unlabelled_frames=True,
        unflagged_loss_frames="first_of_clip",
        synthetic=S4_SYNTHETIC,
    )
)
