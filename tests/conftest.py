"""Shared test fixtures.

The reference fixtures the tests compare against (the authors' code's outputs) are in
the repository, ``tests/reference`` (see its README); a test whose fixture is missing
fails. Other shared material (the AVSBench sample metadata) lives in ``../shared/`` next
to the project root, or in ``/work/shared`` for a checkout elsewhere on the development
machine (override with the environment variable ``AVSEGFORMER_SHARED``); tests that need
it are skipped, with the reason, when no such folder exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _reference import REFERENCE_DIR

ROOT = Path(__file__).resolve().parents[1]


def _find_shared() -> Path:
    if "AVSEGFORMER_SHARED" in os.environ:
        return Path(os.environ["AVSEGFORMER_SHARED"]).resolve()
    candidates = [ROOT.parent / "shared", Path("/work/shared")]
    return next((c.resolve() for c in candidates if c.is_dir()), candidates[0].resolve())


SHARED = _find_shared()
REFERENCE = REFERENCE_DIR


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED} (set AVSEGFORMER_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``tests/reference``; prefer ``_reference.reference_path``, which names a missing file."""
    if not REFERENCE.is_dir():
        pytest.fail(f"reference fixtures missing: {REFERENCE} (see tests/reference/README.md)")
    return REFERENCE
