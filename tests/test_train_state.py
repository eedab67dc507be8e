"""Optimizer / RNG state survive the tensors+JSON round trip used by checkpoints."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from avsegformer.engine.train_state import (
    capture_rng_state,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    restore_rng_state,
)


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 4, generator=g)
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()


def test_adamw_state_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    b = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2)
    for s in range(3):
        _step(a, opt_a, s)
    tensors, record = optimizer_state_to_tensors(opt_a.state_dict())
    record = json.loads(json.dumps(record))  # must survive JSON
    b.load_state_dict(a.state_dict())
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2)
    opt_b.load_state_dict(optimizer_state_from_tensors(tensors, record))
    for s in range(3, 6):
        _step(a, opt_a, s)
        _step(b, opt_b, s)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_rng_round_trip_restores_every_generator() -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    tensors, record = capture_rng_state()
    record = json.loads(json.dumps(record))
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(tensors, record)
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]
