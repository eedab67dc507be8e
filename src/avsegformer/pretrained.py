"""Models with weights: ``avsegformer.build_model``.

:func:`build_model` builds the network (:func:`avsegformer.modeling.build.build_model`,
no file I/O) and loads into it the weights asked for: released checkpoints and parts
(fetched into the cache and verified by :mod:`avsegformer.hub`) or files, read by
:mod:`avsegformer.checkpoint`. It sits above both, so that neither the network builder
nor the checkpoint reader needs the other lazily.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from .checkpoint import load_checkpoint
from .hub import pretrained_file, resolve
from .modeling import build as network
from .modeling.avsegformer import AVSegFormer
from .modeling.head import MaskMLPMode
from .zoo import Config, ModelConfig

logger = logging.getLogger(__name__)


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
            registered names ``"resnet50"`` / ``"pvt_v2_b5"`` (fetched into the cache);
            mapped onto the backbone by its registered checkpoint key filter.
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
    model = network.build_model(
        name_or_config, overrides=overrides, device=device, mlp_mode=mlp_mode
    )
    for spec, target in ((pretrained_backbone, "backbone"), (pretrained_audio, "vggish")):
        if spec is not None:
            logger.info("%s", load_checkpoint(model, resolve(spec), expect_target=target))
    if pretrained:
        path = pretrained_file(name_or_config, pretrained)
        logger.info("%s", load_checkpoint(model, path))
    return model
