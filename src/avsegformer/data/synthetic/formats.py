"""How the synthetic benchmark writes each task's official layout (one format per task).

A :class:`SyntheticFormat` says what the generator needs to know of a task: the
metadata CSV (name, header), the default frame shape, the scene of each video and how
one video's files and CSV row are written. The task registry
(:mod:`avsegformer.tasks`) hands each task its format; :mod:`.dataset` asks the task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..classes import AVSS_CLASSES
from .clip import SynthClip
from .layout import VideoNames, write_avss, write_ms3, write_s4

# AVSS subsets: v1s = S4-like (5 s, one source), v1m = MS3-like (5 s), v2 = 10 s multi-source.
DEFAULT_AVSS_MIX: dict[str, float] = {"v1s": 0.4, "v1m": 0.2, "v2": 0.4}
_SPLIT_CODES = {"train": "tr", "val": "va", "test": "te"}
# The scene preset (:data:`.scene.PRESETS`) and length of each AVSS subset's videos.
_SUBSET_PRESET = {"v1s": "s4", "v1m": "ms3", "v2": "avss"}
_SUBSET_SECONDS = {"v1s": 5, "v1m": 5, "v2": 10}


@dataclass(frozen=True)
class SyntheticJob:
    """One video to generate (picklable: it crosses to worker processes)."""

    task: str
    split: str
    index: int
    seed: int
    width: int
    height: int
    root: str
    logmel: bool
    short_audio: float
    avss_mix: tuple[tuple[str, float], ...]


# What a format's writer returns: the video's names, its metadata CSV row, the .pkl path.
Written = tuple[VideoNames, list[str], Path | None]
VideoWriter = Callable[[SyntheticJob, SynthClip, np.ndarray, np.random.Generator, str], Written]


@dataclass(frozen=True)
class SyntheticFormat:
    """What the generator writes for one task.

    ``scene``: the scene preset of every video, or ``None`` when each video draws an
    AVSS subset from the mix (``uses_subsets``), whose preset and length it takes.
    ``aspect``: default width / height of the frames. ``log_mel``: the layout has
    ``.pkl`` log-mel files. ``write_video(job, clip, samples, rng, subset)``: writes one
    video and returns its names, CSV row and ``.pkl`` path. ``extra_files``: file name
    -> text written beside the metadata.
    """

    metadata_file: str
    csv_header: tuple[str, ...]
    write_video: VideoWriter
    scene: str | None = None
    aspect: float = 1.0
    log_mel: bool = True
    trailing_newline: bool = True
    extra_files: tuple[tuple[str, str], ...] = ()

    @property
    def uses_subsets(self) -> bool:
        return self.scene is None

    def video_scene(self, job: SyntheticJob, rng: np.random.Generator) -> tuple[str, int, str]:
        """(scene preset, seconds, AVSS subset or "") of one video."""
        if self.scene is not None:
            return self.scene, 5, ""
        subset = _choose_subset(job.avss_mix, rng)
        return _SUBSET_PRESET[subset], _SUBSET_SECONDS[subset], subset

    def parse_mix(self, spec: str | dict[str, float] | None) -> dict[str, float]:
        """The subset mix of a format with subsets (``{}`` otherwise)."""
        return parse_mix(spec) if self.uses_subsets else {}


def parse_mix(spec: str | dict[str, float] | None) -> dict[str, float]:
    """AVSS subset weights, e.g. ``"v1s=0.4,v1m=0.2,v2=0.4"`` (any non-negative weights)."""
    if spec is None:
        return dict(DEFAULT_AVSS_MIX)
    if isinstance(spec, str):
        try:
            spec = {
                k.strip(): float(v) for k, v in (p.split("=") for p in spec.split(",") if p.strip())
            }
        except ValueError:
            raise DataError(f"bad AVSS mix {spec!r}: use e.g. v1s=0.4,v1m=0.2,v2=0.4") from None
    bad = [k for k in spec if k not in _SUBSET_SECONDS]
    if bad or sum(spec.values()) <= 0 or any(v < 0 for v in spec.values()):
        raise DataError(f"bad AVSS mix {spec}: keys v1s, v1m, v2 with non-negative weights")
    return {k: float(spec[k]) for k in _SUBSET_SECONDS if k in spec}


def _choose_subset(mix: tuple[tuple[str, float], ...], rng: np.random.Generator) -> str:
    labels = [label for label, _ in mix]
    weights = np.array([weight for _, weight in mix]) / sum(weight for _, weight in mix)
    return labels[int(rng.choice(len(labels), p=weights))]


def _write_s4_video(
    job: SyntheticJob, clip: SynthClip, samples: np.ndarray, rng: np.random.Generator, subset: str
) -> Written:
    name = f"s4{_SPLIT_CODES[job.split]}{job.index:07d}"  # 11 characters, like a YouTube id
    category = clip.objects[clip.sounding[0][0] - 1].s4_category
    names = VideoNames(key=name, category=category)
    pkl = write_s4(Path(job.root), job.split, names, clip, samples)
    return names, [name, str(int(rng.integers(0, 7))), category, job.split], pkl


def _write_ms3_video(
    job: SyntheticJob, clip: SynthClip, samples: np.ndarray, rng: np.random.Generator, subset: str
) -> Written:
    name = f"ms{_SPLIT_CODES[job.split]}{job.index:07d}_{int(rng.integers(0, 13))}"
    names = VideoNames(key=name)
    pkl = write_ms3(Path(job.root), job.split, names, clip, samples)
    return names, [name, job.split], pkl


def _write_avss_video(
    job: SyntheticJob, clip: SynthClip, samples: np.ndarray, rng: np.random.Generator, subset: str
) -> Written:
    start_s = int(rng.integers(0, 300))
    base = f"av{_SPLIT_CODES[job.split]}{job.index:07d}"
    if subset == "v1m":  # MS3 naming: uid == vid == <id>_<k> (spec §4.2)
        vid = uid = f"{base}_{int(rng.integers(0, 13))}"
    else:  # <vid>_<start_ms>_<end_ms>
        vid, uid = base, f"{base}_{start_s * 1000}_{(start_s + clip.seconds) * 1000}"
    names = VideoNames(key=uid, vid=vid, subset=subset)
    write_avss(Path(job.root), job.split, names, clip, samples)
    row = [vid, uid, str(start_s // 60), str(start_s % 60), _a_obj(clip), job.split, subset]
    return names, row, None


def _a_obj(clip: SynthClip) -> str:
    """AVSS ``a_obj``: classes that sound at some second, in order of first sounding."""
    seen: list[str] = []
    for names in clip.sounding_classes:
        seen += [n for n in names if n not in seen]
    return "_".join(seen)


S4_SYNTHETIC = SyntheticFormat(
    metadata_file="s4_meta_data.csv",
    csv_header=("name", "start", "category", "split"),
    write_video=_write_s4_video,
    scene="s4",
)
MS3_SYNTHETIC = SyntheticFormat(
    metadata_file="ms3_meta_data.csv",
    csv_header=("name", "split"),
    write_video=_write_ms3_video,
    scene="ms3",
)
AVSS_SYNTHETIC = SyntheticFormat(
    metadata_file="metadata.csv",
    csv_header=("vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"),
    write_video=_write_avss_video,
    aspect=10 / 7,  # non-square like the real AVSS frames, e.g. 320x224
    log_mel=False,
    trailing_newline=False,
    extra_files=(
        (
            "label2idx.json",
            json.dumps({name: index for index, name in enumerate(AVSS_CLASSES)}, indent=1) + "\n",
        ),
    ),
)
