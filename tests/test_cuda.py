"""The CUDA forms against the plain model: forward, gradients, CUDA graphs, precision.

Marked ``cuda``: skipped without a GPU, run by ``make test-cuda``. Float32 comparisons
turn TF32 off (PyTorch lets cuDNN use it by default), so that they test the forms, not
the 10-bit products. Reference numbers come from the parity fixtures.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from _reference import apply_weight_rule, assert_close, load_fixture, reference_path
from _triton_checks import CASES, Case, check_case, move_samples_off_pixel_centres
from avsegformer.modeling.build import build_model
from avsegformer.modeling.kernels import triton_available
from avsegformer.modeling.optimize import optimize

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

needs_triton = pytest.mark.skipif(not triton_available(), reason="needs the triton package")


@pytest.fixture()
def strict_float32() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.cpu() > 0, b.cpu() > 0
    return float((a & b).sum() / (a | b).sum())


# ------------------------------------------------------------------- Triton kernel
PUBLISHED = [
    Case(
        shapes=((28, 28), (14, 14), (7, 7)),
        batch=2,
        queries=1029,
        heads=8,
        head_dim=32,
        points=4,
        dtype=dtype,
    )  # fmt: skip
    for dtype in (torch.float32, torch.bfloat16)
]


# Each set of sizes compiles anew: the odd cases run in Triton's interpreter on the CPU
# (test_triton_kernel.py); here the published sizes and far points on a per-frame grid.
@needs_triton
@pytest.mark.parametrize("case", PUBLISHED + CASES[2:3], ids=lambda c: f"{c.shapes}-{c.dtype}")
def test_triton_kernel_forward_and_gradients(case: Case, strict_float32: None) -> None:
    for seed in (0, 1):
        check_case(case, "cuda", seed=seed)


# ----------------------------------------------------------------- parity on CUDA
@pytest.fixture(scope="module", params=["res50_s4", "pvt2_s4"])
def parity(request) -> Iterator[dict]:
    fixture = load_fixture(reference_path(f"parity/{request.param}.npz"))
    model = build_model(request.param, overrides={"model.keep_unused_modules": False})
    apply_weight_rule(model.eval(), salt=fixture["meta"]["salt"])
    frames = torch.from_numpy(fixture["in_frames"].astype(np.float32))
    audio = torch.from_numpy(fixture["int_vggish_input"])
    yield {"name": request.param, "fixture": fixture, "model": model, "inputs": (frames, audio)}
    del model
    gc.collect()
    torch.cuda.empty_cache()


def test_optimized_float32_model_matches_fixture(parity: dict, strict_float32: None) -> None:
    model = optimize(parity["model"], "cuda", torch.float32, cuda_graphs=True)
    frames, audio = (t.cuda() for t in parity["inputs"])
    with torch.inference_mode():
        first = model(frames, audio)
        again = model(frames, audio)  # a replay
        other = model(frames * 0.5, audio)  # new values, same graph
    graphs = model.forward
    assert graphs.captures == 1 and graphs.replays == 3
    fx = parity["fixture"]
    assert_close("pred (CUDA graph)", first.logits, fx["out_pred"])
    assert_close("pred (replay)", again.logits, fx["out_pred"])
    assert not torch.allclose(other.logits, first.logits)
    plain = build_model(parity["name"], overrides={"model.keep_unused_modules": False})
    plain.load_state_dict(model.state_dict())
    plain = plain.cuda().eval()
    with torch.inference_mode():
        expected = plain(frames * 0.5, audio)
    torch.testing.assert_close(other.logits, expected.logits, rtol=1e-4, atol=1e-4)


def test_bfloat16_masks_agree_with_float32(parity: dict) -> None:
    """CUDA islands: bf16 binary masks within IoU 0.99 of the authors' float32 output."""
    model = optimize(parity["model"], "cuda", torch.bfloat16, cuda_graphs=True)
    frames, audio = (t.cuda() for t in parity["inputs"])
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        low = model(frames, audio).logits.float()
    reference = torch.from_numpy(parity["fixture"]["out_pred"])
    iou = mask_iou(low, reference)
    assert iou >= 0.99, f"{parity['name']}: bf16 vs float32 mask IoU {iou:.4f} < 0.99"


# ------------------------------------------------------------------- training forms
@needs_triton
@pytest.mark.parametrize("name", ["tiny_s4", "res50_s4"])
def test_training_forms_give_the_plain_gradients(name: str, strict_float32: None) -> None:
    torch.manual_seed(0)
    plain = build_model(name, overrides={"model.keep_unused_modules": False}).cuda()
    fast = build_model(name, overrides={"model.keep_unused_modules": False}).cuda()
    move_samples_off_pixel_centres(plain)
    fast.load_state_dict(plain.state_dict())
    optimize(fast, "cuda", torch.float32, for_training=True)
    attention = fast.head.transformer.encoder.layers[0].self_attn
    assert attention.method == "triton"
    plain.eval(), fast.eval()  # no dropout: the same function
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 3, 96, 128, generator=g).cuda()
    audio = torch.randn(2, 1, 96, 64, generator=g).cuda()
    outputs = []
    for model in (plain, fast):
        out = model(frames, audio)
        (out.logits.square().mean() + out.mask_feature.mean()).backward()
        outputs.append(out.logits.detach())
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)
    for (key, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        if p.grad is None:
            assert q.grad is None, key
            continue
        error = (q.grad - p.grad).norm() / p.grad.norm().clamp_min(1e-12)
        assert error < 1e-3, f"{key}: relative gradient error {error:.2e}"


def test_training_step_runs_in_bfloat16() -> None:
    torch.manual_seed(0)
    model = build_model("res50_s4", overrides={"model.keep_unused_modules": False}).cuda()
    optimize(model, "cuda", torch.bfloat16, for_training=True)
    frames, audio = torch.randn(4, 3, 128, 128).cuda(), torch.randn(4, 1, 96, 64).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(frames, audio)
    out.logits.float().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------------- CUDA graphs
def test_cuda_graphs_capture_once_per_signature() -> None:
    torch.manual_seed(0)
    model = build_model("tiny_s4").cuda().eval()
    eager = build_model("tiny_s4").cuda().eval()
    eager.load_state_dict(model.state_dict())
    optimize(model, "cuda", cuda_graphs=True)
    optimize(eager, "cuda")
    graphs = model.forward
    with torch.inference_mode():
        for n in (2, 3, 2, 3):
            frames, audio = torch.randn(n, 3, 128, 128).cuda(), torch.randn(n, 1, 96, 64).cuda()
            torch.testing.assert_close(model(frames, audio).logits, eager(frames, audio).logits)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(frames, audio)
    assert graphs.captures == 3 and graphs.replays == 5
    # Autograd recording: eager (and refused by the inference forms).
    frames, audio = torch.randn(2, 3, 128, 128).cuda(), torch.randn(2, 1, 96, 64).cuda()
    with pytest.raises(RuntimeError, match="inference form"):
        model(frames, audio)
    assert graphs.captures == 3


def test_cuda_graphs_check_inputs_before_every_replay() -> None:
    """The NaN / inf check runs outside the capture (a sync there would abort it) and
    before each replay (which runs no Python); model.check_inputs=False skips it."""
    from avsegformer.errors import InputShapeError, NonFiniteError

    model = build_model("tiny_s4").cuda().eval()
    optimize(model, "cuda", cuda_graphs=True)
    graphs = model.forward
    frames, audio = torch.randn(2, 3, 128, 128).cuda(), torch.randn(2, 1, 96, 64).cuda()
    bad = frames.clone()
    bad[0, 0, 0, 0] = float("nan")
    with torch.inference_mode():
        with pytest.raises(NonFiniteError, match="frames given to the model"):
            model(bad, audio)  # before the first capture
        model(frames, audio)
        assert graphs.captures == 1 and graphs.failures == 0
        with pytest.raises(NonFiniteError, match="audio given to the model"):
            model(frames, audio * float("inf"))  # a known signature: before the replay
        with pytest.raises(InputShapeError, match="frames are on cpu"):
            model(frames.cpu(), audio)
        replays = graphs.replays
        model.check_inputs = False
        assert not torch.isfinite(model(bad, audio).logits).all()
        assert graphs.replays == replays + 1 and graphs.failures == 0


def test_predictor_on_cuda_equals_cpu() -> None:
    pytest.importorskip("av")
    from pathlib import Path

    from avsegformer.predictor import Predictor, Sample

    checkpoint = Path(__file__).resolve().parents[1] / "checkpoints" / "demo_tiny_s4.safetensors"
    g = np.random.default_rng(0)
    samples = [
        Sample(
            index=i,
            time=i + 15 / 16,
            frame_time=float(i),
            frame=g.integers(0, 255, (120, 160, 3), dtype=np.uint8),
            audio_start=float(i),
            waveform=g.standard_normal(15600).astype(np.float32) * 0.1,
            audio_padding=0.0,
        )
        for i in range(3)
    ]
    masks = {}
    for device in ("cpu", "cuda"):
        predictor = Predictor.from_checkpoint(checkpoint, device=device, batch_size=2)
        masks[device] = [p.mask for _, p in predictor.predict_samples(samples)]
    for cpu, cuda in zip(masks["cpu"], masks["cuda"], strict=True):
        union = (cpu | cuda).sum()
        assert union == 0 or (cpu & cuda).sum() / union >= 0.999
