"""avsegformer: audio-visual segmentation with AVSegFormer.

Five lines from nothing to masks::

    import torch, avsegformer
    model = avsegformer.build_model("res50_s4", pretrained=True).eval()  # released weights
    frames, audio = torch.randn(5, 3, 224, 224), torch.randn(5, 1, 96, 64)
    with torch.inference_mode():
        logits = model(frames, audio).logits                  # [5, 1, 224, 224]

``pretrained=True`` downloads the authors' checkpoint into ``~/.cache/avsegformer`` once
(``avsegformer download res50_s4`` does it ahead of time) and verifies it before use.

The public names are imported lazily so that ``import avsegformer`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build_model": "avsegformer.pretrained",
    "AVSegFormerOutput": "avsegformer.modeling.avsegformer",
    "AVSegFormer": "avsegformer.modeling.avsegformer",
    "list_models": "avsegformer.zoo",
    "get_config": "avsegformer.zoo",
    "Config": "avsegformer.zoo",
    "load_checkpoint": "avsegformer.checkpoint",
    "save_checkpoint": "avsegformer.checkpoint",
    "read_checkpoint": "avsegformer.checkpoint",
    "build_model_from_checkpoint": "avsegformer.checkpoint",
    "Predictor": "avsegformer.predictor",
    "optimize": "avsegformer.modeling.optimize",
    "download": "avsegformer.hub",
    "Precision": "avsegformer.settings",
    "resolve_config": "avsegformer.configuration",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'avsegformer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
