"""Checks of the Triton deformable-attention kernel against the pure-PyTorch reference.

Used two ways: ``tests/test_triton_kernel.py`` runs this file as a script under
``TRITON_INTERPRET=1`` (Triton's interpreter, on the CPU), and the CUDA tests call
:func:`check_case` on a GPU. Every case draws fresh random inputs; the reference is
:func:`avsegformer.modeling.deform_attn.deformable_attention` (``grid_sample``) in
float64 on the same (rounded) inputs, forward and gradients.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from avsegformer.modeling.deform_attn import deformable_attention


@dataclass(frozen=True)
class Case:
    shapes: tuple[tuple[int, int], ...]
    batch: int = 2
    queries: int = 37
    heads: int = 3
    head_dim: int = 6
    points: int = 3
    dtype: torch.dtype = torch.float32
    per_frame_reference: bool = False
    offset_scale: float = 2.0
    nan_offsets: bool = False


CASES = [
    Case(shapes=((6, 5), (3, 3), (2, 1))),  # queries, L*P and D not powers of two
    Case(shapes=((4, 4),), batch=1, queries=64, heads=2, head_dim=8, points=4),
    Case(shapes=((5, 7), (3, 4)), per_frame_reference=True, offset_scale=6.0),  # far points
    Case(shapes=((6, 5), (3, 3)), dtype=torch.bfloat16),
    Case(shapes=((6, 5), (3, 3)), nan_offsets=True),
]


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """Float32 arithmetic inside the kernel; bfloat16 outputs are rounded to 8 bits."""
    if dtype == torch.bfloat16:
        return {"rtol": 2e-2, "atol": 2e-2}
    return {"rtol": 1e-4, "atol": 1e-5}


def make_inputs(case: Case, device: str, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = sum(h * w for h, w in case.shapes)
    levels = len(case.shapes)
    b, q, m, d, p = case.batch, case.queries, case.heads, case.head_dim, case.points
    value = torch.randn(b, tokens, m, d, generator=g)
    offsets = torch.randn(b, q, m, levels, p, 2, generator=g) * case.offset_scale
    if case.nan_offsets:
        offsets[0, 3, 1, 0, 0, 0] = float("nan")
    logits = torch.randn(b, q, m, levels * p, generator=g) * 2
    reference = torch.rand(b if case.per_frame_reference else 1, q, levels, 2, generator=g)
    reference = reference * 1.2 - 0.1  # some reference points outside the image
    # Keep samples off the pixel-centre lines, where the bilinear weights have kinks:
    # there the kernel (float32) and the reference (float64) may round to either side,
    # and the offset gradients jump.
    size = torch.tensor([[w, h] for h, w in case.shapes], dtype=torch.float64)
    pixel = reference[:, :, None, :, None, :].double() * size[:, None, :] + offsets.double() - 0.5
    fraction = pixel - pixel.floor()
    near = (fraction < 0.02) | (fraction > 0.98)
    offsets = offsets + 0.1 * near.to(offsets.dtype)
    cast = {
        "value": value.to(case.dtype),
        "offsets": offsets.to(case.dtype),
        "logits": logits.to(case.dtype),
        "reference": reference,  # float32 in the model
    }
    return {k: v.to(device) for k, v in cast.items()}


def check_case(case: Case, device: str, seed: int = 0) -> None:
    """Forward and gradients of the kernel against the float64 reference."""
    from avsegformer.modeling.kernels.deform_attn_triton import fused_deformable_attention

    x = make_inputs(case, device, seed)
    grads_of = ("value", "offsets", "logits")
    ours_in = {k: (v.clone().requires_grad_(k in grads_of)) for k, v in x.items()}
    ref_in = {k: (v.double().clone().requires_grad_(k in grads_of)) for k, v in x.items()}

    out = fused_deformable_attention(
        ours_in["value"], case.shapes, ours_in["reference"], ours_in["offsets"], ours_in["logits"]
    )
    expected = deformable_attention(
        ref_in["value"], case.shapes, ref_in["reference"], ref_in["offsets"], ref_in["logits"]
    )
    assert out.dtype == case.dtype and out.shape == expected.shape
    tol = tolerance(case.dtype)
    g = torch.Generator().manual_seed(seed + 1)
    grad_out = torch.randn(expected.shape, generator=g).to(device)
    if case.nan_offsets:
        # A NaN location gives NaN for its (query, head), as grid_sample does; the rest
        # stays exact. Gradients of NaN are not compared.
        torch.testing.assert_close(out.double(), expected, equal_nan=True, **tol)
        head_dim = case.head_dim
        assert out[0, 3, head_dim : 2 * head_dim].isnan().all()
        assert torch.isfinite(out).sum() == out.numel() - head_dim
        return
    torch.testing.assert_close(out.double(), expected, **tol)
    ours_grads = torch.autograd.grad(out, [ours_in[k] for k in grads_of], grad_out.to(out.dtype))
    ref_grads = torch.autograd.grad(expected, [ref_in[k] for k in grads_of], grad_out.double())
    for name, ours, ref in zip(grads_of, ours_grads, ref_grads, strict=True):
        assert ours.dtype == case.dtype, f"grad {name} dtype {ours.dtype}"
        scale = ref.abs().max().item() or 1.0
        try:
            torch.testing.assert_close(
                ours.double() / scale, ref / scale, rtol=tol["rtol"], atol=tol["atol"]
            )
        except AssertionError as error:
            raise AssertionError(f"gradient of {name}: {error}") from None


def compile_kernels(dtype: str, capability: int = 90) -> dict[str, str]:
    """Compile forward and backward for a CUDA target without a GPU (MLIR passes and
    ptxas, as the JIT does on first use), with the published model's constants and the
    specialisation of its shapes (pointers and the zero reference stride divisible by
    16). Returns each kernel's resource usage line (registers, spills) when cuobjdump is
    there."""
    import subprocess
    import tempfile
    from pathlib import Path

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from avsegformer.modeling.kernels import deform_attn_triton as k

    float32_buffers = ("reference_ptr", "grad_value_ptr", "grad_weights_ptr")
    usage = {}
    kernels = (
        (k._msda_forward_kernel, k.FORWARD_BLOCK_Q),
        (k._msda_backward_kernel, k.BACKWARD_BLOCK_Q),
    )
    for kernel, block_q in kernels:
        constants = {"M": 8, "D": 32, "L": 3, "P": 4, "BLOCK_Q": block_q, "BLOCK_D": 32}
        signature, attrs = {}, {}
        for index, name in enumerate(kernel.arg_names):
            if name in constants:
                signature[name] = "constexpr"
            elif name.endswith("_ptr"):
                element = (
                    "i32" if name == "levels_ptr" else "fp32" if name in float32_buffers else dtype
                )
                signature[name] = "*" + element
                attrs[(index,)] = [["tt.divisibility", 16]]
            else:
                signature[name] = "i32"
                if name == "reference_frame_stride":
                    attrs[(index,)] = [["tt.divisibility", 16]]
        source = ASTSource(
            fn=kernel,
            signature=signature,
            constexprs={(kernel.arg_names.index(n),): v for n, v in constants.items()},
            attrs=attrs,
        )
        compiled = triton.compile(
            source, target=GPUTarget("cuda", capability, 32), options={"num_warps": k.NUM_WARPS}
        )
        tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        line = ""
        if tool.is_file():
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(compiled.asm["cubin"])
                f.flush()
                done = subprocess.run(
                    [str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True
                )
            line = next((x.strip() for x in done.stdout.splitlines() if "REG:" in x), "")
        usage[kernel.fn.__name__] = line
    return usage


def move_samples_off_pixel_centres(model: torch.nn.Module) -> None:
    """Deformable DETR's initialisation puts every sample exactly on a pixel centre, a
    kink of bilinear interpolation, where the offset gradient is one-sided and float
    rounding picks the side (grid_sample and the kernel pick differently: the offset
    weights' gradients were 10-30 % apart on tiny_s4 and res50_s4). Random offsets make
    the gradient well defined."""
    from avsegformer.modeling.deform_attn import MultiScaleDeformableAttention

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                weight, bias = module.sampling_offsets.weight, module.sampling_offsets.bias
                weight.copy_((torch.randn(weight.shape, generator=g) * 0.02).to(weight))
                bias.add_((torch.rand(bias.shape, generator=g) * 0.6 + 0.2).to(bias))


def check_model_gradients(device: str) -> None:
    """tiny_s4 with the kernel gives the plain model's logits and parameter gradients."""
    from avsegformer.modeling.build import build_model
    from avsegformer.modeling.deform_attn import MultiScaleDeformableAttention

    torch.manual_seed(0)
    plain = build_model("tiny_s4").to(device).eval()
    move_samples_off_pixel_centres(plain)
    fast = build_model("tiny_s4").to(device).eval()
    fast.load_state_dict(plain.state_dict())
    for module in fast.modules():
        if isinstance(module, MultiScaleDeformableAttention):
            module.method = "triton"
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 3, 64, 64, generator=g).to(device)
    audio = torch.randn(2, 1, 96, 64, generator=g).to(device)
    logits = []
    for model in (plain, fast):
        out = model(frames, audio)
        (out.logits.square().mean() + out.mask_feature.mean()).backward()
        logits.append(out.logits.detach())
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)
    for (key, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), key
        if p.grad is not None:
            error = (q.grad - p.grad).norm() / p.grad.norm().clamp_min(1e-12)
            assert error < 1e-4, f"{key}: relative gradient error {error:.2e}"


def main(device: str = "cpu") -> int:
    for index, case in enumerate(CASES):
        check_case(case, device, seed=index)
        print(f"ok {index} {case}")
    check_model_gradients(device)
    print("ok tiny_s4 gradients")
    print(f"all {len(CASES)} cases passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
