"""A real ``avsegformer serve`` application on a free loopback port, for the server and
browser tests (``from serving import running_server``), and a small HTTP client.

The server is uvicorn in a thread, serving the same app the command serves; requests go
over real sockets (``http.client``), so streaming uploads, early refusals and clients
that disappear behave as they do for a browser.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

pytest.importorskip("starlette", reason="the web extra is not installed: pip install -e .[web]")
import uvicorn  # noqa: E402

from avsegformer.commands.serve import open_socket  # noqa: E402
from avsegformer.serve.app import ServerOptions, create_app  # noqa: E402
from avsegformer.serve.jobs import JobQueue, Runner  # noqa: E402
from avsegformer.serve.models import ModelChoice, model_choices  # noqa: E402


@dataclass
class Served:
    """A running server: its address, queue and work folder."""

    host: str
    port: int
    queue: JobQueue
    work_dir: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        **query: Any,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request."""
        if query:
            path += "?" + urlencode(query)
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            chunked = body is not None and not isinstance(body, bytes)  # an iterable of chunks
            connection.request(
                method, path, body=body, headers=headers or {}, encode_chunked=chunked
            )
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, body: bytes | None = None, **query: Any) -> Any:
        status, _, data = self.request(method, path, body, **query)
        return status, json.loads(data)

    def wait(self, job_id: str, states: tuple[str, ...] = ("done",), timeout: float = 120) -> Any:
        """Poll a job until it is in one of ``states`` (or any finished state: then fail)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, job = self.json("GET", f"/api/jobs/{job_id}")
            assert status == 200, job
            if job["state"] in states:
                return job
            if job["state"] in ("done", "failed", "cancelled"):
                raise AssertionError(f"job ended {job['state']}: {job['error']}")
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not {states} after {timeout} s")

    def job_folders(self) -> list[Path]:
        return sorted(p for p in self.work_dir.iterdir() if p.is_dir())


@contextlib.contextmanager
def running_server(
    work_dir: Path,
    *,
    choices: list[ModelChoice] | None = None,
    max_upload_bytes: int = 50 * 1024 * 1024,
    keep_seconds: float = 3600,
    max_waiting: int = 20,
    runner: Runner | None = None,
) -> Iterator[Served]:
    """Serve the app on 127.0.0.1 (a free port) for the duration of the block."""
    work_dir.mkdir(parents=True, exist_ok=True)
    queue = JobQueue(
        work_dir, device="cpu", keep_seconds=keep_seconds, max_waiting=max_waiting, runner=runner
    )
    options = ServerOptions(choices or model_choices([]), max_upload_bytes, "cpu")
    app = create_app(queue, options)
    sock = open_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Served("127.0.0.1", sock.getsockname()[1], queue, work_dir)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
