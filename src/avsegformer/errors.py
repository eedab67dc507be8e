"""Exceptions raised by avsegformer.

Errors are part of the interface: every message names the file, key or shape at fault
and says what to do. The command line prints ``str(error)`` on one line (no traceback)
and exits with status 2.
"""

from __future__ import annotations


class AVSegFormerError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(AVSegFormerError, ValueError):
    """An unknown model/configuration name or a bad override (``--set key=value``)."""


class CheckpointError(AVSegFormerError):
    """A checkpoint file that cannot be read (missing, corrupt, unknown format)."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint whose keys or shapes do not fit the model.

    Attributes list every offending key so callers can inspect them; the message shows
    the first few of each kind and the counts.
    """

    def __init__(
        self,
        message: str,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.mismatched = mismatched or []


class DataError(AVSegFormerError):
    """A dataset problem: a missing, unreadable or malformed file in a dataset root."""


class MissingFileError(DataError, FileNotFoundError):
    """A file or directory that must exist does not."""


class CorruptFileError(DataError):
    """A file exists but cannot be decoded (truncated image, bad WAV, bad pickle...)."""


class UnsafePickleError(DataError):
    """A pickle asked for something other than a plain tensor; nothing was executed."""


class AudioError(AVSegFormerError):
    """Audio that cannot be turned into log-mel examples (too short, bad shape...)."""


class VideoError(AVSegFormerError):
    """A video file that cannot be decoded (not a video, truncated, unknown codec...)."""


class NoAudioStreamError(VideoError):
    """A video without an audio stream (use ``allow_silent=True`` to proceed with silence)."""


class OutputExistsError(AVSegFormerError, FileExistsError):
    """An output folder exists already (pass ``--overwrite`` to replace it)."""


class ShapeError(AVSegFormerError, ValueError):
    """A tensor argument with the wrong shape, dtype or values (losses, metrics, model inputs).

    The message names the argument and its shape and says what was expected.
    """


class InputShapeError(ShapeError):
    """A tensor given to the model has the wrong shape, dtype or size (the message says which)."""


class NotAVideoError(VideoError):
    """A file that is not a video at all (text, image, audio only): FFmpeg finds no video in it."""


class CorruptVideoError(VideoError):
    """A video file that is truncated or damaged; the message carries FFmpeg's reason."""


class UnsupportedCodecError(VideoError):
    """A video whose video or audio codec this FFmpeg build cannot decode."""


class EmptyVideoError(VideoError):
    """A zero-length video: an empty file, or a container without a single video frame."""


class MetricError(AVSegFormerError, ValueError):
    """A metric result that cannot be computed (e.g. ``compute()`` before any ``update()``)."""
