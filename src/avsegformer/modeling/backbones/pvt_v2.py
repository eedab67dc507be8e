"""Pyramid Vision Transformer v2 (B5 by default), returning four feature levels.

Each stage: an overlapping strided patch embedding (conv + LayerNorm), blocks of
spatial-reduction attention and a depthwise-conv feed-forward, a final LayerNorm.
Faithful to the original layout and numerics: patch-embedding and spatial-reduction
norms use eps 1e-5, block and stage norms eps 1e-6; GELU is exact (erf); stochastic
depth rises linearly from 0 to ``drop_path_rate`` over all blocks (training only).

# References: PVTv2 (Wang et al., arXiv 2106.13797).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .registry import MappedWeights, register_backbone

if TYPE_CHECKING:
    from ...zoo import ModelConfig


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``rate``, rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class OverlapPatchEmbed(nn.Module):
    """Strided conv (kernel > stride, so patches overlap) + LayerNorm(eps 1e-5)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_channels, dim, kernel_size=patch_size, stride=stride, padding=patch_size // 2
        )
        self.norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """``[B, C_in, H, W]`` -> tokens ``[B, H' * W', dim]``, ``H'``, ``W'``."""
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys/values come from a ``sr_ratio``-downsampled map.

    State-dict entries: ``q``, ``kv``, ``proj`` and, when ``sr_ratio > 1``, ``sr``
    (strided conv) and ``norm`` (LayerNorm, eps 1e-5).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``x`` ``[B, N, C]`` tokens of a ``height x width`` map -> ``[B, N, C]``."""
        batch, tokens, dim = x.shape
        context = x
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).unflatten(2, (height, width))
            context = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        heads = self.num_heads
        q = self.q(x).unflatten(-1, (heads, -1)).transpose(1, 2)
        k, v = self.kv(context).unflatten(-1, (2, heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class DepthwiseConv(nn.Module):
    """3x3 depthwise conv applied to a token sequence (``dwconv`` in the state dict)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        grid = x.transpose(1, 2).unflatten(2, (height, width))
        return self.dwconv(grid).flatten(2).transpose(1, 2)


class MixFeedForward(nn.Module):
    """``fc2(gelu(dwconv(fc1(x))))``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DepthwiseConv(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), height, width)))


class PVTBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, drop_path_rate: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFeedForward(dim, int(dim * mlp_ratio))
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        rate, training = self.drop_path_rate, self.training
        x = x + drop_path(self.attn(self.norm1(x), height, width), rate, training)
        return x + drop_path(self.mlp(self.norm2(x), height, width), rate, training)


class PyramidVisionTransformerV2(nn.Module):
    """Four PVTv2 stages (``patch_embed<i>``, ``block<i>``, ``norm<i>``, i = 1..4).

    The classifier of the ImageNet model is not built (``head.*`` of pretrained
    files is ignored when loading).
    """

    def __init__(
        self,
        dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        depths: Sequence[int] = (3, 6, 40, 3),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.out_channels = tuple(dims)
        self.num_stages = len(dims)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        in_channels = 3
        for i in range(self.num_stages):
            first = i == 0
            embed = OverlapPatchEmbed(in_channels, dims[i], 7 if first else 3, 4 if first else 2)
            start = sum(depths[:i])
            blocks = nn.ModuleList(
                PVTBlock(dims[i], num_heads[i], mlp_ratios[i], sr_ratios[i], rates[start + j])
                for j in range(depths[i])
            )
            self.add_module(f"patch_embed{i + 1}", embed)
            self.add_module(f"block{i + 1}", blocks)
            self.add_module(f"norm{i + 1}", nn.LayerNorm(dims[i], eps=1e-6))
            in_channels = dims[i]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                # The original truncates at +-2 (absolute), i.e. +-100 std: a plain normal
                # has the same distribution and initialises 82M weights 10x faster.
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, (2.0 / (fan_out // module.groups)) ** 0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images`` float ``[B, 3, H, W]`` -> four levels ``[B, C_i, H/2^(i+2), W/2^(i+2)]``."""
        x = images
        levels = []
        for i in range(1, self.num_stages + 1):
            tokens, height, width = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                tokens = block(tokens, height, width)
            tokens = getattr(self, f"norm{i}")(tokens)
            # [B, N, C] -> [B, C, H, W] with channels-last strides (no copy).
            x = tokens.unflatten(1, (height, width)).permute(0, 3, 1, 2)
            levels.append(x)
        return levels


def pvt_v2_b5(drop_path_rate: float = 0.1) -> PyramidVisionTransformerV2:
    """PVTv2-B5: dims 64/128/320/512, heads 1/2/5/8, depths 3/6/40/3, SR 8/4/2/1."""
    return PyramidVisionTransformerV2(drop_path_rate=drop_path_rate)


# ----------------------------------------------------------------------------- registry
def _is_pvt_v2(keys: Collection[str]) -> bool:
    """A PVTv2 ImageNet state dict (``pvt_v2_b5.pth``)."""
    return "patch_embed1.proj.weight" in keys


def pvt_v2_filter(state: Mapping[str, torch.Tensor], own_keys: Collection[str]) -> MappedWeights:
    """PVTv2 ImageNet weights keep their names; the classifier ``head.*`` is ignored."""
    ignored = sorted(k for k in state if k.startswith("head."))
    return MappedWeights({k: v for k, v in state.items() if k not in ignored}, ignored)


def _build_pvt_v2_b5(cfg: ModelConfig) -> PyramidVisionTransformerV2:
    return pvt_v2_b5(drop_path_rate=cfg.drop_path_rate)


register_backbone(
    "pvt_v2_b5",
    build=_build_pvt_v2_b5,
    channels=(64, 128, 320, 512),
    strides=(4, 8, 16, 32),
    checkpoint_filter=pvt_v2_filter,
    pretrained_layout="pvt_v2",
    recognises=_is_pvt_v2,
    signature_key="block1.0.attn.q.weight",
    title="PVTv2-B5",
)
