"""AVSegFormer: visual backbone + audio encoder + AVSegHead.

# References: AVSegFormer (Gao et al., arXiv 2307.01146), figure 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ..errors import InputShapeError
from .head import AVSegHead
from .precision import float32_island

if TYPE_CHECKING:
    from ..zoo import Config

#: Frames must be a multiple of this in height and width (the coarsest level's stride).
SIZE_DIVISOR = 32
#: Shape of one VGGish log-mel example (time frames, mel bands).
LOG_MEL_SHAPE = (96, 64)


class AVSegFormerOutput(NamedTuple):
    """What :meth:`AVSegFormer.forward` returns.

    Attributes:
        logits: ``[N, num_classes, H, W]``, unbounded mask logits at the input
            resolution (binary tasks: ``sigmoid > 0.5``; AVSS: ``argmax`` over classes);
            exactly 0 for frames whose temporal mask is 0. Float32, or the autocast
            dtype under autocast.
        mask_feature: ``[N, embed_dim, H/4, W/4]``, the audio-gated mask feature
            (non-negative), used by the auxiliary loss; exactly 0 for masked frames.
    """

    logits: torch.Tensor
    mask_feature: torch.Tensor


class AVSegFormer(nn.Module):
    """Audio-visual segmentation network.

    State-dict layout (the authors'): ``backbone.*``, ``vggish.*`` (the audio encoder,
    whatever its kind), ``head.*``, ``audio_proj.*``.

    Args:
        backbone: module mapping ``[N, 3, H, W]`` to four levels (strides 4..32).
        audio_encoder: module mapping ``[N, 1, 96, 64]`` log-mels to ``[N, audio_dim]``.
        head: the :class:`AVSegHead`.
        audio_dim: width of the audio embeddings.
        embed_dim: model width (``audio_proj`` output).
        freeze_audio: keep the audio encoder fixed: no gradients, run under
            ``torch.no_grad()``, and kept in eval mode by :meth:`train`.
        float32_backbone: under autocast, keep the whole visual backbone in float32
            (attribute of the same name; off by default). ``build_model`` keeps only
            ResNet-50's stem and first stage in float32 instead, which is enough for
            the masks (see :mod:`.precision`); set this for the stricter option.
    """

    def __init__(
        self,
        backbone: nn.Module,
        audio_encoder: nn.Module,
        head: AVSegHead,
        *,
        audio_dim: int = 128,
        embed_dim: int = 256,
        freeze_audio: bool = True,
        float32_backbone: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.vggish = audio_encoder
        self.head = head
        self.audio_proj = nn.Linear(audio_dim, embed_dim)
        self.freeze_audio = freeze_audio
        if freeze_audio:
            self.vggish.requires_grad_(False)
        #: Under autocast, keep the visual backbone in float32 (accuracy over speed).
        self.float32_backbone = float32_backbone
        #: The configuration this model was built from (set by ``build_model``).
        self.config: Config | None = None

    @property
    def audio_encoder(self) -> nn.Module:
        """The audio encoder (registered as ``vggish`` to match the authors' keys)."""
        return self.vggish

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def freeze_backbone(self, freeze: bool = True) -> None:
        """Stop (``True``) or resume (``False``) gradient updates of the visual backbone.

        Only ``requires_grad`` changes; BatchNorm statistics still follow ``train()``,
        as in the authors' training scripts.
        """
        self.backbone.requires_grad_(not freeze)

    def train(self, mode: bool = True) -> AVSegFormer:
        super().train(mode)
        if self.freeze_audio:
            self.vggish.eval()
        return self

    def _check_inputs(
        self, frames: torch.Tensor, audio: torch.Tensor, temporal_mask: torch.Tensor | None
    ) -> None:
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise InputShapeError(f"frames must be [N, 3, H, W], got {list(frames.shape)}")
        height, width = frames.shape[-2:]
        if height % SIZE_DIVISOR or width % SIZE_DIVISOR or height == 0 or width == 0:
            raise InputShapeError(
                f"frame size {height}x{width} is not a positive multiple of {SIZE_DIVISOR}; "
                "resize or pad the frames"
            )
        if not frames.is_floating_point():
            raise InputShapeError(f"frames must be a float tensor, got {frames.dtype}")
        expected_audio = (frames.shape[0], 1, *LOG_MEL_SHAPE)
        if tuple(audio.shape) != expected_audio:
            raise InputShapeError(
                f"audio must be log-mel examples {list(expected_audio)} (one per frame), "
                f"got {list(audio.shape)}"
            )
        if temporal_mask is not None and temporal_mask.numel() != frames.shape[0]:
            raise InputShapeError(
                f"temporal_mask must have one value per frame ({frames.shape[0]}), "
                f"got shape {list(temporal_mask.shape)}"
            )

    def forward(
        self,
        frames: torch.Tensor,
        audio: torch.Tensor,
        temporal_mask: torch.Tensor | None = None,
    ) -> AVSegFormerOutput:
        """Segment the sounding objects of ``N`` frames.

        Args:
            frames: float ``[N, 3, H, W]``, RGB normalised with the ImageNet mean/std;
                ``H`` and ``W`` any multiples of 32 (not necessarily equal).
            audio: float32 ``[N, 1, 96, 64]`` VGGish log-mel examples, one per frame.
            temporal_mask: optional ``[N]`` (float or bool) 1 for real frames, 0 for
                padding (AVSS clips shorter than 10 s). It multiplies the backbone
                features, the logits and the mask feature, as the authors' model does.

        Returns:
            :class:`AVSegFormerOutput` ``(logits [N, num_classes, H, W],
            mask_feature [N, embed_dim, H/4, W/4])``. Frames are independent in eval
            mode; any ``N >= 1`` works.
        """
        self._check_inputs(frames, audio, temporal_mask)
        if self.freeze_audio:
            with torch.no_grad():
                embedding = self.vggish(audio)
        else:
            embedding = self.vggish(audio)
        audio_token = self.audio_proj(embedding.unsqueeze(1))  # [N, 1, C]

        if self.float32_backbone:
            with float32_island(frames) as (frames_,):
                features = self.backbone(frames_)
        else:
            features = self.backbone(frames)
        flag = None if temporal_mask is None else temporal_mask.reshape(-1, 1, 1, 1)
        if flag is not None:
            features = [level * flag.to(level.dtype) for level in features]
        logits, mask_feature = self.head(features, audio_token)
        if flag is not None:
            logits = logits * flag.to(logits.dtype)
            mask_feature = mask_feature * flag.to(mask_feature.dtype)
        return AVSegFormerOutput(logits, mask_feature)

    def extra_repr(self) -> str:
        name = self.config.name if self.config is not None else "custom"
        return f"config={name!r}, freeze_audio={self.freeze_audio}"

    def __call__(self, *args: Any, **kwargs: Any) -> AVSegFormerOutput:  # typed call
        return super().__call__(*args, **kwargs)
