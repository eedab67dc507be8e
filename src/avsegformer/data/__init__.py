"""AVSBench data: readers for S4, MS3 and AVSS, the safe log-mel unpickler, dataset checks.

Usage::

    from avsegformer.data import build_dataset, collate

    dataset = build_dataset("s4", "data/", "train")  # finds data/Single-source/
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
"""

from __future__ import annotations

from .avsbench import (
    AVSS_SUBSETS,
    SPLITS,
    AVBatch,
    AVSample,
    AVSBenchDataset,
    AVSSDataset,
    MS3Dataset,
    S4Dataset,
    VideoEntry,
    VideoFiles,
    build_dataset,
    collate,
    read_avss_metadata,
    read_metadata,
    read_ms3_metadata,
    read_s4_metadata,
    resolve_root,
)
from .check import DatasetReport, FileCount, SplitReport, check_dataset
from .images import Geometry
from .safe_pickle import load_logmel_pkl, load_tensor_pickle, write_logmel_pkl

__all__ = [
    "AVSS_SUBSETS",
    "SPLITS",
    "AVBatch",
    "AVSBenchDataset",
    "AVSSDataset",
    "AVSample",
    "DatasetReport",
    "FileCount",
    "Geometry",
    "MS3Dataset",
    "S4Dataset",
    "SplitReport",
    "VideoEntry",
    "VideoFiles",
    "build_dataset",
    "check_dataset",
    "collate",
    "load_logmel_pkl",
    "load_tensor_pickle",
    "read_avss_metadata",
    "read_metadata",
    "read_ms3_metadata",
    "read_s4_metadata",
    "resolve_root",
    "write_logmel_pkl",
]
