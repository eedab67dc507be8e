"""The audio-encoder registry: a name -> how to build the encoder and its front end.

Each encoder registers itself where it is defined, with one call::

    register_audio_encoder("audio_cnn", VGGISH_LOG_MEL, build_audio_cnn)

(or as a decorator on the builder). ``model.audio_encoder`` in a configuration names the
entry; :func:`build_audio_encoder` builds it and :func:`audio_front_end` says what input
it takes (:class:`~.audio_frontend.AudioFrontEnd`) without building anything.

A builder takes the :class:`~avsegformer.zoo.ModelConfig` and returns an ``nn.Module``
mapping ``[N, *front_end.example_shape]`` to ``[N, cfg.audio_dim]`` embeddings; it
raises :class:`~avsegformer.errors.ConfigError` for settings it cannot take.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from ..errors import ConfigError
from .audio_frontend import AudioFrontEnd

if TYPE_CHECKING:
    from ..zoo import Config, ModelConfig

__all__ = [
    "AudioEncoderBuilder",
    "AudioEncoderEntry",
    "audio_front_end",
    "build_audio_encoder",
    "get_audio_encoder",
    "list_audio_encoders",
    "register_audio_encoder",
]

#: Builds an audio encoder from a model configuration.
AudioEncoderBuilder = Callable[["ModelConfig"], nn.Module]


@dataclass(frozen=True)
class AudioEncoderEntry:
    """A registered audio encoder: its name, its input and its builder."""

    name: str
    front_end: AudioFrontEnd
    build: AudioEncoderBuilder


_REGISTRY: dict[str, AudioEncoderEntry] = {}


def register_audio_encoder(
    name: str,
    front_end: AudioFrontEnd,
    build: AudioEncoderBuilder | None = None,
    *,
    replace: bool = False,
) -> Any:
    """Register the audio encoder ``name`` taking ``front_end`` inputs, built by ``build``.

    With ``build`` given, registers it and returns it; without, returns a decorator for
    the builder. A name already taken raises :class:`ConfigError` unless ``replace``.
    """

    def register(builder: AudioEncoderBuilder) -> AudioEncoderBuilder:
        if not replace and name in _REGISTRY:
            raise ConfigError(f"audio encoder {name!r} is already registered")
        if not isinstance(front_end, AudioFrontEnd):
            raise ConfigError(
                f"audio encoder {name!r}: front_end must be an AudioFrontEnd, "
                f"got {type(front_end).__name__}"
            )
        _REGISTRY[name] = AudioEncoderEntry(name, front_end, builder)
        return builder

    return register if build is None else register(build)


def _load_builtin_encoders() -> None:
    # The built-in encoders register themselves when their module is imported; that
    # module imports this one, hence the import here rather than at the top.
    from . import vggish  # noqa: F401


def list_audio_encoders() -> tuple[str, ...]:
    """The registered audio-encoder names, in registration order."""
    _load_builtin_encoders()
    return tuple(_REGISTRY)


def get_audio_encoder(name: str) -> AudioEncoderEntry:
    """The registered entry ``name``; :class:`ConfigError` listing the known ones if none."""
    _load_builtin_encoders()
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"unknown audio_encoder {name!r}; known: {', '.join(_REGISTRY)}")
    return entry


def audio_front_end(encoder: str | Config | ModelConfig | nn.Module | None) -> AudioFrontEnd:
    """The front end of an audio encoder, a configuration's, or a built model's.

    ``encoder``: a registered name, a :class:`~avsegformer.zoo.Config` or
    :class:`~avsegformer.zoo.ModelConfig` (its ``audio_encoder``), or a model with an
    ``audio_front_end`` attribute (:class:`~.avsegformer.AVSegFormer`) or a ``config``.
    ``None`` and models without either: the VGGish log-mel front end.
    """
    if encoder is None:
        return get_audio_encoder("vggish").front_end
    if isinstance(encoder, str):
        return get_audio_encoder(encoder).front_end
    if isinstance(encoder, nn.Module):
        declared = getattr(encoder, "audio_front_end", None)
        if isinstance(declared, AudioFrontEnd):
            return declared
        # Through DistributedDataParallel (.module) and torch.compile (._orig_mod) wrappers.
        for wrapped in ("module", "_orig_mod"):
            inner = getattr(encoder, wrapped, None)
            if isinstance(inner, nn.Module):
                return audio_front_end(inner)
        return audio_front_end(getattr(encoder, "config", None))
    model_config = getattr(encoder, "model", encoder)  # Config -> its ModelConfig
    return get_audio_encoder(model_config.audio_encoder).front_end


def build_audio_encoder(cfg: ModelConfig) -> nn.Module:
    """The audio encoder named by ``cfg.audio_encoder`` (output width ``cfg.audio_dim``)."""
    return get_audio_encoder(cfg.audio_encoder).build(cfg)
