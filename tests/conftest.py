"""Shared test fixtures.

The parity fixtures live in ``../shared/`` next to the project root, or in
``/work/shared`` for a checkout elsewhere on the development machine (override with the
environment variable ``AVSEGFORMER_SHARED``). Tests that need them are skipped, with the
reason, when no such folder exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _find_shared() -> Path:
    if "AVSEGFORMER_SHARED" in os.environ:
        return Path(os.environ["AVSEGFORMER_SHARED"]).resolve()
    candidates = [ROOT.parent / "shared", Path("/work/shared")]
    return next((c.resolve() for c in candidates if c.is_dir()), candidates[0].resolve())


SHARED = _find_shared()
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED} (set AVSEGFORMER_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def reference_dir(shared_dir: Path) -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference fixtures not found at {REFERENCE}")
    return REFERENCE
