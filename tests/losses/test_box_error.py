import pytest
import torch

from alrp_lab.losses.box_error import (
    BoxError,
    GIoUError,
    IoUError,
    L1Error,
    SmoothL1Error,
    build_box_error,
)


def _boxes(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def _vec(*values):
    return torch.tensor(values, dtype=torch.float64)


def _random_boxes(gen, n):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 10
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 5 + 0.1
    return torch.cat([xy, xy + wh], dim=1)


def _naive_iou_giou(a, b):
    """IoU and GIoU of two boxes with plain Python floats."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iou = inter / union
    return iou, iou - (hull - union) / hull


def test_identical_boxes_have_zero_error():
    boxes = _boxes([0, 0, 1, 1], [3, 4, 10, 6])
    assert torch.equal(IoUError()(boxes, boxes), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(GIoUError()(boxes, boxes), torch.zeros(2, dtype=torch.float64))


def test_side_by_side_touching_boxes():
    pred, target = _boxes([0, 0, 1, 1]), _boxes([1, 0, 2, 1])
    # IoU 0 and GIoU 0 (hull = union): (1 - 0) / 0.5 and ((1 - 0) / 2) / 0.5.
    assert IoUError()(pred, target).tolist() == [2.0]
    assert GIoUError()(pred, target).tolist() == [1.0]


def test_far_apart_boxes_approach_the_maximum():
    pred, target = _boxes([0, 0, 1, 1]), _boxes([100, 100, 101, 101])
    giou = -(101.0**2 - 2.0) / 101.0**2
    torch.testing.assert_close(GIoUError()(pred, target), _vec(((1 - giou) / 2) / 0.5))
    assert GIoUError()(pred, target).item() > 1.999


def test_half_overlap_and_tau():
    pred, target = _boxes([0, 0, 2, 1]), _boxes([1, 0, 3, 1])
    # inter 1, union 3, hull 3: IoU = GIoU = 1/3.
    torch.testing.assert_close(IoUError()(pred, target), _vec(4 / 3))
    torch.testing.assert_close(GIoUError()(pred, target), _vec(2 / 3))
    # The RPN's tau = 0.7 and IoU below tau: the error exceeds 1 and is not clipped.
    torch.testing.assert_close(IoUError(tau=0.7)(pred, target), _vec(20 / 9))
    # tau = 0 is the plain IoU Loss.
    torch.testing.assert_close(IoUError(tau=0.0)(pred, target), _vec(2 / 3))


@pytest.mark.parametrize("seed", [201, 202])
def test_iou_errors_match_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    pred, target = _random_boxes(gen, 64), _random_boxes(gen, 64)
    pairs = [_naive_iou_giou(a, b) for a, b in zip(pred.tolist(), target.tolist(), strict=True)]
    iou = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    giou = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    torch.testing.assert_close(IoUError(tau=0.3)(pred, target), (1 - iou) / 0.7)
    torch.testing.assert_close(GIoUError()(pred, target), (1 - giou) / 2 / 0.5)


def test_smooth_l1_hand_computed():
    pred = _boxes([0.5, -2.0, 0.0, 1.0])
    target = _boxes([0.0, 0.0, 0.0, 0.0])
    # 0.5 d^2 for |d| < 1, |d| - 0.5 otherwise: 0.125 + 1.5 + 0 + 0.5.
    assert SmoothL1Error()(pred, target).tolist() == [2.125]
    # beta = 0.5: |0.5| is not below beta, so every nonzero coordinate is |d| - 0.25.
    assert SmoothL1Error(beta=0.5)(pred, target).tolist() == [2.75]


@pytest.mark.parametrize("seed", [211, 212])
def test_smooth_l1_and_l1_match_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    target = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    beta = 0.7
    expected = torch.tensor(
        [
            sum(0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta for d in row)
            for row in (pred - target).tolist()
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(SmoothL1Error(beta)(pred, target), expected)
    l1 = torch.tensor([sum(abs(d) for d in row) for row in (pred - target).tolist()]).double()
    torch.testing.assert_close(L1Error()(pred, target), l1)
    torch.testing.assert_close(SmoothL1Error(beta=0.0)(pred, target), l1)


def test_spaces():
    assert IoUError.space == GIoUError.space == "boxes"
    assert SmoothL1Error.space == L1Error.space == "deltas"
    assert all(issubclass(c, BoxError) for c in (IoUError, GIoUError, SmoothL1Error, L1Error))


@pytest.mark.parametrize("error", [IoUError(), GIoUError(), SmoothL1Error(), L1Error()])
def test_empty_inputs_give_empty_outputs(error):
    pred = torch.zeros(0, 4, requires_grad=True)
    out = error(pred, torch.zeros(0, 4))
    out.sum().backward()
    assert out.shape == (0,) and pred.grad.shape == (0, 4)


@pytest.mark.parametrize("error", [IoUError(), GIoUError()])
def test_gradients_reach_the_predicted_boxes(error):
    pred = _boxes([0.0, 0.0, 2.0, 1.0], [5.0, 5.0, 6.0, 6.0]).requires_grad_(True)
    target = _boxes([1.0, 0.0, 3.0, 1.0], [0.0, 0.0, 1.0, 1.0])
    error(pred, target).sum().backward()
    assert torch.isfinite(pred.grad).all()
    # Moving x2 of the first box right grows the overlap, so the error must fall.
    assert pred.grad[0, 2] < 0


def test_build_box_error():
    assert isinstance(build_box_error("iou"), IoUError)
    assert build_box_error("giou", tau=0.7).tau == 0.7
    assert build_box_error("smooth_l1", beta=0.11).beta == 0.11
    assert isinstance(build_box_error("l1"), L1Error)
    with pytest.raises(ValueError, match=r"\['giou', 'iou', 'l1', 'smooth_l1'\]"):
        build_box_error("diou")
    with pytest.raises(ValueError, match="accepts"):
        build_box_error("l1", beta=1.0)


def test_bad_input_raises_a_clear_error():
    with pytest.raises(ValueError, match=r"\(P, 4\)"):
        IoUError()(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(P, 4\)"):
        L1Error()(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="tau"):
        GIoUError(tau=1.0)
    with pytest.raises(ValueError, match="beta"):
        SmoothL1Error(beta=-1.0)


def test_coord_reduction_mean_is_a_quarter_of_the_sum():
    from alrp_lab.losses import build_box_error

    gen = torch.Generator().manual_seed(4401)
    pred = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    target = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    for name, kwargs in (("smooth_l1", {"beta": 0.11}), ("l1", {})):
        total = build_box_error(name, coord_reduction="sum", **kwargs)(pred, target)
        mean = build_box_error(name, coord_reduction="mean", **kwargs)(pred, target)
        torch.testing.assert_close(mean, total / 4, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="coord_reduction"):
        build_box_error("l1", coord_reduction="max")
