"""What ``avsegformer demo`` and ``avsegformer serve`` share: the generated demo clip as a
video file (:func:`write_clip_video`, at :data:`DEMO_VIDEO_FPS` and :data:`DEMO_SIZE`) and
the tiny S4 checkpoint shipped with the repository (:func:`find_demo_checkpoint`).

A library module, so that the server does not import a command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import MissingFileError

__all__ = [
    "DEMO_CHECKPOINT",
    "DEMO_SIZE",
    "DEMO_VIDEO_FPS",
    "find_demo_checkpoint",
    "write_clip_video",
]

DEMO_CHECKPOINT = Path("checkpoints") / "demo_tiny_s4.safetensors"
DEMO_VIDEO_FPS = 25
#: Square like the synthetic training data (S4/MS3 models squash frames to a square).
DEMO_SIZE = (224, 224)


def find_demo_checkpoint(requested: str | None) -> Path:
    """The checkpoint to use: ``requested``, else the shipped one (cwd, then the repository)."""
    if requested is not None:
        from .checkpoint import require_checkpoint_file

        return require_checkpoint_file(requested)
    repository = Path(__file__).resolve().parents[2]  # src/avsegformer/ -> root
    for candidate in (DEMO_CHECKPOINT, repository / DEMO_CHECKPOINT):
        if candidate.is_file():
            return candidate
    raise MissingFileError(
        f"{DEMO_CHECKPOINT}: the demo checkpoint is missing (it ships with the repository; "
        "pass --checkpoint FILE to use another model)"
    )


def write_clip_video(clip: Any, path: Path) -> Path:
    """Write a :class:`SynthClip` as H.264 + AAC (mono, 16 kHz), one second at a time."""
    from .data.video import VideoWriter

    height, width = clip.frames.shape[1:3]
    rate = clip.sample_rate
    seconds_of_frames = np.floor(clip.frame_times).astype(int)
    with VideoWriter(
        path,
        fps=DEMO_VIDEO_FPS,
        size=(width, height),
        audio_rate=rate,
        audio_layout="mono",
        overwrite=True,
    ) as writer:
        for second in range(clip.seconds):
            writer.write_audio(clip.waveform[second * rate : (second + 1) * rate])
            for i in np.flatnonzero(seconds_of_frames == second):
                writer.write_frame(clip.frames[i], float(clip.frame_times[i]))
    return path
