"""Reading and writing model weights.

Formats read (detected from the file's content, not its name):

* **avsegformer** (ours): safetensors whose metadata records the configuration, free
  JSON metadata and optional extra tensors (e.g. optimizer state). Tensors are stored
  as ``model.<key>`` and ``extra.<name>``. Written atomically by
  :func:`save_checkpoint`.
* **the authors' checkpoints** (``S4_res50_best.pth`` ...): a plain ``torch.save``d
  state dict (``module.`` prefixes tolerated), read with ``torch.load(weights_only=True)``
  so no arbitrary object is ever unpickled.
* **pretrained parts** used by the authors' training, loaded into the matching
  sub-module only: torchvision ResNet-50 (``resnet50-19c8e357.pth``; ``layer3``/``layer4``
  fill both branches, ``fc`` ignored), PVTv2 (``pvt_v2_b5.pth``; classifier ``head``
  ignored) and VGGish (``vggish-10086976.pth``).
* any other safetensors file holding a state dict in one of the layouts above.

A file that does not fit the model raises :class:`CheckpointMismatchError` listing the
missing, unexpected and shape-mismatched keys; nothing is loaded in that case.

Every file is checked before it is trusted: a configuration recorded in our format must
describe the file's own tensors (compared, shape by shape, with the model built on the
``meta`` device, which allocates nothing), so a damaged or crafted record cannot make a
builder allocate gigabytes; tensors holding NaN or infinite values raise
:class:`NonFiniteCheckpointError`; and :func:`build_model_from_checkpoint` compares the
file with the model on the ``meta`` device before building it for real.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .configuration import resolve_config
from .errors import (
    CheckpointError,
    CheckpointMismatchError,
    ConfigError,
    NonFiniteCheckpointError,
)
from .fileio import atomic_path
from .finite import non_finite_count
from .modeling.backbones.registry import BackboneSpec, registered_backbones
from .modeling.build import build_model
from .zoo import Config, ModelConfig, get_config, list_models

logger = logging.getLogger(__name__)

FORMAT_NAME = "avsegformer"
FORMAT_VERSION = "1"
MODEL_PREFIX = "model."
EXTRA_PREFIX = "extra."

# Modules of the authors' network that its forward never uses. A model built without
# them (``keep_unused_modules=False``) may still load the authors' files: these entries
# are skipped (and reported) instead of counting as unexpected.
UNUSED_PREFIXES = ("backbone.layer3_2.", "backbone.layer4_2.", "head.fpn.", "head.attn_fc.")

_SHOWN = 5  # keys shown per category in error messages

# Bounds on a configuration recorded in a file, checked before even a meta-device build:
# layer counts run Python loops at build time, widths size every weight, and img_size
# sizes every frame the pipelines make. Far above any real model (res50: 6 layers, 2048
# wide, 512 px).
# Model settings that change training only: a file recording other values still holds
# the same network (no note when they differ).
_TRAINING_ONLY = ("keep_unused_modules", "drop_path_rate", "dropout", "freeze_audio")

StateDict = dict[str, torch.Tensor]
Shapes = dict[str, tuple[int, ...]]


@dataclass
class CheckpointContents:
    """Everything a checkpoint file holds.

    Attributes:
        state_dict: model tensors, keys as in the file (``module.`` stripped).
        config: the configuration recorded in our format, else ``None``.
        metadata: free JSON metadata recorded in our format (``{}`` otherwise).
        extra_tensors: tensors saved next to the model (``{}`` otherwise).
        format: ``"avsegformer"``, ``"torch"`` (a ``torch.save``d dict) or
            ``"safetensors"`` (a foreign safetensors file).
    """

    state_dict: StateDict
    config: Config | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra_tensors: StateDict = field(default_factory=dict)
    format: str = "torch"


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did.

    Attributes:
        path: the file.
        format: file format (see :class:`CheckpointContents`).
        layout: ``"model"`` (a whole AVSegFormer) or the pretrained part it held:
            ``"torchvision_resnet50"``, ``"pvt_v2"``, ``"vggish"``.
        target: the sub-module loaded (``""`` = whole model, ``"backbone"``, ``"vggish"``).
        loaded: number of tensors copied into the model.
        ignored: file entries deliberately skipped (classifier heads, unused modules).
        missing: model entries the file lacked (only possible with ``strict=False``).
        unexpected: file entries the model lacks (only possible with ``strict=False``).
        config_name: configuration recorded in the file, if any.
    """

    path: str
    format: str
    layout: str
    target: str
    loaded: int
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    config_name: str | None = None

    def __str__(self) -> str:
        where = f"into {self.target!r}" if self.target else "into the model"
        text = (
            f"loaded {self.loaded} tensors ({self.layout}, {self.format}) from {self.path} {where}"
        )
        for label, keys in (
            ("ignored", self.ignored),
            ("missing", self.missing),
            ("unexpected", self.unexpected),
        ):
            if keys:
                text += f"; {label} {len(keys)}: {_preview(keys)}"
        return text


# ----------------------------------------------------------------------------- reading
def _preview(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def _sniff(path: Path) -> str:
    """``"safetensors"``, ``"torch"`` or ``"unknown"`` from the first bytes of the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
    # safetensors first: its 8-byte header length may well start with 0x80 too.
    if len(head) == 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len <= size - 8:
            return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"  # zip archive of torch.save, or a legacy pickle stream
    return "unknown"


def _strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _read_torch(path: Path) -> StateDict:
    try:
        mmap = zipfile.is_zipfile(path)  # memory-map new-style archives: no second copy
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a readable file"
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); only plain state dicts of "
            "tensors are accepted (weights_only loading)"
        ) from None
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(
            f"{path} is a dict but not a state dict (some entries are not tensors); "
            "save model.state_dict() or use avsegformer.save_checkpoint"
        )
    return _strip_module_prefix(tensors)


def _read_safetensors(path: Path) -> CheckpointContents:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())  # noqa: SIM118 - not a dict
            # Shapes come from the header: nothing is read before the record is checked.
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
            ours = meta.get("format") == FORMAT_NAME
            config = _recorded_config(path, meta) if ours else None
            if config is not None:
                model_shapes = {
                    k[len(MODEL_PREFIX) :]: v
                    for k, v in shapes.items()
                    if k.startswith(MODEL_PREFIX)
                }
                check_recorded_config(path, config, model_shapes)
            tensors = {k: f.get_tensor(k) for k in keys}
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several error types
        raise CheckpointError(f"cannot read {path} as safetensors ({exc})") from None
    if not ours:
        return CheckpointContents(_strip_module_prefix(tensors), format="safetensors")
    try:
        user_meta = json.loads(meta.get("metadata", "{}"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: malformed avsegformer metadata ({exc})") from None
    state = {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    extra = {k[len(EXTRA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    return CheckpointContents(state, config, user_meta, extra, format=FORMAT_NAME)


def _recorded_config(path: Path, meta: Mapping[str, str]) -> Config | None:
    """The configuration our format records in the header (``None`` if it records none)."""
    if not meta.get("config"):
        return None
    try:
        return Config.from_dict(json.loads(meta["config"]))
    except ConfigError as exc:  # values outside the configuration's limits
        raise CheckpointError(
            f"{path} records an impossible configuration ({exc}); the file is damaged or "
            "not a real checkpoint"
        ) from None
    # A damaged or hand-made record: any of these, never a traceback.
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: malformed avsegformer metadata ({exc})") from None


def check_recorded_config(path: str | os.PathLike[str], config: Config, shapes: Shapes) -> None:
    """Check that ``config`` (recorded in ``path``) describes the file's model tensors.

    The model is built on the ``meta`` device (no memory) and its state-dict shapes are
    compared with ``shapes`` (``{key: shape}``, without the ``model.`` prefix); entries
    of the modules the forward never uses (:data:`UNUSED_PREFIXES`) are left out on both
    sides. Nothing of the configuration's size is allocated.

    Raises:
        CheckpointError: the configuration cannot be built.
        CheckpointMismatchError: keys or shapes differ (the message names them).
    """
    path = Path(path)
    try:
        meta_model = build_model(config, device="meta")
    except Exception as exc:  # noqa: BLE001 - a hand-made record can upset any builder
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} records a configuration {config.name!r} that cannot be built ({first})"
        ) from None
    expected = {
        k: tuple(v.shape)
        for k, v in meta_model.state_dict().items()
        if not k.startswith(UNUSED_PREFIXES)
    }
    found = {k: v for k, v in shapes.items() if not k.startswith(UNUSED_PREFIXES)}
    missing, unexpected, mismatched = _compare_shapes(expected, found)
    if missing or unexpected or mismatched:
        lines = [
            f"{path}: the configuration it records ({config.name!r}) does not describe its "
            f"tensors (entries: {_counts(missing, unexpected, mismatched)}); the file is "
            "damaged or its record was edited",
            *_detail_lines(missing, unexpected, mismatched, "configuration"),
        ]
        raise CheckpointMismatchError(
            "\n".join(lines), missing=missing, unexpected=unexpected, mismatched=mismatched
        )


def _require_finite_tensors(path: Path, groups: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Raise :class:`NonFiniteCheckpointError` if any floating tensor holds NaN or inf.

    ``groups`` maps a key prefix (``""``, ``"extra."``) to tensors; one reduction each.
    """
    counts: dict[str, int] = {}
    total = 0
    for prefix, tensors in groups.items():
        for key, tensor in tensors.items():
            total += 1
            bad = non_finite_count(tensor)
            if bad:
                counts[prefix + key] = bad
    if counts:
        shown = ", ".join(f"{k} ({n} values)" for k, n in list(counts.items())[:_SHOWN])
        more = f", ... (+{len(counts) - _SHOWN} more)" if len(counts) > _SHOWN else ""
        raise NonFiniteCheckpointError(
            f"{path}: {len(counts)} of {total} tensors hold NaN or infinite values "
            f"({shown}{more}); the weights are unusable (a diverged training run or a "
            "damaged file): use an earlier checkpoint",
            counts,
        )


def require_checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is a file.

    Raises:
        CheckpointError: it does not exist, or it is a folder (the message lists the
            checkpoint files in it, e.g. a training run's ``best.safetensors``).
    """
    path = Path(path)
    if path.is_dir():
        try:
            inside = sorted(
                p.name
                for p in path.iterdir()
                if p.suffix in (".safetensors", ".pth", ".pt") and p.is_file()
            )
        except OSError:
            inside = []
        raise CheckpointError(
            f"{path} is a folder, not a checkpoint file",
            hint=f"it holds {_preview(inside)}: name one of them" if inside else None,
        )
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint file not found" if not path.exists() else f"not a file: {path}"
        )
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> CheckpointContents:
    """Read any supported checkpoint file without building a model.

    A configuration recorded in our format is checked against the file's tensor shapes
    (on the ``meta`` device, before the tensors are read), and every tensor must be
    finite.

    Raises:
        CheckpointError: the file is missing, a folder, unreadable, corrupt or not a
            checkpoint; or it records an impossible configuration.
        CheckpointMismatchError: the recorded configuration does not describe the tensors.
        NonFiniteCheckpointError: some tensors hold NaN or infinite values.
    """
    path = require_checkpoint_file(path)
    kind = _sniff(path)
    if kind == "safetensors":
        contents = _read_safetensors(path)
    elif kind == "torch":
        contents = CheckpointContents(_read_torch(path), format="torch")
    else:
        raise CheckpointError(
            f"{path} is not a checkpoint: neither a PyTorch file (.pth) nor safetensors"
        )
    _require_finite_tensors(path, {"": contents.state_dict, "extra.": contents.extra_tensors})
    return contents


# ----------------------------------------------------------------------------- layouts
def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Which network a state dict belongs to (``"model"`` or a pretrained part).

    Backbone weight files are recognised by the registered backbones (their
    ``pretrained_layout``, e.g. ``"torchvision_resnet50"``, ``"pvt_v2"``).
    """
    keys = set(state)
    # Pretrained parts first: a PVTv2 ImageNet file has a top-level classifier "head.*".
    spec = _backbone_file_spec(keys)
    if spec is not None:
        return spec.pretrained_layout
    if {"features.0.weight", "embeddings.0.weight"} <= keys:
        return "vggish"
    if any(k.startswith(("backbone.", "head.", "vggish.", "audio_proj.")) for k in keys):
        return "model"
    return "unknown"


def _backbone_file_spec(keys: set[str]) -> BackboneSpec | None:
    """The registered backbone whose pretrained weight files have these keys."""
    for spec in registered_backbones():
        if spec.recognises is not None and spec.recognises(keys):
            return spec
    return None


def describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """A short human description (backbone, audio encoder, classes) for error messages."""
    layout = detect_layout(state)
    if layout != "model":
        return f"a {layout} file" if layout != "unknown" else "an unknown layout"
    backbone = "unrecognised"
    for spec in registered_backbones():
        if spec.signature_key and f"backbone.{spec.signature_key}" in state:
            backbone = f"{spec.title} ({spec.name})"
            break
    audio = "VGGish" if "vggish.embeddings.0.weight" in state else "light audio CNN"
    fc = state.get("head.fc.4.weight")
    classes = f"{fc.shape[0]} class(es)" if fc is not None else "unknown classes"
    return f"an AVSegFormer with backbone {backbone}, {audio} audio encoder, {classes}"


def _suggest_configs(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Registered configurations whose state-dict shapes match ``state``."""
    own = {k: tuple(v.shape) for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    matches = []
    for name in list_models():
        try:
            reference = build_model(name, device="meta").state_dict()
        except Exception:  # noqa: BLE001 - a broken registration must not hide the real error
            continue
        ref = {k: tuple(v.shape) for k, v in reference.items() if not k.startswith(UNUSED_PREFIXES)}
        if not any(_compare_shapes(ref, own)):
            matches.append(name)
    return matches


def _weights_hint(contents: CheckpointContents) -> str:
    """Which registered configurations a file's weights fit, in words (for messages)."""
    candidates = _suggest_configs(contents.state_dict)
    if candidates:
        return f"it matches: {', '.join(candidates)}"
    return f"it holds {describe_state_dict(contents.state_dict)} ({contents.format} file)"


def _compare_shapes(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """``(missing, unexpected, mismatched)`` of ``found`` against ``expected`` (sorted;
    ``mismatched`` holds ``(key, found shape, expected shape)``)."""
    missing = sorted(k for k in expected if k not in found)
    unexpected = sorted(k for k in found if k not in expected)
    mismatched = [
        (k, tuple(found[k]), tuple(expected[k]))
        for k in sorted(expected.keys() & found.keys())
        if tuple(found[k]) != tuple(expected[k])
    ]
    return missing, unexpected, mismatched


def _counts(missing: list, unexpected: list, mismatched: list) -> str:
    return ", ".join(
        f"{n} {what}"
        for n, what in (
            (len(missing), "missing"),
            (len(unexpected), "unexpected"),
            (len(mismatched), "of another shape"),
        )
        if n
    )


def _detail_lines(
    missing: list[str],
    unexpected: list[str],
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    other: str,
) -> list[str]:
    """The lines listing offending keys (shown with ``-v`` on the command line)."""
    lines = []
    if missing:
        lines.append(f"  missing in file ({len(missing)}): {_preview(missing)}")
    if unexpected:
        lines.append(f"  unexpected in file ({len(unexpected)}): {_preview(unexpected)}")
    if mismatched:
        shown = ", ".join(f"{k} {a} vs {other} {b}" for k, a, b in mismatched[:_SHOWN])
        more = f" (+{len(mismatched) - _SHOWN} more)" if len(mismatched) > _SHOWN else ""
        lines.append(f"  shape mismatch ({len(mismatched)}): {shown}{more}")
    return lines


def _map_part(
    layout: str, state: StateDict, model: nn.Module
) -> tuple[str, StateDict, list[str], list[str]]:
    """Map a pretrained-part file onto a sub-module.

    Backbone files go through the key filter of the backbone that registered their
    layout. Returns ``(target, state in the target's names, ignored keys, unused file
    keys)``.
    """
    if layout == "vggish":
        return "vggish", dict(state), [], []
    spec = _backbone_file_spec(set(state))
    if spec is None or spec.checkpoint_filter is None or spec.pretrained_layout != layout:
        raise AssertionError(layout)
    backbone = getattr(model, "backbone", None)
    own_keys = list(backbone.state_dict(keep_vars=True)) if backbone is not None else []
    mapped = spec.checkpoint_filter(state, own_keys)
    return "backbone", dict(mapped.state), list(mapped.ignored), list(mapped.unused)


def _plan(
    model: nn.Module,
    contents: CheckpointContents,
    path: Path,
    strict: bool,
    expect_target: str | None = None,
) -> tuple[LoadReport, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Match the file's entries with the model's, copying nothing.

    Returns the report and the ``(model tensor, file tensor)`` pairs to copy. Works on a
    model built on the ``meta`` device (shapes only), which is how
    :func:`build_model_from_checkpoint` checks a file before allocating the model.
    """
    state = contents.state_dict
    layout = detect_layout(state)
    ignored: list[str] = []
    unused: list[str] = []
    if layout == "unknown":
        raise CheckpointMismatchError(
            f"{path}: unrecognised state-dict layout (first keys: {_preview(sorted(state))}); "
            "expected an AVSegFormer checkpoint or a ResNet-50 / PVTv2 / VGGish weight file",
            unexpected=sorted(state),
        )
    if layout == "model":
        target = ""
        module = model
    else:
        target, state, ignored, unused = _map_part(layout, state, model)
    if expect_target is not None and target != expect_target:
        hint = (
            "it is a whole-model checkpoint: use avsegformer.load_checkpoint(model, path)"
            if layout == "model"
            else f"it holds {layout} weights for the model's {target!r}"
        )
        raise CheckpointMismatchError(f"{path} is not a {expect_target} weight file: {hint}")
    if layout != "model":
        module = getattr(model, target, None)
        if module is None:
            raise CheckpointMismatchError(f"{path}: the model has no {target!r} to load into")
    own = module.state_dict(keep_vars=True)
    if layout == "model":
        skip = sorted(k for k in state if k not in own and k.startswith(UNUSED_PREFIXES))
        ignored += skip
        state = {k: v for k, v in state.items() if k not in skip}
    missing, unexpected, mismatched = _compare_shapes(
        {k: tuple(v.shape) for k, v in own.items()},
        {k: tuple(v.shape) for k, v in state.items()},
    )
    unexpected = sorted(unexpected + unused)
    if mismatched or (strict and (missing or unexpected)):
        where = f"the model's {target!r}" if target else "the model"
        counts = _counts(missing, unexpected, mismatched)
        first = f"{path} does not fit {where} (entries: {counts})"
        hint = cli_hint = None
        if layout == "model":
            first = (
                f"{path} does not fit the model: the file holds "
                f"{describe_state_dict(state)}; the model is "
                f"{describe_state_dict(model.state_dict())} (entries: {counts})"
            )
            hint = "build the checkpoint's own model: avsegformer.build_model_from_checkpoint"
            cli_hint = "name the configuration the checkpoint was trained as"
        raise CheckpointMismatchError(
            "\n".join([first, *_detail_lines(missing, unexpected, mismatched, "model")]),
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
            hint=hint,
            cli_hint=cli_hint,
        )
    pairs = [(tensor, state[key]) for key, tensor in own.items() if key in state]
    report = LoadReport(
        path=str(path),
        format=contents.format,
        layout=layout,
        target=target,
        loaded=len(pairs),
        ignored=ignored,
        missing=missing,
        unexpected=unexpected,
        config_name=contents.config.name if contents.config else None,
    )
    return report, pairs


def configuration_differences(recorded: Config, model: Config) -> list[str]:
    """How the configuration a file records differs from the model's, in words.

    Empty when the names, tasks and networks agree (settings that only change training,
    :data:`_TRAINING_ONLY`, are not compared; nor is ``img_size`` under the same name,
    which users override on purpose).
    """
    differences = []
    if recorded.task != model.task:
        differences.append(f"task {recorded.task} vs {model.task}")
    for item in dataclasses.fields(ModelConfig):
        if item.name in _TRAINING_ONLY:
            continue
        mine, theirs = getattr(recorded.model, item.name), getattr(model.model, item.name)
        if item.name == "in_channels" and not (mine and theirs):
            continue  # empty: the backbone's own channels (the backbone is compared)
        if mine != theirs:
            differences.append(f"{item.name} {mine} vs {theirs}")
    if recorded.name != model.name and recorded.data.img_size != model.data.img_size:
        differences.append(f"img_size {recorded.data.img_size} vs {model.data.img_size}")
    if recorded.name != model.name and not differences:
        differences.append("same network and task")
    return differences


def _note_other_configuration(model: nn.Module, contents: CheckpointContents, path: Path) -> None:
    """Warn when the file records another configuration than the model was built as."""
    recorded, built = contents.config, getattr(model, "config", None)
    if recorded is None or not isinstance(built, Config):
        return
    differences = configuration_differences(recorded, built)
    if differences:
        logger.warning(
            "%s records the configuration %r, but the model was built as %r (file vs "
            "model: %s); its weights fit and are loaded",
            path, recorded.name, built.name, "; ".join(differences),
        )  # fmt: skip


def _apply(
    model: nn.Module,
    contents: CheckpointContents,
    path: Path,
    strict: bool,
    expect_target: str | None = None,
) -> LoadReport:
    report, pairs = _plan(model, contents, path, strict, expect_target)
    if report.layout == "model":
        _note_other_configuration(model, contents, path)
    with torch.no_grad():
        for tensor, source in pairs:
            tensor.copy_(source)
    return report


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    strict: bool = True,
    expect_target: str | None = None,
) -> LoadReport:
    """Load weights from ``path`` into ``model`` (in place), detecting the format.

    Args:
        model: an :class:`~avsegformer.AVSegFormer`.
        path: our safetensors file, an authors' ``.pth`` or a pretrained-part file
            (ResNet-50 / PVTv2 / VGGish), which goes into the matching sub-module.
        strict: require the file to provide exactly the target's entries. With
            ``False`` missing and unexpected entries are reported instead; shape
            mismatches always raise.
        expect_target: the sub-module the file must be for (``"backbone"``,
            ``"vggish"``); another kind of file raises before anything is loaded.

    A file recording another configuration than ``model.config`` (another name, task
    or network setting) is loaded when its tensors fit, with a logged warning naming both.

    Raises:
        CheckpointError: unreadable, corrupt, a folder or not a checkpoint.
        CheckpointMismatchError: keys or shapes do not fit (nothing is loaded).
        NonFiniteCheckpointError: the file holds NaN or infinite values (nothing is loaded).
    """
    path = Path(path)
    report = _apply(model, read_checkpoint(path), path, strict, expect_target)
    logger.debug("%s", report)
    return report


# ----------------------------------------------------------------------------- writing
def _json_dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{what} must be JSON-serialisable: {exc}") from None


def save_checkpoint(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    config: Config | str | None = None,
    metadata: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write weights in our safetensors format, atomically (temporary file + rename).

    Args:
        model_or_state_dict: a model (its ``state_dict()``) or a state dict.
        path: destination (conventionally ``*.safetensors``); parent folders are created.
        config: configuration to record (a :class:`Config` or a registered name);
            defaults to ``model.config`` when a model built by ``build_model`` is given.
        metadata: JSON-serialisable values (epoch, metrics, optimizer hyper-parameters...).
        extra_tensors: other named tensors to store (e.g. flattened optimizer state),
            returned by :func:`read_checkpoint` as ``extra_tensors``.

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
        if config is None:
            config = getattr(model_or_state_dict, "config", None)
    else:
        state = dict(model_or_state_dict)
    if isinstance(config, str):
        config = get_config(config)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "torch_version": torch.__version__,
    }
    if config is not None:
        header["config"] = config.to_json()
        header["config_name"] = config.name
    header["metadata"] = _json_dumps(dict(metadata or {}), "metadata")

    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for prefix, group in ((MODEL_PREFIX, state), (EXTRA_PREFIX, extra_tensors or {})):
        for key, value in group.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{prefix}{key} is a {type(value).__name__}, not a tensor")
            tensor = value.detach().to("cpu").contiguous()
            # safetensors refuses tensors sharing memory: give each its own storage.
            pointer = tensor.untyped_storage().data_ptr()
            if pointer in seen and tensor.numel():
                tensor = tensor.clone()
            seen.add(tensor.untyped_storage().data_ptr())
            tensors[prefix + key] = tensor

    with atomic_path(path) as temporary:
        try:
            save_file(tensors, str(temporary), metadata=header)
        except Exception as exc:  # safetensors reports OS errors (disk full) as its own
            code = re.search(r"os error (\d+)", str(exc))
            if code is None:
                raise
            errno_ = int(code[1])
            raise OSError(errno_, os.strerror(errno_), str(path)) from None
    return path


# ----------------------------------------------------------------------------- building
def build_model_from_checkpoint(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    strict: bool = True,
    device: torch.device | str | None = None,
    keep_unused_modules: bool | None = None,
) -> nn.Module:
    """Build the model a checkpoint was saved from and load it (eval mode).

    The configuration comes from our file's metadata; for foreign files (the authors'
    ``.pth``) pass ``name`` (e.g. ``"res50_s4"``). A ``name`` other than the recorded
    one builds that configuration when its network is the recorded one (an error
    otherwise); the recorded name itself keeps the record (rules:
    :func:`avsegformer.configuration.resolve_config`). ``keep_unused_modules=False``
    builds the model without the modules the forward never runs
    (:data:`UNUSED_PREFIXES`; 92 MB of ResNet-50 weights) and skips their entries in the
    file: for inference. ``None`` keeps what the configuration says.

    The file's keys and shapes are compared with the model built on the ``meta`` device
    before the model is built for real, so nothing is allocated for a file that does not
    fit (and :func:`read_checkpoint` has checked the recorded configuration the same way).

    Raises:
        CheckpointError: unreadable file, or no configuration recorded and no ``name``.
        CheckpointMismatchError: the weights do not fit the configuration.
        NonFiniteCheckpointError: the file holds NaN or infinite values.
    """
    path = Path(path)
    contents = read_checkpoint(path)
    config = resolve_config(
        name,
        checkpoint=path,
        recorded=contents.config,
        weights_hint=lambda: _weights_hint(contents),
    ).config
    if keep_unused_modules is not None:
        config = config.with_overrides({"model.keep_unused_modules": keep_unused_modules})
    # Keys and shapes first, on the meta device: a file that does not fit costs nothing.
    _plan(build_model(config, device="meta"), contents, path, strict)
    model = build_model(config, device=device)
    report = _apply(model, contents, path, strict)
    logger.info("%s", report)
    return model.eval()
