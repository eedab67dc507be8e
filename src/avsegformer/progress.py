"""Progress of long work: a bar on a terminal, plain periodic log lines otherwise.

Every command that can run longer than a few seconds reports through
:func:`progress_bar`. On a terminal (standard error is a TTY) it draws a tqdm bar; when
the output goes to a file or a pipe it logs one plain line every ``interval`` seconds
(and one at the end), so that redirected logs hold readable lines instead of
carriage-return animation.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

logger = logging.getLogger("avsegformer.progress")

T = TypeVar("T")

#: Seconds between two plain progress lines when the output is not a terminal.
LOG_INTERVAL_SECONDS = 10.0


def on_terminal() -> bool:
    """Whether standard error is an interactive terminal a bar can be drawn on.

    A terminal that reports no width (some consoles and pseudo-terminals report 0
    columns) gets plain lines: tqdm would draw nothing there.
    """
    stream = sys.stderr
    if not (getattr(stream, "isatty", None) and stream.isatty()):
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return False


class ProgressBar:
    """A progress report of ``total`` units (see :func:`progress_bar`)."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        *,
        initial: int = 0,
        enabled: bool = True,
        terminal: bool | None = None,
        interval: float = LOG_INTERVAL_SECONDS,
        leave: bool = False,
        position: int | None = None,
        unit_scale: bool = False,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        # Counts of bytes and the like: shown as 1.5 MiB instead of 1572864 Bs.
        self.unit_scale = unit_scale
        self.count = initial
        self.enabled = enabled
        self.interval = interval
        self._bar: Any = None
        self._postfix: dict[str, Any] = {}
        self._start = time.perf_counter()
        self._start_count = initial
        self._last_line = self._start
        self._logged = False
        if enabled and (on_terminal() if terminal is None else terminal):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                leave=leave,
                position=position,
                dynamic_ncols=True,
                unit_scale=unit_scale,
                unit_divisor=1024 if unit_scale else 1000,
            )

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Count ``n`` more units; ``postfix`` values (e.g. ``loss=...``) are shown too."""
        self.count += n
        if postfix:
            self._postfix = postfix
        if not self.enabled:
            return
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._log_line(now)

    def _log_line(self, now: float) -> None:
        done = self.count - self._start_count
        rate = done / max(now - self._start, 1e-9)
        if self.unit_scale:
            count, total = _scaled(self.count, self.unit), _scaled(self.total, self.unit)
            parts = [f"{self.desc}: {count}" + (f"/{total}" if self.total else "")]
            if self.total:
                parts[0] += f" ({100 * self.count / self.total:.0f}%)"
        else:
            parts = [f"{self.desc}: {self.count}"]
            if self.total:
                parts[0] += f"/{self.total} {self.unit}s ({100 * self.count / self.total:.0f}%)"
            else:
                parts[0] += f" {self.unit}s"
        if self.total and rate > 0 and self.count < self.total:
            parts.append(f"about {_duration((self.total - self.count) / rate)} left")
        parts.append(
            f"{_scaled(rate, self.unit)}/s" if self.unit_scale else f"{rate:.3g} {self.unit}/s"
        )
        parts += [f"{k} {v}" for k, v in self._postfix.items()]
        logger.info("%s", ", ".join(parts))
        self._logged = True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._logged:
            self._log_line(time.perf_counter())  # the final count, after periodic lines
            self._logged = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    total: int | None,
    desc: str,
    unit: str,
    *,
    initial: int = 0,
    enabled: bool = True,
    **options: Any,
) -> ProgressBar:
    """A :class:`ProgressBar`: tqdm on a terminal, periodic log lines otherwise.

    Args:
        total: units expected (``None`` if unknown).
        desc: what is progressing, e.g. ``"epoch 2/30"``.
        unit: singular unit name (``"step"``, ``"video"``).
        initial: units already done (resumed work).
        enabled: ``False`` reports nothing (``--no-progress``).
        options: ``terminal`` (force either form), ``interval`` (seconds between
            plain lines), ``leave`` and ``position`` (tqdm's), ``unit_scale`` (show
            1.5 MiB rather than 1572864 B: for byte counts).
    """
    return ProgressBar(total, desc, unit, initial=initial, enabled=enabled, **options)


def track(
    items: Iterable[T], total: int | None, desc: str, unit: str, *, enabled: bool = True
) -> Iterator[T]:
    """Yield ``items``, reporting one unit per item (see :func:`progress_bar`)."""
    with progress_bar(total, desc, unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update()


def _scaled(value: float | None, unit: str) -> str:
    """``1572864, "B"`` -> ``"1.5 MiB"`` (binary prefixes, as tqdm's unit_divisor=1024)."""
    value = float(value or 0)
    for prefix in ("", "Ki", "Mi", "Gi", "Ti"):
        if abs(value) < 1024 or prefix == "Ti":
            return f"{value:.3g} {prefix}{unit}" if prefix else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
