"""What a segmentation task is, and the registry of tasks.

A :class:`Task` owns everything that differs between AVSBench's tasks: its classes, its
dataset reader, which frames a loss and a metric look at, the loss and the metric
themselves, the per-frame temporal mask the model takes, how predicted masks are saved,
how the data checker words its findings and how the synthetic benchmark writes it. The
trainer, evaluator, losses, data checker and synthetic writer ask the task object; none
of them compares task names.

A new task is one new file that defines a :class:`Task` (usually a subclass overriding a
few methods) and calls :func:`register_task` on an instance, plus one import line in
``avsegformer/tasks/__init__.py`` for a built-in one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from ..engine.losses import SegmentationLoss
from ..engine.metrics import AVSSMetric, BinaryMetric, BinaryMode
from ..errors import ConfigError, UnknownTaskError
from ..render import resize_mask, save_binary_mask_png, save_class_mask_png

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from ..data.avsbench import AVBatch, AVSBenchDataset
    from ..data.synthetic.formats import SyntheticFormat


@dataclass(frozen=True)
class Task:
    """One segmentation task (S4, MS3, AVSS, or a new one).

    Attributes:
        name: the key used in configurations and on the command line (``"s4"``).
        title: a short human name (``"S4 (single source)"``).
        num_classes: output channels of the mask head: 1 for a binary (sounding or not)
            mask, C (background included) for a semantic one.
        frames_per_clip: frames of one clip as the dataset stores it.
        reader: the dataset class reading the task's on-disk layout.
        irregular_masks: what the data checker calls a mask it cannot decode exactly.
        release_frame_size: ``"WxH"`` of the released frames, when the release has one
            size (the checker notes others); ``None`` when sizes vary.
        audio_files: the checker also counts the kinds of audio file (``.pkl`` log-mel
            and ``.wav``) per split.
        skips_unlabelled_frames: the reader can leave unlabelled frames undecoded, which
            training on labelled frames only (``train.train_frames=labelled``) asks of it.
        unflagged_loss_frames: frames a binary loss called without flags takes:
            ``"all"`` or ``"first_of_clip"`` (S4's training labels).
        class_names: names of the C classes of a semantic task (background first).
        synthetic: how ``avsegformer synth`` writes this task; ``None``: it cannot.
    """

    name: str
    title: str
    num_classes: int
    frames_per_clip: int
    reader: type[AVSBenchDataset]
    irregular_masks: str = "masks that cannot be decoded exactly"
    release_frame_size: str | None = None
    audio_files: bool = False
    skips_unlabelled_frames: bool = False
    unflagged_loss_frames: Literal["all", "first_of_clip"] = "all"
    class_names: tuple[str, ...] = ()
    synthetic: SyntheticFormat | None = field(default=None, repr=False)

    @property
    def binary(self) -> bool:
        """One foreground channel (sigmoid) rather than C classes (softmax)."""
        return self.num_classes == 1

    # ------------------------------------------------------------------ data
    def dataset(self, root: str | Path, split: str = "train", **options: Any) -> Dataset:
        """The task's reader for ``split`` under ``root``; ``options`` go to its constructor."""
        return self.reader.build(root, split, **options)

    # ------------------------------------------------------------- the model
    def temporal_mask(self, batch: AVBatch) -> torch.Tensor | None:
        """The per-frame temporal mask ``[B*T]`` the model takes, or ``None`` (all frames)."""
        return None

    # -------------------------------------------------------------- training
    def loss(
        self,
        loss_type: str = "dice",
        iou_loss_weight: float = 1.0,
        mix_loss_weight: float = 0.1,
        frames_per_clip: int | None = None,
    ) -> SegmentationLoss:
        """The training loss, configured like the published configs (``frames_per_clip``:
        the clip length of the data, default the task's)."""
        return SegmentationLoss(
            "binary" if self.binary else "semantic",
            loss_type=loss_type,  # type: ignore[arg-type]
            iou_loss_weight=iou_loss_weight,
            mix_loss_weight=mix_loss_weight,
            frames_per_clip=frames_per_clip or self.frames_per_clip,
            unflagged=self.unflagged_loss_frames,
        )

    def loss_frame_flags(self, batch: AVBatch) -> torch.Tensor | None:
        """Per-frame weights ``[B*T]`` of the loss (0 = frame not in the loss), ``None`` = all."""
        return batch.gt_flags.flatten()

    # ------------------------------------------------------------ evaluation
    def metric(
        self,
        *,
        mode: BinaryMode = "avsbench",
        videos_per_group: int = 2,
        num_classes: int | None = None,
    ) -> BinaryMetric | AVSSMetric:
        """A fresh metric accumulator (``mode``/``videos_per_group``: binary F convention;
        ``num_classes``: the model's class count when it differs from the task's)."""
        if self.binary:
            return BinaryMetric(mode=mode, videos_per_group=videos_per_group)
        return AVSSMetric(num_classes=num_classes or self.num_classes)

    def scored_frames(self, batch: AVBatch) -> torch.Tensor | None:
        """Bool ``[B*T]`` of the frames the metric scores, ``None`` = every frame."""
        return batch.gt_flags.flatten() > 0

    def mask_folder(self, root: Path, batch: AVBatch, clip: int) -> Path:
        """Where clip ``clip`` of ``batch`` has its predicted masks saved."""
        return root / batch.video_ids[clip]

    def save_masks(
        self,
        folder: Path,
        video_id: str,
        logits: torch.Tensor,
        *,
        mask_size: tuple[int, int] | None = None,
    ) -> list[Path]:
        """Save one clip's predictions as the official scripts do: ``<id>_<i>.png``.

        ``logits``: ``[T, num_classes, H, W]``. Binary tasks: ``sigmoid > 0.5`` as 0/255;
        semantic tasks: the argmax class in the palette colours, resized (nearest) to
        ``mask_size`` (width, height) when given.
        """
        written: list[Path] = []
        if self.binary:
            binary = (torch.sigmoid(logits[:, 0]) > 0.5).cpu().numpy()
            for i, mask in enumerate(binary):
                path = folder / f"{video_id}_{i}.png"
                save_binary_mask_png(path, mask)
                written.append(path)
            return written
        classes = logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
        for i, class_map in enumerate(classes):
            path = folder / f"{video_id}_{i}.png"
            if mask_size is not None:
                # Nearest on the class map: the reference resizes the RGB image
                # bicubically, which blends colours that are no class at the edges.
                class_map = resize_mask(class_map, mask_size)
            save_class_mask_png(path, class_map)
            written.append(path)
        return written


# ------------------------------------------------------------------ registry
_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` under ``task.name`` (a name registered twice is an error)."""
    if task.name in _TASKS and _TASKS[task.name] is not task:
        raise ConfigError(f"a task named {task.name!r} is already registered")
    if task.num_classes < 1 or task.frames_per_clip < 1:
        raise ConfigError(
            f"task {task.name!r}: num_classes and frames_per_clip must be >= 1, got "
            f"{task.num_classes} and {task.frames_per_clip}"
        )
    _TASKS[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a task (for tests and plug-ins that register temporary ones)."""
    _TASKS.pop(name, None)


def get_task(task: str | Task) -> Task:
    """The registered task called ``task`` (a :class:`Task` is returned as it is)."""
    if isinstance(task, Task):
        return task
    found = _TASKS.get(str(task).lower())
    if found is None:
        raise UnknownTaskError(f"unknown task {task!r}; use one of {', '.join(_TASKS)}")
    return found


def task_names() -> tuple[str, ...]:
    """Names of the registered tasks, in registration order."""
    return tuple(_TASKS)


def iter_tasks() -> Iterator[Task]:
    return iter(tuple(_TASKS.values()))
