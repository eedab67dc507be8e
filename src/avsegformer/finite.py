"""The one check for NaN and infinite values, used wherever numbers enter.

Readers call it on decoded files, the model on its inputs, checkpoint loading on its
tensors and the trainer on losses and gradients, each naming what it checked, so a
non-finite value is reported where it enters instead of surfacing as a wrong metric.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import NonFiniteError


def non_finite_count(values: torch.Tensor | np.ndarray) -> int:
    """How many elements of a floating tensor/array are NaN or infinite (0 for integers)."""
    if isinstance(values, np.ndarray):
        if not np.issubdtype(values.dtype, np.floating):
            return 0
        return int(values.size - np.count_nonzero(np.isfinite(values)))
    if not (values.is_floating_point() or values.is_complex()):
        return 0
    return int(values.numel() - torch.isfinite(values).sum().item())


def require_finite(
    values: torch.Tensor | np.ndarray,
    what: str,
    *,
    error: type[NonFiniteError] = NonFiniteError,
) -> None:
    """Raise ``error`` (:class:`NonFiniteError` or a subclass, e.g. the readers'
    :class:`~avsegformer.errors.NonFiniteDataError`) naming ``what`` if ``values`` holds
    NaN or inf.

    One reduction on the common path (``isfinite(...).all()``); counts only on failure.
    """
    if isinstance(values, np.ndarray):
        if not np.issubdtype(values.dtype, np.floating) or np.isfinite(values).all():
            return
    elif not values.is_floating_point() or bool(torch.isfinite(values).all()):
        return
    bad = non_finite_count(values)
    total = values.size if isinstance(values, np.ndarray) else values.numel()
    raise error(f"{what}: {bad} of {total} values are NaN or infinite")


def json_safe(value: object) -> object:
    """``value`` with every NaN/infinite float replaced by ``None`` (JSON has no NaN).

    A dict that held such floats also gets ``"nonfinite": [keys]``, so a reader can tell
    a missing value from one that was NaN or infinite.
    """
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        out = {k: json_safe(v) for k, v in value.items()}
        bad = [k for k, v in value.items() if isinstance(v, float) and not np.isfinite(v)]
        if bad:
            out["nonfinite"] = bad
        return out
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
