"""The in-repository reference subset (tests/reference) is complete and self-consistent.

Its cuts and regenerated inputs must give the parity tests the authors' values: each
regenerated input matches its recorded SHA-256 (and a wrong one is refused), each cut
array is the full array's shape with the kept indices along one axis.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _reference import (
    REFERENCE_DIR,
    as_stored,
    load_fixture,
    load_manifest,
    reference_path,
    regenerate_input,
    source_shape,
)

PARITY = ["res50_s4", "res50_avss", "pvt2_s4", "pvt2_avss"]


@pytest.mark.parametrize("name", PARITY)
def test_parity_subset_records_its_source_and_cuts(name: str) -> None:
    fixture = load_fixture(reference_path(f"parity/{name}.npz"))
    subset = fixture["subset"]
    assert subset["source"] == f"shared/reference/parity/{name}.npz"
    assert len(subset["source_sha256"]) == 64
    assert set(subset["regenerated"]) >= {"in_frames"}
    frames = fixture["in_frames"]  # rebuilt by load_fixture, checked against the SHA-256
    assert frames.dtype == np.float16 and frames.shape[0] == fixture["meta"]["N"]
    for key, cut in subset["cuts"].items():
        expected = list(cut["source_shape"])
        expected[cut["axis"]] = len(cut["index"])
        assert list(fixture[key].shape) == expected, key
        assert source_shape(fixture, key) == tuple(cut["source_shape"])
    assert not any(key.startswith("in_wav") for key in fixture)


def test_regenerated_input_with_another_hash_is_refused() -> None:
    fixture = load_fixture(reference_path("parity/res50_s4.npz"))
    spec = dict(fixture["subset"]["regenerated"]["in_frames"], sha256="0" * 64)
    with pytest.raises(AssertionError, match="regenerated frames input differs"):
        regenerate_input(spec, fixture)


def test_as_stored_takes_the_kept_entries() -> None:
    fixture = load_fixture(reference_path("parity/res50_s4.npz"))
    cut = fixture["subset"]["cuts"]["int_query_gen_probe"]
    ours = torch.arange(np.prod(cut["source_shape"])).reshape(cut["source_shape"])
    kept = as_stored(fixture, "int_query_gen_probe", ours)
    assert kept[:, :, 0].tolist()[0] == [i * 256 for i in cut["index"]]
    with pytest.raises(AssertionError, match="shape"):
        as_stored(fixture, "int_query_gen_probe", ours[:, :10])
    uncut = torch.zeros(3)
    assert as_stored(fixture, "out_pred", uncut) is uncut


def test_manifests_and_missing_fixture() -> None:
    assert load_manifest("pvt2_ms3")["num_classes"] == 1
    assert (REFERENCE_DIR / "make_subset.py").is_file()
    with pytest.raises(pytest.fail.Exception, match="reference fixture missing: .*nothing.npz"):
        reference_path("nothing.npz")
