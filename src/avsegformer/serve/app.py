"""The web application of ``avsegformer serve``: one static page and a small JSON API.

Routes (all JSON errors are ``{"error": "one line"}`` with a 4xx/5xx status):

=======================================  ==================================================
``GET /``                                the page (``static/index.html``, ``app.js``, ``style.css``)
``GET /api/config``                      models, precisions, limits the page offers
``POST /api/jobs?name=&model=&fps=&precision=``   body: the video file itself -> 201 job
``POST /api/demo?model=&fps=&precision=&seed=``   the generated demo clip -> 201 job
``POST /api/jobs/{id}/rerun?audio=silence``       the same pictures, silenced -> 201 job
``POST /api/jobs/{id}/rerun?audio=clip&name=``    body: another clip, whose sound is used
``GET /api/jobs/{id}``                   state, queue position, progress, results
``DELETE /api/jobs/{id}``                cancel a job or remove its files
``GET /api/jobs/{id}/files/{file}``      input, overlay.mp4, summary.json, masks.zip, masks
=======================================  ==================================================

Uploads are the request body itself (no multipart parsing): it is streamed to the job's
folder and cut off as soon as it passes ``--max-upload-mb``, so memory stays flat and a
client that goes away mid-upload leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..errors import AVSegFormerError
from .jobs import (
    SERVED_FILE,
    Job,
    JobQueue,
    JobSettings,
    QueueFullError,
    display_name,
    stored_suffix,
)
from .models import ModelChoice, precision_choices

STATIC = Path(__file__).resolve().parent / "static"
#: The sampling rates the page may ask for (samples per second).
MIN_FPS, MAX_FPS = 0.1, 10.0
#: Host names a loopback server answers to (others: DNS rebinding from a web page).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass
class ServerOptions:
    """What the server was started with."""

    choices: list[ModelChoice]
    max_upload_bytes: int = 200 * 1024 * 1024
    device_type: str = "cpu"
    #: Host names the server answers to ("*": any, when it listens on other interfaces).
    allowed_hosts: list[str] = field(default_factory=lambda: list(LOOPBACK_NAMES))

    @property
    def max_upload_mb(self) -> float:
        return self.max_upload_bytes / (1024 * 1024)


class RequestError(Exception):
    """A request refused with ``status`` and a one-line message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": message}, status_code=status, headers={"Cache-Control": "no-store"}
    )


def _json(value: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(value, status_code=status, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------------------------
# Requests -> settings, uploads


def _settings(
    request: Request, options: ServerOptions, base: JobSettings | None = None
) -> JobSettings:
    """The job settings a request asks for (``base``'s where it names none)."""
    query = request.query_params
    choices = {c.id: c for c in options.choices}
    model_id = query.get("model") or (base.model.id if base else options.choices[0].id)
    if model_id not in choices:
        raise RequestError(400, f"unknown model {model_id!r}; choose from {', '.join(choices)}")
    text = query.get("fps")
    if text is None:
        fps = base.fps if base else 1.0
    else:
        try:
            fps = float(text)
        except ValueError:
            raise RequestError(400, f"fps must be a number, got {text!r}") from None
        if not math.isfinite(fps) or not MIN_FPS <= fps <= MAX_FPS:
            raise RequestError(
                400, f"fps must lie between {MIN_FPS:g} and {MAX_FPS:g} samples per second"
            )
    allowed = precision_choices(options.device_type)
    precision = query.get("precision") or (base.precision if base else "auto")
    if precision not in allowed:
        raise RequestError(
            400,
            f"precision {precision!r} is not available on this server's "
            f"{options.device_type} (choose from {', '.join(allowed)})",
        )
    return JobSettings(choices[model_id], fps, precision)


def megabytes(value: float) -> str:
    """``value`` MB as the page shows it: one decimal at most (200, 2.9, 0.4)."""
    return f"{round(value, 1):g}"


def _too_large(name: str, size: float | None, options: ServerOptions) -> RequestError:
    what = f"{name} is {size / 1e6:.1f} MB" if size is not None else f"{name} is too large"
    return RequestError(
        413,
        f"{what}: uploads are limited to {megabytes(options.max_upload_mb)} MB "
        "(the server's --max-upload-mb)",
    )


async def _receive(request: Request, path: Path, name: str, options: ServerOptions) -> int:
    """Stream the request body into ``path``; refuse it as soon as it is over the limit."""
    limit = options.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(name, int(declared), options)
    written = 0
    with open(path, "wb") as file:
        async for chunk in request.stream():
            written += len(chunk)
            if written > limit:
                raise _too_large(name, None, options)
            file.write(chunk)
    if written == 0:
        raise RequestError(400, f"{name}: the upload is empty (0 bytes)")
    return written


async def _check_video(job: Job, path: Path, what: str) -> bool:
    """Probe ``path``; a file FFmpeg cannot read as a video is refused (415).

    Returns whether it has sound."""
    from ..data.video import probe_video

    try:
        info = await run_in_threadpool(probe_video, path)
    except AVSegFormerError as error:
        message = job.public_message(error)  # names the file already, as ``what``
        shown = message if message.startswith(what) else f"{what}: {message}"
        raise RequestError(415, shown) from None
    return info.has_audio


# ---------------------------------------------------------------------------------------
# Job records for the page


def job_json(job: Job, queue: JobQueue) -> dict[str, Any]:
    """What ``GET /api/jobs/{id}`` returns."""
    base = f"/api/jobs/{job.id}/files/"
    record: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "name": job.name,
        "state": job.state,
        "phase": job.phase,
        "position": queue.position(job),
        "done": job.done,
        "total": job.total,
        "error": job.error,
        "notes": list(job.notes),
        "audio": job.audio,
        "audio_name": job.audio_name,
        "parent": job.parent,
        "settings": {
            "model": job.settings.model.id,
            "model_label": job.settings.model.label,
            "fps": job.settings.fps,
            "precision": job.settings.precision,
        },
        "result": None,
    }
    if job.state == "done" and job.result is not None:
        stem = Path(job.name).stem or "video"
        result = dict(job.result)
        result["frames"] = [{**f, "mask": base + f["mask"]} for f in job.result["frames"]]
        result["files"] = {
            "input": base + job.input.name if job.input is not None else None,
            "overlay": base + "result/overlay.mp4" if job.result.get("overlay", True) else None,
            "summary": base + "result/summary.json",
            "masks_zip": base + "masks.zip",
        }
        result["downloads"] = {
            "overlay": f"{stem}-overlay.mp4",
            "summary": f"{stem}-summary.json",
            "masks_zip": f"{stem}-masks.zip",
        }
        record["result"] = result
    return record


# ---------------------------------------------------------------------------------------
# The application


def create_app(queue: JobQueue, options: ServerOptions, *, manage_queue: bool = True) -> Starlette:
    """The ASGI application; ``manage_queue``: start the queue with the app and stop it
    (cancel, remove job folders) when the app shuts down."""

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def config(request: Request) -> Response:
        return _json(
            {
                "version": __version__,
                "models": [c.as_json() for c in options.choices],
                "precisions": list(precision_choices(options.device_type)),
                "device": options.device_type,
                "fps": {"default": 1.0, "min": MIN_FPS, "max": MAX_FPS},
                "max_upload_mb": options.max_upload_mb,
                "max_upload_bytes": options.max_upload_bytes,
                "keep_minutes": queue.keep_seconds / 60,
            }
        )

    async def upload(request: Request) -> Response:
        name = display_name(request.query_params.get("name"))
        settings = _settings(request, options)
        queue.check_room()
        job_id, folder = queue.new_folder()
        job = Job(job_id, "upload", name, folder, settings)
        job.input = folder / ("input" + stored_suffix(name))
        with _removed_on_failure(folder):
            await _receive(request, job.input, name, options)
            if not await _check_video(job, job.input, name):
                job.notes.append("This video has no sound: the model will hear silence.")
            queue.submit(job)
        return _json(job_json(job, queue), 201)

    async def demo(request: Request) -> Response:
        settings = _settings(request, options)
        text = request.query_params.get("seed", "0")
        if not text.isdigit() or int(text) > 2**31:
            raise RequestError(400, f"seed must be a whole number >= 0, got {text!r}")
        queue.check_room()
        job_id, folder = queue.new_folder()
        job = Job(job_id, "demo", "demo clip", folder, settings, demo_seed=int(text))
        with _removed_on_failure(folder):
            queue.submit(job)
        return _json(job_json(job, queue), 201)

    async def rerun(request: Request) -> Response:
        earlier = _job_or_404(request)
        # Always from the job with the video's own sound, so the page compares with it.
        original = queue.get(earlier.parent) if earlier.parent else earlier
        if original is None or original.state != "done" or original.input is None:
            raise RequestError(
                409, "that job has no finished result to start from (it may have expired)"
            )
        audio = request.query_params.get("audio", "silence")
        if audio not in ("silence", "clip"):
            raise RequestError(400, f"audio must be 'silence' or 'clip', got {audio!r}")
        settings = _settings(request, options, base=original.settings)
        queue.check_room()
        job_id, folder = queue.new_folder()
        job = Job(job_id, "rerun", original.name, folder, settings, parent=original.id)
        job.audio = audio
        with _removed_on_failure(folder):
            if audio == "clip":
                job.audio_name = display_name(request.query_params.get("name"), "clip")
                job.audio_file = folder / ("audio" + stored_suffix(job.audio_name))
                await _receive(request, job.audio_file, job.audio_name, options)
                if not await _check_video(job, job.audio_file, job.audio_name):
                    raise RequestError(
                        415, f"{job.audio_name} has no sound to swap in: choose a clip with sound"
                    )
            job.source = folder / ("source" + original.input.suffix)
            _link_or_copy(original.input, job.source)
            queue.submit(job)
        return _json(job_json(job, queue), 201)

    async def status(request: Request) -> Response:
        return _json(job_json(_job_or_404(request), queue))

    async def cancel(request: Request) -> Response:
        job = _job_or_404(request)
        queue.cancel(job.id)
        return _json({"id": job.id, "cancelled": True})

    async def files(request: Request) -> Response:
        job = _job_or_404(request)
        relative = request.path_params["file"]
        if not SERVED_FILE.match(relative):
            raise RequestError(404, "no such file")
        folder = job.folder.resolve()
        path = (folder / relative).resolve()
        if not path.is_relative_to(folder) or not path.is_file():
            raise RequestError(404, "no such file (not written yet, or expired)")
        if request.query_params.get("download"):
            stem = Path(job.name).stem or "video"
            return FileResponse(path, filename=f"{stem}-{path.name}")
        return FileResponse(path)

    def _job_or_404(request: Request) -> Job:
        job = queue.get(request.path_params["job_id"])  # None for anything but a job id
        if job is None:
            raise RequestError(404, "no such job (it may have expired)")
        return job

    async def request_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        return _error(exc.status, str(exc))

    async def queue_full(request: Request, exc: Exception) -> Response:
        return _error(503, str(exc))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_queue:
            queue.start()
        try:
            yield
        finally:
            if manage_queue:
                await run_in_threadpool(queue.stop)

    routes = [
        Route("/", page),
        Route("/api/config", config),
        Route("/api/jobs", upload, methods=["POST"]),
        Route("/api/demo", demo, methods=["POST"]),
        Route("/api/jobs/{job_id}", status, methods=["GET"]),
        Route("/api/jobs/{job_id}", cancel, methods=["DELETE"]),
        Route("/api/jobs/{job_id}/rerun", rerun, methods=["POST"]),
        Route("/api/jobs/{job_id}/files/{file:path}", files),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=options.allowed_hosts),
            Middleware(_SameOriginMiddleware),
        ],
        exception_handlers={RequestError: request_error, QueueFullError: queue_full},
        lifespan=lifespan,
    )
    app.state.queue = queue
    app.state.options = options
    return app


class _SameOriginMiddleware:
    """Refuse changes (POST, DELETE) sent by another site's page: a page on the web
    could otherwise queue work on this machine from the visitor's browser."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            origin, host = headers.get("origin"), headers.get("host", "")
            if origin is not None and origin.split("://", 1)[-1] != host:
                response = _error(403, "requests from another site's page are refused")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


@contextlib.contextmanager
def _removed_on_failure(folder: Path) -> Any:
    """Remove a new job's folder if the request fails (bad upload, client gone...)."""
    try:
        yield
    except ClientDisconnect:
        shutil.rmtree(folder, ignore_errors=True)
        raise RequestError(400, "the client went away during the upload") from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` with ``source``'s content: a hard link (same disk, instant) or a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
