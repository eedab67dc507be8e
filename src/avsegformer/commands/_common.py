"""Pieces shared by the sub-commands: configuration lookup, devices."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ..zoo import Config, get_config


def resolve_config(spec: str, overrides: list[str] | None = None) -> Config:
    """A registered configuration name, or a ``config.json`` written by ``train``."""
    path = Path(spec)
    if spec.endswith(".json") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{path}: configuration file not found")
        try:
            config = Config.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    else:
        config = get_config(spec)
    return config.with_overrides(overrides or [])


def config_for_checkpoint(spec: str, overrides: list[str] | None, checkpoint: str) -> Config:
    """The configuration to evaluate ``checkpoint`` with.

    When the checkpoint records a configuration of the same name (files written by
    ``avsegformer train`` / ``save_checkpoint``), that record wins over the registered
    defaults, so a model trained with ``--set img_size=128`` is tested at 128; the
    user's ``overrides`` apply on top. A record of another architecture is an error.
    """
    from ..checkpoint import read_checkpoint
    from ..errors import CheckpointMismatchError

    config = resolve_config(spec, overrides)
    recorded = read_checkpoint(checkpoint).config
    if recorded is None:
        return config
    if recorded.name == config.name:
        return recorded.with_overrides(overrides or [])
    if recorded.model != config.model:
        raise CheckpointMismatchError(
            f"{checkpoint} holds a {recorded.name!r} model, which is not the "
            f"architecture of {config.name!r}; pass `{recorded.name}` as CONFIG"
        )
    return config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        help="configuration name (see `avsegformer models`) or a config.json from a training run",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override configuration fields, e.g. --set batch_size=4 lr=1e-5 img_size=224",
    )


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)"
    )
