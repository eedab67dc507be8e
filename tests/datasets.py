"""Write tiny AVSBench datasets (S4, MS3, AVSS) in the official layouts, for tests.

Every file is real: PNG/JPEG frames, mask PNGs, 16-bit WAVs and AVSBench-format
``.pkl`` log-mels computed from those WAVs. Each clip shows one moving ellipse per
sounding object on a smooth background; the masks are exactly the ellipses. Content is
a deterministic function of ``seed``.

    from datasets import make_s4_dataset  # tests/ is on sys.path under pytest
    root = make_s4_dataset(tmp_path, videos_per_split=2, size=224, seed=0)
    # root == tmp_path / "Single-source"

Each ``make_*`` returns the task folder it wrote (``<root>/Single-source``,
``<root>/Multi-sources``, ``<root>/AVSS``); the readers accept it or ``root``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw

from avsegformer.audio import wav_to_examples
from avsegformer.data.classes import AVSS_CLASSES, S4_CATEGORIES, S4_TO_AVSS, palette_color
from avsegformer.data.safe_pickle import write_logmel_pkl

SPLITS = ("train", "val", "test")
AVSS_SUBSETS = ("v1s", "v1m", "v2")
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


@dataclass(frozen=True)
class _Object:
    """An ellipse moving linearly over the clip: centre and radii as fractions of the size."""

    cx: float
    cy: float
    dx: float
    dy: float
    rx: float
    ry: float
    color: tuple[int, int, int]

    def box(self, t: int, width: int, height: int) -> tuple[float, float, float, float]:
        cx = (self.cx + self.dx * t) * width
        cy = (self.cy + self.dy * t) * height
        return (
            cx - self.rx * width,
            cy - self.ry * height,
            cx + self.rx * width,
            cy + self.ry * height,
        )


def youtube_id(rng: np.random.Generator) -> str:
    """An 11-character id drawn from YouTube's alphabet."""
    return "".join(rng.choice(list(_ID_ALPHABET), size=11))


def random_object(rng: np.random.Generator) -> _Object:
    return _Object(
        cx=float(rng.uniform(0.3, 0.7)),
        cy=float(rng.uniform(0.3, 0.7)),
        dx=float(rng.uniform(-0.03, 0.03)),
        dy=float(rng.uniform(-0.03, 0.03)),
        rx=float(rng.uniform(0.08, 0.2)),
        ry=float(rng.uniform(0.08, 0.2)),
        color=tuple(int(c) for c in rng.integers(40, 255, size=3)),
    )


def render_frame(
    objects: Sequence[_Object],
    t: int,
    width: int,
    height: int,
    rng: np.random.Generator | None = None,
) -> Image.Image:
    """RGB frame ``t``: a gradient background with the objects drawn on top.

    With ``rng``, pixel noise is added so that files compress (and decode) like real
    video frames rather than flat drawings.
    """
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack(
        [
            64 + 96 * xs / max(width - 1, 1),
            64 + 96 * ys / max(height - 1, 1),
            np.full((height, width), 96.0 + 8 * t),
        ],
        axis=-1,
    ).astype(np.uint8)
    image = Image.fromarray(background, mode="RGB")
    draw = ImageDraw.Draw(image)
    for obj in objects:
        draw.ellipse(obj.box(t, width, height), fill=obj.color)
    if rng is None:
        return image
    noise = rng.normal(0.0, 12.0, size=(height, width, 3))
    noisy = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, mode="RGB")


def render_binary_mask(objects: Sequence[_Object], t: int, width: int, height: int) -> Image.Image:
    """Mode-"L" mask, 255 inside any object, 0 elsewhere."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for obj in objects:
        draw.ellipse(obj.box(t, width, height), fill=255)
    return mask


def render_color_mask(
    objects: Sequence[_Object], classes: Sequence[int], t: int, width: int, height: int
) -> Image.Image:
    """RGB AVSS mask: each object filled with its class's palette colour."""
    mask = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(mask)
    for obj, cls in zip(objects, classes, strict=True):
        draw.ellipse(obj.box(t, width, height), fill=palette_color(cls))
    return mask


def tone_waveform(
    rng: np.random.Generator, seconds: float, sample_rate: int, channels: int = 2
) -> np.ndarray:
    """int16 ``[L, C]`` (or ``[L]`` for one channel): a random tone plus a little noise."""
    length = int(round(seconds * sample_rate))
    n = np.arange(length) / sample_rate
    freq = float(rng.uniform(200, 2000))
    mono = 0.4 * np.sin(2 * np.pi * freq * n) + 0.02 * rng.standard_normal(length)
    data = np.stack([mono * (1.0 - 0.2 * c) for c in range(channels)], axis=1)
    data = np.clip(np.round(data * 32767), -32768, 32767).astype(np.int16)
    return data[:, 0] if channels == 1 else data


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write int16 samples ``[L]`` / ``[L, C]`` as a 16-bit PCM WAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples, sample_rate, subtype="PCM_16")
    return path


def write_logmel_from_wav(wav: Path, pkl: Path, num_examples: int = 5) -> Path:
    """The S4/MS3 ``.pkl`` of ``wav`` as AVSBench's preprocessing made it (repeat-last)."""
    examples = wav_to_examples(wav, num_examples=num_examples, policy="repeat_last")
    return write_logmel_pkl(pkl, examples)


def _save(image: Image.Image, path: Path, **kwargs: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def write_csv(path: Path, rows: list[list[str]]) -> None:
    """Rows as a metadata CSV (header included in ``rows``), for tests that edit one."""
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_object_clip(
    rng: np.random.Generator,
    frame_path: object,
    mask_path: object,
    masked_frames: Sequence[int],
    size: int,
    num_objects: int,
) -> None:
    objects = [random_object(rng) for _ in range(num_objects)]
    for t in range(1, 6):
        _save(render_frame(objects, t, size, size, rng), frame_path(t))
    for t in masked_frames:
        _save(render_binary_mask(objects, t, size, size), mask_path(t))


def _write_object_audio(
    rng: np.random.Generator, wav: Path, pkl: Path, audio: Sequence[str], seconds: float
) -> None:
    samples = tone_waveform(rng, seconds, 16000, channels=2)
    write_wav(wav, samples, 16000)
    if "pkl" in audio:
        write_logmel_from_wav(wav, pkl)
    if "wav" not in audio:
        wav.unlink()


def make_s4_dataset(
    root: str | Path,
    *,
    videos_per_split: int = 2,
    size: int = 224,
    seed: int = 0,
    splits: Sequence[str] = SPLITS,
    audio: Sequence[str] = ("pkl", "wav"),
    audio_seconds: float = 5.0,
) -> Path:
    """Write ``<root>/Single-source`` (S4 layout, spec §2) and return that folder.

    ``videos_per_split`` clips per split, 5 PNG frames of ``size`` x ``size`` each; masks
    for frame 1 only in train, frames 1-5 in val/test; audio as 16 kHz stereo WAV
    and/or AVSBench ``.pkl`` (``audio``). Categories cycle through the 23 S4 categories.
    """
    rng = np.random.default_rng(seed)
    task_root = Path(root) / "Single-source"
    data = task_root / "s4_data"
    rows = []
    for split in splits:
        for k in range(videos_per_split):
            name = youtube_id(rng)
            category = S4_CATEGORIES[(len(rows) + k) % len(S4_CATEGORIES)]
            rows.append((name, int(rng.integers(0, 7)), category, split))
            rel = Path(split, category)
            _write_object_clip(
                rng,
                lambda t, n=name, r=rel: data / "visual_frames" / r / n / f"{n}_{t}.png",
                lambda t, n=name, r=rel: data / "gt_masks" / r / n / f"{n}_{t}.png",
                [1] if split == "train" else [1, 2, 3, 4, 5],
                size,
                num_objects=1,
            )
            _write_object_audio(
                rng,
                data / "audio_wav" / rel / f"{name}.wav",
                data / "audio_log_mel" / rel / f"{name}.pkl",
                audio,
                audio_seconds,
            )
    _write_csv(task_root / "s4_meta_data.csv", ("name", "offset", "category", "split"), rows)
    return task_root


def make_ms3_dataset(
    root: str | Path,
    *,
    videos_per_split: int = 2,
    size: int = 224,
    seed: int = 0,
    splits: Sequence[str] = SPLITS,
    audio: Sequence[str] = ("pkl", "wav"),
    audio_seconds: float = 5.0,
) -> Path:
    """Write ``<root>/Multi-sources`` (MS3 layout, spec §3) and return that folder.

    Names are ``<youtube id>_<k>``; frames have no split level and are named
    ``<name>.mp4_<t>.png``; 5 masks per clip in every split; 1-3 objects per clip.
    """
    rng = np.random.default_rng(seed)
    task_root = Path(root) / "Multi-sources"
    data = task_root / "ms3_data"
    rows = []
    for split in splits:
        for _ in range(videos_per_split):
            name = f"{youtube_id(rng)}_{int(rng.integers(0, 20))}"
            rows.append((name, split))
            _write_object_clip(
                rng,
                lambda t, n=name: data / "visual_frames" / n / f"{n}.mp4_{t}.png",
                lambda t, n=name, s=split: data / "gt_masks" / s / n / f"{n}_{t}.png",
                [1, 2, 3, 4, 5],
                size,
                num_objects=int(rng.integers(1, 4)),
            )
            _write_object_audio(
                rng,
                data / "audio_wav" / split / f"{name}.wav",
                data / "audio_log_mel" / split / f"{name}.pkl",
                audio,
                audio_seconds,
            )
    _write_csv(task_root / "ms3_meta_data.csv", ("video_id", "split"), rows)
    return task_root


def make_avss_dataset(
    root: str | Path,
    *,
    videos_per_split: int = 1,
    frame_size: tuple[int, int] = (320, 240),
    seed: int = 0,
    splits: Sequence[str] = SPLITS,
    subsets: Sequence[str] = AVSS_SUBSETS,
    sample_rate: int = 16000,
) -> Path:
    """Write ``<root>/AVSS`` (AVSS layout, spec §4) and return that folder.

    ``videos_per_split`` clips per (subset, split): v1s/v1m clips have 5 JPEG frames and
    5 s of audio, v2 clips 10 frames and 10 s; frames are ``frame_size`` (width, height);
    ``labels_rgb`` masks use the palette colours (v1s train: ``0.png`` only). Writes
    ``metadata.csv`` (``vid,uid,s_min,s_sec,a_obj,split,label``) and ``label2idx.json``.
    """
    rng = np.random.default_rng(seed)
    task_root = Path(root) / "AVSS"
    width, height = frame_size
    rows = []
    for subset in subsets:
        frames = 10 if subset == "v2" else 5
        for split in splits:
            for _ in range(videos_per_split):
                vid = youtube_id(rng)
                start = int(rng.integers(0, 120))
                uid = vid if subset == "v1m" else f"{vid}_{start * 1000}_{(start + frames) * 1000}"
                if subset == "v1s":
                    category = S4_CATEGORIES[int(rng.integers(0, len(S4_CATEGORIES)))]
                    classes = [AVSS_CLASSES.index(S4_TO_AVSS[category])]
                else:
                    count = int(rng.integers(1, 4))
                    classes = [
                        int(c) for c in rng.choice(np.arange(1, 71), size=count, replace=False)
                    ]
                objects = [random_object(rng) for _ in classes]
                folder = task_root / subset / uid
                masked = 1 if (subset == "v1s" and split == "train") else frames
                for t in range(frames):
                    _save(
                        render_frame(objects, t, width, height, rng),
                        folder / "frames" / f"{t}.jpg",
                        quality=90,
                    )
                for t in range(masked):
                    _save(
                        render_color_mask(objects, classes, t, width, height),
                        folder / "labels_rgb" / f"{t}.png",
                    )
                write_wav(
                    folder / "audio.wav", tone_waveform(rng, frames, sample_rate), sample_rate
                )
                a_obj = "_".join(AVSS_CLASSES[c] for c in classes)
                rows.append((vid, uid, start // 60, start % 60, a_obj, split, subset))
    _write_csv(
        task_root / "metadata.csv",
        ("vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"),
        rows,
    )
    label2idx = {name: index for index, name in enumerate(AVSS_CLASSES)}
    (task_root / "label2idx.json").write_text(json.dumps(label2idx, indent=1))
    return task_root
