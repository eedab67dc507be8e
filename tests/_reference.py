"""Test helpers for the reference fixtures in ``shared/reference`` (see its README).

* the deterministic weight rule the fixtures were produced with;
* loading a fixture ``.npz`` with its ``meta_json``;
* comparisons at the README's tolerances;
* a forward-hook recorder for intermediate outputs.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

RTOL = 1e-4
ATOL = 1e-4


def rule_tensor(
    key: str, shape: tuple[int, ...], dtype: torch.dtype, salt: str = ""
) -> torch.Tensor:
    """The value the reference harness gave the state-dict entry ``key``."""
    g = torch.Generator().manual_seed(zlib.crc32((salt + key).encode()))
    shape = tuple(shape)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=dtype)
    if key.endswith("running_mean"):
        t = 0.1 * torch.randn(shape, generator=g)
    elif key.endswith("running_var"):
        t = 0.5 + torch.rand(shape, generator=g)
    elif len(shape) == 1 and key.endswith("weight"):
        t = 1 + 0.1 * torch.randn(shape, generator=g)
    elif len(shape) == 1 and key.endswith("bias"):
        t = 0.02 * torch.randn(shape, generator=g)
    elif len(shape) >= 2:
        t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    else:
        t = 0.02 * torch.randn(shape, generator=g)
    return t.to(dtype)


def rule_state_dict(keys_shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], salt: str = ""):
    """``{key: rule tensor}`` for ``{key: (shape, dtype)}``."""
    return {k: rule_tensor(k, s, d, salt) for k, (s, d) in keys_shapes.items()}


@torch.no_grad()
def apply_weight_rule(model: nn.Module, salt: str = "", prefix: str = "") -> None:
    """Overwrite every parameter and buffer of ``model`` in place with the rule values.

    ``prefix`` is prepended to the keys (e.g. ``"head."`` when ``model`` is the head).
    In place, so a 600 MB model does not need a second copy.
    """
    for key, tensor in model.state_dict(keep_vars=True).items():
        tensor.copy_(rule_tensor(prefix + key, tuple(tensor.shape), tensor.dtype, salt))


def check_rule_checksums(model: nn.Module, fixture: dict[str, Any]) -> None:
    """Compare per-tensor sums / absolute sums with the fixture's ``weights_sum``."""
    keys = json.loads(str(fixture["weights_keys_json"]))
    state = model.state_dict()
    assert sorted(keys) == sorted(state), "state-dict keys differ from the fixture's"
    sums = np.array([state[k].double().sum().item() for k in keys])
    abssums = np.array([state[k].double().abs().sum().item() for k in keys])
    np.testing.assert_allclose(sums, fixture["weights_sum"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(abssums, fixture["weights_abssum"], rtol=1e-9, atol=1e-9)


def load_fixture(path: Path) -> dict[str, Any]:
    """All arrays of an ``.npz`` plus ``meta`` (the decoded ``meta_json``)."""
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data["meta"] = json.loads(str(data.pop("meta_json")))
    return data


def assert_close(name: str, ours: torch.Tensor | np.ndarray, ref: np.ndarray, **kw: float) -> None:
    """``np.allclose`` at the README tolerance (rtol = atol = 1e-4) with a useful message."""
    if isinstance(ours, torch.Tensor):
        ours = ours.detach().float().cpu().numpy()
    ref = np.asarray(ref)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != reference {ref.shape}"
    rtol, atol = kw.get("rtol", RTOL), kw.get("atol", ATOL)
    ours64, ref64 = ours.astype(np.float64), ref.astype(np.float64)
    bad = ~np.isclose(ours64, ref64, rtol=rtol, atol=atol)
    if bad.any():
        err = np.abs(ours64 - ref64)
        raise AssertionError(
            f"{name}: {bad.sum()} of {bad.size} values differ (max abs err {err.max():.3g}, "
            f"reference scale {np.abs(ref64).max():.3g}, rtol={rtol}, atol={atol})"
        )


def assert_close_summed(name: str, ours: Any, ref: np.ndarray, count: int) -> None:
    """Sums/statistics over ``count`` elements: atol scaled by ``sqrt(count)``."""
    assert_close(name, ours, ref, rtol=RTOL, atol=ATOL * math.sqrt(count))


def stats(x: torch.Tensor) -> np.ndarray:
    """``[mean, std, min, max, mean|x|]`` in float64 (the fixtures' ``*_stats``)."""
    x = x.detach().double()
    return np.array(
        [x.mean().item(), x.std().item(), x.min().item(), x.max().item(), x.abs().mean().item()]
    )


def per_frame_stats(x: torch.Tensor) -> np.ndarray:
    """``stats`` of each frame (first dimension): ``[N, 5]``."""
    return np.stack([stats(frame) for frame in x])


def check_stats(name: str, ours: torch.Tensor, ref: np.ndarray, count: int) -> None:
    """Mean/min/max/mean|x| elementwise-like; std with atol scaled by sqrt(count)."""
    assert_close_summed(name, ours if isinstance(ours, np.ndarray) else stats(ours), ref, count)


class Recorder:
    """Collects module outputs (forward hooks) and inputs (pre-hooks) by name.

    Modules called several times in one forward (chunks) accumulate a list;
    :meth:`cat` joins it along the batch dimension.
    """

    def __init__(self) -> None:
        self.outputs: dict[str, list[Any]] = {}
        self.inputs: dict[str, list[Any]] = {}
        self._handles: list[Any] = []

    def output(self, name: str, module: nn.Module) -> None:
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            self.outputs.setdefault(name, []).append(out)

        self._handles.append(module.register_forward_hook(hook))

    def input(self, name: str, module: nn.Module) -> None:
        def hook(_m: nn.Module, args: Any) -> None:
            self.inputs.setdefault(name, []).append(args)

        self._handles.append(module.register_forward_pre_hook(hook))

    def cat(self, name: str) -> torch.Tensor:
        parts = self.outputs[name]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def recording() -> Iterator[Recorder]:
    recorder = Recorder()
    try:
        yield recorder
    finally:
        recorder.remove()
