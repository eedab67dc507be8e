"""Cross-modal mixer: an audio-driven channel gate on the mask feature.

The audio token queries the pixels of the mask feature (multi-head attention); the
attended vector, projected and squashed by a sigmoid, scales each channel of the map.

# References: AVSegFormer (Gao et al., arXiv 2307.01146), section 3.4 (cross-modal
# mixer).
"""

from __future__ import annotations

import torch
from torch import nn


class CrossModalMixer(nn.Module):
    """Channel gate ``feature_map * sigmoid(proj(attn(audio -> pixels)))``.

    State-dict entries: ``q_proj``, ``kv_proj`` (key rows first, then value rows;
    no biases by default) and ``proj``.

    The keys and values of the ``H*W`` pixels are never materialised: for one query
    ``q`` per head, ``q . (W_k x) = (W_k^T q) . x`` and ``sum_n a_n W_v x_n =
    W_v (sum_n a_n x_n)``, so the map is read twice (logits, weighted mean) instead of
    being projected to ``2C`` channels. This is the same function up to float rounding
    (~1e-7 relative); a key bias cancels in the softmax and a value bias passes through.
    """

    def __init__(self, dim: int = 256, num_heads: int = 8, qkv_bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, feature_map: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Gate the channels of ``feature_map``.

        Args:
            feature_map: ``[B, C, H, W]``.
            audio: ``[B, 1, C]`` one audio token per frame.

        Returns:
            ``[B, C, H, W]``, ``feature_map`` scaled per channel by a gate in (0, 1).
            Works for ``B = 1`` (the authors' ``squeeze`` fails there).
        """
        batch, channels = feature_map.shape[:2]
        heads, head_dim = self.num_heads, channels // self.num_heads
        pixels = feature_map.flatten(2)  # [B, C, N]
        q = self.q_proj(audio).view(batch, heads, head_dim)
        key_w, value_w = self.kv_proj.weight.view(2, heads, head_dim, channels).unbind(0)
        # Per head, the key projection moved onto the query: [B, M, C].
        q_in_pixel_space = torch.einsum("bmd,mdc->bmc", q * self.scale, key_w.to(q.dtype))
        logits = torch.bmm(q_in_pixel_space.to(pixels.dtype), pixels)  # [B, M, N]
        weights = logits.softmax(-1)
        pooled = torch.bmm(weights, pixels.transpose(1, 2))  # [B, M, C]
        attended = torch.einsum("bmc,mdc->bmd", pooled, value_w.to(pooled.dtype))
        if self.kv_proj.bias is not None:
            attended = attended + self.kv_proj.bias[channels:].view(heads, head_dim)
        gate_logits = self.proj(attended.reshape(batch, 1, channels))  # [B, 1, C]
        gate = gate_logits.sigmoid().to(feature_map.dtype)
        return feature_map * gate.view(batch, channels, 1, 1)
