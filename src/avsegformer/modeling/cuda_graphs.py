"""Replay the model's forward as CUDA graphs, one per input signature.

On a GPU the eager forward of AVSegFormer launches about two thousand kernels, and
the Python that launches them takes longer than the GPU takes to run them (measured
on an H200: 228 ms of CPU for 49 ms of GPU per forward of 40 frames at 224 px). A CUDA
graph records the launches once and replays them with one call.

:class:`CUDAGraphForward` is installed by
:func:`avsegformer.modeling.optimize.optimize` (``cuda_graphs=True``) in place of the
model's ``forward``. For each new signature (input shapes, dtypes, device, autocast
state) it runs the eager forward twice on a side stream (kernel selection, Triton
compilation, allocator warm-up), captures a third run, and from then on copies the
inputs into the captured buffers, replays, and returns copies of the outputs. All
graphs share one memory pool (only one runs at a time, and outputs are copied out
before the next replay). It falls back to the eager forward whenever a graph cannot
apply: autograd recording, training mode, inputs not on a CUDA device. The model's
input checks (``validate_inputs``: shapes, dtypes, NaN / inf) run before every capture
and replay, outside the capture.

The weights are read from where they were at capture: update them in place
(``load_state_dict`` does), never replace the tensors, or call
:meth:`CUDAGraphForward.reset`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

Signature = tuple[Any, ...]


def graph_signature(*tensors: torch.Tensor | None) -> Signature:
    """What a captured graph depends on: shapes, dtypes, devices and autocast state."""
    parts: list[Any] = []
    for t in tensors:
        parts.append(None if t is None else (tuple(t.shape), t.dtype, t.device, t.stride()))
    device_type = next((t.device.type for t in tensors if t is not None), "cpu")
    autocast = torch.is_autocast_enabled(device_type)
    parts.append((autocast, torch.get_autocast_dtype(device_type) if autocast else None))
    return tuple(parts)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor | None, ...]
    outputs: tuple[torch.Tensor, ...]
    rebuild: Callable[[list[torch.Tensor]], Any]


def _flatten_output(output: Any) -> tuple[tuple[torch.Tensor, ...], Callable[[list], Any]]:
    """The tensors of a forward's output, and how to rebuild that output from them."""
    if isinstance(output, torch.Tensor):
        return (output,), lambda tensors: tensors[0]
    if isinstance(output, tuple):
        make = getattr(type(output), "_make", tuple)  # named tuples keep their type
        return tuple(output), make
    raise TypeError(f"cannot capture a forward returning {type(output).__name__}")


class CUDAGraphForward:
    """Callable that replaces ``module.forward`` (see the module docstring).

    Args:
        module: the model (its ``training`` flag is checked at every call).
        eager_forward: the bound forward to capture and to fall back to.
        warmup: eager runs before each capture.
        max_graphs: graphs kept (least recently used dropped first).
    """

    def __init__(
        self,
        module: nn.Module,
        eager_forward: Callable[..., Any],
        *,
        warmup: int = 2,
        max_graphs: int = 8,
    ) -> None:
        self.module = module
        self.eager_forward = eager_forward
        self.warmup = warmup
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[Signature, _Graph] = OrderedDict()
        self._failed: set[Signature] = set()
        self._pool: Any = None
        self.replays = 0
        self.captures = 0
        self.failures = 0

    def reset(self) -> None:
        """Drop every captured graph (and with them their memory)."""
        self._graphs.clear()
        self._failed.clear()
        self._pool = None

    def __call__(
        self, frames: torch.Tensor, audio: torch.Tensor, temporal_mask: torch.Tensor | None = None
    ) -> Any:
        inputs = (frames, audio, temporal_mask)
        usable = (
            not torch.is_grad_enabled()
            and not self.module.training
            and all(
                t is None or (isinstance(t, torch.Tensor) and t.device.type == "cuda")
                for t in inputs
            )
        )
        if not usable:
            return self.eager_forward(*inputs)  # which checks its inputs (non-tensors too)
        validate = getattr(self.module, "validate_inputs", None)
        if validate is not None:
            # A replay runs no Python, so the model's input checks (shapes, NaN / inf) run
            # here, outside any capture, on every call (the forward skips its NaN / inf
            # check while being captured: a synchronisation would abort the capture).
            validate(*inputs)
        signature = graph_signature(*inputs)
        if signature in self._failed:
            return self.eager_forward(*inputs)
        entry = self._graphs.get(signature)
        if entry is None:
            try:
                entry = self._capture(signature, inputs)
            except RuntimeError as error:  # an operation that cannot be captured
                logger.warning(
                    "CUDA graph capture failed (%s); this input shape runs eagerly",
                    str(error).splitlines()[0][:200],
                )
                self._failed.add(signature)
                self.failures += 1
                torch.cuda.synchronize()
                return self.eager_forward(*inputs)
        else:
            self._graphs.move_to_end(signature)
        with torch.inference_mode():
            for static, given in zip(entry.inputs, inputs, strict=True):
                if static is not None and given is not None:
                    static.copy_(given)
            entry.graph.replay()
        self.replays += 1
        # Copies: the next replay overwrites the captured outputs.
        return entry.rebuild([t.clone() for t in entry.outputs])

    def _capture(self, signature: Signature, inputs: tuple[torch.Tensor | None, ...]) -> _Graph:
        device = next(t.device for t in inputs if t is not None)
        while len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
        with torch.inference_mode():
            static = tuple(None if t is None else t.clone() for t in inputs)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(self.warmup):
                self.eager_forward(*static)
        torch.cuda.current_stream(device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self._pool):
            output = self.eager_forward(*static)
        entry = _Graph(graph, static, *_flatten_output(output))
        self._graphs[signature] = entry
        self.captures += 1
        logger.debug("captured a CUDA graph for %s", signature)
        return entry
