"""Float32 islands inside autocast regions, chosen per device.

Under ``torch.autocast`` (bfloat16 / float16) every convolution and matrix product
rounds its inputs to 8 (or 11) mantissa bits. A few parts of AVSegFormer either move
the final masks far more than their share of the FLOPs when rounded, or gain nothing
from bfloat16; they can run inside :func:`float32_island` (autocast off, float32
inputs). Each is a switch on the module that owns it, and :class:`Float32Islands`
lists one choice of switches; :data:`FLOAT32_ISLANDS` holds the choice for each device
type, which :func:`~avsegformer.modeling.optimize.optimize` applies (``build_model``
starts from the CPU choice):

* ``deformable_attention`` (``MultiScaleDeformableAttention.float32_under_autocast``):
  sub-pixel sampling locations, 3% of the FLOPs;
* ``input_projections`` (``AVSegHead.float32_projections``): the input projections and
  the lateral conv (GroupNorm right after a projection of large activations cancels
  leading bits; 1.5%);
* ``decoder_attention_layers`` (``Decoder.set_float32_attention_layers``): the attention
  of the last decoder layers (3% for two);
* ``audio_embeddings`` (``VGGish.float32_embeddings``): VGGish's fully connected layers
  (on a CPU bound by reading 270 MB of weights for a handful of rows: casting them
  every call costs more than the float32 product);
* ``resnet50_stages`` (``ResNet.float32_stages`` of ResNet-50): the stem and the first
  stages (2% of the FLOPs for one, memory-bound anyway): the rest of that deep stack
  in bfloat16 moves mask borders little, all of it does;
* ``whole_backbone`` (``AVSegFormer.float32_backbone``): the visual backbone.

CPU, measured on the parity inputs (random weights, logits crowded around 0, a hard
case): binary-mask IoU of bfloat16 against float32 is 0.991 (res50_s4; 0.9925 with the
whole backbone in float32) and 0.995 (pvt2_s4) with the CPU islands, 0.983 and 0.994
without. CUDA (H200): 0.9909 and 0.9948 with the same islands (the ``"cuda"`` entry of
:data:`FLOAT32_ISLANDS` says how they were chosen).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch


@dataclasses.dataclass(frozen=True)
class Float32Islands:
    """Which parts of the model run in float32 under autocast (module docstring)."""

    deformable_attention: bool = True
    input_projections: bool = True
    decoder_attention_layers: int = 2
    audio_embeddings: bool = True
    resnet50_stages: int = 1
    whole_backbone: bool = False


#: The islands per device type (other device types use the CPU entry). CUDA: the same
#: set, chosen by measurement on an H200 (``bench/gpu_study.py``, results in
#: ``bench/results/cuda_islands.json``): bf16 mask IoU against the authors' float32
#: output 0.9909 (res50_s4) and 0.9948 (pvt2_s4); every lighter set studied leaves
#: res50_s4 below 0.99 (no islands 0.983, deformable attention only 0.986, without the
#: VGGish island 0.988) although it would run faster (1684 vs 1326 frames/s at 224 x 40).
FLOAT32_ISLANDS: dict[str, Float32Islands] = {
    "cpu": Float32Islands(),
    "cuda": Float32Islands(),
}


def float32_islands_for(device_type: str) -> Float32Islands:
    """The islands :data:`FLOAT32_ISLANDS` chooses for ``device_type``."""
    return FLOAT32_ISLANDS.get(device_type, FLOAT32_ISLANDS["cpu"])


def autocast_active(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``False`` for e.g. ``"meta"``)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


@contextlib.contextmanager
def float32_island(
    *tensors: torch.Tensor, enabled: bool = True
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Run a block in float32 when autocast is active for the tensors' device.

    Yields the tensors, cast to float32 if autocast was on (floating tensors only),
    unchanged otherwise; inside the block autocast is disabled. Outside autocast, or
    with ``enabled=False``, this is a no-op, so float64 gradient checks and plain
    float32 runs are unaffected.
    """
    device_type = tensors[0].device.type if tensors else "cpu"
    if not enabled or not autocast_active(device_type):
        yield tensors
        return
    with torch.autocast(device_type, enabled=False):
        yield tuple(t.float() if t.is_floating_point() else t for t in tensors)


def autocast_dtype_cast(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cast floating tensors to the active autocast dtype of their device, once.

    For weights used by several chunked products in one call: autocast would cast them
    again for every chunk (its cast cache is off under ``torch.no_grad``/inference).
    Outside autocast the tensors are returned unchanged.
    """
    if not tensors:
        return tensors
    device_type = tensors[0].device.type
    if not autocast_active(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)
