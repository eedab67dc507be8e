"""Pieces shared by the sub-commands: their common options, devices, JSON output."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from ..fileio import atomic_write_text
from ..finite import json_safe
from ..settings import Precision, accepted_precisions


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
PRECISIONS = tuple(Precision)


def precision_value(text: str) -> Precision:
    """argparse type: a precision in any spelling :class:`Precision` accepts."""
    try:
        return Precision.parse(text)
    except ConfigError:  # argparse names the option itself
        raise argparse.ArgumentTypeError(
            f"invalid precision {text!r} (choose from {accepted_precisions()})"
        ) from None


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
