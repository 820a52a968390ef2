"""Tests for alrp_lab.ops.box_coder."""

from __future__ import annotations

import math

import pytest
import torch

from alrp_lab.ops.box_coder import BoxCoder


def _random_boxes(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """(*shape, 4) float64 boxes, sizes 4 to 200 px: ratios stay inside the wh clip (62.5)."""
    xy = torch.rand(*shape, 2, generator=gen, dtype=torch.float64) * 500
    wh = torch.rand(*shape, 2, generator=gen, dtype=torch.float64) * 196 + 4
    return torch.cat((xy, xy + wh), dim=-1)


def test_encode_by_hand():
    # Anchor centre (5, 5) size 10x10; box centre (10, 15) size 10x20.
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=torch.float64)
    boxes = torch.tensor([[5.0, 5.0, 15.0, 25.0]], dtype=torch.float64)
    deltas = BoxCoder().encode(boxes, anchors)
    expected = torch.tensor([[0.5 / 0.1, 1.0 / 0.1, 0.0, math.log(2.0) / 0.2]], dtype=torch.float64)
    torch.testing.assert_close(deltas, expected)


def test_means_are_subtracted_before_scaling():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=torch.float64)
    coder = BoxCoder(means=(0.1, 0.0, 0.0, 0.0), stds=(0.5, 1.0, 1.0, 1.0))
    deltas = coder.encode(anchors, anchors)  # raw deltas are all zero
    torch.testing.assert_close(deltas, torch.tensor([[-0.2, 0.0, 0.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_float64(seed: int):
    gen = torch.Generator().manual_seed(seed)
    coder = BoxCoder(means=(0.01, -0.02, 0.03, 0.0), stds=(0.1, 0.1, 0.2, 0.2))
    anchors, boxes = _random_boxes(gen, 50), _random_boxes(gen, 50)
    decoded = coder.decode(coder.encode(boxes, anchors), anchors)
    torch.testing.assert_close(decoded, boxes, rtol=0, atol=1e-9)


def test_encode_and_decode_broadcast_over_leading_dims():
    gen = torch.Generator().manual_seed(3)
    coder = BoxCoder()
    anchors = _random_boxes(gen, 6)  # (6, 4) shared by a batch of 3
    boxes = _random_boxes(gen, 3, 6)
    deltas = coder.encode(boxes, anchors)
    assert deltas.shape == (3, 6, 4)
    torch.testing.assert_close(deltas[1], coder.encode(boxes[1], anchors))
    torch.testing.assert_close(coder.decode(deltas, anchors), boxes, rtol=0, atol=1e-9)


def test_decode_clamps_log_size_at_wh_clip_both_ways():
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0]], dtype=torch.float64)
    coder = BoxCoder(stds=(1.0, 1.0, 1.0, 1.0))
    grown = coder.decode(torch.tensor([[0.0, 0.0, 50.0, -50.0]], dtype=torch.float64), anchors)
    w, h = grown[0, 2] - grown[0, 0], grown[0, 3] - grown[0, 1]
    assert w.item() == pytest.approx(1000.0)  # 16 * exp(log(1000 / 16))
    assert h.item() == pytest.approx(16 * 16 / 1000)
    assert ((grown[0, 0] + grown[0, 2]) / 2).item() == pytest.approx(8.0)  # centre unmoved


def test_decode_is_differentiable_in_deltas():
    gen = torch.Generator().manual_seed(5)
    anchors = _random_boxes(gen, 4)
    deltas = torch.randn(4, 4, generator=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda d: BoxCoder().decode(d, anchors), (deltas,))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stds": (0.1, 0.1, 0.0, 0.2)}, "positive"),
        ({"means": (0.0, 0.0)}, "4 values"),
        ({"wh_clip": 0.0}, "wh_clip"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        BoxCoder(**kwargs)
