"""RoIAlign against a literal per-RoI port of torchvision's CPU kernel, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from alrp_lab.ops.roi_align import roi_align, roi_align_torch


def _bilinear(fmap: list[list[float]], y: float, x: float) -> float:
    """torchvision's ``bilinear_interpolate`` on one channel (H x W nested lists)."""
    height, width = len(fmap), len(fmap[0])
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * fmap[y_low][x_low]
        + hy * lx * fmap[y_low][x_high]
        + ly * hx * fmap[y_high][x_low]
        + ly * lx * fmap[y_high][x_high]
    )


def _reference(features, rois, out_h, out_w, scale, sampling_ratio, aligned):
    """Slow RoIAlign: loops over RoIs, channels, bins and samples, as the C++ kernel does."""
    feats = features.tolist()
    channels = features.shape[1]
    out = torch.zeros(rois.shape[0], channels, out_h, out_w, dtype=torch.float64)
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        start_w, start_h = x1 * scale - offset, y1 * scale - offset
        roi_w, roi_h = x2 * scale - offset - start_w, y2 * scale - offset - start_h
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        count = max(grid_h * grid_w, 1)
        for c in range(channels):
            for ph in range(out_h):
                for pw in range(out_w):
                    total = 0.0
                    for iy in range(grid_h):
                        y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            x = start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            total += _bilinear(feats[int(b)][c], y, x)
                    out[k, c, ph, pw] = total / count
    return out


def _random_rois(gen: torch.Generator, num: int, batch: int, extent: float) -> torch.Tensor:
    """(num, 5) float64 RoIs, some reaching past the image on every side."""
    xy = torch.rand(num, 2, generator=gen, dtype=torch.float64) * extent * 1.2 - 0.2 * extent
    wh = torch.rand(num, 2, generator=gen, dtype=torch.float64) * extent * 0.8 + 0.3
    index = torch.randint(0, batch, (num, 1), generator=gen).to(torch.float64)
    return torch.cat((index, xy, xy + wh), dim=1)


@pytest.mark.parametrize(
    ("size", "out", "scale", "ratio", "aligned"),
    [
        ((5, 7), (3, 3), 1.0, 0, True),
        ((6, 6), (2, 3), 0.5, 2, True),
        ((4, 9), (4, 2), 0.25, 0, True),
        ((7, 5), (3, 3), 0.5, 1, False),
        ((1, 1), (2, 2), 1.0, 0, True),
    ],
)
def test_matches_slow_reference(size, out, scale, ratio, aligned) -> None:
    gen = torch.Generator().manual_seed(hash((size, out, ratio)) % 2**31)
    features = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64)
    extent = max(size) / scale
    rois = _random_rois(gen, 9, batch=2, extent=extent)
    got = roi_align_torch(features, rois, out, scale, ratio, aligned)
    expected = _reference(features, rois, *out, scale, ratio, aligned)
    assert got.shape == (9, 3, *out)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_hand_case_constant_and_ramp() -> None:
    # On f(y, x) = x every sample inside the map returns its x: the bin means are bin centres.
    ramp = torch.arange(8, dtype=torch.float64).repeat(8, 1)[None, None]
    rois = torch.tensor([[0.0, 2.5, 2.5, 6.5, 6.5]], dtype=torch.float64)
    pooled = roi_align_torch(ramp, rois, (2, 2), 1.0, 2, aligned=True)
    # Shifted by -0.5: the RoI spans x in [2, 6), bins [2, 4) and [4, 6), centres 3 and 5.
    expected = torch.tensor([[3.0, 5.0], [3.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(pooled[0, 0], expected)


def test_outside_image_is_zero_and_empty_roi_is_zero() -> None:
    features = torch.ones(1, 2, 4, 4, dtype=torch.float64)
    rois = torch.tensor(
        [[0.0, 20.0, 20.0, 30.0, 30.0], [0.0, 1.0, 1.0, 1.0, 1.0]], dtype=torch.float64
    )
    pooled = roi_align_torch(features, rois, (2, 2), 1.0, 0, aligned=True)
    assert torch.equal(pooled, torch.zeros_like(pooled))
    assert roi_align_torch(features, rois[:0], 3).shape == (0, 2, 3, 3)


def test_gradcheck_on_features() -> None:
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(2, 2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0.0, 0.3, 0.7, 3.1, 2.9], [1.0, -0.6, 1.2, 4.4, 4.8], [1.0, 1.1, 0.2, 2.0, 2.6]],
        dtype=torch.float64,
    )
    assert torch.autograd.gradcheck(
        lambda f: roi_align_torch(f, rois, (2, 2), 1.0, 0, True), (features,)
    )


def test_dispatcher_uses_pure_version_when_asked() -> None:
    gen = torch.Generator().manual_seed(8)
    features = torch.randn(1, 2, 6, 6, generator=gen)
    rois = _random_rois(gen, 4, batch=1, extent=6.0).float()
    torch.testing.assert_close(
        roi_align(features, rois, 3, use_torchvision=False),
        roi_align_torch(features, rois, (3, 3)),
    )


@pytest.mark.parametrize(
    ("features", "rois", "message"),
    [
        (torch.zeros(2, 4, 4), torch.zeros(1, 5), "features"),
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 4), "batch index"),
        (torch.zeros(1, 2, 4, 4), torch.tensor([[3.0, 0, 0, 1, 1]]), "batch indices"),
    ],
)
def test_bad_inputs_raise_clear_errors(features, rois, message) -> None:
    with pytest.raises(ValueError, match=message):
        roi_align(features, rois, 2, use_torchvision=False)


def test_bad_output_size_raises() -> None:
    with pytest.raises(ValueError, match="output_size"):
        roi_align(torch.zeros(1, 1, 2, 2), torch.zeros(0, 5), 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_features_do_not_round_the_boxes(dtype) -> None:
    # A (2, 3, 40, 40) map at stride 32 (a 1280 px image) and boxes at fractional pixels of
    # 500-1100 px, where bfloat16 would round a coordinate to a multiple of 4 or 8 px.
    gen = torch.Generator().manual_seed(11)
    features = torch.randn(2, 3, 40, 40, generator=gen).to(dtype)
    xy = 500.0 + torch.rand(12, 2, generator=gen, dtype=torch.float64) * 300.0
    wh = 40.0 + torch.rand(12, 2, generator=gen, dtype=torch.float64) * 260.0
    index = torch.randint(0, 2, (12, 1), generator=gen).to(torch.float64)
    rois = torch.cat((index, xy, xy + wh), dim=1).float()
    expected = _reference(features.double(), rois.double(), 3, 3, 1 / 32, 2, True)
    got = roi_align(features, rois, 3, 1 / 32, 2, True)
    assert got.dtype == dtype
    # Only the output's own rounding is left (8 or 11 significant bits).
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(got.double(), expected, rtol=eps, atol=eps * 4)
