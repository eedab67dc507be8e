"""Scenes: which objects are in a clip, how they move, and who sounds in which second.

A :class:`Scene` is sampled once from a random generator and then rendered at any frame
times and size. Positions and sizes are in *min-side units* (1.0 = the shorter side of
the frame), so a scene looks the same at 224x224, 112x112 or 320x224.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ...errors import ConfigError
from .backgrounds import random_background
from .sprites import sprite_source
from .vocabulary import VOCABULARY, get_class

# Alpha >= 128 counts as object in the masks (the frame itself is antialiased).
_MASK_LUT = np.where(np.arange(256) >= 128, 255, 0).astype(np.uint8)
_PAN_FRACTION = 0.08  # background canvas margin for the camera pan, fraction of min side


@dataclass(frozen=True)
class SceneConfig:
    """How a scene is sampled.

    Attributes:
        visible: (min, max) number of visible objects (distinct classes).
        sounding: (min, max) number of objects sounding in a second.
        schedule: ``"constant"`` (one set for the whole clip), ``"per_second"`` (the set
            may change at every second, with probability ``change_prob``) or
            ``"segments"`` (a new, different set every ``segment_seconds`` seconds).
        change_prob: probability that the sounding set changes at a second boundary.
        segment_seconds: (min, max) length of a segment for ``"segments"``.
        keep_one_silent: leave at least one visible object silent when there are 2+.
        snr_db: (min, max) signal-to-background-noise ratio of the mix.
    """

    visible: tuple[int, int] = (2, 4)
    sounding: tuple[int, int] = (1, 1)
    schedule: str = "constant"
    change_prob: float = 0.5
    segment_seconds: tuple[int, int] = (1, 3)
    keep_one_silent: bool = True
    snr_db: tuple[float, float] = (5.0, 20.0)


PRESETS: dict[str, SceneConfig] = {
    # S4: exactly one sounding object for the whole clip among 2-4 visible ones.
    "s4": SceneConfig(visible=(2, 4), sounding=(1, 1), schedule="constant"),
    # MS3 / AVSS: 1-3 sounding among 2-5 visible; the set may change every second.
    "ms3": SceneConfig(visible=(2, 5), sounding=(1, 3), schedule="per_second"),
    "avss": SceneConfig(visible=(2, 5), sounding=(1, 3), schedule="per_second"),
    # One source at a time that switches between objects (for demos).
    "switch": SceneConfig(visible=(2, 4), sounding=(1, 1), schedule="segments"),
}


@dataclass(frozen=True)
class SceneObject:
    """One object and its motion; ``state(t)`` gives where it is at time ``t`` seconds."""

    instance_id: int  # 1-based; the value of this object in instance masks
    class_name: str
    z: int  # drawing order, 0 = farthest back
    start: tuple[float, float]  # centre at t=0, min-side units
    velocity: tuple[float, float]  # min-side units per second
    wobble: tuple[float, float, float]  # amplitude, frequency (Hz), phase
    size: float  # mean side of the sprite canvas, min-side units
    pulse: tuple[float, float, float]  # relative scale amplitude, frequency (Hz), phase
    tilt: tuple[float, float, float]  # rotation: mean (deg), amplitude (deg), frequency (Hz)
    brightness: float

    def state(self, t: np.ndarray, extent: tuple[float, float]) -> tuple[np.ndarray, ...]:
        """Centre x, y (min-side units), side (min-side units) and angle (deg) at times ``t``."""
        x, y, side = _path(
            np.asarray(self.start), np.asarray(self.velocity), np.asarray(self.wobble),
            np.asarray(self.size), np.asarray(self.pulse), np.asarray(t, np.float64), extent,
        )  # fmt: skip
        angle = self.tilt[0] + self.tilt[1] * np.sin(2 * np.pi * self.tilt[2] * np.asarray(t))
        return x, y, side, angle


def _path(
    start: np.ndarray,
    velocity: np.ndarray,
    wobble: np.ndarray,
    size: np.ndarray,
    pulse: np.ndarray,
    t: np.ndarray,
    extent: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre x, y and side of objects at times ``t`` (all in min-side units).

    Parameters have a trailing parameter axis (start ``[..., 2]``, wobble ``[..., 3]``,
    size ``[...]``); leading axes broadcast against ``t``: ``[N, 1]`` params and ``[T]``
    times give ``[N, T]``. Objects drift, wobble on a small ellipse, bounce off the frame
    edges (keeping at least 70 % of their canvas inside) and pulse in size.
    """
    amp, freq, phase = wobble[..., 0], wobble[..., 1], wobble[..., 2]
    angle = 2 * np.pi * freq * t + phase
    side = size * (1 + pulse[..., 0] * np.sin(2 * np.pi * pulse[..., 1] * t + pulse[..., 2]))
    margin = 0.3 * size
    x = _reflect(
        start[..., 0] + velocity[..., 0] * t + amp * np.sin(angle), margin, extent[0] - margin
    )
    y = _reflect(
        start[..., 1] + velocity[..., 1] * t + amp * np.cos(angle), margin, extent[1] - margin
    )
    return x, y, side


@dataclass(frozen=True, eq=False)
class Scene:
    """A sampled clip: objects, sounding schedule, background and audio parameters."""

    seconds: int
    extent: tuple[float, float]  # frame width, height in min-side units
    objects: tuple[SceneObject, ...]
    sounding: tuple[tuple[int, ...], ...]  # per second: instance ids that sound
    background: np.ndarray  # uint8 [H + 2P, W + 2P, 3] canvas (P = pan margin)
    pan: tuple[float, float, float, float]  # amplitude x, y (fraction of P), frequency, phase
    gains_db: tuple[float, ...]  # per object, in instance-id order
    snr_db: float
    level_dbfs: float


def _reflect(value: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold ``value`` into [low, high] like a ball bouncing between two walls."""
    span = np.maximum(high - low, 1e-6)
    folded = np.mod(value - low, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def _sample_objects(
    count: int, seconds: int, extent: tuple[float, float], rng: np.random.Generator
) -> tuple[SceneObject, ...]:
    """``count`` objects of distinct classes whose paths overlap little (best of 30 draws)."""
    names = [VOCABULARY[i].name for i in rng.choice(len(VOCABULARY), size=count, replace=False)]
    z_order = rng.permutation(count)
    shrink = 1.0 if count <= 3 else 0.85
    times = np.linspace(0.0, seconds, 4 * seconds + 1)
    best_overlap, best = np.inf, None
    for _ in range(30):
        start = np.stack(
            [rng.uniform(0.2, extent[0] - 0.2, count), rng.uniform(0.2, extent[1] - 0.2, count)], -1
        )
        speed, heading = rng.uniform(0.03, 0.12, count), rng.uniform(0, 2 * np.pi, count)
        params = {
            "start": start,
            "velocity": np.stack([speed * np.cos(heading), speed * np.sin(heading)], -1),
            "wobble": np.stack([rng.uniform(0, 0.04, count), rng.uniform(0.2, 0.7, count),
                                rng.uniform(0, 2 * np.pi, count)], -1),
            "size": rng.uniform(0.26, 0.42, count) * shrink,
            "pulse": np.stack([rng.uniform(0.1, 0.25, count), rng.uniform(0.1, 0.4, count),
                               rng.uniform(0, 2 * np.pi, count)], -1),
        }  # fmt: skip
        overlap = _max_overlap(params, times, extent)
        if overlap < best_overlap:
            best_overlap, best = overlap, params
        if overlap <= 0.35:
            break
    assert best is not None
    tilt = np.stack([rng.uniform(-15, 15, count), rng.uniform(0, 15, count),
                     rng.uniform(0.05, 0.3, count)], -1)  # fmt: skip
    brightness = rng.uniform(0.85, 1.15, count)
    return tuple(
        SceneObject(
            instance_id=k + 1,
            class_name=names[k],
            z=int(z_order[k]),
            start=_floats(best["start"][k]),
            velocity=_floats(best["velocity"][k]),
            wobble=_floats(best["wobble"][k]),
            size=float(best["size"][k]),
            pulse=_floats(best["pulse"][k]),
            tilt=_floats(tilt[k]),
            brightness=float(brightness[k]),
        )
        for k in range(count)
    )


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _max_overlap(
    params: dict[str, np.ndarray], times: np.ndarray, extent: tuple[float, float]
) -> float:
    """Largest pairwise overlap over ``times``: (r_i + r_j - distance) / min(r_i, r_j).

    r = side / 2.4 approximates each silhouette by a disc (shapes fill ~85 % of the canvas).
    """
    count = params["size"].shape[0]
    if count < 2:
        return 0.0
    column = {k: v[:, None] for k, v in params.items()}  # [N, 1, ...] against times [T]
    xs, ys, sides = _path(column["start"], column["velocity"], column["wobble"],
                          column["size"], column["pulse"], times, extent)  # fmt: skip
    rs = sides / 2.4
    distance = np.hypot(xs[:, None] - xs[None], ys[:, None] - ys[None])
    overlap = (rs[:, None] + rs[None] - distance) / np.minimum(rs[:, None], rs[None])
    overlap[np.arange(count), np.arange(count)] = -np.inf
    return float(overlap.max())


def _sample_schedule(
    config: SceneConfig, count: int, seconds: int, rng: np.random.Generator
) -> tuple[tuple[int, ...], ...]:
    """Per second, the sorted instance ids (1..count) that sound."""
    ceiling = count - 1 if config.keep_one_silent and count > 1 else count
    high = max(1, min(config.sounding[1], ceiling))
    low = min(config.sounding[0], high)

    def draw(previous: tuple[int, ...] | None) -> tuple[int, ...]:
        for _ in range(20):
            k = int(rng.integers(low, high + 1))
            chosen = tuple(sorted(int(i) + 1 for i in rng.choice(count, size=k, replace=False)))
            if chosen != previous or count == 1:
                return chosen
        return chosen

    schedule: list[tuple[int, ...]] = []
    if config.schedule == "constant":
        schedule = [draw(None)] * seconds
    elif config.schedule == "per_second":
        for s in range(seconds):
            if s == 0 or rng.uniform() < config.change_prob:
                schedule.append(draw(schedule[-1] if schedule else None))
            else:
                schedule.append(schedule[-1])
    elif config.schedule == "segments":
        while len(schedule) < seconds:
            length = int(rng.integers(config.segment_seconds[0], config.segment_seconds[1] + 1))
            schedule += [draw(schedule[-1] if schedule else None)] * length
        schedule = schedule[:seconds]
    else:
        raise ConfigError(
            f"unknown schedule {config.schedule!r}: use constant, per_second or segments"
        )
    return tuple(schedule)


def sample_scene(
    config: SceneConfig,
    seconds: int,
    width: int,
    height: int,
    seed: np.random.SeedSequence,
) -> Scene:
    """Sample a scene for a ``width`` x ``height`` frame lasting ``seconds`` (>= 1).

    Independent child generators draw the layout, the background and the mix levels, so
    e.g. the background's size never changes which objects are chosen.
    """
    layout_rng, background_rng, level_rng = (np.random.default_rng(s) for s in seed.spawn(3))
    side = min(width, height)
    extent = (width / side, height / side)
    count = int(layout_rng.integers(config.visible[0], config.visible[1] + 1))
    count = max(1, min(count, len(VOCABULARY)))
    objects = _sample_objects(count, seconds, extent, layout_rng)
    sounding = _sample_schedule(config, count, seconds, layout_rng)
    margin = int(round(_PAN_FRACTION * side))
    background = random_background(width + 2 * margin, height + 2 * margin, background_rng)
    pan = (
        background_rng.uniform(-1, 1),
        background_rng.uniform(-1, 1),
        background_rng.uniform(0.02, 0.1),
        background_rng.uniform(0, 2 * np.pi),
    )
    return Scene(
        seconds=seconds,
        extent=extent,
        objects=objects,
        sounding=sounding,
        background=background,
        pan=pan,
        gains_db=tuple(float(g) for g in level_rng.uniform(-3, 3, size=count)),
        snr_db=float(level_rng.uniform(*config.snr_db)),
        level_dbfs=float(level_rng.uniform(-26, -16)),
    )


def _brightness_lut(brightness: float) -> np.ndarray:
    """uint8 ``[256]`` table scaling a colour value by ``brightness`` (clipped)."""
    return np.clip(np.round(np.arange(256) * brightness), 0, 255).astype(np.uint8)


def _warp_sprite(name: str, side: float, angle_deg: float) -> Image.Image:
    """The sprite of class ``name`` scaled to ``side`` px and rotated by ``angle_deg``
    (counter-clockwise), in one bilinear affine warp: RGBA, bounding square of the result."""
    source = sprite_source(name, side)
    theta = np.deg2rad(angle_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    out = int(np.ceil(side * (abs(cos) + abs(sin)))) + 2
    scale = source.width / side
    # Inverse map (output pixel -> source pixel), rotation about both centres.
    c_out, c_src = out / 2.0, source.width / 2.0
    a, b = scale * cos, -scale * sin
    d, e = scale * sin, scale * cos
    data = (a, b, c_src - a * c_out - b * c_out, d, e, c_src - d * c_out - e * c_out)
    return source.transform((out, out), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)


def render(
    scene: Scene, frame_times: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``scene`` at ``frame_times`` (seconds).

    Returns:
        frames: uint8 ``[T, height, width, 3]`` RGB.
        instances: uint8 ``[T, height, width]``; 0 = background, k = object with
            ``instance_id`` k (its visible part: objects in front cover it).
    """
    side = min(width, height)
    margin = (scene.background.shape[1] - width) // 2
    times = np.asarray(frame_times, np.float64)
    by_depth = sorted(scene.objects, key=lambda o: o.z)
    states = {o.instance_id: o.state(times, scene.extent) for o in by_depth}
    luts = {o.instance_id: _brightness_lut(o.brightness) for o in by_depth}
    frames = np.empty((len(times), height, width, 3), np.uint8)
    instances = np.empty((len(times), height, width), np.uint8)
    ax, ay, freq, phase = scene.pan
    for i, t in enumerate(times):
        ox = int(round(margin * (1 + ax * np.sin(2 * np.pi * freq * t + phase))))
        oy = int(round(margin * (1 + ay * np.cos(2 * np.pi * freq * t + phase))))
        frame = Image.fromarray(scene.background[oy : oy + height, ox : ox + width])
        instance = Image.new("L", (width, height), 0)
        for obj in by_depth:
            x, y, s, angle = (float(v[i]) for v in states[obj.instance_id])
            sprite = _warp_sprite(obj.class_name, max(4.0, s * side), angle)
            rgba = np.asarray(sprite)
            box = (
                int(round(x * side - sprite.width / 2)),
                int(round(y * side - sprite.height / 2)),
            )
            alpha = rgba[..., 3]
            colour = Image.fromarray(luts[obj.instance_id][rgba[..., :3]])
            frame.paste(colour, box, Image.fromarray(alpha))
            instance.paste(obj.instance_id, box, Image.fromarray(_MASK_LUT[alpha]))
        frames[i] = np.asarray(frame)
        instances[i] = np.asarray(instance)
    return frames, instances


def semantic_lut(scene: Scene, second: int) -> np.ndarray:
    """uint8 ``[256]`` map instance id -> AVSS class id if it sounds in ``second``, else 0."""
    lut = np.zeros(256, np.uint8)
    for obj in scene.objects:
        if obj.instance_id in scene.sounding[second]:
            lut[obj.instance_id] = get_class(obj.class_name).avss_id
    return lut
