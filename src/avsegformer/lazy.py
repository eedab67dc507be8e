"""Lazy package exports: names imported from their submodule on first use.

A package lists ``name -> submodule`` and gets the module-level ``__getattr__`` and
``__dir__`` (PEP 562) from :func:`lazy_exports`, so that importing a light submodule does
not pull in the heavy ones (and a lower layer can import one submodule of a package whose
other submodules import that layer).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose ``namespace`` is its globals()."""

    def __getattr__(name: str) -> Any:
        submodule = exports.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
