"""The models the page offers: one list, built in one place (:func:`model_choices`).

The server holds one of them in memory at a time (:class:`~avsegformer.serve.jobs.ModelCache`);
the page picks among them by ``id``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import AVSegFormerError, ConfigError, MissingFileError

logger = logging.getLogger(__name__)

#: Precisions the page offers, by device type (fp16 autocast needs CUDA).
PRECISIONS_BY_DEVICE = {"cuda": ("auto", "fp32", "bf16", "fp16"), "cpu": ("auto", "fp32", "bf16")}


@dataclass(frozen=True)
class ModelChoice:
    """One model the page can run.

    Attributes:
        id: the key the page sends back (``m0``, ``m1``... in the order given).
        label: what the page shows.
        checkpoint: the weights file.
        name: the configuration name for files that do not record one (the authors'
            ``.pth``), else None (the file's own record is used).
    """

    id: str
    label: str
    checkpoint: Path
    name: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"id": self.id, "label": self.label, "name": self.name}


def model_choices(
    checkpoints: Sequence[str | os.PathLike[str]],
    names: Sequence[str] = (),
    *,
    progress: bool = True,
) -> list[ModelChoice]:
    """Every model the page offers, first = the default.

    ``checkpoints``: the ``--checkpoint`` files. ``names``: the ``--model`` configuration
    names: with checkpoints, one for all of them or one per checkpoint in the same order
    (the authors' ``.pth`` record none); without checkpoints, each name's released
    weights (downloaded into the cache if missing, as ``avsegformer predict --model``).
    With neither: the demo model shipped in ``checkpoints/demo_tiny_s4.safetensors`` (so
    the page works on a fresh clone), then every released model already in the cache
    (``avsegformer download NAME``); a cached file that fails its check is left out with
    a warning, not fatal.

    Raises:
        MissingFileError: a checkpoint file does not exist.
        ConfigError: ``names`` cannot be paired with ``checkpoints``, or a name has no
            released weights.
        DownloadError, WeightsVerificationError: a named model's weights cannot be had.
    """
    from .. import hub

    if not checkpoints:
        entries: list[tuple[Path, str | None, str]] = []
        if names:
            for name in names:
                path = hub.released_checkpoint(name, progress=progress)
                entries.append((path, name, f"{name} (released weights)"))
        else:
            from ..demo import find_demo_checkpoint

            demo = find_demo_checkpoint(None)
            entries.append((demo, None, demo.name))
            entries += _cached_released_models()
        return [
            ModelChoice(f"m{index}", label, path, name)
            for index, (path, name, label) in enumerate(entries)
        ]
    paths = [Path(c) for c in checkpoints]
    if len(names) > 1 and len(names) != len(paths):
        raise ConfigError(
            f"--model was given {len(names)} times for {len(paths)} checkpoint(s): give it "
            "once (for every checkpoint) or once per --checkpoint, in the same order"
        )
    paired = list(names) * len(paths) if len(names) == 1 else list(names) or [None] * len(paths)
    choices: list[ModelChoice] = []
    for index, (path, name) in enumerate(zip(paths, paired, strict=True)):
        if not path.is_file():
            raise MissingFileError(
                f"{path}: checkpoint file not found"
                if not path.exists()
                else f"{path}: not a file (--checkpoint takes a weights file)"
            )
        label = path.name if name is None else f"{name} ({path.name})"
        choices.append(ModelChoice(f"m{index}", label, path, name))
    return choices


def _cached_released_models() -> list[tuple[Path, str | None, str]]:
    """(file, configuration, label) of each released whole model in the local cache,
    checked (once per file version: the check is recorded) without the network."""
    from .. import hub
    from ..zoo import get_weights, list_weights

    found = []
    for weights_name in list_weights():
        weights = get_weights(weights_name)
        if weights.target or hub.cache_status(weights_name) == "missing":
            continue
        try:
            path = hub.download(weights_name, offline=True, progress=False)
        except AVSegFormerError as exc:
            logger.warning("left out the cached %s weights: %s", weights_name, exc)
            continue
        found.append((path, weights.config, f"{weights.config} (released weights)"))
    return found


def precision_choices(device_type: str) -> tuple[str, ...]:
    """The ``--precision`` values that can run on a device of this type."""
    return PRECISIONS_BY_DEVICE.get(device_type, PRECISIONS_BY_DEVICE["cpu"])
