"""Tests for alrp_lab.ops.nms against a brute-force greedy NMS."""

from __future__ import annotations

import importlib

import pytest
import torch

from alrp_lab.ops.nms import batched_nms, nms

# The package re-exports the function `nms`, which shadows the submodule of the same name.
nms_module = importlib.import_module("alrp_lab.ops.nms")


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _reference_nms(boxes, scores, threshold, classes=None) -> list[int]:
    """Greedy NMS one box at a time; ties in score visited in input order."""
    boxes, scores = boxes.tolist(), scores.tolist()
    classes = [0] * len(boxes) if classes is None else classes.tolist()
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])  # stable
    keep: list[int] = []
    for i in order:
        if all(classes[k] != classes[i] or _iou(boxes[k], boxes[i]) <= threshold for k in keep):
            keep.append(i)
    return keep


def _random_detections(gen: torch.Generator, n: int, tie_levels: int = 0):
    """(n, 4) float64 clustered boxes and (n,) scores, quantised to force ties if asked."""
    centres = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 25
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 30 + 10
    boxes = torch.cat((centres - wh / 2, centres + wh / 2), dim=1)
    scores = torch.rand(n, generator=gen, dtype=torch.float64)
    if tie_levels:
        scores = (scores * tie_levels).floor() / tie_levels
    return boxes, scores


def test_hand_case():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 90/110 with box 1
            [1.0, 0.0, 11.0, 10.0],
            [1.0, 0.0, 11.0, 4.0],  # inside box 1: IoU exactly 40/100
            [50.0, 50.0, 60.0, 60.0],
        ],
        dtype=torch.float64,
    )
    scores = torch.tensor([0.5, 0.9, 0.8, 0.1])
    assert nms(boxes, scores, 0.5, use_torchvision=False).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.4, use_torchvision=False).tolist() == [1, 2, 3]  # strict ">"
    assert nms(boxes, scores, 0.39, use_torchvision=False).tolist() == [1, 3]
    assert nms(boxes, scores, 0.85, use_torchvision=False).tolist() == [1, 2, 0, 3]


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("tie_levels", [0, 4])
def test_matches_brute_force(threshold: float, tie_levels: int):
    gen = torch.Generator().manual_seed(int(threshold * 10) + 100 * tie_levels)
    boxes, scores = _random_detections(gen, 60, tie_levels)
    keep = nms(boxes, scores, threshold, use_torchvision=False)
    assert keep.dtype == torch.long
    assert keep.tolist() == _reference_nms(boxes, scores, threshold)


def test_identical_boxes_keep_the_first_of_equal_scores():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 3)
    scores = torch.tensor([0.2, 0.7, 0.7])
    assert nms(boxes, scores, 0.5, use_torchvision=False).tolist() == [1]
    assert nms(boxes, scores, 1.0, use_torchvision=False).tolist() == [1, 2, 0]


def test_chunked_suppression_matrix_gives_the_same_result(monkeypatch: pytest.MonkeyPatch):
    gen = torch.Generator().manual_seed(21)
    boxes, scores = _random_detections(gen, 50)
    full = nms(boxes, scores, 0.5, use_torchvision=False)
    monkeypatch.setattr(nms_module, "_CHUNK", 7)
    assert nms(boxes, scores, 0.5, use_torchvision=False).tolist() == full.tolist()


def test_empty_input():
    for fn_args in ((), (torch.zeros(0, dtype=torch.long),)):
        fn = batched_nms if fn_args else nms
        keep = fn(torch.zeros(0, 4), torch.zeros(0), *fn_args, 0.5, use_torchvision=False)
        assert keep.shape == (0,) and keep.dtype == torch.long


@pytest.mark.parametrize("threshold", [0.2, 0.5])
def test_batched_matches_per_class_brute_force(threshold: float):
    gen = torch.Generator().manual_seed(int(threshold * 1000))
    boxes, scores = _random_detections(gen, 80, tie_levels=8)
    classes = torch.randint(0, 4, (80,), generator=gen)
    keep = batched_nms(boxes, scores, classes, threshold, use_torchvision=False)
    assert keep.tolist() == _reference_nms(boxes, scores, threshold, classes)
    assert (scores[keep].diff() <= 0).all()


def test_fast_path_dispatch_and_offset_trick(monkeypatch: pytest.MonkeyPatch):
    """A stand-in kernel checks the torchvision branch, offsets included, without torchvision."""
    calls = []

    def fake_kernel(boxes, scores, threshold):
        calls.append(boxes)
        return nms(boxes, scores, threshold, use_torchvision=False)

    monkeypatch.setattr(nms_module, "_torchvision_nms", fake_kernel)
    gen = torch.Generator().manual_seed(5)
    boxes, scores = _random_detections(gen, 40)
    boxes = boxes - 30  # negative coordinates: an offset of max + 1 alone would not separate
    classes = torch.randint(0, 3, (40,), generator=gen)
    fast = batched_nms(boxes, scores, classes, 0.5)
    assert len(calls) == 1
    assert fast.tolist() == _reference_nms(boxes, scores, 0.5, classes)
    assert nms(boxes, scores, 0.5).tolist() == _reference_nms(boxes, scores, 0.5)
    assert len(calls) == 2
    nms(boxes, scores, 0.5, use_torchvision=False)
    assert len(calls) == 2


def test_half_precision_boxes():
    gen = torch.Generator().manual_seed(8)
    boxes, scores = _random_detections(gen, 30)
    keep = nms(boxes.half(), scores.half(), 0.5, use_torchvision=False)
    assert keep.tolist() == _reference_nms(boxes.half().double(), scores.half().double(), 0.5)


@pytest.mark.parametrize(
    ("boxes", "scores", "threshold", "match"),
    [
        (torch.zeros(3, 5), torch.zeros(3), 0.5, r"\(N, 4\)"),
        (torch.zeros(3, 4), torch.zeros(2), 0.5, "one score per box"),
        (torch.zeros(3, 4), torch.zeros(3), 50, r"\[0, 1\]"),
    ],
)
def test_bad_input_raises(boxes, scores, threshold, match):
    with pytest.raises(ValueError, match=match):
        nms(boxes, scores, threshold)


def test_batched_rejects_mismatched_idxs():
    with pytest.raises(ValueError, match="one category per box"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.long), 0.5)
