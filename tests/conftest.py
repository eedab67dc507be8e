"""Shared test fixtures.

The parity fixtures live in ``../shared/`` next to the project root (override with the
environment variable ``AVSEGFORMER_SHARED``). Tests that need them are skipped, with the
reason, when that folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AVSEGFORMER_SHARED", ROOT.parent / "shared")).resolve()
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
