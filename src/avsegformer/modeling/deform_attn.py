"""Multi-scale deformable attention in pure PyTorch (no compiled extension).

Each query attends to ``num_points`` locations per head and per feature level, placed
around a reference point by learned offsets, and mixes the bilinearly sampled values
with softmax weights. :func:`deformable_attention` is that computation from the raw
offsets and logits; :func:`multi_scale_deformable_attention` is its sampling core.
Three algorithms compute the same function (they differ only by float rounding), all
differentiable with respect to values, locations (offsets) and weights (logits):

* ``"grid_sample"`` (default, the reference): one ``F.grid_sample`` per level over all
  heads and images, then a weighted sum over points, as the pure-PyTorch fallback of
  Deformable DETR does. Any device, any float dtype.
* ``"gather"``: each bilinear tap is one weighted row lookup in a table of per-head
  values, and ``F.embedding_bag`` sums the ``4 * L * P`` taps of every (query, head)
  pair in a single pass, with weight = bilinear weight x attention weight. Every level
  gets a one-pixel border of zeros, so a tap outside the image reads a zero row instead
  of needing a mask. Fastest for inference on a CPU (its backward is slower than
  ``grid_sample``'s); the CPU inference form
  (:class:`~avsegformer.modeling.forms.GatherDeformableAttention`) uses it.
* ``"triton"``: one Triton kernel, forward and backward, with the softmax and the
  locations computed in registers
  (:mod:`avsegformer.modeling.kernels.deform_attn_triton`); for CUDA GPUs.

:func:`avsegformer.modeling.optimize.optimize` picks the algorithm per device.

# References: Deformable DETR (Zhu et al., arXiv 2010.04159), section 4.1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .precision import float32_island

SpatialShapes = Sequence[tuple[int, int]]
SamplingMethod = Literal["grid_sample", "gather", "triton"]
SAMPLING_METHODS: tuple[str, ...] = ("grid_sample", "gather", "triton")

# The gather algorithm samples frames in chunks whose tap tables stay below this many
# bytes (sized for a CPU's caches).
GATHER_CHUNK_BYTES = 16 * 2**20


def deformable_attention(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    reference_points: torch.Tensor,
    offsets: torch.Tensor,
    logits: torch.Tensor,
    method: SamplingMethod = "grid_sample",
) -> torch.Tensor:
    """Deformable attention from raw offsets and logits.

    ``location = reference + offset / (W_l, H_l)`` and ``weights = softmax(logits)``
    over the ``L * P`` samples of each (query, head), then
    :func:`multi_scale_deformable_attention`.

    Args:
        value: ``[B, S, M, D]`` per-head values of the ``S = sum(H_l * W_l)`` tokens.
        spatial_shapes: ``L`` pairs ``(H_l, W_l)`` (plain ints).
        reference_points: ``[B or 1, Q, L, 2]`` ``(x, y)`` in [0, 1] per level.
        offsets: ``[B, Q, M, L, P, 2]`` sampling offsets, in pixels of each level.
        logits: ``[B, Q, M, L * P]`` attention logits.
        method: ``"grid_sample"``, ``"gather"`` or ``"triton"`` (module docstring).

    Returns:
        ``[B, Q, M * D]``, dtype of ``value`` (head-major channel order).
    """
    if method == "triton":
        from .kernels.deform_attn_triton import fused_deformable_attention

        return fused_deformable_attention(value, spatial_shapes, reference_points, offsets, logits)
    batch, queries, heads, levels, points, _ = offsets.shape
    size = level_sizes(tuple(spatial_shapes), offsets.device, offsets.dtype)  # [L, 2] (W, H)
    locations = reference_points[:, :, None, :, None, :] + offsets / size[:, None, :]
    weights = logits.softmax(-1).view(batch, queries, heads, levels, points)
    return multi_scale_deformable_attention(value, spatial_shapes, locations, weights, method)


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    method: SamplingMethod = "grid_sample",
) -> torch.Tensor:
    """Sample multi-level values at fractional locations and mix them per head.

    Args:
        value: ``[B, S, M, D]`` per-head values of the ``S = sum(H_l * W_l)`` tokens of
            all levels, level after level, each level in row-major order.
        spatial_shapes: ``L`` pairs ``(H_l, W_l)`` (plain ints).
        sampling_locations: ``[B, Q, M, L, P, 2]`` ``(x, y)`` in image-normalised
            coordinates: 0 and 1 are the outer edges of the first and last pixel
            (``align_corners=False``); points outside read zeros.
        attention_weights: ``[B, Q, M, L, P]``, usually summing to 1 over ``(L, P)``.
        method: ``"grid_sample"`` or ``"gather"`` (``"triton"`` works from the raw
            offsets and logits: :func:`deformable_attention`).

    Returns:
        ``[B, Q, M * D]``, dtype of ``value`` (head-major channel order).
    """
    levels = sampling_locations.shape[3]
    _check_shapes(value.shape[1], spatial_shapes, levels)
    if method == "grid_sample":
        return _grid_sample_mix(value, spatial_shapes, sampling_locations, attention_weights)
    if method != "gather":
        raise ValueError(
            f"unknown sampling method {method!r} for sampling locations; use 'grid_sample' "
            "or 'gather' ('triton' takes raw offsets: deformable_attention)"
        )
    size = level_sizes(tuple(spatial_shapes), sampling_locations.device, sampling_locations.dtype)
    pixels = (sampling_locations * size[:, None, :] - 0.5).permute(2, 3, 4, 5, 0, 1)
    return gather_mix(value, spatial_shapes, pixels, attention_weights.permute(2, 3, 4, 0, 1))


def gather_mix(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    pixels: torch.Tensor,
    weights: torch.Tensor,
    chunk_bytes: int = GATHER_CHUNK_BYTES,
) -> torch.Tensor:
    """The ``"gather"`` algorithm, on inputs laid out with the queries innermost.

    Args:
        value: ``[B, S, M, D]`` as in :func:`multi_scale_deformable_attention`.
        spatial_shapes: ``L`` pairs ``(H_l, W_l)``.
        pixels: ``[M, L, P, 2, B, Q]`` ``(x, y)`` in pixels of each level, pixel
            centres at integers (normalised ``u`` is ``u * size - 0.5``); any strides.
        weights: ``[M, L, P, B, Q]`` attention weights; any strides.
        chunk_bytes: frames are sampled in chunks whose tap tables stay below this.

    Returns:
        ``[B, Q, M * D]``, dtype of ``value``.
    """
    batch, tokens, heads, head_dim = value.shape
    _check_shapes(tokens, spatial_shapes, pixels.shape[1])
    levels, points, queries = pixels.shape[1], pixels.shape[2], pixels.shape[-1]
    taps = 4 * levels * points
    # Two float tensors and one index tensor of taps per (frame, query, head).
    chunk = max(1, chunk_bytes // (3 * 4 * taps * heads * queries))
    parts = []
    for start in range(0, batch, chunk):
        frames = slice(start, start + chunk)
        table = _padded_table(value[frames], spatial_shapes)  # [b, S_pad, M, D]
        rows, tap_weights = _taps(pixels[..., frames, :], weights[..., frames, :], spatial_shapes)
        mixed = F.embedding_bag(
            rows.flatten(0, 2),
            table.view(-1, head_dim),
            mode="sum",
            per_sample_weights=tap_weights.flatten(0, 2).to(value.dtype),
        )
        parts.append(mixed.view(table.shape[0], queries, heads * head_dim))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _check_shapes(num_tokens: int, spatial_shapes: SpatialShapes, levels: int) -> None:
    if sum(h * w for h, w in spatial_shapes) != num_tokens or len(spatial_shapes) != levels:
        raise ValueError(
            f"spatial_shapes {list(spatial_shapes)} do not describe {num_tokens} tokens "
            f"in {levels} levels"
        )


@functools.lru_cache(maxsize=64)
def level_sizes(
    spatial_shapes: tuple[tuple[int, int], ...], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``[L, 2]`` ``(W_l, H_l)`` in ``dtype`` on ``device``, made once per pyramid.

    Cached: a CUDA graph capture cannot copy from the host, and a small host-to-device
    copy per layer and call is needless work. Made outside inference mode so that a
    tensor first made for inference can be saved for a backward pass later.
    """
    with torch.inference_mode(False):
        sizes = [[w, h] for h, w in spatial_shapes]
        return torch.tensor(sizes, dtype=dtype, device=device)


def _level_sizes(spatial_shapes: SpatialShapes, like: torch.Tensor) -> torch.Tensor:
    return level_sizes(tuple(tuple(s) for s in spatial_shapes), like.device, like.dtype)


def _padded_table(value: torch.Tensor, spatial_shapes: SpatialShapes) -> torch.Tensor:
    """``[b, S, M, D]`` -> ``[b, S_pad, M, D]``: each level inside a one-pixel zero border."""
    batch, _, heads, head_dim = value.shape
    padded = sum((h + 2) * (w + 2) for h, w in spatial_shapes)
    table = value.new_zeros(batch, padded, heads, head_dim)
    start = padded_start = 0
    for height, width in spatial_shapes:
        level = value[:, start : start + height * width].unflatten(1, (height, width))
        window = table[:, padded_start : padded_start + (height + 2) * (width + 2)]
        window.unflatten(1, (height + 2, width + 2))[:, 1:-1, 1:-1] = level
        start += height * width
        padded_start += (height + 2) * (width + 2)
    return table


def _taps(
    pixels: torch.Tensor, weights: torch.Tensor, spatial_shapes: SpatialShapes
) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows and weights of the bilinear taps, ``[b, Q, M, 4*L*P]`` each.

    ``pixels`` ``[M, L, P, 2, b, Q]``, ``weights`` ``[M, L, P, b, Q]``. Row of the tap
    at padded pixel ``(y, x)`` of level ``l``, head ``m``, frame ``f``:
    ``((f * S_pad + start_l + (y + 1) * (W_l + 2) + x + 1) * M + m``.
    """
    heads, levels, points, _, batch, queries = pixels.shape
    device = pixels.device
    # Sub-pixel arithmetic needs more than bfloat16's 8 bits.
    coords = pixels if pixels.dtype in (torch.float32, torch.float64) else pixels.float()
    padded = sum((h + 2) * (w + 2) for h, w in spatial_shapes)
    num_rows = batch * padded * heads
    # Row numbers are computed in floating point, exact below 2**24 in float32.
    index_dtype = coords.dtype if num_rows < 2**24 else torch.float64

    lower = coords.floor()
    fraction = coords - lower  # NaN for a NaN or infinite location: NaN output, as grid_sample
    lower = lower.to(index_dtype).nan_to_num_(nan=-1.0)
    # [M, L, P, corner, xy, b, Q]: corners clamped to the zero border [-1, size].
    corners = torch.stack((lower, lower + 1), dim=3)
    size = _level_sizes(spatial_shapes, corners)[:, None, None, :, None, None]
    corners = torch.clamp(corners, min=corners.new_tensor(-1.0), max=size)
    strides = [[heads, (w + 2) * heads] for _, w in spatial_shapes]
    corners = corners * corners.new_tensor(strides)[:, None, None, :, None, None]
    level_starts, offset = [], 0
    for height, width in spatial_shapes:
        level_starts.append((offset + width + 3) * heads)  # padded pixel (0, 0)
        offset += (height + 2) * (width + 2)
    base = (
        corners.new_tensor(level_starts)[None, :]
        + torch.arange(heads, device=device, dtype=index_dtype)[:, None]
    )[:, :, None, None, None, None] + (
        torch.arange(batch, device=device, dtype=index_dtype) * (padded * heads)
    )[:, None]  # [M, L, 1, 1, b, 1]
    row_y = corners[:, :, :, :, 1] + base  # [M, L, P, corner_y, b, Q]
    rows_t = row_y[:, :, :, :, None] + corners[:, :, :, None, :, 0]  # [M, L, P, cy, cx, b, Q]

    bilinear = torch.stack((1 - fraction, fraction), dim=3)  # [M, L, P, corner, xy, b, Q]
    weight_y = bilinear[:, :, :, :, 1] * weights[:, :, :, None].to(bilinear.dtype)
    weights_t = weight_y[:, :, :, :, None] * bilinear[:, :, :, None, :, 0]

    # Bag-major layout for embedding_bag: [b, Q, M, taps].
    taps = 4 * levels * points
    row_dtype = torch.int32 if num_rows < 2**31 else torch.int64
    rows = torch.empty(batch, queries, heads, taps, dtype=row_dtype, device=device)
    rows.copy_(rows_t.reshape(heads, taps, batch, queries).permute(2, 3, 0, 1))
    tap_weights = weights_t.reshape(heads, taps, batch, queries).permute(2, 3, 0, 1).contiguous()
    return rows, tap_weights


def _grid_sample_mix(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The ``"grid_sample"`` algorithm (arguments as :func:`multi_scale_deformable_attention`)."""
    batch, num_tokens, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    # Heads become part of the batch: [B*M, D, S].
    value = value.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, num_tokens)
    # grid_sample wants coordinates in [-1, 1]. Points go to the sampled "height" axis
    # and queries to the "width" axis, so the weighted sum over points below reads
    # contiguous rows of queries: [B*M, L, P, Q, 2] and weights [B*M, L, P, Q].
    grids = (2 * sampling_locations - 1).permute(0, 2, 3, 4, 1, 5)
    grids = grids.reshape(batch * heads, levels, points, num_queries, 2)
    weights = attention_weights.permute(0, 2, 3, 4, 1).reshape(
        batch * heads, levels, points, num_queries
    )

    output: torch.Tensor | None = None
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        level_value = value[:, :, start : start + height * width].unflatten(2, (height, width))
        start += height * width
        sampled = F.grid_sample(
            level_value,
            grids[:, level].to(level_value.dtype),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # [B*M, D, P, Q]
        level_weights = weights[:, level].to(sampled.dtype)
        for point in range(points):
            term = (sampled[:, :, point], level_weights[:, None, point])
            output = term[0] * term[1] if output is None else output.addcmul_(*term)
    assert output is not None
    return output.view(batch, heads * head_dim, num_queries).transpose(1, 2)


def encoder_reference_points(
    spatial_shapes: SpatialShapes, device: torch.device | None = None
) -> torch.Tensor:
    """Reference point of every encoder token: the centre of its own pixel.

    Returns:
        float32 ``[1, S, L, 2]`` ``(x, y)`` in (0, 1); the same point for every level
        (no padding, so all valid ratios are 1).
    """
    per_level = []
    for height, width in spatial_shapes:
        ys = torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device) / height
        xs = torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device) / width
        grid = torch.stack(
            [xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=-1
        )
        per_level.append(grid.reshape(-1, 2))
    points = torch.cat(per_level, dim=0)
    return points[None, :, None, :].expand(1, -1, len(spatial_shapes), 2)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention of queries over a multi-level feature pyramid.

    State-dict entries: ``sampling_offsets``, ``attention_weights``, ``value_proj``,
    ``output_proj`` (all ``nn.Linear``), as in Deformable DETR.

    Attributes (set per device by :func:`~avsegformer.modeling.optimize.optimize`):
        method: the sampling algorithm (see :func:`deformable_attention`).
        float32_under_autocast: under autocast, run the layer in float32 (sampling
            locations are sub-pixel quantities; see :mod:`.precision`).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_levels: int = 4,
        num_heads: int = 8,
        num_points: int = 4,
        method: SamplingMethod = "grid_sample",
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if method not in SAMPLING_METHODS:
            raise ValueError(f"unknown sampling method {method!r}; use one of {SAMPLING_METHODS}")
        self.embed_dim = embed_dim
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.method: SamplingMethod = method
        self.float32_under_autocast = True
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: uniform weights, points on rays per head."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        radii = torch.arange(1, self.num_points + 1, dtype=torch.float32)
        offsets = directions[:, None, None, :] * radii[None, None, :, None]
        offsets = offsets.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(offsets.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: SpatialShapes,
    ) -> torch.Tensor:
        """Attend from ``query`` to the pyramid ``value``.

        Args:
            query: ``[B, Q, C]`` (position-encoded) queries.
            reference_points: ``[B or 1, Q, L, 2]`` ``(x, y)`` in [0, 1] per level.
            value: ``[B, S, C]`` flattened pyramid (levels in ``spatial_shapes`` order).
            spatial_shapes: ``L`` pairs ``(H_l, W_l)``.

        Returns:
            ``[B, Q, C]``.
        """
        batch, num_queries, _ = query.shape
        shape = (batch, num_queries, self.num_heads, self.num_levels)
        inputs = (query, reference_points, value)
        with float32_island(*inputs, enabled=self.float32_under_autocast) as inputs:
            query, reference_points, value = inputs
            values = self.value_proj(value).unflatten(-1, (self.num_heads, -1))
            offsets = self.sampling_offsets(query).view(*shape, self.num_points, 2)
            logits = self.attention_weights(query).view(*shape[:3], -1)
            mixed = deformable_attention(
                values, spatial_shapes, reference_points, offsets, logits, self.method
            )
            return self.output_proj(mixed)
