"""Pieces shared by the sub-commands: configuration lookup, devices."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ..fileio import atomic_write_text
from ..finite import json_safe
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


def config_for_checkpoint(spec: str | None, overrides: list[str] | None, checkpoint: str) -> Config:
    """The configuration to evaluate ``checkpoint`` with.

    When the checkpoint records a configuration of the same name (files written by
    ``avsegformer train`` / ``save_checkpoint``), that record wins over the registered
    defaults, so a model trained with ``--set img_size=128`` is tested at 128; the
    user's ``overrides`` apply on top. Without ``spec`` the recorded configuration is
    used (an error for files that record none, such as the authors' ``.pth``). A record
    of another architecture is an error.
    """
    from ..checkpoint import read_checkpoint
    from ..errors import CheckpointMismatchError

    recorded = read_checkpoint(checkpoint).config
    if spec is None:
        if recorded is None:
            raise ConfigError(
                f"{checkpoint} does not record its configuration: name it, e.g. "
                "`avsegformer test res50_s4 --checkpoint ...` (see `avsegformer models`)"
            )
        return recorded.with_overrides(overrides or [])
    config = resolve_config(spec, overrides)
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


def add_config_arguments(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    what = "configuration name (see `avsegformer models`) or a config.json from a training run"
    parser.add_argument(
        "config",
        nargs="?" if optional else None,
        default=None,
        help=what + (" (default: the one the checkpoint records)" if optional else ""),
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override configuration fields, e.g. --set batch_size=4 lr=1e-5 img_size=224",
    )


#: The one precision vocabulary of every command (``auto``: bf16 on CUDA, fp32 elsewhere).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Older spellings (torch dtype names) still accepted.
_PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def precision_value(text: str) -> str:
    """argparse type: a precision name (the torch dtype spellings are accepted too)."""
    value = _PRECISION_ALIASES.get(text, text)
    if value not in PRECISIONS:
        raise argparse.ArgumentTypeError(
            f"invalid precision {text!r} (choose from {', '.join(PRECISIONS)})"
        )
    return value


def add_precision_argument(
    parser: argparse.ArgumentParser,
    *,
    default: str | list[str],
    multiple: bool = False,
    old: str | None = None,
    what: str = "",
) -> None:
    """``--precision`` with :data:`PRECISIONS` (``old``: a deprecated alias of the option)."""
    names = ["--precision"] + ([old] if old else [])
    parser.add_argument(
        *names,
        dest="precision",
        type=precision_value,
        nargs="+" if multiple else None,
        default=default,
        metavar="{" + ",".join(PRECISIONS) + "}",
        help=what
        or "auto (bf16 on CUDA, fp32 elsewhere), fp32, bf16 or fp16 (CUDA) autocast "
        f"(default {default})",
    )
    if old:
        warn_on_alias(parser, old, "--precision")


def add_json_argument(parser: argparse.ArgumentParser, what: str, old: str | None = None) -> None:
    """``--json PATH``: write ``what`` as JSON to PATH (``-``: standard output)."""
    names = ["--json"] + ([old] if old else [])
    parser.add_argument(
        *names,
        dest="json",
        default=None,
        nargs="?",
        const="-",
        metavar="PATH",
        help=f"write {what} as JSON to PATH ('-' or no PATH: standard output)",
    )
    if old:
        warn_on_alias(parser, old, "--json")


def write_json_output(path: str, value: object) -> str | None:
    """Write ``value`` as JSON to ``path`` (``-``: print it); returns the file written."""
    # JSON has no NaN: non-finite numbers become null (and are listed under "nonfinite").
    text = json.dumps(json_safe(value), indent=2, default=str, allow_nan=False) + "\n"
    if path == "-":
        print(text, end="")
        return None
    return str(atomic_write_text(path, text))


def add_workers_argument(
    parser: argparse.ArgumentParser, *, default: int | None, what: str, old: str | None = None
) -> None:
    """``--workers N``, the one name for worker processes (``old``: a deprecated alias)."""
    names = ["--workers"] + ([old] if old else [])
    parser.add_argument(*names, dest="workers", type=int, default=default, metavar="N", help=what)
    if old:
        warn_on_alias(parser, old, "--workers")


def warn_on_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Record that ``old`` is a deprecated spelling of ``new`` (see :func:`deprecated_used`)."""
    aliases = parser.get_default("_aliases") or {}
    parser.set_defaults(_aliases={**aliases, old: new})


def deprecated_used(argv: list[str], aliases: dict[str, str]) -> list[tuple[str, str]]:
    """The (old, new) option pairs of ``aliases`` that ``argv`` spells the old way."""
    used = []
    for old, new in aliases.items():
        if any(arg == old or arg.startswith(old + "=") for arg in argv):
            used.append((old, new))
    return used


def add_skip_bad_clips_argument(parser: argparse.ArgumentParser) -> None:
    """``--skip-bad-clips``: go on past clips whose files cannot be read (exit status 1)."""
    parser.add_argument(
        "--skip-bad-clips",
        action="store_true",
        help="skip clips whose files are missing or damaged instead of stopping at the "
        "first; they are listed at the end (and in the JSON/summary) and the exit "
        "status is 1",
    )


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)"
    )
