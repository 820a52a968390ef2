"""Tests for alrp_lab.assigners.max_iou (and AssignResult)."""

from __future__ import annotations

import pytest
import torch

from alrp_lab.assigners import BACKGROUND, IGNORED, AssignResult, MaxIoUAssigner


def _f64(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _reference(anchors, gts, pos_iou, neg_iou, min_pos_iou, low_quality):
    """mmdetection's rule one anchor and one ground truth at a time."""
    anchors, gts = anchors.tolist(), gts.tolist()
    ious = [[_iou(a, g) for g in gts] for a in anchors]
    matched, max_iou = [], []
    for row in ious:
        best = max(row)
        max_iou.append(best)
        if best >= pos_iou:
            matched.append(row.index(best))
        elif best < neg_iou:
            matched.append(BACKGROUND)
        else:
            matched.append(IGNORED)
    if low_quality:
        claim = [None] * len(anchors)  # (iou, gt) of the strongest claim on each anchor
        for g in range(len(gts)):
            col = [row[g] for row in ious]
            best = max(col)
            if best < min_pos_iou or best <= 0:
                continue
            for a, value in enumerate(col):
                if value == best and (claim[a] is None or value > claim[a][0]):
                    claim[a] = (value, g)
        for a, c in enumerate(claim):
            if c is not None:
                max_iou[a], matched[a] = c
    return matched, max_iou


GT = _f64([[0, 0, 10, 10], [100, 100, 110, 110]])
ANCHORS = _f64(
    [
        [0, 0, 10, 10],  # IoU 1 with gt 0
        [0, 0, 10, 5],  # 0.5: positive (>=)
        [0, 0, 10, 4.5],  # 0.45: ignored
        [0, 0, 10, 4],  # 0.4: ignored (negatives are strictly under)
        [0, 0, 10, 3],  # 0.3: background
        [50, 50, 60, 60],  # touches nothing
        [100, 100, 110, 130],  # 1/3 with gt 1, its best anchor
    ]
)


def test_hand_case_with_low_quality_matches():
    result = MaxIoUAssigner().assign(ANCHORS, GT, [7])
    assert result.matched_gt.tolist() == [0, 0, IGNORED, IGNORED, BACKGROUND, BACKGROUND, 1]
    torch.testing.assert_close(result.max_iou, _f64([1, 0.5, 0.45, 0.4, 0.3, 0, 1 / 3]))
    assert result.positive_mask.tolist() == [True, True, False, False, False, False, True]
    assert result.negative_mask.tolist() == [False, False, False, False, True, True, False]
    assert result.num_positives == 3


def test_without_low_quality_matches_and_with_min_pos_iou():
    plain = MaxIoUAssigner(low_quality_matches=False).assign(ANCHORS, GT)
    assert plain.matched_gt[6].item() == BACKGROUND  # 1/3 < 0.4
    strict = MaxIoUAssigner(min_pos_iou=0.4).assign(ANCHORS, GT)
    assert strict.matched_gt[6].item() == BACKGROUND


def test_rpn_thresholds():
    result = MaxIoUAssigner(pos_iou=0.7, neg_iou=0.3, low_quality_matches=False).assign(ANCHORS, GT)
    # IoUs 1, .5, .45, .4, .3, 0, 1/3: negatives are strictly under 0.3.
    assert result.matched_gt.tolist() == [0] + [IGNORED] * 4 + [BACKGROUND, IGNORED]


def test_every_anchor_tying_a_gt_best_is_claimed():
    gt = _f64([[0, 0, 10, 10]])
    anchors = _f64([[0, 0, 10, 20], [0, -10, 10, 10], [0, 0, 10, 30]])  # 0.5, 0.5, 1/3
    result = MaxIoUAssigner(pos_iou=0.9).assign(anchors, gt)
    assert result.matched_gt.tolist() == [0, 0, BACKGROUND]


def test_low_quality_claim_overrides_the_threshold_rule():
    gts = _f64([[0, 0, 10, 10], [0, -20, 10, 5]])
    # Anchor 1 is gt 0's positive by threshold (IoU 0.6) but gt 0 prefers anchor 0, while
    # anchor 1 is gt 1's best (50/260 against 50/300 for anchor 0): as in mmdetection, the
    # claim wins so that gt 1 keeps a positive.
    anchors = _f64([[0, 0, 10, 10], [0, 0, 10, 6]])
    result = MaxIoUAssigner().assign(anchors, gts)
    assert result.matched_gt.tolist() == [0, 1]
    assert result.max_iou.tolist() == pytest.approx([1.0, 50 / 260])


def test_anchor_claimed_twice_goes_to_the_gt_it_overlaps_most():
    gts = _f64([[0, 0, 10, 30], [0, 0, 10, 25]])  # the anchor is both gts' only overlap
    anchors = _f64([[0, 0, 10, 6], [50, 50, 60, 60]])  # IoU 0.2 and 0.24
    result = MaxIoUAssigner().assign(anchors, gts)
    assert result.matched_gt.tolist() == [1, BACKGROUND]
    assert result.max_iou[0].item() == pytest.approx(0.24)


def test_gt_touching_no_anchor_claims_nothing():
    result = MaxIoUAssigner().assign(_f64([[0, 0, 1, 1], [5, 5, 6, 6]]), _f64([[50, 50, 60, 60]]))
    assert result.matched_gt.tolist() == [BACKGROUND, BACKGROUND]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_matches_reference_on_random_boxes(seed: int):
    gen = torch.Generator().manual_seed(seed)

    def boxes(n: int) -> torch.Tensor:
        xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 60
        return torch.cat(
            (xy, xy + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 30 + 2), 1
        )

    anchors, gts = boxes(300), boxes(6)
    for kwargs in ({}, {"pos_iou": 0.7, "neg_iou": 0.3, "min_pos_iou": 0.3}):
        result = MaxIoUAssigner(**kwargs).assign(anchors, gts)
        matched, max_iou = _reference(
            anchors, gts, kwargs.get("pos_iou", 0.5), kwargs.get("neg_iou", 0.4),
            kwargs.get("min_pos_iou", 0.0), True,
        )  # fmt: skip
        assert result.matched_gt.tolist() == matched
        torch.testing.assert_close(result.max_iou, _f64(max_iou), rtol=0, atol=1e-12)
        assert result.num_positives > 0 and (result.matched_gt == IGNORED).any()


def test_no_gt_and_no_anchors():
    empty = MaxIoUAssigner().assign(ANCHORS, torch.zeros(0, 4, dtype=torch.float64))
    assert empty.matched_gt.tolist() == [BACKGROUND] * 7
    assert empty.max_iou.tolist() == [0.0] * 7 and empty.max_iou.dtype == torch.float64
    none = MaxIoUAssigner().assign(torch.zeros(0, 4), GT)
    assert none.matched_gt.shape == (0,) and none.num_positives == 0


def test_bad_input_raises():
    with pytest.raises(ValueError, match="neg_iou <= pos_iou"):
        MaxIoUAssigner(pos_iou=0.4, neg_iou=0.5)
    with pytest.raises(ValueError, match=r"gt_boxes of shape \(G, 4\)"):
        MaxIoUAssigner().assign(ANCHORS, torch.zeros(4))
    with pytest.raises(ValueError, match="same shape"):
        AssignResult(torch.zeros(3, dtype=torch.long), torch.zeros(2))
