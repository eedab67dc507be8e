"""Training losses against the authors' code (tests/reference/losses.npz)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _reference import reference_path
from avsegformer.engine.losses import (
    LossWeights,
    SegmentationLoss,
    binary_segmentation_loss,
    dice_loss_per_frame,
    labelled_frame_flags,
    semantic_segmentation_loss,
)
from avsegformer.errors import ConfigError, ShapeError
from avsegformer.tasks import get_task

BINARY_CASES = [
    f"{task}_{kind}{sat}"
    for task in ("s4", "ms3")
    for kind in ("dice", "bce")
    for sat in ("", "_sat")
]


@pytest.fixture(scope="module")
def ref():
    return np.load(reference_path("losses.npz"), allow_pickle=False)


def _leaf(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32)).requires_grad_()


def _assert_grad_close(ours: torch.Tensor, ref: np.ndarray, what: str) -> None:
    # README tolerance: |ours - ref| <= 1e-5 * max|ref| + 1e-4 * |ref|
    ours = ours.detach().numpy()
    bound = 1e-5 * np.abs(ref).max() + 1e-4 * np.abs(ref)
    excess = np.abs(ours - ref) - bound
    assert excess.max() <= 0, f"{what}: worst excess {excess.max():.3g} over the bound"


def _s4_targets_all_frames(ref) -> torch.Tensor:
    """The reference passes the first-frame GT as 5-D [bs,1,1,H,W]; our API takes the GT
    aligned with all frames ([N,1,H,W]) plus flags. Unlabelled frames get garbage here
    on purpose: they must not matter."""
    first = torch.from_numpy(ref["s4_gt"].astype(np.float32))  # [2,64,64]
    target = torch.ones(10, 1, 64, 64)
    target[0::5, 0] = first
    return target


def _check_case(ref, tag: str, total, parts, pred, mask_feature) -> None:
    np.testing.assert_allclose(total.item(), ref[f"{tag}_total"], rtol=1e-5)
    np.testing.assert_allclose(parts["iou_loss"].item(), ref[f"{tag}_dict_iou_loss"], rtol=1e-5)
    np.testing.assert_allclose(parts["mix_loss"].item(), ref[f"{tag}_dict_mix_loss"], rtol=1e-5)
    total.backward()
    if f"{tag}_grad_pred" in ref:
        _assert_grad_close(pred.grad, ref[f"{tag}_grad_pred"], f"{tag} grad pred")
    else:
        frames = torch.from_numpy(ref[f"{tag}_grad_pred_frames"])
        _assert_grad_close(pred.grad[frames], ref[f"{tag}_grad_pred_sel"], f"{tag} grad pred")
    _assert_grad_close(
        mask_feature.grad, ref[f"{tag}_grad_mask_feature"], f"{tag} grad mask_feature"
    )


@pytest.mark.parametrize("tag", BINARY_CASES)
def test_binary_losses_match_reference(ref, tag: str) -> None:
    task, loss_type = tag.split("_")[:2]
    pred = _leaf(ref[f"{tag}_pred_f16"])
    mask_feature = _leaf(ref[f"{tag}_mask_feature_f16"])
    if task == "s4":
        target = _s4_targets_all_frames(ref)
    else:
        target = torch.from_numpy(ref["ms3_gt"].astype(np.float32)).unsqueeze(1)
    loss = get_task(task).loss(loss_type=loss_type, iou_loss_weight=1.0, mix_loss_weight=0.1)
    total, parts = loss(pred, mask_feature, target)
    assert set(parts) == {"iou_loss", "mix_loss"}
    _check_case(ref, tag, total, parts, pred, mask_feature)


@pytest.mark.parametrize("tag", ["s4_dice", "s4_bce_sat"])
def test_s4_compact_targets_and_explicit_flags(ref, tag: str) -> None:
    """GT for the labelled frames only ([bs,1,H,W]) with an explicit flag vector."""
    pred = _leaf(ref[f"{tag}_pred_f16"])
    mask_feature = _leaf(ref[f"{tag}_mask_feature_f16"])
    first = torch.from_numpy(ref["s4_gt"].astype(np.float32)).unsqueeze(1)  # [2,1,64,64]
    flags = torch.tensor([1, 0, 0, 0, 0, 1, 0, 0, 0, 0], dtype=torch.bool)
    total, parts = binary_segmentation_loss(
        pred, mask_feature, first, flags, loss_type=tag.split("_")[1]
    )
    _check_case(ref, tag, total, parts, pred, mask_feature)
    unlabelled = ~flags
    assert torch.all(pred.grad[unlabelled] == 0)
    assert torch.all(mask_feature.grad[unlabelled] == 0)


def test_avss_loss_matches_reference(ref) -> None:
    pred = _leaf(ref["avss_pred_f16"])
    mask_feature = _leaf(ref["avss_mask_feature_f16"])
    target = torch.from_numpy(ref["avss_gt"].astype(np.int64))
    flags = torch.from_numpy(ref["avss_gt_temporal_mask_flag"])
    total, parts = get_task("avss").loss()(pred, mask_feature, target, flags)
    _check_case(ref, "avss", total, parts, pred, mask_feature)
    # Per-frame/class gradient sums cover the frames not stored in full.
    sums = pred.grad.double().sum((-2, -1)).numpy()
    expected = ref["avss_grad_pred_sum_per_frame_class"]
    np.testing.assert_allclose(sums, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_avss_loss_accepts_channel_target_and_zero_flags(ref) -> None:
    pred = _leaf(ref["avss_pred_f16"])
    mask_feature = _leaf(ref["avss_mask_feature_f16"])
    target = torch.from_numpy(ref["avss_gt"].astype(np.int64))
    flags = torch.from_numpy(ref["avss_gt_temporal_mask_flag"])
    total_4d, _ = semantic_segmentation_loss(pred, mask_feature, target.unsqueeze(1), flags)
    np.testing.assert_allclose(total_4d.item(), ref["avss_total"], rtol=1e-5)
    # No labelled frame: 0 with zero gradients (the reference divides 0 by 0).
    total_zero, _ = semantic_segmentation_loss(pred, mask_feature, target, torch.zeros(20))
    assert total_zero.item() == 0.0
    pred.grad = None
    total_zero.backward()
    assert torch.all(pred.grad == 0)


def test_stable_bce_is_an_option_and_differs_only_when_saturated(ref) -> None:
    target = torch.from_numpy(ref["ms3_gt"].astype(np.float32)).unsqueeze(1)
    for tag, saturated in (("ms3_bce", False), ("ms3_bce_sat", True)):
        pred = _leaf(ref[f"{tag}_pred_f16"])
        mask_feature = _leaf(ref[f"{tag}_mask_feature_f16"])
        stable, _ = binary_segmentation_loss(pred, mask_feature, target, loss_type="bce_logits")
        exact, _ = binary_segmentation_loss(pred, mask_feature, target, loss_type="bce")
        if saturated:
            assert stable.item() < exact.item() - 0.1  # clamped log(0) = -100 vs ~40
        else:
            np.testing.assert_allclose(stable.item(), exact.item(), rtol=1e-5)
        stable.backward()
        assert torch.isfinite(pred.grad).all()


def test_weights_scale_the_terms(ref) -> None:
    pred = _leaf(ref["ms3_dice_pred_f16"])
    mask_feature = _leaf(ref["ms3_dice_mask_feature_f16"])
    target = torch.from_numpy(ref["ms3_gt"].astype(np.float32))  # [N,H,W] is accepted
    total, parts = binary_segmentation_loss(
        pred, mask_feature, target, weights=LossWeights(iou_loss=2.0, mix_loss=0.0)
    )
    np.testing.assert_allclose(parts["iou_loss"].item(), 2 * ref["ms3_dice_dict_iou_loss"], 1e-5)
    assert parts["mix_loss"].item() == 0.0
    np.testing.assert_allclose(total.item(), parts["iou_loss"].item(), rtol=1e-6)


def test_dice_of_empty_target_is_one() -> None:
    logits = torch.randn(3, 1, 8, 8)
    loss = dice_loss_per_frame(logits, torch.zeros(3, 1, 8, 8))
    torch.testing.assert_close(loss, torch.ones(3))


def test_labelled_frame_flags() -> None:
    flags = labelled_frame_flags(10, 5)
    assert flags.tolist() == [True, False, False, False, False] * 2
    assert labelled_frame_flags(6, 3).nonzero().flatten().tolist() == [0, 3]


def test_bad_inputs_raise_named_errors() -> None:
    pred = torch.randn(10, 1, 16, 16)
    feature = torch.randn(10, 4, 4, 4)
    with pytest.raises(ShapeError, match="target"):
        binary_segmentation_loss(pred, feature, torch.zeros(10, 1, 8, 8))
    with pytest.raises(ShapeError, match="target has 3 frames"):
        binary_segmentation_loss(pred, feature, torch.zeros(3, 1, 16, 16), torch.ones(10))
    with pytest.raises(ShapeError, match="mask_feature"):
        binary_segmentation_loss(pred, feature[:4], torch.zeros(10, 1, 16, 16))
    with pytest.raises(ShapeError, match="integer class ids"):
        semantic_segmentation_loss(
            torch.randn(2, 5, 8, 8), torch.randn(2, 4, 4, 4), torch.zeros(2, 8, 8)
        )
    with pytest.raises(ConfigError):
        get_task("s5")
    with pytest.raises(ConfigError):
        SegmentationLoss("semantic_x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        get_task("ms3").loss(loss_type="focal")
