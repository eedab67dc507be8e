"""Benchmark of the PyAV layer: frame sampling, audio decoding, memory, overlay, encoding.

Generates its own videos in a temporary folder (nothing is downloaded), then measures
each item in a fresh Python subprocess (so that peak RSS and warm caches do not leak
between measurements) and prints one JSON object:

* ``sample_1fps``: decode + pick one frame per second (``iter_frames_at`` with
  ``sample_times``) from a 720p 30 fps H.264 video; seconds per sampled frame, with and
  without FFmpeg's decoding threads, and the rate of decoding every frame to RGB.
* ``audio``: decode + mono downmix + soxr resampling to 16 kHz (``iter_audio``);
  seconds per second of audio (44.1 kHz stereo AAC).
* ``peak_rss``: peak resident memory of a process that samples 1 fps and streams the
  audio of a 1-minute and of a 10-minute video (same resolution/bitrate), next to the
  RSS of a process that only imports the modules: flat memory means the two agree.
* ``overlay_720p_ms`` and ``write_720p_ms_per_frame``: the rendering and encoding side.

Timings are the best of 3 fresh processes (the machine may be shared).

Usage: ``python bench/video_decode.py [--seconds 30] [--long-minutes 10] [--out f.json]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger("bench.video_decode")


# ---------------------------------------------------------------------------------------
# Test media


def generate_video(
    path: Path,
    seconds: float,
    fps: int,
    size: tuple[int, int],
    *,
    crf: int,
    preset: str,
    audio_rate: int = 44100,
) -> Path:
    """H.264 + stereo AAC with moving content (gradient, boxes, noise) so P-frames cost work."""
    width, height = size
    rng = np.random.default_rng(0)
    noise_bank = [rng.integers(0, 24, (height, width, 1), dtype=np.uint8) for _ in range(7)]
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    base = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)
    samples_per_frame = audio_rate // fps
    with av.open(str(path), "w") as container:
        video = container.add_stream(
            "libx264", rate=fps, options={"crf": str(crf), "preset": preset}
        )
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=audio_rate, layout="stereo")
        t_audio = 0
        for index in range(int(seconds * fps)):
            image = np.roll(base, 3 * index, axis=1) + noise_bank[index % len(noise_bank)]
            x = (7 * index) % max(1, width - 120)
            y = (5 * index) % max(1, height - 90)
            image[y : y + 90, x : x + 120] = (230, 60, 40)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
            n = samples_per_frame
            t = (t_audio + np.arange(n)) / audio_rate
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            block = av.AudioFrame.from_ndarray(
                np.stack([tone, tone]), format="fltp", layout="stereo"
            )
            block.sample_rate, block.pts = audio_rate, t_audio
            block.time_base = Fraction(1, audio_rate)
            container.mux(audio.encode(block))
            t_audio += n
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return path


# ---------------------------------------------------------------------------------------
# Child tasks (run in fresh subprocesses)


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def task_imports(_path: str) -> dict:
    from avsegformer.data import video  # noqa: F401

    return {"peak_rss_mib": _peak_rss_mib()}


def task_sample(path: str, threads: str = "1") -> dict:
    from avsegformer.data.video import iter_frames_at, probe_video, sample_times

    start = time.perf_counter()
    info = probe_video(path)
    times = sample_times(info.duration, fps=1.0)
    count = sum(1 for _ in iter_frames_at(path, times, threads=threads == "1"))
    elapsed = time.perf_counter() - start
    return {"frames": count, "seconds": elapsed, "s_per_sampled_frame": elapsed / count}


def task_decode_all(path: str) -> dict:
    from avsegformer.data.video import iter_all_frames

    start = time.perf_counter()
    count = sum(1 for _ in iter_all_frames(path))
    elapsed = time.perf_counter() - start
    return {"frames": count, "seconds": elapsed, "fps": count / elapsed}


def task_audio(path: str) -> dict:
    from avsegformer.data.video import iter_audio

    start = time.perf_counter()
    samples = sum(len(chunk) for chunk in iter_audio(path, 16000))
    elapsed = time.perf_counter() - start
    audio_seconds = samples / 16000
    return {"audio_seconds": audio_seconds, "s_per_audio_second": elapsed / audio_seconds}


def task_pipeline(path: str) -> dict:
    """What ``predict`` will do with a file: 1 fps frames + all audio, streamed."""
    from avsegformer.data.video import iter_audio, iter_frames_at, probe_video, sample_times

    start = time.perf_counter()
    info = probe_video(path)
    frames = sum(1 for _ in iter_frames_at(path, sample_times(info.duration)))
    samples = sum(len(chunk) for chunk in iter_audio(path, 16000))
    return {
        "video_seconds": info.duration,
        "frames": frames,
        "audio_samples": samples,
        "seconds": time.perf_counter() - start,
        "peak_rss_mib": _peak_rss_mib(),
    }


def task_overlay(_path: str) -> dict:
    from avsegformer.render import overlay

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    binary = np.zeros((720, 1280), dtype=bool)
    binary[100:600, 200:900] = True
    classes = np.zeros((720, 1280), dtype=np.int64)
    classes[100:400, 100:500], classes[300:700, 600:1200] = 17, 41
    cases = {
        "binary": lambda: overlay(frame, binary),
        "classes": lambda: overlay(frame, classes, draw_labels=False),
        "classes_labels": lambda: overlay(frame, classes),
        "classes_labels_contours": lambda: overlay(frame, classes, contours=True),
    }
    result = {}
    for name, run in cases.items():
        run()
        start = time.perf_counter()
        for _ in range(30):
            run()
        result[name] = round((time.perf_counter() - start) / 30 * 1000, 2)
    return result


def task_write(path: str) -> dict:
    from avsegformer.data.video import VideoWriter, iter_all_frames

    out = Path(path).with_name("written.mp4")
    frames = [image for _, (_, image) in zip(range(150), iter_all_frames(path), strict=False)]
    start = time.perf_counter()
    with VideoWriter(out, 30, (1280, 720), overwrite=True) as writer:
        writer.mux_audio_from(path)
        for i, image in enumerate(frames):
            writer.write_frame(image, i / 30)
    elapsed = time.perf_counter() - start
    return {"frames": len(frames), "ms_per_frame": elapsed / len(frames) * 1000}


TASKS = {
    "imports": task_imports,
    "sample": task_sample,
    "decode_all": task_decode_all,
    "audio": task_audio,
    "pipeline": task_pipeline,
    "overlay": task_overlay,
    "write": task_write,
}


def run_child(task: str, *args: str) -> dict:
    """Run one task in a fresh interpreter and return its JSON result."""
    command = [sys.executable, __file__, "--child", task, *args]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(runs: int, key: str, task: str, *args: str) -> dict:
    """The run with the smallest ``key`` among ``runs`` fresh processes (shared machines
    are noisy; the minimum is the least disturbed measurement)."""
    results = [run_child(task, *args) for _ in range(runs)]
    best = min(results, key=lambda result: result[key])
    return {**best, "runs": runs}


# ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="720p video length")
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task, *task_args = args.child
        print(json.dumps(TASKS[task](*task_args)))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="bench-video-") as folder:
        d = Path(folder)
        start = time.perf_counter()
        hd = generate_video(d / "hd.mp4", args.seconds, 30, (1280, 720), crf=23, preset="veryfast")
        logger.info("generated 720p %.0f s in %.1f s", args.seconds, time.perf_counter() - start)
        start = time.perf_counter()
        short = generate_video(d / "short.mp4", 60, 30, (640, 360), crf=35, preset="ultrafast")
        long_seconds = args.long_minutes * 60
        long = generate_video(
            d / "long.mp4", long_seconds, 30, (640, 360), crf=35, preset="ultrafast"
        )
        logger.info("generated 1 and %.0f min videos in %.1f s", args.long_minutes,
                    time.perf_counter() - start)  # fmt: skip

        results = {
            "machine": {
                "python": platform.python_version(),
                "pyav": av.__version__,
                "ffmpeg_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
                "cpus": os.cpu_count(),
            },
            "sample_1fps": {
                "video": f"1280x720 30 fps H.264 crf23, {args.seconds:.0f} s, "
                f"{hd.stat().st_size / 2**20:.1f} MiB",
                "threads": best_of(3, "seconds", "sample", str(hd), "1"),
                "no_threads": best_of(3, "seconds", "sample", str(hd), "0"),
                "decode_all_frames_rgb": best_of(3, "seconds", "decode_all", str(hd)),
            },
            "audio": {
                "audio": "44.1 kHz stereo AAC -> 16 kHz mono (soxr HQ)",
                **best_of(3, "s_per_audio_second", "audio", str(hd)),
            },
            "peak_rss": {
                "video": "640x360 30 fps H.264 + 44.1 kHz stereo AAC; 1 fps frames + all audio",
                "imports_only_mib": run_child("imports", str(short))["peak_rss_mib"],
                "1_min": run_child("pipeline", str(short)),
                f"{args.long_minutes:g}_min": run_child("pipeline", str(long)),
            },
            "overlay_720p_ms": run_child("overlay", str(hd)),
            "write_720p_ms_per_frame": run_child("write", str(hd))["ms_per_frame"],
        }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
