"""The models the page offers: one list, built in one place (:func:`model_choices`).

The server holds one of them in memory at a time (:class:`~avsegformer.serve.jobs.ModelCache`);
the page picks among them by ``id``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, MissingFileError

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
    checkpoints: Sequence[str | os.PathLike[str]], names: Sequence[str] = ()
) -> list[ModelChoice]:
    """Every model the page offers, first = the default.

    ``checkpoints``: the ``--checkpoint`` files (none: the demo model shipped in
    ``checkpoints/demo_tiny_s4.safetensors``, so the page works on a fresh clone).
    ``names``: the ``--model`` configuration names: one for all checkpoints, or one per
    checkpoint in the same order.

    Raises:
        MissingFileError: a checkpoint file does not exist.
        ConfigError: ``names`` cannot be paired with ``checkpoints``.
    """
    # Weights registry (released models in the local cache): add them here, once, so the
    # page and the command line see the same list.
    from ..commands.demo import find_demo_checkpoint

    paths = [Path(c) for c in checkpoints] or [find_demo_checkpoint(None)]
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


def precision_choices(device_type: str) -> tuple[str, ...]:
    """The ``--precision`` values that can run on a device of this type."""
    return PRECISIONS_BY_DEVICE.get(device_type, PRECISIONS_BY_DEVICE["cpu"])
