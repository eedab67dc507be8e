"""Pre-rendered object sprites: one antialiased RGBA image per vocabulary class.

A sprite is drawn once (cached) on a square canvas from implicit shape functions on a
supersampled grid; frames are then composed by resizing / rotating / pasting sprites
with Pillow, so no per-pixel Python loop ever runs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
from PIL import Image, ImageFilter

from .vocabulary import VOCABULARY, SynthClass

SPRITE_SIZE = 192  # canvas side in pixels; objects are shown at 20..200 px
_SUPERSAMPLE = 3  # antialiasing factor of the silhouette
_OUTLINE_PX = 5  # width of the dark rim that separates an object from any background


def _convex_polygon(
    u: np.ndarray, v: np.ndarray, vertices: list[tuple[float, float]]
) -> np.ndarray:
    """Inside test of a convex polygon whose vertices go clockwise on screen (v points down)."""
    inside = np.ones(u.shape, dtype=bool)
    n = len(vertices)
    for i in range(n):
        (x0, y0), (x1, y1) = vertices[i], vertices[(i + 1) % n]
        # Same-side test against each edge; orientation fixed by the vertex order.
        inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0
    return inside


def _regular_polygon(sides: int, radius: float, rotation: float) -> list[tuple[float, float]]:
    angles = rotation + 2 * np.pi * np.arange(sides) / sides
    return [(radius * np.cos(a), radius * np.sin(a)) for a in angles]


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.hypot(u, v)
    theta = np.arctan2(v, u) + np.pi / 2  # 0 = pointing up
    # Edge radius falls linearly from a point (0.96) to a notch (0.42): a five-point star.
    phase = (theta / (2 * np.pi / 5)) % 1.0
    tri = np.abs(2.0 * phase - 1.0)  # 1 at the points, 0 half-way between them
    return r <= 0.42 + 0.54 * tri**1.6


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = u * 1.25, -(v * 1.25 - 0.25)
    return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0


def _arrow(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    shaft = (np.abs(v) <= 0.22) & (u >= -0.92) & (u <= 0.2)
    head = _convex_polygon(u, v, [(0.95, 0.0), (0.1, 0.75), (0.1, -0.75)])
    return shaft | head


SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v <= 0.92**2,
    "triangle": lambda u, v: _convex_polygon(u, v, [(0.0, -0.92), (0.95, 0.8), (-0.95, 0.8)]),
    "diamond": lambda u, v: np.abs(u) / 0.7 + np.abs(v) / 0.95 <= 1.0,
    "wide_rect": lambda u, v: (np.abs(u) <= 0.95) & (np.abs(v) <= 0.55),
    "square": lambda u, v: (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8),
    "tall_ellipse": lambda u, v: (u / 0.55) ** 2 + (v / 0.95) ** 2 <= 1.0,
    "hourglass": lambda u, v: (np.abs(v) <= 0.92) & (np.abs(u) <= 0.22 + 0.6 * np.abs(v)),
    "cross": lambda u, v: ((np.abs(u) <= 0.3) | (np.abs(v) <= 0.3))
    & (np.maximum(np.abs(u), np.abs(v)) <= 0.92),
    "hexagon": lambda u, v: _convex_polygon(u, v, _regular_polygon(6, 0.93, 0.0)),
    "bar": lambda u, v: (np.abs(u) <= 0.95) & (np.abs(v) <= 0.32),
    "star": _star,
    "pentagon": lambda u, v: _convex_polygon(u, v, _regular_polygon(5, 0.95, -np.pi / 2)),
    "heart": _heart,
    "ring": lambda u, v: (u * u + v * v <= 0.93**2) & (u * u + v * v >= 0.5**2),
    "trapezoid": lambda u, v: (np.abs(v) <= 0.7) & (np.abs(u) <= 0.6 + 0.35 * (v + 0.7) / 1.4),
    "arrow": _arrow,
}  # fmt: skip


TEXTURES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "solid": lambda u, v: np.zeros(u.shape, dtype=np.float32),
    "hstripes": lambda u, v: (np.sin(2 * np.pi * 3.5 * v) > 0).astype(np.float32),
    "vstripes": lambda u, v: (np.sin(2 * np.pi * 4.5 * u) > 0.3).astype(np.float32),
    "dstripes": lambda u, v: (np.sin(2 * np.pi * 3.0 * (u + v)) > 0).astype(np.float32),
    "checker": lambda u, v: ((np.floor(u * 3.0) + np.floor(v * 3.0)) % 2).astype(np.float32),
    "dots": lambda u, v: (
        ((u * 3.0) % 1 - 0.5) ** 2 + ((v * 3.0) % 1 - 0.5) ** 2 <= 0.22**2
    ).astype(np.float32),
    "grid": lambda u, v: (
        (np.abs((u * 5.0) % 1 - 0.5) < 0.22) & (np.abs((v * 2.5) % 1 - 0.5) < 0.3)
    ).astype(np.float32),
    "rings": lambda u, v: (np.sin(2 * np.pi * 3.0 * np.hypot(u, v)) > 0.2).astype(np.float32),
    "vgradient": lambda u, v: np.clip((v + 1.0) / 2.0, 0.0, 1.0).astype(np.float32),
}  # fmt: skip


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an ``n x n`` canvas mapped to [-1, 1]: (u right, v down)."""
    axis = (np.arange(n, dtype=np.float64) + 0.5) / n * 2.0 - 1.0
    v, u = np.meshgrid(axis, axis, indexing="ij")
    return u, v


def shape_mask(shape: str, size: int = SPRITE_SIZE) -> np.ndarray:
    """Antialiased silhouette coverage: float32 ``[size, size]`` in [0, 1]."""
    n = size * _SUPERSAMPLE
    u, v = _grid(n)
    inside = SHAPES[shape](u, v).astype(np.float32)
    # Box-average the supersampled grid: coverage fraction per output pixel.
    return inside.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(1, 3))


def texture_pattern(texture: str, size: int = SPRITE_SIZE) -> np.ndarray:
    """Texture weight of the pattern colour: float32 ``[size, size]`` in [0, 1]."""
    u, v = _grid(size)
    return TEXTURES[texture](u, v)


def _outline(coverage: np.ndarray) -> np.ndarray:
    """float32 [S,S] in [0,1]: 1 on a rim ``_OUTLINE_PX`` wide inside the silhouette."""
    solid = Image.fromarray((coverage >= 0.5).astype(np.uint8) * 255)
    eroded = np.asarray(solid.filter(ImageFilter.MinFilter(2 * _OUTLINE_PX - 1)), dtype=np.float32)
    return np.clip(coverage - eroded / 255.0, 0.0, 1.0)


def render_sprite(cls: SynthClass, size: int = SPRITE_SIZE) -> np.ndarray:
    """RGBA sprite of ``cls``: uint8 ``[size, size, 4]``, alpha = antialiased coverage."""
    coverage = shape_mask(cls.shape, size)
    pattern = texture_pattern(cls.texture, size)[..., None]
    body = (
        np.asarray(cls.color, np.float32) * (1 - pattern)
        + np.asarray(cls.texture_color, np.float32) * pattern
    )
    # Soft shading (lit from the top left) so objects do not look like flat stickers.
    u, v = _grid(size)
    shade = (1.0 + 0.12 * (-(u + v) / 2.0))[..., None].astype(np.float32)
    rgb = body * shade
    rim = _outline(coverage)[..., None]
    rgb = rgb * (1 - rim) + rgb * 0.3 * rim
    rgba = np.concatenate([rgb, coverage[..., None] * 255.0], axis=-1)
    return np.clip(np.round(rgba), 0, 255).astype(np.uint8)


# Sides of the pre-scaled copies: a sprite is drawn from the smallest copy at least as
# large as needed, so the bilinear affine warp never shrinks by more than 1.5x (no aliasing).
PYRAMID_SIDES = (192, 128, 96, 64, 48, 32, 24, 16)


@cache
def sprite_image(name: str) -> Image.Image:
    """Cached Pillow RGBA sprite of the vocabulary class ``name`` (do not modify it)."""
    cls = next(c for c in VOCABULARY if c.name == name)
    return Image.fromarray(render_sprite(cls))  # [S,S,4] uint8 -> RGBA


@cache
def sprite_pyramid(name: str) -> tuple[Image.Image, ...]:
    """Cached copies of :func:`sprite_image` at the sides :data:`PYRAMID_SIDES`."""
    full = sprite_image(name)
    return tuple(full.resize((side, side), Image.Resampling.LANCZOS) for side in PYRAMID_SIDES)


def sprite_source(name: str, side: float) -> Image.Image:
    """The pyramid copy to draw a sprite ``side`` pixels wide from."""
    pyramid = sprite_pyramid(name)
    for level, level_side in zip(pyramid[::-1], PYRAMID_SIDES[::-1], strict=True):
        if level_side >= side:
            return level
    return pyramid[0]
