"""Check an AVSBench dataset root: what is there, what is missing, what cannot be read.

:func:`check_dataset` walks every split's clips as the readers would load them (same
file locations, see :mod:`avsegformer.data.avsbench`) and counts frames, masks and audio
found against what the layout requires, and the metadata file's bad rows (unknown
split, clips listed twice). With ``deep=True`` it also decodes the files of every
complete clip with the readers' own decoders (images, masks and their colours, frame and
mask sizes, log-mel pickles and their values, WAVs, audio length).
The ``avsegformer data-check`` command prints its :class:`DatasetReport`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import AVSegFormerError
from ..progress import progress_bar
from ..tasks import Task, get_task
from .avsbench import (
    SPLITS,
    AVSBenchDataset,
    VideoEntry,
    VideoFiles,
    _check_split,
    check_audio_file,
    parse_metadata_file,
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
    dataset root; unreadable entries carry the reason: undecodable files, NaN or
    infinite values, frames or masks of the wrong size, audio that does not fit the
    clip), the ``*_count`` fields all of them. ``irregular_masks``: masks that decode but
    are not pure black/white or hold colours outside the AVSS palette (``deep`` only; an
    error), the first few listed in ``irregular_mask_files`` with their pixel counts.
    ``frame_sizes``: clips per frame size on disk, ``"WxH"`` (``deep`` only; S4/MS3 sizes
    other than the release's 224x224 are noted, not errors: the readers resize them).
    A split without a single clip in the metadata is not ok.
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
    irregular_mask_files: list[str] = field(default_factory=list)
    frame_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.videos > 0
            and self.missing_count == 0
            and self.unreadable_count == 0
            and self.irregular_masks == 0
        )


@dataclass
class DatasetReport:
    """Result of :func:`check_dataset`; ``ok`` is False when the metadata file has bad
    rows, a split lists no clip, or anything required is missing, unreadable or invalid.

    ``metadata``: the metadata CSV; ``metadata_problems``: its first few bad rows
    (unknown split, a clip listed twice, too few fields...; those rows are not checked
    further), ``metadata_problem_count`` all of them.
    """

    task: str
    root: str
    deep: bool
    splits: list[SplitReport]
    metadata: str = ""
    metadata_problems: list[str] = field(default_factory=list)
    metadata_problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.metadata_problem_count == 0 and all(s.ok for s in self.splits)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        for split, report in zip(data["splits"], self.splits, strict=True):
            split["ok"] = report.ok
        return data

    def format_text(self) -> str:
        """Human-readable report: the metadata's bad rows, one table row per split, then
        the problems of each split."""
        task = get_task(self.task)
        lines = [
            f"AVSBench {task.reader.layout.title} at {self.root}"
            + (" (deep check)" if self.deep else "")
        ]
        metadata = Path(self.metadata).name
        if self.metadata_problem_count:
            lines.append(
                f"{metadata}: {self.metadata_problem_count} bad rows (not checked further), e.g.:"
            )
            lines.extend(f"  {p}" for p in self.metadata_problems)
        lines.append(f"{'split':6s} {'videos':>7s} {'frames':>13s} {'masks':>13s} {'audio':>13s}")
        for s in self.splits:
            counts = [f"{c.found}/{c.expected}" for c in (s.frames, s.masks, s.audio)]
            row = f"{s.split:6s} {s.videos:7d} " + " ".join(f"{c:>13s}" for c in counts)
            if task.audio_files:
                row += f"  (pkl {s.log_mel_files}, wav {s.wav_files})"
            lines.append(row)
        for s in self.splits:
            if not s.videos:
                lines.append(
                    f"{s.split}: {metadata} lists no clip for this split (check only the "
                    "splits you have with --split)"
                )
            if s.missing_count:
                lines.append(f"{s.split}: {s.missing_count} missing, e.g.:")
                lines.extend(f"  {p}" for p in s.missing)
            if s.unreadable_count:
                lines.append(f"{s.split}: {s.unreadable_count} unreadable or invalid, e.g.:")
                lines.extend(f"  {p}" for p in s.unreadable)
            if s.irregular_masks:
                lines.append(f"{s.split}: {s.irregular_masks} {task.irregular_masks}, e.g.:")
                lines.extend(f"  {p}" for p in s.irregular_mask_files)
            release = task.release_frame_size
            other_sizes = {size: n for size, n in s.frame_sizes.items() if size != release}
            if release is not None and other_sizes:
                sizes = ", ".join(f"{size}: {n}" for size, n in sorted(other_sizes.items()))
                lines.append(
                    f"{s.split}: note: {sum(other_sizes.values())} clips have frames of another "
                    f"size than the release's {release} ({sizes}); not an error: "
                    "the readers resize frames and masks to img_size"
                )
        lines.append("OK" if self.ok else "PROBLEMS FOUND")
        return "\n".join(lines)


def check_dataset(
    root: str | Path,
    task: str | Task,
    splits: Sequence[str] | None = None,
    *,
    deep: bool = False,
    max_listed: int = 10,
    progress: bool = True,
) -> DatasetReport:
    """Walk ``root`` (task folder or its parent) and report per split what is found.

    ``splits``: default all three. The metadata CSV's bad rows (unknown split, a clip
    listed twice, too few fields, an unknown AVSS label) are reported and left out; a
    requested split without a clip is reported. ``deep``: also decode every file of each
    complete clip with the readers' decoders (clips with missing files are listed as
    missing): undecodable files, NaN/inf values, frames or masks of the wrong size,
    irregular masks. Raises :class:`~avsegformer.errors.MissingFileError` when no dataset
    is found at ``root`` (the message lists where it looked) and
    :class:`~avsegformer.errors.CorruptFileError` when the metadata file cannot be read
    at all (e.g. a required column is missing: the message names it and the columns found).
    """
    spec = get_task(task)
    layout = spec.reader.layout
    task_root = resolve_root(layout, root)
    metadata = parse_metadata_file(layout, task_root / layout.metadata_file)
    wanted = [_check_split(s) for s in splits] if splits else list(SPLITS)
    by_split = {split: [e for e in metadata.entries if e.split == split] for split in wanted}
    total = sum(len(v) for v in by_split.values())
    reports = []
    with progress_bar(total, f"checking {layout.title}", "video", enabled=progress) as bar:
        for split in wanted:
            report = SplitReport(split)
            reports.append(report)
            if not by_split[split]:
                continue
            dataset = _dataset_for_check(spec, task_root, split, by_split[split])
            for index in range(len(dataset)):
                _check_video(dataset, index, report, task_root, deep, max_listed)
                bar.update(1)
    return DatasetReport(
        task=spec.name,
        root=str(task_root),
        deep=deep,
        splits=reports,
        metadata=str(metadata.path),
        metadata_problems=metadata.problems[:max_listed],
        metadata_problem_count=len(metadata.problems),
    )


def _dataset_for_check(
    task: Task, root: Path, split: str, entries: list[VideoEntry]
) -> AVSBenchDataset:
    # Native size: a deep check decodes files, it should not spend time resizing them.
    # Other options stay the readers' defaults, so that what fails here fails in training.
    dataset = task.dataset(root, split, img_size=224, entries=entries)
    assert isinstance(dataset, AVSBenchDataset)
    dataset.irregular_mask_record = []  # listed in the report instead of logged
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
    record = dataset.irregular_mask_record
    assert record is not None
    record.clear()
    try:
        dataset[index]  # frames, masks, the audio the reader would use
    except AVSegFormerError as exc:
        problems.append(str(exc))
    for path, pixels in record:
        report.irregular_masks += 1
        if len(report.irregular_mask_files) < max_listed:
            report.irregular_mask_files.append(f"{_relative(path, root)}: {pixels} pixels")
    _count_frame_size(files, report)
    # The reader took the pkl: decode the WAV as well (only then, or a bad WAV the
    # reader used would be listed twice).
    took_pkl = files.log_mel is not None and files.log_mel.is_file()
    if took_pkl and files.wav is not None and files.wav.is_file():
        try:
            check_audio_file(files.wav)
        except AVSegFormerError as exc:
            problems.append(str(exc))
    for problem in problems:
        report.unreadable_count += 1
        if len(report.unreadable) < max_listed:
            report.unreadable.append(problem.replace(str(root) + "/", ""))


def _count_frame_size(files: VideoFiles, report: SplitReport) -> None:
    """Count the clip under its first frame's size on disk (a header read, no decoding)."""
    try:
        with Image.open(files.frames[0]) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError):
        return  # already reported by the reader
    size = f"{width}x{height}"
    report.frame_sizes[size] = report.frame_sizes.get(size, 0) + 1


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
