"""Tests for alrp_lab.ops.anchors."""

from __future__ import annotations

import math

import pytest
import torch

from alrp_lab.ops.anchors import AnchorGenerator

SIZES = [(4, 5), (2, 3), (1, 2), (1, 1), (1, 1)]


def test_counts_per_level():
    gen = AnchorGenerator()
    assert gen.num_anchors_per_location == 6
    anchors = gen(SIZES)
    assert [a.shape for a in anchors] == [(h * w * 6, 4) for h, w in SIZES]
    assert AnchorGenerator(ratios=(1.0,), scales_per_octave=2).num_anchors_per_location == 2
    assert AnchorGenerator(ratios=(1.0,), scales_per_octave=3).num_anchors_per_location == 3


def test_cell_anchors_by_hand():
    # Stride 8, octave base 4: sides 32 and 32 * sqrt(2); ratio h / w at constant area.
    cell = AnchorGenerator()([(1, 1)] * 5, dtype=torch.float64)[0]
    s0, s1 = 32.0, 32.0 * math.sqrt(2.0)
    expected_wh = [
        (s0 / math.sqrt(0.5), s0 * math.sqrt(0.5)),
        (s1 / math.sqrt(0.5), s1 * math.sqrt(0.5)),
        (s0, s0),
        (s1, s1),
        (s0 / math.sqrt(2.0), s0 * math.sqrt(2.0)),
        (s1 / math.sqrt(2.0), s1 * math.sqrt(2.0)),
    ]
    expected = torch.tensor([[-w / 2, -h / 2, w / 2, h / 2] for w, h in expected_wh])
    torch.testing.assert_close(cell, expected.double())
    wh = cell[:, 2:] - cell[:, :2]
    torch.testing.assert_close(wh[:, 1] / wh[:, 0], torch.tensor([0.5, 0.5, 1, 1, 2, 2]).double())


def test_ordering_is_y_then_x_then_anchor_and_centres_on_stride_grid():
    gen = AnchorGenerator()
    anchors = gen(SIZES, dtype=torch.float64)
    for level, ((h, w), stride) in enumerate(zip(SIZES, gen.strides, strict=True)):
        grid = anchors[level].reshape(h, w, 6, 4)
        centres = (grid[..., :2] + grid[..., 2:]) / 2
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float64),
            torch.arange(w, dtype=torch.float64),
            indexing="ij",
        )
        expected = torch.stack((xs, ys), dim=-1)[:, :, None, :] * stride
        torch.testing.assert_close(centres, expected.expand_as(centres))
        # Every location repeats the same cell anchors: sizes depend only on the anchor index.
        sizes = grid[..., 2:] - grid[..., :2]
        torch.testing.assert_close(sizes, sizes[:1, :1].expand_as(sizes))


def test_sizes_scale_with_stride_across_levels():
    gen = AnchorGenerator()
    anchors = gen([(1, 1)] * 5, dtype=torch.float64)
    for level, stride in enumerate(gen.strides):
        side = (anchors[level][2, 2] - anchors[level][2, 0]).item()  # ratio 1, scale 2^0
        assert side == pytest.approx(4 * stride)


def test_atss_setting_one_ratio():
    gen = AnchorGenerator(ratios=(1.0,), scales_per_octave=1)
    level0 = gen([(2, 2)] + [(1, 1)] * 4)[0]
    expected = torch.tensor(
        [[-16.0, -16.0, 16.0, 16.0], [-8.0, -16.0, 24.0, 16.0], [-16, -8, 16, 24], [-8, -8, 24, 24]]
    )
    torch.testing.assert_close(level0, expected)


def test_cache_returns_same_tensor_per_size_device_dtype():
    gen = AnchorGenerator()
    first = gen(SIZES)
    again = gen(SIZES)
    assert all(a is b for a, b in zip(first, again, strict=True))
    doubles = gen(SIZES, dtype=torch.float64)
    assert doubles[0].dtype == torch.float64 and doubles[0] is not first[0]
    other = gen([(3, 3)] + SIZES[1:])
    assert other[0].shape == (54, 4) and other[1] is first[1]


def test_empty_level_and_bad_input():
    gen = AnchorGenerator()
    assert gen([(0, 7)] + SIZES[1:])[0].shape == (0, 4)
    with pytest.raises(ValueError, match="one \\(H, W\\) per level"):
        gen(SIZES[:3])
    with pytest.raises(ValueError, match="negative"):
        gen([(-1, 2)] + SIZES[1:])
    with pytest.raises(ValueError, match="ratios"):
        AnchorGenerator(ratios=(0.0, 1.0))
    with pytest.raises(ValueError, match="scales_per_octave"):
        AnchorGenerator(scales_per_octave=0)
