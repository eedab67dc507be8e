"""Which configuration a run uses: the one place where what a run asks for (a registered
name, a ``config.json``, a :class:`~avsegformer.zoo.Config`, ``--set`` overrides) is
reconciled with what a checkpoint records.

Every entry point asks :func:`resolve_config`: ``build_model``, ``avsegformer train``
(and its ``--resume``), ``avsegformer test``, ``avsegformer predict``,
``Predictor.from_checkpoint`` / ``build_model_from_checkpoint``. The rules:

========================  =====================  =========================================
asked for                 the checkpoint records  the run uses
========================  =====================  =========================================
a configuration           (no checkpoint)         it, with the overrides
nothing                   a configuration         the recorded one, with the overrides
nothing                   nothing                 error: name it
the recorded name         a configuration         the recorded one (a model trained with
                                                  ``--set img_size=128`` is used at 128),
                                                  with the overrides
another name, same net    a configuration         the one asked for, with the overrides
another name, other net   a configuration         error: the file holds another model
a configuration           nothing                 it, with the overrides
========================  =====================  =========================================

Resuming a training run (``resume=True``) is stricter: the run's recorded configuration
is kept, except its ``train`` section, which comes from the request (so ``--set
epochs=60`` continues to a new end); another name is an error, and model/data settings
that differ from the record are reported as ignored.

This module imports only :mod:`avsegformer.zoo` and :mod:`avsegformer.errors`: the
checkpoint's record is passed in (``recorded``), so ``modeling.build`` can use it too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError, CheckpointMismatchError, ConfigError
from .zoo import Config, DataConfig, ModelConfig, TrainConfig, get_config

#: What a run may ask for: a registered name, a ``config.json`` path, a configuration.
Requested = str | os.PathLike[str] | Config | ModelConfig
#: ``--set`` overrides: ``["lr=1e-5"]`` or ``{"train.lr": 1e-5}``.
Overrides = Mapping[str, Any] | Sequence[str]


@dataclass(frozen=True)
class ResolvedConfig:
    """The configuration a run uses and where each part came from.

    Attributes:
        config: the configuration, overrides applied.
        base: where the configuration before the overrides came from, in words
            (``"registered configuration 'tiny_s4'"``, ``"runs/x/config.json"``,
            ``"the configuration recorded in last.safetensors"``...).
        overrides: the overrides applied on top, as ``key=value`` strings.
        notes: what the caller should warn about (requested settings that were not
            used, settings that changed on resume); empty when nothing needs saying.
    """

    config: Config
    base: str
    overrides: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def resolve_config(
    requested: Requested | None = None,
    overrides: Overrides | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    recorded: Config | None = None,
    resume: bool = False,
    name_option: str = "--model",
    weights_hint: Callable[[], str] | None = None,
) -> ResolvedConfig:
    """The configuration a run uses (rules: see the module docstring).

    Args:
        requested: what the run asks for: a registered name (``avsegformer models``), a
            ``config.json`` written by ``train`` (a path ending in ``.json`` or an existing
            file), a :class:`Config`, a bare :class:`ModelConfig` (named ``"custom"``), or
            ``None`` to use what ``checkpoint`` records.
        overrides: ``--set`` values, applied last (after the record, if it is used).
        checkpoint: the file the run loads, if any (named in messages).
        recorded: the configuration ``checkpoint`` records (``None``: it records none,
            e.g. the authors' ``.pth``).
        resume: continue the training run ``checkpoint`` was saved from.
        name_option: how the command line names a configuration (``--model``, or
            ``CONFIG`` for a positional argument), for the command-line form of the
            error messages.
        weights_hint: called only when a name is missing: which configurations the
            file's weights fit, in words (``"it matches: tiny_s4"``).

    Raises:
        ConfigError: unknown name, unreadable ``config.json``, bad override, nothing to
            go on, or a resume under another name.
        CheckpointError: the checkpoint records no configuration and none is named (or
            a resume from such a file).
        CheckpointMismatchError: the name asked for is another architecture than the
            one the checkpoint records.
    """
    shown = _as_assignments(overrides)
    overrides = dict(overrides) if isinstance(overrides, Mapping) else list(overrides or [])
    where = str(checkpoint) if checkpoint is not None else "the checkpoint"
    if requested is None:
        if resume:
            raise ConfigError("resuming needs the configuration the run was started with")
        if recorded is None:
            if checkpoint is None:
                raise ConfigError(
                    "no configuration: give a registered name (see `avsegformer models`), "
                    "a config.json or a Config"
                )
            found = f"; {weights_hint()}" if weights_hint is not None else ""
            option = f"{name_option} NAME" if name_option.startswith("-") else name_option
            raise CheckpointError(
                f"{where} does not record its configuration: name it",
                hint=f"pass name=...{found}",
                cli_hint=f"give {option}{found}; see `avsegformer models`",
            )
        config = recorded.with_overrides(overrides)
        return ResolvedConfig(config, f"the configuration recorded in {where}", shown)
    # Overrides first: they may make the request the network the file records.
    asked = _requested_config(requested).with_overrides(overrides)
    if resume:
        return _resumed(asked, recorded, where, shown)
    if recorded is None:
        return ResolvedConfig(asked, _describe(requested), shown)
    if recorded.name == asked.name:
        config = recorded.with_overrides(overrides)
        return ResolvedConfig(config, f"the configuration recorded in {where}", shown)
    if recorded.model != asked.model:
        raise CheckpointMismatchError(
            f"{where} holds a {recorded.name!r} model, not a {asked.name!r} one",
            hint="leave out name= to build the model the file records",
            cli_hint=f"drop {name_option}: the checkpoint records {recorded.name}",
        )
    return ResolvedConfig(asked, _describe(requested), shown)


def _resumed(
    asked: Config, recorded: Config | None, where: str, overrides: tuple[str, ...]
) -> ResolvedConfig:
    """The configuration of a resumed run: the record, with the request's training settings."""
    if recorded is None:
        raise CheckpointError(f"{where} records no configuration; cannot resume from it")
    if recorded.name != asked.name:
        raise ConfigError(
            f"{where} was trained as {recorded.name!r}, not {asked.name!r}; "
            f"resume with the same configuration or use another --out"
        )
    notes = []
    if dataclasses.replace(recorded, train=asked.train) != asked:
        notes.append("resuming with the saved configuration; model/data overrides ignored")
    config = recorded
    if recorded.train != asked.train:
        changed = {
            k: v
            for k, v in dataclasses.asdict(asked.train).items()
            if getattr(recorded.train, k) != v
        }
        notes.append(f"resuming with changed training settings: {changed}")
        config = dataclasses.replace(recorded, train=asked.train)
    base = f"the configuration recorded in {where} (training settings as requested)"
    return ResolvedConfig(config, base, overrides, tuple(notes))


def _as_assignments(overrides: Overrides | None) -> tuple[str, ...]:
    """Overrides as ``key=value`` strings (for the record of what was applied)."""
    if not overrides:
        return ()
    if isinstance(overrides, Mapping):
        return tuple(f"{k}={v}" for k, v in overrides.items())
    return tuple(overrides)


def _describe(requested: Requested) -> str:
    if isinstance(requested, Config):
        return f"the given configuration {requested.name!r}"
    if isinstance(requested, ModelConfig):
        return "the given model configuration (as 'custom')"
    if _is_file_spec(requested):
        return str(requested)
    return f"registered configuration {str(requested)!r}"


def _is_file_spec(requested: str | os.PathLike[str]) -> bool:
    path = Path(requested)
    return not isinstance(requested, str) or requested.endswith(".json") or path.is_file()


def _requested_config(requested: Requested) -> Config:
    """The configuration ``requested`` names, before any override."""
    if isinstance(requested, Config):
        return requested
    if isinstance(requested, ModelConfig):
        return Config(
            name="custom",
            model=requested,
            data=DataConfig(),
            train=TrainConfig(),
        )
    if not isinstance(requested, (str, os.PathLike)):
        raise ConfigError(
            "expected a model name, a config.json, a Config or a ModelConfig, got "
            f"{type(requested).__name__}"
        )
    if not _is_file_spec(requested):
        return get_config(str(requested))
    path = Path(requested)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        return Config.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
