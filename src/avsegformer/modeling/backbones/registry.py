"""The visual backbone registry: one :class:`BackboneSpec` per backbone name.

Each backbone registers itself where it is defined (``resnet.py``: ``res50``,
``resnet_basic``; ``pvt_v2.py``: ``pvt_v2_b5``) and declares everything the rest of
the project needs to know about it:

* how to build it from a :class:`~avsegformer.zoo.ModelConfig`;
* the channels and strides of the feature levels it returns (the head is sized from
  them; ``ModelConfig.in_channels`` only records and checks them);
* its checkpoint key filter: how a pretrained weight file of its own kind (e.g.
  torchvision's ResNet-50) maps onto its state dict, as timm's ``checkpoint_filter_fn``;
* the pixel mean/std its inputs are normalised with (the data pipeline and the
  Predictor ask for them).

Adding a backbone is one class plus one call::

    register_backbone(
        "my_net",
        build=lambda cfg: MyNet(),
        channels=(32, 64, 128, 256),
        strides=(4, 8, 16, 32),
    )

This module imports nothing heavy (no torch at import time), so data code may ask it
for pixel statistics; the modules of the built-in backbones are imported on the first
lookup (:data:`BUILTIN_MODULES`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ...zoo import ModelConfig

#: ImageNet statistics of RGB pixels in [0, 1]: what every built-in backbone was
#: pretrained with (torchvision's ``Normalize`` values).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Levels = tuple[int, ...]
#: A value fixed by the backbone, or one that depends on the configuration.
PerConfig = Levels | Callable[["ModelConfig"], Levels]


@dataclass
class MappedWeights:
    """What a :attr:`BackboneSpec.checkpoint_filter` makes of a pretrained weight file.

    Attributes:
        state: tensors under the backbone's own state-dict names.
        ignored: file entries deliberately left out (e.g. an ImageNet classifier).
        unused: file entries that map to nothing the backbone has (reported as
            unexpected, so a strict load refuses them).
    """

    state: dict[str, torch.Tensor]
    ignored: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


#: ``(file state dict, the backbone's own state-dict keys) -> MappedWeights``.
CheckpointFilter = Callable[["Mapping[str, torch.Tensor]", Collection[str]], MappedWeights]


@dataclass(frozen=True)
class BackboneSpec:
    """A registered visual backbone.

    Attributes:
        name: the ``model.backbone`` value that selects it.
        build: ``ModelConfig -> nn.Module`` mapping float ``[B, 3, H, W]`` images to a
            list of feature levels ``[B, C_i, H / s_i, W / s_i]`` (``C_i`` =
            ``channels``, ``s_i`` = ``strides``). The head needs at least two levels,
            the first at stride 4 (its mask feature) and the others coarser.
        channels: ``C_i`` of each level, or a function of the configuration.
        strides: ``s_i`` of each level, or a function of the configuration.
        pixel_mean, pixel_std: RGB statistics (of pixels in [0, 1]) the inputs are
            normalised with: ``(x / 255 - mean) / std``.
        checkpoint_filter: maps a pretrained weight file of this backbone's kind onto
            its state dict; ``None``: no such files.
        pretrained_layout: the name of that file layout (``LoadReport.layout``).
        recognises: whether a file's keys are of that layout.
        signature_key: a state-dict key only this backbone has (without the
            ``backbone.`` prefix), to describe whole-model files in messages.
        title: a human name for messages (``"ResNet-50"``).
    """

    name: str
    build: Callable[[ModelConfig], nn.Module]
    channels: PerConfig
    strides: PerConfig
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    checkpoint_filter: CheckpointFilter | None = None
    pretrained_layout: str = ""
    recognises: Callable[[Collection[str]], bool] | None = None
    signature_key: str = ""
    title: str = ""

    def channels_for(self, cfg: ModelConfig) -> Levels:
        """The channels of each feature level this backbone returns under ``cfg``."""
        return tuple(self.channels(cfg) if callable(self.channels) else self.channels)

    def strides_for(self, cfg: ModelConfig) -> Levels:
        """The stride of each feature level this backbone returns under ``cfg``."""
        return tuple(self.strides(cfg) if callable(self.strides) else self.strides)


_REGISTRY: dict[str, BackboneSpec] = {}

#: Modules that register the built-in backbones when imported.
BUILTIN_MODULES = (
    "avsegformer.modeling.backbones.resnet",
    "avsegformer.modeling.backbones.pvt_v2",
)
_builtins_loaded = False


def _load_builtins() -> None:
    """Import the built-in backbone modules once (each registers its backbones)."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def register_backbone(
    name: str,
    *,
    build: Callable[[ModelConfig], nn.Module],
    channels: PerConfig,
    strides: PerConfig,
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN,
    pixel_std: tuple[float, float, float] = IMAGENET_STD,
    checkpoint_filter: CheckpointFilter | None = None,
    pretrained_layout: str = "",
    recognises: Callable[[Collection[str]], bool] | None = None,
    signature_key: str = "",
    title: str = "",
) -> BackboneSpec:
    """Register the backbone ``name`` (see :class:`BackboneSpec` for the fields).

    Registering a name again replaces the earlier entry (re-running a module, a test
    redefining its backbone).

    Raises:
        ConfigError: ``pixel_mean``/``pixel_std`` are not three values (std > 0), or
            only some of ``checkpoint_filter``, ``pretrained_layout``, ``recognises``.
    """
    if len(pixel_mean) != 3 or len(pixel_std) != 3 or min(pixel_std) <= 0:
        raise ConfigError(
            f"backbone {name!r}: pixel_mean and pixel_std need 3 values each (std > 0), "
            f"got {pixel_mean} and {pixel_std}"
        )
    file_fields = (checkpoint_filter is not None, bool(pretrained_layout), recognises is not None)
    if any(file_fields) and not all(file_fields):
        raise ConfigError(
            f"backbone {name!r}: checkpoint_filter, pretrained_layout and recognises go "
            "together (how its weight files are recognised, named and mapped)"
        )
    spec = BackboneSpec(
        name=name,
        build=build,
        channels=channels,
        strides=strides,
        pixel_mean=tuple(pixel_mean),  # type: ignore[arg-type]
        pixel_std=tuple(pixel_std),  # type: ignore[arg-type]
        checkpoint_filter=checkpoint_filter,
        pretrained_layout=pretrained_layout,
        recognises=recognises,
        signature_key=signature_key,
        title=title or name,
    )
    _REGISTRY[name] = spec
    return spec


def unregister_backbone(name: str) -> None:
    """Remove ``name`` from the registry (tests that register a temporary backbone)."""
    _REGISTRY.pop(name, None)


def get_backbone(name: str) -> BackboneSpec:
    """The registered backbone ``name``.

    Raises:
        ConfigError: no backbone of that name (the message lists the known ones).
    """
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown backbone {name!r}; known: {', '.join(list_backbones())}"
        ) from None


def list_backbones() -> list[str]:
    """The registered backbone names, in registration order."""
    _load_builtins()
    return list(_REGISTRY)


def registered_backbones() -> list[BackboneSpec]:
    """Every registered :class:`BackboneSpec`, in registration order."""
    _load_builtins()
    return list(_REGISTRY.values())


def pixel_statistics(cfg: ModelConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` the frames of a model configured by ``cfg`` are normalised with."""
    spec = get_backbone(cfg.backbone)
    return spec.pixel_mean, spec.pixel_std
