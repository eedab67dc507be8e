"""Overlays and saved masks (avsegformer.render) against the official formats (spec §7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avsegformer.data.classes import avss_palette
from avsegformer.render import (
    AVSS_SAVE_SIZE,
    DEFAULT_MASK_COLOR,
    class_map_to_rgb,
    overlay,
    resize_mask,
    save_binary_mask_png,
    save_class_mask_png,
)


@pytest.fixture
def frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def _box_mask(shape=(120, 160), box=(20, 30, 80, 110)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def _expected_blend(frame: np.ndarray, colour, alpha: float) -> np.ndarray:
    return (1 - alpha) * frame.astype(np.float64) + alpha * np.asarray(colour, np.float64)


def _assert_blended(out: np.ndarray, frame: np.ndarray, colour, alpha: float) -> None:
    """PIL blend truncates: out = floor((1 - alpha) * frame + alpha * colour), float32."""
    error = _expected_blend(frame, colour, alpha) - out
    assert error.min() > -1e-3 and error.max() < 1 + 1e-3


# ---------------------------------------------------------------------------------------
# Overlay


@pytest.mark.parametrize("alpha", [0.5, 0.3, 1.0])
def test_binary_overlay_colours_mask_and_keeps_the_rest(frame, alpha) -> None:
    mask = _box_mask()
    out = overlay(frame, mask, alpha=alpha)
    assert out.dtype == np.uint8 and out.shape == frame.shape and out is not frame
    assert np.array_equal(out[~mask], frame[~mask])  # bit-exact outside the mask
    _assert_blended(out[mask], frame[mask], DEFAULT_MASK_COLOR, alpha)
    assert not np.array_equal(out[mask], frame[mask])


def test_binary_mask_encodings_agree(frame) -> None:
    mask = _box_mask()
    reference = overlay(frame, mask)
    for variant in (mask.astype(np.uint8), mask.astype(np.int64), mask * 0.9, mask * 255.0):
        assert np.array_equal(overlay(frame, variant), reference)
    probabilities = np.where(mask, 0.51, 0.49).astype(np.float32)
    assert np.array_equal(overlay(frame, probabilities), reference)


def test_class_map_overlay_uses_the_avss_palette(frame) -> None:
    class_map = np.zeros((120, 160), dtype=np.int64)
    class_map[10:60, 10:70] = 17  # dog
    class_map[70:110, 90:150] = 41  # man
    out = overlay(frame, class_map, draw_labels=False)
    palette = avss_palette()
    assert np.array_equal(out[class_map == 0], frame[class_map == 0])
    for class_id in (17, 41):
        region = class_map == class_id
        _assert_blended(out[region], frame[region], palette[class_id], 0.5)


def test_labels_are_drawn_near_their_region(frame) -> None:
    class_map = np.zeros((120, 160), dtype=np.int64)
    class_map[10:60, 10:70] = 17
    plain = overlay(frame, class_map, draw_labels=False)
    labelled = overlay(frame, class_map)
    changed = np.argwhere(np.any(plain != labelled, axis=2))
    assert len(changed) > 20  # some text was drawn
    centre = changed.mean(axis=0)
    assert abs(centre[0] - 34.5) < 12 and abs(centre[1] - 39.5) < 20  # around the region
    assert overlay(frame, class_map, class_names=["bg"] * 17 + ["hound"]).shape == frame.shape


def test_auto_mode_and_explicit_classes(frame) -> None:
    class_map = _box_mask().astype(np.int64)  # ids 0/1 only: binary in "auto"
    binary = overlay(frame, class_map)
    assert np.array_equal(binary, overlay(frame, _box_mask()))
    as_classes = overlay(frame, class_map, mode="classes", draw_labels=False)
    region = class_map == 1
    _assert_blended(as_classes[region], frame[region], avss_palette()[1], 0.5)  # accordion


def test_contours_are_drawn_at_full_colour(frame) -> None:
    mask = _box_mask()
    out = overlay(frame, mask, contours=True)
    assert np.array_equal(out[20, 30:110], np.tile(DEFAULT_MASK_COLOR, (80, 1)))  # top edge
    assert np.array_equal(out[50, 30], DEFAULT_MASK_COLOR)  # left edge
    interior = overlay(frame, mask)[21:79, 31:109]
    assert np.array_equal(out[21:79, 31:109], interior)
    assert np.array_equal(out[~mask], frame[~mask])


def test_overlay_rejects_bad_input(frame) -> None:
    with pytest.raises(ValueError, match="resize_mask"):
        overlay(frame, np.zeros((60, 80), bool))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 70\]"):
        overlay(frame, np.full((120, 160), 71, np.int64))
    with pytest.raises(ValueError, match="uint8"):
        overlay(frame.astype(np.float32), _box_mask())
    with pytest.raises(ValueError, match="alpha"):
        overlay(frame, _box_mask(), alpha=1.5)


# ---------------------------------------------------------------------------------------
# Conversions


def test_class_map_to_rgb_matches_the_spec_table() -> None:
    ids = np.array([[0, 1, 17], [41, 64, 70]])
    rgb = class_map_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    expected = [[(0, 0, 0), (128, 0, 0), (128, 64, 0)], [(192, 0, 64), (32, 0, 0), (32, 128, 128)]]
    assert rgb.tolist() == [[list(c) for c in row] for row in expected]
    with pytest.raises(ValueError, match="integer"):
        class_map_to_rgb(ids.astype(np.float32))


@pytest.mark.parametrize(
    ("source", "target"),
    [((224, 224), (512, 512)), ((512, 512), (224, 224)), ((240, 360), (224, 224)),
     ((37, 53), (101, 19)), ((720, 1280), (360, 240))],
)  # fmt: skip
def test_resize_mask_is_pil_nearest(source, target) -> None:
    values = np.random.default_rng(1).integers(0, 256, source, dtype=np.uint8)
    pil = np.asarray(Image.fromarray(values).resize(target, Image.NEAREST))
    assert np.array_equal(resize_mask(values, target), pil)
    # Also for what PIL cannot hold: int64 class maps and bools.
    assert np.array_equal(
        resize_mask(values.astype(np.int64) * 1000, target), pil.astype(np.int64) * 1000
    )
    assert np.array_equal(resize_mask(values > 127, target), pil > 127)


# ---------------------------------------------------------------------------------------
# Saved PNGs


def _official_binary_png(mask: np.ndarray) -> Image.Image:
    """AVSBench save_mask: (sigmoid > 0.5) * 255 as uint8 -> PIL -> convert('P')."""
    return Image.fromarray((mask > 0.5).astype(np.uint8) * 255).convert("P")


def test_binary_png_is_exactly_the_official_format(tmp_path: Path) -> None:
    probabilities = np.random.default_rng(2).random((224, 224)).astype(np.float32)
    path = save_binary_mask_png(tmp_path / "pred_0.png", probabilities)
    with Image.open(path) as saved:
        assert saved.mode == "P" and saved.size == (224, 224)
        palette = saved.getpalette()
        values = np.asarray(saved)
        official = _official_binary_png(probabilities)
        assert palette[: 3 * 256] == [v for i in range(256) for v in (i, i, i)]  # grey ramp
        assert palette == official.getpalette()
        assert np.array_equal(values, np.asarray(official))
        assert set(np.unique(values)) == {0, 255}
        # Official S4 reading: convert('1') -> {0, 1} == the mask.
        assert np.array_equal(np.asarray(saved.convert("1")), probabilities > 0.5)
        # Official MS3 reading: convert('P') / 255 -> {0, 1}.
        assert set(np.unique(np.asarray(saved.convert("P")) / 255)) == {0.0, 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["pred_0.png"]  # no temporary left


def test_binary_png_accepts_bool_and_01(tmp_path: Path) -> None:
    mask = np.zeros((32, 48), dtype=bool)
    mask[5:20, 10:30] = True
    for i, variant in enumerate((mask, mask.astype(np.uint8), mask.astype(np.float32))):
        with Image.open(save_binary_mask_png(tmp_path / f"{i}.png", variant)) as saved:
            assert saved.mode == "P"
            assert np.array_equal(np.asarray(saved), mask.astype(np.uint8) * 255)


def test_class_png_is_palette_rgb(tmp_path: Path) -> None:
    class_map = np.zeros((224, 224), dtype=np.int64)
    class_map[50:150, 40:120] = 22  # emergency-car
    class_map[100:200, 130:210] = 70  # woman
    with Image.open(save_class_mask_png(tmp_path / "uid_0.png", class_map)) as saved:
        assert saved.mode == "RGB" and saved.size == (224, 224)
        assert np.array_equal(np.asarray(saved), avss_palette()[class_map])


def test_class_png_resize_uses_pil_default_filter(tmp_path: Path) -> None:
    class_map = np.zeros((224, 224), dtype=np.int64)
    class_map[50:150, 40:120] = 22
    path = save_class_mask_png(tmp_path / "uid_0.png", class_map, size=AVSS_SAVE_SIZE)
    with Image.open(path) as saved:
        assert saved.size == (360, 240) and saved.mode == "RGB"
        reference = Image.fromarray(avss_palette()[class_map]).resize((360, 240))
        assert np.array_equal(np.asarray(saved), np.asarray(reference))
        colours = {tuple(c) for c in np.asarray(saved).reshape(-1, 3)}
        assert len(colours - {(0, 0, 0), tuple(avss_palette()[22])}) > 0  # blended edges
