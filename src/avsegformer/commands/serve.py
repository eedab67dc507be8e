"""``avsegformer serve``: a local web page to segment a video and watch the result with sound.

Examples::

    avsegformer serve                                  # the shipped demo model, http://127.0.0.1:7860/
    avsegformer serve --model res50_s4 --model pvt2_s4 # released weights (downloaded once)
    avsegformer serve --checkpoint S4_res50_best.pth --model res50_s4 --device cuda
    avsegformer serve --checkpoint a.safetensors --checkpoint b.safetensors --port 8000

The page uploads a video (or generates the demo clip), shows the progress per sampled
frame, then the overlay video with its sound next to the original, the masks with their
times, the segmented area over time, and links to download the masks, ``summary.json``
and ``overlay.mp4``; a job can be re-run with its sound silenced or swapped for another
clip's. Jobs run one at a time (one model in memory) in the order they came; each has
its own folder under ``--work-dir`` and is removed ``--keep-minutes`` after it ends.

Needs the ``web`` extra: ``pip install 'avsegformer[web]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import logging
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from ..errors import AVSegFormerError, ConfigError

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="FILE",
        help="a model the page offers (repeat for several; default: the shipped demo model "
        "checkpoints/demo_tiny_s4.safetensors and every released model already downloaded)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="without --checkpoint: a released model to offer (its weights are downloaded "
        "if not cached; repeat for several). With --checkpoint: the configuration of "
        "files that do not record one (the authors' .pth, e.g. res50_s4), once for all "
        "or once per --checkpoint in the same order",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only; another "
        "address makes the page reachable from the network)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)"
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=200.0,
        metavar="MB",
        help="largest upload accepted, in MB (default 200)",
    )
    parser.add_argument(
        "--keep-minutes",
        type=float,
        default=60.0,
        metavar="MIN",
        help="finished jobs and their files are removed this long after they end (default 60)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=20,
        metavar="N",
        help="jobs that may wait in the queue; more are refused until it drains (default 20)",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        metavar="DIR",
        help="where job folders are made, in a folder of this server's own that is removed "
        "at exit (default: the system's temporary folder)",
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.x, ::1, localhost)."""
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    return False


def open_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (port 0: a free one), or a one-line error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(
            f"--host {host}: not an address of this machine ({exc.strerror})"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use (another server?): pass --port N, or 0 for any"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve.app import LOOPBACK_NAMES, ServerOptions, create_app
        from ..serve.jobs import JobQueue
        from ..serve.models import model_choices
    except ModuleNotFoundError as exc:
        if exc.name not in ("starlette", "uvicorn") and not str(exc.name).startswith(
            ("starlette.", "uvicorn.")
        ):
            raise
        raise AVSegFormerError(
            f"avsegformer serve needs {exc.name}, which is not installed: "
            "pip install 'avsegformer[web]'"
        ) from None

    if not args.max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if not args.keep_minutes > 0:
        raise ConfigError(f"--keep-minutes must be positive, got {args.keep_minutes}")
    if args.max_queue < 1:
        raise ConfigError(f"--max-queue must be >= 1, got {args.max_queue}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must lie in 0..65535, got {args.port}")
    choices = model_choices(args.checkpoint, args.model)
    loopback = is_loopback(args.host)
    sock = open_socket(args.host, args.port)

    work_dir: Path | None = None
    try:
        work_dir = make_work_dir(args.work_dir)
        queue = JobQueue(
            work_dir,
            device=args.device,
            keep_seconds=args.keep_minutes * 60,
            max_waiting=args.max_queue,
        )
        # The default model now: a bad checkpoint or device is reported before the page opens.
        predictor = queue.models.get(choices[0], "auto")
        options = ServerOptions(
            choices=choices,
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
            device_type=queue.models.device.type,
            allowed_hosts=list(LOOPBACK_NAMES) if loopback else ["*"],
        )
        app = create_app(queue, options)
        if not loopback:
            logger.warning(
                "listening on %s: anyone who can reach this machine on port %d can use the "
                "page, upload files and run the model (the default --host %s keeps it local)",
                args.host,
                sock.getsockname()[1],
                DEFAULT_HOST,
            )
        print(
            f"models: {', '.join(c.label for c in choices)} "
            f"(default {predictor.name} on {queue.models.device})"
        )
        print(f"jobs in {work_dir}, kept {args.keep_minutes:g} min after they end")
        print(f"avsegformer serve: open {url_of(sock, args.host)}  (Ctrl-C to stop)", flush=True)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                timeout_graceful_shutdown=5,
                lifespan="on",
                access_log=False,
            )
        )
        # uvicorn re-raises the Ctrl-C it handled, after shutting down cleanly.
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
        print("avsegformer serve: stopped", file=sys.stderr)
        return 0
    finally:
        sock.close()
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)


def make_work_dir(requested: str | None) -> Path:
    """This server's own folder for job folders, inside ``requested`` (default: the
    system's temporary folder), named as a temporary of this process: removed at exit,
    and by the next start if this process is killed (``sweep_stale_temporaries``)."""
    from ..fileio import check_writable, sweep_stale_temporaries, temporary_sibling

    base = Path(requested) if requested else Path(tempfile.gettempdir()) / "avsegformer-serve"
    check_writable(base, what="--work-dir", folder=True)
    base.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(base)
    folder = temporary_sibling(base / "jobs")
    folder.mkdir()
    return folder
