"""Small helpers around ``torch.distributed`` for torchrun launches.

Every helper also works in a plain single process (no process group): it then does the
trivial thing (rank 0 of 1, gather returns ``[obj]``, reductions return a copy), so
library code can call them unconditionally.

torchrun exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them and creates the default process
group (NCCL when CUDA is available, Gloo otherwise).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as torch_dist

from ..errors import ConfigError

logger = logging.getLogger(__name__)

ReduceOp = Literal["sum", "max", "min", "product"]

_REDUCE_OPS = {
    "sum": torch_dist.ReduceOp.SUM,
    "max": torch_dist.ReduceOp.MAX,
    "min": torch_dist.ReduceOp.MIN,
    "product": torch_dist.ReduceOp.PRODUCT,
}


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly trivial) distributed run.

    Attributes:
        rank: global rank, 0..world_size-1.
        world_size: number of processes (1 when not launched by torchrun).
        local_rank: rank on this machine; selects the CUDA device.
        device: the device this process should put its model and data on.
        is_main: True for rank 0 (the process that logs, writes files, saves checkpoints).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def is_distributed() -> bool:
    """True when a default process group exists (``torch.distributed`` is initialised)."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def get_rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return torch_dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the default group (1 without a process group)."""
    return torch_dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, and in a plain single-process run."""
    return get_rank() == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from exc


def _default_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def current_info() -> DistInfo:
    """The :class:`DistInfo` of this process as things stand (no initialisation)."""
    local_rank = (_env_int("LOCAL_RANK") or 0) if is_distributed() else 0
    rank = get_rank()
    return DistInfo(
        rank=rank,
        world_size=get_world_size(),
        local_rank=local_rank,
        device=_default_device(local_rank),
        is_main=rank == 0,
    )


def init_distributed(
    backend: str | None = None, timeout: datetime.timedelta | None = None
) -> DistInfo:
    """Create the default process group from torchrun's environment, if launched by it.

    Without ``RANK`` and ``WORLD_SIZE`` in the environment (a plain ``python`` run) this
    is a no-op and returns rank 0 of 1. Calling it again once the group exists returns
    the current information. On CUDA it also selects the device ``LOCAL_RANK``.

    Args:
        backend: ``"nccl"``, ``"gloo"``...; default NCCL when CUDA is available, else Gloo.
        timeout: collective timeout (PyTorch's default when None).

    Raises:
        ConfigError: a malformed torchrun environment (non-integer or inconsistent ranks).
    """
    if is_distributed():
        return current_info()
    rank = _env_int("RANK")
    world_size = _env_int("WORLD_SIZE")
    if rank is None or world_size is None:
        return DistInfo(0, 1, 0, _default_device(0), True)
    local_rank = _env_int("LOCAL_RANK") or 0
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})")
    if not torch_dist.is_available():
        raise ConfigError("torch.distributed is not available in this PyTorch build")
    device = _default_device(local_rank)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world_size}
    if timeout is not None:
        kwargs["timeout"] = timeout
    torch_dist.init_process_group(**kwargs)
    logger.info(
        "process group: backend %s, rank %d of %d, device %s", backend, rank, world_size, device
    )
    return DistInfo(rank, world_size, local_rank, device, rank == 0)


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if is_distributed():
        torch_dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` without a group.

    Collective: all processes must call it.
    """
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_tensor(tensor: torch.Tensor, op: ReduceOp = "sum") -> torch.Tensor:
    """Element-wise reduction of ``tensor`` over all processes, returned as a new tensor.

    The input is not modified. Without a process group the result is a copy of the
    input. Collective: all processes must call it with tensors of the same shape and
    dtype, on the backend's device (CPU for Gloo, this process's GPU for NCCL).
    """
    if op not in _REDUCE_OPS:
        raise ConfigError(f"unknown reduction {op!r}; expected one of {sorted(_REDUCE_OPS)}")
    result = tensor.detach().clone()
    if is_distributed() and get_world_size() > 1:
        torch_dist.all_reduce(result, op=_REDUCE_OPS[op])
    return result


def cleanup() -> None:
    """Destroy the default process group if one exists (safe to call twice)."""
    if is_distributed():
        torch_dist.destroy_process_group()
