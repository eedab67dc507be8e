"""Multi-scale deformable attention as one Triton kernel, forward and backward.

Computes exactly :func:`avsegformer.modeling.deform_attn.deformable_attention` (the
pure-PyTorch reference: softmax of the attention logits over levels x points, sampling
locations ``reference + offset / size``, bilinear sampling with zero padding and
``align_corners=False``, weighted sum), but in one pass per (frame, head, block of
queries): the logits, offsets and reference points are read once, the softmax and the
locations are computed in registers, and each of the ``4 * L * P`` bilinear taps reads
one ``D``-vector of the value table (consecutive bytes). Arithmetic is float32 whatever
the input dtype; the output has the value's dtype. Nothing of size ``[B, Q, M, L, P]``
is written to memory, which is where the ``grid_sample`` route spends its time and, in
training, its memory (it keeps the sampled values of every point for the backward).

The backward recomputes the taps: the offset gradients are written directly (each
program owns its queries); the weight gradients wait in a float32 buffer until the
softmax backward's sum over the ``L * P`` samples is known, and the value gradient is
accumulated with float32 atomic adds (as the authors' CUDA op does). The reference
points get no gradient (they are constants of the encoder). Where a sample sits exactly
on a pixel centre (Deformable DETR's initialisation puts every sample there) the offset
gradient is one-sided, and which side float rounding picks differs from
``grid_sample``'s.

Runs wherever Triton does: CUDA GPUs, and the CPU under ``TRITON_INTERPRET=1`` (how
the tests check the kernel without a GPU).

# References: Deformable DETR (Zhu et al., arXiv 2010.04159), section 4.1.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

# Queries per program. Forward and backward keep a [BLOCK_Q, D] float32 accumulator
# (D = 32 in the published models) plus, in the backward, the four corner tiles.
FORWARD_BLOCK_Q = 64
BACKWARD_BLOCK_Q = 32
NUM_WARPS = 4


@triton.jit
def _corner(x, y, width_f, height_f, width, start, frame, num_tokens, head, valid_q,
            M: tl.constexpr, D: tl.constexpr):  # fmt: skip
    """Offset of the ``D``-vector at pixel (x, y) of one level and whether it exists.

    ``x``, ``y`` are float pixel indices (integers, possibly outside or NaN): a pixel
    outside the level, or a NaN coordinate, is invalid (zero padding)."""
    valid = valid_q & (x >= 0) & (x <= width_f - 1) & (y >= 0) & (y <= height_f - 1)
    # Clamped (the row of an invalid pixel is never read). Not tl.where: Triton 3.6 fails
    # to compile a select here (TritonGPURemoveLayoutConversions, mismatched layouts).
    xi = tl.minimum(tl.maximum(x, 0.0), width_f - 1.0).to(tl.int32)
    yi = tl.minimum(tl.maximum(y, 0.0), height_f - 1.0).to(tl.int32)
    row = start + yi * width + xi
    offset = ((frame * num_tokens + row).to(tl.int64) * M + head) * D
    return offset, valid


@triton.jit
def _softmax_stats(logits_ptr, head_row, valid_q, LP: tl.constexpr):
    """Maximum and reciprocal sum of exponentials of the ``L * P`` logits of each row.

    One ``[BLOCK_Q]`` vector per logit (no ``[BLOCK_Q, L*P]`` tile: each weight is then
    an element-wise function of one loaded vector)."""
    row = logits_ptr + head_row * LP
    top = tl.load(row, mask=valid_q, other=0.0).to(tl.float32)
    for j in tl.static_range(1, LP):
        top = tl.maximum(top, tl.load(row + j, mask=valid_q, other=0.0).to(tl.float32))
    total = tl.zeros_like(top)
    for j in tl.static_range(LP):
        total += tl.exp(tl.load(row + j, mask=valid_q, other=0.0).to(tl.float32) - top)
    return top, 1.0 / total


@triton.jit
def _program(num_queries, M: tl.constexpr, D: tl.constexpr, BLOCK_Q: tl.constexpr,
             BLOCK_D: tl.constexpr):  # fmt: skip
    """This program's frame, head, queries (and which exist), channels, and its rows of
    the ``[B * Q * M]`` (query, head) table."""
    frame_head = tl.program_id(1)
    frame = frame_head // M
    head = frame_head % M
    q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    valid_q = q < num_queries
    d = tl.arange(0, BLOCK_D)
    head_row = (frame * num_queries + q) * M + head
    return frame, head, q, valid_q, d, d < D, head_row


@triton.jit
def _level(levels_ptr, reference_ptr, reference_frame_stride, frame, q, valid_q, level,
           L: tl.constexpr):  # fmt: skip
    """Size and first token of ``level``, and the queries' reference points on it."""
    height = tl.load(levels_ptr + level * 3).to(tl.float32)
    width = tl.load(levels_ptr + level * 3 + 1)
    start = tl.load(levels_ptr + level * 3 + 2)
    ref = reference_ptr + frame * reference_frame_stride + (q * L + level) * 2
    ref_x = tl.load(ref, mask=valid_q, other=0.0).to(tl.float32)
    ref_y = tl.load(ref + 1, mask=valid_q, other=0.0).to(tl.float32)
    return height, width, start, ref_x, ref_y


@triton.jit
def _sample(logits_ptr, offsets_ptr, head_row, valid_q, logit_max, inverse_total, ref_x, ref_y,
            height, width_f, level, point, L: tl.constexpr, P: tl.constexpr):  # fmt: skip
    """Attention weight of one (level, point) sample, the pixel left of and above it, and
    its fractional position in that pixel; pixel centres at integers,
    ``(ref + offset / W) * W - 0.5``."""
    logit = tl.load(logits_ptr + head_row * (L * P) + level * P + point, mask=valid_q, other=0.0)
    weight = tl.exp(logit.to(tl.float32) - logit_max) * inverse_total
    off = offsets_ptr + ((head_row * L + level) * P + point) * 2
    x = ref_x * width_f + tl.load(off, mask=valid_q, other=0.0).to(tl.float32) - 0.5
    y = ref_y * height + tl.load(off + 1, mask=valid_q, other=0.0).to(tl.float32) - 0.5
    x0 = tl.floor(x)
    y0 = tl.floor(y)
    return weight, x0, y0, x - x0, y - y0


@triton.jit
def _msda_forward_kernel(
    value_ptr, offsets_ptr, logits_ptr, reference_ptr, levels_ptr, out_ptr,
    num_queries, num_tokens, reference_frame_stride,
    M: tl.constexpr, D: tl.constexpr, L: tl.constexpr, P: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    frame, head, q, valid_q, d, valid_d, head_row = _program(num_queries, M, D, BLOCK_Q, BLOCK_D)
    logit_max, inverse_total = _softmax_stats(logits_ptr, head_row, valid_q, L * P)

    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=tl.float32)
    for level in tl.static_range(L):
        height, width, start, ref_x, ref_y = _level(
            levels_ptr, reference_ptr, reference_frame_stride, frame, q, valid_q, level, L
        )
        width_f = width.to(tl.float32)
        for point in tl.static_range(P):
            weight, x0, y0, fx, fy = _sample(
                logits_ptr, offsets_ptr, head_row, valid_q, logit_max, inverse_total,
                ref_x, ref_y, height, width_f, level, point, L, P,
            )  # fmt: skip
            for corner in tl.static_range(4):
                dx = corner % 2
                dy = corner // 2
                offset, valid = _corner(x0 + dx, y0 + dy, width_f, height, width, start,
                                        frame, num_tokens, head, valid_q, M, D)  # fmt: skip
                v = tl.load(
                    value_ptr + offset[:, None] + d[None, :],
                    mask=valid[:, None] & valid_d[None, :],
                    other=0.0,
                ).to(tl.float32)
                wx = fx if dx == 1 else 1.0 - fx
                wy = fy if dy == 1 else 1.0 - fy
                acc += (weight * wx * wy)[:, None] * v
    out = out_ptr + head_row[:, None] * D + d[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=valid_q[:, None] & valid_d[None, :])


@triton.jit
def _msda_backward_kernel(
    value_ptr, offsets_ptr, logits_ptr, reference_ptr, levels_ptr, grad_out_ptr,
    grad_value_ptr, grad_offsets_ptr, grad_logits_ptr, grad_weights_ptr,
    num_queries, num_tokens, reference_frame_stride,
    M: tl.constexpr, D: tl.constexpr, L: tl.constexpr, P: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    frame, head, q, valid_q, d, valid_d, head_row = _program(num_queries, M, D, BLOCK_Q, BLOCK_D)
    LP: tl.constexpr = L * P
    logit_max, inverse_total = _softmax_stats(logits_ptr, head_row, valid_q, LP)
    grad = tl.load(
        grad_out_ptr + head_row[:, None] * D + d[None, :],
        mask=valid_q[:, None] & valid_d[None, :],
        other=0.0,
    ).to(tl.float32)

    # Softmax backward needs sum_k w_k dl/dw_k: accumulated here, while dl/dw_j waits in
    # a float32 buffer until the second pass below.
    weighted_sum = tl.zeros([BLOCK_Q], dtype=tl.float32)
    for level in tl.static_range(L):
        height, width, start, ref_x, ref_y = _level(
            levels_ptr, reference_ptr, reference_frame_stride, frame, q, valid_q, level, L
        )
        width_f = width.to(tl.float32)
        for point in tl.static_range(P):
            weight, x0, y0, fx, fy = _sample(
                logits_ptr, offsets_ptr, head_row, valid_q, logit_max, inverse_total,
                ref_x, ref_y, height, width_f, level, point, L, P,
            )  # fmt: skip
            column = head_row * LP + level * P + point
            o00, ok00 = _corner(x0, y0, width_f, height, width, start,
                                frame, num_tokens, head, valid_q, M, D)  # fmt: skip
            o01, ok01 = _corner(x0 + 1, y0, width_f, height, width, start,
                                frame, num_tokens, head, valid_q, M, D)  # fmt: skip
            o10, ok10 = _corner(x0, y0 + 1, width_f, height, width, start,
                                frame, num_tokens, head, valid_q, M, D)  # fmt: skip
            o11, ok11 = _corner(x0 + 1, y0 + 1, width_f, height, width, start,
                                frame, num_tokens, head, valid_q, M, D)  # fmt: skip
            dd = d[None, :]
            vd = valid_d[None, :]
            v00 = tl.load(value_ptr + o00[:, None] + dd, mask=ok00[:, None] & vd, other=0.0)
            v01 = tl.load(value_ptr + o01[:, None] + dd, mask=ok01[:, None] & vd, other=0.0)
            v10 = tl.load(value_ptr + o10[:, None] + dd, mask=ok10[:, None] & vd, other=0.0)
            v11 = tl.load(value_ptr + o11[:, None] + dd, mask=ok11[:, None] & vd, other=0.0)
            v00 = v00.to(tl.float32)
            v01 = v01.to(tl.float32)
            v10 = v10.to(tl.float32)
            v11 = v11.to(tl.float32)
            gx = fx[:, None]
            gy = fy[:, None]
            top = v00 + gx * (v01 - v00)
            bottom = v10 + gx * (v11 - v10)
            sample = top + gy * (bottom - top)
            grad_weight = tl.sum(grad * sample, axis=1)
            weighted_sum += weight * grad_weight
            tl.store(grad_weights_ptr + column, grad_weight, mask=valid_q)
            # d sample / d x and d y (pixel units = offset units).
            d_x = (1.0 - gy) * (v01 - v00) + gy * (v11 - v10)
            d_y = bottom - top
            goff = grad_offsets_ptr + ((head_row * L + level) * P + point) * 2
            grad_x = weight * tl.sum(grad * d_x, axis=1)
            grad_y = weight * tl.sum(grad * d_y, axis=1)
            tl.store(goff, grad_x.to(grad_offsets_ptr.dtype.element_ty), mask=valid_q)
            tl.store(goff + 1, grad_y.to(grad_offsets_ptr.dtype.element_ty), mask=valid_q)
            # d sample / d value of each corner: its bilinear weight.
            scaled = weight[:, None] * grad
            tl.atomic_add(grad_value_ptr + o00[:, None] + dd, scaled * ((1.0 - gx) * (1.0 - gy)),
                          mask=ok00[:, None] & vd)  # fmt: skip
            tl.atomic_add(grad_value_ptr + o01[:, None] + dd, scaled * (gx * (1.0 - gy)),
                          mask=ok01[:, None] & vd)  # fmt: skip
            tl.atomic_add(grad_value_ptr + o10[:, None] + dd, scaled * ((1.0 - gx) * gy),
                          mask=ok10[:, None] & vd)  # fmt: skip
            tl.atomic_add(grad_value_ptr + o11[:, None] + dd, scaled * (gx * gy),
                          mask=ok11[:, None] & vd)  # fmt: skip
    # Softmax backward: dl/dz_j = w_j * (dl/dw_j - sum_k w_k dl/dw_k).
    tl.debug_barrier()  # the dl/dw_j above were stored by this program's threads
    for j in tl.static_range(LP):
        column = head_row * LP + j
        logit = tl.load(logits_ptr + column, mask=valid_q, other=0.0).to(tl.float32)
        weight = tl.exp(logit - logit_max) * inverse_total
        grad_weight = tl.load(grad_weights_ptr + column, mask=valid_q, other=0.0)
        grad_logit = weight * (grad_weight - weighted_sum)
        tl.store(
            grad_logits_ptr + column,
            grad_logit.to(grad_logits_ptr.dtype.element_ty),
            mask=valid_q,
        )


@functools.lru_cache(maxsize=64)
def _level_table(shapes: tuple[tuple[int, int], ...], device: torch.device) -> torch.Tensor:
    """int32 ``[L, 3]`` ``(H, W, first token)`` on ``device``, made once per pyramid.

    Cached so that a CUDA graph capture, which cannot copy from the host, finds it
    ready; made outside inference mode so that training can use it too."""
    rows, start = [], 0
    for height, width in shapes:
        rows.append((height, width, start))
        start += height * width
    with torch.inference_mode(False):
        return torch.tensor(rows, dtype=torch.int32, device=device)


def _launch_config(value: torch.Tensor, levels: int, points: int) -> dict[str, int]:
    return {
        "M": value.shape[2],
        "D": value.shape[3],
        "L": levels,
        "P": points,
        "BLOCK_D": triton.next_power_of_2(value.shape[3]),
    }


class _FusedDeformableAttention(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        value: torch.Tensor,
        offsets: torch.Tensor,
        logits: torch.Tensor,
        reference_points: torch.Tensor,
        levels: torch.Tensor,
    ) -> torch.Tensor:
        batch, num_tokens, heads, head_dim = value.shape
        _, num_queries, _, num_levels, points, _ = offsets.shape
        out = torch.empty(
            batch, num_queries, heads, head_dim, dtype=value.dtype, device=value.device
        )
        frame_stride = 0 if reference_points.shape[0] == 1 else num_queries * num_levels * 2
        grid = (triton.cdiv(num_queries, FORWARD_BLOCK_Q), batch * heads)
        _msda_forward_kernel[grid](
            value, offsets, logits, reference_points, levels, out,
            num_queries, num_tokens, frame_stride,
            BLOCK_Q=FORWARD_BLOCK_Q, num_warps=NUM_WARPS,
            **_launch_config(value, num_levels, points),
        )  # fmt: skip
        ctx.save_for_backward(value, offsets, logits, reference_points, levels)
        return out.view(batch, num_queries, heads * head_dim)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        value, offsets, logits, reference_points, levels = ctx.saved_tensors  # type: ignore[attr-defined]
        batch, num_tokens, heads, head_dim = value.shape
        _, num_queries, _, num_levels, points, _ = offsets.shape
        grad_out = grad_out.contiguous()
        grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        grad_offsets = torch.empty_like(offsets)
        grad_logits = torch.empty_like(logits)
        grad_weights = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        frame_stride = 0 if reference_points.shape[0] == 1 else num_queries * num_levels * 2
        grid = (triton.cdiv(num_queries, BACKWARD_BLOCK_Q), batch * heads)
        _msda_backward_kernel[grid](
            value, offsets, logits, reference_points, levels, grad_out,
            grad_value, grad_offsets, grad_logits, grad_weights,
            num_queries, num_tokens, frame_stride,
            BLOCK_Q=BACKWARD_BLOCK_Q, num_warps=NUM_WARPS,
            **_launch_config(value, num_levels, points),
        )  # fmt: skip
        return grad_value.to(value.dtype), grad_offsets, grad_logits, None, None


def fused_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    reference_points: torch.Tensor,
    offsets: torch.Tensor,
    logits: torch.Tensor,
) -> torch.Tensor:
    """The Triton version of :func:`~avsegformer.modeling.deform_attn.deformable_attention`.

    Args:
        value: ``[B, S, M, D]`` per-head values of all levels.
        spatial_shapes: ``L`` pairs ``(H_l, W_l)``.
        reference_points: ``[B or 1, Q, L, 2]`` ``(x, y)`` in [0, 1]; no gradient.
        offsets: ``[B, Q, M, L, P, 2]`` sampling offsets in pixels of each level.
        logits: ``[B, Q, M, L * P]`` attention logits (softmax over the last axis).

    Returns:
        ``[B, Q, M * D]`` in the dtype of ``value``; differentiable with respect to
        ``value``, ``offsets`` and ``logits``.
    """
    if reference_points.requires_grad and torch.is_grad_enabled():
        raise NotImplementedError("the fused deformable attention gives no reference-point grad")
    shapes = tuple((int(h), int(w)) for h, w in spatial_shapes)
    levels = _level_table(shapes, value.device)
    return _FusedDeformableAttention.apply(
        value.contiguous(),
        offsets.contiguous(),
        logits.contiguous(),
        reference_points.contiguous(),
        levels,
    )
