"""AVSBench data: readers for S4, MS3 and AVSS, the safe log-mel unpickler, dataset checks.

Usage::

    from avsegformer.data import build_dataset, collate

    dataset = build_dataset("s4", "data/", "train")  # finds data/Single-source/
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)

The names below are imported lazily (on first use), so that importing a light submodule
such as :mod:`avsegformer.data.video` does not pull in the dataset readers and torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "AVSS_SUBSETS",
            "SPLITS",
            "AVBatch",
            "AVSample",
            "AVSBenchDataset",
            "AVSSDataset",
            "Metadata",
            "MS3Dataset",
            "S4Dataset",
            "VideoEntry",
            "VideoFiles",
            "collate",
            "parse_metadata_file",
            "read_avss_metadata",
            "read_metadata",
            "read_ms3_metadata",
            "read_s4_metadata",
            "resolve_root",
        ),
        "avsbench",
    ),
    "build_dataset": "build",
    **dict.fromkeys(("DatasetReport", "FileCount", "SplitReport", "check_dataset"), "check"),
    **dict.fromkeys(("Geometry", "PixelNorm"), "images"),
    **dict.fromkeys(("load_logmel_pkl", "load_tensor_pickle", "write_logmel_pkl"), "safe_pickle"),
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # static analysers see the eager imports
    from .avsbench import (  # noqa: F401
        AVSS_SUBSETS,
        SPLITS,
        AVBatch,
        AVSample,
        AVSBenchDataset,
        AVSSDataset,
        Metadata,
        MS3Dataset,
        S4Dataset,
        VideoEntry,
        VideoFiles,
        collate,
        parse_metadata_file,
        read_avss_metadata,
        read_metadata,
        read_ms3_metadata,
        read_s4_metadata,
        resolve_root,
    )
    from .build import build_dataset  # noqa: F401
    from .check import DatasetReport, FileCount, SplitReport, check_dataset  # noqa: F401
    from .images import Geometry, PixelNorm  # noqa: F401
    from .safe_pickle import load_logmel_pkl, load_tensor_pickle, write_logmel_pkl  # noqa: F401


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
