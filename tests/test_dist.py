"""Distributed helpers and metric accumulators across two Gloo processes on the CPU."""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from avsegformer.engine import dist
from avsegformer.engine.metrics import AVSSMetric, BinaryMetric

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
NUM_VIDEOS = 7  # odd: DistributedSampler-style padding repeats video 0 on the last rank
FRAMES = 5
AVSS_CLASSES = 6


def _dataset() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Binary logits/GT [V,T,H,W] (some empty GTs) and AVSS logits/targets."""
    g = torch.Generator().manual_seed(1234)
    logits = torch.randn(NUM_VIDEOS, FRAMES, 20, 20, generator=g) * 2
    gt = (torch.rand(NUM_VIDEOS, FRAMES, 20, 20, generator=g) > 0.55).float()
    gt[1, 2] = 0
    gt[4] = 0  # a video without foreground
    avss_logits = torch.randn(NUM_VIDEOS, FRAMES, AVSS_CLASSES, 12, 12, generator=g)
    avss_target = torch.randint(0, AVSS_CLASSES, (NUM_VIDEOS, FRAMES, 12, 12), generator=g)
    return logits, gt, avss_logits, avss_target


def _shard(rank: int, world_size: int) -> list[int]:
    """DistributedSampler(shuffle=False, drop_last=False): pad by repeating, then stride."""
    indices = list(range(NUM_VIDEOS))
    padded = indices + indices[: (-len(indices)) % world_size]
    return padded[rank::world_size]


def _evaluate(videos: list[int], batch_videos: int) -> dict[str, float]:
    logits, gt, avss_logits, avss_target = _dataset()
    binary, avss = BinaryMetric(videos_per_group=2), AVSSMetric(num_classes=AVSS_CLASSES)
    for start in range(0, len(videos), batch_videos):
        batch = torch.tensor(videos[start : start + batch_videos])
        per_frame_video = batch.repeat_interleave(FRAMES)
        frame_index = torch.arange(FRAMES).repeat(len(batch))
        binary.update(logits[batch].flatten(0, 1), gt[batch].flatten(0, 1), per_frame_video)
        avss.update(
            avss_logits[batch].flatten(0, 1),
            avss_target[batch].flatten(0, 1),
            video_index=per_frame_video,
            frame_index=frame_index,
        )
    results = {}
    for mode in ("avsbench", "invariant"):
        scores = binary.compute(mode=mode)
        results[f"{mode}_miou"], results[f"{mode}_fscore"] = scores.miou, scores.fscore
        results[f"{mode}_frames"] = scores.num_frames
    results["avsbench4_fscore"] = binary.compute(videos_per_group=4).fscore
    avss_scores = avss.compute()
    results["avss_miou"], results["avss_fscore"] = avss_scores.miou, avss_scores.fscore
    results["avss_frames"] = avss_scores.num_frames
    return results


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    info = dist.init_distributed(backend="gloo", timeout=datetime.timedelta(seconds=60))
    try:
        results = _evaluate(_shard(rank, world_size), batch_videos=rank + 1)
        results["rank"], results["world_size"] = info.rank, info.world_size
        results["is_main"] = dist.is_main_process()
        results["gathered"] = dist.all_gather_object({"rank": rank})
        reduced = dist.all_reduce_tensor(torch.tensor([rank + 1.0, 2.0], dtype=torch.float64))
        results["reduced"] = reduced.tolist()
        dist.barrier()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.cleanup()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_give_single_process_metrics(tmp_path: Path) -> None:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    single = _evaluate(list(range(NUM_VIDEOS)), batch_videos=3)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["rank"] == rank and got["world_size"] == 2
        assert got["is_main"] == (rank == 0)
        assert got["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert got["reduced"] == [3.0, 4.0]
        for key, value in single.items():
            assert got[key] == value, f"rank {rank}: {key} {got[key]!r} != {value!r}"
    assert single["avsbench_frames"] == NUM_VIDEOS * FRAMES  # duplicates were dropped


def test_helpers_without_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    info = dist.init_distributed()
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    assert not dist.is_distributed() and dist.is_main_process()
    assert dist.all_gather_object({"a": 1}) == [{"a": 1}]
    tensor = torch.tensor([1.0, 2.0])
    reduced = dist.all_reduce_tensor(tensor)
    assert torch.equal(reduced, tensor) and reduced is not tensor
    dist.barrier()
    dist.cleanup()


def test_malformed_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from avsegformer.errors import ConfigError

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="RANK=3"):
        dist.init_distributed()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK"):
        dist.init_distributed()
