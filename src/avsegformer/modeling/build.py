"""Builders: a registered name or a configuration -> an :class:`AVSegFormer`.

Each part has a plain builder function taking a :class:`~avsegformer.zoo.ModelConfig`;
:func:`build_model` assembles them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..zoo import Config, DataConfig, ModelConfig, TrainConfig, get_config
from .avsegformer import AVSegFormer
from .backbones.pvt_v2 import pvt_v2_b5
from .backbones.resnet import resnet50_two_branch, resnet_basic
from .head import AVSegHead, MaskMLPMode
from .mixer import CrossModalMixer
from .query_generator import AudioQueryGenerator
from .transformer import build_transformer
from .vggish import AudioCNN, VGGish

logger = logging.getLogger(__name__)

BACKBONES = ("res50", "pvt_v2_b5", "resnet_basic")
AUDIO_ENCODERS = ("vggish", "audio_cnn")


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The visual backbone named by ``cfg.backbone``; checks ``cfg.in_channels``."""
    if cfg.backbone == "res50":
        # Under bfloat16 autocast a ResNet-50 drifts far enough to move mask borders
        # (binary-mask IoU against float32 on the parity inputs: 0.987 all in bfloat16,
        # 0.9905 with the stem and layer1 in float32 (19% of its FLOPs, memory-bound
        # anyway), 0.9925 all in float32). PVTv2 stays at 0.995 in bfloat16.
        backbone: nn.Module = resnet50_two_branch(
            keep_second_branch=cfg.keep_unused_modules, float32_stages=1
        )
    elif cfg.backbone == "pvt_v2_b5":
        backbone = pvt_v2_b5(drop_path_rate=cfg.drop_path_rate)
    elif cfg.backbone == "resnet_basic":
        if len(cfg.backbone_widths) != 4 or len(cfg.backbone_depths) != 4:
            raise ConfigError(
                "backbone 'resnet_basic' needs 4 backbone_widths and 4 backbone_depths, got "
                f"{cfg.backbone_widths} and {cfg.backbone_depths}"
            )
        backbone = resnet_basic(cfg.backbone_widths, cfg.backbone_depths)
    else:
        raise ConfigError(f"unknown backbone {cfg.backbone!r}; known: {', '.join(BACKBONES)}")
    produced = tuple(backbone.out_channels)  # type: ignore[arg-type]
    if produced != tuple(cfg.in_channels):
        raise ConfigError(
            f"backbone {cfg.backbone!r} produces channels {produced} but in_channels is "
            f"{tuple(cfg.in_channels)}; set model.in_channels={','.join(map(str, produced))}"
        )
    return backbone


def build_audio_encoder(cfg: ModelConfig) -> nn.Module:
    """The audio encoder named by ``cfg.audio_encoder`` (output width ``cfg.audio_dim``)."""
    if cfg.audio_encoder == "vggish":
        if cfg.audio_dim != VGGish.out_dim:
            raise ConfigError(f"VGGish embeddings have 128 values; audio_dim is {cfg.audio_dim}")
        return VGGish()
    if cfg.audio_encoder == "audio_cnn":
        if not cfg.audio_widths:
            raise ConfigError("audio_encoder 'audio_cnn' needs audio_widths (e.g. 16,32,64,128)")
        return AudioCNN(cfg.audio_widths, cfg.audio_dim)
    raise ConfigError(
        f"unknown audio_encoder {cfg.audio_encoder!r}; known: {', '.join(AUDIO_ENCODERS)}"
    )


def build_head(cfg: ModelConfig, mlp_mode: MaskMLPMode = "folded") -> AVSegHead:
    """The AVSegHead with its query generator, transformer and mixer."""
    if cfg.embed_dim % cfg.gn_groups or cfg.embed_dim % cfg.num_heads:
        raise ConfigError(
            f"embed_dim {cfg.embed_dim} must be divisible by gn_groups {cfg.gn_groups} "
            f"and num_heads {cfg.num_heads}"
        )
    if cfg.num_levels != len(cfg.in_channels) - 1:
        raise ConfigError(
            f"num_levels {cfg.num_levels} must be the number of encoder levels "
            f"(backbone levels 1..{len(cfg.in_channels) - 1})"
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
        in_channels=tuple(cfg.in_channels),
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


def resolve_config(
    name_or_config: str | Config | ModelConfig, overrides: dict[str, Any] | list[str] | None = None
) -> Config:
    """A :class:`Config` from a registered name, a ``Config`` or a bare ``ModelConfig``."""
    if isinstance(name_or_config, str):
        config = get_config(name_or_config)
    elif isinstance(name_or_config, Config):
        config = name_or_config
    elif isinstance(name_or_config, ModelConfig):
        config = Config(
            name="custom",
            model=name_or_config,
            data=DataConfig(),
            train=TrainConfig(),
        )
    else:
        raise ConfigError(
            f"expected a model name, Config or ModelConfig, got {type(name_or_config).__name__}"
        )
    return config.with_overrides(overrides)


def build_model(
    name_or_config: str | Config | ModelConfig,
    *,
    pretrained: bool | str | os.PathLike[str] = False,
    pretrained_backbone: str | os.PathLike[str] | None = None,
    pretrained_audio: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    device: torch.device | str | None = None,
    mlp_mode: MaskMLPMode = "folded",
) -> AVSegFormer:
    """Build an AVSegFormer (randomly initialised unless ``pretrained``; train mode).

    Args:
        name_or_config: a registered name (``avsegformer.list_models()``), a
            :class:`~avsegformer.zoo.Config` or a :class:`~avsegformer.zoo.ModelConfig`.
        pretrained: ``True``: the configuration's released weights (downloaded into the
            cache on first use and verified, see :mod:`avsegformer.hub`); a path: that
            checkpoint. Loaded strictly.
        pretrained_backbone: ImageNet weights for the visual backbone:
            ``resnet50-19c8e357.pth`` (torchvision names) or ``pvt_v2_b5.pth``, or the
            registered names ``"resnet50"`` / ``"pvt_v2_b5"`` (fetched into the cache).
        pretrained_audio: VGGish weights (``vggish-10086976.pth``, or ``"vggish"``).
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
    config = resolve_config(name_or_config, overrides)
    cfg = config.model
    if cfg.num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {cfg.num_classes}")
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = AVSegFormer(
            build_backbone(cfg),
            build_audio_encoder(cfg),
            build_head(cfg, mlp_mode),
            audio_dim=cfg.audio_dim,
            embed_dim=cfg.embed_dim,
            freeze_audio=cfg.freeze_audio,
        )
    model.config = config
    if not (pretrained or pretrained_backbone or pretrained_audio):
        return model
    # Lazy: the file formats live in avsegformer.checkpoint, which imports this module;
    # avsegformer.hub turns registered names into verified files in the cache.
    from ..checkpoint import load_checkpoint
    from ..hub import pretrained_file, resolve

    for spec, target in ((pretrained_backbone, "backbone"), (pretrained_audio, "vggish")):
        if spec is not None:
            logger.info("%s", load_checkpoint(model, resolve(spec), expect_target=target))
    if pretrained:
        path = pretrained_file(name_or_config, pretrained)
        logger.info("%s", load_checkpoint(model, path))
    return model
