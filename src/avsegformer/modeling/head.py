"""AVSegHead: from backbone features and audio tokens to mask logits.

Pipeline per frame: project the backbone levels to ``C`` channels; encode levels
1..L with the deformable encoder; generate audio-conditioned queries and decode them
against the encoder memory; build a stride-4 mask feature from level 0 and the
level-1 memory; gate it with the cross-modal mixer; correlate it with the decoded
queries, lift that ``[Q, h, w]`` map back to ``C`` channels with a 1x1-conv MLP, add it
to the mask feature and decode full-resolution logits with ``fc``.

# References: AVSegFormer (Gao et al., arXiv 2307.01146), section 3 and figure 2.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .mixer import CrossModalMixer
from .position_encoding import SinePositionEncoding
from .precision import float32_island
from .query_generator import AudioQueryGenerator
from .transformer import AVSTransformer

MaskMLPMode = Literal["folded", "reference"]

#: Stride of the first backbone level: the mask feature's; ``fc`` upsamples it 4x back
#: to the input resolution.
MASK_STRIDE = 4


def _project(in_channels: int, dim: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, dim, kernel_size=1), nn.GroupNorm(groups, dim))


class MaskDecoder(nn.Sequential):
    """3x3 conv, 4x bilinear upsampling, 3x3 conv + ReLU, 1x1 conv to classes.

    ``[B, C, h, w]`` -> ``[B, num_classes, 4h, 4w]``. Indices 0, 2, 4 hold the
    state-dict entries (``fc.0``, ``fc.2``, ``fc.4``).
    """

    def __init__(self, dim: int, widths: tuple[int, int], num_classes: int) -> None:
        hidden, narrow = widths
        super().__init__(
            nn.Conv2d(dim, hidden, kernel_size=3, padding=1),
            nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False),
            nn.Conv2d(hidden, narrow, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(narrow, num_classes, kernel_size=1, bias=False),
        )


class QueryMaskMLP(nn.Module):
    """``mlp(einsum('bqc,bchw->bqhw', queries, feature))`` with a 1x1-conv MLP.

    State-dict entries: ``layers.<i>`` (``Conv2d`` 1x1: ``Q -> hidden -> ... -> out``),
    ReLU between layers.

    ``mode="folded"`` (default) uses that the correlation and the first 1x1 conv are
    both linear: ``W0 (Q F) = (W0 Q) F``. It never forms the ``[Q, h, w]`` map and runs
    each layer as one matrix product over the flattened pixels (output in channels-last
    layout). It differs from ``mode="reference"`` (the literal einsum followed by
    convolutions) only by float rounding (~1e-6 relative).
    """

    def __init__(
        self,
        num_queries: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 3,
        mode: MaskMLPMode = "folded",
    ) -> None:
        super().__init__()
        widths = [num_queries] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(
            nn.Conv2d(w_in, w_out, kernel_size=1)
            for w_in, w_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.mode: MaskMLPMode = mode

    def forward(self, queries: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """``queries`` ``[B, Q, C]``, ``feature`` ``[B, C, h, w]`` -> ``[B, out_dim, h, w]``."""
        if self.mode == "reference":
            return self.reference_order(queries, feature)
        if self.mode != "folded":
            raise ValueError(
                f"unknown QueryMaskMLP mode {self.mode!r}; use 'folded' or 'reference'"
            )
        batch, channels, height, width = feature.shape
        # Pixel rows [B, N, C]: a free view when the feature is channels-last.
        rows = feature.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        first = self.layers[0]
        folded = torch.matmul(
            queries.transpose(1, 2), first.weight.flatten(1).t()
        )  # [B, C, hidden]
        x = torch.baddbmm(first.bias, rows, folded)  # [B, N, hidden]
        for layer in self.layers[1:]:
            x = F.linear(x.relu_(), layer.weight.flatten(1), layer.bias)
        return x.view(batch, height, width, -1).permute(0, 3, 1, 2)

    def reference_order(self, queries: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """The authors' order of operations: the ``[Q, h, w]`` map, then 1x1 convs."""
        x = torch.einsum("bqc,bchw->bqhw", queries, feature)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            x = x.relu_() if i < len(self.layers) - 1 else x
        return x


class AVSegHead(nn.Module):
    """The AVSegFormer head (authors' state-dict layout under ``head.*``).

    Args:
        in_channels: channels of the backbone levels, as the backbone declares them (at
            least two: level 0 at stride :data:`MASK_STRIDE` makes the mask feature,
            levels 1.. feed the deformable encoder, whose ``num_levels`` is one less).
        num_classes: output channels of the logits (1 for S4/MS3, 71 for AVSS).
        query_generator: audio query generator (``query_generator.*``).
        transformer: deformable encoder + decoder (``transformer.*``).
        fusion_block: cross-modal mixer (``fusion_block.*``).
        embed_dim: model width ``C``.
        num_queries: decoder queries ``Q``.
        mlp_hidden_dim: hidden width of the query-mask MLP.
        gn_groups: GroupNorm groups of the projections and ``out_conv``.
        mask_head_widths: hidden widths of ``fc``.
        keep_unused_modules: also build ``fpn`` and ``attn_fc``, present in the authors'
            checkpoints but never used by their forward.
        mlp_mode: see :class:`QueryMaskMLP`.

    Attribute ``float32_projections`` (set per device by
    :func:`~avsegformer.modeling.optimize.optimize`): under autocast, run the input
    projections and the lateral conv in float32 (see :mod:`.precision`).
    """

    def __init__(
        self,
        *,
        in_channels: tuple[int, ...],
        num_classes: int,
        query_generator: AudioQueryGenerator,
        transformer: AVSTransformer,
        fusion_block: CrossModalMixer,
        embed_dim: int = 256,
        num_queries: int = 300,
        mlp_hidden_dim: int = 2048,
        gn_groups: int = 32,
        mask_head_widths: tuple[int, int] = (128, 32),
        keep_unused_modules: bool = True,
        mlp_mode: MaskMLPMode = "folded",
    ) -> None:
        super().__init__()
        if len(in_channels) < 2:
            raise ValueError(
                f"AVSegHead needs at least 2 backbone levels, got in_channels={in_channels}"
            )
        num_levels = len(in_channels) - 1
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.level_embed = nn.Parameter(torch.empty(num_levels, embed_dim))
        self.learnable_query = nn.Embedding(num_queries, embed_dim)
        self.query_generator = query_generator
        self.transformer = transformer
        self.positional_encoding = SinePositionEncoding(embed_dim // 2)
        self.in_proj = nn.ModuleList(_project(c, embed_dim, gn_groups) for c in in_channels)
        self.mlp = QueryMaskMLP(num_queries, mlp_hidden_dim, embed_dim, 3, mode=mlp_mode)
        self.fusion_block = fusion_block
        self.lateral_conv = _project(embed_dim, embed_dim, gn_groups)
        self.out_conv = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1),
            nn.GroupNorm(gn_groups, embed_dim),
            nn.ReLU(inplace=True),
        )
        if keep_unused_modules:
            self.fpn = _UnusedFPN(embed_dim)
            self.attn_fc = MaskDecoder(embed_dim, mask_head_widths, num_classes)
        self.fc = MaskDecoder(embed_dim, mask_head_widths, num_classes)
        self.float32_projections = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform matrices, Deformable-DETR attention init, normal level embeddings."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for encoder_layer in self.transformer.encoder.layers:
            encoder_layer.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed)

    def _encoder_inputs(
        self, levels: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """Flatten projected levels to tokens ``[B, S, C]`` + position/level code ``[1, S, C]``."""
        tokens, codes, shapes = [], [], []
        for index, level in enumerate(levels):
            height, width = level.shape[-2:]
            shapes.append((height, width))
            tokens.append(level.flatten(2).transpose(1, 2))
            position = self.positional_encoding(height, width, level.device).flatten(1).t()
            codes.append(position + self.level_embed[index])
        return torch.cat(tokens, 1), torch.cat(codes, 0)[None], shapes

    def forward(
        self, features: list[torch.Tensor], audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict mask logits.

        Args:
            features: the backbone levels ``[B, C_0, H/4, W/4], [B, C_i, H/s_i, W/s_i]...``
                (as many as ``in_channels``).
            audio: ``[B, 1, C]`` projected audio token of each frame.

        Returns:
            ``(logits [B, num_classes, H, W], mask_feature [B, C, H/4, W/4])`` (the mask
            feature is non-negative: gated ReLU output).
        """
        # GroupNorm right after a projection of large activations cancels most leading
        # bits: the projections stay float32 under autocast (1.5% of the FLOPs).
        with float32_island(*features, enabled=self.float32_projections) as features_:
            fine = self.lateral_conv(self.in_proj[0](features_[0]))
            levels = [proj(x) for proj, x in zip(self.in_proj[1:], features_[1:], strict=True)]
        tokens, position, shapes = self._encoder_inputs(levels)

        queries = self.query_generator(audio) + self.learnable_query.weight[None]
        memory, decoded = self.transformer(queries, tokens, position.to(tokens.dtype), shapes)

        # Mask feature: stride-4 lateral path + upsampled level-1 part of the memory.
        height, width = shapes[0]
        coarse = memory[:, : height * width].transpose(1, 2).unflatten(2, (height, width))
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        mask_feature = self.fusion_block(self.out_conv(fine + coarse), audio)
        # Release the encoder-side maps before the two largest stages (peak memory).
        del fine, coarse, levels, tokens, memory

        pixels = mask_feature + self.mlp(decoded, mask_feature)
        return self.fc(pixels), mask_feature


class _UnusedFPN(nn.Module):
    """Three (2x upsample, 3x3 conv) stages present in the authors' checkpoints.

    Their forward never calls it; it exists only so that those checkpoints load strictly.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        for name in ("up1", "up2", "up3"):
            stage = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(dim, dim, kernel_size=3, padding=1),
            )
            self.add_module(name, stage)
