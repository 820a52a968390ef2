"""Tests for alrp_lab.ops.boxes: hand-computed cases and float64 brute-force references."""

from __future__ import annotations

import pytest
import torch

from alrp_lab.ops import boxes as B


def _random_boxes(gen: torch.Generator, n: int) -> torch.Tensor:
    """(n, 4) float64 boxes with positive size inside a 100 px square."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 80
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 40 + 0.5
    return torch.cat((xy, xy + wh), dim=1)


def _iou_giou_scalar(a: list[float], b: list[float]) -> tuple[float, float]:
    """Textbook IoU and GIoU of two boxes, one pair at a time."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union, inter / union - (hull - union) / hull


def test_box_area_by_hand_and_degenerate_is_zero():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [5.0, 5.0, 4.0, 9.0], [1.0, 1.0, 1.0, 1.0]])
    assert B.box_area(boxes).tolist() == [6.0, 0.0, 0.0]


def test_box_iou_and_giou_hand_cases():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor(
        [
            [1.0, 1.0, 3.0, 3.0],  # inter 1, union 7, hull 9
            [0.0, 0.0, 2.0, 2.0],  # identical
            [2.0, 0.0, 4.0, 2.0],  # side by side: IoU 0, hull = union -> GIoU 0
            [4.0, 0.0, 6.0, 2.0],  # apart: hull 12, union 8 -> GIoU -1/3
        ]
    )
    torch.testing.assert_close(B.box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0, 0.0]]))
    expected_giou = torch.tensor([[1 / 7 - 2 / 9, 1.0, 0.0, -1 / 3]])
    torch.testing.assert_close(B.generalized_box_iou(a, b), expected_giou)


def test_pairwise_and_elementwise_match_brute_force_float64():
    gen = torch.Generator().manual_seed(1234)
    b1, b2 = _random_boxes(gen, 7), _random_boxes(gen, 5)
    iou, giou = B.box_iou(b1, b2), B.generalized_box_iou(b1, b2)
    assert iou.shape == giou.shape == (7, 5)
    for i in range(7):
        for j in range(5):
            ref_iou, ref_giou = _iou_giou_scalar(b1[i].tolist(), b2[j].tolist())
            assert iou[i, j].item() == pytest.approx(ref_iou, abs=1e-12)
            assert giou[i, j].item() == pytest.approx(ref_giou, abs=1e-12)
    pairs = _random_boxes(gen, 6)
    torch.testing.assert_close(
        B.elementwise_box_iou(b1[:6], pairs), B.box_iou(b1[:6], pairs).diag()
    )
    torch.testing.assert_close(
        B.elementwise_generalized_box_iou(b1[:6], pairs),
        B.generalized_box_iou(b1[:6], pairs).diag(),
    )


def test_degenerate_boxes_give_finite_values():
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert B.box_iou(point, point).item() == 0.0
    assert torch.isfinite(B.generalized_box_iou(point, point + 1)).all()


def test_elementwise_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        B.elementwise_box_iou(torch.zeros(3, 4), torch.zeros(2, 4))


def test_giou_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(99)
    pred = _random_boxes(gen, 4).requires_grad_()
    target = _random_boxes(gen, 4)
    assert torch.autograd.gradcheck(lambda p: B.elementwise_generalized_box_iou(p, target), (pred,))


def test_format_conversions_by_hand_and_round_trip():
    xyxy = torch.tensor([[1.0, 2.0, 5.0, 10.0]])
    torch.testing.assert_close(B.box_xyxy_to_cxcywh(xyxy), torch.tensor([[3.0, 6.0, 4.0, 8.0]]))
    torch.testing.assert_close(B.box_xyxy_to_xywh(xyxy), torch.tensor([[1.0, 2.0, 4.0, 8.0]]))
    gen = torch.Generator().manual_seed(7)
    boxes = _random_boxes(gen, 10).reshape(2, 5, 4)  # leading dims broadcast
    torch.testing.assert_close(B.box_cxcywh_to_xyxy(B.box_xyxy_to_cxcywh(boxes)), boxes)
    torch.testing.assert_close(B.box_xywh_to_xyxy(B.box_xyxy_to_xywh(boxes)), boxes)


def test_clip_boxes_to_image_uses_height_then_width():
    boxes = torch.tensor([[-5.0, -3.0, 50.0, 40.0], [10.0, 10.0, 20.0, 20.0]])
    clipped = B.clip_boxes_to_image(boxes, (30, 45))  # (h, w)
    torch.testing.assert_close(
        clipped, torch.tensor([[0.0, 0.0, 45.0, 30.0], [10.0, 10.0, 20.0, 20.0]])
    )
