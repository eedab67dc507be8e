"""Builders: a registered name or a configuration -> an :class:`AVSegFormer` network.

Each part has a plain builder function taking a :class:`~avsegformer.zoo.ModelConfig`;
:func:`build_model` assembles them. No file I/O here: :mod:`avsegformer.pretrained`
adds the weights (``avsegformer.build_model(name, pretrained=True)``), and
:mod:`avsegformer.checkpoint` builds on this module (never the reverse).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..configuration import resolve_config
from ..errors import ConfigError
from ..zoo import Config, ModelConfig
from .audio_encoders import (
    build_audio_encoder as build_audio_encoder,  # re-exported: its former home
)
from .audio_encoders import get_audio_encoder
from .avsegformer import SIZE_DIVISOR, AVSegFormer
from .backbones.registry import get_backbone, list_backbones
from .head import MASK_STRIDE, AVSegHead, MaskMLPMode
from .mixer import CrossModalMixer
from .query_generator import AudioQueryGenerator
from .transformer import build_transformer


def feature_channels(cfg: ModelConfig) -> tuple[int, ...]:
    """The channels of the backbone's feature levels under ``cfg`` (its declaration).

    ``cfg.in_channels`` is a record of them: empty means "the backbone's"; a recorded
    value (saved configurations and checkpoints carry one) must match.

    Raises:
        ConfigError: unknown backbone, or ``in_channels`` disagrees with it.
    """
    declared = get_backbone(cfg.backbone).channels_for(cfg)
    if cfg.in_channels and tuple(cfg.in_channels) != declared:
        raise ConfigError(
            f"backbone {cfg.backbone!r} produces channels {declared} but in_channels is "
            f"{tuple(cfg.in_channels)}; set model.in_channels={','.join(map(str, declared))} "
            "(or leave it empty: the backbone's own)"
        )
    return declared


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The visual backbone registered as ``cfg.backbone``; checks ``cfg.in_channels``.

    Raises:
        ConfigError: unknown backbone (the message lists the registered ones),
            ``in_channels`` disagreeing with it, or settings it cannot be built with.
    """
    spec = get_backbone(cfg.backbone)
    declared = feature_channels(cfg)
    strides = spec.strides_for(cfg)
    if len(strides) != len(declared) or len(declared) < 2 or strides[0] != MASK_STRIDE:
        raise ConfigError(
            f"backbone {cfg.backbone!r} declares channels {declared} and strides {strides}: "
            f"the head needs at least two levels, one stride each, the first at stride "
            f"{MASK_STRIDE}"
        )
    if SIZE_DIVISOR % max(strides):
        raise ConfigError(
            f"backbone {cfg.backbone!r} has a level at stride {max(strides)}; frames are "
            f"multiples of {SIZE_DIVISOR}, so every stride must divide {SIZE_DIVISOR}"
        )
    backbone = spec.build(cfg)
    # A module that states its channels must agree with its registration.
    produced = getattr(backbone, "out_channels", None)
    if produced is not None and tuple(produced) != declared:
        raise ConfigError(
            f"backbone {cfg.backbone!r} is registered with channels {declared} but its "
            f"module produces {tuple(produced)}"
        )
    return backbone


def build_head(cfg: ModelConfig, mlp_mode: MaskMLPMode = "folded") -> AVSegHead:
    """The AVSegHead with its query generator, transformer and mixer, sized for the
    feature levels the configured backbone declares (:func:`feature_channels`)."""
    if cfg.embed_dim % cfg.gn_groups or cfg.embed_dim % cfg.num_heads:
        raise ConfigError(
            f"embed_dim {cfg.embed_dim} must be divisible by gn_groups {cfg.gn_groups} "
            f"and num_heads {cfg.num_heads}"
        )
    in_channels = feature_channels(cfg)
    if cfg.num_levels != len(in_channels) - 1:
        raise ConfigError(
            f"num_levels {cfg.num_levels} must be the number of encoder levels "
            f"(backbone {cfg.backbone!r} levels 1..{len(in_channels) - 1}); set "
            f"model.num_levels={len(in_channels) - 1}"
        )
    if len(cfg.mask_head_widths) != 2:
        raise ConfigError(f"mask_head_widths needs 2 values, got {cfg.mask_head_widths}")
    generator = AudioQueryGenerator(
        cfg.generator_layers,
        cfg.query_num,
        dim=cfg.embed_dim,
        num_heads=cfg.num_heads,
        ffn_dim=cfg.generator_ffn_dim,
    )
    transformer = build_transformer(
        dim=cfg.embed_dim,
        num_heads=cfg.num_heads,
        ffn_dim=cfg.ffn_dim,
        dropout=cfg.dropout,
        encoder_layers=cfg.encoder_layers,
        decoder_layers=cfg.decoder_layers,
        num_levels=cfg.num_levels,
        num_points=cfg.num_points,
    )
    return AVSegHead(
        in_channels=in_channels,
        num_classes=cfg.num_classes,
        query_generator=generator,
        transformer=transformer,
        fusion_block=CrossModalMixer(cfg.embed_dim, cfg.num_heads),
        embed_dim=cfg.embed_dim,
        num_queries=cfg.query_num,
        mlp_hidden_dim=cfg.mlp_hidden_dim,
        gn_groups=cfg.gn_groups,
        mask_head_widths=(cfg.mask_head_widths[0], cfg.mask_head_widths[1]),
        keep_unused_modules=cfg.keep_unused_modules,
        mlp_mode=mlp_mode,
    )


def build_model(
    name_or_config: str | Config | ModelConfig,
    *,
    overrides: dict[str, Any] | list[str] | None = None,
    device: torch.device | str | None = None,
    mlp_mode: MaskMLPMode = "folded",
) -> AVSegFormer:
    """Build an AVSegFormer network, randomly initialised (train mode; no file I/O).

    :func:`avsegformer.build_model` (:mod:`avsegformer.pretrained`) builds it with this
    function and loads released or given weights into it.

    Args:
        name_or_config: a registered name (``avsegformer.list_models()``), a
            :class:`~avsegformer.zoo.Config` or a :class:`~avsegformer.zoo.ModelConfig`.
        overrides: configuration overrides (``{"model.query_num": 100}`` or
            ``["query_num=100"]``).
        device: where to create the parameters; ``"meta"`` builds without memory
            (for inspecting shapes).
        mlp_mode: ``"folded"`` (fast) or ``"reference"`` (the authors' literal order of
            operations) for the query-mask MLP; same function up to rounding.

    Returns:
        The model, with ``model.config`` set. The visual backbone is trainable and the
        audio encoder frozen unless ``model.freeze_audio`` is false in the configuration.
    """
    config = resolve_config(name_or_config, overrides).config
    cfg = config.model
    if cfg.num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {cfg.num_classes}")
    audio = get_audio_encoder(cfg.audio_encoder)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = AVSegFormer(
            build_backbone(cfg),
            audio.build(cfg),
            build_head(cfg, mlp_mode),
            audio_dim=cfg.audio_dim,
            embed_dim=cfg.embed_dim,
            freeze_audio=cfg.freeze_audio,
            audio_front_end=audio.front_end,
        )
    model.config = config
    return model


def __getattr__(name: str) -> object:
    # BACKBONES was a fixed tuple; the registry is the list now (kept for old imports).
    if name == "BACKBONES":
        return tuple(list_backbones())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
