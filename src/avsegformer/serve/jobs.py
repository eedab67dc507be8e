"""The work behind ``avsegformer serve``: jobs, their queue, one model in memory.

No web framework here (the routes are in :mod:`avsegformer.serve.app`), so the queue
can be driven and tested directly.

* A :class:`Job` is one segmentation: an uploaded video, the generated demo clip, or a
  re-run of an earlier job with its sound silenced or swapped for another clip's.
* Each job has its own folder ``WORK_DIR/<32 hex digits>/`` whose name is a random id,
  never anything from the request: ``input.<ext>`` (the upload; the extension only
  from a list of video suffixes), ``audio.<ext>`` (a swapped-in clip), ``result/``
  (written by :func:`avsegformer.video_pipeline.process_video`: ``masks/``,
  ``overlay.mp4``, ``summary.json``) and ``masks.zip``.
* :class:`JobQueue` runs one job at a time (one device per server) in a worker thread,
  in order of arrival, and removes finished jobs ``keep_seconds`` after they end.
* :class:`ModelCache` holds one :class:`~avsegformer.Predictor`: a job for another
  model or precision replaces it.
"""

from __future__ import annotations

import collections
import functools
import gc
import logging
import re
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AVSegFormerError
from ..fileio import os_error_text
from .models import ModelChoice

logger = logging.getLogger(__name__)

#: A job id: what the routes accept (anything else is "no such job").
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
#: Files of a job folder the routes serve (nothing else in it, whatever the request).
SERVED_FILE = re.compile(
    r"^(?:input\.[a-z0-9]{1,5}|result/overlay\.mp4|result/summary\.json|masks\.zip"
    r"|result/masks/\d{6}\.png)$"
)
#: The demo clip: the same generated scene as ``avsegformer demo``.
DEMO_SECONDS = 8
#: Sample rate (Hz) of a replaced sound: see :func:`replace_audio`.
REPLACED_AUDIO_RATE = 48000


class JobCancelled(Exception):
    """Raised inside a running job when it is cancelled or the server stops."""


class QueueFullError(AVSegFormerError):
    """Too many jobs waiting: the request is refused (try again later)."""


@dataclass
class JobSettings:
    """What the page asked for: the model, the sampling rate, the precision."""

    model: ModelChoice
    fps: float = 1.0
    precision: str = "auto"


@dataclass
class Job:
    """One segmentation and its state (changed under the queue's lock).

    ``kind``: "upload", "demo" or "rerun"; ``input``: the video to segment (a demo or
    re-run makes it when it runs); ``source``: a re-run's copy of the earlier job's
    input; ``audio``: "own", "silence" or "clip" (the sound of ``audio_file``, shown as
    ``audio_name``); ``parent``: the job a re-run started from; ``state``: "queued",
    "running", then "done", "failed" or "cancelled"; ``done``/``total``: samples
    segmented / to segment.
    """

    id: str
    kind: str
    name: str
    folder: Path
    settings: JobSettings
    input: Path | None = None
    source: Path | None = None
    audio: str = "own"
    audio_file: Path | None = None
    audio_name: str | None = None
    parent: str | None = None
    demo_seed: int = 0
    state: str = "queued"
    phase: str = "waiting in the queue"
    done: int = 0
    total: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)
    finished: float | None = None
    result: dict[str, Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def result_folder(self) -> Path:
        return self.folder / "result"

    def public_message(self, error: BaseException) -> str:
        """The error's first line, with this job's internal paths replaced by its name."""
        text = error.message if isinstance(error, AVSegFormerError) else str(error)
        first = (text.splitlines() or [""])[0]
        for path, shown in ((self.input, self.name), (self.audio_file, self.audio_name)):
            if path is not None:
                first = first.replace(str(path), shown or path.name)
        return first.replace(str(self.folder) + "/", "").replace(str(self.folder), "")


def display_name(raw: str | None, fallback: str = "video") -> str:
    """A name to show for an upload: its last path component, printable, at most 80 chars.

    Only ever shown (and put in download names): files on disk get fixed names.
    """
    text = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    if len(text) > 80:
        text = text[:38] + "..." + text[-39:]
    return text or fallback


def stored_suffix(name: str) -> str:
    """The suffix an upload is stored with: a known video suffix of ``name``, else ``.bin``."""
    from ..video_pipeline import VIDEO_EXTENSIONS

    suffix = Path(name).suffix.lower()
    return suffix if suffix in VIDEO_EXTENSIONS and suffix[1:].isalnum() else ".bin"


# ---------------------------------------------------------------------------------------
# One model in memory


class ModelCache:
    """Holds the predictor of the last model used; asking for another replaces it.

    The old predictor is dropped (and CUDA's cache emptied) before the new one is
    built, so two models are never in memory together.
    """

    def __init__(self, device: str | None = None) -> None:
        import torch

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._key: tuple[str, str] | None = None
        self._predictor: Any = None
        self.loads = 0

    @property
    def current(self) -> tuple[str, str] | None:
        """(model id, autocast dtype name) of the predictor in memory, if any."""
        return self._key

    def get(self, choice: ModelChoice, precision: str) -> Any:
        """The predictor for ``choice`` at ``precision`` (built, if not the one in memory;
        precisions that mean the same dtype here, e.g. auto and fp32 on a CPU, share it)."""

        from ..predictor import Predictor
        from ..settings import Precision

        dtype = Precision.parse(precision).compute_dtype(self.device)
        key = (choice.id, str(dtype).replace("torch.", ""))
        if self._key == key:
            return self._predictor
        self.release()
        self._predictor = Predictor.from_checkpoint(
            choice.checkpoint, choice.name, device=self.device, dtype=dtype
        )
        self._key = key
        self.loads += 1
        return self._predictor

    def release(self) -> None:
        """Drop the predictor in memory."""
        if self._predictor is None:
            return
        self._predictor, self._key = None, None
        gc.collect()
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------
# The queue


Runner = Callable[["Job", "JobQueue"], None]


class JobQueue:
    """Jobs in order of arrival, run one at a time by a worker thread.

    Args:
        work_dir: where job folders are made (must exist).
        device: the device every job runs on (None: CUDA if available).
        keep_seconds: finished jobs (and their files) are removed this long after they end.
        max_waiting: more queued jobs than this are refused (:class:`QueueFullError`).
        runner: runs one job (default :func:`execute_job`); tests pass their own.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        device: str | None = None,
        keep_seconds: float = 3600.0,
        max_waiting: int = 20,
        runner: Runner | None = None,
        models: ModelCache | None = None,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.keep_seconds = keep_seconds
        self.max_waiting = max_waiting
        self.models = models if models is not None else ModelCache(device)
        self._runner = runner or execute_job
        self._lock = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._waiting: collections.deque[str] = collections.deque()
        self._running: str | None = None
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # -- jobs ------------------------------------------------------------------------------

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and its (created) folder."""
        job_id = uuid.uuid4().hex
        folder = self.work_dir / job_id
        folder.mkdir()
        return job_id, folder

    def submit(self, job: Job) -> None:
        """Queue ``job`` (its folder and input ready)."""
        with self._lock:
            if self._stopping:
                raise QueueFullError("the server is stopping")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFullError(
                    f"the server is busy: {len(self._waiting)} jobs are waiting already; "
                    "try again in a while"
                )
            self._jobs[job.id] = job
            self._waiting.append(job.id)
            self._lock.notify_all()

    def check_room(self) -> None:
        """Raise :class:`QueueFullError` now if a new job would be refused (before an upload)."""
        with self._lock:
            if self._stopping or len(self._waiting) >= self.max_waiting:
                raise QueueFullError(
                    "the server is stopping"
                    if self._stopping
                    else f"the server is busy: {len(self._waiting)} jobs are waiting already; "
                    "try again in a while"
                )

    def get(self, job_id: str) -> Job | None:
        if not JOB_ID.match(job_id):
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """1 for the next job to run, 2 after it...; 0 running; None finished."""
        with self._lock:
            if self._running == job.id:
                return 0
            try:
                return self._waiting.index(job.id) + 1
            except ValueError:
                return None

    def cancel(self, job_id: str) -> bool:
        """Stop or remove a job (queued: dropped; running: stopped at the next sample;
        finished: its files removed). False if there is no such job."""
        with self._lock:
            job = self._jobs.get(job_id) if JOB_ID.match(job_id) else None
            if job is None:
                return False
            job.cancel.set()
            if job.state == "running":
                return True  # the worker marks it cancelled and keeps it until it expires
            if job.id in self._waiting:
                self._waiting.remove(job.id)
            del self._jobs[job.id]
        shutil.rmtree(job.folder, ignore_errors=True)
        return True

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, cleanup_interval: float | None = None) -> None:
        """Start the worker and the thread that removes expired jobs."""
        interval = cleanup_interval or max(1.0, min(60.0, self.keep_seconds / 4))
        for target, args, name in (
            (self._work, (), "avsegformer-serve-worker"),
            (self._sweep, (interval,), "avsegformer-serve-cleanup"),
        ):
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the jobs, refuse new ones, wait for the threads, remove every job folder."""
        with self._lock:
            self._stopping = True
            for job in self._jobs.values():
                job.cancel.set()
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        with self._lock:
            jobs, self._jobs = list(self._jobs.values()), {}
            self._waiting.clear()
        for job in jobs:
            shutil.rmtree(job.folder, ignore_errors=True)
        self.models.release()

    def cleanup(self, now: float | None = None) -> list[str]:
        """Remove the jobs finished more than ``keep_seconds`` ago; returns their ids.

        A job stays while a re-run made from it is kept (the page compares the two).
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = {
                job.id
                for job in self._jobs.values()
                if job.finished is not None and now - job.finished >= self.keep_seconds
            }
            needed = {job.parent for job in self._jobs.values() if job.id not in expired}
            removed = [self._jobs.pop(job_id) for job_id in sorted(expired - needed)]
        for job in removed:
            shutil.rmtree(job.folder, ignore_errors=True)
        if removed:
            logger.info("removed %d finished job(s)", len(removed))
        return [job.id for job in removed]

    def _sweep(self, interval: float) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._stopping, timeout=interval)
                if self._stopping:
                    return
            try:
                self.cleanup()
            except Exception:  # noqa: BLE001 - the sweeper must outlive any one failure
                logger.exception("removing finished jobs failed")

    def _work(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._waiting or self._stopping)
                if self._stopping:
                    return
                job = self._jobs[self._waiting.popleft()]
                self._running = job.id
                job.state, job.phase = "running", "starting"
            try:
                self._runner(job, self)
            except JobCancelled:
                state, error = "cancelled", None
            except AVSegFormerError as exc:
                state, error = "failed", job.public_message(exc)
                logger.info("job %s (%s) failed: %s", job.id[:8], job.name, error)
            except OSError as exc:  # a full disk, a vanished work folder: the machine's
                state, error = "failed", job.public_message(OSError(os_error_text(exc)))
                logger.warning("job %s (%s) failed: %s", job.id[:8], job.name, error)
            except Exception as exc:  # noqa: BLE001 - one job must not stop the server
                logger.exception("job %s (%s) failed", job.id[:8], job.name)
                state, error = (
                    "failed",
                    f"internal error: {type(exc).__name__}: " + (job.public_message(exc)),
                )
            else:
                state, error = ("cancelled", None) if job.cancel.is_set() else ("done", None)
            with self._lock:
                self._running = None
                job.state, job.error, job.finished = state, error, time.monotonic()
                job.phase = {"done": "done", "failed": "failed", "cancelled": "cancelled"}[state]
                self._lock.notify_all()


# ---------------------------------------------------------------------------------------
# Running one job


def check_cancelled(job: Job) -> None:
    if job.cancel.is_set():
        raise JobCancelled(job.id)


def execute_job(job: Job, queue: JobQueue) -> None:
    """Prepare the input (demo clip, replaced sound), segment it, collect the results.

    Raises whatever went wrong (the queue reports it on the page) or :class:`JobCancelled`.
    """
    from ..data.video import probe_video
    from ..video_pipeline import process_video

    folder = job.folder
    if job.kind == "demo":
        job.phase = "generating the demo clip"
        job.input = generate_demo_clip(folder / "input.mp4", seed=job.demo_seed)
    elif job.kind == "rerun":
        job.phase = (
            "silencing the sound" if job.audio == "silence" else "swapping in the other sound"
        )
        assert job.source is not None, "a re-run is queued with its source video"
        job.input = replace_audio(job.source, job.audio_file, folder / "input.mp4")
        job.source.unlink(missing_ok=True)
    assert job.input is not None
    check_cancelled(job)
    info = probe_video(job.input)
    if not info.has_audio:
        job.notes.append("This video has no sound: the model heard silence.")

    choice = job.settings.model
    job.phase = f"loading {choice.label}"
    predictor = queue.models.get(choice, job.settings.precision)
    check_cancelled(job)

    def on_sample(done: int, total: int) -> None:
        job.done, job.total = done, max(total, done)
        check_cancelled(job)

    job.phase = "segmenting"
    summary = process_video(
        predictor,
        job.input,
        job.result_folder,
        fps=job.settings.fps,
        allow_silent=True,
        overwrite=True,
        checkpoint=checkpoint_record(choice.checkpoint),
        on_sample=on_sample,
    )
    if summary["outputs"]["overlay"] is None:
        job.notes.append(
            f"The overlay video could not be written ({summary['outputs']['overlay_error']}); "
            "the masks below are complete."
        )
    job.phase = "packing the masks"
    write_masks_zip(job.result_folder, summary, folder / "masks.zip")
    job.result = result_record(job, summary)


def checkpoint_record(path: Path) -> dict[str, str]:
    """The ``checkpoint`` entry of ``summary.json``: the file's name and sha256 (hashed once
    per file version, not once per job: released checkpoints are hundreds of MB)."""
    stat = path.stat()
    return {
        "path": path.name,
        "sha256": _sha256(str(path.resolve()), stat.st_mtime_ns, stat.st_size),
    }


@functools.lru_cache(maxsize=32)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    from ..fileio import file_sha256

    return file_sha256(path)


def write_masks_zip(result: Path, summary: dict[str, Any], path: Path) -> Path:
    """``masks.zip``: every mask PNG and ``summary.json`` (PNGs are compressed: stored)."""
    from ..fileio import atomic_path

    with atomic_path(path) as temporary, zipfile.ZipFile(temporary, "w") as archive:
        for frame in summary["frames"]:
            archive.write(result / frame["mask"], frame["mask"], zipfile.ZIP_STORED)
        archive.write(result / "summary.json", "summary.json", zipfile.ZIP_DEFLATED)
    return path


def result_record(job: Job, summary: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a finished job (from predict's ``summary.json``)."""
    from ..data.classes import palette_color
    from ..render import DEFAULT_MASK_COLOR

    model = summary["model"]
    binary = model["num_classes"] == 1

    def colour(class_id: int) -> str:
        rgb = DEFAULT_MASK_COLOR if binary else palette_color(class_id)
        return "#{:02x}{:02x}{:02x}".format(*rgb)

    frames = [
        {
            "index": frame["index"],
            "time": frame["time"],
            "frame_time": frame["frame_time"],
            "area": frame["area_fraction"],
            "classes": [
                {"id": c["id"], "name": c["name"], "fraction": c["fraction"]}
                for c in frame["classes"]
            ],
            "mask": f"result/{frame['mask']}",
        }
        for frame in summary["frames"]
    ]
    present = sorted({c["id"] for frame in frames for c in frame["classes"]})
    names = model["class_names"]
    return {
        "model": {"name": model["name"], "task": model["task"], "binary": binary},
        "classes": [{"id": c, "name": names[c], "colour": colour(c)} for c in present],
        "duration": summary["video"]["duration"],
        "fps": summary["fps"],
        "precision": summary["dtype"],
        "device": summary["device"],
        "silent_audio": summary["silent_audio"],
        "num_samples": summary["num_samples"],
        "seconds": summary["timings"]["total_s"],
        "frames": frames,
        # predict keeps the masks when the overlay cannot be encoded; the page says so.
        "overlay": summary["outputs"]["overlay"] is not None,
    }


# ---------------------------------------------------------------------------------------
# Inputs made by the server


def generate_demo_clip(path: Path, *, seed: int = 0, seconds: int = DEMO_SECONDS) -> Path:
    """The clip of ``avsegformer demo``: generated objects, one of them sounding."""
    from ..data.synthetic import generate_clip
    from ..demo import DEMO_SIZE, DEMO_VIDEO_FPS, write_clip_video

    clip = generate_clip("switch", seconds=seconds, fps=DEMO_VIDEO_FPS, size=DEMO_SIZE, seed=seed)
    return write_clip_video(clip, path)


def replace_audio(video: Path, audio: Path | None, out: Path, *, crf: int = 12) -> Path:
    """``video``'s pictures with another sound: ``audio``'s track, or silence (None).

    The pictures are decoded (upright, on the video's clock) and re-encoded as H.264 at
    a high quality (``crf``); the new track is AAC stereo at 48 kHz from t = 0, exactly
    as long as the video: a longer clip is cut, a shorter one padded with silence.
    Re-encoding rather than copying packets keeps the video clock (start offsets,
    rotation) right whatever the container, and gives a file browsers play.
    """
    import numpy as np
    from PIL import Image

    from ..data.video import VideoWriter, iter_all_frames, iter_audio, probe_video

    info = probe_video(video)
    rate = REPLACED_AUDIO_RATE
    total = round(info.duration * rate)
    chunks = iter(())
    if audio is not None:
        chunks = iter_audio(audio, rate, mono=False, chunk_seconds=1.0)
    written = 0
    size = info.display_size
    with VideoWriter(
        out, fps=info.fps, size=size, audio_rate=rate, audio_layout="stereo", crf=crf
    ) as writer:

        def audio_until(seconds: float) -> None:
            nonlocal written
            stop = min(total, round(seconds * rate))
            while written < stop:
                chunk = next(chunks, None)
                if chunk is None:  # the clip ran out (or silence): zeros
                    chunk = np.zeros((stop - written, 2), np.float32)
                elif chunk.shape[1] > 2:  # surround: down-mix, the track is stereo
                    chunk = chunk.mean(axis=1, keepdims=True)
                chunk = chunk[: total - written]
                writer.write_audio(chunk)
                written += len(chunk)

        for frame in iter_all_frames(video):
            audio_until(frame.t + 1.0)  # interleave: the sound runs ~1 s ahead
            image = frame.image
            if image.shape[1::-1] != size:
                image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
            writer.write_frame(image, frame.t)
        audio_until(info.duration)
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
    return out
