"""Tests for alrp_lab.assigners.fovea: hand cases and mmdetection's painting loop."""

from __future__ import annotations

import math

import pytest
import torch

from alrp_lab.assigners import BACKGROUND, FoveaAssigner
from alrp_lab.ops.boxes import box_iou


def _priors(grids, strides, edges) -> tuple[torch.Tensor, list[int]]:
    """Boxes of side 2 * edge centred on ((j + 0.5) s, (i + 0.5) s), row-major per level."""
    rows = []
    for (h, w), s, e in zip(grids, strides, edges, strict=True):
        for i in range(h):
            for j in range(w):
                cx, cy = (j + 0.5) * s, (i + 0.5) * s
                rows.append([cx - e, cy - e, cx + e, cy + e])
    return torch.tensor(rows, dtype=torch.float64), [h * w for h, w in grids]


def _reference(gts, grids, strides, ranges, sigma):
    """mmdetection's FoveaHead._get_target_single: paint each level's hits, largest first."""
    matched = []
    for (h, w), s, (low, high) in zip(grids, strides, ranges, strict=True):
        level = [[BACKGROUND] * w for _ in range(h)]
        scale = [math.sqrt((g[2] - g[0]) * (g[3] - g[1])) for g in gts]
        hits = [g for g in range(len(gts)) if low <= scale[g] <= high]
        for g in sorted(hits, key=lambda g: -scale[g]):
            x1, y1, x2, y2 = (v / s for v in gts[g])
            hw, hh = (x2 - x1) / 2, (y2 - y1) / 2
            left = min(max(math.ceil(x1 + (1 - sigma) * hw - 0.5), 0), w - 1)
            right = min(max(math.floor(x1 + (1 + sigma) * hw - 0.5), 0), w - 1)
            top = min(max(math.ceil(y1 + (1 - sigma) * hh - 0.5), 0), h - 1)
            bottom = min(max(math.floor(y1 + (1 + sigma) * hh - 0.5), 0), h - 1)
            for i in range(top, bottom + 1):
                for j in range(left, right + 1):
                    level[i][j] = g
        matched += [g for row in level for g in row]
    return matched


# Two levels on a 64 x 64 image: stride 8 (8 x 8 grid) and 16 (4 x 4 grid).
STRIDES, EDGES, GRIDS = (8, 16), (16, 32), ((8, 8), (4, 4))
RANGES = ((1, 24), (16, 64))


def test_hand_case_levels_fovea_and_overlap() -> None:
    priors, counts = _priors(GRIDS, STRIDES, EDGES)
    gts = torch.tensor(
        [
            [4, 4, 20, 20],  # scale 16: both levels (bounds inclusive)
            [8, 8, 56, 56],  # scale 48: level 1 only
            [28, 28, 52, 52],  # scale 24: both levels, inside gt 1's fovea on level 1
        ],
        dtype=torch.float64,
    )
    result = FoveaAssigner(STRIDES, RANGES, sigma=0.4).assign(priors, gts, counts)
    expected = [BACKGROUND] * 80
    # gt 0, level 0: fovea [8.8, 15.2]^2 holds the centre (12, 12) of cell (1, 1); on
    # level 1 its fovea lies between the centres 8 and 24, so no positive there.
    expected[1 * 8 + 1] = 0
    # gt 1, level 1: fovea [22.4, 41.6]^2 holds centres 24 and 40, cells (1..2, 1..2) ...
    for i, j in [(1, 1), (1, 2), (2, 1)]:
        expected[64 + i * 4 + j] = 1
    # ... but cell (2, 2) is also in gt 2's fovea [34.4, 45.6]^2 and the smaller one wins.
    expected[64 + 2 * 4 + 2] = 2
    # gt 2, level 0: fovea [35.2, 44.8]^2 holds centres 36 and 44, cells (4..5, 4..5).
    for i, j in [(4, 4), (4, 5), (5, 4), (5, 5)]:
        expected[i * 8 + j] = 2
    assert result.matched_gt.tolist() == expected
    assert result.num_positives == 9
    # Cell (1, 1)'s prior (-4, -4, 28, 28) contains gt 0: IoU 16^2 / 32^2.
    assert result.max_iou[9].item() == pytest.approx(0.25)
    iou = box_iou(gts, priors)
    negative = result.negative_mask
    torch.testing.assert_close(result.max_iou[negative], iou.max(0).values[negative])


def test_sigma_sets_the_fovea_size() -> None:
    priors, counts = _priors(((8, 8),), (8,), (16,))
    gt = torch.tensor([[8.0, 8, 56, 56]], dtype=torch.float64)  # centre 32, side 48
    # Half-widths of the fovea: 0.4 * 24 = 9.6 (centres 28, 36), 1.0 * 24 (centres 12..52).
    narrow = FoveaAssigner((8,), ((1, 64),), sigma=0.4).assign(priors, gt, counts)
    wide = FoveaAssigner((8,), ((1, 64),), sigma=1.0).assign(priors, gt, counts)
    assert narrow.num_positives == 2 * 2
    assert wide.num_positives == 6 * 6


def test_tiny_objects_border_clamp_and_interior_miss() -> None:
    priors, counts = _priors(((8, 8),), (8,), (16,))
    gts = torch.tensor([[0.0, 0, 4, 4], [30, 30, 34, 34]], dtype=torch.float64)
    result = FoveaAssigner((8,), ((1, 64),)).assign(priors, gts, counts)
    # The corner box's fovea [1.2, 2.8]^2 holds no centre, but its index range clamps onto
    # cell (0, 0) as in mmdetection; the interior one falls between centres 28 and 36.
    assert (result.matched_gt >= 0).nonzero().flatten().tolist() == [0]
    assert result.matched_gt[0].item() == 0


def test_matches_mmdetection_painting_on_random_boxes() -> None:
    # A non-square image (80 high, 96 wide) catches swapped rows and columns.
    grids, strides, edges = ((10, 12), (5, 6), (3, 3)), (8, 16, 32), (16, 32, 64)
    ranges = ((1, 32), (16, 64), (32, 128))
    priors, counts = _priors(grids, strides, edges)
    assigner = FoveaAssigner(strides, ranges, sigma=0.4)
    positives = 0
    for seed in range(6):
        gen = torch.Generator().manual_seed(1000 + seed)
        g = int(torch.randint(1, 12, (1,), generator=gen))
        xy = torch.rand(g, 2, generator=gen, dtype=torch.float64) * torch.tensor([90.0, 75.0])
        wh = torch.rand(g, 2, generator=gen, dtype=torch.float64) * 70 + 2
        gts = torch.cat([xy, xy + wh], dim=1)
        result = assigner.assign(priors, gts, counts)
        assert result.matched_gt.tolist() == _reference(gts.tolist(), grids, strides, ranges, 0.4)
        positives += result.num_positives
        iou = box_iou(gts, priors)
        pos = result.positive_mask
        torch.testing.assert_close(
            result.max_iou[pos], iou[result.matched_gt[pos], pos.nonzero().flatten()]
        )
    assert positives > 20


def test_no_ground_truth_gives_background() -> None:
    priors, counts = _priors(GRIDS, STRIDES, EDGES)
    result = FoveaAssigner(STRIDES, RANGES).assign(priors, torch.zeros(0, 4), counts)
    assert result.num_positives == 0 and result.negative_mask.all()
    assert torch.equal(result.max_iou, torch.zeros(80, dtype=torch.float64))


def test_bad_arguments_are_clear() -> None:
    priors, counts = _priors(GRIDS, STRIDES, EDGES)
    with pytest.raises(ValueError, match="num_anchors_per_level"):
        FoveaAssigner(STRIDES, RANGES).assign(priors, torch.zeros(1, 4), [64])
    with pytest.raises(ValueError, match="one \\(low, high\\) scale range per stride"):
        FoveaAssigner((8, 16), ((1, 64),))
    with pytest.raises(ValueError, match="numeric"):
        FoveaAssigner((8,), (("a", 64),))
    with pytest.raises(ValueError, match="sigma"):
        FoveaAssigner((8,), ((1, 64),), sigma=0.0)
    with pytest.raises(ValueError, match="low <= high"):
        FoveaAssigner((8,), ((64, 1),))
