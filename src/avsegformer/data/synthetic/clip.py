"""In-memory synthetic clips: frames, sound and every kind of ground truth at once.

:func:`generate_clip` is what demos and tests use; the dataset writer builds on the same
pieces (:func:`make_clip`), so a clip in memory and a clip on disk come from one code path.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from ..classes import avss_palette
from .scene import PRESETS, Scene, SceneConfig, render, sample_scene, semantic_lut
from .sounds import SAMPLE_RATE, class_sound, mix_sources, second_gate
from .vocabulary import get_class


@dataclass(frozen=True)
class ClipObject:
    """A visible object of a clip: its instance id (value in ``instance_masks``) and class."""

    instance_id: int
    class_name: str  # AVSS name, e.g. "dog"
    avss_id: int  # AVSS class id = palette index
    s4_category: str  # e.g. "dog_barking"
    z: int  # drawing order, 0 = farthest back


@dataclass(frozen=True, eq=False)
class SynthClip:
    """A generated audio-visual clip with its ground truth.

    Attributes:
        frames: uint8 ``[T, H, W, 3]`` RGB.
        frame_times: float64 ``[T]``, seconds from the start of the clip.
        waveform: float32 ``[L]`` mono in [-1, 1] at ``sample_rate`` (L = seconds * rate).
        sample_rate: 16000.
        instance_masks: uint8 ``[T, H, W]``: 0 = background, k = visible part of the
            object with ``instance_id`` k (see ``objects``).
        semantic_masks: uint8 ``[T, H, W]``: AVSS class id of the objects sounding at the
            frame's second, 0 elsewhere.
        binary_masks: bool ``[T, H, W]``: pixels of the objects sounding at the frame's second.
        objects: the visible objects, in instance-id order.
        sounding: per second, the instance ids that sound (sorted).
        snr_db: ratio of the sources' mix to the background noise.
    """

    frames: np.ndarray
    frame_times: np.ndarray
    waveform: np.ndarray
    sample_rate: int
    instance_masks: np.ndarray
    semantic_masks: np.ndarray
    binary_masks: np.ndarray
    objects: tuple[ClipObject, ...]
    sounding: tuple[tuple[int, ...], ...]
    snr_db: float

    @property
    def seconds(self) -> int:
        """Clip length in whole seconds (= number of entries in ``sounding``)."""
        return len(self.sounding)

    @property
    def sounding_classes(self) -> tuple[tuple[str, ...], ...]:
        """Per second, the class names that sound (in instance-id order)."""
        names = {o.instance_id: o.class_name for o in self.objects}
        return tuple(tuple(names[i] for i in ids) for ids in self.sounding)

    def frame_seconds(self) -> np.ndarray:
        """int64 ``[T]``: the second (index into ``sounding``) each frame belongs to."""
        return second_of(self.frame_times, self.seconds)

    def audio(self, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """The waveform at ``sample_rate`` Hz (soxr, high quality): float32 ``[L']``."""
        if sample_rate == self.sample_rate:
            return self.waveform
        import soxr

        return soxr.resample(self.waveform, self.sample_rate, sample_rate, quality="HQ").astype(
            np.float32
        )

    def semantic_rgb(self) -> np.ndarray:
        """``semantic_masks`` in the AVSS palette colours: uint8 ``[T, H, W, 3]``."""
        return avss_palette()[self.semantic_masks]


def second_of(times: np.ndarray, seconds: int) -> np.ndarray:
    """int64 second index of each time (clamped to [0, seconds - 1])."""
    return np.clip(np.floor(np.asarray(times, np.float64)).astype(np.int64), 0, seconds - 1)


def scene_audio(scene: Scene, num_samples: int, seed: np.random.SeedSequence) -> np.ndarray:
    """The clip's sound: every object that sounds at some second, gated per second, mixed
    with background noise at the scene's SNR. float32 ``[num_samples]`` at 16 kHz."""
    rng = np.random.default_rng(seed)
    sources, gates, gains = [], [], []
    for obj in scene.objects:
        active = np.array([obj.instance_id in ids for ids in scene.sounding])
        # Drawn for every object, sounding or not, so one object's sound never depends on
        # whether another one happens to sound.
        source_rng = np.random.default_rng(rng.integers(2**63))
        if not active.any():
            continue
        sources.append(class_sound(obj.class_name, num_samples, source_rng))
        gates.append(second_gate(active, num_samples))
        gains.append(scene.gains_db[obj.instance_id - 1])
    if not sources:
        gates = [np.zeros(num_samples)]
        sources, gains = [np.zeros(num_samples)], [0.0]
    return mix_sources(sources, gates, gains, scene.snr_db, scene.level_dbfs, rng)


def make_clip(
    config: SceneConfig,
    seconds: int,
    frame_times: np.ndarray,
    width: int,
    height: int,
    seed: np.random.SeedSequence,
) -> SynthClip:
    """Sample a scene from ``seed`` and render it at ``frame_times``; see :class:`SynthClip`."""
    scene_seed, audio_seed = seed.spawn(2)
    scene = sample_scene(config, seconds, width, height, scene_seed)
    frames, instances = render(scene, frame_times, width, height)
    frame_seconds = second_of(frame_times, seconds)
    semantic = np.empty_like(instances)
    for s in np.unique(frame_seconds):
        chosen = frame_seconds == s
        semantic[chosen] = semantic_lut(scene, int(s))[instances[chosen]]
    objects = tuple(
        ClipObject(o.instance_id, o.class_name, get_class(o.class_name).avss_id,
                   get_class(o.class_name).s4_category, o.z)
        for o in scene.objects
    )  # fmt: skip
    return SynthClip(
        frames=frames,
        frame_times=np.asarray(frame_times, np.float64),
        waveform=scene_audio(scene, seconds * SAMPLE_RATE, audio_seed),
        sample_rate=SAMPLE_RATE,
        instance_masks=instances,
        semantic_masks=semantic,
        binary_masks=semantic > 0,
        objects=objects,
        sounding=scene.sounding,
        snr_db=scene.snr_db,
    )


def _kind_code(kind: str) -> int:
    return zlib.crc32(kind.encode())


def generate_clip(
    kind: str = "s4",
    seconds: int = 5,
    fps: float = 1.0,
    size: int | tuple[int, int] = 224,
    seed: int = 0,
    *,
    first_frame_time: float | None = None,
    config: SceneConfig | None = None,
    **overrides: object,
) -> SynthClip:
    """Generate one clip in memory.

    Args:
        kind: scene preset: ``"s4"`` (one constant source among 2-4 objects), ``"ms3"`` /
            ``"avss"`` (1-3 sources among 2-5, changing per second) or ``"switch"`` (one
            source at a time that moves to another object every 1-3 s).
        seconds: clip length (whole seconds, >= 1).
        fps: frames per second; frame i is at ``first_frame_time + i / fps``.
        size: ``(width, height)`` or one int for a square frame.
        seed: same seed and arguments -> identical clip. The scene and the sound do not
            depend on ``fps`` or ``first_frame_time``.
        first_frame_time: time of the first frame; default 0, or 0.5 (the middle of each
            second) when ``fps == 1``.
        config: full scene configuration (overrides ``kind``'s preset).
        **overrides: fields of :class:`SceneConfig` to change, e.g. ``visible=(3, 3)``,
            ``sounding=(2, 2)``, ``schedule="segments"``, ``snr_db=(10, 10)``.
    """
    if kind not in PRESETS and config is None:
        raise ConfigError(f"unknown clip kind {kind!r}: use one of {', '.join(PRESETS)}")
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    if seconds < 1:
        raise ConfigError(f"seconds must be >= 1, got {seconds}")
    if fps <= 0:
        raise ConfigError(f"fps must be > 0, got {fps}")
    base = config or PRESETS[kind]
    if overrides:
        from dataclasses import fields, replace

        known = {f.name for f in fields(SceneConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown scene option(s) {unknown}; options: {sorted(known)}")
        base = replace(base, **overrides)  # type: ignore[arg-type]
    width, height = (size, size) if isinstance(size, int) else size
    if first_frame_time is None:
        first_frame_time = 0.5 if fps == 1 else 0.0
    num_frames = int(np.floor(seconds * fps - first_frame_time * fps - 1e-9)) + 1
    frame_times = first_frame_time + np.arange(max(num_frames, 1)) / fps
    seed_seq = np.random.SeedSequence([seed, _kind_code(kind)])
    return make_clip(base, seconds, frame_times, width, height, seed_seq)
