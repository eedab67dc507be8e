"""AVSegFormer: visual backbone + audio encoder + AVSegHead.

# References: AVSegFormer (Gao et al., arXiv 2307.01146), figure 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ..errors import InputShapeError
from ..finite import require_finite
from .audio_frontend import VGGISH_LOG_MEL, AudioFrontEnd
from .head import AVSegHead
from .precision import autocast_active, float32_island

if TYPE_CHECKING:
    from ..zoo import Config

#: Frames must be a multiple of this in height and width (the coarsest level's stride).
SIZE_DIVISOR = 32
#: Shape of one VGGish log-mel example (time frames, mel bands); the model's audio input
#: is whatever its encoder's front end declares (``AVSegFormer.audio_front_end``).
LOG_MEL_SHAPE = VGGISH_LOG_MEL.example_shape[1:]


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


def _require_tensor(value: Any, name: str, layout: str) -> None:
    if isinstance(value, torch.Tensor):
        return
    kind = type(value)
    given = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    if hasattr(value, "__array__"):
        hint = f"convert it with torch.from_numpy({name})"
    elif isinstance(value, list | tuple):
        hint = f"stack it into one tensor: torch.stack({name})"
    else:
        hint = None
    raise InputShapeError(f"{name} must be a torch.Tensor {layout}, got a {given}", hint=hint)


def _require_dtype(tensor: torch.Tensor, name: str, weight: torch.Tensor | None, what: str) -> None:
    """Floating, and a dtype the weights can take: theirs, or under autocast also its dtype."""
    if not tensor.is_floating_point():
        raise InputShapeError(
            f"{name} must be a floating-point tensor ({what}), got {tensor.dtype}"
        )
    expected = weight.dtype if weight is not None else torch.float32
    allowed = {expected}
    if autocast_active(tensor.device.type):
        allowed |= {torch.float32, torch.get_autocast_dtype(tensor.device.type)}
    if tensor.dtype not in allowed:
        raise InputShapeError(
            f"{name} are {tensor.dtype} but the model's weights are {expected}",
            hint=f"pass {name}.to({expected}) (or run under torch.autocast for bfloat16/float16)",
        )


def _require_device(tensor: torch.Tensor, name: str, weight: torch.Tensor | None) -> None:
    if weight is not None and tensor.device != weight.device:
        raise InputShapeError(
            f"{name} are on {tensor.device} but the model is on {weight.device}",
            hint=f"move them: {name}.to({str(weight.device)!r})",
        )


def check_model_inputs(
    frames: Any,
    audio: Any,
    temporal_mask: Any = None,
    *,
    weight: torch.Tensor | None = None,
    finite: bool = True,
    front_end: AudioFrontEnd = VGGISH_LOG_MEL,
) -> None:
    """The model's input checks, in one place (:meth:`AVSegFormer.forward`, the Predictor).

    Types, shapes, dtypes and devices are checked in Python (no device work);
    ``finite=True`` adds one reduction over the inputs and one host synchronisation to
    find NaN or infinite values (skipped for ``meta`` tensors and inside a CUDA graph
    capture, where a synchronisation is not allowed: the graph replayer checks before
    each replay instead).

    Args:
        frames, audio, temporal_mask: as :meth:`AVSegFormer.forward` takes them.
        weight: a parameter of the model: its dtype and device are the expected ones
            (``None``: float32, any device).
        finite: look for NaN and infinite values.
        front_end: what the model's audio encoder takes (``model.audio_front_end``):
            ``audio`` must be ``[N, *front_end.example_shape]``.

    Raises:
        InputShapeError: a non-tensor, a wrong shape, dtype or device (the message says
            what to do).
        NonFiniteError: NaN or infinite values, naming the argument.
    """
    _require_tensor(frames, "frames", "[N, 3, H, W]")
    _require_tensor(audio, "audio", front_end.input_layout)
    if temporal_mask is not None:
        _require_tensor(temporal_mask, "temporal_mask", "[N]")
    shape = list(frames.shape)
    if frames.dim() != 4 or frames.shape[1] != 3:
        hint = None
        if frames.dim() == 3 and frames.shape[0] == 3:
            hint = "one frame: add the batch axis, frames[None]"
        elif frames.dim() == 4 and frames.shape[-1] == 3:
            hint = "channels last: frames.permute(0, 3, 1, 2)"
        elif frames.dim() == 4 and frames.shape[1] == 1:
            hint = "grey frames: repeat the channel, frames.expand(-1, 3, -1, -1)"
        elif frames.dim() == 4 and frames.shape[1] == 4:
            hint = "drop the alpha channel: frames[:, :3]"
        raise InputShapeError(f"frames must be [N, 3, H, W] (RGB), got {shape}", hint=hint)
    count = frames.shape[0]
    if count == 0:
        raise InputShapeError("frames holds no frame (N = 0): pass at least one")
    height, width = frames.shape[-2:]
    if height % SIZE_DIVISOR or width % SIZE_DIVISOR or height == 0 or width == 0:
        raise InputShapeError(
            f"frame size {height}x{width} is not a positive multiple of {SIZE_DIVISOR}; "
            "resize or pad the frames"
        )
    _require_dtype(frames, "frames", weight, "RGB normalised with the backbone's mean/std")
    _require_device(frames, "frames", weight)
    example_shape = front_end.example_shape
    expected_audio = (count, *example_shape)
    if tuple(audio.shape) != expected_audio:
        hint = None
        if front_end.matches(audio):
            raise InputShapeError(
                f"frames and audio disagree: {count} frame(s) but {audio.shape[0]} audio "
                f"example(s); the model takes one of its {front_end.description} per frame"
            )
        if example_shape[:1] == (1,) and tuple(audio.shape[1:]) == example_shape[1:]:
            hint = "add the channel axis: audio[:, None]"
        raise InputShapeError(
            f"audio must be {front_end.description} {list(expected_audio)} (one per frame), "
            f"got {list(audio.shape)}",
            hint=hint,
        )
    _require_dtype(audio, "audio", weight, front_end.description)
    _require_device(audio, "audio", weight)
    if temporal_mask is not None:
        if temporal_mask.numel() != count:
            raise InputShapeError(
                f"temporal_mask must have one value per frame ({count}), "
                f"got shape {list(temporal_mask.shape)}"
            )
        _require_device(temporal_mask, "temporal_mask", weight)
    if not finite or frames.device.type == "meta":
        return
    # No synchronisation while a CUDA graph is being captured (it would abort the capture).
    if frames.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return
    checked = [("frames", frames), ("audio", audio)]
    if temporal_mask is not None and temporal_mask.is_floating_point():
        checked.append(("temporal_mask", temporal_mask))
    # One synchronisation for all of them; the slower per-argument count only on failure.
    all_finite = torch.isfinite(frames).all()
    for _, tensor in checked[1:]:
        all_finite = all_finite & torch.isfinite(tensor).all()
    if not bool(all_finite):
        for name, tensor in checked:
            require_finite(tensor, f"{name} given to the model")


class AVSegFormer(nn.Module):
    """Audio-visual segmentation network.

    State-dict layout (the authors'): ``backbone.*``, ``vggish.*`` (the audio encoder,
    whatever its kind), ``head.*``, ``audio_proj.*``.

    Args:
        backbone: module mapping ``[N, 3, H, W]`` to the feature levels its registration
            declares (:mod:`.backbones.registry`; the built-in ones: four, strides 4..32).
        audio_encoder: module mapping ``[N, *audio_front_end.example_shape]`` (VGGish
            log-mels: ``[N, 1, 96, 64]``) to ``[N, audio_dim]``.
        head: the :class:`AVSegHead`.
        audio_dim: width of the audio embeddings.
        embed_dim: model width (``audio_proj`` output).
        freeze_audio: keep the audio encoder fixed: no gradients, run under
            ``torch.no_grad()``, and kept in eval mode by :meth:`train`.
        audio_front_end: what ``audio_encoder`` takes (attribute of the same name;
            :mod:`.audio_frontend`); the input check and everyone making audio inputs
            for this model ask it. Default: VGGish log-mel examples.
        float32_backbone: under autocast, keep the whole visual backbone in float32
            (attribute of the same name; off by default). ``build_model`` keeps only
            ResNet-50's stem and first stage in float32 instead, which is enough for
            the masks (see :mod:`.precision`); set this for the stricter option.
        check_inputs: look for NaN and infinite values in every forward's inputs
            (attribute of the same name; on by default): one reduction and one host
            synchronisation per call. Set ``model.check_inputs = False`` to skip it
            where every microsecond counts; shapes, dtypes and devices are always
            checked (in Python, no device work).
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
        check_inputs: bool = True,
        audio_front_end: AudioFrontEnd = VGGISH_LOG_MEL,
    ) -> None:
        super().__init__()
        #: What the audio encoder takes (shape, silence, waveform -> examples).
        self.audio_front_end = audio_front_end
        self.backbone = backbone
        self.vggish = audio_encoder
        self.head = head
        self.audio_proj = nn.Linear(audio_dim, embed_dim)
        self.freeze_audio = freeze_audio
        if freeze_audio:
            self.vggish.requires_grad_(False)
        #: Under autocast, keep the visual backbone in float32 (accuracy over speed).
        self.float32_backbone = float32_backbone
        #: Look for NaN / inf in the inputs of every forward (see the class docstring).
        self.check_inputs = check_inputs
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

    def validate_inputs(
        self,
        frames: torch.Tensor,
        audio: torch.Tensor,
        temporal_mask: torch.Tensor | None = None,
        *,
        finite: bool | None = None,
    ) -> None:
        """Check the inputs of :meth:`forward` (:func:`check_model_inputs`): against this
        model's weight dtype and device, and for NaN / inf when ``finite`` (default
        :attr:`check_inputs`) is true."""
        check_model_inputs(
            frames,
            audio,
            temporal_mask,
            weight=self.audio_proj.weight,
            finite=self.check_inputs if finite is None else finite,
            front_end=self.audio_front_end,
        )

    def forward(
        self,
        frames: torch.Tensor,
        audio: torch.Tensor,
        temporal_mask: torch.Tensor | None = None,
    ) -> AVSegFormerOutput:
        """Segment the sounding objects of ``N`` frames.

        Args:
            frames: float ``[N, 3, H, W]``, RGB normalised with the mean/std its backbone
                declares (ImageNet's for the built-in ones);
                ``H`` and ``W`` any multiples of 32 (not necessarily equal); the
                weights' dtype (float32), or under autocast also its dtype.
            audio: float32 ``[N, *audio_front_end.example_shape]``, one example per
                frame (VGGish log-mel examples ``[N, 1, 96, 64]`` for the built-in
                encoders; dtype rule as for ``frames``), on the model's device like
                ``frames``.
            temporal_mask: optional ``[N]`` (float or bool) 1 for real frames, 0 for
                padding (AVSS clips shorter than 10 s). It multiplies the backbone
                features, the logits and the mask feature, as the authors' model does.

        Returns:
            :class:`AVSegFormerOutput` ``(logits [N, num_classes, H, W],
            mask_feature [N, embed_dim, H/4, W/4])``. Frames are independent in eval
            mode; any ``N >= 1`` works.

        Raises:
            InputShapeError: not tensors, wrong shapes, a dtype the weights cannot take
                (e.g. float64 or float16 frames with float32 weights outside autocast),
                integer audio, N = 0, mismatched N, another device than the model's.
            NonFiniteError: NaN or infinite values in an input (unless
                ``model.check_inputs`` is false).
        """
        self.validate_inputs(frames, audio, temporal_mask)
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
