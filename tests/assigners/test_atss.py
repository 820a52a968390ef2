"""Tests for alrp_lab.assigners.atss against hand cases and the paper's Algorithm 1."""

from __future__ import annotations

import statistics

import pytest
import torch

from alrp_lab.assigners import BACKGROUND, ATSSAssigner
from alrp_lab.ops.anchors import AnchorGenerator


def _f64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _reference(anchors, gts, levels, topk):
    """Algorithm 1 of Zhang et al. (CVPR 2020), one ground truth and one level at a time."""
    anchors, gts = anchors.tolist(), gts.tolist()

    def centre(b):
        return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2

    best = [(-1.0, BACKGROUND)] * len(anchors)  # (IoU, gt) of each anchor's best positive
    for g, gt in enumerate(gts):
        gx, gy = centre(gt)
        candidates, start = [], 0
        for size in levels:
            by_distance = sorted(
                range(start, start + size),
                key=lambda a: (centre(anchors[a])[0] - gx) ** 2 + (centre(anchors[a])[1] - gy) ** 2,
            )
            candidates += by_distance[:topk]
            start += size
        ious = [_iou(anchors[a], gt) for a in candidates]
        spread = statistics.stdev(ious) if len(ious) > 1 else 0.0
        threshold = statistics.mean(ious) + spread
        for a, value in zip(candidates, ious, strict=True):
            cx, cy = centre(anchors[a])
            inside = min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > 0.01
            if value >= threshold and inside and value > best[a][0]:
                best[a] = (value, g)
    matched = [g for _, g in best]
    max_iou = [
        value if g >= 0 else max(_iou(a, gt) for gt in gts)
        for (value, g), a in zip(best, anchors, strict=True)
    ]
    return matched, max_iou


def _far_anchors(n: int) -> list[list[float]]:
    """n 10x10 anchors far from the origin, each with IoU 0 against the test boxes."""
    return [[200.0 + 20 * i, 200.0, 210.0 + 20 * i, 210.0] for i in range(n)]


def test_hand_case_threshold_and_centre_inside_rule():
    gt = _f64([[0, 0, 10, 10]])
    # Candidates (topk 9 = all): IoUs 0.5, 0.5 and seven zeros. Threshold: mean 1/9 plus the
    # unbiased std sqrt((2 * (7/18)^2 + 7 * (1/9)^2) / 8) = sqrt(126/324 / 8) ~ 0.2205.
    anchors = _f64(
        [
            [-10, 0, 10, 10],  # IoU 0.5, centre (0, 5) on the gt's edge: not inside
            [0, 0, 10, 5],  # IoU 0.5, centre (5, 2.5) inside: the positive
            *_far_anchors(7),
        ]
    )
    result = ATSSAssigner(topk=9).assign(anchors, gt, [9])
    assert result.matched_gt.tolist() == [BACKGROUND, 0] + [BACKGROUND] * 7
    assert result.max_iou[:2].tolist() == [0.5, 0.5]
    assert result.num_positives == 1


def test_hand_case_few_candidates_raise_the_bar():
    # Three candidates with IoUs 1, 2/3, 3/7: mean 44/63, std ~0.2870, threshold ~0.985.
    gt = _f64([[0, 0, 10, 10]])
    anchors = _f64([[0, 0, 10, 10], [2, 0, 12, 10], [-4, 0, 6, 10], [20, 0, 30, 10]])
    result = ATSSAssigner(topk=3).assign(anchors, gt, [4])
    assert result.matched_gt.tolist() == [0, BACKGROUND, BACKGROUND, BACKGROUND]
    torch.testing.assert_close(result.max_iou, _f64([1, 2 / 3, 3 / 7, 0]))


def test_anchor_positive_for_two_gts_takes_the_higher_iou():
    gts = _f64([[0, 0, 10, 10], [0, 0, 10, 12]])
    # IoUs 100/110 and 110/120; the eight far anchors bring both thresholds to ~0.41.
    anchors = _f64([[0, 0, 10, 11], *_far_anchors(8)])
    result = ATSSAssigner(topk=9).assign(anchors, gts, [9])
    assert result.matched_gt.tolist() == [1] + [BACKGROUND] * 8
    assert result.max_iou[0].item() == pytest.approx(110 / 120)


def test_topk_is_per_level():
    gt = _f64([[0, 0, 10, 10]])
    # Level 0 holds the gt's twin and a far anchor; level 1 a half-overlap and a far anchor.
    # topk 1 picks the twin and the half-overlap (IoUs 1, 0.5): threshold 0.75 + 0.354.
    level0 = [[0, 0, 10, 10], *_far_anchors(1)]
    level1 = [[0, 0, 10, 5], [300, 300, 310, 310]]
    result = ATSSAssigner(topk=1).assign(_f64(level0 + level1), gt, [2, 2])
    assert result.matched_gt.tolist() == [BACKGROUND] * 4  # 1 < 1.104: nobody passes
    # A single candidate: no spread, so the threshold is its own IoU and it is positive.
    single = ATSSAssigner(topk=1).assign(_f64(level0), gt, [2])
    assert single.matched_gt.tolist() == [0, BACKGROUND]


@pytest.mark.parametrize(
    ("scales_per_octave", "topk", "seed"),
    # topk a multiple of the anchors per location: co-located anchors never split at the cut.
    [(1, 9, 31), (2, 8, 32), (1, 4, 33)],
)
def test_matches_paper_algorithm_on_a_small_pyramid(scales_per_octave, topk, seed):
    generator = AnchorGenerator(
        strides=(8, 16, 32), ratios=(1.0,), scales_per_octave=scales_per_octave
    )
    levels = generator([(12, 12), (6, 6), (3, 3)], dtype=torch.float64)
    anchors = torch.cat(levels)
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(7, 2, generator=gen, dtype=torch.float64) * 70
    gts = torch.cat((xy, xy + torch.rand(7, 2, generator=gen, dtype=torch.float64) * 40 + 6), 1)

    result = ATSSAssigner(topk=topk).assign(anchors, gts, [len(level) for level in levels])
    matched, max_iou = _reference(anchors, gts, [len(level) for level in levels], topk)
    assert result.matched_gt.tolist() == matched
    torch.testing.assert_close(result.max_iou, _f64(max_iou), rtol=0, atol=1e-12)
    assert result.num_positives >= 7 and not (result.matched_gt == -2).any()


def test_level_smaller_than_topk_and_empty_level():
    gt = _f64([[0, 0, 10, 10]])
    anchors = _f64([[0, 0, 10, 10], [0, 0, 10, 5], [1, 1, 9, 9]])
    result = ATSSAssigner(topk=9).assign(anchors, gt, [2, 0, 1])
    matched, _ = _reference(anchors, gt, [2, 0, 1], 9)
    assert result.matched_gt.tolist() == matched


def test_no_gt_and_no_anchors():
    anchors = _f64([[0, 0, 10, 10], [5, 5, 15, 15]])
    empty = ATSSAssigner().assign(anchors, torch.zeros(0, 4), [2])
    assert empty.matched_gt.tolist() == [BACKGROUND, BACKGROUND]
    assert empty.max_iou.tolist() == [0.0, 0.0]
    none = ATSSAssigner().assign(torch.zeros(0, 4), _f64([[0, 0, 1, 1]]), [0, 0])
    assert none.matched_gt.shape == (0,) and none.max_iou.shape == (0,)


def test_bad_input_raises():
    anchors = _f64([[0, 0, 10, 10], [5, 5, 15, 15]])
    with pytest.raises(ValueError, match="num_anchors_per_level"):
        ATSSAssigner().assign(anchors, _f64([[0, 0, 1, 1]]), [1])
    with pytest.raises(ValueError, match="topk"):
        ATSSAssigner(topk=0)
