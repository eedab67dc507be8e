"""Unit parity of single modules against ``tests/reference/modules.npz``.

Weights come from the reference weight rule under each module's key prefix in the
``res50_s4`` state dict, as the fixture was made.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _reference import apply_weight_rule, assert_close, load_fixture, reference_path
from avsegformer.modeling.mixer import CrossModalMixer
from avsegformer.modeling.position_encoding import SinePositionEncoding
from avsegformer.modeling.query_generator import AudioQueryGenerator
from avsegformer.modeling.vggish import VGGish


@pytest.fixture(scope="module")
def fixture():
    return load_fixture(reference_path("modules.npz"))


def test_sine_position_encoding(fixture) -> None:
    expected = fixture["posenc_6x9"]  # [2, 256, 6, 9] of an all-valid mask
    ours = SinePositionEncoding(num_feats=128)(6, 9)
    assert ours.shape == expected.shape[1:]
    for frame in expected:
        np.testing.assert_allclose(ours.numpy(), frame, rtol=0, atol=1e-6)


def test_cross_modal_mixer(fixture) -> None:
    mixer = CrossModalMixer(256, num_heads=8)
    apply_weight_rule(mixer, prefix="head.fusion_block.")
    with torch.no_grad():
        out = mixer(
            torch.from_numpy(fixture["fusion_feature_map"]),
            torch.from_numpy(fixture["fusion_audio_feature"]),
        )
    assert_close("fusion", out, fixture["fusion_out"])


def test_cross_modal_mixer_single_frame(fixture) -> None:
    mixer = CrossModalMixer(256, num_heads=8)
    apply_weight_rule(mixer, prefix="head.fusion_block.")
    feature = torch.from_numpy(fixture["fusion_feature_map"])
    audio = torch.from_numpy(fixture["fusion_audio_feature"])
    with torch.no_grad():
        out = mixer(feature[1:2], audio[1:2])
    assert_close("fusion (N=1)", out, fixture["fusion_out"][1:2])


def test_query_generator(fixture) -> None:
    generator = AudioQueryGenerator(6, 300, dim=256, num_heads=8, ffn_dim=1024)
    apply_weight_rule(generator, prefix="head.query_generator.")
    with torch.no_grad():
        out = generator(torch.from_numpy(fixture["query_gen_audio"]))
    assert_close("query generator", out, fixture["query_gen_out"])


def test_vggish(fixture) -> None:
    vggish = VGGish()
    apply_weight_rule(vggish, prefix="vggish.")
    with torch.no_grad():
        out = vggish(torch.from_numpy(fixture["vggish_in"]))
    assert_close("vggish", out, fixture["vggish_out"])
    assert (out >= 0).all()
