"""``avsegformer serve``: the JSON API over real HTTP (uploads, jobs, results, errors,
queueing, cancelling, cleanup, traversal attempts, clients that go away), the model
cache, the command line, and predict's progress hook the page is built on."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from avsegformer.commands.serve import is_loopback
from avsegformer.errors import MissingFileError
from avsegformer.serve.jobs import Job, JobCancelled, JobQueue, ModelCache, check_cancelled
from avsegformer.serve.models import ModelChoice, model_choices
from serving import Served, running_server
from videos import make_text_file, make_video, tone_onset

ROOT = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = ROOT / "checkpoints" / "demo_tiny_s4.safetensors"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s, 160x120, stereo AAC with a 440 Hz tone from 1 s."""
    return make_video(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=2.0, size=(160, 120))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Served:
    with running_server(tmp_path_factory.mktemp("work"), max_upload_bytes=400_000) as served:
        yield served


def upload(server: Served, path: Path, name: str | None = None, **query: object):
    return server.json("POST", "/api/jobs", path.read_bytes(), name=name or path.name, **query)


def files_of(server: Served, job: dict) -> dict[str, bytes]:
    got = {}
    for key, url in job["result"]["files"].items():
        status, _, data = server.request("GET", url)
        assert status == 200, (key, url)
        got[key] = data
    return got


def decoded_audio(data: bytes) -> tuple[np.ndarray, int]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray() for f in container.decode(stream)]
        return np.concatenate(chunks, axis=1), stream.codec_context.sample_rate


# ---------------------------------------------------------------------------------------
# Upload -> job -> results


def test_upload_is_segmented_and_every_result_is_served(server: Served, clip: Path) -> None:
    status, job = upload(server, clip, fps=2)
    assert status == 201, job
    assert job["state"] in ("queued", "running") and job["name"] == "clip.mp4"
    job = server.wait(job["id"])
    result = job["result"]
    # 2 s at 2 samples per second: periods [0, .5), [.5, 1), [1, 1.5), [1.5, 2).
    assert result["num_samples"] == 4 and len(result["frames"]) == 4
    assert [round(f["time"], 4) for f in result["frames"]] == [0.4688, 0.9688, 1.4688, 1.9688]
    assert job["done"] == job["total"] == 4
    for frame in result["frames"]:
        status, headers, data = server.request("GET", frame["mask"])
        assert status == 200 and headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(data)).size == (160, 120)  # the source resolution
    files = files_of(server, job)
    assert files["input"] == clip.read_bytes()
    summary = json.loads(files["summary"])
    assert summary["num_samples"] == 4 and summary["fps"] == 2.0
    with av.open(io.BytesIO(files["overlay"])) as container:
        kinds = sorted(s.type for s in container.streams)
        assert kinds == ["audio", "video"]  # the overlay keeps the sound
    with zipfile.ZipFile(io.BytesIO(files["masks_zip"])) as archive:
        names = sorted(archive.namelist())
    assert names == [f"masks/{i:06d}.png" for i in range(4)] + ["summary.json"]
    # Downloads are named after the upload.
    status, headers, _ = server.request("GET", job["result"]["files"]["overlay"] + "?download=1")
    assert status == 200 and 'filename="clip-overlay.mp4"' in headers["content-disposition"]


def test_the_page_and_its_settings_are_served(server: Served) -> None:
    status, headers, page = server.request("GET", "/")
    assert status == 200 and b'id="strip"' in page and b"/static/app.js" in page
    for asset in ("app.js", "style.css"):
        assert server.request("GET", f"/static/{asset}")[0] == 200
    status, config = server.json("GET", "/api/config")
    assert status == 200
    assert [m["id"] for m in config["models"]] == ["m0"]
    assert config["precisions"] == ["auto", "fp32", "bf16"]  # no fp16 on a CPU server
    assert config["max_upload_bytes"] == 400_000


def test_a_video_without_sound_is_segmented_with_silence_and_says_so(
    server: Served, tmp_path: Path
) -> None:
    silent = make_video(tmp_path / "silent.mp4", seconds=1.0, size=(96, 64), audio_layout=None)
    status, job = upload(server, silent)
    assert status == 201, job
    assert any("no sound" in note for note in job["notes"])
    job = server.wait(job["id"])
    assert job["result"]["silent_audio"] is True and job["result"]["num_samples"] == 1


def test_demo_clip_is_generated_in_the_server(server: Served) -> None:
    status, job = server.json("POST", "/api/demo", b"", seed=1, fps=0.5)
    assert status == 201, job
    job = server.wait(job["id"])
    assert job["result"]["num_samples"] == 4  # the 8-s demo clip at 0.5 per second
    files = files_of(server, job)
    with av.open(io.BytesIO(files["input"])) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}


# ---------------------------------------------------------------------------------------
# Re-runs with the sound changed


def test_rerun_with_silence_and_with_another_clips_sound(
    server: Served, clip: Path, tmp_path: Path
) -> None:
    status, original = upload(server, clip)
    original = server.wait(original["id"])

    status, silenced = server.json(
        "POST", f"/api/jobs/{original['id']}/rerun", b"", audio="silence"
    )
    assert status == 201, silenced
    silenced = server.wait(silenced["id"])
    assert silenced["parent"] == original["id"] and silenced["audio"] == "silence"
    assert silenced["result"]["num_samples"] == original["result"]["num_samples"]
    samples, _ = decoded_audio(files_of(server, silenced)["input"])
    assert np.abs(samples).max() < 1e-4  # the pictures, with digital silence

    other = make_video(
        tmp_path / "other.mkv", seconds=3.0, size=(64, 48), tone_schedule=((0.5, 880.0),)
    )
    status, swapped = server.json(
        "POST", f"/api/jobs/{original['id']}/rerun", other.read_bytes(), audio="clip", name="o.mkv"
    )
    assert status == 201, swapped
    swapped = server.wait(swapped["id"])
    assert swapped["audio"] == "clip" and swapped["audio_name"] == "o.mkv"
    data = files_of(server, swapped)["input"]
    samples, rate = decoded_audio(data)
    assert abs(tone_onset(samples.mean(axis=0), rate) - 0.5) < 0.03  # the other clip's sound
    assert abs(samples.shape[1] / rate - 2.0) < 0.05  # cut to the video's 2 s
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].codec_context.width == 160  # the same pictures

    # A re-run of a re-run compares with the job that had the video's own sound.
    status, again = server.json("POST", f"/api/jobs/{swapped['id']}/rerun", b"", audio="silence")
    assert status == 201 and again["parent"] == original["id"]
    server.wait(again["id"])


def test_rerun_refuses_a_clip_without_sound_and_bad_requests(
    server: Served, clip: Path, tmp_path: Path
) -> None:
    status, job = upload(server, clip)
    job = server.wait(job["id"])
    before = server.job_folders()
    silent = make_video(tmp_path / "mute.mp4", seconds=1.0, size=(64, 48), audio_layout=None)
    status, body = server.json(
        "POST", f"/api/jobs/{job['id']}/rerun", silent.read_bytes(), audio="clip", name="mute.mp4"
    )
    assert (
        status == 415
        and body["error"] == "mute.mp4 has no sound to swap in: choose a clip with sound"
    )
    status, body = server.json("POST", f"/api/jobs/{job['id']}/rerun", b"", audio="louder")
    assert status == 400 and "'silence' or 'clip'" in body["error"]
    status, body = server.json("POST", f"/api/jobs/{'0' * 32}/rerun", b"", audio="silence")
    assert status == 404
    assert server.job_folders() == before  # refused requests leave no folder


# ---------------------------------------------------------------------------------------
# Refused uploads: clear one-line messages, nothing left behind


def test_non_video_upload_gets_a_clear_message(server: Served, tmp_path: Path) -> None:
    before = server.job_folders()
    notes = make_text_file(tmp_path / "notes.txt")
    status, body = upload(server, notes)
    assert status == 415
    assert body["error"].startswith("notes.txt: not a video file")
    assert str(server.work_dir) not in body["error"]  # no server paths in messages
    status, body = server.json("POST", "/api/jobs", b"", name="empty.mp4")
    assert status == 400 and body["error"] == "empty.mp4: the upload is empty (0 bytes)"
    assert server.job_folders() == before


def test_oversize_upload_is_refused_declared_or_streamed(server: Served, tmp_path: Path) -> None:
    before = server.job_folders()
    big = os.urandom(500_000)  # the server takes 400,000 bytes
    status, body = server.json("POST", "/api/jobs", big, name="big.mp4")
    assert status == 413
    assert body["error"] == (
        "big.mp4 is 0.5 MB: uploads are limited to 0.4 MB (the server's --max-upload-mb)"
    )
    # Without a declared length (chunked): cut off while streaming.
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    status, _, data = server.request(
        "POST", "/api/jobs?name=big.mp4", chunks, {"Transfer-Encoding": "chunked"}
    )
    assert status == 413 and "uploads are limited to" in json.loads(data)["error"]
    assert server.job_folders() == before


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"fps": 0}, "fps must lie between 0.1 and 10 samples per second"),
        ({"fps": "nan"}, "fps must lie between 0.1 and 10 samples per second"),
        ({"fps": "fast"}, "fps must be a number, got 'fast'"),
        ({"precision": "fp16"}, "precision 'fp16' is not available on this server's cpu"),
        ({"model": "m9"}, "unknown model 'm9'; choose from m0"),
        ({"seed": "-1"}, "seed must be a whole number >= 0, got '-1'"),
    ],
)
def test_bad_settings_are_refused(server: Served, query: dict, message: str) -> None:
    status, body = server.json("POST", "/api/demo", b"", **query)
    assert status == 400 and body["error"].startswith(message)


# ---------------------------------------------------------------------------------------
# Paths: never from the request


def test_upload_names_never_reach_the_disk_and_files_stay_in_their_job(
    server: Served, clip: Path
) -> None:
    status, job = upload(server, clip, name="../../../../tmp/evil/..\\x.mp4", fps=1)
    assert status == 201 and job["name"] == "x.mp4"
    job = server.wait(job["id"])
    folder = server.work_dir / job["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["input.mp4", "masks.zip", "result"]
    assert not Path("/tmp/evil").exists()

    base = f"/api/jobs/{job['id']}/files/"
    secret = server.work_dir / "secret.txt"
    secret.write_text("not for the web")
    for attempt in [
        base + "../secret.txt",
        base + "%2e%2e/secret.txt",
        base + "result/../../secret.txt",
        base + "result%2f..%2f..%2fsecret.txt",
        base + "/etc/passwd",
        base + "%2fetc%2fpasswd",
        base + "result/summary.json/../../../secret.txt",
        f"/api/jobs/..%2f{job['id']}/files/input.mp4",
        "/api/jobs/../../secret.txt",
        "/static/../jobs.py",
        "/static/%2e%2e/jobs.py",
    ]:
        status, _, data = server.request("GET", attempt)
        assert status == 404, attempt
        assert b"not for the web" not in data and b"import" not in data
    # Files the job has but the routes do not serve.
    (folder / "source.mp4").write_bytes(b"x")
    assert server.request("GET", base + "source.mp4")[0] == 404
    assert server.request("GET", f"/api/jobs/{'g' * 32}")[0] == 404


def test_requests_from_other_sites_and_other_host_names_are_refused(server: Served) -> None:
    status, _, data = server.request("POST", "/api/demo", b"", {"Origin": "http://evil.example"})
    assert status == 403 and b"another site" in data
    status, _, _ = server.request("GET", "/api/config", headers={"Host": "evil.example"})
    assert status == 400  # DNS rebinding: a loopback server only answers to its own names
    origin = f"http://127.0.0.1:{server.port}"
    status, _, _ = server.request("POST", "/api/demo", b"", {"Origin": origin}, seed="x")
    assert status == 400  # same origin: through to the settings check


# ---------------------------------------------------------------------------------------
# Clients that go away


def test_server_survives_a_client_that_disconnects_mid_upload(server: Served, clip: Path) -> None:
    before = server.job_folders()
    data = clip.read_bytes()
    for _ in range(3):
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(
                b"POST /api/jobs?name=cut.mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data[: len(data) // 3]
            )
            time.sleep(0.2)  # the server is reading the body now
    deadline = time.monotonic() + 10
    while server.job_folders() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.job_folders() == before  # the partial uploads are gone
    status, job = upload(server, clip)  # and the server works on
    assert status == 201
    server.wait(job["id"])


def test_a_job_runs_on_when_its_client_goes_away(server: Served, clip: Path) -> None:
    data = clip.read_bytes()
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(
            b"POST /api/jobs?name=gone.mp4&fps=4 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        answer = sock.makefile("rb")
        assert answer.readline().startswith(b"HTTP/1.1 201")
        length = 0
        while (line := answer.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        job_id = json.loads(answer.read(length))["id"]
    # The uploader is gone before the job ends.
    for _ in range(5):  # status requests abandoned before the answer
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(f"GET /api/jobs/{job_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert server.wait(job_id)["result"]["num_samples"] == 8


# ---------------------------------------------------------------------------------------
# Queue, cancelling, cleanup (with a runner that waits for the test's signal)


class GatedRunner:
    """Runs no model: each job waits until the test opens its gate (or cancels it)."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.gates: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def gate(self, job_id: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(job_id, threading.Event())

    def __call__(self, job: Job, queue: JobQueue) -> None:
        self.order.append(job.id)
        job.total = 10
        while not self.gate(job.id).wait(0.01):
            check_cancelled(job)


def test_jobs_queue_in_order_one_at_a_time_and_show_their_position(tmp_path: Path) -> None:
    runner = GatedRunner()
    with running_server(tmp_path / "work", runner=runner, max_waiting=3) as server:
        ids = [server.json("POST", "/api/demo", b"")[1]["id"] for _ in range(4)]
        server.wait(ids[0], ("running",))
        positions = [server.json("GET", f"/api/jobs/{i}")[1]["position"] for i in ids]
        assert positions == [0, 1, 2, 3]
        states = [server.json("GET", f"/api/jobs/{i}")[1]["state"] for i in ids]
        assert states == ["running", "queued", "queued", "queued"]
        status, body = server.json("POST", "/api/demo", b"")
        assert status == 503 and "3 jobs are waiting already" in body["error"]
        for job_id in ids:
            runner.gate(job_id).set()
            server.wait(job_id)
        assert runner.order == ids
        assert server.json("GET", f"/api/jobs/{ids[-1]}")[1]["position"] is None


def test_cancel_a_queued_and_a_running_job(tmp_path: Path) -> None:
    runner = GatedRunner()
    with running_server(tmp_path / "work", runner=runner) as server:
        running, queued = (server.json("POST", "/api/demo", b"")[1]["id"] for _ in range(2))
        server.wait(running, ("running",))
        assert server.json("DELETE", f"/api/jobs/{queued}")[0] == 200
        assert server.request("GET", f"/api/jobs/{queued}")[0] == 404
        assert not (server.work_dir / queued).exists()
        assert server.json("DELETE", f"/api/jobs/{running}")[0] == 200
        assert server.wait(running, ("cancelled",))["state"] == "cancelled"
        assert runner.order == [running]  # the cancelled queued job never ran
        assert server.request("DELETE", f"/api/jobs/{'a' * 32}")[0] == 404


def test_finished_jobs_are_removed_after_the_keep_time(tmp_path: Path) -> None:
    runner = GatedRunner()
    with running_server(tmp_path / "work", runner=runner, keep_seconds=600) as server:
        queue = server.queue
        first, second = (server.json("POST", "/api/demo", b"")[1]["id"] for _ in range(2))
        runner.gate(first).set()
        server.wait(first)
        assert queue.cleanup(time.monotonic() + 599) == []  # not yet
        assert queue.cleanup(time.monotonic() + 601) == [first]
        assert server.request("GET", f"/api/jobs/{first}")[0] == 404
        assert not (server.work_dir / first).exists()
        # Unfinished jobs stay, however old.
        assert queue.cleanup(time.monotonic() + 10**6) == []
        assert (server.work_dir / second).is_dir()
        runner.gate(second).set()
        server.wait(second)


def test_a_job_stays_while_a_rerun_of_it_is_kept(tmp_path: Path, clip: Path) -> None:
    with running_server(tmp_path / "work", keep_seconds=600) as server:
        status, original = upload(server, clip)
        original = server.wait(original["id"])
        status, rerun = server.json("POST", f"/api/jobs/{original['id']}/rerun", b"")
        rerun = server.wait(rerun["id"])
        later = time.monotonic() + 601
        original_job = server.queue.get(original["id"])
        original_job.finished -= 300  # the original ended earlier than its re-run
        assert server.queue.cleanup(later - 100) == []  # the re-run is kept: so is its source
        assert sorted(server.queue.cleanup(later)) == sorted([original["id"], rerun["id"]])
        assert server.job_folders() == []


def test_the_cleanup_thread_removes_expired_jobs_by_itself(tmp_path: Path) -> None:
    runner = GatedRunner()
    work = tmp_path / "work"
    with running_server(work, runner=runner, keep_seconds=0.3) as server:
        job_id = server.json("POST", "/api/demo", b"")[1]["id"]
        runner.gate(job_id).set()
        deadline = time.monotonic() + 10
        while server.request("GET", f"/api/jobs/{job_id}")[0] != 404:
            assert time.monotonic() < deadline, "the finished job was never removed"
            time.sleep(0.1)
        assert not (work / job_id).exists()


def test_stopping_cancels_the_running_job_and_removes_every_job_folder(tmp_path: Path) -> None:
    runner = GatedRunner()
    work = tmp_path / "work"
    with running_server(work, runner=runner) as server:
        first = server.json("POST", "/api/demo", b"")[1]["id"]
        server.json("POST", "/api/demo", b"")
        server.wait(first, ("running",))
        assert len(server.job_folders()) == 2
    assert list(work.iterdir()) == []  # the never-opened gate did not hold the shutdown


# ---------------------------------------------------------------------------------------
# One model in memory


def test_model_cache_holds_one_model(tmp_path: Path) -> None:
    cache = ModelCache("cpu")
    first = ModelChoice("m0", "a", DEMO_CHECKPOINT)
    second = ModelChoice("m1", "b", DEMO_CHECKPOINT)
    predictor = cache.get(first, "auto")
    assert cache.get(first, "auto") is predictor and cache.loads == 1
    assert cache.get(first, "fp32") is predictor  # auto means fp32 on a CPU: no reload
    gone = weakref.ref(predictor)
    del predictor
    other = cache.get(second, "auto")
    assert gone() is None  # the first model was dropped before the second was built
    assert cache.loads == 2 and cache.current == ("m1", "float32")
    bf16 = cache.get(second, "bf16")
    assert bf16 is not other and str(bf16.dtype) == "torch.bfloat16"


def test_model_choices_pair_names_and_checkpoints(tmp_path: Path) -> None:
    default = model_choices([])
    assert [(c.id, c.checkpoint.name) for c in default] == [("m0", "demo_tiny_s4.safetensors")]
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    both = model_choices([a, b], ["res50_s4"])
    assert [c.name for c in both] == ["res50_s4", "res50_s4"]
    assert [c.name for c in model_choices([a, b], ["res50_s4", "pvt2_s4"])] == [
        "res50_s4",
        "pvt2_s4",
    ]
    with pytest.raises(Exception, match="once per --checkpoint"):
        model_choices([a, b], ["x", "y", "z"])
    with pytest.raises(MissingFileError, match="checkpoint file not found"):
        model_choices([tmp_path / "missing.pth"])


def test_released_weights_are_offered_by_name_and_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from dataclasses import replace

    from avsegformer import hub, zoo
    from avsegformer.checkpoint import save_checkpoint
    from avsegformer.modeling.build import build_model

    monkeypatch.setenv(hub.ENV_HOME, str(tmp_path / "home"))
    monkeypatch.setenv(hub.ENV_OFFLINE, "1")
    monkeypatch.delenv(hub.ENV_MIRROR, raising=False)
    entry = replace(zoo.get_weights("res50_s4"), name="tiny_s4", config="tiny_s4",
                    file_name="tiny_s4_released.safetensors", size=None, sha256=None)  # fmt: skip
    monkeypatch.setitem(zoo._WEIGHTS, "tiny_s4", entry)
    # Nothing cached: the demo model only; a named model cannot be had offline.
    assert [c.checkpoint.name for c in model_choices([])] == ["demo_tiny_s4.safetensors"]
    with pytest.raises(Exception, match="tiny_s4"):
        model_choices([], ["tiny_s4"])
    # Placed in the cache (as `avsegformer download` would): offered, checked on the way.
    cached = hub.cached_path("tiny_s4")
    cached.parent.mkdir(parents=True)
    save_checkpoint(build_model("tiny_s4"), cached)
    choices = model_choices([])
    assert [(c.id, c.label, c.name) for c in choices] == [
        ("m0", "demo_tiny_s4.safetensors", None),
        ("m1", "tiny_s4 (released weights)", "tiny_s4"),
    ]
    assert choices[1].checkpoint == cached and hub.cache_status("tiny_s4") == "verified"
    (named,) = model_choices([], ["tiny_s4"])
    assert named.checkpoint == cached and named.name == "tiny_s4"
    # A damaged cached file is left out with a warning; the page still starts.
    cached.write_bytes(b"not weights")
    with caplog.at_level("WARNING"):
        assert len(model_choices([])) == 1
    assert "left out the cached tiny_s4 weights" in caplog.text


def test_a_broken_checkpoint_fails_the_job_with_a_message_not_the_server(
    tmp_path: Path, clip: Path
) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    choices = model_choices([DEMO_CHECKPOINT, broken])
    with running_server(tmp_path / "work", choices=choices) as server:
        status, job = upload(server, clip, model="m1")
        assert status == 201
        job = server.wait(job["id"], ("failed",))
        assert "broken.safetensors" in job["error"] and "Traceback" not in job["error"]
        status, job = upload(server, clip, model="m0")
        assert server.wait(job["id"])["result"]["num_samples"] == 2


def test_an_overlay_that_cannot_be_encoded_leaves_the_masks_and_says_so(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avsegformer.data.video import VideoWriter

    def refuse(self, *args, **kwargs):
        raise RuntimeError("the encoder refused the frame")

    monkeypatch.setattr(VideoWriter, "write_frame", refuse)
    with running_server(tmp_path / "work") as server:
        status, job = upload(server, clip, fps=2)
        job = server.wait(job["id"])
        assert job["result"]["files"]["overlay"] is None
        assert any("overlay video could not be written" in n and "encoder refused" in n
                   for n in job["notes"]), job["notes"]  # fmt: skip
        assert len(job["result"]["frames"]) == 4
        files = files_of(server, {"result": {"files": {
            k: v for k, v in job["result"]["files"].items() if v is not None}}})  # fmt: skip
        with zipfile.ZipFile(io.BytesIO(files["masks_zip"])) as archive:
            assert len([n for n in archive.namelist() if n.startswith("masks/")]) == 4
        status, _, _ = server.request("GET", f"/api/jobs/{job['id']}/files/result/overlay.mp4")
        assert status == 404


# ---------------------------------------------------------------------------------------
# predict's progress hook


def test_process_video_reports_each_sample_and_stops_when_the_hook_raises(
    tmp_path: Path, clip: Path
) -> None:
    from avsegformer import Predictor
    from avsegformer.commands.predict import process_video

    predictor = Predictor.from_checkpoint(DEMO_CHECKPOINT, device="cpu")
    calls: list[tuple[int, int]] = []
    process_video(predictor, clip, tmp_path / "out", fps=2, on_sample=lambda *a: calls.append(a))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]

    def stop(done: int, total: int) -> None:
        if done == 2:
            raise JobCancelled("stop")

    with pytest.raises(JobCancelled):
        process_video(predictor, clip, tmp_path / "stopped", fps=2, on_sample=stop)
    # predict keeps what it wrote before the stop, and its summary says the run is partial.
    stopped = tmp_path / "stopped"
    assert sorted(p.name for p in (stopped / "masks").iterdir()) == ["000000.png", "000001.png"]
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "incomplete" and "stop" in summary["error"]
    assert not (stopped / "overlay.mp4").exists()


# ---------------------------------------------------------------------------------------
# The command


def test_is_loopback() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.2", "::", "example.org"]))


def test_serve_refuses_bad_options_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from avsegformer.cli import main

    for argv, message in [
        (["--checkpoint", str(tmp_path / "nope.pth")], "nope.pth: checkpoint file not found"),
        (
            ["--checkpoint", str(DEMO_CHECKPOINT), *["--model", "a", "--model", "b"]],
            "--model was given 2 times for 1 checkpoint(s)",
        ),
        (["--model", "tiny_s4"], "'tiny_s4' has no released weights"),
        (["--model", "res50"], "unknown model 'res50'; available: res50_s4"),
        (["--max-upload-mb", "0"], "--max-upload-mb must be positive"),
        (["--keep-minutes", "-1"], "--keep-minutes must be positive"),
        (["--port", "70000"], "--port must lie in 0..65535"),
        (["--work-dir", "/sys/avsegformer-test/work"], "--work-dir /sys/avsegformer-test/work"),
    ]:
        assert main(["serve", "--port", "0", *argv]) == 2, argv
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("avsegformer serve: error: ") and message in line, line


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    from avsegformer.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--work-dir", str(tmp_path)]) == 2


def test_serve_on_another_host_warns_prints_the_url_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    process = subprocess.Popen(
        [sys.executable, "-m", "avsegformer.cli", "serve", "--host", "0.0.0.0", "--port", "0"]
        + ["--work-dir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"},
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "open http://" in line:
                break
        url = lines[-1].split("open ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /api/config HTTP/1.1\r\nHost: 10.1.2.3\r\nConnection: close\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")  # any host name on 0.0.0.0
        assert len([p for p in work.iterdir()]) == 1  # this server's own job folder
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "warning: listening on 0.0.0.0: anyone who can reach this machine" in err
    assert err.strip().endswith("avsegformer serve: stopped")
    assert "Traceback" not in err
    assert list(work.iterdir()) == []  # removed at exit


def test_each_server_has_its_own_work_folder_and_a_killed_ones_is_swept(tmp_path: Path) -> None:
    from avsegformer.commands.serve import make_work_dir

    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = tmp_path / f".jobs.tmp-{int(finished.stdout)}-0123abcd"  # a server killed with -9
    (dead / ("a" * 32)).mkdir(parents=True)
    mine = make_work_dir(str(tmp_path))
    other = make_work_dir(str(tmp_path))  # a second server on the same --work-dir
    assert sorted(tmp_path.iterdir()) == sorted([mine, other])
    assert mine.name.startswith(f".jobs.tmp-{os.getpid()}-")


def test_an_avss_model_reports_its_classes_for_the_plot(tmp_path: Path, clip: Path) -> None:
    import torch

    from avsegformer import build_model
    from avsegformer.checkpoint import save_checkpoint

    torch.manual_seed(0)
    weights = save_checkpoint(
        build_model("tiny_avss"), tmp_path / "avss.safetensors", config="tiny_avss"
    )
    with running_server(tmp_path / "work", choices=model_choices([weights])) as server:
        status, job = upload(server, clip)
        assert status == 201, job
        result = server.wait(job["id"])["result"]
    assert result["model"] == {"name": "tiny_avss", "task": "avss", "binary": False}
    listed = {c["id"]: c for c in result["classes"]}
    seen = {c["id"]: c["name"] for f in result["frames"] for c in f["classes"]}
    assert seen and sorted(seen) == sorted(listed)  # one plot line per class present
    for class_id, name in seen.items():
        assert listed[class_id]["name"] == name != "background"
        assert re.fullmatch(r"#[0-9a-f]{6}", listed[class_id]["colour"])
