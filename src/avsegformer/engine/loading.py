"""Data loading for training and evaluation: bad clips as one line, skipped on request.

A clip whose files cannot be read raises one of our errors in ``dataset[i]``, often in a
DataLoader worker process, where torch would re-raise it in the main process as a
multi-line "Caught CorruptFileError in DataLoader worker process 0 ... Original
Traceback" text. Here the error is caught where it happens (:class:`GuardedDataset`,
:func:`guarded_collate`), travels to the main process as a :class:`ClipFailure` record,
and :class:`BadClipPolicy` either re-raises it as the original error type with its own
one-line message (naming the file) or, with ``skip_bad_clips``, drops the clip, counts
it and lists it at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from ..errors import AudioError, AVSegFormerError, DataError, NonFiniteError, VideoError

logger = logging.getLogger(__name__)

#: Errors of a clip's files: skippable with ``--skip-bad-clips``.
BAD_CLIP_ERRORS: tuple[type[AVSegFormerError], ...] = (
    DataError,
    NonFiniteError,
    AudioError,
    VideoError,
)

SKIP_HINT = "--skip-bad-clips skips such clips and lists them at the end"


@dataclass
class ClipFailure:
    """An error raised while loading clip ``index`` (picklable: crosses worker processes)."""

    index: int
    video_id: str
    error_type: type[AVSegFormerError]
    message: str
    hint: str | None
    cli_hint: str | None

    @classmethod
    def of(cls, index: int, video_id: str, exc: AVSegFormerError) -> ClipFailure:
        return cls(index, video_id, type(exc), exc.message, exc.hint, exc.cli_hint)

    @property
    def skippable(self) -> bool:
        return issubclass(self.error_type, BAD_CLIP_ERRORS)

    def reason(self) -> str:
        """The error's first line (command-line wording)."""
        return self.rebuild().cli_text().partition("\n")[0]

    def rebuild(self, *, suggest_skip: bool = False) -> AVSegFormerError:
        """The original error again (type and message), optionally suggesting the skip."""
        cli_hint = self.cli_hint or self.hint
        if suggest_skip:
            cli_hint = f"{cli_hint}; or {SKIP_HINT}" if cli_hint else SKIP_HINT
        try:
            return self.error_type(self.message, hint=self.hint, cli_hint=cli_hint)
        except TypeError:  # a subclass with another signature
            return DataError(self.message, hint=self.hint, cli_hint=cli_hint)


class GuardedDataset(Dataset):
    """``dataset[i]``, or a :class:`ClipFailure` when loading clip ``i`` raises one of ours.

    ``video_id(i)`` names clip ``i`` in the list of skipped clips.
    """

    def __init__(self, dataset: Dataset, video_id: Callable[[int], str]) -> None:
        self.dataset = dataset
        self.video_id = video_id

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except AVSegFormerError as exc:
            return ClipFailure.of(index, self.video_id(index), exc)


def video_id_of(dataset: Any) -> Callable[[int], str]:
    """Names clips by their reader's ``entries[i].video_id`` (``#i`` otherwise)."""

    def name(index: int) -> str:
        entries = getattr(dataset, "entries", None)
        try:
            return str(entries[index].video_id)  # type: ignore[index]
        except (TypeError, IndexError, AttributeError):
            return f"#{index}"

    return name


@dataclass
class GuardedBatch:
    """What a guarded loader yields: the collated good clips (``None``: none) and the
    failures of the others."""

    batch: Any
    failures: list[ClipFailure] = field(default_factory=list)


def guarded_collate(collate: Callable[[list[Any]], Any]) -> Callable[[list[Any]], GuardedBatch]:
    """``collate`` over the items that loaded, the failures set aside (picklable)."""
    return _GuardedCollate(collate)


class _GuardedCollate:
    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, items: list[Any]) -> GuardedBatch:
        failures = [item for item in items if isinstance(item, ClipFailure)]
        good = [item for item in items if not isinstance(item, ClipFailure)]
        if not good:
            return GuardedBatch(None, failures)
        try:
            return GuardedBatch(self.collate(good), failures)
        except AVSegFormerError as exc:
            # A batch-level problem (clips of different shapes): never skippable.
            return GuardedBatch(None, [*failures, ClipFailure.of(-1, "(batch)", exc)])


@dataclass
class SkippedClip:
    """A clip left out by ``skip_bad_clips`` (``times``: how often it was met)."""

    video_id: str
    reason: str
    times: int = 1


class BadClipPolicy:
    """Stop at the first bad clip (its original error, one line) or skip and record it."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.skipped: dict[str, SkippedClip] = {}

    def accept(self, guarded: GuardedBatch) -> Any:
        """The batch of the clips that loaded (``None`` if none did); raises the first
        failure unless it is skippable and skipping is on."""
        for failure in guarded.failures:
            if not (self.skip and failure.skippable):
                raise failure.rebuild(suggest_skip=failure.skippable and not self.skip)
            record = self.skipped.get(failure.video_id)
            if record is None:
                self.skipped[failure.video_id] = SkippedClip(failure.video_id, failure.reason())
                logger.warning("skipped clip %s: %s", failure.video_id, failure.reason())
            else:
                record.times += 1
        return guarded.batch

    def records(self) -> list[dict[str, Any]]:
        return [vars(r).copy() for r in self.skipped.values()]


def merge_skipped(per_process: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One list of skipped clips from every process's :meth:`BadClipPolicy.records`."""
    merged: dict[str, dict[str, Any]] = {}
    for records in per_process:
        for record in records:
            if record["video_id"] in merged:
                merged[record["video_id"]]["times"] += record["times"]
            else:
                merged[record["video_id"]] = dict(record)
    return list(merged.values())


def report_skipped(skipped: list[dict[str, Any]], what: str) -> None:
    """Log the list of skipped clips (the end of a run)."""
    if not skipped:
        return
    logger.warning("%d clip%s skipped in %s (--skip-bad-clips):", len(skipped),
                   "s" if len(skipped) != 1 else "", what)  # fmt: skip
    for record in skipped:
        logger.warning("  %s: %s", record["video_id"], record["reason"])
