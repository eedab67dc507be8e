"""Audio encoders: VGGish and a light trainable CNN, both on VGGish log-mel examples.

Input of both: float32 ``[N, 1, 96, 64]`` log-mel examples (96 frames of 10 ms x 64 mel
bands, ``log(mel + 0.01)``, no normalisation), one 0.96 s example per video frame: the
front end :data:`~.audio_frontend.VGGISH_LOG_MEL`, with which both register here as
``"vggish"`` and ``"audio_cnn"`` (:mod:`.audio_encoders`).

# References: VGGish (Hershey et al., "CNN Architectures for Large-Scale Audio
# Classification", arXiv 1609.09430), in the torchvggish port's layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError
from .audio_encoders import register_audio_encoder
from .audio_frontend import VGGISH_LOG_MEL
from .precision import float32_island

if TYPE_CHECKING:
    from ..zoo import ModelConfig


class MaxPool2x2(nn.Module):
    """2x2 max-pooling with stride 2 as three element-wise maxima of strided views.

    Same values as ``nn.MaxPool2d(2, 2)`` (even sizes), several times faster on CPU,
    where the library kernel also computes the argmax indices. Gradients split between
    tied maxima instead of picking one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
        bottom = torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2])
        return torch.maximum(top, bottom)


def _check_examples(x: torch.Tensor, who: str, num_bands: int = 64) -> None:
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(
            f"{who} expects log-mel examples [N, 1, 96, {num_bands}], got {list(x.shape)}"
        )


class VGGish(nn.Module):
    """The VGGish network: six 3x3 convs in four pooled groups, three linear layers.

    State-dict entries are those of ``vggish-10086976.pth``: ``features.{0,3,6,8,11,13}``
    and ``embeddings.{0,2,4}``. The conv output is flattened in TensorFlow (time,
    frequency, channel) order, and the last linear layer is followed by a ReLU (kept by
    the PyTorch port AVSBench and AVSegFormer use), so embeddings are non-negative.

    Attribute ``float32_embeddings``: under autocast, run the fully connected layers in
    float32 (see :mod:`.precision`).
    """

    out_dim = 128

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for spec in (64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool"):
            if spec == "pool":
                layers.append(MaxPool2x2())
            else:
                assert isinstance(spec, int)
                layers += [nn.Conv2d(in_channels, spec, kernel_size=3, padding=1), nn.ReLU(True)]
                in_channels = spec
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096),
            nn.ReLU(True),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Linear(4096, 128),
            nn.ReLU(True),
        )
        self.float32_embeddings = True

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 96, 64]`` log-mel examples -> ``[N, 128]`` embeddings, >= 0."""
        _check_examples(examples, "VGGish")
        x = self.features(examples)  # [N, 512, 6, 4]
        flat = x.permute(0, 2, 3, 1).flatten(1)
        with float32_island(flat, enabled=self.float32_embeddings) as (flat,):
            return self.embeddings(flat)


class AudioCNN(nn.Module):
    """A light VGG-like audio encoder for the CPU configurations (trainable).

    Each stage is a 3x3 conv + BatchNorm + ReLU followed by 2x2 max-pooling. The last
    map is averaged over time only: its frequency positions are flattened into the
    projection to ``out_dim``, so the embedding knows *where* in the spectrum the
    energy sits (pitch), not only what it looks like. Averaging over frequency too
    made the synthetic classes that differ mainly in pitch indistinguishable (tiny_s4
    validation mIoU 0.59 against 0.77 with this layout, same 2000 steps at lr 1e-3).
    """

    def __init__(
        self, widths: Sequence[int] = (16, 32, 64, 128), out_dim: int = 128, num_bands: int = 64
    ) -> None:
        super().__init__()
        if num_bands % 2 ** len(widths):
            raise ValueError(
                f"AudioCNN: {len(widths)} pooled stages do not divide {num_bands} mel bands"
            )
        layers: list[nn.Module] = []
        in_channels = 1
        for width in widths:
            layers += [
                nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                MaxPool2x2(),
            ]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.num_bands = num_bands
        self.frequency_positions = num_bands // 2 ** len(widths)
        self.embeddings = nn.Linear(in_channels * self.frequency_positions, out_dim)
        self.out_dim = out_dim

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        """``[N, 1, T, num_bands]`` log-mel examples (``[N, 1, 96, 64]``) -> ``[N, out_dim]``."""
        _check_examples(examples, "AudioCNN", self.num_bands)
        features = self.features(examples)  # [N, C, T / 2^k, num_bands / 2^k]
        return self.embeddings(features.mean(dim=2).flatten(1))


@register_audio_encoder("vggish", VGGISH_LOG_MEL)
def build_vggish(cfg: ModelConfig) -> VGGish:
    """VGGish (128-value embeddings, so ``cfg.audio_dim`` must be 128)."""
    if cfg.audio_dim != VGGish.out_dim:
        raise ConfigError(f"VGGish embeddings have 128 values; audio_dim is {cfg.audio_dim}")
    return VGGish()


@register_audio_encoder("audio_cnn", VGGISH_LOG_MEL)
def build_audio_cnn(cfg: ModelConfig) -> AudioCNN:
    """The light :class:`AudioCNN`: ``cfg.audio_widths`` stages, ``cfg.audio_dim`` outputs."""
    if not cfg.audio_widths:
        raise ConfigError("audio_encoder 'audio_cnn' needs audio_widths (e.g. 16,32,64,128)")
    return AudioCNN(cfg.audio_widths, cfg.audio_dim, num_bands=VGGISH_LOG_MEL.example_shape[-1])
