"""Value types of run settings shared by the configuration, the engine, the commands and the
Python API: the autocast :class:`Precision` and the input-size rule (:func:`check_img_size`).

This module imports nothing of the package but :mod:`avsegformer.errors`, so that
``zoo`` (the configurations), ``modeling``-free code and every command can use it. It is
not :mod:`avsegformer.modeling.precision`, which decides which parts of the network stay in
float32 ("islands") *under* the autocast dtype chosen here.

Every spelling a user may write for a precision is accepted in every place (command-line
``--precision``, ``--set precision=...``, ``Predictor(dtype=...)``, a saved
``config.json``)::

    auto                      bfloat16 autocast on CUDA (float16 where the GPU has no
                              bfloat16), plain float32 elsewhere
    fp32  float32  torch.float32     plain float32 (no autocast)
    bf16  bfloat16 torch.bfloat16    bfloat16 autocast (CPU or CUDA)
    fp16  float16  torch.float16     float16 autocast (CUDA only)
"""

from __future__ import annotations

import contextlib
import enum
from typing import Any

import torch

from .errors import ConfigError

#: The square input side must be divisible by the backbones' total stride.
IMG_SIZE_MULTIPLE = 32


def check_img_size(size: int, what: str = "img_size") -> int:
    """``size`` when it is a positive multiple of 32 (the backbones' total stride).

    Args:
        size: a square frame side in pixels.
        what: the option's name as the caller's user knows it (``data.img_size``,
            ``img_size``, ``case '100x5': size``), which the message names.

    Raises:
        ConfigError: ``"{what} must be a positive multiple of 32, got {size}"``.
    """
    if size <= 0 or size % IMG_SIZE_MULTIPLE:
        raise ConfigError(f"{what} must be a positive multiple of {IMG_SIZE_MULTIPLE}, got {size}")
    return size


class Precision(enum.StrEnum):
    """Autocast precision of a run: ``auto``, ``fp32``, ``bf16`` or ``fp16``.

    A :class:`enum.StrEnum`: each member *is* its short name (``Precision.BF16 == "bf16"``,
    ``str(Precision.BF16) == "bf16"``, JSON ``"bf16"``), so configurations saved before
    this type existed load unchanged and records keep the same strings.
    """

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"

    def __repr__(self) -> str:
        # As the plain string it replaces: configurations and messages print 'bf16'.
        return repr(self.value)

    @classmethod
    def parse(cls, value: Any, *, option: str = "precision") -> Precision:
        """The precision ``value`` names: a member, a short name, a torch dtype name
        (``"bfloat16"``, ``"torch.bfloat16"``) or a ``torch.dtype`` (case and spaces ignored).

        Args:
            value: what the user gave.
            option: the option's name for the message (``--precision``, ``dtype``,
                ``train.precision``).

        Raises:
            ConfigError: not a precision; the message names ``option`` and lists the
                accepted values.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, torch.dtype):
            found = _BY_DTYPE.get(value)
        elif isinstance(value, str):
            found = _BY_SPELLING.get(value.strip().lower())
        else:
            found = None
        if found is None:
            raise ConfigError(
                f"{option}: {value!r} is not a precision; choose from {accepted_precisions()}"
            )
        return found

    @property
    def dtype(self) -> torch.dtype:
        """The dtype a named precision computes in (``fp32``: ``torch.float32``).

        Raises:
            ConfigError: ``auto``, whose dtype depends on the device (see :meth:`resolve`).
        """
        if self is Precision.AUTO:
            raise ConfigError("precision auto names no dtype of its own: see resolve(device)")
        return _DTYPES[self] or torch.float32

    def resolve(self, device: torch.device | str) -> torch.dtype | None:
        """The autocast dtype on ``device``; ``None`` means plain float32 (no autocast).

        ``auto``: bfloat16 on CUDA (float16 on a GPU without bfloat16), float32 elsewhere.

        Raises:
            ConfigError: ``fp16`` on a device that is not CUDA.
        """
        device = torch.device(device)
        if self is Precision.AUTO:
            if device.type == "cuda":
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return None
        if self is Precision.FP16 and device.type != "cuda":
            raise ConfigError(
                f"float16 autocast needs a CUDA device (precision fp16); use bf16 or fp32 "
                f"on {device.type}"
            )
        return _DTYPES[self]

    def compute_dtype(self, device: torch.device | str) -> torch.dtype:
        """:meth:`resolve`, with plain float32 spelled ``torch.float32``."""
        return self.resolve(device) or torch.float32

    def autocast(self, device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of this precision on ``device`` (disabled for float32)."""
        device = torch.device(device)
        dtype = self.resolve(device)
        if dtype is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=dtype)


_DTYPES: dict[Precision, torch.dtype | None] = {
    Precision.FP32: None,
    Precision.BF16: torch.bfloat16,
    Precision.FP16: torch.float16,
}
_BY_DTYPE = {
    torch.float32: Precision.FP32,
    torch.bfloat16: Precision.BF16,
    torch.float16: Precision.FP16,
}
#: Every accepted spelling (lower case) -> its precision.
_BY_SPELLING: dict[str, Precision] = {
    **{p.value: p for p in Precision},
    **{str(dtype).removeprefix("torch."): p for dtype, p in _BY_DTYPE.items()},
    **{str(dtype): p for dtype, p in _BY_DTYPE.items()},
}


def accepted_precisions() -> str:
    """The accepted spellings, in words (for messages and help texts)."""
    aliases = ", ".join(str(dtype).removeprefix("torch.") for dtype in _BY_DTYPE)
    return f"{', '.join(Precision)} (also {aliases}, with or without 'torch.')"
