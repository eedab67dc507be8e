"""ResNet backbones returning four feature levels (strides 4, 8, 16, 32).

* :func:`resnet50_two_branch`: the authors' "B2" ResNet-50 (torchvision v1.5 layout:
  stride on the 3x3 conv). It carries a second copy of stages 3 and 4
  (``layer3_2``/``layer4_2``) that its forward never uses; keeping it lets the
  authors' checkpoints load strictly.
* :func:`resnet_basic`: a light ResNet of basic blocks with configurable widths and
  depths, for the project's CPU configurations.

Convolutions run in channels-last layout, which oneDNN (CPU) and cuDNN execute
fastest; the outputs are ordinary NCHW tensors with channels-last strides.

# References: ResNet (He et al., arXiv 1512.03385); AVSBench/AVSegFormer two-branch
# variant (Gao et al., arXiv 2307.01146).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ...errors import ConfigError
from ..precision import float32_island
from .registry import MappedWeights, register_backbone

if TYPE_CHECKING:
    from ...zoo import ModelConfig


def _conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
    )
    return conv, nn.BatchNorm2d(out_channels)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), residual, ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1, self.bn1 = _conv_bn(in_channels, width, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride)
        self.conv3, self.bn3 = _conv_bn(width, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class BasicBlock(nn.Module):
    """Two 3x3 convs (first one strided), residual, ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_channels, width, 3, stride)
        self.conv2, self.bn2 = _conv_bn(width, width, 3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


def _stage(
    block: type[Bottleneck] | type[BasicBlock],
    in_channels: int,
    width: int,
    depth: int,
    stride: int,
) -> nn.Sequential:
    blocks = [block(in_channels, width, stride)]
    blocks += [block(width * block.expansion, width) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class ResNet(nn.Module):
    """7x7/2 stem + 3x3/2 max-pool + four stages; returns the four stage outputs.

    Args:
        block: :class:`Bottleneck` or :class:`BasicBlock`.
        widths: inner width of each stage (output = width x ``block.expansion``).
        depths: blocks per stage.
        stem_width: channels of the stem convolution.
        stage_names: attribute (state-dict) names of the four stages.
        spare_stages: names of extra, unused copies of stages 3 and 4 built from the
            stage-2 output (the authors' second branch); empty for none.
        float32_stages: under autocast, run the stem and the first ``k`` stages in
            float32 (see :mod:`..precision`); no effect outside autocast.
    """

    def __init__(
        self,
        block: type[Bottleneck] | type[BasicBlock],
        widths: Sequence[int],
        depths: Sequence[int],
        stem_width: int = 64,
        stage_names: Sequence[str] = ("layer1", "layer2", "layer3", "layer4"),
        spare_stages: Sequence[str] = (),
        float32_stages: int = 0,
    ) -> None:
        super().__init__()
        self.float32_stages = float32_stages
        self.block_type = block
        if not (len(widths) == len(depths) == len(stage_names) == 4):
            raise ValueError(f"ResNet needs 4 stages, got widths={widths}, depths={depths}")
        self.conv1, self.bn1 = _conv_bn(3, stem_width, 7, 2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stage_names = tuple(stage_names)
        self.out_channels = tuple(w * block.expansion for w in widths)
        in_channels = stem_width
        for index, (name, width, depth) in enumerate(zip(stage_names, widths, depths, strict=True)):
            stride = 1 if index == 0 else 2
            self.add_module(name, _stage(block, in_channels, width, depth, stride))
            in_channels = width * block.expansion
        if spare_stages:
            spare3, spare4 = spare_stages
            self.add_module(spare3, _stage(block, self.out_channels[1], widths[2], depths[2], 2))
            self.add_module(spare4, _stage(block, self.out_channels[2], widths[3], depths[3], 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images`` float ``[B, 3, H, W]`` -> four levels ``[B, C_i, H/2^(i+2), W/2^(i+2)]``."""
        x = images.contiguous(memory_format=torch.channels_last)
        levels = []
        with float32_island(x, enabled=self.float32_stages > 0) as (x,):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for name in self.stage_names[: self.float32_stages]:
                x = getattr(self, name)(x)
                levels.append(x)
        for name in self.stage_names[self.float32_stages :]:
            x = getattr(self, name)(x)
            levels.append(x)
        return levels


def resnet50_two_branch(keep_second_branch: bool = True, float32_stages: int = 0) -> ResNet:
    """The authors' ResNet-50 (``backbone.layer3_1`` etc.); forward uses branch 1."""
    return ResNet(
        Bottleneck,
        widths=(64, 128, 256, 512),
        depths=(3, 4, 6, 3),
        stage_names=("layer1", "layer2", "layer3_1", "layer4_1"),
        spare_stages=("layer3_2", "layer4_2") if keep_second_branch else (),
        float32_stages=float32_stages,
    )


def resnet_basic(widths: Sequence[int], depths: Sequence[int]) -> ResNet:
    """A light ResNet of basic blocks (channels = ``widths``), stem as wide as stage 1."""
    return ResNet(BasicBlock, widths=widths, depths=depths, stem_width=widths[0])


# ----------------------------------------------------------------------------- registry
#: Every ResNet here returns four levels at these strides (stem /4, then /2 per stage).
RESNET_STRIDES = (4, 8, 16, 32)

# torchvision's layer3/layer4 names fill both of the authors' branches (_1 and _2).
_TWO_BRANCH = re.compile(r"^(layer[34])_[12]\.")


def _is_torchvision_resnet(keys: Collection[str]) -> bool:
    """A torchvision ResNet state dict (``resnet50-19c8e357.pth``)."""
    return {"conv1.weight", "layer1.0.conv1.weight", "layer4.0.conv1.weight"} <= set(keys)


def torchvision_resnet_filter(
    state: Mapping[str, torch.Tensor], own_keys: Collection[str]
) -> MappedWeights:
    """Map torchvision ResNet-50 weights onto the authors' two-branch ResNet-50.

    ``layer3``/``layer4`` fill both ``layer3_1``/``layer3_2`` (and ``layer4_*``), as the
    authors' training initialised both branches from them; the classifier ``fc`` is
    ignored. File entries the backbone has no place for are returned as ``unused``.
    """
    ignored = sorted(k for k in state if k.startswith("fc."))
    mapped: dict[str, torch.Tensor] = {}
    for key in own_keys:
        source = _TWO_BRANCH.sub(r"\1.", key)
        if source in state:
            mapped[key] = state[source]
    used = {_TWO_BRANCH.sub(r"\1.", k) for k in mapped}
    unused = sorted(k for k in state if k not in used and k not in ignored)
    return MappedWeights(mapped, ignored, unused)


def _build_res50(cfg: ModelConfig) -> ResNet:
    # Under bfloat16 autocast a ResNet-50 drifts far enough to move mask borders
    # (binary-mask IoU against float32 on the parity inputs: 0.987 all in bfloat16,
    # 0.9905 with the stem and layer1 in float32 (19% of its FLOPs, memory-bound
    # anyway), 0.9925 all in float32). PVTv2 stays at 0.995 in bfloat16.
    return resnet50_two_branch(keep_second_branch=cfg.keep_unused_modules, float32_stages=1)


def _check_basic_stages(cfg: ModelConfig) -> None:
    if len(cfg.backbone_widths) != 4 or len(cfg.backbone_depths) != 4:
        raise ConfigError(
            "backbone 'resnet_basic' needs 4 backbone_widths and 4 backbone_depths, got "
            f"{cfg.backbone_widths} and {cfg.backbone_depths}"
        )


def _build_resnet_basic(cfg: ModelConfig) -> ResNet:
    _check_basic_stages(cfg)
    return resnet_basic(cfg.backbone_widths, cfg.backbone_depths)


def _resnet_basic_channels(cfg: ModelConfig) -> tuple[int, ...]:
    _check_basic_stages(cfg)
    return tuple(w * BasicBlock.expansion for w in cfg.backbone_widths)


register_backbone(
    "res50",
    build=_build_res50,
    channels=tuple(w * Bottleneck.expansion for w in (64, 128, 256, 512)),
    strides=RESNET_STRIDES,
    checkpoint_filter=torchvision_resnet_filter,
    pretrained_layout="torchvision_resnet50",
    recognises=_is_torchvision_resnet,
    signature_key="layer3_1.0.conv1.weight",
    title="ResNet-50",
)
register_backbone(
    "resnet_basic",
    build=_build_resnet_basic,
    channels=_resnet_basic_channels,
    strides=RESNET_STRIDES,
    signature_key="layer1.0.conv1.weight",
    title="light ResNet",
)
