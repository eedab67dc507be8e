"""AVSegFormer structure and behaviour: state-dict layout, shapes, masks, gradients."""

from __future__ import annotations

import pytest
import torch

import avsegformer
from _reference import apply_weight_rule, load_manifest
from avsegformer.errors import ConfigError, InputShapeError, NonFiniteError
from avsegformer.modeling.avsegformer import AVSegFormer, AVSegFormerOutput
from avsegformer.modeling.head import QueryMaskMLP
from avsegformer.modeling.precision import float32_island
from avsegformer.modeling.vggish import MaxPool2x2
from avsegformer.pretrained import build_model  # the network plus pretrained weights
from avsegformer.zoo import get_config, list_models

OFFICIAL = ["res50_s4", "res50_ms3", "res50_avss", "pvt2_s4", "pvt2_ms3", "pvt2_avss"]
TINY = ["tiny_s4", "tiny_ms3", "tiny_avss"]


def inputs(n: int, height: int = 64, width: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, height, width, generator=g), torch.randn(n, 1, 96, 64, generator=g)


@pytest.fixture(scope="module")
def res50() -> AVSegFormer:
    """res50_s4 with the reference weight rule, eval mode (shared, do not modify)."""
    model = build_model("res50_s4").eval()
    apply_weight_rule(model)
    return model


@pytest.fixture(scope="module")
def tiny() -> AVSegFormer:
    torch.manual_seed(0)
    return build_model("tiny_s4").eval()


# ------------------------------------------------------------------ state-dict layout
@pytest.mark.parametrize("name", OFFICIAL)
def test_state_dict_matches_manifest(name: str) -> None:
    manifest = load_manifest(name)
    model = build_model(name, device="meta")
    state = model.state_dict()
    expected = {e["key"]: (tuple(e["shape"]), e["dtype"]) for e in manifest["state_dict"]}
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}
    assert sorted(set(expected) - set(ours)) == [], "missing keys"
    assert sorted(set(ours) - set(expected)) == [], "unexpected keys"
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}, "shape/dtype mismatch"
    parameters = {k for k, _ in model.named_parameters()}
    manifest_parameters = {e["key"] for e in manifest["state_dict"] if e["kind"] == "parameter"}
    assert parameters == manifest_parameters
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]


def test_registry_has_official_and_tiny_models() -> None:
    names = list_models()
    assert set(OFFICIAL + TINY) <= set(names)
    assert set(list_models(official=True)) == set(OFFICIAL)
    for name in TINY:
        cfg = get_config(name)
        assert not cfg.model.keep_unused_modules and not cfg.model.freeze_audio
        assert cfg.data.img_size % 32 == 0


def test_frame_size_must_fit_the_backbone_stride() -> None:
    with pytest.raises(ConfigError, match="multiple of 32, got 112"):
        get_config("tiny_s4").with_overrides(["img_size=112"])


def test_unknown_model_and_bad_configs_raise() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("res51_s4")
    with pytest.raises(ConfigError, match="in_channels"):
        build_model("tiny_s4", overrides={"model.in_channels": "16,32,64,128"}, device="meta")
    with pytest.raises(ConfigError, match="gn_groups"):
        build_model("tiny_s4", overrides={"model.gn_groups": 7}, device="meta")


def test_unused_modules_only_when_asked() -> None:
    lean = build_model("res50_s4", overrides={"model.keep_unused_modules": False}, device="meta")
    keys = lean.state_dict().keys()
    assert not any(k.startswith(("backbone.layer3_2", "head.fpn", "head.attn_fc")) for k in keys)


# --------------------------------------------------------------------------- forward
@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    frames, audio = inputs(3, 96, 128)
    with torch.no_grad():
        out = model(frames, audio)
    assert isinstance(out, AVSegFormerOutput)
    classes = get_config(name).num_classes
    assert out.logits.shape == (3, classes, 96, 128)
    assert out.mask_feature.shape == (3, 64, 24, 32)
    assert torch.isfinite(out.logits).all() and (out.mask_feature >= 0).all()


def test_frames_are_independent_single_frame_and_non_square(res50: AVSegFormer) -> None:
    """N = 1 works (the reference crashes) and equals the same frame inside a batch."""
    frames, audio = inputs(3, 64, 96)
    with torch.no_grad():
        batch = res50(frames, audio)
        single = res50(frames[1:2], audio[1:2])
    assert single.logits.shape == (1, 1, 64, 96)
    assert single.mask_feature.shape == (1, 256, 16, 24)
    torch.testing.assert_close(single.logits, batch.logits[1:2], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(single.mask_feature, batch.mask_feature[1:2], rtol=1e-4, atol=1e-4)


def test_keyword_call_and_tuple_unpacking(tiny: AVSegFormer) -> None:
    frames, audio = inputs(2)
    with torch.no_grad():
        by_keyword = tiny(frames=frames, audio=audio)
        logits, mask_feature = tiny(frames, audio)
    torch.testing.assert_close(by_keyword.logits, logits)
    torch.testing.assert_close(by_keyword.mask_feature, mask_feature)


def test_temporal_mask_zeroes_padded_frames(tiny: AVSegFormer) -> None:
    frames, audio = inputs(4)
    flag = torch.tensor([1.0, 0.0, 1.0, 0.0])
    with torch.no_grad():
        masked = tiny(frames, audio, flag)
        plain = tiny(frames, audio)
        as_bool = tiny(frames, audio, flag.bool())
    assert (masked.logits[flag == 0] == 0).all() and (masked.mask_feature[flag == 0] == 0).all()
    torch.testing.assert_close(masked.logits[flag == 1], plain.logits[flag == 1])
    torch.testing.assert_close(as_bool.logits, masked.logits)


def test_unused_modules_do_not_influence_the_output(res50: AVSegFormer) -> None:
    frames, audio = inputs(2)
    with torch.no_grad():
        before = res50(frames, audio).logits
        saved = {}
        for name in ("backbone.layer3_2", "backbone.layer4_2", "head.fpn", "head.attn_fc"):
            for key, p in res50.get_submodule(name).named_parameters():
                saved[f"{name}.{key}"] = p.clone()
                p.add_(1.0)
        after = res50(frames, audio).logits
        for key, value in saved.items():
            res50.get_parameter(key).copy_(value)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("frames_shape", "audio_shape", "mask", "match"),
    [
        ((2, 1, 64, 64), (2, 1, 96, 64), None, "frames must be"),
        ((2, 3, 64, 80), (2, 1, 96, 64), None, "multiple of 32"),
        ((2, 3, 64, 64), (3, 1, 96, 64), None, "2 frame.s. but 3 audio example.s.; .* per frame"),
        ((2, 3, 64, 64), (2, 96, 64), None, "audio must be"),
        ((2, 3, 64, 64), (2, 1, 96, 64), (3,), "temporal_mask"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny, frames_shape, audio_shape, mask, match) -> None:
    m = None if mask is None else torch.ones(mask)
    with pytest.raises(InputShapeError, match=match):
        tiny(torch.zeros(frames_shape), torch.zeros(audio_shape), m)


def test_non_finite_inputs_are_named_and_the_check_can_be_turned_off(tiny) -> None:
    frames, audio = inputs(2)
    bad_frames = frames.clone()
    bad_frames[1, 0, 3, :2] = float("nan")
    with pytest.raises(NonFiniteError, match=r"^frames given to the model: 2 of 24576 values"):
        tiny(bad_frames, audio)
    bad_audio = audio.clone()
    bad_audio[0, 0, 5, 7] = float("inf")
    with pytest.raises(NonFiniteError, match=r"^audio given to the model: 1 of"):
        tiny(frames, bad_audio)
    with pytest.raises(NonFiniteError, match="temporal_mask"):
        tiny(frames, audio, torch.tensor([1.0, float("nan")]))
    assert tiny.check_inputs
    tiny.check_inputs = False
    try:
        with torch.no_grad():
            logits = tiny(bad_frames, audio).logits  # the caller's choice: no check
    finally:
        tiny.check_inputs = True
    assert not torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("frames", "audio", "match"),
    [
        (lambda f: f.double(), None, r"frames are torch.float64 .*pass frames.to\(torch.float32\)"),
        (lambda f: f.half(), None, r"frames are torch.float16 but the model's weights are"),
        (lambda f: f.bfloat16(), None, "torch.autocast"),
        (None, lambda a: a.long(), r"audio must be a floating-point tensor .* got torch.int64"),
        (None, lambda a: a.double(), "audio are torch.float64"),
        (lambda f: f[:0], lambda a: a[:0], r"no frame \(N = 0\)"),
        (lambda f: f.numpy(), None, r"frames must be a torch.Tensor .*numpy.ndarray.*from_numpy"),
        (lambda f: list(f), None, r"frames must be a torch.Tensor .* list .*torch.stack"),
        (None, lambda a: a.numpy(), r"audio must be a torch.Tensor"),
        (None, lambda a: a[:1], r"2 frame\(s\) but 1 audio example"),
        (lambda f: f[:, :1], None, r"\[N, 3, H, W\] \(RGB\), got \[2, 1, 64, 64\].*expand"),
        (lambda f: torch.cat([f, f[:, :1]], 1), None, r"got \[2, 4, 64, 64\].*alpha"),
        (lambda f: f.permute(0, 2, 3, 1), None, r"permute\(0, 3, 1, 2\)"),
        (lambda f: f[0], None, r"frames\[None\]"),
        (None, lambda a: a[:, 0], r"audio\[:, None\]"),
        (
            lambda f: f.to("meta"),
            lambda a: a.to("meta"),
            "frames are on meta but the model is on cpu",
        ),
    ],
)
def test_api_misuse_gets_input_shape_errors_with_the_fix(tiny, frames, audio, match) -> None:
    f, a = inputs(2)
    f = frames(f) if frames else f
    a = audio(a) if audio else a
    with pytest.raises(InputShapeError, match=match):
        tiny(f, a)


def test_autocast_dtypes_are_accepted_under_autocast(tiny) -> None:
    frames, audio = inputs(1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for f in (frames, frames.bfloat16()):
            assert tiny(f, audio.bfloat16()).logits.shape == (1, 1, 64, 64)
        with pytest.raises(InputShapeError, match="float64"):
            tiny(frames.double(), audio)


def test_graph_replayer_reports_misuse_like_the_model(tiny) -> None:
    from avsegformer.modeling.cuda_graphs import CUDAGraphForward

    graphed = CUDAGraphForward(tiny, tiny.forward)
    frames, audio = inputs(1)
    with torch.no_grad(), pytest.raises(InputShapeError, match="torch.stack"):
        graphed(list(frames), audio)
    with torch.no_grad(), pytest.raises(NonFiniteError, match="frames"):
        graphed(frames * float("nan"), audio)


# -------------------------------------------------------------------------- training
def test_backward_full_model_keeps_vggish_frozen() -> None:
    torch.manual_seed(0)
    model = build_model("res50_s4").train()
    frames, audio = inputs(2)
    out = model(frames, audio)
    (out.logits.mean() + out.mask_feature.mean()).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.vggish.parameters())
    assert not model.vggish.training, "a frozen audio encoder stays in eval mode"
    assert model.backbone.conv1.weight.grad is not None
    assert model.audio_proj.weight.grad is not None
    assert model.head.query_generator.query.weight.grad is not None
    assert (
        model.head.transformer.encoder.layers[0].self_attn.sampling_offsets.weight.grad is not None
    )
    # Modules the forward never uses get no gradient.
    assert model.backbone.layer3_2[0].conv1.weight.grad is None
    assert model.head.fpn.up1[1].weight.grad is None

    model.zero_grad(set_to_none=True)
    model.freeze_backbone(True)
    out = model(frames, audio)
    out.logits.mean().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.head.fc[0].weight.grad is not None
    model.freeze_backbone(False)
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_light_audio_encoder_is_trained() -> None:
    torch.manual_seed(0)
    model = build_model("tiny_avss").train()
    frames, audio = inputs(2)
    out = model(frames, audio, torch.tensor([1.0, 1.0]))
    out.logits.square().mean().backward()
    grads = [p.grad for p in model.audio_encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_pvt_stochastic_depth_only_in_training() -> None:
    torch.manual_seed(0)
    backbone = build_model("pvt2_s4").backbone
    x = torch.randn(2, 3, 64, 64)
    backbone.train()
    with torch.no_grad():
        a, b = backbone(x)[3], backbone(x)[3]
    assert not torch.equal(a, b)
    backbone.eval()
    with torch.no_grad():
        c, d = backbone(x)[3], backbone(x)[3]
    assert torch.equal(c, d)


# ------------------------------------------------------------------ parts and options
def test_folded_mask_mlp_equals_reference_order() -> None:
    torch.manual_seed(0)
    mlp = QueryMaskMLP(num_queries=30, hidden_dim=64, out_dim=16).double()
    queries, feature = torch.randn(3, 30, 16).double(), torch.randn(3, 16, 5, 7).double()
    folded = mlp(queries, feature)
    mlp.mode = "reference"
    reference = mlp(queries, feature)
    torch.testing.assert_close(folded, reference, rtol=1e-12, atol=1e-12)
    mlp.mode = "other"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="mode"):
        mlp(queries, feature)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("grad", [True, False])
def test_folded_mask_mlp_with_and_without_autograd(num_layers: int, grad: bool) -> None:
    """The plain folded order equals the reference order, large biases included (the
    device forms are checked in test_optimize.py)."""
    torch.manual_seed(0)
    mlp = QueryMaskMLP(num_queries=30, hidden_dim=64, out_dim=16, num_layers=num_layers)
    mlp = mlp.double()
    with torch.no_grad():
        for layer in mlp.layers:
            layer.bias.normal_()  # large biases: many ReLUs switch on the bias alone
    queries, feature = torch.randn(3, 30, 16).double(), torch.randn(3, 16, 5, 7).double()
    with torch.set_grad_enabled(grad):
        folded = mlp(queries, feature)
    mlp.mode = "reference"
    with torch.no_grad():
        reference = mlp(queries, feature)
    torch.testing.assert_close(folded, reference, rtol=1e-12, atol=1e-12)


def test_reference_mlp_mode_builds_and_matches(tiny: AVSegFormer) -> None:
    torch.manual_seed(0)
    reference = build_model("tiny_s4", mlp_mode="reference").eval()
    reference.load_state_dict(tiny.state_dict())
    frames, audio = inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(reference(frames, audio).logits, tiny(frames, audio).logits)


def test_max_pool_2x2_matches_library_pooling() -> None:
    x = torch.randn(2, 3, 8, 6)
    torch.testing.assert_close(MaxPool2x2()(x), torch.nn.functional.max_pool2d(x, 2, 2))


def test_float32_island_only_under_autocast() -> None:
    x = torch.randn(3, dtype=torch.float64)
    with float32_island(x) as (y,):
        assert y is x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with float32_island(x.bfloat16()) as (y,):
            assert y.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
        with float32_island(x.bfloat16(), enabled=False) as (y,):
            assert y.dtype == torch.bfloat16


def test_package_exports() -> None:
    assert avsegformer.build_model is build_model
    assert avsegformer.AVSegFormer is AVSegFormer
    assert "load_checkpoint" in dir(avsegformer)


def test_flop_count_of_a_res50_clip() -> None:
    """Shape-only count (meta device): the authors' order costs ~0.42 TFLOP per 5 frames."""
    from avsegformer.commands.bench import count_flops

    flops = count_flops("res50_s4", frames=5, size=224)
    assert 3.9e11 < flops["reference"] < 4.3e11
    # The folded mask MLP and the exact attention shortcuts only remove work.
    assert 0.95 * flops["reference"] < flops["executed"] < flops["reference"]


def test_bench_worker_caps_the_instruction_set() -> None:
    """``--cpu-isa avx2`` reaches the worker process (ATen reports AVX2 kernels)."""
    from avsegformer.commands.bench import _in_subprocess

    case = _in_subprocess(
        {
            "kind": "forward",
            "model": "tiny_s4",
            "size": 64,
            "frames": 1,
            "dtype": "float32",
            "device": "cpu",
            "repeats": 1,
            "warmup": 0,
            "threads": 1,
            "allocator": "default",
            "cpu_isa": "avx2",
        }  # fmt: skip
    )
    assert case["aten_cpu_capability"] == "AVX2"
    assert case["latency_s"] > 0
