"""Exceptions raised by avsegformer.

Errors are part of the interface: every message names the file, key or shape at fault
and says what to do, in the words of the API (``allow_silent=True``); an error can also
carry the command line's words for the fix (``cli_hint``: ``--allow-silent``), which the
command line prints instead. The command line prints the first line of the message (no
traceback; further lines, e.g. lists of checkpoint keys, with ``-v``) and exits with
status 2.
"""

from __future__ import annotations


class AVSegFormerError(Exception):
    """Base class of every error this package raises on purpose.

    Args:
        message: what is wrong (names the file, key or shape).
        hint: the fix, for API callers; appended to the message.
        cli_hint: the fix in command-line terms (replaces ``hint`` there).
    """

    def __init__(
        self, message: str = "", *, hint: str | None = None, cli_hint: str | None = None
    ) -> None:
        super().__init__(_with_hint(message, hint))
        self.message = message
        self.hint = hint
        self.cli_hint = cli_hint

    def cli_text(self) -> str:
        """The message as the command line shows it: with its own hint when it has one."""
        if self.cli_hint is None:
            return str(self)
        return _with_hint(self.message, self.cli_hint)


def _with_hint(message: str, hint: str | None) -> str:
    """``message`` with ``hint`` at the end of its first line (details follow it)."""
    if hint is None:
        return message
    first, newline, rest = message.partition("\n")
    return f"{first} ({hint}){newline}{rest}"


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
        *,
        hint: str | None = None,
        cli_hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, cli_hint=cli_hint)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.mismatched = mismatched or []


class WeightsVerificationError(CheckpointError):
    """A downloaded (or hand-placed) weight file that is not the released one: truncated,
    another model's, or with another sha256. Downloaded files are removed, never used."""


class DownloadError(AVSegFormerError):
    """Released weights that could not be fetched (no network, ``--offline``, a missing
    optional dependency); the message says which file to place where by hand."""


class DataError(AVSegFormerError):
    """A dataset problem: a missing, unreadable or malformed file in a dataset root."""


class UnknownTaskError(ConfigError, DataError):
    """A task name no registered task has (a configuration and a data error alike:
    configurations, dataset readers and the synthetic writer all name tasks)."""


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


class OutputNotWritableError(AVSegFormerError, PermissionError):
    """An output path that cannot be written (read-only, a file where a folder must be...).

    Raised before the work starts (:func:`avsegformer.fileio.check_writable`).
    """


class NonFiniteError(AVSegFormerError, ValueError):
    """NaN or infinite values where finite ones are required: an input file, a model
    input, a checkpoint tensor, a training loss or gradient. The message says where."""


class NonFiniteCheckpointError(CheckpointError, NonFiniteError):
    """A checkpoint holding NaN or infinite tensors (a diverged training run, a damaged
    file): both a :class:`CheckpointError` and a :class:`NonFiniteError`.

    Attributes:
        counts: ``{key: number of non-finite values}`` for every affected tensor.
    """

    def __init__(
        self,
        message: str,
        counts: dict[str, int] | None = None,
        *,
        hint: str | None = None,
        cli_hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, cli_hint=cli_hint)
        self.counts = counts or {}


class NonFiniteDataError(CorruptFileError, NonFiniteError):
    """A dataset file holding NaN or infinite values (a log-mel pickle, a float WAV, a
    float image): a :class:`DataError` (``--skip-bad-clips`` skips it) and a
    :class:`NonFiniteError`. The message names the file."""


class EmptyAudioFileError(CorruptFileError):
    """An audio file without a single sample: 0 bytes, or a header without data."""


class AudioFileError(CorruptFileError, AudioError):
    """A dataset audio file that cannot give its clip's log-mel examples: not decodable
    as audio, or too short / too long for the clip. The message names the file."""


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


class Terminated(BaseException):
    """SIGTERM, raised as an exception by the command line so cleanup runs (exit 143).

    A ``BaseException``, like ``KeyboardInterrupt``: ``except Exception`` does not catch it.
    """
