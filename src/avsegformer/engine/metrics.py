"""AVSBench evaluation metrics, exactly as published, as streaming accumulators.

* S4 / MS3 (binary masks): per-frame foreground IoU ("M_J") and the F-measure ("M_F",
  beta^2 = 0.3, 255 thresholds). :class:`BinaryMetric` stores one IoU and one 255-point
  F-curve per frame, keyed by (video index, frame index), so that :meth:`BinaryMetric.compute`
  can score them

  - ``mode="avsbench"``: the official numbers. Frames are grouped into batches of
    ``videos_per_group`` consecutive videos in dataset order (2 reproduces the
    AVSegFormer release, 4 the AVSBench scripts); each group's mIoU is its mean frame IoU
    and its F is the maximum over thresholds of its mean F-curve (non-empty GT frames
    only; 0 for a group without one); the reported values are unweighted means over
    groups. The grouping depends only on the video indices, never on the batch size the
    evaluator happened to use.
  - ``mode="invariant"``: one dataset-level group: mIoU = mean frame IoU, F = maximum of
    the mean F-curve over all non-empty frames (a single dataset threshold). Independent
    of any batching; not comparable with published numbers.

* AVSS (71 classes): per-frame, per-class IoU and F from argmax maps; sums over the whole
  split divided by the number of frames where the class occurs in prediction or GT;
  final values are means over all classes (:class:`AVSSMetric`).

Both accumulators gather their per-frame records from every process when
``torch.distributed`` is initialised (``compute`` is then collective), sort them by
(video, frame) and drop duplicates (e.g. the padding of ``DistributedSampler``), so a
multi-process evaluation gives the single-process values.

All definitions follow ``shared/spec/metrics.md``; float32 is used wherever the reference
computes in float32 (scores, thresholds, per-frame ratios) so per-frame values agree
with it to the last bit or nearly; sums over frames are float64.

References: AVSBench (Zhou et al., ECCV 2022) and AVSegFormer (Gao et al., arXiv
2307.01146) evaluation protocols.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import ConfigError, MetricError, ShapeError
from . import dist

logger = logging.getLogger(__name__)

__all__ = [
    "AVSS_NUM_CLASSES",
    "AVSSFrameStats",
    "AVSSMetric",
    "AVSSScores",
    "BinaryFrameStats",
    "BinaryMetric",
    "BinaryScores",
    "FSCORE_BETA2",
    "FSCORE_NUM_THRESHOLDS",
    "FrameMetric",
    "avss_frame_stats",
    "binary_frame_stats",
    "fscore",
    "fscore_thresholds",
    "mask_iou",
]

FSCORE_BETA2 = 0.3
FSCORE_NUM_THRESHOLDS = 255
AVSS_NUM_CLASSES = 71
# Denominator guards of the reference, kept because they are part of its float32 results.
_IOU_EPS = 1e-7
_PR_EPS = 1e-20
_AVSS_EPS = 2.220446049250313e-16

BinaryMode = Literal["avsbench", "invariant"]
IndexLike = torch.Tensor | Sequence[int]


# ---------------------------------------------------------------------------
# Binary (S4 / MS3): per-frame statistics
# ---------------------------------------------------------------------------


def fscore_thresholds(device: torch.device | str | None = None) -> torch.Tensor:
    """The 255 F-measure thresholds: float32 ``linspace(0, 1 - 1e-10, 255)``.

    Computed on the CPU exactly as the reference does (the end point rounds to 1.0 in
    float32), then moved to ``device``.

    Returns:
        float32 [255], ascending, from 0.0 to 1.0.
    """
    return _score_boundaries()[0].to(device)


@functools.cache
def _score_boundaries() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Thresholds plus the IoU cut, merged into one sorted list of histogram boundaries.

    IoU uses ``sigmoid > 0.5`` (strict), which is ``sigmoid >= nextafter(0.5, 1)``; adding
    that value to the F thresholds lets one histogram per frame answer both questions.

    Returns:
        thresholds float32 [255]; boundaries float32 [256] (ascending); the column of
        each threshold in ``boundaries`` (int64 [255]); the column of the IoU cut.
    """
    thresholds = torch.linspace(0, 1 - 1e-10, FSCORE_NUM_THRESHOLDS, dtype=torch.float32)
    half = torch.tensor(0.5, dtype=torch.float32)
    iou_cut = torch.nextafter(half, torch.tensor(1.0, dtype=torch.float32))
    cut_column = int(torch.searchsorted(thresholds, iou_cut))
    boundaries = torch.cat([thresholds[:cut_column], iou_cut[None], thresholds[cut_column:]])
    columns = torch.arange(FSCORE_NUM_THRESHOLDS)
    threshold_columns = columns + (columns >= cut_column).long()
    return thresholds, boundaries, threshold_columns, cut_column


@dataclass(frozen=True)
class BinaryFrameStats:
    """Per-frame S4/MS3 results of one batch (tensors on the input's device).

    Attributes:
        iou: float32 [N] in [0, 1], foreground IoU with the empty-GT convention.
        fscore_curve: float32 [N, 255] in [0, 1], F-measure at each threshold (0 where
            precision and recall are both 0, and for empty-GT frames).
        has_foreground: bool [N], GT frame non-empty (only these count in the F-score).
    """

    iou: torch.Tensor
    fscore_curve: torch.Tensor
    has_foreground: torch.Tensor


def _as_frames(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """Accept [N,H,W] or [N,1,H,W]; return [N,H,W]."""
    if tensor.dim() == 4 and tensor.shape[1] == 1:
        return tensor[:, 0]
    if tensor.dim() != 3:
        raise ShapeError(f"{name} has shape {tuple(tensor.shape)}; expected [N,H,W] or [N,1,H,W]")
    return tensor


def _binary_inputs(logits: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate S4/MS3 inputs; return float32 logits [N,H,W] and bool foreground [N,H,W]."""
    if not torch.is_floating_point(logits):
        raise ShapeError(f"logits must be floating point, got {logits.dtype}")
    logits = _as_frames(logits, "logits")
    gt = _as_frames(gt, "gt")
    if gt.shape != logits.shape:
        raise ShapeError(
            f"gt has shape {tuple(gt.shape)} but logits have {tuple(logits.shape)} "
            "(after dropping a channel of 1); resize one to the other"
        )
    if gt.dtype != torch.bool and bool(((gt != 0) & (gt != 1)).any()):
        raise ShapeError("gt must be a binary mask with values 0 and 1 only")
    return logits.float(), gt != 0


def binary_frame_stats(logits: torch.Tensor, gt: torch.Tensor) -> BinaryFrameStats:
    """IoU and F-curve of each frame (S4/MS3), exactly as the AVSBench code.

    IoU: prediction ``sigmoid(logit) > 0.5`` (float32, strict); IoU = I / (U + 1e-7); a
    frame with an empty GT scores (pixels predicted background) / (H*W).
    F-curve: at each threshold t_k of :func:`fscore_thresholds`, pixels with
    ``sigmoid >= t_k`` are positive; precision = TP / (P + 1e-20), recall = TP / (G + 1e-20),
    F = 1.3 P R / (0.3 P + R), 0/0 -> 0. All counts come from one histogram of each
    frame's scores against the (exact, float32) thresholds instead of 255 passes.

    Args:
        logits: float [N,H,W] or [N,1,H,W], raw mask logits (any real values; the sigmoid
            is taken in float32).
        gt: [N,H,W] or [N,1,H,W], values 0/1 (bool, integer or float).

    Returns:
        :class:`BinaryFrameStats` on the logits' device.
    """
    logits, foreground = _binary_inputs(logits, gt)
    num_frames, height, width = logits.shape
    _, boundaries, threshold_columns, cut_column = _score_boundaries()
    device = logits.device
    boundaries = boundaries.to(device)
    num_buckets = boundaries.numel() + 1

    # bucket = number of boundaries <= score; key packs (frame, is_foreground, bucket).
    key = torch.bucketize(torch.sigmoid(logits), boundaries, right=True)
    key.add_(foreground, alpha=num_buckets)
    frame_offsets = torch.arange(num_frames, device=device) * (2 * num_buckets)
    key.add_(frame_offsets.view(-1, 1, 1))
    histogram = torch.bincount(key.view(-1), minlength=2 * num_buckets * num_frames)
    histogram = histogram.view(num_frames, 2, num_buckets)
    # at_least[..., m] = pixels whose score >= boundaries[m]  (suffix sums of the histogram)
    at_least = histogram.flip(-1).cumsum(-1).flip(-1)[..., 1:]
    foreground_at_least = at_least[:, 1]
    predicted_at_least = at_least.sum(1)
    gt_count = histogram[:, 1].sum(-1)

    pixels = height * width
    predicted = predicted_at_least[:, cut_column]
    empty_gt = gt_count == 0
    intersection = torch.where(empty_gt, pixels - predicted, foreground_at_least[:, cut_column])
    union = torch.where(empty_gt, pixels, predicted + gt_count - foreground_at_least[:, cut_column])
    iou = intersection.float() / (union.float() + _IOU_EPS)

    threshold_columns = threshold_columns.to(device)
    true_positive = foreground_at_least[:, threshold_columns].float()
    precision = true_positive / (predicted_at_least[:, threshold_columns].float() + _PR_EPS)
    recall = true_positive / (gt_count.float()[:, None] + _PR_EPS)
    curve = (1 + FSCORE_BETA2) * precision * recall / (FSCORE_BETA2 * precision + recall)
    curve = torch.where(torch.isnan(curve), torch.zeros_like(curve), curve)
    return BinaryFrameStats(iou=iou, fscore_curve=curve, has_foreground=~empty_gt)


@dataclass(frozen=True)
class _GroupScores:
    miou: torch.Tensor  # float64 [G]
    fscore: torch.Tensor  # float64 [G]
    best_threshold: torch.Tensor  # int64 [G], index into the thresholds (0 if no F frame)


def _score_groups(
    iou: torch.Tensor,
    curves: torch.Tensor,
    has_foreground: torch.Tensor,
    group: torch.Tensor,
    num_groups: int,
) -> _GroupScores:
    """mIoU and F of each group of frames, as the reference scores one test batch.

    Args:
        iou: float32 [M]; curves: float32 [M, 255]; has_foreground: bool [M];
        group: int64 [M] in 0..num_groups-1 (every group non-empty).
    """
    frames = torch.zeros(num_groups, dtype=torch.float64).index_add_(
        0, group, torch.ones_like(iou, dtype=torch.float64)
    )
    iou_sum = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, iou.double())
    weight = has_foreground.double()
    curve_sum = torch.zeros(num_groups, curves.shape[1], dtype=torch.float64).index_add_(
        0, group, curves.double() * weight[:, None]
    )
    fg_frames = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, weight)
    # A group without a non-empty frame keeps the reference's all-zero curve: F = 0.
    mean_curve = curve_sum / fg_frames.clamp_min(1)[:, None]
    best_f, best_k = mean_curve.max(dim=1)
    return _GroupScores(miou=iou_sum / frames, fscore=best_f, best_threshold=best_k)


def _batch_scores(logits: torch.Tensor, gt: torch.Tensor) -> _GroupScores:
    """Score one batch as a single group, as the reference test loop scores each batch."""
    stats = binary_frame_stats(logits, gt)
    group = torch.zeros(stats.iou.shape[0], dtype=torch.long)
    return _score_groups(
        stats.iou.cpu(), stats.fscore_curve.cpu(), stats.has_foreground.cpu(), group, 1
    )


def mask_iou(logits: torch.Tensor, gt: torch.Tensor) -> float:
    """The reference ``mask_iou`` of one batch: mean frame IoU over all N frames.

    Args: as :func:`binary_frame_stats`. Returns: float in [0, 1].
    """
    return float(_batch_scores(logits, gt).miou[0])


def fscore(logits: torch.Tensor, gt: torch.Tensor) -> float:
    """The reference ``Eval_Fmeasure`` of one batch: max over thresholds of the mean F-curve.

    Only frames with a non-empty GT count; a batch without one scores 0.0.
    Args: as :func:`binary_frame_stats`. Returns: float in [0, 1].
    """
    return float(_batch_scores(logits, gt).fscore[0])


# ---------------------------------------------------------------------------
# Per-frame record store and base class shared by both accumulators
# ---------------------------------------------------------------------------


def _index_vector(values: IndexLike, num_frames: int, name: str) -> torch.Tensor:
    index = torch.as_tensor(values).detach().to("cpu").reshape(-1)
    if index.is_floating_point() or index.dtype == torch.bool:
        raise ShapeError(f"{name} must hold integers, got {index.dtype}")
    if index.numel() != num_frames:
        raise ShapeError(
            f"{name} has {index.numel()} entries for {num_frames} frames; give one per frame"
        )
    if num_frames and int(index.min()) < 0:
        raise ShapeError(f"{name} must be >= 0, got a minimum of {int(index.min())}")
    return index.long()


class _FrameRecords:
    """Per-frame results keyed by (video, frame), gathered, sorted and de-duplicated.

    Frames whose video is unknown get negative video keys, unique within the process;
    they are never treated as duplicates.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._videos: list[torch.Tensor] = []
        self._frames: list[torch.Tensor] = []
        self._fields: dict[str, list[torch.Tensor]] = {}
        self._next_frame: dict[int, int] = {}
        self._anonymous_videos = 0
        self.num_frames = 0

    def add(
        self,
        video_index: IndexLike | None,
        frame_index: IndexLike | None,
        num_frames: int,
        **fields: torch.Tensor,
    ) -> None:
        if video_index is None:
            self._anonymous_videos += 1
            videos = torch.full((num_frames,), -self._anonymous_videos, dtype=torch.long)
            frames = torch.arange(num_frames)
        else:
            videos = _index_vector(video_index, num_frames, "video_index")
            if frame_index is None:
                frames = self._count_frames(videos)
            else:
                frames = _index_vector(frame_index, num_frames, "frame_index")
        self._videos.append(videos)
        self._frames.append(frames)
        for name, value in fields.items():
            # Results stay on their device until compute (no per-batch device-to-host copy).
            self._fields.setdefault(name, []).append(value.detach())
        self.num_frames += num_frames

    def _count_frames(self, videos: torch.Tensor) -> torch.Tensor:
        """Frame positions in order of arrival within each video (handles split videos)."""
        positions = []
        for video in videos.tolist():
            position = self._next_frame.get(video, 0)
            self._next_frame[video] = position + 1
            positions.append(position)
        return torch.tensor(positions, dtype=torch.long)

    def collect(self, sync: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """All records (from every process when ``sync``), on the CPU, in (video, frame) order.

        Returns:
            videos int64 [M], frames int64 [M], and each field [M, ...].
        """
        local = {
            "videos": _cat_or_empty(self._videos, torch.long),
            "frames": _cat_or_empty(self._frames, torch.long),
            "fields": {name: torch.cat(parts).cpu() for name, parts in self._fields.items()},
        }
        if sync and dist.get_world_size() > 1:
            parts = dist.all_gather_object(local)
            for rank, part in enumerate(parts):
                # Anonymous videos of different processes must stay distinct.
                videos = part["videos"]
                part["videos"] = torch.where(videos < 0, videos - rank * (1 << 40), videos)
        else:
            parts = [local]
        videos = torch.cat([part["videos"] for part in parts])
        frames = torch.cat([part["frames"] for part in parts])
        names = [name for part in parts for name in part["fields"]]
        fields = {
            name: torch.cat([part["fields"][name] for part in parts if name in part["fields"]])
            for name in dict.fromkeys(names)
        }
        order = torch.argsort(frames, stable=True)
        order = order[torch.argsort(videos[order], stable=True)]
        videos, frames = videos[order], frames[order]
        keep = torch.ones_like(videos, dtype=torch.bool)
        if videos.numel() > 1:
            same_as_previous = (videos[1:] == videos[:-1]) & (frames[1:] == frames[:-1])
            keep[1:] = ~(same_as_previous & (videos[1:] >= 0))
        dropped = int((~keep).sum())
        if dropped:
            logger.info(
                "metrics: ignored %d duplicate frame(s) (same video and frame index, "
                "e.g. DistributedSampler padding)",
                dropped,
            )
        fields = {name: value[order][keep] for name, value in fields.items()}
        return videos[keep], frames[keep], fields


def _cat_or_empty(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


class FrameMetric:
    """What both accumulators share: per-frame results kept by (video, frame) key.

    A subclass scores a batch in ``update`` and hands the per-frame results to
    :meth:`_remember`; its ``compute`` takes them back, from every process, through
    :meth:`_collect`.
    """

    def __init__(self) -> None:
        self._records = _FrameRecords()

    def reset(self) -> None:
        """Forget every frame seen so far."""
        self._records.reset()

    @property
    def num_frames(self) -> int:
        """Frames added to this process's accumulator (before de-duplication)."""
        return self._records.num_frames

    def _remember(
        self,
        video_index: IndexLike | None,
        frame_index: IndexLike | None,
        **fields: torch.Tensor,
    ) -> None:
        """Keep one batch's per-frame results: each field is [N, ...] for its N frames."""
        num_frames = next(iter(fields.values())).shape[0]
        self._records.add(video_index, frame_index, num_frames, **fields)

    def _collect(self, sync: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Video keys int64 [M] and the fields [M, ...] of all frames kept, de-duplicated
        and in (video, frame) order (from every process when ``sync``).

        Raises:
            MetricError: no frame was added (anywhere).
        """
        videos, _, fields = self._records.collect(sync)
        if videos.numel() == 0:
            raise MetricError(f"{type(self).__name__}.compute() called before any update()")
        return videos, fields


# ---------------------------------------------------------------------------
# Binary accumulator
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BinaryScores:
    """Result of :meth:`BinaryMetric.compute` (fractions, not percentages).

    Attributes:
        miou: M_J, mean over groups of the mean frame IoU.
        fscore: M_F, mean over groups of the group's best-threshold F.
        mode: ``"avsbench"`` or ``"invariant"``.
        videos_per_group: the grouping used (None in invariant mode).
        num_frames, num_videos: frames and distinct videos scored.
        group_miou, group_fscore: per-group values, in dataset order.
        threshold: the single best sigmoid threshold (invariant mode only).
    """

    miou: float
    fscore: float
    mode: str
    videos_per_group: int | None
    num_frames: int
    num_videos: int
    group_miou: tuple[float, ...]
    group_fscore: tuple[float, ...]
    threshold: float | None


def _check_mode(mode: str, videos_per_group: int) -> None:
    if mode not in ("avsbench", "invariant"):
        raise ConfigError(f"unknown metric mode {mode!r}; expected 'avsbench' or 'invariant'")
    if mode == "avsbench" and (not isinstance(videos_per_group, int) or videos_per_group < 1):
        raise ConfigError(f"videos_per_group must be a positive integer, got {videos_per_group!r}")


class BinaryMetric(FrameMetric):
    """Streaming S4/MS3 mIoU and F-score with the official or a batch-invariant grouping.

    Usage::

        metric = BinaryMetric(mode="avsbench", videos_per_group=2)
        for batch in loader:
            metric.update(logits, gt, video_index=batch_video_index_per_frame)
        scores = metric.compute()          # collective under torch.distributed

    Memory: one float32 IoU and 255 float32 F values per frame (about 1 kB per frame).

    Args:
        mode: default mode of :meth:`compute` (see the module docstring).
        videos_per_group: default group size of ``"avsbench"`` mode: 2 = AVSegFormer's
            test batch (its published numbers), 4 = AVSBench's. Groups are formed over
            the distinct video indices seen, in ascending order, so they match the
            reference's batches when every video of the split is evaluated (and the last
            group may be smaller, as the reference's last batch).
    """

    def __init__(self, mode: BinaryMode = "avsbench", videos_per_group: int = 2) -> None:
        _check_mode(mode, videos_per_group)
        super().__init__()
        self.mode = mode
        self.videos_per_group = videos_per_group

    def update(
        self,
        logits: torch.Tensor,
        gt: torch.Tensor,
        video_index: IndexLike,
        frame_index: IndexLike | None = None,
    ) -> BinaryFrameStats:
        """Score a batch of frames and remember the per-frame results.

        Args:
            logits: float [N,H,W] or [N,1,H,W], raw mask logits.
            gt: [N,H,W] or [N,1,H,W], binary (0/1) ground truth at the same size.
            video_index: int [N] (tensor or sequence), the dataset position of each
                frame's video (the dataset's item index); defines the grouping order.
            frame_index: int [N], position of each frame in its video. Default: order of
                arrival per video. Give it when the same video may be evaluated twice
                (duplicates are dropped by (video, frame) key).

        Returns:
            this batch's :class:`BinaryFrameStats` (e.g. for logging).
        """
        stats = binary_frame_stats(logits, gt)
        self._remember(
            video_index,
            frame_index,
            iou=stats.iou,
            curve=stats.fscore_curve,
            has_foreground=stats.has_foreground,
        )
        return stats

    def compute(
        self,
        mode: BinaryMode | None = None,
        videos_per_group: int | None = None,
        sync: bool = True,
    ) -> BinaryScores:
        """mIoU and F-score over all frames seen (by every process when ``sync``).

        Args:
            mode, videos_per_group: override the constructor's defaults.
            sync: gather records from all processes (collective when distributed).

        Raises:
            MetricError: no frame was added (anywhere).
            ConfigError: an unknown mode or a bad group size.
        """
        mode = mode or self.mode
        group_size = videos_per_group or self.videos_per_group
        _check_mode(mode, group_size)
        videos, fields = self._collect(sync)
        unique_videos, video_rank = torch.unique(videos, return_inverse=True)
        if mode == "avsbench":
            group = video_rank // group_size
            num_groups = int(group.max()) + 1
        else:
            group = torch.zeros_like(video_rank)
            num_groups = 1
        scores = _score_groups(
            fields["iou"], fields["curve"], fields["has_foreground"], group, num_groups
        )
        threshold = None
        if mode == "invariant":
            threshold = float(fscore_thresholds()[scores.best_threshold[0]])
        return BinaryScores(
            miou=float(scores.miou.mean()),
            fscore=float(scores.fscore.mean()),
            mode=mode,
            videos_per_group=group_size if mode == "avsbench" else None,
            num_frames=int(videos.numel()),
            num_videos=int(unique_videos.numel()),
            group_miou=tuple(scores.miou.tolist()),
            group_fscore=tuple(scores.fscore.tolist()),
            threshold=threshold,
        )


# ---------------------------------------------------------------------------
# AVSS (71 classes)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AVSSFrameStats:
    """Per-frame, per-class AVSS results of one batch (tensors on the input's device).

    Attributes:
        iou: float32 [N, C] in [0, 1] (0 where the class is in neither map).
        fscore: float32 [N, C] in [0, 1] (beta^2 = 0.3; 0/0 -> 0).
        present: bool [N, C], class in the prediction or the GT of the frame.
    """

    iou: torch.Tensor
    fscore: torch.Tensor
    present: torch.Tensor


def _avss_inputs(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() != 4 or not torch.is_floating_point(logits):
        raise ShapeError(
            f"logits have shape {tuple(logits.shape)} and dtype {logits.dtype}; "
            "expected floating point [N,C,H,W]"
        )
    target = _as_frames(target, "target")
    if torch.is_floating_point(target) or target.dtype == torch.bool:
        raise ShapeError(f"target must hold integer class ids, got {target.dtype}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ShapeError(
            f"target has shape {tuple(target.shape)}; expected {list(expected)} to match "
            f"logits {tuple(logits.shape)}"
        )
    num_classes = logits.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ShapeError(
            f"target class ids span {int(target.min())}..{int(target.max())}; "
            f"expected 0..{num_classes - 1}"
        )
    return logits, target.long()


def _per_frame_class_counts(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixel count of each class in each frame: int64 [N,H,W] ids -> int64 [N, C].

    Ids equal to ``num_classes`` are not counted (used to mask pixels out).
    """
    num_frames = classes.shape[0]
    width = num_classes + 1
    offsets = torch.arange(num_frames, device=classes.device).view(-1, 1, 1) * width
    counts = torch.bincount((classes + offsets).view(-1), minlength=num_frames * width)
    return counts.view(num_frames, width)[:, :num_classes]


def avss_frame_stats(logits: torch.Tensor, target: torch.Tensor) -> AVSSFrameStats:
    """Per-frame, per-class IoU and F of AVSS predictions, as ``calc_color_miou_fscore``.

    The prediction is the argmax over classes (ties -> lowest class index; an all-zero
    logit map, as for padded frames, predicts class 0). For class c in frame i:
    IoU = I / (U + 2.22e-16), precision = I / P, recall = I / G, F = 1.3 P R / (0.3 P + R)
    with NaN -> 0, and ``present`` = U > 0. Counts are exact integer histograms.

    Args:
        logits: float [N,C,H,W] class scores (softmax not needed: it preserves the argmax).
        target: integer [N,H,W] or [N,1,H,W], class ids in 0..C-1 (padded frames: 0).

    Returns:
        :class:`AVSSFrameStats` on the logits' device.
    """
    logits, target = _avss_inputs(logits, target)
    num_classes = logits.shape[1]
    # max(dim).indices is several times faster than argmax here and also returns the
    # first maximal index.
    prediction = logits.max(dim=1).indices
    predicted = _per_frame_class_counts(prediction, num_classes)
    labelled = _per_frame_class_counts(target, num_classes)
    hits = torch.where(prediction == target, target, num_classes)
    intersection = _per_frame_class_counts(hits, num_classes)
    union = predicted + labelled - intersection

    inter_f, union_f = intersection.float(), union.float()
    iou = inter_f / (union_f + _AVSS_EPS)
    precision = inter_f / predicted.float()
    recall = inter_f / labelled.float()
    f = (1 + FSCORE_BETA2) * precision * recall / (FSCORE_BETA2 * precision + recall)
    f = torch.where(torch.isnan(f), torch.zeros_like(f), f)
    return AVSSFrameStats(iou=iou, fscore=f, present=union > 0)


@dataclass(frozen=True)
class AVSSScores:
    """Result of :meth:`AVSSMetric.compute` (fractions, not percentages).

    Attributes:
        miou: mean of ``iou_per_class`` over all C classes (never-seen classes count 0).
        fscore: mean of ``fscore_per_class`` over all C classes.
        iou_per_class, fscore_per_class: float64 [C], per-class sums / frames_per_class
            (0 where that count is 0).
        iou_sum, fscore_sum: float64 [C], the accumulated per-frame sums.
        frames_per_class: int64 [C], frames where the class is predicted or labelled.
        num_frames: frames scored (padded frames included, as in the reference).

    The reference also logs "noBg" values; they average classes 0..69, i.e. they drop
    class 70 (not the background). If needed: ``iou_per_class[:-1].mean()``.
    """

    miou: float
    fscore: float
    iou_per_class: torch.Tensor
    fscore_per_class: torch.Tensor
    iou_sum: torch.Tensor
    fscore_sum: torch.Tensor
    frames_per_class: torch.Tensor
    num_frames: int

    @property
    def classes_seen(self) -> int:
        """Classes that occurred (in prediction or GT) in at least one frame."""
        return int((self.frames_per_class > 0).sum())


def _divide_or_zero(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


class AVSSMetric(FrameMetric):
    """Streaming AVSS mIoU and F-score over C (71) classes, as ``scripts/avss/test.py``.

    Per-frame per-class results are kept (about 0.6 kB per frame at 71 classes) so that
    duplicates across processes can be dropped; the result is independent of batch size
    and order. Padded frames are scored when given (the published numbers include them).

    Args:
        num_classes: number of classes C, background (0) included.
    """

    def __init__(self, num_classes: int = AVSS_NUM_CLASSES) -> None:
        super().__init__()
        self.num_classes = num_classes
        self._reset_running()

    def _reset_running(self) -> None:
        # Local per-class sums for the informational running log only.
        self._running_iou = torch.zeros(self.num_classes, dtype=torch.float64)
        self._running_f = torch.zeros(self.num_classes, dtype=torch.float64)
        self._running_count = torch.zeros(self.num_classes, dtype=torch.long)

    def reset(self) -> None:
        """Forget every frame seen so far."""
        super().reset()
        self._reset_running()

    def update(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        video_index: IndexLike | None = None,
        frame_index: IndexLike | None = None,
    ) -> AVSSFrameStats:
        """Score a batch of frames and remember the per-frame results.

        Args:
            logits: float [N,C,H,W]; target: integer [N,H,W] (or [N,1,H,W]) in 0..C-1.
            video_index: optional int [N], dataset index of each frame's video; with it,
                frames seen twice (same video and frame index) count once.
            frame_index: optional int [N] (default: order of arrival per video).

        Returns:
            this batch's :class:`AVSSFrameStats`.
        """
        if logits.dim() == 4 and logits.shape[1] != self.num_classes:
            raise ShapeError(
                f"logits have {logits.shape[1]} classes (shape {tuple(logits.shape)}); "
                f"this metric expects {self.num_classes}"
            )
        stats = avss_frame_stats(logits, target)
        self._remember(
            video_index,
            frame_index,
            iou=stats.iou,
            fscore=stats.fscore,
            present=stats.present,
        )
        device = stats.iou.device
        self._running_iou = self._running_iou.to(device) + stats.iou.double().sum(0)
        self._running_f = self._running_f.to(device) + stats.fscore.double().sum(0)
        self._running_count = self._running_count.to(device) + stats.present.long().sum(0)
        return stats

    def compute(self, sync: bool = True) -> AVSSScores:
        """Final mIoU and F-score (collective under torch.distributed when ``sync``).

        Raises:
            MetricError: no frame was added (anywhere).
        """
        videos, fields = self._collect(sync)
        iou_sum = fields["iou"].double().sum(0)
        f_sum = fields["fscore"].double().sum(0)
        frames_per_class = fields["present"].long().sum(0)
        iou_pc = _divide_or_zero(iou_sum, frames_per_class)
        f_pc = _divide_or_zero(f_sum, frames_per_class)
        return AVSSScores(
            miou=float(iou_pc.mean()),
            fscore=float(f_pc.mean()),
            iou_per_class=iou_pc,
            fscore_per_class=f_pc,
            iou_sum=iou_sum,
            fscore_sum=f_sum,
            frames_per_class=frames_per_class,
            num_frames=int(videos.numel()),
        )

    def running_scores(self) -> tuple[float, float]:
        """The reference's per-batch log line: (mIoU, F) over classes seen so far.

        Informational only: divides by the number of classes with a non-zero frame count,
        not by C as the final result does. Local to this process (no synchronisation,
        no de-duplication); NaN before any update.
        """
        seen = int((self._running_count > 0).sum())
        if seen == 0:
            return math.nan, math.nan
        iou_pc = _divide_or_zero(self._running_iou, self._running_count)
        f_pc = _divide_or_zero(self._running_f, self._running_count)
        return float(iou_pc.sum() / seen), float(f_pc.sum() / seen)
