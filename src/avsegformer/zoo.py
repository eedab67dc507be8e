"""Named configurations: the six published AVSegFormer models and the project's small CPU ones.

A :class:`Config` bundles three typed parts: :class:`ModelConfig` (architecture),
:class:`DataConfig` (task, image size, clip length) and :class:`TrainConfig` (optimiser,
schedule, losses). Named configurations are registered here; anything can be overridden
with :meth:`Config.with_overrides` (``{"batch_size": 4, "train.lr": 1e-5}``), which is
what ``avsegformer train --set batch_size=4 lr=1e-5`` uses.

References: AVSegFormer (Gao et al., arXiv 2307.01146); the settings of the authors'
release are recorded in ``shared/reference/manifests/*.json`` (``process_config``,
``dataset_test``, ``loss_config``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from .errors import ConfigError
from .settings import Precision, check_img_size

# Pixel statistics belong to each backbone (its registration); these names stay for
# old imports.

# The channels the published configurations record (``model.in_channels``); a backbone
# declares its own in its registration, so new configurations need no constant here.
RESNET50_CHANNELS = (256, 512, 1024, 2048)
PVT_V2_B5_CHANNELS = (64, 128, 320, 512)

# Upper bounds no real model comes near (the published ones use widths <= 2048, <= 6
# layers per stack, 512-pixel frames). They stop a typo, a damaged checkpoint record or a
# hand-made one from building a network that fits no machine, before anything is built.
MAX_WIDTH = 2**24
MAX_LAYERS = 1024
MAX_IMG_SIZE = 8192


@dataclass(frozen=True)
class Limits:
    """The values a numeric configuration field may take (every float must be finite).

    ``low``/``high``: inclusive bounds unless ``high_open`` (``None``: unbounded). A tuple
    field's items are checked one by one.
    """

    low: float | None = None
    high: float | None = None
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if self.low is not None and value < self.low:
            return False
        if self.high is None:
            return True
        return value < self.high if self.high_open else value <= self.high

    def describe(self) -> str:
        if self.high is None:
            return f">= {_show(self.low)}" if self.low is not None else "a finite number"
        close = ")" if self.high_open else "]"
        return f"in [{_show(self.low)}, {_show(self.high)}{close}"


def limited(default: Any, low: float | None = None, high: float | None = None, *,
            high_open: bool = False) -> Any:  # fmt: skip
    """A dataclass field with :class:`Limits`, checked whenever a configuration is made
    (``--set``, ``config.json``, a checkpoint's record), before any data is read."""
    return field(default=default, metadata={"limits": Limits(low, high, high_open)})


def check_limits(section: Any, prefix: str) -> None:
    """Raise :class:`ConfigError` naming ``prefix.key``, the value and the allowed range
    for the first field of ``section`` outside its :class:`Limits` (or not finite)."""
    for f in fields(section):
        value = getattr(section, f.name)
        limits: Limits | None = f.metadata.get("limits")
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            allowed = limits.describe() if limits is not None else "a finite number"
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(
                    f"{prefix}.{f.name}={_show(value)} is not a finite number; it must be {allowed}"
                )
            if limits is not None and not limits.admits(item):
                raise ConfigError(
                    f"{prefix}.{f.name}={_show(value)} is out of range; it must be {allowed}"
                )


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


# The ModelConfig fields the backbone's channels (``in_channels``) follow from.
_CHANNEL_SOURCES = frozenset({"backbone", "backbone_widths"})


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an AVSegFormer network.

    The defaults are the published architecture (identical for S4, MS3 and AVSS but for
    ``num_classes``). ``backbone`` names a registered visual backbone (``"res50"``,
    ``"pvt_v2_b5"``, a light backbone of this project: see
    :mod:`avsegformer.modeling.backbones.registry`); ``audio_encoder`` is ``"vggish"``
    or a light variant.
    """

    backbone: str = "res50"
    # The channels of the backbone's feature levels, which the backbone declares: empty
    # means "the backbone's"; a recorded value (saved configurations) is checked
    # against the declaration when the model is built.
    in_channels: tuple[int, ...] = limited((), 1, MAX_WIDTH)
    # Widths and block counts of a light backbone; ignored by res50 / pvt_v2_b5.
    backbone_widths: tuple[int, ...] = limited((), 1, MAX_WIDTH)
    backbone_depths: tuple[int, ...] = limited((), 1, MAX_LAYERS)
    num_classes: int = limited(1, 1, MAX_WIDTH)
    embed_dim: int = limited(256, 1, MAX_WIDTH)
    query_num: int = limited(300, 1, MAX_WIDTH)
    num_heads: int = limited(8, 1, MAX_WIDTH)
    num_levels: int = limited(3, 1, MAX_LAYERS)
    num_points: int = limited(4, 1, MAX_WIDTH)
    encoder_layers: int = limited(6, 1, MAX_LAYERS)
    decoder_layers: int = limited(6, 1, MAX_LAYERS)
    ffn_dim: int = limited(2048, 1, MAX_WIDTH)
    dropout: float = limited(0.1, 0, 1, high_open=True)
    generator_layers: int = limited(6, 1, MAX_LAYERS)
    generator_ffn_dim: int = limited(1024, 1, MAX_WIDTH)
    mlp_hidden_dim: int = limited(2048, 1, MAX_WIDTH)
    gn_groups: int = limited(32, 1, MAX_WIDTH)
    # Hidden widths of the mask decoder ``head.fc`` (3x3 conv, 4x upsampling, 3x3 conv).
    mask_head_widths: tuple[int, ...] = limited((128, 32), 1, MAX_WIDTH)
    audio_encoder: str = "vggish"
    # Channel widths of a light audio encoder; ignored by "vggish".
    audio_widths: tuple[int, ...] = limited((), 1, MAX_WIDTH)
    audio_dim: int = limited(128, 1, MAX_WIDTH)
    freeze_audio: bool = True
    drop_path_rate: float = limited(0.1, 0, 1, high_open=True)
    # The authors' network carries modules its forward never uses (head.fpn,
    # head.attn_fc, ResNet layer3_2/layer4_2). They are kept by default so the released
    # checkpoints load strictly; light models drop them.
    keep_unused_modules: bool = True

    def __post_init__(self) -> None:
        check_limits(self, "model")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and len(value) > MAX_LAYERS:
                raise ConfigError(
                    f"model.{f.name} has {len(value)} entries; at most {MAX_LAYERS} are allowed"
                )
        if sum(self.backbone_depths) > MAX_LAYERS:
            raise ConfigError(
                f"model.backbone_depths={_show(self.backbone_depths)} adds up to more than "
                f"{MAX_LAYERS} blocks"
            )


@dataclass(frozen=True)
class DataConfig:
    """What the data pipeline feeds the model.

    ``img_size`` is the square side frames are resized to. The authors' S4/MS3 loader
    resizes to 512 (their configs say 224, the code ignores it); their published S4/MS3
    numbers were computed at 512, so that is the default for those configurations.
    """

    # A registered task's name (avsegformer.tasks; checked where the task is used, since
    # configurations sit below the task registry).
    task: str = "s4"
    img_size: int = limited(512, 32, MAX_IMG_SIZE)
    frames_per_clip: int = limited(5, 1)

    def __post_init__(self) -> None:
        check_limits(self, "data")
        # The backbone's total stride: caught here, before any data is read.
        check_img_size(self.img_size, "data.img_size")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and evaluation schedule (the authors' values by default)."""

    epochs: int = limited(30, 1)
    freeze_backbone_epochs: int = limited(5, 0)
    batch_size: int = limited(2, 1)
    eval_batch_size: int = limited(2, 1)
    lr: float = limited(2e-5, 0)
    weight_decay: float = limited(0.01, 0)
    scheduler: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = limited(0, 0)
    loss_type: Literal["dice", "bce"] = "dice"
    iou_loss_weight: float = limited(1.0, 0)
    mix_loss_weight: float = limited(0.1, 0)
    eval_start_epoch: int = limited(0, 0)
    eval_every: int = limited(1, 1)
    num_workers: int = limited(2, 0)
    # "auto": bfloat16 autocast on CUDA, float32 on CPU (saved as its short name).
    precision: Precision = Precision.AUTO
    grad_clip: float = limited(0.0, 0)
    seed: int = limited(123, 0)
    # BatchNorm with small per-process batches: "freeze_bn" keeps every BN layer (the
    # ResNet backbone's; the tiny audio CNN's) in eval mode (running statistics);
    # "sync_bn" synchronises batch statistics across processes (CUDA only: torch has
    # no CPU SyncBatchNorm).
    freeze_bn: bool = False
    sync_bn: bool = False
    # Frames fed to the network in training: "all" (the authors' scripts: every frame of
    # a clip, although S4 train labels only the first) or "labelled" (only frames whose
    # label enters the loss: the same loss and gradients up to BatchNorm batch statistics,
    # 5x less compute on S4).
    train_frames: Literal["all", "labelled"] = "all"
    # "zero" replaces every clip's audio by silence in training and validation: the
    # visual-only baseline of the audio-reliance benchmark.
    audio: Literal["matched", "zero"] = "matched"
    # A step whose loss or gradient norm is NaN/inf: "stop" the run there (exit non-zero,
    # the last good checkpoint kept) or "skip" it (no update; counted in the log and the
    # summary; the run stops after MAX_CONSECUTIVE_NONFINITE such steps in a row).
    # float16 gradient-scaler overflow steps are skipped and counted under both.
    nonfinite: Literal["stop", "skip"] = "stop"

    def __post_init__(self) -> None:
        check_limits(self, "train")
        # Any spelling (TrainConfig(precision="bfloat16")) is stored as the one member.
        object.__setattr__(
            self, "precision", Precision.parse(self.precision, option="train.precision")
        )


@dataclass(frozen=True)
class Config:
    """A named, complete configuration: model + data + training, plus metadata."""

    name: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    description: str = ""
    # Where weights for this configuration come from, and what they scored.
    source: str = ""
    published: dict[str, float] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.data.task

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    # ------------------------------------------------------------------ overrides
    def with_overrides(self, overrides: dict[str, Any] | list[str] | None) -> Config:
        """Return a copy with fields replaced.

        ``overrides`` maps a field name to a value. Names are either dotted
        (``"train.lr"``, ``"model.query_num"``) or bare (``"lr"``) when the bare name is
        unique across the three sections. A list of ``"key=value"`` strings (the
        command-line form) is parsed, converting each value to the field's type.
        """
        if not overrides:
            return self
        if isinstance(overrides, list):
            overrides = parse_assignments(overrides)
        sections: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "train": {}}
        top: dict[str, Any] = {}
        for key, value in overrides.items():
            section, name = self._resolve_key(key)
            target = self if section is None else getattr(self, section)
            typed = _coerce(value, _field_type(type(target), name), key)
            if section is None:
                top[name] = typed
            else:
                sections[section][name] = typed
        # Recorded channels describe the recorded backbone: another backbone (or other
        # widths) without new in_channels takes the channels it declares.
        model = sections["model"]
        changed = any(model[k] != getattr(self.model, k) for k in _CHANNEL_SOURCES & model.keys())
        if changed and "in_channels" not in model:
            model["in_channels"] = ()
        return replace(
            self,
            model=replace(self.model, **sections["model"]),
            data=replace(self.data, **sections["data"]),
            train=replace(self.train, **sections["train"]),
            **top,
        )

    def _resolve_key(self, key: str) -> tuple[str | None, str]:
        if key == "data.num_classes":  # where older records kept a copy of it
            return "model", "num_classes"
        if "." in key:
            section, name = key.split(".", 1)
            if section not in ("model", "data", "train"):
                raise ConfigError(
                    f"unknown configuration section {section!r} in {key!r}; "
                    "use model.*, data.* or train.*"
                )
            if name not in {f.name for f in fields(getattr(self, section))}:
                raise ConfigError(f"unknown configuration key {key!r}")
            return section, name
        owners = [
            s
            for s in ("model", "data", "train")
            if key in {f.name for f in fields(getattr(self, s))}
        ]
        if len(owners) == 1:
            return owners[0], key
        if not owners and key in ("description", "source"):
            return None, key
        if not owners:
            known = sorted(
                {f.name for s in ("model", "data", "train") for f in fields(getattr(self, s))}
            )
            raise ConfigError(f"unknown configuration key {key!r}; known keys: {', '.join(known)}")
        raise ConfigError(
            f"ambiguous configuration key {key!r}: use one of "
            + ", ".join(f"{s}.{key}" for s in owners)
        )

    # ------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Rebuild a configuration saved by :meth:`to_dict` (unknown keys are errors)."""
        try:
            model = _dataclass_from_dict(ModelConfig, d["model"])
            data = dict(d["data"])
            # Records written before the task registry kept a copy of num_classes here.
            legacy_classes = data.pop("num_classes", model.num_classes)
            if legacy_classes != model.num_classes:
                raise ConfigError(
                    f"malformed configuration record: data.num_classes={legacy_classes} but "
                    f"model.num_classes={model.num_classes}"
                )
            return cls(
                name=d["name"],
                model=model,
                data=_dataclass_from_dict(DataConfig, data),
                train=_dataclass_from_dict(TrainConfig, d["train"]),
                description=d.get("description", ""),
                source=d.get("source", ""),
                published=dict(d.get("published", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"malformed configuration record: {exc}") from exc


def _dataclass_from_dict(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    kwargs = {}
    for key, value in d.items():
        kwargs[key] = _coerce(value, _field_type(cls, key), key)
    return cls(**kwargs)


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (often a string from the command line) to ``annotation``."""
    if annotation is Precision:
        return Precision.parse(value, option=key)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        if isinstance(value, str) and value not in args:
            for a in args:
                if str(a) == value:
                    return a
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() == "none")
        if is_none and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: cannot interpret {value!r} as {annotation}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        item_type = args[0] if args else str
        return tuple(_coerce(v, item_type, key) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if annotation is str:
        return str(value)
    return value


def parse_assignments(items: list[str]) -> dict[str, str]:
    """Parse ``["batch_size=4", "lr=1e-5"]`` into a dict (values stay strings)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, Config] = {}


def register(config: Config) -> Config:
    if config.name in _REGISTRY:
        raise ConfigError(f"configuration {config.name!r} is registered twice")
    _REGISTRY[config.name] = config
    return config


def get_config(name: str) -> Config:
    """The registered configuration ``name`` (see :func:`list_models`)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; available: {', '.join(list_models())}"
        ) from None


def list_models(task: str | None = None, official: bool | None = None) -> list[str]:
    """Names of the registered configurations, optionally filtered by task / origin."""
    names = []
    for name, cfg in _REGISTRY.items():
        if task is not None and cfg.task != task:
            continue
        if official is not None and (cfg.source.startswith("vvvb-github")) != official:
            continue
        names.append(name)
    return names


# ------------------------------------------------------------------ released weights
@dataclass(frozen=True)
class ReleasedWeights:
    """A published weight file: where it is, what it is, what it reproduces (a model card).

    ``avsegformer download NAME`` / :func:`avsegformer.hub.download` fetch it into the
    cache and verify it (size and sha256 where recorded, then a strict load into
    ``config``) before first use.

    Attributes:
        name: registry name (``avsegformer download NAME``): the configuration's name for
            whole models, ``resnet50`` / ``pvt_v2_b5`` / ``vggish`` for backbone files.
        file_name: the name it has in the cache.
        config: the configuration it is loaded into (strictly) to verify it.
        target: ``""`` for a whole model, else the sub-module it fills
            (``"backbone"``, ``"vggish"``).
        urls: download sources, tried in order: plain HTTP(S) URLs, Google Drive file
            links (``/file/d/ID/view``) or a Drive folder holding ``file_name``.
        page: where it is published, for people (the page that links it).
        description: one line.
        reproduces: what its published numbers are and their conventions (split,
            resolution, metric), or what the file is for.
        published: the published scores (fractions in [0, 1]).
        licence: its terms, as far as they are known.
        size: bytes, once measured (``None``: not yet recorded).
        sha256: hex digest, once measured (``None``: not yet recorded).
        notes: anything else a user should know (how a folder link is resolved...).
    """

    name: str
    file_name: str
    config: str
    target: str
    urls: tuple[str, ...]
    page: str
    description: str
    reproduces: str
    published: dict[str, float] = field(default_factory=dict)
    licence: str = "unknown"
    size: int | None = None
    sha256: str | None = None
    notes: str = ""


_WEIGHTS: dict[str, ReleasedWeights] = {}


def register_weights(weights: ReleasedWeights) -> ReleasedWeights:
    if weights.name in _WEIGHTS:
        raise ConfigError(f"released weights {weights.name!r} are registered twice")
    _WEIGHTS[weights.name] = weights
    return weights


def list_weights() -> list[str]:
    """Names of the released weight files (``avsegformer download NAME``)."""
    return list(_WEIGHTS)


def get_weights(name: str) -> ReleasedWeights:
    """The released weights ``name`` (a model with published weights, or a backbone file)."""
    try:
        return _WEIGHTS[name]
    except KeyError:
        raise ConfigError(
            f"no released weights named {name!r}; available: {', '.join(list_weights())}"
        ) from None


def weights_for_config(name: str) -> ReleasedWeights | None:
    """The released whole-model weights of configuration ``name``, if it has any."""
    for weights in _WEIGHTS.values():
        if weights.config == name and not weights.target:
            return weights
    return None


_AUTHORS = "vvvb-github/AVSegFormer@7083cb6 (authors' release)"


_AUTHORS_PAGE = "https://github.com/vvvb-github/AVSegFormer#3-download-pre-trained-models"
_AUTHORS_LICENCE = "see vvvb-github/AVSegFormer (no licence file)"
# What each task's published numbers are (shared/spec/metrics.md §4-5).
_REPRODUCES = {
    "s4": "AVSBench S4 test split at 512 x 512 (frames upsampled from 224, masks nearest); "
    "mIoU averaged per batch; F-score (beta^2 = 0.3) with its threshold maximised per "
    "group of 2 videos (the release's test batch): `avsegformer test` defaults",
    "ms3": "AVSBench MS3 test split at 512 x 512 (frames upsampled from 224, masks "
    "nearest); mIoU averaged per batch; F-score (beta^2 = 0.3) with its threshold "
    "maximised per group of 2 videos: `avsegformer test` defaults",
    "avss": "AVSBench AVSS (AVSBench-semantic) test split at 224 x 224; mIoU and F-score "
    "over the 71 classes, background included, accumulated over the whole split: "
    "`avsegformer test` defaults",
}


# The authors' classes, data and schedule settings of each task (their configs).
_AUTHORS_RECIPES: dict[str, tuple[int, DataConfig, TrainConfig]] = {
    "s4": (
        1,
        DataConfig(task="s4", img_size=512, frames_per_clip=5),
        TrainConfig(epochs=30, freeze_backbone_epochs=5, batch_size=2, eval_batch_size=2),
    ),
    "ms3": (
        1,
        DataConfig(task="ms3", img_size=512, frames_per_clip=5),
        TrainConfig(epochs=60, freeze_backbone_epochs=10, batch_size=2, eval_batch_size=2),
    ),
    "avss": (
        71,
        DataConfig(task="avss", img_size=224, frames_per_clip=10),
        TrainConfig(
            epochs=30,
            freeze_backbone_epochs=0,
            batch_size=4,
            eval_batch_size=4,
            eval_start_epoch=10,
            eval_every=2,
        ),
    ),
}


def _official(
    name: str,
    backbone: str,
    task: str,
    published: dict[str, float],
    description: str,
    file_name: str,
    drive_link: str,
) -> Config:
    channels = RESNET50_CHANNELS if backbone == "res50" else PVT_V2_B5_CHANNELS
    num_classes, data, train = _AUTHORS_RECIPES[task]
    model = ModelConfig(backbone=backbone, in_channels=channels, num_classes=num_classes)
    config = register(
        Config(
            name=name,
            model=model,
            data=data,
            train=train,
            description=description,
            source=_AUTHORS,
            published=published,
        )
    )
    register_weights(
        ReleasedWeights(
            name=name,
            file_name=file_name,
            config=name,
            target="",
            urls=(drive_link,),
            page=_AUTHORS_PAGE,
            description=f"{description}: the authors' released checkpoint",
            reproduces=_REPRODUCES[task],
            published=dict(published),
            licence=_AUTHORS_LICENCE,
            notes="a plain torch.save'd state dict, read with torch.load(weights_only=True); "
            "the authors' README also links the folder holding all six: "
            "https://drive.google.com/drive/folders/1ZYZOWAfoXcGPDsocswEN7ZYvcAn4H8kY",
        )
    )
    return config


_official(
    "res50_s4",
    "res50",
    "s4",
    {"miou": 0.7638, "fscore": 0.867},
    "AVSegFormer, ResNet-50, AVSBench S4 (single source)",
    "S4_res50_best.pth",
    "https://drive.google.com/file/d/1nvIfR-1XZ_BgP8ZSUDuAsGhAwDJRxgC3/view",
)
_official(
    "pvt2_s4",
    "pvt_v2_b5",
    "s4",
    {"miou": 0.8306, "fscore": 0.905},
    "AVSegFormer, PVTv2-B5, AVSBench S4 (single source)",
    "S4_pvt_best.pth",
    "https://drive.google.com/file/d/1ZJ55jxoHP1ur-hLBkGcha8sjptE_shfw/view",
)
_official(
    "res50_ms3",
    "res50",
    "ms3",
    {"miou": 0.5381, "fscore": 0.656},
    "AVSegFormer, ResNet-50, AVSBench MS3 (multiple sources)",
    "MS3_res50_best.pth",
    "https://drive.google.com/file/d/1MRk5gQnUtiWwYDpPfB20fO07SVLhfuIV/view",
)
_official(
    "pvt2_ms3",
    "pvt_v2_b5",
    "ms3",
    {"miou": 0.6133, "fscore": 0.730},
    "AVSegFormer, PVTv2-B5, AVSBench MS3 (multiple sources)",
    "MS3_pvt_best.pth",
    "https://drive.google.com/file/d/1iKTxWtehAgCkNVty-4H1zVyAOaNxipHv/view",
)
_official(
    "res50_avss",
    "res50",
    "avss",
    {"miou": 0.2658, "fscore": 0.315},
    "AVSegFormer, ResNet-50, AVSBench AVSS (semantic, 71 classes)",
    "AVSS_res50_best.pth",
    "https://drive.google.com/file/d/1RvL6psDsINuUwd9V1ESgE2Kixh9MXIke/view",
)
_official(
    "pvt2_avss",
    "pvt_v2_b5",
    "avss",
    {"miou": 0.3731, "fscore": 0.428},
    "AVSegFormer, PVTv2-B5, AVSBench AVSS (semantic, 71 classes)",
    "AVSS_pvt_best.pth",
    "https://drive.google.com/file/d/1P8a2dJSUoW0EqFyxyP8B1-Rnscxnh0YY/view",
)


# The pretrained parts the authors' training starts from, as AVSBench publishes them
# (one Drive folder; gdown lists it and fetches the file of that name).
_AVSBENCH_BACKBONES = "https://drive.google.com/drive/folders/1386rcFHJ1QEQQMF6bV1rXJTzy8v26RTV"
_AVSBENCH_PAGE = "https://github.com/OpenNLPLab/AVSBench (pretrained_backbones/readme.txt)"
_FOLDER_NOTE = (
    "the AVSBench link is a Google Drive folder (resnet50, pvt_v2_b5 and vggish files): "
    "`avsegformer download` lists it with gdown and fetches the file named {file}; by "
    "hand, open the folder link and download {file}"
)
register_weights(
    ReleasedWeights(
        name="resnet50",
        file_name="resnet50-19c8e357.pth",
        config="res50_s4",
        target="backbone",
        urls=("https://download.pytorch.org/models/resnet50-19c8e357.pth", _AVSBENCH_BACKBONES),
        page=_AVSBENCH_PAGE,
        description="ResNet-50 ImageNet weights (torchvision names), the res50_* starting point",
        reproduces="initial visual backbone of the res50_* trainings "
        "(`avsegformer train res50_s4 --pretrained resnet50-19c8e357.pth ...`)",
        licence="torchvision's ImageNet weights: see pytorch/vision (BSD-3-Clause code "
        "licence; terms of the weights not verified here)",
        notes="PyTorch publishes the same file name at download.pytorch.org (tried first: "
        "plain HTTPS, resumable); " + _FOLDER_NOTE.format(file="resnet50-19c8e357.pth"),
    )
)
register_weights(
    ReleasedWeights(
        name="pvt_v2_b5",
        file_name="pvt_v2_b5.pth",
        config="pvt2_s4",
        target="backbone",
        urls=(_AVSBENCH_BACKBONES,),
        page=_AVSBENCH_PAGE,
        description="PVTv2-B5 ImageNet weights, the pvt2_* starting point",
        reproduces="initial visual backbone of the pvt2_* trainings "
        "(`avsegformer train pvt2_s4 --pretrained pvt_v2_b5.pth ...`)",
        licence="see whai362/PVT (PVTv2's authors; not verified here)",
        notes=_FOLDER_NOTE.format(file="pvt_v2_b5.pth"),
    )
)
register_weights(
    ReleasedWeights(
        name="vggish",
        file_name="vggish-10086976.pth",
        config="res50_s4",
        target="vggish",
        urls=(_AVSBENCH_BACKBONES,),
        page=_AVSBENCH_PAGE,
        description="VGGish audio encoder (torchvggish port of Google's AudioSet VGGish)",
        reproduces="the frozen audio encoder of all six published models",
        licence="see harritaylor/torchvggish and tensorflow/models research/audioset "
        "(not verified here)",
        notes=_FOLDER_NOTE.format(file="vggish-10086976.pth"),
    )
)


# ---------------------------------------------------------------- light CPU models
# The project's own configurations: the AVSegFormer architecture at a size a 2-core CPU
# trains in minutes (synthetic benchmark). A light ResNet of basic blocks replaces the
# visual backbone, a narrow trainable CNN replaces VGGish, and the head keeps its
# structure with fewer, narrower layers. No pretrained weights exist for them.
_TINY_MODEL = ModelConfig(
    backbone="resnet_basic",
    in_channels=(32, 64, 128, 256),
    backbone_widths=(32, 64, 128, 256),
    backbone_depths=(1, 1, 1, 1),
    embed_dim=64,
    query_num=16,
    num_heads=4,
    num_levels=3,
    num_points=4,
    encoder_layers=2,
    decoder_layers=2,
    ffn_dim=256,
    dropout=0.0,
    generator_layers=2,
    generator_ffn_dim=256,
    mlp_hidden_dim=128,
    gn_groups=8,
    mask_head_widths=(16, 8),
    audio_encoder="audio_cnn",
    audio_widths=(16, 32, 64, 128),
    audio_dim=128,
    freeze_audio=False,
    drop_path_rate=0.0,
    keep_unused_modules=False,
)


def _tiny(name: str, task: str, frames: int, batch_size: int, description: str) -> Config:
    num_classes = _AUTHORS_RECIPES[task][0]
    return register(
        Config(
            name=name,
            model=replace(_TINY_MODEL, num_classes=num_classes),
            data=DataConfig(task=task, img_size=128, frames_per_clip=frames),
            train=TrainConfig(
                epochs=3,
                freeze_backbone_epochs=0,
                batch_size=batch_size,
                eval_batch_size=batch_size,
                # Probed on synth-S4 (loss after 800 steps): 2e-3 and 1e-3 train far
                # slower than 2.5e-4 and 1.2e-4.
                lr=2e-4,
                weight_decay=1e-4,
                scheduler="cosine",
                warmup_steps=20,
                precision="fp32",
                # S4 train labels frame 1 of 5: feeding only it gives the same loss for
                # a fifth of the compute (the authors feed all five).
                train_frames="labelled",
                num_workers=1,
            ),
            description=description,
            source="avsegformer (project configuration, trained from scratch)",
        )
    )


_tiny("tiny_s4", "s4", 5, 8, "light CPU AVSegFormer, single-source segmentation (S4 layout)")
_tiny("tiny_ms3", "ms3", 5, 2, "light CPU AVSegFormer, multi-source segmentation (MS3 layout)")
_tiny("tiny_avss", "avss", 10, 2, "light CPU AVSegFormer, semantic segmentation (AVSS, 71 classes)")
