"""Which parts of the package may import which: the layers stay one-way.

Reads every ``import`` in ``src/avsegformer`` (function-level ones included: they are
dependencies too, only later ones) with :mod:`ast`, so that a new import that closes a
cycle fails here, not in a confusing ``ImportError`` at some later import order. Imports
under ``if TYPE_CHECKING:`` and in a module's ``__getattr__`` (PEP 562 aliases that keep
moved names importable from their old place) are not dependencies.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import avsegformer

PACKAGE_DIR = Path(avsegformer.__file__).parent

# Cycles between top-level parts that another change removes (issue 12: the checkpoint
# loader and the model builder call each other, and hub with them). Nothing else.
KNOWN_CYCLES: list[set[str]] = []


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _imports_in(
    node: ast.AST, module: str, package: list[str], found: list[tuple[str, str, int]]
) -> None:
    """Append (module, imported avsegformer module, line) for each import under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, ast.FunctionDef) and child.name == "__getattr__":
            continue
        if isinstance(child, ast.ImportFrom):
            if child.level:
                base = package[: len(package) - child.level + 1]
                target = ".".join(base + ([child.module] if child.module else []))
            else:
                target = child.module or ""
            if target.split(".")[0] == "avsegformer":
                found.append((module, target, child.lineno))
        elif isinstance(child, ast.Import):
            for alias in child.names:
                if alias.name.split(".")[0] == "avsegformer":
                    found.append((module, alias.name, child.lineno))
        _imports_in(child, module, package, found)


def _imports() -> list[tuple[str, str, int]]:
    """(importing module, imported avsegformer module, line) for every dependency."""
    found: list[tuple[str, str, int]] = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        module, is_package = _module_name(path)
        package = module.split(".") if is_package else module.split(".")[:-1]
        _imports_in(ast.parse(path.read_text(), str(path)), module, package, found)
    return found


def _part(module: str) -> str:
    """The top-level part a module belongs to: ``avsegformer.data.video.sound`` -> data."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.fixture(scope="module")
def imports() -> list[tuple[str, str, int]]:
    found = _imports()
    assert len(found) > 100, "the import scan found almost nothing: is the package there?"
    return found


def test_the_scan_sees_function_level_imports(imports) -> None:
    # A known function-level import (av is heavy, so the PyAV reader loads on first use).
    assert any(
        source == "avsegformer.data.audio_files" and target == "avsegformer.data.video.sound"
        for source, target, _ in imports
    )


def test_only_the_command_line_imports_commands(imports) -> None:
    offenders = [
        f"{source}:{line} imports {target}"
        for source, target, line in imports
        if (_within(target, "avsegformer.commands") or _within(target, "avsegformer.cli"))
        and not (_within(source, "avsegformer.commands") or _within(source, "avsegformer.cli"))
    ]
    assert offenders == []


def test_the_audio_front_end_imports_no_data_module(imports) -> None:
    offenders = [
        f"{source}:{line} imports {target}"
        for source, target, line in imports
        if _within(source, "avsegformer.audio") and _within(target, "avsegformer.data")
    ]
    assert offenders == []


def test_the_video_package_stands_on_errors_and_fileio_only(imports) -> None:
    allowed = ("avsegformer.data.video", "avsegformer.errors", "avsegformer.fileio")
    offenders = [
        f"{source}:{line} imports {target}"
        for source, target, line in imports
        if _within(source, "avsegformer.data.video")
        and not any(_within(target, prefix) for prefix in allowed)
    ]
    assert offenders == []


def test_modeling_imports_no_data_engine_or_command_code(imports) -> None:
    forbidden = ("data", "engine", "commands", "cli", "serve", "predictor", "video_pipeline")
    offenders = [
        f"{source}:{line} imports {target}"
        for source, target, line in imports
        if _part(source) == "modeling" and _part(target) in forbidden
    ]
    assert offenders == []


def _cycles(edges: list[tuple[str, str]]) -> list[list[str]]:
    """The groups of nodes that reach each other along ``edges`` (import cycles)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        if a != b:
            graph[a].add(b)

    def reachable(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    return sorted(
        {
            tuple(sorted({a} | {b for b in reachable(a) if a in reachable(b)}))
            for a in list(graph)
            if a in reachable(a)
        }
    )


def test_no_import_cycles_between_modules(imports) -> None:
    """No module imports one that (directly or not) imports it back."""
    assert _cycles([(source, target) for source, target, _ in imports]) == []


# Parts that sit on both sides of the task registry: the task-agnostic readers, losses and
# metrics below it (a task names them), the entry points that ask tasks above it.
_SPLIT_BY_TASKS = {"data", "engine", "render", "tasks"}


def test_no_cycles_between_top_level_parts(imports) -> None:
    cycles = _cycles([(_part(source), _part(target)) for source, target, _ in imports])
    unexpected = [
        cycle
        for cycle in cycles
        if not set(cycle) <= _SPLIT_BY_TASKS
        and not any(set(cycle) <= known for known in KNOWN_CYCLES)
    ]
    assert unexpected == []


def test_what_tasks_name_does_not_know_tasks(imports) -> None:
    """Readers, losses, metrics and rendering stay task-agnostic: a new task needs no edit there."""
    agnostic = (
        "avsegformer.data.avsbench",
        "avsegformer.data.images",
        "avsegformer.engine.losses",
        "avsegformer.engine.metrics",
        "avsegformer.render",
        "avsegformer.data.synthetic.formats",
    )
    offenders = [
        f"{source}:{line} imports {target}"
        for source, target, line in imports
        if source in agnostic and target.startswith("avsegformer.tasks")
    ]
    assert offenders == []


def test_moved_names_still_import_from_their_old_places() -> None:
    from avsegformer import audio, demo, video_pipeline
    from avsegformer.commands import demo as demo_command
    from avsegformer.commands import predict
    from avsegformer.data import audio_files, video
    from avsegformer.data.video import sound, writer

    assert audio.read_audio is audio_files.read_audio
    assert audio.wav_to_examples is audio_files.wav_to_examples
    assert predict.process_video is video_pipeline.process_video
    assert predict.VIDEO_EXTENSIONS is video_pipeline.VIDEO_EXTENSIONS
    assert demo_command.find_demo_checkpoint is demo.find_demo_checkpoint
    assert video.read_audio_track is sound.read_audio_track
    assert video.VideoWriter is writer.VideoWriter
    with pytest.raises(AttributeError):
        audio.no_such_name  # noqa: B018 - the alias hook must not swallow typos
