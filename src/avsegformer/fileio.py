"""Writing files so that nothing is half-written or lost: the one place for temporaries.

Every file or folder this package writes goes first to a *temporary sibling*
(``.NAME.tmp-<pid>-<random>[suffix]`` in the same folder) and is renamed over its
final name only when complete, so a crash, a full disk or a kill leaves either the old
file or the new one, never a torn one. The pid in the name lets a later start remove
the temporaries of processes that died (:func:`sweep_stale_temporaries`); SIGTERM is
turned into an exception by the command line so the ``finally`` blocks below run.

Outputs are checked before the work (:func:`check_writable`), so a long evaluation is
not thrown away because its result file cannot be written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputNotWritableError

#: ``.NAME.tmp-PID-HEX[SUFFIX]``: the name of every temporary this package writes.
_TEMPORARY = re.compile(r"^\..+\.tmp-(?P<pid>\d+)-[0-9a-f]{8}(\.[A-Za-z0-9]+)?$")


def temporary_sibling(path: str | os.PathLike[str], *, keep_suffix: bool = False) -> Path:
    """A fresh temporary name next to ``path`` (``keep_suffix``: same extension, for
    writers that pick the format from it, e.g. FFmpeg's ``.mp4``)."""
    path = Path(path)
    suffix = path.suffix if keep_suffix else ""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is one of :func:`temporary_sibling`'s names."""
    return _TEMPORARY.match(name) is not None


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree; a missing one is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write (a file or a folder); on success it
    replaces ``path`` (a folder ``path`` is replaced whole), on any exception (SIGTERM
    included) it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path, keep_suffix=keep_suffix)
    try:
        yield temporary
        if temporary.is_dir() and path.is_dir() and not path.is_symlink():
            # os.replace cannot replace a non-empty folder: move the old one aside first.
            old = temporary_sibling(path)
            os.replace(path, old)
            os.replace(temporary, path)
            remove_path(old)
        else:
            os.replace(temporary, path)
    except BaseException:
        remove_path(temporary)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary sibling; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def sweep_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries in ``folder`` (not recursive) left by dead processes.

    Only names of :func:`temporary_sibling`'s form are touched, and only when the
    process in the name no longer runs. Returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or _pid_alive(int(match["pid"])):
            continue
        remove_path(entry)
        removed.append(entry)
    return removed


def check_writable(
    path: str | os.PathLike[str], *, what: str = "output", folder: bool = False
) -> Path:
    """Fail now, before any work, if ``path`` cannot be written.

    ``folder=True``: ``path`` is a folder to create or fill (an existing file there is
    an error); otherwise a file to create or replace (an existing folder is an error).
    The nearest existing ancestor must be a writable folder; it is tried by creating
    and removing a temporary file, which also catches read-only file systems.

    Raises:
        OutputNotWritableError: naming ``path`` and why.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputNotWritableError(f"{what} {path} is a file, not a folder")
    if not folder and path.is_dir():
        raise OutputNotWritableError(f"{what} {path} is a folder, not a file")
    probe_in = path if folder and path.is_dir() else path.parent
    while not probe_in.exists():
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise OutputNotWritableError(f"{what} {path}: {probe_in} is a file, not a folder")
    probe = temporary_sibling(probe_in / "write-check")
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OutputNotWritableError(
            f"{what} {path} cannot be written: {probe_in}: {reason}"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    if not folder and path.exists() and not os.access(path, os.W_OK):
        raise OutputNotWritableError(f"{what} {path} cannot be written: permission denied")
    return path


def os_error_text(exc: OSError) -> str:
    """One line for an operating-system error while reading or writing (disk full, ...)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    where = exc.filename if exc.filename is not None else ""
    hint = ""
    if exc.errno == errno.ENOSPC:
        hint = " (free some space, or write elsewhere; files written so far are complete)"
    return f"{where}: {reason}{hint}" if where else f"{reason}{hint}"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
