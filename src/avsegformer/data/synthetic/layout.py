"""Writing one generated video in the official AVSBench layout of S4, MS3 or AVSS.

Paths, names and encodings follow ``shared/spec/avsbench-data.md``: S4 §2 (1-based frame
names, train has only mask ``_1``), MS3 §3 (frames without a split level, named
``<name>.mp4_<t>.png``), AVSS §4 (0-based ``frames/<t>.jpg``, ``labels_rgb`` in the palette
colours, ``labels_semantic`` class indices). The generator's own ground truth goes to
``synth_meta/`` next to the official files.
"""

from __future__ import annotations

import io
import json
import struct
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..classes import avss_palette
from .clip import SynthClip

PNG_COMPRESS_LEVEL = 1  # zlib level: ~4x faster than 6 for ~10 % larger frames
JPEG_QUALITY = 90


@dataclass(frozen=True)
class VideoNames:
    """Identifiers of one video. ``key`` names its ``synth_meta`` files (S4/MS3 name, AVSS uid)."""

    key: str
    category: str = ""  # S4 category folder
    vid: str = ""  # AVSS vid
    subset: str = ""  # AVSS label: v1s / v1m / v2


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of uint8 ``[H, W]`` (greyscale, opens as mode L) or ``[H, W, 3]`` (RGB).

    8-bit, not interlaced, every row with the PNG "Up" filter, zlib level 1: the same
    file size as Pillow's level 1 in about half the time (Pillow tries every filter on
    every row). Any PNG reader decodes it to exactly ``array``.
    """
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] != 3)
    ):
        raise ValueError(
            f"expected uint8 [H, W] or [H, W, 3], got {array.dtype} {list(array.shape)}"
        )
    height, width = array.shape[:2]
    rows = np.ascontiguousarray(array).reshape(height, -1)
    filtered = np.empty((height, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2  # filter type "Up": each byte minus the byte above it, mod 256
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    colour_type = 0 if array.ndim == 2 else 2
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), PNG_COMPRESS_LEVEL))
        + _png_chunk(b"IEND", b"")
    )


def write_png(path: Path, array: np.ndarray) -> None:
    """Write uint8 ``[H, W]`` (mode L) or ``[H, W, 3]`` (RGB) as PNG (:func:`encode_png`)."""
    _write_bytes(path, encode_png(array))


def write_jpeg(path: Path, array: np.ndarray) -> None:
    """Write uint8 ``[H, W, 3]`` as a baseline JPEG (quality 90, 4:2:0)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    _write_bytes(path, buffer.getvalue())


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """float ``[L]`` in [-1, 1] -> int16 ``[L]`` (x * 32768, rounded, clipped), the inverse of
    the readers' ``int16 / 32768``."""
    return np.clip(np.round(waveform.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write int16 ``[L]`` as a mono 16-bit PCM WAV (plain 44-byte RIFF header)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(samples.astype("<i2").tobytes())
    _write_bytes(path, buffer.getvalue())


def write_logmel(path: Path, samples: np.ndarray, sample_rate: int, count: int) -> int:
    """Write the AVSBench ``.pkl`` log-mel of int16 ``samples``: float32 ``[count,1,96,64]``.

    Computed by the VGGish front end on the very samples of the WAV file; fewer than
    ``count`` examples are padded by repeating the last one, like AVSBench's
    preprocessing (``audio-frontend.md`` §4). Returns the number of real examples.
    """
    from ...audio import fit_examples, waveform_to_examples
    from ..safe_pickle import write_logmel_pkl

    examples = waveform_to_examples(samples, sample_rate)
    write_logmel_pkl(path, fit_examples(examples, count, "repeat_last", source=path))
    return int(examples.shape[0])


def binary_png(mask: np.ndarray) -> np.ndarray:
    """bool ``[H, W]`` -> uint8 0/255 (mode L): what both official S4/MS3 mask readers accept."""
    return mask.astype(np.uint8) * 255


# ------------------------------------------------------------------------------ tasks


def write_s4(
    root: Path, split: str, names: VideoNames, clip: SynthClip, samples: np.ndarray
) -> Path:
    """S4 files of one video; returns the ``.pkl`` path (written by the caller)."""
    name, category = names.key, names.category
    base = root / "s4_data"
    for t in range(clip.frames.shape[0]):
        write_png(
            base / "visual_frames" / split / category / name / f"{name}_{t + 1}.png", clip.frames[t]
        )
    annotated = 1 if split == "train" else clip.frames.shape[0]
    for t in range(annotated):
        write_png(
            base / "gt_masks" / split / category / name / f"{name}_{t + 1}.png",
            binary_png(clip.binary_masks[t]),
        )
    write_wav(base / "audio_wav" / split / category / f"{name}.wav", samples, clip.sample_rate)
    return base / "audio_log_mel" / split / category / f"{name}.pkl"


def write_ms3(
    root: Path, split: str, names: VideoNames, clip: SynthClip, samples: np.ndarray
) -> Path:
    """MS3 files of one video; returns the ``.pkl`` path (written by the caller)."""
    name = names.key
    base = root / "ms3_data"
    for t in range(clip.frames.shape[0]):
        # No split level, and the original ".mp4" stays in the frame names (spec §3.1).
        write_png(base / "visual_frames" / name / f"{name}.mp4_{t + 1}.png", clip.frames[t])
        write_png(
            base / "gt_masks" / split / name / f"{name}_{t + 1}.png",
            binary_png(clip.binary_masks[t]),
        )
    write_wav(base / "audio_wav" / split / f"{name}.wav", samples, clip.sample_rate)
    return base / "audio_log_mel" / split / f"{name}.pkl"


def write_avss(
    root: Path, split: str, names: VideoNames, clip: SynthClip, samples: np.ndarray
) -> None:
    """AVSS files of one video: ``<label>/<uid>/`` with ``audio.wav``, ``frames/``,
    ``labels_rgb/`` and ``labels_semantic/``."""
    folder = root / names.subset / names.key
    palette = avss_palette()
    # v1s train videos carry one annotated frame, like S4 (spec §4.5).
    annotated = 1 if (names.subset == "v1s" and split == "train") else clip.frames.shape[0]
    for t in range(clip.frames.shape[0]):
        write_jpeg(folder / "frames" / f"{t}.jpg", clip.frames[t])
    for t in range(annotated):
        write_png(folder / "labels_rgb" / f"{t}.png", palette[clip.semantic_masks[t]])
        write_png(folder / "labels_semantic" / f"{t}.png", clip.semantic_masks[t])
    write_wav(folder / "audio.wav", samples, clip.sample_rate)


def write_synth_meta(
    root: Path, split: str, names: VideoNames, clip: SynthClip, info: dict
) -> None:
    """Generator ground truth: ``synth_meta/<split>/<key>.json`` and the instance masks
    ``synth_meta/<split>/<key>/instances/<k>.png`` (k = 0-based frame index; pixel value =
    ``instance_id`` of the visible object, 0 = background)."""
    base = root / "synth_meta" / split
    for t in range(clip.instance_masks.shape[0]):
        write_png(base / names.key / "instances" / f"{t}.png", clip.instance_masks[t])
    record = {
        "video": names.key,
        "split": split,
        **info,
        "frame_times_s": [round(float(t), 6) for t in clip.frame_times],
        "size": [int(clip.frames.shape[2]), int(clip.frames.shape[1])],
        "objects": [
            {
                "instance_id": o.instance_id,
                "class": o.class_name,
                "avss_id": o.avss_id,
                "s4_category": o.s4_category,
                "z": o.z,
            }
            for o in clip.objects
        ],
        "sounding": [list(ids) for ids in clip.sounding],
        "sounding_classes": [list(names_) for names_ in clip.sounding_classes],
        "snr_db": round(float(clip.snr_db), 4),
        "instance_masks": f"{names.key}/instances/{{k}}.png",
    }
    _write_bytes(base / f"{names.key}.json", (json.dumps(record, indent=1) + "\n").encode())
