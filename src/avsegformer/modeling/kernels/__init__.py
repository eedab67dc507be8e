"""Device kernels (Triton) for the forms :func:`avsegformer.modeling.optimize.optimize` applies.

Nothing here is imported by the plain modules: each kernel has a pure-PyTorch
reference in the module that defines the computation, and the kernels are loaded only
when a form that uses them is selected (CUDA with Triton installed).
"""

from __future__ import annotations

import importlib.util


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (it ships with CUDA PyTorch)."""
    return importlib.util.find_spec("triton") is not None
