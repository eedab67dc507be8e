"""Multi-scale deformable attention: fixtures, an independent loop implementation, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _reference import apply_weight_rule, assert_close, load_fixture, reference_path
from avsegformer.modeling import deform_attn
from avsegformer.modeling.deform_attn import (
    MultiScaleDeformableAttention,
    deformable_attention,
    encoder_reference_points,
    multi_scale_deformable_attention,
)
from avsegformer.modeling.forms import GatherDeformableAttention

METHODS = ["gather", "grid_sample"]
# The plain module (grid_sample) and the CPU inference form (gather, queries innermost).
MODULES = [MultiScaleDeformableAttention, GatherDeformableAttention]


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
def modules_fixture():
    return load_fixture(reference_path("modules.npz"))


@pytest.mark.parametrize("method", METHODS)
def test_core_matches_reference_fixture(modules_fixture, method):
    z = modules_fixture
    shapes = [tuple(s) for s in z["msda_core_spatial_shapes"].tolist()]
    value = torch.from_numpy(z["msda_core_value"])
    locations = torch.from_numpy(z["msda_core_sampling_locations"])
    weights = torch.from_numpy(z["msda_core_attention_weights"])
    out = multi_scale_deformable_attention(value, shapes, locations, weights, method)
    assert_close("msda core f32", out, z["msda_core_out_f32"])
    out64 = multi_scale_deformable_attention(
        value.double(), shapes, locations.double(), weights.double(), method
    )
    np.testing.assert_allclose(out64.numpy(), z["msda_core_out_f64"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("module_class", MODULES)
def test_module_matches_reference_fixture(modules_fixture, module_class):
    z = modules_fixture
    module = module_class(256, num_levels=3, num_heads=8, num_points=4)
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


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shapes", [[(3, 5)], [(4, 6), (2, 3), (1, 2)], [(5, 1), (2, 7)]])
def test_core_matches_naive_loops(shapes, method):
    value, locations, weights = random_case(shapes)
    ours = multi_scale_deformable_attention(value, shapes, locations, weights, method)
    naive = naive_deformable_attention(value, shapes, locations, weights)
    torch.testing.assert_close(ours, naive, rtol=1e-12, atol=1e-12)


def test_gather_chunks_frames_like_one_pass(monkeypatch):
    """Frames sampled in several chunks give what one chunk gives."""
    shapes = [(4, 6), (2, 3)]
    value, locations, weights = random_case(shapes, batch=5)
    whole = multi_scale_deformable_attention(value, shapes, locations, weights, "gather")
    monkeypatch.setattr(deform_attn, "GATHER_CHUNK_BYTES", 1)  # one frame per chunk
    monkeypatch.setattr(deform_attn.gather_mix, "__defaults__", (1,))
    chunked = multi_scale_deformable_attention(value, shapes, locations, weights, "gather")
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)


def test_deformable_attention_from_offsets_and_logits():
    """Locations = reference + offset / size, weights = softmax over levels x points."""
    shapes = [(4, 6), (2, 3)]
    value, _, _ = random_case(shapes, batch=2, queries=5)
    g = torch.Generator().manual_seed(1)
    offsets = torch.randn(2, 5, 3, 2, 2, 2, generator=g, dtype=torch.float64)
    logits = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    reference = torch.rand(1, 5, 2, 2, generator=g, dtype=torch.float64)
    size = torch.tensor([[6.0, 4.0], [3.0, 2.0]], dtype=torch.float64)  # (W, H) per level
    locations = reference[:, :, None, :, None, :] + offsets / size[:, None, :]
    weights = logits.softmax(-1).view(2, 5, 3, 2, 2)
    expected = naive_deformable_attention(
        value, shapes, locations.expand(2, -1, -1, -1, -1, -1), weights
    )
    for method in METHODS:
        ours = deformable_attention(value, shapes, reference, offsets, logits, method)
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_core_gradcheck_float64(method):
    shapes = [(3, 4), (2, 2)]
    value, locations, weights = random_case(shapes, batch=1, queries=3, heads=2, head_dim=2)
    # Keep points away from pixel-centre lines, where bilinear weights have kinks.
    locations = (torch.floor(locations * 8) + 0.3) / 8
    inputs = tuple(t.clone().requires_grad_(True) for t in (value, locations, weights))

    def fn(v, loc, w):
        return multi_scale_deformable_attention(v, shapes, loc, w, method)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


def test_unknown_sampling_method_is_refused():
    value, locations, weights = random_case([(3, 5)])
    with pytest.raises(ValueError, match="unknown sampling method 'bilinear'"):
        multi_scale_deformable_attention(value, [(3, 5)], locations, weights, "bilinear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown sampling method 'bilinear'"):
        MultiScaleDeformableAttention(32, method="bilinear")  # type: ignore[arg-type]


def test_gather_far_and_nan_locations():
    """Far-away points read zeros; NaN or infinite locations give NaN, not an index error."""
    shapes = [(4, 6), (2, 3)]
    value, locations, weights = random_case(shapes, dtype=torch.float32)
    locations[0, 0, 0, 0, 0] = torch.tensor([1e9, -1e9])
    locations[0, 1, 0, 1, 1] = torch.tensor([3.0, 0.5])
    naive = naive_deformable_attention(value, shapes, locations, weights)
    ours = multi_scale_deformable_attention(value, shapes, locations, weights, "gather")
    torch.testing.assert_close(ours, naive, rtol=1e-5, atol=1e-5)
    locations[1, 2, 1, 0, 0, 0] = float("nan")
    locations[1, 3, 2, 1, 1, 1] = float("inf")
    ours = multi_scale_deformable_attention(value, shapes, locations, weights, "gather")
    reference = multi_scale_deformable_attention(value, shapes, locations, weights, "grid_sample")
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5, equal_nan=True)
    head_dim = value.shape[-1]
    assert ours[1, 2, head_dim : 2 * head_dim].isnan().all()
    assert ours[1, 3, 2 * head_dim : 3 * head_dim].isnan().all()
    assert torch.isfinite(ours).sum() == ours.numel() - 2 * head_dim


def test_gather_rows_beyond_float32_integers():
    """Tables of 2**24 or more rows switch the row arithmetic to float64."""
    height, width = 4100, 4100  # (H + 2) * (W + 2) > 2**24 rows for one head
    g = torch.Generator().manual_seed(0)
    value = torch.randn(1, height * width, 1, 1, generator=g)
    # Points near the far corner, where float32 cannot hold odd row numbers.
    pixels = torch.tensor([[4098.25, 4098.5], [4097.0, 4099.0], [4099.0, 4097.75]])
    locations = ((pixels + 0.5) / torch.tensor([width, height]))[None, :, None, None, None]
    weights = torch.ones(1, 3, 1, 1, 1)
    ours = multi_scale_deformable_attention(value, [(height, width)], locations, weights, "gather")
    naive = naive_deformable_attention(value, [(height, width)], locations, weights)
    torch.testing.assert_close(ours, naive, rtol=1e-5, atol=1e-5)


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


@pytest.mark.parametrize("module_class", MODULES)
def test_module_output_of_a_frame_does_not_depend_on_its_batch(module_class):
    """Bit-identical per frame whatever the batch (two processes must match one)."""
    torch.manual_seed(0)
    shapes = [(8, 8), (4, 4), (2, 2)]
    module = module_class(64, num_levels=3, num_heads=8)
    with torch.no_grad():
        module.sampling_offsets.weight.normal_(0, 0.05)
        module.attention_weights.weight.normal_(0, 0.1)
    tokens = sum(h * w for h, w in shapes)
    query, value = torch.randn(4, tokens, 64), torch.randn(4, tokens, 64)
    refs = encoder_reference_points(shapes)
    with torch.no_grad():
        whole = module(query, refs, value, shapes)
        halves = [module(query[i : i + 2], refs, value[i : i + 2], shapes) for i in (0, 2)]
    assert torch.equal(whole, torch.cat(halves))
