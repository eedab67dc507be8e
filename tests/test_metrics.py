"""AVSBench metrics against the authors' code (tests/reference/metrics.npz) and the spec."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from _reference import reference_path
from avsegformer.engine.metrics import (
    AVSSMetric,
    BinaryMetric,
    avss_frame_stats,
    binary_frame_stats,
    fscore,
    fscore_thresholds,
    mask_iou,
)
from avsegformer.errors import ConfigError, MetricError, ShapeError

ATOL = 1e-6  # README: metrics within 1e-6 (cls_pc exact)


@pytest.fixture(scope="module")
def ref():
    return np.load(reference_path("metrics.npz"), allow_pickle=False)


def _binary_batch(ref, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.from_numpy(ref[f"bin{k}_logits_f16"].astype(np.float32))
    gt = torch.from_numpy(ref[f"bin{k}_gt"].astype(np.float32))
    return logits, gt


def _multiclass_batch(ref, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.from_numpy(ref[f"mc{k}_logits_f16"].astype(np.float32))
    target = torch.from_numpy(ref[f"mc{k}_target"].astype(np.int64))
    return logits, target


# Each reference batch is two videos (AVSegFormer's test batch): 2 x 5 frames for the
# 10-frame batches, 2 x 3 for the last one (6 frames).
def _reference_videos(ref) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    videos = []
    for k in range(4):
        logits, gt = _binary_batch(ref, k)
        half = logits.shape[0] // 2
        videos.append((2 * k, logits[:half], gt[:half]))
        videos.append((2 * k + 1, logits[half:], gt[half:]))
    return videos


# ---------------------------------------------------------------------------
# a naive, loop-by-threshold transcription of the spec, independent of the histogram code
# ---------------------------------------------------------------------------


def _naive_curve(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    scores = torch.sigmoid(logits.float())
    thresholds = torch.linspace(0, 1 - 1e-10, 255)
    curve = torch.zeros(255)
    for k in range(255):
        positive = (scores >= thresholds[k]).float()
        tp = (positive * gt).sum()
        precision = tp / (positive.sum() + 1e-20)
        recall = tp / (gt.sum() + 1e-20)
        f = 1.3 * precision * recall / (0.3 * precision + recall)
        curve[k] = 0.0 if torch.isnan(f) else f
    return curve


def _naive_iou(logits: torch.Tensor, gt: torch.Tensor) -> float:
    pred = (torch.sigmoid(logits.float()) > 0.5).float()
    if gt.sum() == 0:
        inter, union = ((1 - pred) * (1 - gt)).sum(), gt.numel()
    else:
        inter, union = (pred * gt).sum(), torch.maximum(pred, gt).sum()
    return float(inter / (union + 1e-7))


# ---------------------------------------------------------------------------
# S4 / MS3 parity
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", range(4))
def test_binary_batch_values_match_reference(ref, k: int) -> None:
    logits, gt = _binary_batch(ref, k)
    assert mask_iou(logits, gt) == pytest.approx(ref[f"bin{k}_mask_iou"], abs=ATOL)
    assert fscore(logits, gt) == pytest.approx(ref[f"bin{k}_fmeasure"], abs=ATOL)
    # [N,1,H,W] inputs are the same thing
    assert mask_iou(logits[:, None], gt[:, None]) == pytest.approx(mask_iou(logits, gt), abs=0)


@pytest.mark.parametrize("k", range(4))
def test_binary_per_frame_values_match_reference(ref, k: int) -> None:
    logits, gt = _binary_batch(ref, k)
    stats = binary_frame_stats(logits, gt)
    np.testing.assert_allclose(stats.iou.numpy(), ref[f"bin{k}_mask_iou_per_frame"], atol=ATOL)
    per_frame_f = [fscore(logits[i : i + 1], gt[i : i + 1]) for i in range(logits.shape[0])]
    np.testing.assert_allclose(per_frame_f, ref[f"bin{k}_fmeasure_per_frame"], atol=ATOL)
    best = torch.where(stats.has_foreground, stats.fscore_curve.max(1).values, 0.0)
    np.testing.assert_allclose(best.numpy(), ref[f"bin{k}_fmeasure_per_frame"], atol=ATOL)


def _chunkings(videos, rng: random.Random):
    """The same frames fed as whole batches, frame by frame, in random chunks and in a
    shuffled order (videos split across updates)."""
    frames = [
        (v, i, lg, g)
        for v, lg_all, g_all in videos
        for i, (lg, g) in enumerate(zip(lg_all, g_all, strict=True))
    ]
    yield "per video", [(v, None, lg, g) for v, lg, g in videos]
    yield "per frame", [(v, [i], lg[None], g[None]) for v, i, lg, g in frames]
    shuffled = frames[:]
    rng.shuffle(shuffled)
    chunks, start = [], 0
    while start < len(shuffled):
        size = rng.randint(1, 7)
        part = shuffled[start : start + size]
        chunks.append(
            (
                [v for v, *_ in part],
                [i for _, i, *_ in part],
                torch.stack([lg for *_, lg, _ in part]),
                torch.stack([g for *_, g in part]),
            )
        )
        start += size
    yield "shuffled chunks", chunks


def test_avsbench_mode_reproduces_reference_test_loop_for_any_chunking(ref) -> None:
    videos = _reference_videos(ref)
    group_iou = [ref[f"bin{k}_mask_iou"] for k in range(4)]
    group_f = [ref[f"bin{k}_fmeasure"] for k in range(4)]
    for name, updates in _chunkings(videos, random.Random(0)):
        metric = BinaryMetric(mode="avsbench", videos_per_group=2)
        for video, frame, logits, gt in updates:
            n = logits.shape[0]
            index = video if isinstance(video, list) else [video] * n
            metric.update(logits, gt, video_index=index, frame_index=frame)
        scores = metric.compute()
        assert scores.num_frames == 36 and scores.num_videos == 8, name
        np.testing.assert_allclose(scores.group_miou, group_iou, atol=ATOL, err_msg=name)
        np.testing.assert_allclose(scores.group_fscore, group_f, atol=ATOL, err_msg=name)
        assert scores.miou == pytest.approx(ref["bin_test_loop_miou"], abs=ATOL), name
        assert scores.fscore == pytest.approx(ref["bin_test_loop_fmeasure"], abs=ATOL), name


def test_invariant_mode_is_dataset_level_and_batch_independent(ref) -> None:
    videos = _reference_videos(ref)
    all_logits = torch.cat([lg for _, lg, _ in videos])
    all_gt = torch.cat([g for _, _, g in videos])
    curves = [_naive_curve(lg, g) for lg, g in zip(all_logits, all_gt, strict=True)]
    nonempty = [c for c, g in zip(curves, all_gt, strict=True) if g.sum() > 0]
    expected_f = float(torch.stack(nonempty).double().mean(0).max())
    expected_iou = np.mean([_naive_iou(lg, g) for lg, g in zip(all_logits, all_gt, strict=True)])
    results = []
    for _, updates in _chunkings(videos, random.Random(1)):
        metric = BinaryMetric(mode="invariant")
        for video, frame, logits, gt in updates:
            index = video if isinstance(video, list) else [video] * logits.shape[0]
            metric.update(logits, gt, video_index=index, frame_index=frame)
        results.append(metric.compute())
    assert len({(r.miou, r.fscore) for r in results}) == 1  # bit-identical
    assert results[0].miou == pytest.approx(expected_iou, abs=ATOL)
    assert results[0].fscore == pytest.approx(expected_f, abs=ATOL)
    assert results[0].threshold is not None and 0 <= results[0].threshold <= 1
    # a different dataset-level answer from the per-batch maximum
    assert results[0].fscore != pytest.approx(ref["bin_test_loop_fmeasure"], abs=1e-3)


def test_avsbench_group_size_is_a_parameter_of_compute(ref) -> None:
    metric = BinaryMetric(videos_per_group=2)
    for video, logits, gt in _reference_videos(ref):
        metric.update(logits, gt, video_index=[video] * logits.shape[0])
    four = metric.compute(videos_per_group=4)
    assert len(four.group_miou) == 2
    # groups of 4 videos = reference batches (0,1) and (2,3) merged
    merged = [_merge_iou(ref, (0, 1)), _merge_iou(ref, (2, 3))]
    np.testing.assert_allclose(four.group_miou, merged, atol=ATOL)
    one_group = metric.compute(videos_per_group=100)
    invariant = metric.compute(mode="invariant")
    assert (one_group.miou, one_group.fscore) == (invariant.miou, invariant.fscore)


def _merge_iou(ref, batches: tuple[int, ...]) -> float:
    values = np.concatenate([ref[f"bin{k}_mask_iou_per_frame"] for k in batches])
    return float(values.mean())


def test_histogram_curve_is_exact_at_threshold_ties() -> None:
    """Scores equal to a threshold (and logits +-40, 0) must follow `>=` exactly."""
    thresholds = fscore_thresholds()
    tie_logits = []
    for theta in thresholds[1:-1].tolist():
        guess = torch.logit(torch.tensor(theta, dtype=torch.float64)).float()
        for _ in range(8):
            value = torch.sigmoid(guess)
            if value == theta:
                tie_logits.append(guess.item())
                break
            direction = torch.tensor(np.inf if value < theta else -np.inf)
            guess = torch.nextafter(guess, direction)
    assert len(tie_logits) > 100  # most thresholds are reachable exactly
    generator = torch.Generator().manual_seed(0)
    pool = torch.tensor(tie_logits + [0.0, 40.0, -40.0, 17.0, 1e-8, -1e-8])
    logits = pool[torch.randint(len(pool), (6, 24, 24), generator=generator)]
    logits[0] = torch.randn(24, 24, generator=generator) * 3
    gt = (torch.rand(6, 24, 24, generator=generator) > 0.6).float()
    gt[3] = 0
    stats = binary_frame_stats(logits, gt)
    for i in range(6):
        torch.testing.assert_close(
            stats.fscore_curve[i], _naive_curve(logits[i], gt[i]), rtol=0, atol=0
        )
        assert stats.iou[i].item() == pytest.approx(_naive_iou(logits[i], gt[i]), abs=0)


# ---------------------------------------------------------------------------
# metrics.md section 6 edge cases
# ---------------------------------------------------------------------------


def test_empty_gt_conventions() -> None:
    empty = torch.zeros(1, 16, 16)
    assert mask_iou(torch.full((1, 16, 16), -5.0), empty) == 1.0  # HW / (HW + 1e-7)
    assert mask_iou(torch.full((1, 16, 16), 5.0), empty) == 0.0
    half = torch.full((1, 16, 16), -5.0)
    half[:, :8] = 5.0
    assert mask_iou(half, empty) == pytest.approx(0.5)
    # all-empty batch: F = 0 (empty frames are skipped, the zero curve remains)
    assert fscore(torch.randn(3, 16, 16), torch.zeros(3, 16, 16)) == 0.0


def test_nonempty_gt_with_empty_prediction() -> None:
    gt = torch.zeros(1, 16, 16)
    gt[0, 4:8, 4:8] = 1
    logits = torch.full((1, 16, 16), -3.0)  # every score 0.047...
    assert mask_iou(logits, gt) == 0.0
    stats = binary_frame_stats(logits, gt)
    above = fscore_thresholds() > torch.sigmoid(torch.tensor(-3.0))
    assert torch.all(stats.fscore_curve[0][above] == 0)
    # theta = 0: every pixel positive, precision = 16/256, recall = 1
    precision = 16 / 256
    expected = 1.3 * precision / (0.3 * precision + 1)
    assert stats.fscore_curve[0, 0].item() == pytest.approx(expected, rel=1e-6)


def test_zero_logits_negative_for_iou_positive_for_f() -> None:
    gt = torch.ones(1, 8, 8)
    zeros = torch.zeros(1, 8, 8)
    assert mask_iou(zeros, gt) == 0.0  # sigmoid(0) = 0.5 is not > 0.5
    curve = binary_frame_stats(zeros, gt).fscore_curve[0]
    at_or_below_half = fscore_thresholds() <= 0.5
    assert torch.all(curve[at_or_below_half] == 1.0)
    assert torch.all(curve[~at_or_below_half] == 0.0)
    assert fscore(zeros, gt) == 1.0


def test_last_threshold_is_one() -> None:
    thresholds = fscore_thresholds()
    assert thresholds.dtype == torch.float32 and thresholds.shape == (255,)
    assert thresholds[0] == 0 and thresholds[-1] == 1.0
    gt = torch.ones(1, 4, 4)
    curve = binary_frame_stats(torch.full((1, 4, 4), 40.0), gt).fscore_curve[0]
    assert curve[-1] == 1.0  # sigmoid(40) == 1.0 exactly in float32
    curve = binary_frame_stats(torch.full((1, 4, 4), 10.0), gt).fscore_curve[0]
    assert curve[-1] == 0.0 and curve[-2] == 1.0


def test_duplicate_frames_count_once() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 8, 8, generator=generator)
    gt = (torch.rand(4, 8, 8, generator=generator) > 0.5).float()
    once, twice = BinaryMetric(), BinaryMetric()
    once.update(logits, gt, video_index=[0, 0, 1, 1])
    twice.update(logits, gt, video_index=[0, 0, 1, 1], frame_index=[0, 1, 0, 1])
    twice.update(logits[:2], gt[:2], video_index=[0, 0], frame_index=[0, 1])
    assert once.compute() == twice.compute()


def test_binary_input_errors() -> None:
    metric = BinaryMetric()
    with pytest.raises(ShapeError, match="gt has shape"):
        metric.update(torch.randn(2, 8, 8), torch.zeros(2, 8, 9), video_index=[0, 0])
    with pytest.raises(ShapeError, match="binary"):
        metric.update(torch.randn(2, 8, 8), torch.full((2, 8, 8), 0.5), video_index=[0, 0])
    with pytest.raises(ShapeError, match="video_index has 1 entries"):
        metric.update(torch.randn(2, 8, 8), torch.zeros(2, 8, 8), video_index=[0])
    with pytest.raises(ShapeError, match="logits has shape"):
        mask_iou(torch.randn(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    with pytest.raises(MetricError, match="before any update"):
        metric.compute()
    with pytest.raises(ConfigError, match="mode"):
        BinaryMetric(mode="batch")


# ---------------------------------------------------------------------------
# AVSS
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", range(3))
def test_avss_batch_sums_match_reference(ref, k: int) -> None:
    stats = avss_frame_stats(*_multiclass_batch(ref, k))
    np.testing.assert_array_equal(stats.present.sum(0).numpy(), ref[f"mc{k}_cls_pc"])
    np.testing.assert_allclose(stats.iou.sum(0).numpy(), ref[f"mc{k}_miou_pc"], atol=ATOL)
    np.testing.assert_allclose(stats.fscore.sum(0).numpy(), ref[f"mc{k}_fscore_pc"], atol=ATOL)


def test_avss_running_and_final_values_match_reference(ref) -> None:
    metric = AVSSMetric(num_classes=71)
    for k in range(3):
        metric.update(*_multiclass_batch(ref, k))
        running_iou, running_f = metric.running_scores()
        assert running_iou == pytest.approx(ref[f"mc{k}_running_batch_iou"], abs=ATOL)
        assert running_f == pytest.approx(ref[f"mc{k}_running_batch_fscore"], abs=ATOL)
    scores = metric.compute()
    np.testing.assert_array_equal(scores.frames_per_class.numpy(), ref["mc_final_cls_pc"])
    np.testing.assert_allclose(scores.iou_sum.numpy(), ref["mc_final_miou_pc_sum"], atol=ATOL)
    np.testing.assert_allclose(scores.fscore_sum.numpy(), ref["mc_final_fscore_pc_sum"], atol=ATOL)
    assert scores.miou == pytest.approx(ref["mc_final_miou"], abs=ATOL)
    assert scores.fscore == pytest.approx(ref["mc_final_f_score"], abs=ATOL)
    assert scores.classes_seen == ref["mc_final_classes_seen"]
    assert scores.num_frames == 30
    # the reference's "noBg" drops the last class, and is reproducible from per-class values
    no_bg = float(scores.iou_per_class[:-1].mean())
    assert no_bg == pytest.approx(ref["mc_final_miou_noBg"], abs=ATOL)
    no_bg_f = float(scores.fscore_per_class[:-1].mean())
    assert no_bg_f == pytest.approx(ref["mc_final_f_score_noBg"], abs=ATOL)


def test_avss_independent_of_batching_and_order(ref) -> None:
    logits = torch.cat([_multiclass_batch(ref, k)[0] for k in range(3)])
    target = torch.cat([_multiclass_batch(ref, k)[1] for k in range(3)])
    whole = AVSSMetric()
    whole.update(logits, target)
    permutation = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    pieces = AVSSMetric()
    for chunk in permutation.split(4):
        pieces.update(logits[chunk], target[chunk].unsqueeze(1))  # [N,1,H,W] accepted
    a, b = whole.compute(), pieces.compute()
    assert a.miou == pytest.approx(b.miou, abs=1e-12)
    assert a.fscore == pytest.approx(b.fscore, abs=1e-12)
    assert torch.equal(a.frames_per_class, b.frames_per_class)


def test_avss_argmax_ties_and_padded_frames() -> None:
    logits = torch.zeros(2, 5, 4, 4)
    logits[0, 2] = 1.0
    logits[0, 4] = 1.0  # tie between classes 2 and 4 -> 2
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[0] = 2
    stats = avss_frame_stats(logits, target)
    assert stats.iou[0, 2] == 1.0 and stats.fscore[0, 2] == 1.0
    assert not stats.present[0, 4]
    # padded frame: zero logits -> class 0 everywhere, against an all-0 label: IoU = F = 1
    assert stats.iou[1, 0] == 1.0 and stats.fscore[1, 0] == 1.0
    assert stats.present[1].tolist() == [True, False, False, False, False]


def test_avss_false_positive_class_adds_a_zero() -> None:
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 0, 0] = 5.0  # one pixel predicted as class 1, absent from GT
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    metric = AVSSMetric(num_classes=3)
    metric.update(logits, target)
    scores = metric.compute()
    assert scores.frames_per_class.tolist() == [1, 1, 0]
    assert scores.iou_per_class.tolist() == pytest.approx([0.75, 0.0, 0.0])
    assert scores.miou == pytest.approx(0.25)


def test_avss_input_errors() -> None:
    metric = AVSSMetric(num_classes=4)
    with pytest.raises(ShapeError, match="class ids span"):
        metric.update(torch.randn(1, 4, 2, 2), torch.full((1, 2, 2), 4))
    with pytest.raises(ShapeError, match="this metric expects 4"):
        metric.update(torch.randn(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ShapeError, match="integer class ids"):
        metric.update(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(MetricError, match="before any update"):
        metric.compute()
    assert all(np.isnan(metric.running_scores()))
