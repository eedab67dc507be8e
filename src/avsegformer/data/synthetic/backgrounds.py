"""Random textured backgrounds: smooth colour fields blended through a random pattern.

A background is drawn once per clip on a canvas larger than the frame; frames crop it
at a slowly drifting offset (a camera pan), so the background moves too. Drawing is done
with Pillow's C operations and a half-resolution pattern, ~1 ms for a 260x260 canvas.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance

_PATTERNS = ("stripes", "checker", "blobs", "waves", "plain")


def _smooth_field(width: int, height: int, cells: int, rng: np.random.Generator) -> Image.Image:
    """Low-frequency colour noise: RGB image ``width x height`` (``cells`` blobs across)."""
    across = max(2, int(round(cells * width / height)))
    small = rng.integers(0, 256, size=(cells, across, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def _pattern(width: int, height: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Pattern weight on a ``[height, width]`` grid: float32 in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(5, 20)  # on the half-resolution grid: 10-40 px in the frame
    angle = rng.uniform(0, np.pi)
    along = x * np.cos(angle) + y * np.sin(angle)
    across = -x * np.sin(angle) + y * np.cos(angle)
    if kind == "stripes":
        return (np.sin(2 * np.pi * along / period) > 0).astype(np.float32)
    if kind == "checker":
        return ((np.floor(along / period) + np.floor(across / period)) % 2).astype(np.float32)
    if kind == "waves":
        return 0.5 + 0.5 * np.sin(2 * np.pi * along / period + 3 * np.sin(across / period))
    if kind == "blobs":
        return np.asarray(_smooth_field(width, height, 6, rng), np.float32)[..., 0] / 255.0
    return np.zeros((height, width), dtype=np.float32)


def random_background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A random textured background: uint8 ``[height, width, 3]``.

    Two smooth colour fields are blended through a random pattern (stripes, checker,
    waves, blobs or none) and desaturated by a random amount, so objects (saturated,
    outlined) stand out without the background being uniform.
    """
    field_a = _smooth_field(width, height, int(rng.integers(2, 6)), rng)
    field_b = _smooth_field(width, height, int(rng.integers(2, 6)), rng)
    kind = _PATTERNS[int(rng.integers(len(_PATTERNS)))]
    strength = rng.uniform(0.25, 0.65)
    half = _pattern((width + 1) // 2, (height + 1) // 2, kind, rng) * (255.0 * strength)
    mask = Image.fromarray(half.astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    image = Image.composite(field_b, field_a, mask)
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.3, 0.8))
    return np.asarray(image)
