"""AVSegFormer training losses (S4, MS3, AVSS), numerically equal to the authors' code.

Each task's loss is ``iou_loss_weight * main + mix_loss_weight * mix`` where

* main, S4/MS3: Dice (default) or BCE between ``sigmoid(pred)`` and the binary GT;
  S4 scores only labelled frames (the first of each 5-frame clip in AVSBench train),
  MS3 every frame;
* main, AVSS: per-frame cross-entropy (mean over pixels), averaged over frames with
  the GT temporal flag as weights: sum(flag * ce) / sum(flag);
* mix ("intermediate mask loss"): the channel mean of the mask feature, bilinearly
  resized to the GT size, is treated as one more logit map and scored with the main
  loss (S4/MS3) or with Dice against ``gt > 0`` weighted by the flag (AVSS).

Constants: Dice ``1 - 2*sum(p*g) / (sum(p^2) + 0.001 + sum(g^2) + 0.001)`` per frame;
``"bce"`` is PyTorch's BCE on probabilities (log clamped at -100, as ``nn.BCELoss``),
``"bce_logits"`` a numerically stable BCE-with-logits (not in the reference: it
differs where the sigmoid saturates).

References: AVSegFormer (Gao et al., arXiv 2307.01146), training objective; AVSBench
(Zhou et al., ECCV 2022) for the S4/MS3 losses it builds on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError

__all__ = [
    "BinaryLossType",
    "LossWeights",
    "SegmentationLoss",
    "LossKind",
    "bce_loss_per_frame",
    "binary_segmentation_loss",
    "cross_entropy_per_frame",
    "dice_loss_per_frame",
    "labelled_frame_flags",
    "mask_feature_logits",
    "semantic_segmentation_loss",
    "weighted_frame_mean",
]

# "binary": one sigmoid channel (S4, MS3); "semantic": C-class softmax (AVSS).
LossKind = Literal["binary", "semantic"]
BinaryLossType = Literal["dice", "bce", "bce_logits"]

_DICE_SMOOTH = 0.001
LossDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the two terms (the configs' ``iou_loss`` and ``mix_loss``)."""

    iou_loss: float = 1.0
    mix_loss: float = 0.1


# ---------------------------------------------------------------------------
# Per-frame terms
# ---------------------------------------------------------------------------


def dice_loss_per_frame(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss of each frame on ``sigmoid(logits)``.

    Args:
        logits: float [N, ...] logits (e.g. [N,1,H,W]); computed in float32.
        target: [N, ...] with the same number of elements per frame, values in [0, 1].

    Returns:
        float32 [N]: ``1 - 2 sum(p g) / (sum(p^2) + 0.001 + sum(g^2) + 0.001)``; an empty
        GT gives 1 - 0 = 1 whatever the prediction.
    """
    probs = torch.sigmoid(logits.float()).flatten(1)
    target = target.flatten(1).to(probs.dtype)
    overlap = (probs * target).sum(-1)
    pred_energy = (probs * probs).sum(-1) + _DICE_SMOOTH
    target_energy = (target * target).sum(-1) + _DICE_SMOOTH
    return 1 - 2 * overlap / (pred_energy + target_energy)


def bce_loss_per_frame(
    logits: torch.Tensor, target: torch.Tensor, from_logits: bool = False
) -> torch.Tensor:
    """Binary cross-entropy of each frame, mean over its pixels.

    Args:
        logits: float [N, ...] logits.
        target: float [N, ...] same shape, values in [0, 1].
        from_logits: False = the reference: BCE of ``sigmoid(logits)`` with the log
            clamped at -100 (a saturated wrong pixel costs 100 and passes no gradient);
            True = ``binary_cross_entropy_with_logits`` (exact log-sigmoid, finite
            gradients everywhere).

    Returns:
        float [N].
    """
    # float32 and autocast off: BCE on probabilities is refused under CUDA autocast, and
    # the reference computes in float32 (no-op casts for float32 inputs).
    logits, target = logits.float(), target.float()
    with torch.autocast(device_type=logits.device.type, enabled=False):
        if from_logits:
            per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            per_pixel = F.binary_cross_entropy(torch.sigmoid(logits), target, reduction="none")
    return per_pixel.flatten(1).mean(-1)


def cross_entropy_per_frame(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of each frame, mean over its pixels.

    Args:
        logits: float [N,C,H,W] class logits.
        target: int64 [N,H,W] class ids in 0..C-1.

    Returns:
        float [N].
    """
    return F.cross_entropy(logits.float(), target, reduction="none").mean((-2, -1))


def weighted_frame_mean(per_frame: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``sum(w * l) / sum(w)`` (plain mean when ``weights`` is None).

    Args:
        per_frame: float [N]; weights: float or bool [N], >= 0.

    Returns:
        0-d tensor. When every weight is 0 it is 0 (still attached to the graph, with zero
        gradients) instead of the reference's NaN.
    """
    if weights is None:
        return per_frame.mean()
    weights = weights.to(per_frame.dtype)
    total = weights.sum()
    return (per_frame * weights).sum() / torch.where(total > 0, total, torch.ones_like(total))


def mask_feature_logits(mask_feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Channel mean of the mask feature, resized to the GT size: the mix loss's logits.

    Args:
        mask_feature: float [N,D,h,w] (D = 256 in the published models).
        size: (H, W) of the ground truth.

    Returns:
        float [N,1,H,W] (bilinear, ``align_corners=False``).
    """
    if mask_feature.dim() != 4:
        raise ShapeError(f"mask_feature has shape {tuple(mask_feature.shape)}; expected [N,D,h,w]")
    channel_mean = mask_feature.mean(dim=1, keepdim=True)
    return F.interpolate(channel_mean, size=size, mode="bilinear", align_corners=False)


def labelled_frame_flags(
    num_frames: int, frames_per_clip: int = 5, device: torch.device | str | None = None
) -> torch.Tensor:
    """The reference's S4 convention: the first frame of every clip is labelled.

    Returns:
        bool [num_frames], True at indices 0, T, 2T, ... (``range(0, N, T)``).
    """
    if frames_per_clip < 1:
        raise ConfigError(f"frames_per_clip must be >= 1, got {frames_per_clip}")
    return torch.arange(num_frames, device=device) % frames_per_clip == 0


# ---------------------------------------------------------------------------
# Task losses
# ---------------------------------------------------------------------------


def _check_frames(name: str, tensor: torch.Tensor, num_frames: int, dims: int) -> None:
    if tensor.dim() != dims or tensor.shape[0] != num_frames:
        raise ShapeError(
            f"{name} has shape {tuple(tensor.shape)}; expected {dims} dimensions with "
            f"{num_frames} frames first"
        )


def _select_labelled(
    pred: torch.Tensor,
    mask_feature: torch.Tensor,
    target: torch.Tensor,
    frame_flags: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the flagged frames of pred and mask_feature, and the matching targets.

    ``target`` may hold all N frames (aligned with ``pred``) or only the flagged ones,
    in order (S4 loaders that read the first frame's mask only).
    """
    num_frames = pred.shape[0]
    if frame_flags is None:
        if target.shape[0] != num_frames:
            raise ShapeError(
                f"target has {target.shape[0]} frames but pred has {num_frames}; "
                "pass frame_flags to say which frames the targets belong to"
            )
        return pred, mask_feature, target
    flags = frame_flags.reshape(-1).to(device=pred.device)
    if flags.numel() != num_frames:
        raise ShapeError(
            f"frame_flags has {flags.numel()} entries for {num_frames} predicted frames"
        )
    keep = torch.nonzero(flags != 0).squeeze(1)
    if target.shape[0] == num_frames:
        target = target.index_select(0, keep)
    elif target.shape[0] != keep.numel():
        raise ShapeError(
            f"target has {target.shape[0]} frames; expected {num_frames} (all frames) or "
            f"{keep.numel()} (the flagged frames)"
        )
    return pred.index_select(0, keep), mask_feature.index_select(0, keep), target


def binary_segmentation_loss(
    pred: torch.Tensor,
    mask_feature: torch.Tensor,
    target: torch.Tensor,
    frame_flags: torch.Tensor | None = None,
    loss_type: BinaryLossType = "dice",
    weights: LossWeights = LossWeights(),
) -> tuple[torch.Tensor, LossDict]:
    """S4 / MS3 loss: main term on ``pred`` plus the mix term on the mask feature.

    Args:
        pred: float [N,1,H,W] mask logits.
        mask_feature: float [N,D,h,w] mask feature of the head.
        target: float [N,1,H,W] (or [N,H,W]) binary GT for all frames, or [K,1,H,W] for
            only the K flagged frames, in order.
        frame_flags: bool/0-1 [N]: frames that have a label (S4: first frame of each
            clip, see :func:`labelled_frame_flags`); None = every frame (MS3).
        loss_type: ``"dice"`` (published configs), ``"bce"`` (reference BCE on
            probabilities) or ``"bce_logits"`` (stable BCE, not in the reference).
        weights: term weights.

    Returns:
        ``(total, {"iou_loss": w_iou * main, "mix_loss": w_mix * mix})``; the dict
        values are detached 0-d tensors (call ``float()`` to log them).
    """
    if loss_type not in ("dice", "bce", "bce_logits"):
        raise ConfigError(f"unknown loss_type {loss_type!r}; expected dice, bce or bce_logits")
    num_frames = pred.shape[0]
    _check_frames("pred", pred, num_frames, 4)
    _check_frames("mask_feature", mask_feature, num_frames, 4)
    if pred.shape[1] != 1:
        raise ShapeError(f"pred has shape {tuple(pred.shape)}; binary tasks expect [N,1,H,W]")
    if target.dim() == 3:
        target = target.unsqueeze(1)
    if target.dim() != 4 or target.shape[1:] != pred.shape[1:]:
        raise ShapeError(
            f"target has shape {tuple(target.shape)}; expected [N,1,H,W] matching pred "
            f"{tuple(pred.shape)}"
        )
    pred, mask_feature, target = _select_labelled(pred, mask_feature, target, frame_flags)
    mix_logits = mask_feature_logits(mask_feature, target.shape[-2:])

    def per_frame(logits: torch.Tensor) -> torch.Tensor:
        if loss_type == "dice":
            return dice_loss_per_frame(logits, target)
        return bce_loss_per_frame(logits, target, from_logits=loss_type == "bce_logits")

    iou_term = weights.iou_loss * weighted_frame_mean(per_frame(pred), None)
    mix_term = weights.mix_loss * weighted_frame_mean(per_frame(mix_logits), None)
    return _total(iou_term, mix_term)


def semantic_segmentation_loss(
    pred: torch.Tensor,
    mask_feature: torch.Tensor,
    target: torch.Tensor,
    frame_flags: torch.Tensor | None = None,
    weights: LossWeights = LossWeights(),
) -> tuple[torch.Tensor, LossDict]:
    """AVSS loss: flag-weighted cross-entropy plus flag-weighted Dice mix term.

    Args:
        pred: float [N,C,H,W] class logits.
        mask_feature: float [N,D,h,w].
        target: int64 [N,H,W] (or [N,1,H,W]) class ids in 0..C-1.
        frame_flags: float/bool [N], ``gt_temporal_mask_flag`` (1 = frame with a label,
            0 = padding); None = all ones.
        weights: term weights.

    Returns:
        ``(total, {"iou_loss": ..., "mix_loss": ...})`` as :func:`binary_segmentation_loss`.
    """
    num_frames = pred.shape[0]
    _check_frames("pred", pred, num_frames, 4)
    _check_frames("mask_feature", mask_feature, num_frames, 4)
    if target.dim() == 4 and target.shape[1] == 1:
        target = target.squeeze(1)
    if tuple(target.shape) != (num_frames, *pred.shape[2:]):
        raise ShapeError(
            f"target has shape {tuple(target.shape)}; expected [N,H,W] = "
            f"{[num_frames, *pred.shape[2:]]} for pred {tuple(pred.shape)}"
        )
    if torch.is_floating_point(target) or target.dtype == torch.bool:
        raise ShapeError(f"target must hold integer class ids, got {target.dtype}")
    if frame_flags is not None:
        frame_flags = frame_flags.reshape(-1).to(device=pred.device)
        if frame_flags.numel() != num_frames:
            raise ShapeError(
                f"frame_flags has {frame_flags.numel()} entries for {num_frames} frames"
            )
    target = target.long()
    iou_term = weights.iou_loss * weighted_frame_mean(
        cross_entropy_per_frame(pred, target), frame_flags
    )
    mix_logits = mask_feature_logits(mask_feature, target.shape[-2:])
    foreground = (target > 0).unsqueeze(1)
    mix_term = weights.mix_loss * weighted_frame_mean(
        dice_loss_per_frame(mix_logits, foreground), frame_flags
    )
    return _total(iou_term, mix_term)


def _total(iou_term: torch.Tensor, mix_term: torch.Tensor) -> tuple[torch.Tensor, LossDict]:
    return iou_term + mix_term, {"iou_loss": iou_term.detach(), "mix_loss": mix_term.detach()}


class SegmentationLoss(nn.Module):
    """The training loss of one task, configured like the published configs.

    Tasks build theirs (:meth:`avsegformer.tasks.Task.loss`); this class knows kinds of
    loss, not tasks.

    Args:
        kind: ``"binary"`` (:func:`binary_segmentation_loss`) or ``"semantic"``
            (:func:`semantic_segmentation_loss`: cross-entropy + Dice, as the reference).
        loss_type: main/mix loss of the binary kind (``"dice"``, ``"bce"``, ``"bce_logits"``).
        iou_loss_weight, mix_loss_weight: term weights (configs: 1.0 and 0.1).
        frames_per_clip: the clip length T, for ``unflagged="first_of_clip"``.
        unflagged: which frames enter a binary loss called without flags: ``"all"``, or
            ``"first_of_clip"`` (frames 0, T, 2T...: S4's training labels, the
            reference's hard-coded stride).

    ``forward(pred, mask_feature, target, frame_flags=None)`` returns
    ``(total, {"iou_loss": ..., "mix_loss": ...})``; see :func:`binary_segmentation_loss`
    and :func:`semantic_segmentation_loss` for shapes. ``frame_flags`` is the label flag
    per frame (S4) or AVSS's ``gt_temporal_mask_flag``.
    """

    def __init__(
        self,
        kind: LossKind,
        loss_type: BinaryLossType = "dice",
        iou_loss_weight: float = 1.0,
        mix_loss_weight: float = 0.1,
        frames_per_clip: int = 5,
        unflagged: Literal["all", "first_of_clip"] = "all",
    ) -> None:
        super().__init__()
        if kind not in ("binary", "semantic"):
            raise ConfigError(f"unknown loss kind {kind!r}; expected binary or semantic")
        if loss_type not in ("dice", "bce", "bce_logits"):
            raise ConfigError(f"unknown loss_type {loss_type!r}; expected dice, bce or bce_logits")
        if frames_per_clip < 1:
            raise ConfigError(f"frames_per_clip must be >= 1, got {frames_per_clip}")
        if unflagged not in ("all", "first_of_clip"):
            raise ConfigError(f"unknown unflagged {unflagged!r}; expected all or first_of_clip")
        self.kind = kind
        self.loss_type = loss_type
        self.weights = LossWeights(iou_loss_weight, mix_loss_weight)
        self.frames_per_clip = frames_per_clip
        self.unflagged = unflagged

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind}, loss_type={self.loss_type}, "
            f"iou_loss={self.weights.iou_loss}, mix_loss={self.weights.mix_loss}"
        )

    def forward(
        self,
        pred: torch.Tensor,
        mask_feature: torch.Tensor,
        target: torch.Tensor,
        frame_flags: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LossDict]:
        if self.kind == "semantic":
            return semantic_segmentation_loss(
                pred, mask_feature, target, frame_flags, weights=self.weights
            )
        if frame_flags is None and self.unflagged == "first_of_clip":
            frame_flags = labelled_frame_flags(pred.shape[0], self.frames_per_clip, pred.device)
        return binary_segmentation_loss(
            pred, mask_feature, target, frame_flags, self.loss_type, self.weights
        )
