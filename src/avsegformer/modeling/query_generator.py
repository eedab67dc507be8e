"""Audio query generator: turns one audio token per frame into the decoder's queries.

A set of learned queries goes through a stack of post-norm layers (self-attention,
cross-attention to the audio token, GELU feed-forward). With a single audio token the
cross-attention weight is exactly 1, so each layer adds the same projected audio vector
to every query; :class:`~.transformer.MultiheadAttention` takes that shortcut.

# References: AVSegFormer (Gao et al., arXiv 2307.01146), section 3.2 (audio-visual
# query generator).
"""

from __future__ import annotations

import torch
from torch import nn

from .transformer import MultiheadAttention, residual_feed_forward


class QueryGeneratorLayer(nn.Module):
    """State-dict entries: ``self_attn``, ``cross_attn`` (no biases), ``ffn.0``,
    ``ffn.2``, ``norm1``, ``norm2``, ``norm3``. No dropout."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads, bias=False)
        self.cross_attn = MultiheadAttention(dim, num_heads, bias=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, queries: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """``queries`` ``[B, Q, C]``, ``audio`` ``[B, A, C]`` -> ``[B, Q, C]``."""
        queries = self.norm1(queries + self.self_attn(queries))
        queries = self.norm2(queries + self.cross_attn(queries, audio))
        return self.norm3(self.feed_forward(queries))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + FFN(x)`` (device forms override this)."""
        return residual_feed_forward(x, self.ffn[0], self.ffn[2])

    def feed_forward_linears(self) -> tuple[nn.Linear, nn.Linear]:
        return self.ffn[0], self.ffn[2]  # type: ignore[return-value]


class AudioQueryGenerator(nn.Module):
    """Learned queries conditioned on audio.

    State-dict entries: ``query`` (``nn.Embedding [num_queries, dim]``) and
    ``layers.<i>.*``.
    """

    def __init__(
        self,
        num_layers: int,
        num_queries: int,
        dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 1024,
    ) -> None:
        super().__init__()
        self.query = nn.Embedding(num_queries, dim)
        self.layers = nn.ModuleList(
            QueryGeneratorLayer(dim, num_heads, ffn_dim) for _ in range(num_layers)
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio`` ``[B, A, C]`` (A = 1 audio token per frame) -> queries ``[B, Q, C]``."""
        queries = self.query.weight[None].expand(audio.shape[0], -1, -1)
        for layer in self.layers:
            queries = layer(queries, audio)
        return queries
