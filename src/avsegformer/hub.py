"""The released weights by name: download into a cache, verify, and hand out the path.

::

    avsegformer download res50_s4                    # or, in Python:
    predictor = avsegformer.Predictor.from_pretrained("res50_s4")
    model = avsegformer.build_model("res50_s4", pretrained=True)

What is published where (links, file names, published scores, licences) is declared next
to each configuration in :mod:`avsegformer.zoo` (:class:`~avsegformer.zoo.ReleasedWeights`).

* **Where**: ``$AVSEGFORMER_HOME/weights`` (default ``~/.cache/avsegformer/weights``), or the
  folder given (``--dir``, ``cache_dir=``).
* **From**: each entry's sources in order, or only ``$AVSEGFORMER_MIRROR/<file name>``
  when that is set (an ``http(s)://`` or ``file://`` URL, or a folder): a copy of the
  files for machines that cannot reach Google Drive.
* **How**: plain HTTP(S) with :mod:`urllib`, streamed to a stable ``.<file>.part`` next to
  the final name and resumed with an HTTP ``Range`` request after a cut connection (at
  once, ``retries`` times, and again on the next run). Google Drive links go through
  ``gdown`` (``pip install 'avsegformer[download]'``), which handles Drive's confirmation
  page for large files and keeps its own resumable partial file; a Drive *folder* link
  is listed with gdown and the file of the entry's name fetched from it.
* **Checked before first use**: size and sha256 where recorded, then a strict load into
  the entry's configuration (:func:`avsegformer.checkpoint.load_checkpoint`, which reads
  ``.pth`` files with ``torch.load(weights_only=True)``). Only then does the file get its
  final name. A download that fails the check is removed and the error says why; nothing
  half-written or unverified ever sits under the final name. A verified file gets a
  record (``.<file>.verified.json``: size, time stamp, sha256, source) and a model card
  (``<file>.md``). A file placed in the cache by hand is verified on its first use (and
  refused, not deleted, when it is not the released one).
* **Offline** (``offline=True``, ``--offline``, ``AVSEGFORMER_OFFLINE=1``) or no network:
  nothing is fetched, and a missing file raises :class:`~avsegformer.errors.DownloadError`
  naming the exact path to place it at and where to get it.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import __version__
from .errors import CheckpointError, ConfigError, DownloadError, WeightsVerificationError
from .fileio import atomic_write_text, check_writable, file_sha256, sweep_stale_temporaries
from .progress import on_terminal, progress_bar
from .zoo import (
    Config,
    ReleasedWeights,
    get_config,
    get_weights,
    list_weights,
    weights_for_config,
)

logger = logging.getLogger(__name__)

ENV_HOME = "AVSEGFORMER_HOME"
ENV_MIRROR = "AVSEGFORMER_MIRROR"
ENV_OFFLINE = "AVSEGFORMER_OFFLINE"
INSTALL_HINT = "pip install 'avsegformer[download]'"

#: Bytes read per network call.
_CHUNK = 1 << 20
#: Seconds without data before a connection counts as lost.
_TIMEOUT_S = 60.0
#: Seconds to wait before retry n (times n).
_RETRY_DELAY_S = 2.0

_DRIVE_FILE = re.compile(r"drive\.google\.com/(?:file/d/|uc\?(?:.*&)?id=|open\?id=)([\w-]+)")
_DRIVE_FOLDER = re.compile(r"drive\.google\.com/drive/(?:u/\d+/)?folders/([\w-]+)")


# --------------------------------------------------------------------------- the cache
def weights_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder released weights are kept in (see the module docstring)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    home = os.environ.get(ENV_HOME) or os.path.join("~", ".cache", "avsegformer")
    return Path(home).expanduser() / "weights"


def cached_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the file of ``name`` is (or would be) in the cache."""
    return weights_dir(cache_dir) / get_weights(name).file_name


def cache_status(name: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """``"verified"``, ``"unverified"`` (present, e.g. placed by hand; checked on first
    use) or ``"missing"``."""
    path = cached_path(name, cache_dir)
    if not path.is_file():
        return "missing"
    return "verified" if _record_matches(path) else "unverified"


def _record_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified.json")


def _card_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.md")


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _record_matches(path: Path) -> bool:
    record = _read_record(path)
    if record is None:
        return False
    stat = path.stat()
    return record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns


def _write_record(path: Path, record: dict[str, Any], weights: ReleasedWeights) -> None:
    stat = path.stat()
    record = {**record, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        atomic_write_text(_record_path(path), json.dumps(record, indent=2) + "\n")
        atomic_write_text(_card_path(path), model_card(weights.name, path.parent))
    except OSError as exc:  # a read-only cache still works: the check repeats on each use
        logger.debug("cannot write the verification record of %s: %s", path, exc)


# ----------------------------------------------------------------------- public calls
def download(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    offline: bool | None = None,
    progress: bool = True,
    retries: int = 3,
) -> Path:
    """The verified file of the released weights ``name``, downloaded if not cached.

    Args:
        name: a registered name (``avsegformer.zoo.list_weights()``: the six published
            models and the backbone files ``resnet50``, ``pvt_v2_b5``, ``vggish``).
        cache_dir: the folder to keep it in (default: see :func:`weights_dir`).
        force: download again even when the file is cached.
        offline: never touch the network (default: ``$AVSEGFORMER_OFFLINE``).
        progress: show a progress bar (plain lines when not on a terminal).
        retries: reconnections (resuming where the data stopped) before giving up.

    Returns:
        The path of the verified file.

    Raises:
        DownloadError: not cached and it cannot be fetched (offline, no network, gdown
            missing for a Google Drive link); the message says where to place it by hand.
        WeightsVerificationError: what was fetched (removed) or found in the cache (left
            alone) is not the released file.
    """
    weights = get_weights(name)
    folder = weights_dir(cache_dir)
    final = folder / weights.file_name
    if final.is_file() and not force:
        _ensure_verified(final, weights)
        return final
    if _is_offline(offline):
        raise DownloadError(
            _place_by_hand(weights, final, "not in the cache and downloads are off")
        )
    check_writable(folder, what="weights cache", folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(folder)
    with _exclusive(folder / f".{weights.file_name}.lock", weights.file_name):
        if final.is_file() and not force:  # another process fetched it while we waited
            _ensure_verified(final, weights)
            return final
        # With force the cached file stays until the new one is verified and replaces it.
        return _fetch_and_verify(weights, final, progress=progress, retries=retries)


def released_checkpoint(
    config_name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool = True,
) -> Path:
    """The verified released whole-model file of configuration ``config_name``.

    Raises:
        ConfigError: the configuration has no released weights (e.g. the tiny ones).
        DownloadError, WeightsVerificationError: as :func:`download`.
    """
    weights = weights_for_config(config_name)
    if weights is None:
        get_config(config_name)  # an unknown name says so, with the known ones
        with_weights = [n for n in list_weights() if not get_weights(n).target]
        raise ConfigError(
            f"{config_name!r} has no released weights (models with weights: "
            f"{', '.join(with_weights)})",
            hint="pass a checkpoint file",
            cli_hint="pass --checkpoint FILE",
        )
    return download(weights.name, cache_dir=cache_dir, offline=offline, progress=progress)


def pretrained_file(
    name_or_config: str | Config | Any,
    pretrained: bool | str | os.PathLike[str],
    **options: Any,
) -> Path:
    """What ``build_model(name_or_config, pretrained=...)`` loads: ``True`` means the
    configuration's released weights, a path that file (``options``: :func:`download`'s)."""
    if pretrained is True:
        name = name_or_config if isinstance(name_or_config, str) else None
        if isinstance(name_or_config, Config):
            name = name_or_config.name
        if name is None:
            raise ConfigError(
                "pretrained=True needs a registered model name; pass a file path instead"
            )
        return released_checkpoint(name, **options)
    return resolve(pretrained, **options)


def resolve(spec: str | os.PathLike[str], **options: Any) -> Path:
    """A weight file from a path (used as it is) or a registered name (downloaded into the
    cache if needed). Anything else is returned as a path, for the loader to report."""
    path = Path(spec)
    if path.exists() or str(spec) not in list_weights():
        return path
    return download(str(spec), **options)


def verify_file(path: Path, weights: ReleasedWeights) -> dict[str, Any]:
    """Check that ``path`` is the released file: size and sha256 where recorded, then a
    strict load into ``weights.config`` (its ``target`` sub-module for backbone files).

    Returns:
        The record of the check (sha256 measured, configuration, time).

    Raises:
        WeightsVerificationError: which check failed and why.
    """
    size = path.stat().st_size
    if weights.size is not None and size != weights.size:
        raise WeightsVerificationError(
            f"{path} has {size} bytes; the released {weights.file_name} has {weights.size} "
            "(truncated or another file)"
        )
    digest = file_sha256(path)
    if weights.sha256 and digest != weights.sha256.lower():
        raise WeightsVerificationError(
            f"{path} has sha256 {digest}; the released {weights.file_name} has "
            f"{weights.sha256.lower()}"
        )
    # Lazy: building models pulls in the network code.
    from .checkpoint import load_checkpoint
    from .modeling.build import build_model

    model = build_model(weights.config)
    into = f"{weights.config}'s {weights.target}" if weights.target else weights.config
    try:
        load_checkpoint(model, path, expect_target=weights.target)
    except CheckpointError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsVerificationError(
            f"{path} is not the released {weights.name} weights: a strict load into {into} "
            f"failed ({reason})"
        ) from None
    return {
        "name": weights.name,
        "file": weights.file_name,
        "sha256": digest,
        "verified": f"strict load into {into}"
        + (", sha256 as recorded" if weights.sha256 else ", no sha256 recorded to compare"),
        "verified_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "avsegformer": __version__,
    }


def model_card(name: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The model card of ``name`` (markdown): source, what it reproduces, licence, size,
    sha256, and where it is in the cache (with the size and sha256 measured there)."""
    weights = get_weights(name)
    path = weights_dir(cache_dir) / weights.file_name
    record = _read_record(path) if path.is_file() else None
    status = cache_status(name, cache_dir)
    published = (
        f"mIoU {weights.published['miou']:.4f}, F {weights.published['fscore']:.3f} "
        "(fractions; the papers print them x100)"
        if weights.published
        else "-"
    )
    target = f" ({weights.target})" if weights.target else ""
    lines = [
        f"# {weights.name}: {weights.file_name}",
        "",
        weights.description,
        "",
        f"* configuration: `{weights.config}`{target}",
        f"* sources, in order: {', '.join(weights.urls)}",
        f"* published at: {weights.page}",
        f"* reproduces: {weights.reproduces}",
        f"* published scores: {published}",
        f"* licence: {weights.licence}",
        f"* size: {weights.size if weights.size is not None else 'not yet recorded'}",
        f"* sha256: {weights.sha256 or 'not yet recorded'}",
        f"* cache: {path} ({status})",
    ]
    if record is not None:
        lines.append(
            f"* measured in the cache: {record.get('size')} bytes, sha256 {record.get('sha256')}"
            f" ({record.get('verified')}; from {record.get('source', '?')})"
        )
    if weights.notes:
        lines.append(f"* notes: {weights.notes}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- fetch + verify
class _SourceFailed(Exception):
    """One source could not deliver the file (the next one is tried)."""


class _Transient(Exception):
    """A network failure worth retrying (resuming where the data stopped)."""


def _is_offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def _sources(weights: ReleasedWeights) -> tuple[str, ...]:
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if not mirror:
        return weights.urls
    if "://" not in mirror:
        mirror = Path(mirror).expanduser().resolve().as_uri()
    return (f"{mirror.rstrip('/')}/{urllib.parse.quote(weights.file_name)}",)


def _where_to_get(weights: ReleasedWeights) -> str:
    parts = []
    for url in _sources(weights):
        if _DRIVE_FOLDER.search(url):
            parts.append(f"the file {weights.file_name} in the Google Drive folder {url}")
        else:
            parts.append(url)
    return " or ".join(parts)


def _place_by_hand(weights: ReleasedWeights, final: Path, reason: str) -> str:
    return (
        f"{weights.name}: {reason}; place {weights.file_name} at {final} "
        f"(get it from {_where_to_get(weights)})"
    )


def _ensure_verified(path: Path, weights: ReleasedWeights) -> None:
    if _record_matches(path):
        return
    # Placed by hand, or changed since it was checked: check it now, but never delete a
    # file this process did not download.
    try:
        record = verify_file(path, weights)
    except WeightsVerificationError as exc:
        raise WeightsVerificationError(
            f"{exc}; delete it and run `avsegformer download {weights.name}`, or replace it "
            f"with {weights.file_name} from {_where_to_get(weights)}"
        ) from None
    _write_record(path, {**record, "source": "found in the cache"}, weights)


@contextlib.contextmanager
def _exclusive(lock: Path, what: str) -> Iterator[None]:
    """One process at a time fetches a file (others wait, then find it cached)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(lock, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process that is downloading %s", what)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_and_verify(
    weights: ReleasedWeights, final: Path, *, progress: bool, retries: int
) -> Path:
    failures: list[str] = []
    rejected: list[str] = []
    for url in _sources(weights):
        logger.info("downloading %s from %s", weights.file_name, url)
        try:
            fetched = _fetch(url, weights, final, progress=progress, retries=retries)
        except _SourceFailed as exc:
            failures.append(f"{url}: {exc}")
            continue
        try:
            record = verify_file(fetched, weights)
        except WeightsVerificationError as exc:
            fetched.unlink(missing_ok=True)
            rejected.append(f"downloaded from {url}, removed: {exc}")
            continue
        os.replace(fetched, final)
        _write_record(final, {**record, "source": url}, weights)
        logger.info("%s verified (%s): %s", weights.file_name, record["verified"], final)
        return final
    if rejected:
        raise WeightsVerificationError("; ".join(rejected + failures))
    reasons = "; ".join(failures)
    raise DownloadError(
        _place_by_hand(weights, final, f"cannot download {weights.file_name} ({reasons})")
    )


def _fetch(
    url: str, weights: ReleasedWeights, final: Path, *, progress: bool, retries: int
) -> Path:
    """Fetch ``url`` next to ``final``; returns the complete (not yet verified) file."""
    drive_folder = _DRIVE_FOLDER.search(url)
    drive_file = _DRIVE_FILE.search(url)
    if drive_folder or drive_file:
        # gdown writes .<file>.gdown only when complete (its partial: .<file>.gdown*.part).
        output = final.with_name(f".{final.name}.gdown")
        if drive_folder:
            file_id = _drive_folder_file_id(url, weights.file_name, final.parent, progress)
        else:
            assert drive_file is not None
            file_id = drive_file.group(1)
        _gdown_file(file_id, output, progress)
        return output
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise _SourceFailed("unsupported URL (http, https, file or Google Drive)")
    part = final.with_name(f".{final.name}.part")
    _http_download(url, part, desc=weights.file_name, progress=progress, retries=retries)
    return part


def _import_gdown() -> Any:
    try:
        import gdown
    except ImportError:
        raise _SourceFailed(f"Google Drive links need gdown: {INSTALL_HINT}") from None
    return gdown


def _gdown_file(file_id: str, output: Path, progress: bool) -> None:
    gdown = _import_gdown()
    try:
        result = gdown.download(
            id=file_id, output=str(output), quiet=not (progress and on_terminal()), resume=True
        )
    except Exception as exc:  # noqa: BLE001 - gdown raises many kinds (requests, its own)
        raise _SourceFailed(f"Google Drive: {_one_line(exc)}") from None
    if not result or not output.is_file():
        raise _SourceFailed("Google Drive returned no file (quota exceeded or link not public?)")


def _drive_folder_file_id(url: str, file_name: str, scratch: Path, progress: bool) -> str:
    gdown = _import_gdown()
    # gdown creates the folder's directory even when only listing it: give it a scratch one.
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".drive-listing-") as listing:
        try:
            files = gdown.download_folder(
                url=url,
                output=listing,
                quiet=not (progress and on_terminal()),
                skip_download=True,
            )
        except Exception as exc:  # noqa: BLE001 - as above
            raise _SourceFailed(f"Google Drive folder: {_one_line(exc)}") from None
    for entry in files or ():
        if Path(str(entry.path)).name == file_name:
            return str(entry.id)
    listed = ", ".join(Path(str(e.path)).name for e in files or ()) or "nothing"
    raise _SourceFailed(f"the Google Drive folder holds no {file_name} (it lists {listed})")


def _one_line(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split())
    if len(text) > limit:  # requests' connection errors run to several hundred characters
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _http_download(url: str, part: Path, *, desc: str, progress: bool, retries: int) -> None:
    """Stream ``url`` into ``part``, resuming from its current length (HTTP Range)."""
    attempt = 0
    while True:
        try:
            _http_attempt(url, part, desc=desc, progress=progress)
            return
        except _Transient as exc:
            kept = part.stat().st_size if part.is_file() else 0
            if attempt >= retries:
                resume = f"; {kept} bytes kept in {part}: run again to resume" if kept else ""
                raise _SourceFailed(f"{exc} (after {attempt} retries){resume}") from None
            attempt += 1
            logger.warning(
                "%s: %s; retrying (%d of %d)%s",
                desc,
                exc,
                attempt,
                retries,
                f" from byte {kept}" if kept else "",
            )
            time.sleep(_RETRY_DELAY_S * attempt)


def _http_attempt(url: str, part: Path, *, desc: str, progress: bool) -> None:
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": f"avsegformer/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S
        )
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file does not fit this file: start over
            part.unlink(missing_ok=True)
            raise _Transient("the partial download does not fit the file (HTTP 416)") from None
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise _SourceFailed(f"HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError, refused, timeout, DNS
        raise _Transient(_network_reason(exc)) from None
    with response:
        status = getattr(response, "status", None) or 200
        total: int | None
        if have and status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Transient(f"the server resumed at byte {start}, not {have}")
            mode = "ab"
        else:
            if have:
                logger.info("%s: the server does not resume downloads; starting again", desc)
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.strip().isdigit() else None
        with (
            part.open(mode) as out,
            progress_bar(total, desc, "B", initial=have, enabled=progress, unit_scale=True) as bar,
        ):
            while True:
                try:
                    block = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(_network_reason(exc)) from None
                if not block:
                    break
                out.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Transient(f"the connection closed after {size} of {total} bytes")
    if total is not None and size > total:
        part.unlink(missing_ok=True)
        raise _Transient(f"received {size} bytes where {total} were announced")


def _content_range(value: str) -> tuple[int, int | None]:
    """``"bytes 100-199/200"`` -> ``(100, 200)`` (total ``None`` when ``*``)."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value)
    if match is None:
        return -1, None
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


def _network_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        exc = reason
    return _one_line(exc)


__all__ = [
    "ENV_HOME",
    "ENV_MIRROR",
    "ENV_OFFLINE",
    "cache_status",
    "cached_path",
    "download",
    "file_sha256",
    "model_card",
    "pretrained_file",
    "released_checkpoint",
    "resolve",
    "verify_file",
    "weights_dir",
]
