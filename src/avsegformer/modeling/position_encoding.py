"""Fixed sine/cosine 2-D position encoding of a feature map.

# References: DETR (Carion et al., arXiv 2005.12872) sine encoding, in the unnormalised
# variant AVSegFormer (Gao et al., arXiv 2307.01146) uses.
"""

from __future__ import annotations

import torch
from torch import nn


class SinePositionEncoding(nn.Module):
    """2-D sine encoding of pixel positions, y features first, then x features.

    Positions are the 1-based row and column indices (no normalisation: the model never
    pads its inputs, so every position is valid). For a position ``p`` and feature
    ``k < num_feats`` the value is ``sin(p / t_k)`` for even ``k`` and ``cos(p / t_k)``
    for odd ``k``, with ``t_k = temperature ** (2 * (k // 2) / num_feats)``.

    The module has no parameters and no state-dict entries.
    """

    def __init__(self, num_feats: int = 128, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature

    def forward(self, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
        """Encoding of a ``height x width`` grid.

        Returns:
            float32 ``[2 * num_feats, height, width]`` in [-1, 1]; channels
            ``[:num_feats]`` encode the row, ``[num_feats:]`` the column. Computed in
            float32 whatever the model dtype (callers cast), so it is identical under
            autocast.
        """
        f32 = torch.float32
        # Same float32 operation order as the authors' code, so the encodings agree to
        # the last bit (the parity fixtures are float32).
        k = torch.arange(self.num_feats, dtype=f32, device=device)
        divisor = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.num_feats)
        even = (torch.arange(self.num_feats, device=device) % 2) == 0

        def encode(n: int) -> torch.Tensor:  # [n, num_feats]
            phase = torch.arange(1, n + 1, dtype=f32, device=device)[:, None] / divisor
            return torch.where(even, phase.sin(), phase.cos())

        rows = encode(height).t()[:, :, None].expand(-1, height, width)
        cols = encode(width).t()[:, None, :].expand(-1, height, width)
        return torch.cat([rows, cols], dim=0)
