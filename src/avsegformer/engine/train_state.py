"""Training state as tensors + JSON, so that it fits the project's safetensors checkpoints.

A resumable checkpoint holds the model weights, the optimizer state, the learning-rate
schedule, the gradient scaler, the counters and every random-number generator state. All
tensors go into the safetensors payload under a prefix (``optimizer.``, ``rng.``); all
the rest is plain JSON in its metadata. Nothing is pickled, so a checkpoint can be loaded
without trusting its author.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError

OPTIMIZER_PREFIX = "optimizer."
RNG_PREFIX = "rng."


# ------------------------------------------------------------------------ optimizer
def optimizer_state_to_tensors(
    state_dict: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able record.

    Tensors are named ``optimizer.state.<param id>.<name>``; non-tensor per-parameter
    values and the ``param_groups`` (hyper-parameters and parameter ids) go to the record.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state_dict["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{OPTIMIZER_PREFIX}state.{param_id}.{name}"] = (
                    value.detach().to("cpu", copy=True).contiguous()
                )
            else:
                scalars.setdefault(str(param_id), {})[name] = _jsonable(value)
    groups = [{k: _jsonable(v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_state_from_tensors(
    tensors: dict[str, torch.Tensor], record: dict[str, Any]
) -> dict[str, Any]:
    """Inverse of :func:`optimizer_state_to_tensors` (ready for ``load_state_dict``)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith(OPTIMIZER_PREFIX + "state."):
            continue
        param_id, name = key[len(OPTIMIZER_PREFIX + "state.") :].split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, entries in record.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(entries)
    groups = []
    for g in record["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ----------------------------------------------------------------------------- RNG
def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every generator a training step may draw from: torch (CPU, CUDA), numpy, random."""
    tensors = {f"{RNG_PREFIX}torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{RNG_PREFIX}torch_cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors[f"{RNG_PREFIX}numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    record = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }  # fmt: skip
    return tensors, record


def restore_rng_state(tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    try:
        torch.set_rng_state(tensors[f"{RNG_PREFIX}torch_cpu"].to(torch.uint8))
        cuda_states = [
            tensors[k].to(torch.uint8)
            for k in sorted(t for t in tensors if t.startswith(f"{RNG_PREFIX}torch_cuda."))
        ]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
        n = record["numpy"]
        keys = tensors[f"{RNG_PREFIX}numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
        p = record["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint has no usable random-generator state: {exc}") from exc


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if torch.is_tensor(value):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
