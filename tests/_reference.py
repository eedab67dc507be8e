"""Test helpers for the reference fixtures in ``tests/reference`` (see its README).

* where the fixtures are, failing (not skipping) a test whose fixture is missing;
* the deterministic weight and input rules the fixtures were produced with;
* loading a fixture ``.npz`` with its ``meta_json``, undoing the subset's cuts;
* comparisons at the README's tolerances;
* a forward-hook recorder for intermediate outputs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

RTOL = 1e-4
ATOL = 1e-4

# The subset of the authors' reference fixtures the tests use, kept in the repository
# (made by tests/reference/make_subset.py from ../shared/reference).
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"


def reference_path(relative: str) -> Path:
    """``tests/reference/<relative>``; fails the calling test (never skips) when missing.

    A missing fixture means a broken checkout, not an optional extra: the parity claim
    would otherwise go unchecked without anyone noticing.
    """
    path = REFERENCE_DIR / relative
    if not path.is_file():
        pytest.fail(
            f"reference fixture missing: {path} (committed with the repository; "
            "rebuild it with tests/reference/make_subset.py, see tests/reference/README.md)",
            pytrace=False,
        )
    return path


def load_manifest(name: str) -> dict[str, Any]:
    """The state-dict manifest of an official configuration (``manifests/<name>.json.gz``)."""
    with gzip.open(reference_path(f"manifests/{name}.json.gz"), "rt", encoding="utf-8") as f:
        return json.load(f)


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


def rule_frames(shape: tuple[int, ...], seed: int, flag: np.ndarray | None = None) -> np.ndarray:
    """The parity fixtures' ``in_frames``: float16 ``[N, 3, H, W]`` standard normal draws.

    Frames whose temporal ``flag`` ``[N]`` is 0 (padded AVSS positions) are zeros, as the
    authors' ``V2Dataset`` pads short clips (reference README, "Inputs").
    """
    frames = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))
    frames = frames.to(torch.float16).numpy()
    if flag is not None:
        frames[np.asarray(flag) == 0] = 0
    return frames


def rule_audio_logmel(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The S4 parity fixtures' ``in_audio_logmel``: float32 ``[N, 1, 96, 64]`` normal draws."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed)).numpy()


def regenerate_input(spec: dict[str, Any], fixture: dict[str, Any]) -> np.ndarray:
    """Rebuild an input the subset does not store, by its rule, and check it bit for bit.

    ``spec`` is an entry of ``subset["regenerated"]``: ``rule``, ``shape``, ``sha256`` of
    the array's bytes in the full fixture. A different result (another torch generator)
    fails loudly instead of feeding the model other inputs.
    """
    meta, shape = fixture["meta"], tuple(spec["shape"])
    if spec["rule"] == "frames":
        array = rule_frames(shape, meta["frames_seed"], fixture.get("in_vid_temporal_mask_flag"))
    elif spec["rule"] == "audio_logmel":
        array = rule_audio_logmel(shape, meta["audio_seed"])
    else:
        raise ValueError(f"unknown input rule {spec['rule']!r}")
    digest = hashlib.sha256(array.tobytes()).hexdigest()
    assert array.dtype == np.dtype(spec["dtype"]) and digest == spec["sha256"], (
        f"regenerated {spec['rule']} input differs from the reference fixture's "
        f"(sha256 {digest} != {spec['sha256']}): has torch's CPU generator changed?"
    )
    return array


def load_fixture(path: Path) -> dict[str, Any]:
    """All arrays of an ``.npz`` plus ``meta`` (the decoded ``meta_json``) and ``subset``.

    ``subset`` is the decoded ``subset_json`` that tests/reference/make_subset.py adds
    (``{}`` for a full fixture from ../shared): inputs it regenerates instead of storing
    are rebuilt here, so ``fixture["in_frames"]`` is there either way; arrays it cut are
    compared through :func:`as_stored`.
    """
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data["meta"] = json.loads(str(data.pop("meta_json")))
    data["subset"] = json.loads(str(data.pop("subset_json", "{}")))
    for key, spec in data["subset"].get("regenerated", {}).items():
        data[key] = regenerate_input(spec, data)
    return data


def source_shape(fixture: dict[str, Any], key: str) -> tuple[int, ...]:
    """Shape of ``fixture[key]`` in the full reference fixture (before any cut)."""
    cut = fixture["subset"].get("cuts", {}).get(key)
    return tuple(cut["source_shape"]) if cut else tuple(fixture[key].shape)


def as_stored(fixture: dict[str, Any], key: str, ours: torch.Tensor) -> torch.Tensor:
    """``ours`` (shaped like the full fixture's ``key``) cut as the subset cut ``key``.

    A cut keeps whole entries along one axis (``subset["cuts"][key]``: ``axis``,
    ``index``), so the kept reference values are compared with our values at the same
    positions, at the same tolerance. Uncut keys return ``ours`` unchanged.
    """
    cut = fixture["subset"].get("cuts", {}).get(key)
    if cut is None:
        return ours
    assert tuple(ours.shape) == tuple(cut["source_shape"]), (
        f"{key}: shape {tuple(ours.shape)} != reference {tuple(cut['source_shape'])}"
    )
    index = torch.tensor(cut["index"], device=ours.device)
    return ours.index_select(cut["axis"], index)


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
