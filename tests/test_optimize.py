"""``avsegformer.optimize``: device forms equal the plain modules; the step is explicit.

The parity fixtures run through the optimised model in ``test_model_parity.py``; here
each form is checked on its own (including chunked paths the published shapes do not
reach), and the pure planning functions behind the CUDA forms are checked on the CPU.
"""

from __future__ import annotations

import copy

import pytest
import torch

import avsegformer
from avsegformer.modeling.build import build_model
from avsegformer.modeling.cuda_graphs import CUDAGraphForward, graph_signature
from avsegformer.modeling.deform_attn import MultiScaleDeformableAttention
from avsegformer.modeling.forms import (
    ChunkedMaskDecoder,
    ChunkedQueryMaskMLP,
    DeviceForm,
    GatherDeformableAttention,
    InferenceEncoderLayer,
    accumulating_feed_forward,
    chunk_items,
)
from avsegformer.modeling.head import MaskDecoder, QueryMaskMLP
from avsegformer.modeling.optimize import (
    apply_float32_islands,
    optimize,
    plan_chunk_bytes,
    resolve_sampler,
    restore_plain_forms,
)
from avsegformer.modeling.precision import FLOAT32_ISLANDS, Float32Islands, float32_islands_for
from avsegformer.modeling.transformer import DeformableEncoderLayer


def inputs(n: int, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randn(n, 1, 96, 64, generator=g)


def tiny(name: str = "tiny_s4") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name).eval()


def forms_of(model: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules() if isinstance(m, DeviceForm)}


# ----------------------------------------------------------------------------- the step
@pytest.mark.parametrize("name", ["tiny_s4", "tiny_avss"])
def test_cpu_optimized_model_equals_plain_model(name: str) -> None:
    model = tiny(name)
    frames, audio = inputs(3)
    with torch.no_grad():
        plain = model(frames, audio)
    assert optimize(model, "cpu") is model
    assert forms_of(model) == {
        "GatherDeformableAttention",
        "ChunkedQueryMaskMLP",
        "ChunkedMaskDecoder",
        "InferenceEncoderLayer",
        "InferenceDecoderLayer",
        "InferenceQueryGeneratorLayer",
    }
    with torch.no_grad():
        fast = model(frames, audio)
    torch.testing.assert_close(fast.logits, plain.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.mask_feature, plain.mask_feature, rtol=1e-4, atol=1e-5)
    report = model.optimization
    assert report.sampler == "gather" and report.device == "cpu" and not report.cuda_graphs


def test_optimize_keeps_state_dict_and_restores_plain_forms() -> None:
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize(model, "cpu")
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    restore_plain_forms(model)
    assert forms_of(model) == set()
    assert not hasattr(model, "optimization")
    assert type(model.head.mlp) is QueryMaskMLP and type(model.head.fc) is MaskDecoder


def test_optimize_twice_is_the_same_as_once() -> None:
    model = tiny()
    optimize(model, "cpu")
    first = forms_of(model)
    optimize(model, "cpu")
    assert forms_of(model) == first
    assert type(model.head.mlp).__mro__.count(QueryMaskMLP) == 1  # not a form of a form


def test_training_forms_are_the_plain_modules_on_cpu() -> None:
    model = tiny()
    optimize(model, "cpu")
    optimize(model, "cpu", torch.bfloat16, for_training=True)
    assert forms_of(model) == set()
    assert model.optimization.sampler == "grid_sample"
    model.train()
    frames, audio = inputs(2)
    out = model(frames, audio)
    out.logits.sum().backward()
    assert model.head.transformer.encoder.layers[0].self_attn.value_proj.weight.grad is not None


def test_inference_forms_refuse_autograd() -> None:
    model = tiny()
    optimize(model, "cpu")
    frames, audio = inputs(1)
    with pytest.raises(RuntimeError, match="inference form"):
        model(frames, audio)  # grad enabled, parameters require grad
    with torch.no_grad():
        model(frames, audio)
    model.train()
    with pytest.raises(RuntimeError, match="inference form"), torch.no_grad():
        model(frames, audio)  # dropout is active in training mode


def test_optimize_refuses_impossible_requests() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        optimize(model, "cpu", cuda_graphs=True)
    with pytest.raises(ValueError, match="'triton' needs a CUDA device"):
        optimize(model, "cpu", sampler="triton")
    with pytest.raises(ValueError, match="unknown sampler"):
        optimize(model, "cpu", sampler="nearest")  # type: ignore[arg-type]


def test_sampler_choice_per_device() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_sampler("auto", cpu, for_training=False) == "gather"
    assert resolve_sampler("auto", cpu, for_training=True) == "grid_sample"
    assert resolve_sampler("auto", cuda, for_training=True) in ("triton", "grid_sample")
    assert resolve_sampler("grid_sample", cuda, for_training=False) == "grid_sample"


def test_cpu_grid_sample_sampler_keeps_the_plain_attention() -> None:
    model = tiny()
    optimize(model, "cpu", sampler="grid_sample")
    attention = model.head.transformer.encoder.layers[0].self_attn
    assert type(attention) is MultiScaleDeformableAttention
    assert attention.method == "grid_sample"


def test_public_name() -> None:
    assert avsegformer.optimize is optimize


# ------------------------------------------------------------------------ precision
def test_float32_islands_are_chosen_per_device_and_applied() -> None:
    assert float32_islands_for("cpu") == FLOAT32_ISLANDS["cpu"]
    assert float32_islands_for("mps") == FLOAT32_ISLANDS["cpu"]
    assert float32_islands_for("cuda") == FLOAT32_ISLANDS["cuda"]
    model = build_model("res50_s4", device="meta")
    none = Float32Islands(
        deformable_attention=False,
        input_projections=False,
        decoder_attention_layers=0,
        audio_embeddings=False,
        resnet50_stages=0,
        whole_backbone=True,
    )
    apply_float32_islands(model, none)
    assert not model.head.transformer.encoder.layers[0].self_attn.float32_under_autocast
    assert not model.head.float32_projections and not model.vggish.float32_embeddings
    assert model.backbone.float32_stages == 0 and model.float32_backbone
    decoder = model.head.transformer.decoder.layers
    assert not any(layer.cross_attn.float32_under_autocast for layer in decoder)
    apply_float32_islands(model, Float32Islands(decoder_attention_layers=3))
    flags = [layer.self_attn.float32_under_autocast for layer in decoder]
    assert flags == [False, False, False, True, True, True]
    assert model.backbone.float32_stages == 1 and not model.float32_backbone


def test_islands_leave_light_backbones_alone() -> None:
    model = build_model("tiny_s4", device="meta")
    apply_float32_islands(model, Float32Islands(resnet50_stages=2))
    assert model.backbone.float32_stages == 0


def test_bfloat16_optimized_cpu_model_agrees_with_float32() -> None:
    model = tiny()
    frames, audio = inputs(2)
    optimize(model, "cpu", torch.bfloat16)
    with torch.no_grad():
        full = model(frames, audio).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(frames, audio).logits.float()
    assert torch.nn.functional.cosine_similarity(full.flatten(), low.flatten(), dim=0) > 0.999


# ---------------------------------------------------------------------- single forms
def test_chunk_planning() -> None:
    assert chunk_items(10, 100, 1000) == 10  # all fit: one chunk
    assert chunk_items(10, 100, 350) == 3
    assert chunk_items(10, 100, 50) == 1  # never zero
    assert chunk_items(0, 100, 50) == 1
    # CUDA budget: a sixteenth of the free memory, within [128 MB, 512 MB].
    assert plan_chunk_bytes(80 * 2**30) == 512 * 2**20
    assert plan_chunk_bytes(4 * 2**30) == 256 * 2**20
    assert plan_chunk_bytes(2**30) == 128 * 2**20
    assert plan_chunk_bytes(0) == 128 * 2**20


def mask_mlp_case(num_layers: int) -> tuple[QueryMaskMLP, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    mlp = QueryMaskMLP(num_queries=30, hidden_dim=64, out_dim=16, num_layers=num_layers).double()
    with torch.no_grad():
        for layer in mlp.layers:
            layer.bias.normal_()  # large biases: many ReLUs switch on the bias alone
    return mlp, torch.randn(5, 30, 16).double(), torch.randn(5, 16, 5, 7).double()


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("fold_biases", [True, False])
@pytest.mark.parametrize("chunk_bytes", [1, 10**9])
def test_chunked_mask_mlp_equals_reference_order(
    num_layers: int, fold_biases: bool, chunk_bytes: int
) -> None:
    mlp, queries, feature = mask_mlp_case(num_layers)
    with torch.no_grad():
        reference = mlp.reference_order(queries, feature)
        plain = mlp(queries, feature)
        mlp.__class__ = ChunkedQueryMaskMLP
        mlp.fold_biases, mlp.chunk_bytes = fold_biases, chunk_bytes  # 1 byte: a frame a chunk
        fast = mlp(queries, feature)
    torch.testing.assert_close(plain, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)


def test_chunked_mask_decoder_equals_plain() -> None:
    torch.manual_seed(0)
    decoder = MaskDecoder(16, (8, 4), 3).eval()
    pixels = torch.randn(5, 16, 6, 6)
    with torch.no_grad():
        plain = decoder(pixels)
        decoder.__class__ = ChunkedMaskDecoder
        decoder.chunk_bytes = 1
        chunked = decoder(pixels)
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-6)


def test_accumulating_feed_forward_equals_the_formula() -> None:
    torch.manual_seed(0)
    linear1, linear2 = torch.nn.Linear(16, 64).double(), torch.nn.Linear(64, 16).double()
    x = torch.randn(3, 7, 16).double()
    expected = x + linear2(torch.nn.functional.gelu(linear1(x)))
    with torch.no_grad():
        for chunk_bytes in (1, 10**9):
            ours = accumulating_feed_forward(x, linear1, linear2, chunk_bytes)
            torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


def test_inference_encoder_layer_equals_plain_layer() -> None:
    torch.manual_seed(0)
    layer = DeformableEncoderLayer(32, 64, num_levels=2, num_heads=4, num_points=2).eval()
    shapes = [(4, 4), (2, 2)]
    tokens, pos = torch.randn(2, 20, 32), torch.randn(1, 20, 32)
    from avsegformer.modeling.deform_attn import encoder_reference_points

    refs = encoder_reference_points(shapes)
    fast_layer = copy.deepcopy(layer)
    fast_layer.__class__ = InferenceEncoderLayer
    fast_layer.self_attn.__class__ = GatherDeformableAttention
    with torch.no_grad():
        torch.testing.assert_close(
            fast_layer(tokens, pos, refs, shapes), layer(tokens, pos, refs, shapes)
        )


# ---------------------------------------------------------------------- CUDA graphs
def test_cuda_graph_forward_falls_back_to_eager_off_cuda() -> None:
    model = tiny()
    frames, audio = inputs(2)
    with torch.no_grad():
        expected = model(frames, audio)
    graphed = CUDAGraphForward(model, model.forward)
    with torch.no_grad():
        got = graphed(frames, audio)
    assert graphed.captures == 0 and graphed.replays == 0
    assert torch.equal(got.logits, expected.logits)


def test_graph_signature_tells_shapes_dtypes_and_autocast_apart() -> None:
    a = torch.zeros(2, 3)
    base = graph_signature(a, None)
    assert graph_signature(torch.ones(2, 3), None) == base  # values do not matter
    assert graph_signature(torch.zeros(3, 3), None) != base
    assert graph_signature(a.double(), None) != base
    assert graph_signature(a.t().contiguous().t(), None) != base  # other strides
    assert graph_signature(a, a) != base
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert graph_signature(a, None) != base


# ---------------------------------------------------------------------------- bench
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--cases", "100x5"], "positive multiple of 32"),
        (["--islands", '{"resnet": 1}'], "fields: deformable_attention"),
        (["--devices", "tpu"], "use cpu, cuda or cuda:N"),
    ],
)
def test_bench_refuses_bad_requests_in_one_line(arguments, message, capsys) -> None:
    from avsegformer.cli import main

    assert main(["bench", "--models", "tiny_s4", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_requests_without_a_gpu_say_so(capsys) -> None:
    from avsegformer.cli import main

    assert main(["bench", "--models", "tiny_s4", "--devices", "cuda"]) == 2
    assert "sees no GPU" in capsys.readouterr().err
    with pytest.raises(ValueError, match="sees no CUDA device"):
        optimize(tiny(), "cuda")
