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


@pytest.mark.skipif(not triton_available(), reason="the triton package is not installed")
def test_kernels_compile_for_hopper_without_spilling() -> None:
    """The compiler's GPU passes run without a GPU: a kernel that only the interpreter
    accepts fails here (Triton 3.6 once rejected a select in ``_corner``)."""
    from _triton_checks import compile_kernels

    usage = compile_kernels("bf16", capability=90)
    assert set(usage) == {"_msda_forward_kernel", "_msda_backward_kernel"}
    for name, line in usage.items():
        if line:  # cuobjdump ships with Triton's NVIDIA backend
            assert "LOCAL:0" in line, f"{name} spills registers: {line}"
