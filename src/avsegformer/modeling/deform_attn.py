"""Multi-scale deformable attention in pure PyTorch (no compiled extension).

Each query attends to ``num_points`` locations per head and per feature level, placed
around a reference point by learned offsets, and mixes the bilinearly sampled values
with softmax weights. The sampling runs one ``grid_sample`` per level over all heads
and images at once, so it works unchanged on CPU and CUDA, in any float dtype, and is
differentiable with respect to values, locations and weights.

# References: Deformable DETR (Zhu et al., arXiv 2010.04159), section 4.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .precision import float32_island

SpatialShapes = Sequence[tuple[int, int]]


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
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

    Returns:
        ``[B, Q, M * D]``, dtype of ``value`` (head-major channel order).
    """
    batch, num_tokens, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    if sum(h * w for h, w in spatial_shapes) != num_tokens or len(spatial_shapes) != levels:
        raise ValueError(
            f"spatial_shapes {list(spatial_shapes)} do not describe {num_tokens} tokens "
            f"in {levels} levels"
        )
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
    """

    def __init__(
        self, embed_dim: int = 256, num_levels: int = 4, num_heads: int = 8, num_points: int = 4
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
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
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        # Sampling locations are sub-pixel quantities and the sampled values feed a
        # residual stream: under autocast the layer runs in float32 (2% of the FLOPs).
        with float32_island(query, reference_points, value) as (query, reference_points, value):
            # Both tensors are laid out as the sampling loop reads them (heads, levels,
            # points outside, queries inside) and handed over as permuted views; the
            # small softmax and the broadcasts then run over contiguous rows.
            offsets = self.sampling_offsets(query)  # [B, Q, M*L*P*2]
            shape = (heads, levels, points, 2)
            normaliser = torch.tensor(
                [[w, h] for h, w in spatial_shapes], dtype=offsets.dtype, device=query.device
            )[None, :, None, :].expand(shape)
            anchors = reference_points.to(offsets.dtype)[:, :, None, :, None, :]
            anchors = anchors.expand(-1, -1, *shape).flatten(2)  # [B or 1, Q, M*L*P*2]
            locations = offsets / normaliser.flatten() + anchors
            locations = locations.view(batch, num_queries, *shape).permute(0, 2, 3, 4, 1, 5)
            locations = locations.contiguous().permute(0, 4, 1, 2, 3, 5)  # [B, Q, M, L, P, 2]
            logits = self.attention_weights(query).view(batch, num_queries, heads, -1)
            weights = logits.permute(0, 2, 3, 1).contiguous().softmax(2)  # [B, M, L*P, Q]
            weights = weights.view(batch, heads, levels, points, num_queries)
            weights = weights.permute(0, 4, 1, 2, 3)  # [B, Q, M, L, P]
            values = self.value_proj(value).unflatten(-1, (heads, -1))
            mixed = multi_scale_deformable_attention(values, spatial_shapes, locations, weights)
            return self.output_proj(mixed)
