"""DenseDetectionLoss: targets, the order of localisation errors, every loss combination."""

from __future__ import annotations

import pytest
import torch

import alrp_lab.models.dense_loss as dense_loss_module
from alrp_lab.assigners import AssignResult
from alrp_lab.losses import (
    SelfBalance,
    alrp_loss,
    build_box_error,
    sigmoid_cross_entropy,
    sigmoid_focal_loss,
)
from alrp_lab.models.dense_loss import DenseDetectionLoss, build_dense_targets
from alrp_lab.ops.box_coder import BoxCoder

BOX_ERRORS = ("iou", "giou", "smooth_l1", "l1")
CLS_LOSSES = ("alrp", "ap", "focal", "ce")


def _random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 50
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 25 + 5
    return torch.cat([xy, xy + wh], dim=1)


def _random_batch(seed: int, batch=2, num_anchors=12, num_classes=3, num_gt=(3, 2)):
    """Random float64 inputs; every image has positives, negatives and ignored anchors."""
    gen = torch.Generator().manual_seed(seed)
    anchors = _random_boxes(num_anchors, gen)
    gt_boxes = [_random_boxes(g, gen) for g in num_gt]
    gt_labels = [torch.randint(0, num_classes, (g,), generator=gen) for g in num_gt]
    assigns = []
    for g in num_gt:
        matched = torch.randint(-2, g, (num_anchors,), generator=gen)
        matched[:3] = torch.tensor([0, -1, -2])  # at least one of each kind
        assigns.append(AssignResult(matched, torch.rand(num_anchors, dtype=torch.float64)))
    logits = torch.randn(batch, num_anchors, num_classes, generator=gen, dtype=torch.float64)
    deltas = torch.randn(batch, num_anchors, 4, generator=gen, dtype=torch.float64) * 0.5
    return logits.requires_grad_(), deltas.requires_grad_(), anchors, assigns, gt_boxes, gt_labels


def _brute_force_positives(assigns, gt_boxes, gt_labels, num_classes):
    """Labels (B*A*C,) and, per positive in flattened order, (image, anchor, gt box)."""
    labels, positives = [], []
    for b, result in enumerate(assigns):
        for a, m in enumerate(result.matched_gt.tolist()):
            for c in range(num_classes):
                if m == -2:
                    labels.append(-1)
                elif m >= 0 and c == int(gt_labels[b][m]):
                    labels.append(1)
                    positives.append((b, a, gt_boxes[b][m]))
                else:
                    labels.append(0)
    return torch.tensor(labels), positives


def _brute_force_errors(positives, deltas, anchors, box_error, coder):
    rows = []
    for b, a, gt in positives:
        if box_error.space == "boxes":
            rows.append(box_error(coder.decode(deltas[b, a][None], anchors[a][None]), gt[None]))
        else:
            rows.append(box_error(deltas[b, a][None], coder.encode(gt[None], anchors[a][None])))
    return torch.cat(rows)


def test_labels_hand_case() -> None:
    matched = torch.tensor([[0, -1, -2, 1], [-1, 0, -1, -2]])
    boxes = [torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]), torch.tensor([[1.0, 2, 3, 4]])]
    labels = [torch.tensor([2, 0]), torch.tensor([1])]
    targets = build_dense_targets(matched, boxes, labels, num_classes=3)
    expected = torch.tensor(
        [
            [[0, 0, 1], [0, 0, 0], [-1, -1, -1], [1, 0, 0]],
            [[0, 0, 0], [0, 1, 0], [0, 0, 0], [-1, -1, -1]],
        ]
    )
    assert torch.equal(targets.labels, expected)
    assert targets.pos_image.tolist() == [0, 0, 1]
    assert targets.pos_anchor.tolist() == [0, 3, 1]
    torch.testing.assert_close(
        targets.pos_gt_boxes, torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4]])
    )


@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize("box_error_name", BOX_ERRORS)
def test_loc_errors_follow_flattened_positive_order(seed, box_error_name, monkeypatch) -> None:
    logits, deltas, anchors, assigns, gt_boxes, gt_labels = _random_batch(seed)
    coder = BoxCoder()
    box_error = build_box_error(box_error_name)
    seen = {}

    def spy(flat_logits, flat_labels, loc_errors, delta, **kwargs):
        seen.update(logits=flat_logits, labels=flat_labels, errors=loc_errors)
        return alrp_loss(flat_logits, flat_labels, loc_errors, delta, **kwargs)

    monkeypatch.setattr(dense_loss_module, "alrp_loss", spy)
    loss = DenseDetectionLoss("alrp", box_error, SelfBalance(7.0), coder)
    out = loss(logits, deltas, anchors, assigns, gt_boxes, gt_labels)

    labels, positives = _brute_force_positives(assigns, gt_boxes, gt_labels, num_classes=3)
    expected_errors = _brute_force_errors(positives, deltas, anchors, box_error, coder)
    assert torch.equal(seen["labels"], labels)
    torch.testing.assert_close(seen["logits"], logits.reshape(-1))
    torch.testing.assert_close(seen["errors"], expected_errors)
    assert out["num_pos"] == len(positives)
    ref = alrp_loss(logits.reshape(-1), labels, expected_errors)
    torch.testing.assert_close(out["loss_cls"], ref.cls.detach())
    torch.testing.assert_close(out["loss_loc"], ref.loc.detach())
    torch.testing.assert_close(out["loss"], ref.cls + 7.0 * ref.loc)
    # The logged diagnostics describe the same Eloc the loss ranked with.
    torch.testing.assert_close(out["eloc_mean"], expected_errors.mean().detach())
    over = sum(1 for e in expected_errors.tolist() if e > 1) / len(positives)
    assert out["eloc_over_one"].item() == pytest.approx(over)


@pytest.mark.parametrize("cls_loss", CLS_LOSSES)
@pytest.mark.parametrize("box_error_name", BOX_ERRORS)
def test_every_combination_runs_forward_and_backward(cls_loss, box_error_name) -> None:
    logits, deltas, anchors, assigns, gt_boxes, gt_labels = _random_batch(21)
    loss = DenseDetectionLoss(cls_loss, build_box_error(box_error_name), SelfBalance(2.0))
    out = loss(logits, deltas, anchors, assigns, gt_boxes, gt_labels)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    assert not out["loss_cls"].requires_grad and not out["loss_loc"].requires_grad
    torch.testing.assert_close(out["loss"].detach(), out["loss_cls"] + 2.0 * out["loss_loc"])
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert torch.isfinite(deltas.grad).all() and deltas.grad.abs().sum() > 0


def test_score_losses_and_their_normalisation() -> None:
    logits, deltas, anchors, assigns, gt_boxes, gt_labels = _random_batch(31)
    labels, positives = _brute_force_positives(assigns, gt_boxes, gt_labels, num_classes=3)
    num_pos = len(positives)
    errors = _brute_force_errors(positives, deltas, anchors, build_box_error("l1"), BoxCoder())
    flat = logits.reshape(-1)
    for cls_loss, ref_cls in (
        ("focal", sigmoid_focal_loss(flat, labels, alpha=0.3, gamma=1.5) / num_pos),
        ("ce", sigmoid_cross_entropy(flat, labels) / num_pos),
    ):
        loss = DenseDetectionLoss(
            cls_loss, build_box_error("l1"), None, alpha=0.3, gamma=1.5, loc_weight=3.0
        )
        out = loss(logits, deltas, anchors, assigns, gt_boxes, gt_labels)
        torch.testing.assert_close(out["loss_cls"], ref_cls.detach())
        torch.testing.assert_close(out["loss_loc"], errors.sum().detach() / num_pos)
        torch.testing.assert_close(out["loss"].detach(), out["loss_cls"] + 3.0 * out["loss_loc"])


@pytest.mark.parametrize("cls_loss", ["focal", "ce"])
def test_score_normalizer_positives_plus_images(cls_loss) -> None:
    # FoveaBox's mmdetection head divides the classification sum by positives + images; the
    # localisation term keeps dividing by the positives.
    logits, deltas, anchors, assigns, gt_boxes, gt_labels = _random_batch(33, batch=2)
    labels, positives = _brute_force_positives(assigns, gt_boxes, gt_labels, num_classes=3)
    num_pos = len(positives)
    errors = _brute_force_errors(positives, deltas, anchors, build_box_error("l1"), BoxCoder())
    flat = logits.reshape(-1)
    total = (
        sigmoid_focal_loss(flat, labels, alpha=0.3, gamma=1.5)
        if cls_loss == "focal"
        else sigmoid_cross_entropy(flat, labels)
    )
    loss = DenseDetectionLoss(
        cls_loss,
        build_box_error("l1"),
        None,
        alpha=0.3,
        gamma=1.5,
        score_normalizer="positives+images",
    )
    out = loss(logits, deltas, anchors, assigns, gt_boxes, gt_labels)
    torch.testing.assert_close(out["loss_cls"], total.detach() / (num_pos + 2))
    torch.testing.assert_close(out["loss_loc"], errors.sum().detach() / num_pos)
    # Without positives the divisor is the number of images, not 1.
    background = [AssignResult.all_background(12, dtype=torch.float64) for _ in range(2)]
    empty = [torch.zeros(0, 4, dtype=torch.float64)] * 2
    no_labels = [torch.zeros(0, dtype=torch.long)] * 2
    out = loss(logits, deltas, anchors, background, empty, no_labels)
    zeros = torch.zeros_like(flat, dtype=torch.long)
    reference = (
        sigmoid_focal_loss(flat, zeros, alpha=0.3, gamma=1.5)
        if cls_loss == "focal"
        else sigmoid_cross_entropy(flat, zeros)
    )
    torch.testing.assert_close(out["loss_cls"], reference.detach() / 2)
    with pytest.raises(ValueError, match="score_normalizer"):
        DenseDetectionLoss(cls_loss, build_box_error("l1"), score_normalizer="images")


def test_ap_loss_localisation_is_mean_error() -> None:
    logits, deltas, anchors, assigns, gt_boxes, gt_labels = _random_batch(41)
    _, positives = _brute_force_positives(assigns, gt_boxes, gt_labels, num_classes=3)
    box_error = build_box_error("smooth_l1")
    errors = _brute_force_errors(positives, deltas, anchors, box_error, BoxCoder())
    out = DenseDetectionLoss("ap", box_error)(logits, deltas, anchors, assigns, gt_boxes, gt_labels)
    torch.testing.assert_close(out["loss_loc"], errors.mean().detach())


@pytest.mark.parametrize("cls_loss", CLS_LOSSES)
def test_batch_without_positives(cls_loss) -> None:
    logits, deltas, anchors, _, _, _ = _random_batch(51)
    assigns = [AssignResult.all_background(12, dtype=torch.float64) for _ in range(2)]
    empty = [torch.zeros(0, 4, dtype=torch.float64)] * 2
    no_labels = [torch.zeros(0, dtype=torch.long)] * 2
    loss = DenseDetectionLoss(cls_loss, build_box_error("giou"), SelfBalance(50.0))
    out = loss(logits, deltas, anchors, assigns, empty, no_labels)
    out["loss"].backward()
    assert out["num_pos"] == 0 and out["loss_loc"] == 0
    assert torch.isfinite(logits.grad).all() and torch.equal(deltas.grad, torch.zeros_like(deltas))
    if cls_loss in ("alrp", "ap"):  # SPEC: a zero loss with zero gradients
        assert out["loss"] == 0 and torch.equal(logits.grad, torch.zeros_like(logits))
    else:  # negatives still train a score-based classifier
        assert out["loss"] > 0 and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", [61, 62])
def test_grad_balance_alrp_is_one(seed) -> None:
    logits, deltas, anchors, assigns, gt_boxes, gt_labels = _random_batch(
        seed, num_anchors=40, num_classes=4
    )
    loss = DenseDetectionLoss(
        "alrp", build_box_error("giou"), SelfBalance(), track_grad_balance=True
    )
    assert loss.grad_balance() is None
    loss(logits, deltas, anchors, assigns, gt_boxes, gt_labels)["loss"].backward()
    assert loss.grad_balance() == pytest.approx(1.0, abs=1e-4)


def test_grad_balance_focal_matches_brute_force() -> None:
    logits, deltas, anchors, assigns, gt_boxes, gt_labels = _random_batch(71)
    labels, _ = _brute_force_positives(assigns, gt_boxes, gt_labels, num_classes=3)
    loss = DenseDetectionLoss("focal", build_box_error("l1"), track_grad_balance=True)
    loss(logits, deltas, anchors, assigns, gt_boxes, gt_labels)["loss"].backward()
    grad = logits.grad.reshape(-1).abs()
    expected = grad[labels == 0].sum() / grad[labels == 1].sum()
    assert loss.grad_balance() == pytest.approx(float(expected), rel=1e-9)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown classification loss"):
        DenseDetectionLoss("hinge", build_box_error("iou"))
    with pytest.raises(ValueError, match="build_box_error"):
        DenseDetectionLoss("alrp", "giou")  # type: ignore[arg-type]
    logits, deltas, anchors, assigns, gt_boxes, gt_labels = _random_batch(81)
    loss = DenseDetectionLoss("alrp", build_box_error("iou"))
    with pytest.raises(ValueError, match="shape mismatch"):
        loss(logits, deltas[:, :5], anchors, assigns, gt_boxes, gt_labels)
    with pytest.raises(ValueError, match="one assignment"):
        loss(logits, deltas, anchors, assigns[:1], gt_boxes, gt_labels)


@pytest.mark.parametrize("cls_loss", CLS_LOSSES)
def test_eloc_diagnostics_count_errors_over_one(cls_loss) -> None:
    """Only aLRP reports Eloc's mean and the share of positives with Eloc > 1."""
    logits, deltas, anchors, assigns, gt_boxes, gt_labels = _random_batch(61)
    # Move every box 5 widths and heights off its anchor (the coder multiplies dx, dy by
    # its stds of 0.1): IoU 0, so Eloc = 2 with IoU.
    far = deltas.clone()
    far[..., :2] += 50.0
    out = DenseDetectionLoss(cls_loss, build_box_error("iou"))(
        logits, far, anchors, assigns, gt_boxes, gt_labels
    )
    if cls_loss != "alrp":
        assert "eloc_mean" not in out and "eloc_over_one" not in out
        return
    assert out["eloc_over_one"].item() == 1.0
    assert out["eloc_mean"].item() == pytest.approx(2.0)
    assert not out["eloc_mean"].requires_grad
