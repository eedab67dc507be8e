"""Multi-scale deformable attention: fixtures, an independent loop implementation, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _reference import apply_weight_rule, assert_close, load_fixture
from avsegformer.modeling.deform_attn import (
    MultiScaleDeformableAttention,
    encoder_reference_points,
    multi_scale_deformable_attention,
)


def naive_deformable_attention(value, shapes, locations, weights):
    """Straightforward per-(image, head, level, point) bilinear sampling, for comparison.

    Bilinear interpolation with ``align_corners=False`` and zero padding written out by
    hand: pixel centres sit at ``(i + 0.5) / size`` in normalised coordinates.
    """
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    out = torch.zeros(batch, queries, heads, head_dim, dtype=value.dtype)
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    for level, (height, width) in enumerate(shapes):
        grid = value[:, starts[level] : starts[level + 1]].reshape(batch, height, width, heads, -1)
        x = locations[:, :, :, level, :, 0] * width - 0.5  # [B, Q, M, P]
        y = locations[:, :, :, level, :, 1] * height - 0.5
        x0, y0 = torch.floor(x), torch.floor(y)
        for dx in (0, 1):
            for dy in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                wx = 1 - (x - xi).abs()
                wy = 1 - (y - yi).abs()
                inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
                xc = xi.clamp(0, width - 1).long()
                yc = yi.clamp(0, height - 1).long()
                for b in range(batch):
                    for m in range(heads):
                        picked = grid[b, yc[b, :, m], xc[b, :, m], m]  # [Q, P, D]
                        coeff = wx[b, :, m] * wy[b, :, m] * inside[b, :, m]
                        coeff = coeff * weights[b, :, m, level]
                        out[b, :, m] += (picked * coeff[..., None]).sum(1)
    return out.reshape(batch, queries, heads * head_dim)


def random_case(shapes, batch=2, queries=7, heads=3, head_dim=4, points=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(batch, tokens, heads, head_dim, generator=g, dtype=dtype)
    # Include points outside the image (zero padding) and on the border.
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=g, dtype=dtype)
    locations = locations * 1.4 - 0.2
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=g, dtype=dtype)
    return value, locations, weights


@pytest.fixture(scope="module")
def modules_fixture(reference_dir):
    return load_fixture(reference_dir / "modules.npz")


def test_core_matches_reference_fixture(modules_fixture):
    z = modules_fixture
    shapes = [tuple(s) for s in z["msda_core_spatial_shapes"].tolist()]
    args = [torch.from_numpy(z[k]) for k in ("msda_core_value",)]
    out = multi_scale_deformable_attention(
        args[0],
        shapes,
        torch.from_numpy(z["msda_core_sampling_locations"]),
        torch.from_numpy(z["msda_core_attention_weights"]),
    )
    assert_close("msda core f32", out, z["msda_core_out_f32"])
    out64 = multi_scale_deformable_attention(
        args[0].double(),
        shapes,
        torch.from_numpy(z["msda_core_sampling_locations"]).double(),
        torch.from_numpy(z["msda_core_attention_weights"]).double(),
    )
    np.testing.assert_allclose(out64.numpy(), z["msda_core_out_f64"], rtol=1e-12, atol=1e-12)


def test_module_matches_reference_fixture(modules_fixture):
    z = modules_fixture
    module = MultiScaleDeformableAttention(256, num_levels=3, num_heads=8, num_points=4)
    apply_weight_rule(module, prefix="head.transformer.encoder.layers.0.self_attn.")
    shapes = [tuple(s) for s in z["msda_core_spatial_shapes"].tolist()]
    with torch.no_grad():
        out = module(
            torch.from_numpy(z["msda_module_query"]),
            torch.from_numpy(z["reference_points_ones"]),
            torch.from_numpy(z["msda_module_input"]),
            shapes,
        )
    assert_close("msda module", out, z["msda_module_out"])


def test_reference_points_match_fixture(modules_fixture):
    z = modules_fixture
    shapes = [tuple(s) for s in z["msda_core_spatial_shapes"].tolist()]
    points = encoder_reference_points(shapes)
    expected = z["reference_points_ones"]
    assert points.shape == (1,) + expected.shape[1:]
    np.testing.assert_array_equal(points[0].numpy(), expected[0])


@pytest.mark.parametrize("shapes", [[(3, 5)], [(4, 6), (2, 3), (1, 2)], [(5, 1), (2, 7)]])
def test_core_matches_naive_loops(shapes):
    value, locations, weights = random_case(shapes)
    ours = multi_scale_deformable_attention(value, shapes, locations, weights)
    naive = naive_deformable_attention(value, shapes, locations, weights)
    torch.testing.assert_close(ours, naive, rtol=1e-12, atol=1e-12)


def test_core_gradcheck_float64():
    shapes = [(3, 4), (2, 2)]
    value, locations, weights = random_case(shapes, batch=1, queries=3, heads=2, head_dim=2)
    # Keep points away from pixel-centre lines, where bilinear weights have kinks.
    locations = (torch.floor(locations * 8) + 0.3) / 8
    inputs = tuple(t.clone().requires_grad_(True) for t in (value, locations, weights))

    def fn(v, loc, w):
        return multi_scale_deformable_attention(v, shapes, loc, w)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


def test_core_rejects_inconsistent_shapes():
    value, locations, weights = random_case([(3, 5)])
    with pytest.raises(ValueError, match="spatial_shapes"):
        multi_scale_deformable_attention(value, [(3, 4)], locations, weights)


def test_module_runs_in_bfloat16_autocast():
    torch.manual_seed(0)
    module = MultiScaleDeformableAttention(32, num_levels=2, num_heads=4, num_points=2)
    shapes = [(4, 4), (2, 2)]
    value = torch.randn(2, 20, 32)
    refs = encoder_reference_points(shapes)
    with torch.no_grad():
        full = module(value, refs, value, shapes)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = module(value, refs, value, shapes)
    assert torch.isfinite(low).all()
    assert F.cosine_similarity(full.flatten(), low.float().flatten(), dim=0) > 0.999
