"""The Triton deformable-attention kernel, run by Triton's interpreter on the CPU.

The kernel itself (``avsegformer.modeling.kernels.deform_attn_triton``) is what the
CUDA form runs; ``TRITON_INTERPRET=1`` executes the same source on CPU tensors, so its
indexing, masking, softmax and gradients are checked here without a GPU (the checks:
``tests/_triton_checks.py``; on a GPU, ``tests/test_cuda.py`` runs them on CUDA).
The interpreter must be chosen before Triton compiles anything, hence a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from avsegformer.modeling.kernels import triton_available

TESTS = Path(__file__).resolve().parent


@pytest.mark.skipif(not triton_available(), reason="the triton package is not installed")
def test_kernel_forward_and_gradients_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS), str(TESTS.parent / "src"), env.get("PYTHONPATH", "")]
    )
    done = subprocess.run(
        [sys.executable, str(TESTS / "_triton_checks.py"), "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all 5 cases passed" in done.stdout
