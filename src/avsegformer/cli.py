"""The ``avsegformer`` command line: a thin shell over the library.

Each sub-command lives in ``avsegformer.commands.<name>`` and provides
``add_arguments(parser)`` and ``run(args) -> int``. Errors raised on purpose
(:class:`avsegformer.errors.AVSegFormerError`) are printed on one line, without a
traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import signal
import sys

from . import __version__, progress
from .errors import AVSegFormerError, Terminated

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("avsegformer.commands.train", "train a configuration on AVSBench or synthetic data"),
    "test": ("avsegformer.commands.test", "evaluate a checkpoint with the official metrics"),
    "predict": ("avsegformer.commands.predict", "segment the sounding objects in video files"),
    "synth": ("avsegformer.commands.synth", "generate a synthetic dataset in AVSBench layout"),
    "demo": ("avsegformer.commands.demo", "run the whole pipeline on a generated video"),
    "serve": ("avsegformer.commands.serve", "a local web page to segment videos in the browser"),
    "bench": ("avsegformer.commands.bench", "benchmark the model forward (prints JSON)"),
    "data-check": ("avsegformer.commands.data_check", "check an AVSBench dataset root"),
    "models": (
        "avsegformer.commands.models",
        "list the registered configurations and their released weights",
    ),
    "download": (
        "avsegformer.commands.download",
        "fetch the authors' released weights into the cache and verify them",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avsegformer",
        description="AVSegFormer audio-visual segmentation: train, test, predict.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--version", action="version", version=f"avsegformer {__version__}", help="show the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


class _Formatter(logging.Formatter):
    """Plain messages; warnings and errors say so (``warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def main(argv: list[str] | None = None) -> int:
    from .commands._common import deprecated_used

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s")
        if args.verbose
        else _Formatter("%(message)s")
    )
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    for old, new in deprecated_used(argv, getattr(args, "_aliases", None) or {}):
        logging.getLogger("avsegformer").warning("%s is deprecated: use %s", old, new)
    _terminate_with_exception()
    try:
        if progress.on_terminal():
            from tqdm.contrib.logging import logging_redirect_tqdm

            with logging_redirect_tqdm():  # log lines above the progress bars
                return int(args._run(args) or 0)
        return int(args._run(args) or 0)
    except AVSegFormerError as exc:
        first, _, details = exc.cli_text().partition("\n")
        more = "" if not details or args.verbose else " (details: add -v)"
        print(f"avsegformer {args.command}: error: {first}{more}", file=sys.stderr)
        if details and args.verbose:
            print(details, file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        from .fileio import os_error_text

        print(f"avsegformer {args.command}: error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"avsegformer {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"avsegformer {args.command}: interrupted", file=sys.stderr)
        return 130


# Errors of the machine, not of the program: disk full, quota, read-only, permissions.
_ENVIRONMENT_ERRNOS = {
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM")
    if hasattr(errno, name)
}


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _terminate_with_exception() -> None:
    """SIGTERM raises :class:`Terminated`, so ``finally`` blocks remove temporaries."""
    # Not in the main thread (main() called from a thread): leave the signal alone.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":
    sys.exit(main())
