"""Evaluation: run a model over a dataset split, score it with the official metrics.

* S4 / MS3: mIoU and F-score (:class:`~avsegformer.engine.metrics.BinaryMetric`). In
  ``metric_mode="avsbench"`` videos are grouped ``videos_per_group`` at a time in dataset
  order, whatever batch size the evaluation runs with (2 reproduces the AVSegFormer
  release, 4 AVSBench); ``"invariant"`` uses one dataset-level threshold curve.
* AVSS: 71-class mIoU and F-score accumulated over the split, padded frames included, as
  the reference scripts do.

The same function runs under ``torchrun``: each process evaluates every ``world_size``-th
video and the metrics gather per-frame records before computing.

``audio_mode`` measures how much a model relies on its audio: ``"matched"`` (normal),
``"zero"`` (digital silence), ``"noise"`` (white noise) or ``"shuffled"`` (the audio of
another clip of the split, a fixed derangement so no clip keeps its own). Silence and
noise are made by the model's audio front end (``model.audio_front_end``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.avsbench import AVBatch, AVSample, collate
from ..errors import ConfigError, NonFiniteError
from ..modeling.audio_encoders import audio_front_end
from ..modeling.audio_frontend import VGGISH_LOG_MEL, AudioFrontEnd
from ..progress import track
from ..settings import Precision
from ..tasks import Task, get_task
from . import dist
from .loading import BadClipPolicy, GuardedDataset, guarded_collate, merge_skipped, video_id_of
from .metrics import AVSSMetric

logger = logging.getLogger(__name__)

AudioMode = Literal["matched", "zero", "noise", "shuffled"]
AUDIO_MODES: tuple[str, ...] = ("matched", "zero", "noise", "shuffled")


@dataclass
class EvalResult:
    """Scores of one evaluation (fractions in [0, 1], not percentages)."""

    task: str
    split: str
    miou: float
    fscore: float
    num_videos: int
    num_frames: int
    metric_mode: str
    videos_per_group: int | None
    audio_mode: str
    seconds: float
    forward_seconds: float
    metric_seconds: float
    per_class: list[dict[str, Any]] = field(default_factory=list)
    config: str = ""
    checkpoint: str = ""
    # Clips left out by skip_bad_clips: {"video_id", "reason", "times"} each.
    skipped_clips: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metric_overhead(self) -> float:
        """Metric time as a fraction of model forward time."""
        return self.metric_seconds / self.forward_seconds if self.forward_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["metric_overhead"] = self.metric_overhead
        return out

    def format_table(self) -> str:
        """A human-readable table (mIoU and F as fractions in [0, 1], as everywhere in
        avsegformer; papers print them x100)."""
        head = f"{self.config or 'model'} | {self.task} {self.split} | audio {self.audio_mode}"
        mode = self.metric_mode + (
            f" ({self.videos_per_group} videos/group)" if self.videos_per_group else ""
        )
        lines = [
            head,
            f"  videos {self.num_videos}  frames {self.num_frames}  metric {mode}",
            f"  mIoU {self.miou:.4f}   F-score {self.fscore:.4f}",
        ]
        if self.per_class:
            lines.append("  per class (classes seen in prediction or ground truth):")
            lines.append(f"    {'id':>3} {'class':<16} {'IoU':>6} {'F':>6} {'frames':>7}")
            for row in self.per_class:
                if row["frames"]:
                    lines.append(
                        f"    {row['id']:>3} {row['name']:<16} {row['iou']:6.4f} "
                        f"{row['fscore']:6.4f} {row['frames']:>7}"
                    )
        if self.skipped_clips:
            lines.append(f"  SKIPPED {len(self.skipped_clips)} clip(s) (not scored):")
            lines.extend(f"    {r['video_id']}: {r['reason']}" for r in self.skipped_clips)
        lines.append(
            f"  time {self.seconds:.1f} s (forward {self.forward_seconds:.1f} s, "
            f"metrics {self.metric_seconds:.2f} s = {100 * self.metric_overhead:.1f}% of forward)"
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------- audio modes
class AudioSubstitution(Dataset):
    """Wraps a dataset and replaces each clip's audio according to ``mode``.

    Items become ``(index, sample)`` so that evaluation knows each clip's dataset position.
    ``front_end``: makes the silence and noise examples (default: the dataset's
    ``audio_front_end``, else VGGish log-mels).
    """

    def __init__(
        self,
        dataset: Dataset,
        mode: AudioMode = "matched",
        seed: int = 0,
        front_end: AudioFrontEnd | None = None,
    ):
        if mode not in AUDIO_MODES:
            raise ConfigError(f"unknown audio mode {mode!r}; expected {', '.join(AUDIO_MODES)}")
        self.dataset = dataset
        self.mode = mode
        self.seed = seed
        if front_end is None:
            front_end = getattr(dataset, "audio_front_end", VGGISH_LOG_MEL)
        self.front_end: AudioFrontEnd = front_end
        self.donor = derangement(len(dataset), seed) if mode == "shuffled" else None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[int, AVSample]:
        sample: AVSample = self.dataset[index]
        if self.mode == "zero":
            sample.audio = self.front_end.silence_like(sample.audio)
        elif self.mode == "noise":
            sample.audio = noise_examples(
                sample.audio.shape[0], seed=self.seed * 100003 + index, front_end=self.front_end
            )
        elif self.mode == "shuffled":
            assert self.donor is not None
            sample.audio = load_clip_audio(self.dataset, int(self.donor[index]))
        return index, sample


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation of ``range(n)`` with no fixed point (identity when ``n < 2``)."""
    if n < 2:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    # Shift by a random non-zero offset in permuted order: a cycle, never a fixed point.
    offset = int(rng.integers(1, n))
    donor = np.empty(n, dtype=np.int64)
    donor[perm] = perm[(np.arange(n) + offset) % n]
    return donor


def load_clip_audio(dataset: Dataset, index: int) -> torch.Tensor:
    """The audio examples of item ``index`` without decoding its frames when possible."""
    loader = getattr(dataset, "load_audio", None)
    if callable(loader):
        return loader(index)
    return dataset[index].audio


def noise_examples(
    num_examples: int, seed: int, rms: float = 0.05, front_end: AudioFrontEnd = VGGISH_LOG_MEL
) -> torch.Tensor:
    """Examples ``[num_examples, *front_end.example_shape]`` of seeded white noise at ``rms``
    (VGGish: log-mel examples ``[num_examples, 1, 96, 64]``)."""
    # One whole window per example (+1) is enough for any front end; a generator's first
    # values do not depend on how many are drawn, so VGGish examples are the same as
    # from the shortest waveform that holds them.
    samples = num_examples * front_end.window_samples + 1
    rng = np.random.default_rng(seed)
    waveform = (rms * rng.standard_normal(samples)).astype(np.float32)
    return front_end.from_waveform(
        waveform, front_end.sample_rate, num_examples=num_examples, policy="silence"
    )


#: The former name of :func:`noise_examples` (VGGish log-mel examples by default).
noise_log_mel = noise_examples


# ---------------------------------------------------------------------------- evaluation
def _collate_indexed(items: list[tuple[int, AVSample]]) -> tuple[torch.Tensor, AVBatch]:
    indices = torch.tensor([i for i, _ in items], dtype=torch.long)
    return indices, collate([s for _, s in items])


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Every ``world_size``-th item starting at ``rank`` (no padding, no duplicates)."""
    return list(range(rank, n, world_size))


def model_inputs(
    batch: AVBatch, task: str | Task
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Flatten a batch ``[B, T, ...]`` into the model's per-frame inputs.

    Returns frames ``[B*T, 3, H, W]``, audio ``[B*T, ...]`` and the task's per-frame
    temporal mask ``[B*T]`` (AVSS; ``None`` for S4/MS3, as the reference passes).
    """
    frames = batch.frames.flatten(0, 1)
    audio = batch.audio.flatten(0, 1)
    return frames, audio, get_task(task).temporal_mask(batch)


def iterate_batches(
    dataset: Dataset,
    *,
    batch_size: int,
    audio_mode: AudioMode = "matched",
    seed: int = 0,
    num_workers: int = 0,
    bad_clips: BadClipPolicy | None = None,
    front_end: AudioFrontEnd | None = None,
) -> Iterator[tuple[torch.Tensor, AVBatch]]:
    """This process's share of ``dataset`` in order, as ``(dataset indices, batch)``.

    A clip that fails to load raises its own one-line error (also from worker
    processes), or is left out and recorded by ``bad_clips`` when it skips.
    ``front_end``: the model's, for the ``"zero"`` and ``"noise"`` audio modes.
    """
    policy = bad_clips if bad_clips is not None else BadClipPolicy(skip=False)
    substituted = AudioSubstitution(dataset, audio_mode, seed, front_end)
    wrapped = GuardedDataset(substituted, video_id_of(dataset))
    shard = shard_indices(len(wrapped), dist.get_rank(), dist.get_world_size())
    loader = DataLoader(
        torch.utils.data.Subset(wrapped, shard),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=guarded_collate(_collate_indexed),
        persistent_workers=False,
    )
    for guarded in loader:
        batch = policy.accept(guarded)
        if batch is not None:
            yield batch


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    task: str | Task,
    batch_size: int = 2,
    metric_mode: Literal["avsbench", "invariant"] = "avsbench",
    videos_per_group: int = 2,
    audio_mode: AudioMode = "matched",
    precision: Precision | str = Precision.AUTO,
    save_masks: str | os.PathLike[str] | None = None,
    avss_mask_size: tuple[int, int] | None = (360, 240),
    num_workers: int = 0,
    seed: int = 0,
    progress: bool = True,
    split: str = "",
    skip_bad_clips: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on ``dataset`` (a reader from :func:`avsegformer.data.build_dataset`).

    Args:
        model: an AVSegFormer (its device is used); put in eval mode here.
        task: a registered task (:mod:`avsegformer.tasks`) or its name (``"s4"``...).
        batch_size: videos per forward pass (does not change the scores).
        metric_mode, videos_per_group: S4/MS3 F-score convention (see module docstring).
        audio_mode: ``"matched"``, ``"zero"``, ``"noise"`` or ``"shuffled"``.
        precision: a :class:`~avsegformer.settings.Precision` or any of its spellings:
            ``"auto"`` (bfloat16 on CUDA, float32 on CPU), ``"fp32"``, ``"bf16"``, ``"fp16"``.
        save_masks: folder for the predicted masks, named and coloured as the official
            scripts save them (``pred_masks``-style tree, see :func:`save_prediction_masks`).
        avss_mask_size: (width, height) AVSS masks are saved at (the reference's
            360×240 default, resized nearest so colours stay exact); ``None`` = native.
        num_workers: data-loading worker processes.
        seed: seed of the ``noise`` / ``shuffled`` substitutions.
        progress: show a progress bar (main process only).
        split: name recorded in the result.
        skip_bad_clips: leave out clips whose files raise a data error (recorded in
            ``EvalResult.skipped_clips``) instead of stopping at the first.

    Raises:
        NonFiniteError: the model's output is NaN or infinite (non-finite weights or
            inputs): no score is computed from it.
    """
    spec = get_task(task)
    task = spec.name
    device = next(model.parameters()).device
    precision = Precision.parse(precision, option="precision")
    precision.resolve(device)  # fp16 on a CPU fails here, before any data is read
    model.eval()
    metric = spec.metric(
        mode=metric_mode,
        videos_per_group=videos_per_group,
        num_classes=getattr(model, "num_classes", None),
    )
    mask_dir = Path(save_masks) if save_masks is not None else None

    start = time.perf_counter()
    forward_seconds = metric_seconds = 0.0
    bad_clips = BadClipPolicy(skip=skip_bad_clips)
    batches = iterate_batches(
        dataset,
        batch_size=batch_size,
        audio_mode=audio_mode,
        seed=seed,
        num_workers=num_workers,
        bad_clips=bad_clips,
        front_end=audio_front_end(model),
    )
    total = math.ceil(
        len(shard_indices(len(dataset), dist.get_rank(), dist.get_world_size())) / batch_size
    )  # type: ignore[arg-type]
    batches = track(
        batches,
        total,
        f"eval {task} {split}".strip(),
        "batch",
        enabled=progress and dist.is_main_process(),
    )
    for indices, batch in batches:
        batch = batch.to(device)
        frames, audio, temporal_mask = model_inputs(batch, spec)
        t0 = time.perf_counter()
        with precision.autocast(device):
            logits = model(frames, audio, temporal_mask).logits
        logits = logits.float()
        if not bool(torch.isfinite(logits).all()):
            # A NaN model still gives masks (all empty) and a score: refuse to compute it.
            raise NonFiniteError(
                f"the model's output for clip(s) {', '.join(batch.video_ids)} is NaN or "
                "infinite: its weights or these inputs are not finite; no score computed"
            )
        _sync(device)
        t1 = time.perf_counter()
        frames_per_clip = batch.frames.shape[1]
        video_index = indices.to(device).repeat_interleave(frames_per_clip)
        frame_index = torch.arange(frames_per_clip, device=device).repeat(len(indices))
        target = batch.masks.flatten(0, 1)
        scored = spec.scored_frames(batch)
        if scored is None:
            metric.update(logits, target, video_index=video_index, frame_index=frame_index)
        else:
            metric.update(
                logits[scored],
                target[scored],
                video_index=video_index[scored],
                frame_index=frame_index[scored],
            )
        _sync(device)
        metric_seconds += time.perf_counter() - t1
        forward_seconds += t1 - t0
        if mask_dir is not None:
            save_prediction_masks(mask_dir, spec, batch, logits, avss_mask_size=avss_mask_size)

    skipped = merge_skipped(dist.all_gather_object(bad_clips.records()))
    scores = metric.compute()
    per_class: list[dict[str, Any]] = []
    if isinstance(metric, AVSSMetric):
        names = list(spec.class_names)
        names += [f"class_{i}" for i in range(len(names), metric.num_classes)]
        per_class = [
            {"id": c, "name": names[c], "iou": float(i), "fscore": float(f), "frames": int(k)}
            for c, (i, f, k) in enumerate(
                zip(
                    scores.iou_per_class.tolist(),
                    scores.fscore_per_class.tolist(),
                    scores.frames_per_class.tolist(),
                    strict=True,
                )
            )
        ]
        num_videos = len(dataset) - len(skipped)  # type: ignore[arg-type]
        result_mode, group = "avss71", None
    else:
        num_videos = scores.num_videos
        result_mode, group = scores.mode, scores.videos_per_group
    seconds = time.perf_counter() - start
    return EvalResult(
        task=task,
        split=split,
        miou=float(scores.miou),
        fscore=float(scores.fscore),
        num_videos=int(num_videos),
        num_frames=int(scores.num_frames),
        metric_mode=result_mode,
        videos_per_group=group,
        audio_mode=audio_mode,
        seconds=seconds,
        forward_seconds=forward_seconds,
        metric_seconds=metric_seconds,
        per_class=per_class,
        config=getattr(getattr(model, "config", None), "name", ""),
        skipped_clips=skipped,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- masks
def save_prediction_masks(
    root: Path,
    task: str | Task,
    batch: AVBatch,
    logits: torch.Tensor,
    *,
    avss_mask_size: tuple[int, int] | None = (360, 240),
) -> list[Path]:
    """Write a batch's predictions with the official names and encodings.

    * S4: ``<root>/<category>/<name>/<name>_<i>.png``, MS3: ``<root>/<name>/<name>_<i>.png``
      (``i`` 0-based), binary ``sigmoid > 0.5`` as 0/255 in a grey-palette PNG.
    * AVSS: ``<root>/<uid>/<uid>_<i>.png`` for all 10 frames, argmax class in the AVSS
      palette colours (RGB), at ``avss_mask_size`` (nearest, colours stay exact).

    The folder and the encoding are the task's (:meth:`~avsegformer.tasks.Task.save_masks`).
    """
    spec = get_task(task)
    written: list[Path] = []
    frames_per_clip = batch.frames.shape[1]
    per_clip = logits.reshape(len(batch.video_ids), frames_per_clip, *logits.shape[1:])
    for b, video_id in enumerate(batch.video_ids):
        folder = spec.mask_folder(root, batch, b)
        folder.mkdir(parents=True, exist_ok=True)
        written += spec.save_masks(folder, video_id, per_clip[b], mask_size=avss_mask_size)
    return written
