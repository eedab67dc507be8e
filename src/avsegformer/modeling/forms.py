"""Device forms: subclasses of the plain modules that compute the same function faster.

Each form only overrides ``forward`` (or a helper of it) and adds no parameters or
buffers, so swapping a module's class keeps its state dict, hooks and device.
:func:`avsegformer.modeling.optimize.optimize` does the swapping, per device; the plain
modules never refer to these classes. Every form is checked against its plain module
by the tests (same outputs up to float rounding).

* :class:`GatherDeformableAttention`: the CPU inference form of deformable attention
  (``embedding_bag`` taps in a queries-innermost layout, 20 vs 26 ms per encoder layer
  of res50_s4 at 224 px on a 2-core CPU).
* :class:`ChunkedQueryMaskMLP`: the mask MLP over chunks of frames whose hidden map
  stays under a byte budget; optionally (CPU) with the biases moved past the ReLUs.
* :class:`ChunkedMaskDecoder`: ``fc`` over chunks of frames (its 4x-upsampled map is
  the largest activation of the model).
* :class:`InferenceEncoderLayer`, :class:`InferenceDecoderLayer`,
  :class:`InferenceQueryGeneratorLayer`: feed-forward blocks over row chunks that
  accumulate the second product into ``x + bias`` (CPU: no bias copy, no concatenation,
  temporaries below the C allocator's fresh-page threshold).

Inference forms refuse to run while autograd records (their in-place tricks would give
wrong gradients); :func:`~avsegformer.modeling.optimize.optimize` with
``for_training=True`` never selects them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deform_attn import MultiScaleDeformableAttention, gather_mix, level_sizes
from .head import MaskDecoder, QueryMaskMLP
from .precision import autocast_dtype_cast, float32_island
from .query_generator import QueryGeneratorLayer
from .transformer import DecoderLayer, DeformableEncoderLayer

#: CPU chunk budgets (bytes of the largest temporary per chunk), sized for a CPU's
#: caches and for glibc, which maps fresh zero-filled pages for every block >= 32 MB.
CPU_MASK_CHUNK_BYTES = 32 * 2**20
CPU_FEED_FORWARD_CHUNK_BYTES = 8 * 2**20


class DeviceForm:
    """Marks a device form; ``plain_class`` is the module class it stands for."""

    plain_class: type[nn.Module]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        plain = next(b for b in cls.__mro__[1:] if not issubclass(b, DeviceForm))
        cls.plain_class = plain


def refuse_autograd(module: nn.Module, *tensors: torch.Tensor, has_dropout: bool = False) -> None:
    """Raise if autograd records through an inference form (or, for a module with
    dropout, if it is in training mode)."""
    recording = torch.is_grad_enabled() and (
        any(t.requires_grad for t in tensors) or any(p.requires_grad for p in module.parameters())
    )
    if recording or (has_dropout and module.training):
        raise RuntimeError(
            f"{type(module).__name__} is an inference form (avsegformer.optimize): it cannot "
            "run in training mode or with autograd recording; use torch.no_grad() / "
            "eval(), or optimize(model, for_training=True)"
        )


def chunk_items(total: int, bytes_per_item: int, budget_bytes: int) -> int:
    """How many of ``total`` items (frames, rows) go in one chunk of ``budget_bytes``.

    At least one; all of them when they fit (one chunk, no splitting).
    """
    if total < 1:
        return 1
    return max(1, min(total, budget_bytes // max(bytes_per_item, 1)))


class GatherDeformableAttention(DeviceForm, MultiScaleDeformableAttention):
    """CPU inference form: ``"gather"`` sampling on inputs laid out queries-innermost.

    The sampling offsets come out of the product already transposed (queries innermost,
    ``[M*L*P*2, B*Q]``: the product costs the same), and the softmax runs over
    ``L * P`` with the queries innermost per frame: 9x faster on a CPU than over rows of
    12, and it rounds a frame the same whatever the batch around it.
    """

    chunk_bytes: int = 16 * 2**20

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],  # type: ignore[override]
    ) -> torch.Tensor:
        refuse_autograd(self, query, value)
        batch, num_queries, channels = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        inputs = (query, reference_points, value)
        with float32_island(*inputs, enabled=self.float32_under_autocast) as inputs:
            query, reference_points, value = inputs
            values = self.value_proj(value).unflatten(-1, (heads, -1))
            logits = self.attention_weights(query).view(batch, num_queries, heads, -1)
            weights = logits.permute(0, 2, 3, 1).contiguous().softmax(2)  # [B, M, L*P, Q]
            offsets = torch.addmm(
                self.sampling_offsets.bias[:, None],
                self.sampling_offsets.weight,
                query.reshape(-1, channels).t(),
            )  # [M*L*P*2, B*Q]
            # Location u = reference + offset / size samples pixel u * size - 0.5, i.e.
            # the reference in pixels plus the raw offset.
            size = level_sizes(tuple(map(tuple, spatial_shapes)), offsets.device, offsets.dtype)
            anchors = (reference_points.to(offsets.dtype) * size - 0.5).permute(2, 3, 0, 1)
            pixels = offsets.view(heads, levels, points, 2, batch, num_queries)
            weights = weights.permute(1, 2, 0, 3).contiguous()
            weights = weights.view(heads, levels, points, batch, num_queries)
            mixed = gather_mix(
                values, spatial_shapes, pixels + anchors[:, None], weights, self.chunk_bytes
            )
            return self.output_proj(mixed)


class ChunkedQueryMaskMLP(DeviceForm, QueryMaskMLP):
    """The folded mask MLP over chunks of frames whose hidden map fits ``chunk_bytes``.

    With ``fold_biases`` (CPU) each bias moves past its ReLU, ``relu(z + b) =
    max(z, -b) + b``, and the ``+ b`` joins the next layer's bias, ``W (y + b) + c =
    W y + (W b + c)``, so no product starts by copying a bias into its ``[N, hidden]``
    output. The weights are cast for autocast once per call, not once per chunk.
    """

    chunk_bytes: int = CPU_MASK_CHUNK_BYTES
    fold_biases: bool = True

    def forward(self, queries: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        refuse_autograd(self, queries, feature)
        if self.mode != "folded":
            return super().forward(queries, feature)
        height, width = feature.shape[-2:]
        hidden = self.layers[0].out_channels
        per_frame = hidden * height * width * max(feature.element_size(), 2)
        chunk = chunk_items(feature.shape[0], per_frame, self.chunk_bytes)
        params = [t for layer in self.layers for t in (layer.weight.flatten(1), layer.bias)]
        params = list(autocast_dtype_cast(*params))
        run = self._folded_biases if self.fold_biases else self._plain_products
        parts = [
            run(q, f, params[0::2], params[1::2])
            for q, f in zip(queries.split(chunk), feature.split(chunk), strict=True)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @staticmethod
    def _rows_and_folded(
        queries: torch.Tensor, feature: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel rows ``[B, N, C]`` and the first layer folded into the queries
        ``[B, C, hidden]``."""
        batch, channels, height, width = feature.shape
        rows = feature.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        return rows, torch.matmul(queries.transpose(1, 2), weight.t())

    def _plain_products(
        self,
        queries: torch.Tensor,
        feature: torch.Tensor,
        weights: list[torch.Tensor],
        biases: list[torch.Tensor],
    ) -> torch.Tensor:
        batch, _, height, width = feature.shape
        x = torch.baddbmm(biases[0], *self._rows_and_folded(queries, feature, weights[0]))
        for weight, bias in zip(weights[1:], biases[1:], strict=True):
            x = F.linear(x.relu_(), weight, bias)
        return x.view(batch, height, width, -1).permute(0, 3, 1, 2)

    def _folded_biases(
        self,
        queries: torch.Tensor,
        feature: torch.Tensor,
        weights: list[torch.Tensor],
        biases: list[torch.Tensor],
    ) -> torch.Tensor:
        if len(weights) == 1:
            return self._plain_products(queries, feature, weights, biases)
        batch, _, height, width = feature.shape
        x = torch.bmm(*self._rows_and_folded(queries, feature, weights[0])).flatten(0, 1)
        shift = biases[0]
        for index, (weight, bias) in enumerate(zip(weights[1:], biases[1:], strict=True)):
            torch.maximum(x, -shift, out=x)
            shift = torch.addmv(bias, weight, shift)
            last = index == len(weights) - 2
            x = torch.addmm(shift, x, weight.t()) if last else torch.mm(x, weight.t())
        return x.view(batch, height, width, -1).permute(0, 3, 1, 2)


class ChunkedMaskDecoder(DeviceForm, MaskDecoder):
    """``fc`` over chunks of frames whose 4x-upsampled hidden map fits ``chunk_bytes``."""

    chunk_bytes: int = CPU_MASK_CHUNK_BYTES

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        refuse_autograd(self, pixels)
        height, width = pixels.shape[-2:]
        hidden = self[0].out_channels
        per_frame = hidden * 16 * height * width * max(pixels.element_size(), 2)
        chunk = chunk_items(pixels.shape[0], per_frame, self.chunk_bytes)
        parts = [super(ChunkedMaskDecoder, self).forward(part) for part in pixels.split(chunk)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def accumulating_feed_forward(
    x: torch.Tensor, linear1: nn.Linear, linear2: nn.Linear, chunk_bytes: int
) -> torch.Tensor:
    """``x + linear2(gelu(linear1(x)))`` over row chunks, without dropout or autograd.

    The second product of each chunk accumulates straight into ``x + bias`` (no bias
    copy, no concatenation, no separate residual pass); GELU runs in place.
    """
    rows = x.reshape(-1, x.shape[-1])
    hidden_bytes = linear1.out_features * max(rows.element_size(), 2)
    chunk = chunk_items(rows.shape[0], hidden_bytes, chunk_bytes)
    w1, b1, w2, b2 = autocast_dtype_cast(linear1.weight, linear1.bias, linear2.weight, linear2.bias)
    out = rows + b2
    for part, target in zip(rows.split(chunk), out.split(chunk), strict=True):
        hidden = torch.ops.aten.gelu_(F.linear(part, w1, b1))
        if hidden.dtype == target.dtype:
            torch.addmm(target, hidden, w2.t(), out=target)
        else:  # autocast: a low-precision product added to the float32 stream
            target.add_(torch.mm(hidden, w2.t()))
    return out.view_as(x)


class _AccumulatingFeedForward(DeviceForm):
    chunk_bytes: int = CPU_FEED_FORWARD_CHUNK_BYTES

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        refuse_autograd(self, x, has_dropout=True)  # type: ignore[arg-type]
        linear1, linear2 = self.feed_forward_linears()  # type: ignore[attr-defined]
        return accumulating_feed_forward(x, linear1, linear2, self.chunk_bytes)


class InferenceEncoderLayer(_AccumulatingFeedForward, DeformableEncoderLayer):
    """Encoder layer with the accumulating feed-forward (CPU inference)."""


class InferenceDecoderLayer(_AccumulatingFeedForward, DecoderLayer):
    """Decoder layer with the accumulating feed-forward (CPU inference)."""


class InferenceQueryGeneratorLayer(_AccumulatingFeedForward, QueryGeneratorLayer):
    """Query-generator layer with the accumulating feed-forward (CPU inference)."""
