"""Check an AVSBench dataset root: what is there, what is missing, what cannot be read.

:func:`check_dataset` walks every split's clips as the readers would load them (same
file locations, see :mod:`avsegformer.data.avsbench`) and counts frames, masks and audio
found against what the layout requires. With ``deep=True`` it also decodes the files of
every complete clip with the readers' own decoders (images, masks and their colours,
log-mel pickles, WAVs, audio length).
The ``avsegformer data-check`` command prints its :class:`DatasetReport`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..audio import read_audio
from ..errors import AVSegFormerError
from ..progress import progress_bar
from .avsbench import (
    SPLITS,
    AVSBenchDataset,
    VideoFiles,
    _check_split,
    _check_task,
    build_dataset,
    read_metadata,
    resolve_root,
)

logger = logging.getLogger(__name__)


@dataclass
class FileCount:
    """``found`` of ``expected`` files."""

    found: int = 0
    expected: int = 0

    @property
    def complete(self) -> bool:
        return self.found == self.expected


@dataclass
class SplitReport:
    """What one split holds.

    ``audio`` counts clips with usable audio (S4/MS3: a ``.pkl`` or a ``.wav``; AVSS:
    ``audio.wav``); ``log_mel_files`` / ``wav_files`` count each kind found.
    ``missing`` / ``unreadable`` list the first few problems (paths relative to the
    dataset root; unreadable entries carry the reason), the ``*_count`` fields all of them.
    ``irregular_masks``: masks decoded but not pure black/white or with colours outside
    the AVSS palette (``deep`` only; a warning, not a failure).
    """

    split: str
    videos: int = 0
    frames: FileCount = field(default_factory=FileCount)
    masks: FileCount = field(default_factory=FileCount)
    audio: FileCount = field(default_factory=FileCount)
    log_mel_files: int = 0
    wav_files: int = 0
    missing: list[str] = field(default_factory=list)
    missing_count: int = 0
    unreadable: list[str] = field(default_factory=list)
    unreadable_count: int = 0
    irregular_masks: int = 0

    @property
    def ok(self) -> bool:
        return self.missing_count == 0 and self.unreadable_count == 0


@dataclass
class DatasetReport:
    """Result of :func:`check_dataset`; ``ok`` is False when anything required is missing
    or unreadable."""

    task: str
    root: str
    deep: bool
    splits: list[SplitReport]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.splits)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        for split, report in zip(data["splits"], self.splits, strict=True):
            split["ok"] = report.ok
        return data

    def format_text(self) -> str:
        """Human-readable report: one table row per split, then the problems."""
        lines = [
            f"AVSBench {self.task.upper()} at {self.root}" + (" (deep check)" if self.deep else "")
        ]
        lines.append(f"{'split':6s} {'videos':>7s} {'frames':>13s} {'masks':>13s} {'audio':>13s}")
        for s in self.splits:
            counts = [f"{c.found}/{c.expected}" for c in (s.frames, s.masks, s.audio)]
            row = f"{s.split:6s} {s.videos:7d} " + " ".join(f"{c:>13s}" for c in counts)
            if self.task != "avss":
                row += f"  (pkl {s.log_mel_files}, wav {s.wav_files})"
            lines.append(row)
        for s in self.splits:
            if s.missing_count:
                lines.append(f"{s.split}: {s.missing_count} missing, e.g.:")
                lines.extend(f"  {p}" for p in s.missing)
            if s.unreadable_count:
                lines.append(f"{s.split}: {s.unreadable_count} unreadable, e.g.:")
                lines.extend(f"  {p}" for p in s.unreadable)
            if s.irregular_masks:
                lines.append(
                    f"{s.split}: warning: {s.irregular_masks} masks with unexpected values "
                    "(decoded like the original loader; see the log)"
                )
        lines.append("OK" if self.ok else "PROBLEMS FOUND")
        return "\n".join(lines)


def check_dataset(
    root: str | Path,
    task: str,
    splits: Sequence[str] | None = None,
    *,
    deep: bool = False,
    max_listed: int = 10,
    progress: bool = True,
) -> DatasetReport:
    """Walk ``root`` (task folder or its parent) and report per split what is found.

    ``splits``: default all three. ``deep``: also decode every file of each complete
    clip with the readers' decoders (clips with missing files are listed as missing). Raises
    :class:`~avsegformer.errors.MissingFileError` when no dataset is found at ``root``
    (the message lists where it looked) and the metadata errors of the readers.
    """
    task = _check_task(task)
    task_root = resolve_root(task, root)
    entries = read_metadata(task, task_root)
    wanted = [_check_split(s) for s in splits] if splits else list(SPLITS)
    by_split = {split: [e for e in entries if e.split == split] for split in wanted}
    total = sum(len(v) for v in by_split.values())
    reports = []
    with progress_bar(total, f"checking {task.upper()}", "video", enabled=progress) as bar:
        for split in wanted:
            report = SplitReport(split)
            reports.append(report)
            if not by_split[split]:
                continue
            dataset = _dataset_for_check(task, task_root, split)
            for index in range(len(dataset)):
                _check_video(dataset, index, report, task_root, deep, max_listed)
                bar.update(1)
    return DatasetReport(task=task, root=str(task_root), deep=deep, splits=reports)


def _dataset_for_check(task: str, root: Path, split: str) -> AVSBenchDataset:
    # Native size: a deep check decodes files, it should not spend time resizing them.
    # Other options stay the readers' defaults, so that what fails here fails in training.
    dataset = build_dataset(task, root, split, img_size=224)
    assert isinstance(dataset, AVSBenchDataset)
    return dataset


def _check_video(
    dataset: AVSBenchDataset,
    index: int,
    report: SplitReport,
    root: Path,
    deep: bool,
    max_listed: int,
) -> None:
    files: VideoFiles = dataset.video_files(index)
    report.videos += 1
    missing = []
    for kind, paths in (("frames", files.frames), ("masks", list(files.masks.values()))):
        count: FileCount = getattr(report, kind)
        count.expected += len(paths)
        for path in paths:
            if path.is_file():
                count.found += 1
            else:
                missing.append(path)
    present_audio = [p for p in files.audio_files() if p.is_file()]
    report.log_mel_files += int(files.log_mel is not None and files.log_mel in present_audio)
    report.wav_files += int(files.wav is not None and files.wav in present_audio)
    report.audio.expected += 1
    missing_names = [_relative(path, root) for path in missing]
    if present_audio:
        report.audio.found += 1
    else:
        missing_names.append(" or ".join(_relative(p, root) for p in files.audio_files()))
    for name in missing_names:
        report.missing_count += 1
        if len(report.missing) < max_listed:
            report.missing.append(name)
    if deep and not missing_names:
        _decode_video(dataset, index, files, report, root, max_listed)


def _decode_video(
    dataset: AVSBenchDataset,
    index: int,
    files: VideoFiles,
    report: SplitReport,
    root: Path,
    max_listed: int,
) -> None:
    problems = []
    before = dataset.stats["irregular_masks"]
    try:
        dataset[index]  # frames, masks, the audio the reader would use
    except AVSegFormerError as exc:
        problems.append(str(exc))
    report.irregular_masks += dataset.stats["irregular_masks"] - before
    # The reader takes the pkl when both exist: decode the WAV as well.
    if files.log_mel is not None and files.wav is not None and files.wav.is_file():
        try:
            read_audio(files.wav)
        except AVSegFormerError as exc:
            problems.append(str(exc))
    for problem in problems:
        report.unreadable_count += 1
        if len(report.unreadable) < max_listed:
            report.unreadable.append(problem.replace(str(root) + "/", ""))


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
