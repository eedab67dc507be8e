"""AVSBench readers: S4 (single source), MS3 (multiple sources) and AVSS (semantic).

Read from the official on-disk layouts (``shared/spec/avsbench-data.md`` §2-§6); a root
directory is all a user gives: the task folder itself (``Single-source/``,
``Multi-sources/``, the AVSS folder with ``metadata.csv``) or its parent (AVSegFormer's
``data/``). Every item is an :class:`AVSample`; :func:`collate` stacks them into an
:class:`AVBatch`.

What each task yields (T frames per clip):

======  ==  =============================  ==========================================
task    T   masks                          flags
======  ==  =============================  ==========================================
S4      5   float {0,1} ``[5,1,H,W]``;     ``gt_flags`` train ``[1,0,0,0,0]`` (only the
            train: frame 1 only, rest 0    first frame is annotated), val/test ones
MS3     5   float {0,1} ``[5,1,H,W]``      ones
AVSS    10  int64 ``[10,H,W]`` in [0,70];  official ``vid_temporal_mask_flag`` /
            padded frames are 0            ``gt_temporal_mask_flag`` (v1s ``[1,0,...]``)
======  ==  =============================  ==========================================

Image size: S4/MS3 frames are 224x224 on disk; AVSegFormer resizes them (PIL bilinear,
masks nearest) to 512x512, and its published S4/MS3 numbers were computed at 512
although its configs say 224. ``img_size=512`` is therefore the default and
``img_size=224`` gives the native size (AVSBench's own models). AVSS uses 224: the train
split resizes the short side to 224 and centre-crops, val/test resize to 224x224.

Audio: S4/MS3 read the pre-computed ``audio_log_mel/*.pkl`` with the safe unpickler
(``audio_source="pkl"``), or compute the same examples from ``audio_wav/*.wav``
(``"wav"``, fitted to 5 with the ``"repeat_last"`` policy like AVSBench's
preprocessing); ``"auto"`` (default) takes the pkl when present. AVSS computes the
log-mel of ``audio.wav`` at load time, fitted to 10 with the ``"reference"`` policy (0.0
rows, as the published numbers used); ``audio_policy="silence"`` is the correct choice
for new work (see :mod:`avsegformer.audio`).

Bad data is refused where it enters, each time with a one-line :class:`DataError`
naming the file (what a training run's ``--skip-bad-clips`` catches): a metadata file
without a required column or with bad rows (unknown split, a clip listed twice), log-mels
or float WAVs/images with NaN or inf (``NonFiniteDataError``), empty or undecodable audio
(``EmptyAudioFileError``, ``AudioFileError``), frames of one clip with different sizes,
and masks of another size than their frame. Frames of any one size are resized (above);
masks that are not pure black/white or hold off-palette colours are decoded like the
original and counted (``strict_masks=True`` refuses them; ``data-check`` reports them).
"""

from __future__ import annotations

import csv
import inspect
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch.utils.data import Dataset

from ..audio import CLIP_POLICIES, ClipPolicy
from ..errors import (
    AudioError,
    AudioFileError,
    CorruptFileError,
    DataError,
    MissingFileError,
    NoAudioStreamError,
    VideoError,
)
from ..modeling.audio_frontend import VGGISH_LOG_MEL, AudioFrontEnd
from .audio_files import examples_from_file, read_audio
from .classes import AVSS_CLASSES, NUM_AVSS_CLASSES
from .images import (
    BinaryMaskRule,
    Geometry,
    MaskDecoding,
    PixelNorm,
    check_mask_size,
    load_binary_mask,
    load_clip_frames,
    load_color_mask,
)
from .safe_pickle import load_logmel_pkl

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
AVSS_SUBSETS: tuple[str, ...] = ("v1s", "v1m", "v2")
AVSS_CLIP_FRAMES = 10
AVSS_SUBSET_FRAMES: dict[str, int] = {"v1s": 5, "v1m": 5, "v2": 10}
OBJECT_CLIP_FRAMES = 5  # S4 / MS3

AudioSource = Literal["auto", "pkl", "wav"]
GtFlagRule = Literal["official", "annotated"]

# How many irregular masks a dataset logs as warnings before going quiet.
_MAX_MASK_WARNINGS = 10


# --------------------------------------------------------------------------- records
@dataclass
class AVSample:
    """One clip as the model consumes it.

    ``frames``: float32 ``[T, 3, H, W]``, ``pixel_norm``-normalised; padded frames (AVSS v1)
    are all zero. ``audio``: float32 ``[T, 1, 96, 64]`` VGGish log-mel examples, one per
    frame. ``masks``: S4/MS3 float32 ``[T, 1, H, W]`` in {0, 1} (zero where a frame has
    no annotation); AVSS int64 ``[T, H, W]`` class indices in [0, 70] (0 = background,
    also for padded frames). ``gt_flags``: float32 ``[T]`` in {0, 1}, 1 where the frame's
    mask enters the training loss. ``vid_flags``: float32 ``[T]``, 1 for real frames, 0
    for padding. ``video_id``: S4/MS3 name or AVSS ``uid``. ``category``: S4 category
    (empty otherwise); ``subset``: AVSS ``v1s``/``v1m``/``v2`` (empty otherwise);
    ``objects``: AVSS ``a_obj`` labels. ``audio_path``: the file the audio came from.
    """

    frames: torch.Tensor
    audio: torch.Tensor
    masks: torch.Tensor
    gt_flags: torch.Tensor
    vid_flags: torch.Tensor
    video_id: str
    task: str
    split: str
    category: str = ""
    subset: str = ""
    objects: tuple[str, ...] = ()
    audio_path: str = ""


@dataclass
class AVBatch:
    """A batch of :class:`AVSample` (``B`` clips), tensors stacked on a new first axis.

    ``frames`` ``[B, T, 3, H, W]``, ``audio`` ``[B, T, 1, 96, 64]``, ``masks``
    ``[B, T, 1, H, W]`` (S4/MS3) or ``[B, T, H, W]`` (AVSS), ``gt_flags`` and
    ``vid_flags`` ``[B, T]``; the string fields are lists of length ``B``.
    """

    frames: torch.Tensor
    audio: torch.Tensor
    masks: torch.Tensor
    gt_flags: torch.Tensor
    vid_flags: torch.Tensor
    video_ids: list[str]
    task: str
    splits: list[str]
    categories: list[str] = field(default_factory=list)
    subsets: list[str] = field(default_factory=list)
    objects: list[tuple[str, ...]] = field(default_factory=list)
    audio_paths: list[str] = field(default_factory=list)

    _TENSORS: ClassVar[tuple[str, ...]] = ("frames", "audio", "masks", "gt_flags", "vid_flags")

    def __len__(self) -> int:
        return len(self.video_ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> AVBatch:
        """The same batch with every tensor moved to ``device``."""
        moved = {
            name: getattr(self, name).to(device, non_blocking=non_blocking)
            for name in self._TENSORS
        }
        return _replace_tensors(self, moved)

    def pin_memory(self) -> AVBatch:
        """Pinned-memory copy (called by ``DataLoader(pin_memory=True)``)."""
        return _replace_tensors(self, {n: getattr(self, n).pin_memory() for n in self._TENSORS})


def _replace_tensors(batch: AVBatch, tensors: dict[str, torch.Tensor]) -> AVBatch:
    values = {f.name: getattr(batch, f.name) for f in fields(batch)}
    values.update(tensors)
    return AVBatch(**values)


def collate(samples: Sequence[AVSample]) -> AVBatch:
    """Stack samples of one task into an :class:`AVBatch` (``collate_fn`` of a DataLoader)."""
    if not samples:
        raise DataError("cannot collate an empty list of samples")
    tasks = {s.task for s in samples}
    if len(tasks) != 1:
        raise DataError(f"cannot batch samples of different tasks: {sorted(tasks)}")
    shapes = {(tuple(s.frames.shape), tuple(s.masks.shape)) for s in samples}
    if len(shapes) != 1:
        raise DataError(
            "cannot batch clips of different shapes (frames, masks): "
            f"{sorted(shapes)}; use one image size per dataset"
        )
    return AVBatch(
        frames=torch.stack([s.frames for s in samples]),
        audio=torch.stack([s.audio for s in samples]),
        masks=torch.stack([s.masks for s in samples]),
        gt_flags=torch.stack([s.gt_flags for s in samples]),
        vid_flags=torch.stack([s.vid_flags for s in samples]),
        video_ids=[s.video_id for s in samples],
        task=samples[0].task,
        splits=[s.split for s in samples],
        categories=[s.category for s in samples],
        subsets=[s.subset for s in samples],
        objects=[s.objects for s in samples],
        audio_paths=[s.audio_path for s in samples],
    )


# -------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class VideoEntry:
    """One row of a metadata CSV.

    ``video_id``: S4/MS3 ``name`` or AVSS ``uid`` (the folder name). ``category``: S4
    only. AVSS only: ``subset`` (``label`` column: v1s / v1m / v2), ``youtube_id``
    (``vid``) and ``objects`` (``a_obj`` split on ``_``).
    """

    video_id: str
    split: str
    category: str = ""
    subset: str = ""
    youtube_id: str = ""
    objects: tuple[str, ...] = ()


def _read_csv_rows(csv_path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except FileNotFoundError:
        raise MissingFileError(f"metadata file not found: {csv_path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CorruptFileError(f"cannot read metadata file {csv_path}: {exc}") from None
    if not rows:
        raise CorruptFileError(f"metadata file {csv_path} is empty (expected a header row)")
    return [name.strip() for name in rows[0]], rows[1:]


def _columns(header: list[str], names: Sequence[str], csv_path: Path) -> dict[str, int]:
    """Position of each required column; one error naming every missing one."""
    missing = [name for name in names if name not in header]
    if missing:
        listed = " and ".join(repr(name) for name in missing)
        raise CorruptFileError(
            f"metadata file {csv_path} has no column {listed} (columns found: "
            f"{', '.join(header) or 'none'}; needed: {', '.join(names)}); restore the header "
            "row of the release's file"
        )
    return {name: header.index(name) for name in names}


@dataclass
class Metadata:
    """A metadata CSV read leniently: the usable rows and what is wrong with the others.

    ``entries``: every well-formed row with a known split, in file order, each clip once
    (a repeated clip is kept where it first appears). ``problems``: one line per bad row
    (``"line 7: ..."``): too few fields, an empty name, an unknown split or AVSS label, a
    clip listed again. The readers refuse a file with problems
    (:meth:`raise_problems`); ``data-check`` lists them all.
    """

    path: Path
    entries: list[VideoEntry]
    problems: list[str]

    def raise_problems(self) -> None:
        """Raise :class:`CorruptFileError` (first problem, count) if there are any."""
        if not self.problems:
            return
        more = len(self.problems) - 1
        raise CorruptFileError(
            f"metadata file {self.path}, {self.problems[0]}"
            + (f" (and {more} more bad row{'s' if more > 1 else ''})" if more else ""),
            hint="fix the file; avsegformer.data.check_dataset lists every bad row",
            cli_hint="fix the file; `avsegformer data-check` lists every bad row",
        )


def _parse_rows(
    csv_path: Path,
    columns: Sequence[str],
    make: Any,
    *,
    name_column: str | None = None,
    key: Any = None,
) -> Metadata:
    """Rows of ``csv_path`` -> :class:`Metadata`. ``make(row, cols)`` builds a
    :class:`VideoEntry` or returns a problem string; ``name_column`` is read by name
    (else column 0, as the official S4/MS3 loaders do); ``key`` identifies a clip
    (default its ``video_id``) to find clips listed twice."""
    header, rows = _read_csv_rows(csv_path)
    cols = _columns(header, columns, csv_path)
    cols["name"] = cols[name_column] if name_column else 0
    width = max(cols.values()) + 1
    entries: list[VideoEntry] = []
    problems: list[str] = []
    first_line: dict[Any, int] = {}
    for line, row in enumerate(rows, start=2):
        if len(row) < width:
            problems.append(f"line {line}: {len(row)} fields, expected {width}")
            continue
        made = make(row, cols)
        if isinstance(made, str):
            problems.append(f"line {line}: {made}")
            continue
        if not made.video_id:
            problems.append(f"line {line}: the video name is empty")
            continue
        if made.split not in SPLITS:
            # The official loaders filter on the exact split name: such a row would
            # silently belong to no split.
            problems.append(
                f"line {line}: split {made.split!r} of {made.video_id!r} is not one of "
                f"{', '.join(SPLITS)}"
            )
            continue
        clip = key(made) if key else made.video_id
        if clip in first_line:
            problems.append(
                f"line {line}: {made.video_id!r} is listed again (first on line "
                f"{first_line[clip]}); each clip must appear once"
            )
            continue
        first_line[clip] = line
        entries.append(made)
    return Metadata(csv_path, entries, problems)


def _s4_row(row: list[str], cols: dict[str, int]) -> VideoEntry | str:
    category = row[cols["category"]].strip()
    if not category:
        return "the category is empty (it names the clip's folder)"
    return VideoEntry(row[cols["name"]].strip(), row[cols["split"]].strip(), category=category)


def _ms3_row(row: list[str], cols: dict[str, int]) -> VideoEntry:
    return VideoEntry(row[cols["name"]].strip(), row[cols["split"]].strip())


def _avss_row(row: list[str], cols: dict[str, int]) -> VideoEntry | str:
    subset = row[cols["label"]].strip()
    if subset not in AVSS_SUBSETS:
        return f"label {subset!r} is not one of {', '.join(AVSS_SUBSETS)}"
    return VideoEntry(
        video_id=row[cols["uid"]].strip(),
        split=row[cols["split"]].strip(),
        subset=subset,
        youtube_id=row[cols["vid"]].strip(),
        objects=tuple(o for o in row[cols["a_obj"]].strip().split("_") if o),
    )


@dataclass(frozen=True)
class DatasetLayout:
    """Where a task's files sit and how its metadata CSV reads (one per reader).

    ``title``: the task's short name in messages (``"S4"``). ``folders``: names the task
    folder may have inside a parent directory. ``metadata_file``: the CSV that marks the
    task folder. ``columns``: the CSV columns read by name; ``make_entry(row, cols)``
    builds a :class:`VideoEntry` or returns a problem string; ``name_column``: the
    column holding the clip name (``None``: column 0, as the official S4/MS3 loaders);
    ``key``: what identifies a clip (default its ``video_id``), to find clips listed twice.
    """

    title: str
    folders: tuple[str, ...]
    metadata_file: str
    columns: tuple[str, ...]
    make_entry: Callable[[list[str], dict[str, int]], VideoEntry | str]
    name_column: str | None = None
    key: Callable[[VideoEntry], Any] | None = None


def parse_metadata_file(layout: DatasetLayout, csv_path: str | Path) -> Metadata:
    """Read the metadata CSV of ``layout`` leniently: :class:`Metadata` with the usable
    rows and a line per bad row (nothing raised for bad rows).

    Raises :class:`MissingFileError` / :class:`CorruptFileError` when the file cannot be
    read at all: missing, not text, no header, or a required column missing (S4:
    ``split`` and ``category`` by name, the video name in column 0; MS3: ``split``, name
    in column 0; AVSS: ``vid, uid, a_obj, split, label``).
    """
    return _parse_rows(
        Path(csv_path),
        layout.columns,
        layout.make_entry,
        name_column=layout.name_column,
        key=layout.key,
    )


# The official loader reads the S4 category by position (column 2): a file without the
# column would send every path to a wrong folder, so it is found by name.
S4_LAYOUT = DatasetLayout(
    "S4", ("Single-source",), "s4_meta_data.csv", ("category", "split"), _s4_row
)
MS3_LAYOUT = DatasetLayout("MS3", ("Multi-sources",), "ms3_meta_data.csv", ("split",), _ms3_row)
AVSS_LAYOUT = DatasetLayout(
    "AVSS",
    ("AVSS", "avss", "avs_released"),
    "metadata.csv",
    ("vid", "uid", "a_obj", "split", "label"),
    _avss_row,
    name_column="uid",
    key=lambda e: (e.subset, e.video_id),  # folders are <subset>/<uid>
)


def read_s4_metadata(csv_path: str | Path) -> list[VideoEntry]:
    """Rows of ``s4_meta_data.csv`` in file order.

    The name is column 0 as in the official loader; ``category`` and ``split`` are found
    by their column names. Raises :class:`CorruptFileError` for a missing column or a bad
    row (unknown split, a clip listed twice, too few fields); see :func:`parse_metadata_file`.
    """
    return _strict(parse_metadata_file(S4_LAYOUT, csv_path))


def read_ms3_metadata(csv_path: str | Path) -> list[VideoEntry]:
    """Rows of ``ms3_meta_data.csv`` in file order (column 0 name, column ``split``).

    Raises as :func:`read_s4_metadata`.
    """
    return _strict(parse_metadata_file(MS3_LAYOUT, csv_path))


def read_avss_metadata(csv_path: str | Path) -> list[VideoEntry]:
    """Rows of AVSS ``metadata.csv`` (``vid,uid,s_min,s_sec,a_obj,split,label``), file order.

    Raises as :func:`read_s4_metadata` (also for a ``label`` other than v1s, v1m, v2).
    """
    return _strict(parse_metadata_file(AVSS_LAYOUT, csv_path))


def _strict(metadata: Metadata) -> list[VideoEntry]:
    metadata.raise_problems()
    return metadata.entries


def resolve_root(layout: DatasetLayout, root: str | Path) -> Path:
    """The task folder for ``root``: ``root`` itself or the task's folder inside it.

    Recognised by the metadata file (``s4_meta_data.csv``, ``ms3_meta_data.csv``,
    ``metadata.csv``). Raises :class:`MissingFileError` listing every place looked at.
    """
    root = Path(root).expanduser()
    marker = layout.metadata_file
    candidates = [root] + [root / folder for folder in layout.folders]
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    looked = ", ".join(str(c / marker) for c in candidates)
    if not root.exists():
        raise MissingFileError(f"dataset root {root} does not exist (looked for {looked})")
    raise MissingFileError(
        f"no {layout.title} dataset found at {root}: looked for {looked}; pass the folder "
        f"that holds {marker} or its parent"
    )


def read_metadata(layout: DatasetLayout, root: str | Path) -> list[VideoEntry]:
    """All metadata rows of ``layout`` under ``root`` (any split), in file order."""
    return _strict(parse_metadata_file(layout, resolve_root(layout, root) / layout.metadata_file))


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return split


# ---------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class VideoFiles:
    """Where one clip's files are and how its ``T`` frame slots are filled.

    ``frames``: the real frames in time order (``len <= num_frames``; the rest is
    padding). ``masks``: frame slot -> mask file, for the annotated frames that are
    read. ``log_mel`` / ``wav``: candidate audio files (either may be absent on disk).
    ``vid_flags`` / ``gt_flags``: ``num_frames`` values in {0, 1}.
    """

    frames: tuple[Path, ...]
    masks: dict[int, Path]
    log_mel: Path | None
    wav: Path | None
    num_frames: int
    vid_flags: tuple[float, ...]
    gt_flags: tuple[float, ...]

    def audio_files(self) -> list[Path]:
        """The candidate audio files (one of them must exist)."""
        return [p for p in (self.log_mel, self.wav) if p is not None]


# ----------------------------------------------------------------------------- audio
def read_wav_examples(
    path: Path,
    num_examples: int,
    policy: ClipPolicy,
    front_end: AudioFrontEnd = VGGISH_LOG_MEL,
) -> torch.Tensor:
    """The model's audio examples ``[num_examples, *front_end.example_shape]`` of a
    dataset audio file (VGGish log-mel: ``[num_examples, 1, 96, 64]``).

    :func:`avsegformer.data.audio_files.examples_from_file`, with every failure raised as a
    :class:`DataError` naming ``path`` (what a training run can skip as one bad clip):
    :class:`AudioFileError` for audio that is not decodable or does not fit the clip,
    and ``read_audio``'s own :class:`MissingFileError`, ``EmptyAudioFileError`` and
    ``NonFiniteDataError``.
    """
    with _audio_file_errors(path):
        return examples_from_file(front_end, path, num_examples=num_examples, policy=policy)


def check_audio_file(path: Path) -> None:
    """Decode a dataset audio file (no log-mels); raise as :func:`read_wav_examples`."""
    with _audio_file_errors(path):
        read_audio(path)


@contextmanager
def _audio_file_errors(path: Path) -> Iterator[None]:
    """Raise the audio pipeline's AudioError / VideoError for a dataset file as
    :class:`AudioFileError` (a :class:`DataError`), in the words of audio files."""
    try:
        yield
    except DataError:
        raise
    except NoAudioStreamError:
        raise AudioFileError(f"{path}: the file holds no audio stream; re-extract it") from None
    except VideoError:
        # Raised by the PyAV fallback, which speaks of videos: this is an audio file.
        raise AudioFileError(
            f"{path}: not a readable audio file (truncated, or not audio at all); re-extract it"
        ) from None
    except AudioError as exc:
        text = str(exc)
        raise AudioFileError(text if str(path) in text else f"{path}: {text}") from None


# --------------------------------------------------------------------------- datasets
class AVSBenchDataset(Dataset):
    """Common machinery of the three readers (metadata, flags, audio, statistics)."""

    task: ClassVar[str] = ""
    layout: ClassVar[DatasetLayout]

    # When a list, masks with irregular pixels are recorded here as (path, pixels) instead
    # of being logged: data-check lists them with its report.
    irregular_mask_record: list[tuple[Path, int]] | None = None

    @classmethod
    def build(cls, root: str | Path, split: str = "train", **options: Any) -> AVSBenchDataset:
        """The reader for ``split`` under ``root``; an unknown option is a clear error."""
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "root", "split"}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise DataError(
                f"{cls.__name__} has no option {', '.join(unknown)}; "
                f"options: {', '.join(sorted(accepted))}"
            )
        return cls(root, split, **options)

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        img_size: int,
        audio_policy: ClipPolicy,
        entries: Sequence[VideoEntry] | None = None,
        audio_front_end: AudioFrontEnd = VGGISH_LOG_MEL,
        pixel_norm: PixelNorm | None = None,
    ) -> None:
        self.split = _check_split(split)
        # The model's backbone declares them (PixelNorm.for_model); ImageNet's by default.
        self.pixel_norm = pixel_norm or PixelNorm()
        if audio_policy not in CLIP_POLICIES:
            raise DataError(
                f"unknown audio_policy {audio_policy!r}; use one of {', '.join(CLIP_POLICIES)}"
            )
        self.audio_policy = audio_policy
        #: What the model's audio encoder takes: audio files are converted with it.
        self.audio_front_end = audio_front_end
        self.root = resolve_root(self.layout, root)
        self.img_size = int(img_size)
        if self.img_size < 1:
            raise DataError(f"img_size must be positive, got {img_size}")
        if entries is None:
            entries = _strict(parse_metadata_file(self.layout, self.metadata_path))
        self.entries: list[VideoEntry] = [e for e in entries if e.split == self.split]
        # Per process: with DataLoader workers each worker keeps its own counts.
        self.stats: Counter[str] = Counter()

    @property
    def metadata_path(self) -> Path:
        return self.root / self.layout.metadata_file

    def __len__(self) -> int:
        return len(self.entries)

    def _require_entries(self) -> None:
        if not self.entries:
            raise DataError(
                f"{self.metadata_path} lists no {self.layout.title} video for split "
                f"{self.split!r}{self._filter_note()}"
            )

    def _filter_note(self) -> str:
        return ""

    def video_files(self, index: int) -> VideoFiles:
        """File locations and frame flags of clip ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> AVSample:
        raise NotImplementedError

    def _read_wav(self, path: Path, num_examples: int) -> torch.Tensor:
        """The audio examples of a WAV file, made by this dataset's front end."""
        return read_wav_examples(path, num_examples, self.audio_policy, self.audio_front_end)

    def load_audio(self, index: int) -> torch.Tensor:
        """Only the audio of clip ``index``: float32 ``[T, 1, 96, 64]`` (no frame decoding)."""
        return self._load_audio(self.video_files(index))[0]

    def _load_audio(self, files: VideoFiles) -> tuple[torch.Tensor, Path]:
        raise NotImplementedError

    def _note_irregular_mask(self, path: Path, decoded: MaskDecoding, what: str) -> None:
        if not decoded.irregular_pixels:
            return
        self.stats["irregular_masks"] += 1
        self.stats["irregular_pixels"] += decoded.irregular_pixels
        if self.irregular_mask_record is not None:
            self.irregular_mask_record.append((path, decoded.irregular_pixels))
            return
        if self.stats["irregular_masks"] <= _MAX_MASK_WARNINGS:
            logger.warning("%s: %d pixels %s", path, decoded.irregular_pixels, what)
            if self.stats["irregular_masks"] == _MAX_MASK_WARNINGS:
                logger.warning("further irregular masks are counted in dataset.stats only")


class _BinaryMaskDataset(AVSBenchDataset):
    """S4 / MS3: 5 PNG frames, binary masks, 5 log-mel examples."""

    mask_rule: ClassVar[BinaryMaskRule] = "threshold_1"
    _irregular_note: ClassVar[str] = ""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        img_size: int = 512,
        audio_source: AudioSource = "auto",
        audio_policy: ClipPolicy = "repeat_last",
        strict_masks: bool = False,
        skip_unlabelled_frames: bool = False,
        entries: Sequence[VideoEntry] | None = None,
        audio_front_end: AudioFrontEnd = VGGISH_LOG_MEL,
        pixel_norm: PixelNorm | None = None,
    ) -> None:
        super().__init__(
            root,
            split,
            img_size=img_size,
            audio_policy=audio_policy,
            entries=entries,
            audio_front_end=audio_front_end,
            pixel_norm=pixel_norm,
        )
        self.skip_unlabelled_frames = skip_unlabelled_frames
        if audio_source not in ("auto", "pkl", "wav"):
            raise DataError(f"audio_source must be auto, pkl or wav, got {audio_source!r}")
        if audio_source == "pkl" and audio_front_end != VGGISH_LOG_MEL:
            raise DataError(
                f"audio_source 'pkl' holds VGGish log-mel examples, but the audio encoder "
                f"takes {audio_front_end.name} ({audio_front_end.description}); "
                "use audio_source='wav'"
            )
        self.audio_source = audio_source
        self.strict_masks = strict_masks
        self.geometry = Geometry("resize", self.img_size)
        self._require_entries()

    def _annotated_slots(self) -> range:
        return range(OBJECT_CLIP_FRAMES)

    def video_files(self, index: int) -> VideoFiles:
        entry = self.entries[index]
        slots = self._annotated_slots()
        # File names count frames from 1; slots count from 0.
        return VideoFiles(
            frames=tuple(self.frame_path(entry, t + 1) for t in range(OBJECT_CLIP_FRAMES)),
            masks={t: self.mask_path(entry, t + 1) for t in slots},
            log_mel=self.log_mel_path(entry),
            wav=self.wav_path(entry),
            num_frames=OBJECT_CLIP_FRAMES,
            vid_flags=(1.0,) * OBJECT_CLIP_FRAMES,
            gt_flags=tuple(1.0 if t in slots else 0.0 for t in range(OBJECT_CLIP_FRAMES)),
        )

    def frame_path(self, entry: VideoEntry, t: int) -> Path:
        """Frame ``t`` (1-based) of ``entry``."""
        raise NotImplementedError

    def mask_path(self, entry: VideoEntry, t: int) -> Path:
        """Mask of frame ``t`` (1-based) of ``entry``."""
        raise NotImplementedError

    def log_mel_path(self, entry: VideoEntry) -> Path:
        raise NotImplementedError

    def wav_path(self, entry: VideoEntry) -> Path:
        raise NotImplementedError

    def __getitem__(self, index: int) -> AVSample:
        entry = self.entries[index]
        files = self.video_files(index)
        if self.skip_unlabelled_frames:
            # Training on labelled frames only (S4 train labels frame 1 of 5): the
            # others are never seen, so do not decode them; zeros keep the shapes.
            labelled = [t for t, flag in enumerate(files.gt_flags) if flag > 0]
            decoded_frames = [files.frames[t] for t in labelled]
            first, frame_size = load_clip_frames(decoded_frames, self.geometry, self.pixel_norm)
            frames = first.new_zeros((len(files.frames), *first.shape[1:]))
            frames[labelled] = first
        else:
            decoded_frames = list(files.frames)
            frames, frame_size = load_clip_frames(decoded_frames, self.geometry, self.pixel_norm)
        height, width = frames.shape[-2:]
        masks = torch.zeros((files.num_frames, 1, height, width), dtype=torch.float32)
        for slot, path in files.masks.items():
            decoded = load_binary_mask(path, self.mask_rule, self.geometry)
            frame = (
                files.frames[slot] if files.frames[slot] in decoded_frames else decoded_frames[0]
            )
            check_mask_size(path, decoded.source_size, frame, frame_size)
            self._check_mask(path, decoded)
            masks[slot, 0] = torch.from_numpy(decoded.values)
        audio, audio_path = self._load_audio(files)
        return AVSample(
            frames=frames,
            audio=audio,
            masks=masks,
            gt_flags=torch.tensor(files.gt_flags, dtype=torch.float32),
            vid_flags=torch.tensor(files.vid_flags, dtype=torch.float32),
            video_id=entry.video_id,
            task=self.task,
            split=self.split,
            category=entry.category,
            audio_path=str(audio_path),
        )

    def _check_mask(self, path: Path, decoded: MaskDecoding) -> None:
        if decoded.irregular_pixels and self.strict_masks:
            raise CorruptFileError(
                f"mask {path} is not pure black/white: {decoded.irregular_pixels} pixels have "
                "other values (strict_masks=True); fix the file or pass strict_masks=False to "
                "decode it as the original loader does"
            )
        self._note_irregular_mask(path, decoded, self._irregular_note)

    def _load_audio(self, files: VideoFiles) -> tuple[torch.Tensor, Path]:
        assert files.log_mel is not None and files.wav is not None
        # The .pkl files hold VGGish log-mels: another front end computes from the WAV.
        pkl_fits = self.audio_front_end == VGGISH_LOG_MEL
        use_pkl = self.audio_source == "pkl" or (
            self.audio_source == "auto" and pkl_fits and files.log_mel.is_file()
        )
        if use_pkl:
            expected = (files.num_frames, *self.audio_front_end.example_shape)
            return load_logmel_pkl(files.log_mel, expected), files.log_mel
        if self.audio_source == "auto" and not files.wav.is_file():
            raise MissingFileError(
                f"no audio for this clip: neither {files.log_mel} nor {files.wav} exists"
            )
        return self._read_wav(files.wav, files.num_frames), files.wav


class S4Dataset(_BinaryMaskDataset):
    """AVSBench S4 (``Single-source/``): 5 frames, one sounding object, 23 categories.

    Options: ``img_size`` (512 = AVSegFormer, default; 224 = native), ``audio_source``
    (``"auto"``/``"pkl"``/``"wav"``), ``audio_policy`` (for wav audio; default
    ``"repeat_last"`` = the pkl preprocessing), ``strict_masks`` (raise on masks that are
    not pure black/white instead of decoding them like PIL's ``convert('1')``),
    ``skip_unlabelled_frames`` (frames without a mask are left as zeros, not decoded:
    for training on labelled frames only), ``entries`` (the clips to read, e.g. from
    :func:`parse_metadata_file`; default: the metadata file's rows of ``split``),
    ``audio_front_end`` (what the model's audio encoder takes, e.g.
    ``audio_front_end(config)``; default VGGish log-mels; another front end reads the WAVs),
    ``pixel_norm`` (the frames' statistics, :meth:`PixelNorm.for_model` of the model's
    configuration; default ImageNet's). The train split has only the first frame
    annotated: masks 2-5 are zero and ``gt_flags`` is ``[1, 0, 0, 0, 0]``.
    """

    task = "s4"
    layout = S4_LAYOUT
    mask_rule = "threshold_1"
    _irregular_note = "are neither black nor white (decoded with PIL's dithered convert('1'))"

    def _annotated_slots(self) -> range:
        return range(1) if self.split == "train" else range(OBJECT_CLIP_FRAMES)

    def _folder(self, kind: str) -> Path:
        return self.root / "s4_data" / kind / self.split

    def frame_path(self, entry: VideoEntry, t: int) -> Path:
        name = entry.video_id
        return self._folder("visual_frames") / entry.category / name / f"{name}_{t}.png"

    def mask_path(self, entry: VideoEntry, t: int) -> Path:
        name = entry.video_id
        return self._folder("gt_masks") / entry.category / name / f"{name}_{t}.png"

    def log_mel_path(self, entry: VideoEntry) -> Path:
        return self._folder("audio_log_mel") / entry.category / f"{entry.video_id}.pkl"

    def wav_path(self, entry: VideoEntry) -> Path:
        return self._folder("audio_wav") / entry.category / f"{entry.video_id}.wav"


class MS3Dataset(_BinaryMaskDataset):
    """AVSBench MS3 (``Multi-sources/``): 5 frames, all annotated, several sources.

    Frames have no split level and keep ``.mp4`` in their names
    (``visual_frames/<name>/<name>.mp4_<t>.png``). Masks follow the original
    ``convert('P')`` rule (foreground = palette index != 0). Options as :class:`S4Dataset`.
    """

    task = "ms3"
    layout = MS3_LAYOUT
    mask_rule = "palette_index"
    _irregular_note = (
        "are neither black nor white (the original convert('P')/255 would not give {0, 1}; "
        "read as palette index != 0)"
    )

    def frame_path(self, entry: VideoEntry, t: int) -> Path:
        # No split level here, and the extracted frames keep the video's ".mp4".
        name = entry.video_id
        return self.root / "ms3_data" / "visual_frames" / name / f"{name}.mp4_{t}.png"

    def mask_path(self, entry: VideoEntry, t: int) -> Path:
        name = entry.video_id
        return self.root / "ms3_data" / "gt_masks" / self.split / name / f"{name}_{t}.png"

    def log_mel_path(self, entry: VideoEntry) -> Path:
        return self.root / "ms3_data" / "audio_log_mel" / self.split / f"{entry.video_id}.pkl"

    def wav_path(self, entry: VideoEntry) -> Path:
        return self.root / "ms3_data" / "audio_wav" / self.split / f"{entry.video_id}.wav"


class AVSSDataset(AVSBenchDataset):
    """AVSBench-semantic (AVSS): v1s/v1m clips of 5 frames and v2 clips of 10, 71 classes.

    Every clip is padded to 10 frames: padded frames are zero tensors (after
    normalisation), padded labels are 0, ``vid_flags`` marks the real frames. Train
    frames and masks are resized on the short side to ``img_size`` and centre-cropped;
    val/test are resized to ``img_size`` x ``img_size``. Masks are RGB palette PNGs
    (``labels_rgb``); colours outside the palette become 0 (as in the original) and are
    counted in ``stats`` (or raise with ``strict_masks=True``).

    Options: ``img_size`` (224), ``audio_policy`` (``"reference"``: 0.0 rows for missing
    seconds, as the published numbers used; ``"silence"`` is correct for new work),
    ``gt_flag_rule`` (``"official"``: v1s has only the first frame flagged even in
    val/test; ``"annotated"``: every frame with a mask file), ``subsets`` (any of v1s,
    v1m, v2; default all), ``strict_masks``, ``entries``, ``audio_front_end``, ``pixel_norm`` (as
    :class:`S4Dataset`).
    """

    task = "avss"
    layout = AVSS_LAYOUT

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        img_size: int = 224,
        audio_policy: ClipPolicy = "reference",
        gt_flag_rule: GtFlagRule = "official",
        subsets: Sequence[str] | None = None,
        strict_masks: bool = False,
        entries: Sequence[VideoEntry] | None = None,
        audio_front_end: AudioFrontEnd = VGGISH_LOG_MEL,
        pixel_norm: PixelNorm | None = None,
    ) -> None:
        super().__init__(
            root,
            split,
            img_size=img_size,
            audio_policy=audio_policy,
            entries=entries,
            audio_front_end=audio_front_end,
            pixel_norm=pixel_norm,
        )
        if gt_flag_rule not in ("official", "annotated"):
            raise DataError(f"gt_flag_rule must be official or annotated, got {gt_flag_rule!r}")
        self.subsets = tuple(subsets) if subsets is not None else AVSS_SUBSETS
        unknown = sorted(set(self.subsets) - set(AVSS_SUBSETS))
        if unknown:
            raise DataError(f"unknown AVSS subsets {unknown}; use any of {AVSS_SUBSETS}")
        self.entries = [e for e in self.entries if e.subset in self.subsets]
        self.gt_flag_rule = gt_flag_rule
        self.strict_masks = strict_masks
        kind = "short_side_crop" if self.split == "train" else "resize"
        self.geometry = Geometry(kind, self.img_size)
        self._require_entries()
        self._check_label_file()

    def _check_label_file(self) -> None:
        """``label2idx.json`` is optional (only its key count is used, by an assert in the
        original loader); when present it must list the 71 classes."""
        path = self.root / "label2idx.json"
        if not path.is_file():
            return
        try:
            names = list(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
            raise CorruptFileError(f"cannot read {path}: {exc}") from None
        if len(names) != NUM_AVSS_CLASSES:
            raise CorruptFileError(
                f"{path} lists {len(names)} classes, expected {NUM_AVSS_CLASSES}: this is not "
                "the AVSBench-semantic release these readers know"
            )
        if tuple(names) != AVSS_CLASSES:
            logger.warning(
                "%s: class names differ from AVSS_CLASSES; labels are read by palette "
                "position, so class names may not match the data",
                path,
            )

    def _filter_note(self) -> str:
        return f" in subsets {', '.join(self.subsets)}"

    def video_files(self, index: int) -> VideoFiles:
        entry = self.entries[index]
        folder = self.root / entry.subset / entry.video_id
        real = AVSS_SUBSET_FRAMES[entry.subset]
        # v1s train clips carry one annotated frame (0.png); every other clip all of them.
        annotated = 1 if (entry.subset == "v1s" and self.split == "train") else real
        if self.gt_flag_rule == "official":
            flagged = 1 if entry.subset == "v1s" else real
        else:
            flagged = annotated
        return VideoFiles(
            frames=tuple(folder / "frames" / f"{t}.jpg" for t in range(real)),
            masks={t: folder / "labels_rgb" / f"{t}.png" for t in range(annotated)},
            log_mel=None,
            wav=folder / "audio.wav",
            num_frames=AVSS_CLIP_FRAMES,
            vid_flags=_ones_then_zeros(real, AVSS_CLIP_FRAMES),
            gt_flags=_ones_then_zeros(flagged, AVSS_CLIP_FRAMES),
        )

    def __getitem__(self, index: int) -> AVSample:
        entry = self.entries[index]
        files = self.video_files(index)
        real, frame_size = load_clip_frames(list(files.frames), self.geometry, self.pixel_norm)
        frames = real.new_zeros((files.num_frames,) + tuple(real.shape[1:]))
        frames[: real.shape[0]] = real
        labels = torch.zeros((files.num_frames,) + tuple(real.shape[-2:]), dtype=torch.int64)
        for slot, path in files.masks.items():
            decoded = load_color_mask(path, self.geometry)
            check_mask_size(path, decoded.source_size, files.frames[slot], frame_size)
            self._check_mask(path, decoded)
            labels[slot] = torch.from_numpy(decoded.values)
        audio, audio_path = self._load_audio(files)
        return AVSample(
            frames=frames,
            audio=audio,
            masks=labels,
            gt_flags=torch.tensor(files.gt_flags, dtype=torch.float32),
            vid_flags=torch.tensor(files.vid_flags, dtype=torch.float32),
            video_id=entry.video_id,
            task=self.task,
            split=self.split,
            subset=entry.subset,
            objects=entry.objects,
            audio_path=str(audio_path),
        )

    def _load_audio(self, files: VideoFiles) -> tuple[torch.Tensor, Path]:
        assert files.wav is not None
        return self._read_wav(files.wav, files.num_frames), files.wav

    def _check_mask(self, path: Path, decoded: MaskDecoding) -> None:
        if decoded.irregular_pixels and self.strict_masks:
            raise CorruptFileError(
                f"mask {path}: {decoded.irregular_pixels} pixels have colours outside the "
                "71-class palette (strict_masks=True); fix the file or pass "
                "strict_masks=False to read them as background like the original loader"
            )
        self._note_irregular_mask(path, decoded, "have colours outside the palette (read as 0)")


def _ones_then_zeros(ones: int, total: int) -> tuple[float, ...]:
    return (1.0,) * ones + (0.0,) * (total - ones)
