"""Generate a whole synthetic dataset in the official AVSBench layout of one task.

Each video is made from its own random generator, derived from (seed, task, split,
index): the output is byte-for-byte the same for the same arguments whatever the number
of worker processes (the log-mel ``.pkl`` files excepted: torch's pickle embeds a memory
address, so their bytes differ while their tensors are identical).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ...errors import DataError, OutputExistsError
from ...tasks import get_task, task_names
from .clip import make_clip
from .formats import SyntheticFormat, SyntheticJob
from .layout import to_int16, write_logmel, write_synth_meta
from .scene import PRESETS
from .sounds import SAMPLE_RATE
from .vocabulary import VOCABULARY

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}
_LOGMEL_EXAMPLES = 5  # S4 / MS3 pkl files hold exactly 5 examples


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`generate_dataset` wrote."""

    root: Path
    task: str
    splits: dict[str, int]
    size: tuple[int, int]
    seed: int
    subsets: dict[str, int] = field(default_factory=dict)  # AVSS: videos per label


# ----------------------------------------------------------------------- arguments


def parse_splits(spec: str | Sequence[str] | dict | None, videos: int | None) -> dict[str, int]:
    """Videos per split from a split spec and a total.

    ``spec`` forms: ``None`` (train/val/test = 70/15/15 % of ``videos``), names only
    (``"train,test"``: the default fractions of those, renormalised), fractions
    (``"train=0.8,val=0.1,test=0.1"``) or counts (``"train=100,val=20,test=20"``; then
    ``videos`` may be omitted or must equal the sum). Every split named with a fraction
    gets at least one video. Returns ``{split: count}`` in train, val, test order.
    """
    if isinstance(spec, dict):
        items = {str(k): str(v) for k, v in spec.items()}
    else:
        parts = spec.split(",") if isinstance(spec, str) else list(spec or ["train", "val", "test"])
        items = {}
        for part in (p.strip() for p in parts if p.strip()):
            name, _, value = part.partition("=")
            items[name.strip()] = value.strip()
    unknown = [n for n in items if n not in SPLITS]
    if unknown or not items:
        raise DataError(f"unknown split(s) {unknown or spec!r}: use names from train, val, test")
    values = list(items.values())
    if all(v.isdigit() for v in values):  # explicit counts
        counts = {n: int(items[n]) for n in SPLITS if n in items}
        if videos is not None and videos != sum(counts.values()):
            raise DataError(
                f"--videos {videos} does not match the split counts {counts} "
                f"(sum {sum(counts.values())}); give one or make them agree"
            )
        return counts
    if any(values) and not all(values):
        raise DataError(f"split spec {spec!r} mixes names with and without '=value'")
    try:
        weights = {
            n: float(items[n]) if items[n] else DEFAULT_FRACTIONS[n] for n in SPLITS if n in items
        }
    except ValueError:
        raise DataError(f"split spec {spec!r}: values must be counts or fractions") from None
    if videos is None:
        raise DataError("give --videos N with split fractions (or explicit counts per split)")
    if videos < len(weights) or any(w <= 0 for w in weights.values()):
        raise DataError(
            f"{videos} videos cannot fill the splits {list(weights)} with at least one each; "
            "use more videos or fewer splits"
        )
    return _apportion(videos, weights)


def _apportion(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``total`` by ``weights``; then every key gets at least 1
    (taken from the largest share). Requires ``total >= len(weights)``."""
    names = list(weights)
    raw = np.array([weights[n] for n in names]) / sum(weights.values()) * total
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    for i in np.flatnonzero(counts == 0):
        counts[int(np.argmax(counts))] -= 1
        counts[i] = 1
    return {n: int(c) for n, c in zip(names, counts, strict=True)}


def parse_size(size: int | str | tuple[int, int], task: str) -> tuple[int, int]:
    """Frame (width, height). An int N is N x N for S4/MS3 and round(N * 10/7) x N for AVSS
    (non-square like the real AVSS frames, e.g. 320x224); ``"WxH"`` is taken as given."""
    if isinstance(size, tuple):
        width, height = size
    elif isinstance(size, str) and "x" in size.lower():
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise DataError(f"bad --size {size!r}: use N or WxH, e.g. 224 or 320x224") from None
    else:
        height = int(size)
        width = int(round(height * _synthetic_format(task).aspect))
    if min(width, height) < 32:
        raise DataError(f"frame size {width}x{height} is too small: use at least 32 pixels")
    return width, height


# ---------------------------------------------------------------------- one video


def video_seed(seed: int, task: str, split: str, index: int) -> np.random.SeedSequence:
    """The seed of video ``index`` of ``split``: everything about that video derives from it."""
    return np.random.SeedSequence([seed, zlib.crc32(task.encode()), SPLITS.index(split), index])


def _shortened_length(seconds: int, rng: np.random.Generator) -> int:
    """A sample count giving 1-2 fewer 0.96 s VGGish examples than ``seconds``
    (N examples need 15360 N + 240 samples at 16 kHz)."""
    examples = seconds - int(rng.integers(1, 3))
    return examples * 15360 + 240 + int(rng.integers(0, 15360))


def _synthetic_format(task: str) -> SyntheticFormat:
    fmt = get_task(task).synthetic
    if fmt is None:
        raise DataError(f"task {task!r} has no synthetic format: the generator cannot write it")
    return fmt


def _make_video(job: SyntheticJob) -> list[str]:
    """Generate and write one video (official files, log-mel, synth_meta); returns its CSV row."""
    fmt = _synthetic_format(job.task)
    clip_seed, naming_seed = video_seed(job.seed, job.task, job.split, job.index).spawn(2)
    rng = np.random.default_rng(naming_seed)
    preset, seconds, subset = fmt.video_scene(job, rng)
    frame_times = np.arange(seconds) + 0.5  # the middle of each second
    clip = make_clip(PRESETS[preset], seconds, frame_times, job.width, job.height, clip_seed)
    samples = to_int16(clip.waveform)
    if job.short_audio > 0 and rng.uniform() < job.short_audio:
        samples = samples[: _shortened_length(seconds, rng)]
    info: dict[str, object] = {
        "task": job.task,
        "seconds": seconds,
        "audio_samples": int(samples.size),
    }
    names, row, pkl = fmt.write_video(job, clip, samples, rng, subset)
    if subset:
        info["label"] = subset
    if pkl is not None and job.logmel:
        info["log_mel_examples"] = write_logmel(pkl, samples, clip.sample_rate, _LOGMEL_EXAMPLES)
    write_synth_meta(Path(job.root), job.split, names, clip, info)
    return row


def _init_worker() -> None:
    # One thread per process: the work is spread over processes, not torch threads.
    import torch

    torch.set_num_threads(1)


# ------------------------------------------------------------------------- dataset


def _run_jobs(jobs: list[SyntheticJob], workers: int) -> Iterator[list[str]]:
    if workers <= 1:
        yield from map(_make_video, jobs)
        return
    context = get_context("spawn")  # fork is unsafe once torch has started threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        yield from pool.map(
            _make_video, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers)))
        )


def _write_csv(
    path: Path, header: list[str], rows: list[list[str]], trailing_newline: bool
) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    text = buffer.getvalue()
    path.write_text(text if trailing_newline else text.rstrip("\n"), encoding="utf-8")


def _dataset_record(
    task: str, seed: int, size: tuple[int, int], counts: dict[str, int], options: dict
) -> dict:
    from ... import __version__

    return {
        "generator": "avsegformer.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "avsegformer_version": __version__,
        "task": task,
        "seed": seed,
        "size": list(size),
        "videos": sum(counts.values()),
        "splits": counts,
        "sample_rate": SAMPLE_RATE,
        "frame_times": "frame k (0-based) shows time k + 0.5 s; sounding[s] lists second s",
        **options,
        "vocabulary": [{**asdict(c), "avss_id": c.avss_id} for c in VOCABULARY],
        "files": {
            "per_video": "synth_meta/<split>/<video>.json: objects, per-second sounding ids",
            "instances": "synth_meta/<split>/<video>/instances/<k>.png: 0 = background, "
            "i = object with instance_id i (visible part), k = 0-based frame index",
        },
    }


def _prepare_output(out: Path, overwrite: bool) -> Path:
    """A fresh temporary folder next to ``out``; refuses a non-empty ``out`` unless overwrite."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    return partial


def _commit_output(partial: Path, out: Path) -> None:
    """Move the finished dataset into place (the old one, if any, is removed after)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    partial.rename(out)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def generate_dataset(
    task: str,
    out: str | Path,
    videos: int | None = None,
    seed: int = 0,
    size: int | str | tuple[int, int] = 224,
    splits: str | Sequence[str] | dict | None = None,
    workers: int = 1,
    *,
    logmel: bool = True,
    short_audio: float = 0.0,
    avss_mix: str | dict[str, float] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> DatasetSummary:
    """Write a synthetic dataset of ``task`` (``"s4"``, ``"ms3"`` or ``"avss"``) into ``out``.

    ``out`` becomes the task folder itself (the one holding ``s4_meta_data.csv``,
    ``ms3_meta_data.csv`` or ``metadata.csv``), readable by
    :func:`avsegformer.data.build_dataset`. See :func:`parse_splits` for ``splits`` and
    ``videos``, :func:`parse_size` for ``size`` and :func:`parse_mix` for ``avss_mix``.

    Args:
        logmel: also write the S4/MS3 ``audio_log_mel/*.pkl`` files (VGGish front end).
        short_audio: fraction of videos whose audio is cut to give 1-2 fewer 0.96 s
            examples (exercises the readers' padding rules); 0 by default.
        workers: processes; the output does not depend on it.
        overwrite: replace a non-empty ``out`` (only after the new dataset is complete).
        progress: show a progress bar (stderr).
    Raises:
        OutputExistsError: ``out`` is not empty and ``overwrite`` is false.
        DataError: bad task, splits, size or mix.
    """
    task = task.lower()
    if task not in task_names():
        raise DataError(f"unknown task {task!r}: use one of {', '.join(task_names())}")
    fmt = _synthetic_format(task)
    if seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed}")
    if not 0.0 <= short_audio <= 1.0:
        raise DataError(f"short_audio must be a fraction in [0, 1], got {short_audio}")
    counts = parse_splits(splits, videos)
    width, height = parse_size(size, task)
    mix = fmt.parse_mix(avss_mix)
    out = Path(out).expanduser()
    partial = _prepare_output(out, overwrite)
    jobs = [
        SyntheticJob(
            task,
            split,
            index,
            seed,
            width,
            height,
            str(partial),
            logmel,
            short_audio,
            tuple(mix.items()),
        )
        for split, count in counts.items()
        for index in range(count)
    ]
    logger.info("generating %d %s videos (%s) at %dx%d into %s", len(jobs), task.upper(),
                ", ".join(f"{k} {v}" for k, v in counts.items()), width, height, out)  # fmt: skip
    try:
        from ...progress import track

        rows = list(track(_run_jobs(jobs, workers), len(jobs), "synth", "video", enabled=progress))
        _write_csv(
            partial / fmt.metadata_file,
            list(fmt.csv_header),
            rows,
            trailing_newline=fmt.trailing_newline,
        )
        for name, text in fmt.extra_files:
            (partial / name).write_text(text)
        options = {"log_mel": logmel and fmt.log_mel, "short_audio": short_audio}
        if fmt.uses_subsets:
            options["avss_mix"] = mix
        record = _dataset_record(task, seed, (width, height), counts, options)
        (partial / "synth_meta").mkdir(exist_ok=True)
        (partial / "synth_meta" / "dataset.json").write_text(json.dumps(record, indent=1) + "\n")
        _commit_output(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    subsets: dict[str, int] = {}
    if fmt.uses_subsets:
        label = fmt.csv_header.index("label")
        for row in rows:
            subsets[row[label]] = subsets.get(row[label], 0) + 1
    return DatasetSummary(
        root=out, task=task, splits=counts, size=(width, height), seed=seed, subsets=subsets
    )
