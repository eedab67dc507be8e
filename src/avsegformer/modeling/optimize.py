"""One explicit, device-aware optimisation step: :func:`optimize`.

The modules of :mod:`avsegformer.modeling` each have one plain forward, the one training
runs and the one that reads like the paper. Everything that makes the model fast on a
particular device is applied here, to a built model, by swapping sub-modules for their
device forms (:mod:`.forms`, same parameters, same function) and configuring them:

========================  ===================================  ===============================
                          CPU                                  CUDA
========================  ===================================  ===============================
deformable attention      ``gather`` form (embedding_bag,      ``"triton"`` kernel, forward
                          queries innermost); training:        and backward (``grid_sample``
                          ``grid_sample``                      without Triton)
mask MLP / ``fc``         chunks of 32 MB, biases folded       chunks only to bound memory
                          past the ReLUs                       (:func:`cuda_chunk_bytes`)
feed-forward blocks       8 MB row chunks accumulating into    plain (one product each)
                          ``x + bias``
float32 islands           ``FLOAT32_ISLANDS["cpu"]``           ``FLOAT32_ISLANDS["cuda"]``
convolution weights       as built                             channels-last
launches                  eager                                CUDA graphs (``cuda_graphs``)
========================  ===================================  ===============================

With ``for_training=True`` only forms that are exact under autograd are used (the
Triton kernel on CUDA; the plain modules on CPU). :func:`restore_plain_forms` undoes
the swaps. The tests check every form against the plain model (CPU), and on a GPU
(``make test-cuda``) the CUDA forms, forward and gradients.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Any, Literal

import torch
from torch import nn

from ..errors import ConfigError
from .avsegformer import AVSegFormer
from .backbones.resnet import Bottleneck, ResNet
from .cuda_graphs import CUDAGraphForward
from .deform_attn import MultiScaleDeformableAttention
from .forms import (
    ChunkedMaskDecoder,
    ChunkedQueryMaskMLP,
    DeviceForm,
    GatherDeformableAttention,
    InferenceDecoderLayer,
    InferenceEncoderLayer,
    InferenceQueryGeneratorLayer,
)
from .head import AVSegHead, MaskDecoder, QueryMaskMLP
from .kernels import triton_available
from .precision import Float32Islands, float32_islands_for
from .query_generator import QueryGeneratorLayer
from .transformer import Decoder, DecoderLayer, DeformableEncoderLayer
from .vggish import VGGish

logger = logging.getLogger(__name__)

Sampler = Literal["auto", "grid_sample", "gather", "triton"]

# On a GPU the mask head's chunks only bound memory: a share of the free memory, within
# limits that keep each product large enough to fill the device.
_CUDA_CHUNK_SHARE = 1 / 16
_CUDA_CHUNK_MIN_BYTES = 128 * 2**20
_CUDA_CHUNK_MAX_BYTES = 512 * 2**20


@dataclasses.dataclass(frozen=True)
class OptimizationReport:
    """What :func:`optimize` did (``model.optimization``)."""

    device: str
    dtype: str
    for_training: bool
    sampler: str
    forms: dict[str, int]
    float32_islands: Float32Islands
    chunk_bytes: int | None
    channels_last: bool
    cuda_graphs: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cuda_chunk_bytes(device: torch.device) -> int:
    """Byte budget of one chunk of the mask head's largest temporary on a CUDA device.

    A sixteenth of the free memory, at least 128 MB and at most 512 MB: 512 MB holds the
    2048-wide float32 hidden map of 19 frames at 224 px (3 at 512 px, 48k pixel rows),
    products large enough to keep a GPU busy; larger chunks would only raise the peak
    memory (the mask MLP holds two such maps at once).
    """
    free, _ = torch.cuda.mem_get_info(device)
    return plan_chunk_bytes(free)


def plan_chunk_bytes(free_bytes: int) -> int:
    """The rule of :func:`cuda_chunk_bytes` for ``free_bytes`` of free device memory."""
    share = int(free_bytes * _CUDA_CHUNK_SHARE)
    return max(_CUDA_CHUNK_MIN_BYTES, min(_CUDA_CHUNK_MAX_BYTES, share))


def resolve_sampler(sampler: Sampler, device: torch.device, for_training: bool) -> str:
    """The deformable-attention algorithm ``"auto"`` stands for on ``device``."""
    if sampler not in ("auto", "grid_sample", "gather", "triton"):
        raise ConfigError(
            f"unknown sampler {sampler!r}; use 'auto', 'grid_sample', 'gather' or 'triton'"
        )
    if sampler == "triton" and not (device.type == "cuda" and triton_available()):
        raise ConfigError("sampler 'triton' needs a CUDA device and the triton package")
    if sampler != "auto":
        return sampler
    if device.type == "cuda":
        return "triton" if triton_available() else "grid_sample"
    if device.type == "cpu" and not for_training:
        return "gather"
    return "grid_sample"


def optimize(
    model: nn.Module,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    for_training: bool = False,
    cuda_graphs: bool = False,
    sampler: Sampler = "auto",
    islands: Float32Islands | None = None,
    chunk_bytes: int | None = None,
) -> nn.Module:
    """Prepare ``model`` to run fast on ``device``; returns the same (modified) model.

    Args:
        model: an :class:`~avsegformer.modeling.avsegformer.AVSegFormer` (or any module
            holding its parts).
        device: where the model runs (it is moved there); default: where it is.
        dtype: the autocast dtype it will run under (``torch.bfloat16``,
            ``torch.float16``), or ``None`` / ``torch.float32`` for plain float32.
            Recorded in the report; the islands are the same for every low precision.
        for_training: use only forms that are exact under autograd.
        cuda_graphs: replay the forward as CUDA graphs (inference on CUDA only; see
            :mod:`.cuda_graphs`).
        sampler: deformable-attention algorithm; ``"auto"`` picks per device (module
            docstring).
        islands: float32 islands; default ``FLOAT32_ISLANDS[device.type]``.
        chunk_bytes: chunk budget of the mask head (inference); default per device.
    """
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"optimize for {device}: this PyTorch ({torch.__version__}) sees no CUDA device"
        )
    if cuda_graphs and (for_training or device.type != "cuda"):
        raise ConfigError("cuda_graphs needs a CUDA device and for_training=False")
    restore_plain_forms(model)
    model.to(device)
    islands = islands or float32_islands_for(device.type)
    apply_float32_islands(model, islands)
    method = resolve_sampler(sampler, device, for_training)

    swaps: dict[type[nn.Module], type[nn.Module]] = {}
    budget: int | None = None
    if not for_training and device.type == "cpu":
        swaps = {
            QueryMaskMLP: ChunkedQueryMaskMLP,
            MaskDecoder: ChunkedMaskDecoder,
            DeformableEncoderLayer: InferenceEncoderLayer,
            DecoderLayer: InferenceDecoderLayer,
            QueryGeneratorLayer: InferenceQueryGeneratorLayer,
        }
        if method == "gather":
            swaps[MultiScaleDeformableAttention] = GatherDeformableAttention
    elif not for_training and device.type == "cuda":
        swaps = {QueryMaskMLP: ChunkedQueryMaskMLP, MaskDecoder: ChunkedMaskDecoder}
        budget = chunk_bytes or cuda_chunk_bytes(device)

    forms: Counter[str] = Counter()
    for module in model.modules():
        form = swaps.get(type(module))
        if form is not None:
            module.__class__ = form
            forms[form.__name__] += 1
        if isinstance(module, MultiScaleDeformableAttention):
            module.method = "grid_sample" if method == "gather" else method  # type: ignore[assignment]
        if isinstance(module, ChunkedQueryMaskMLP):
            module.fold_biases = device.type == "cpu"
        if isinstance(module, ChunkedQueryMaskMLP | ChunkedMaskDecoder) and budget is not None:
            module.chunk_bytes = budget

    channels_last = device.type == "cuda" and not for_training
    if channels_last:
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.to(memory_format=torch.channels_last)

    if cuda_graphs:
        # An instance attribute shadows the class's forward (nn.Module.__call__ reads
        # self.forward); restore_plain_forms removes it.
        model.forward = CUDAGraphForward(model, model.forward)  # type: ignore[method-assign]

    report = OptimizationReport(
        device=str(device),
        dtype=str(dtype or torch.float32).removeprefix("torch."),
        for_training=for_training,
        sampler=method,
        forms=dict(forms),
        float32_islands=islands,
        chunk_bytes=budget,
        channels_last=channels_last,
        cuda_graphs=cuda_graphs,
    )
    model.optimization = report  # type: ignore[assignment]
    logger.debug("optimize: %s", report)
    return model


def restore_plain_forms(model: nn.Module) -> nn.Module:
    """Undo :func:`optimize`'s swaps and CUDA graphs (the islands and device stay)."""
    graphed = model.__dict__.get("forward")
    if isinstance(graphed, CUDAGraphForward):
        graphed.reset()
        del model.__dict__["forward"]
    for module in model.modules():
        if isinstance(module, DeviceForm):
            module.__class__ = type(module).plain_class
        if isinstance(module, MultiScaleDeformableAttention) and module.method == "triton":
            module.method = "grid_sample"
    model.__dict__.pop("optimization", None)
    return model


def apply_float32_islands(model: nn.Module, islands: Float32Islands) -> None:
    """Set every island switch of ``model`` as ``islands`` says (see :mod:`.precision`)."""
    for module in model.modules():
        if isinstance(module, MultiScaleDeformableAttention):
            module.float32_under_autocast = islands.deformable_attention
        elif isinstance(module, AVSegHead):
            module.float32_projections = islands.input_projections
        elif isinstance(module, Decoder):
            module.set_float32_attention_layers(islands.decoder_attention_layers)
        elif isinstance(module, VGGish):
            module.float32_embeddings = islands.audio_embeddings
        elif isinstance(module, ResNet) and module.block_type is Bottleneck:
            module.float32_stages = islands.resnet50_stages
        elif isinstance(module, AVSegFormer):
            module.float32_backbone = islands.whole_backbone
