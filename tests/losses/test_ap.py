"""AP Loss: the sorted path against the loop reference, hand-computed values, edge cases."""

from __future__ import annotations

import pytest
import torch

from alrp_lab.losses import APLoss, ap_loss
from alrp_lab.losses.ap import ap_definition
from alrp_lab.losses.ranking import pairwise_error_driven, split_ranking_inputs
from alrp_lab.testing.reference import ap_loss_reference, make_ranking_batch

TOL = {"rtol": 1e-9, "atol": 1e-9}


def _run(logits: torch.Tensor, labels: torch.Tensor, delta: float = 1.0):
    x = logits.detach().clone().requires_grad_()
    loss = ap_loss(x, labels, delta)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("delta", [1.0, 0.25, 0.0])
@pytest.mark.parametrize("seed", [2001, 2002, 2003])
def test_matches_loop_reference(delta: float, seed: int) -> None:
    logits, labels, _ = make_ranking_batch(900, 45, 150, seed=seed)
    loss, grad = _run(logits, labels, delta)
    ref = ap_loss_reference(logits, labels, delta)
    torch.testing.assert_close(loss, ref.loss, **TOL)
    torch.testing.assert_close(grad, ref.grad_logits, **TOL)


def test_hand_computed_case() -> None:
    # Positives at 0 and 1, a negative at 0.5, delta 1: FP = (0.75, 0.25), rank = (2.75, 1.25).
    loss, grad = _run(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), torch.tensor([1, 0, 1]))
    assert loss.item() == pytest.approx(13 / 55, abs=1e-15)
    expected = torch.tensor([-3 / 22, 13 / 55, -1 / 10], dtype=torch.float64)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("seed", [2011, 2012])
def test_theorem2_balance(seed: int) -> None:
    logits, labels, _ = make_ranking_batch(2000, 80, 100, seed=seed)
    _, grad = _run(logits, labels)
    pos_total, neg_total = grad[labels == 1].abs().sum(), grad[labels == 0].abs().sum()
    assert pos_total > 0
    torch.testing.assert_close(pos_total, neg_total, rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", [2021, 2022])
def test_generic_framework_path_equals_closed_form(seed: int) -> None:
    logits, labels, _ = make_ranking_batch(500, 30, 50, seed=seed)
    loss, grad = _run(logits, labels)
    inputs = split_ranking_inputs(logits, labels)
    generic = pairwise_error_driven(inputs.pos_scores, inputs.neg_scores, ap_definition())
    torch.testing.assert_close(generic.loss, loss, **TOL)
    torch.testing.assert_close(generic.grad_pos, grad[inputs.pos_index], **TOL)
    torch.testing.assert_close(generic.grad_neg, grad[inputs.neg_index], **TOL)


def test_perfect_ranking_has_zero_loss_and_gradient() -> None:
    # Every negative more than delta below every positive.
    loss, grad = _run(torch.tensor([5.0, 1.0, 3.0, 0.9]), torch.tensor([1, 0, 1, 0]))
    assert loss.item() == 0 and grad.abs().sum() == 0


def test_module_matches_function() -> None:
    logits, labels, _ = make_ranking_batch(100, 10, seed=2031)
    torch.testing.assert_close(APLoss(0.5)(logits, labels), ap_loss(logits, labels, 0.5))
    with pytest.raises(ValueError, match="delta"):
        APLoss(delta=float("nan"))


def test_half_precision_gradient_dtype() -> None:
    logits, labels, _ = make_ranking_batch(100, 10, seed=2041)
    x = logits.half().requires_grad_()
    loss = ap_loss(x, labels)
    loss.backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == torch.float16
    ref = ap_loss_reference(logits.half().double(), labels)
    torch.testing.assert_close(loss.double(), ref.loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "labels",
    [torch.zeros(5, dtype=torch.long), torch.full((5,), -1), torch.zeros(0, dtype=torch.long)],
    ids=["only-negatives", "all-ignored", "empty"],
)
def test_no_positives(labels: torch.Tensor) -> None:
    x = torch.randn(labels.numel(), requires_grad=True)
    loss = ap_loss(x, labels)
    loss.backward()
    assert loss.item() == 0 and not x.grad.isnan().any() and x.grad.abs().sum() == 0


def test_no_negatives_and_one_positive() -> None:
    loss, grad = _run(torch.tensor([1.0, 2.0, -1.0]), torch.tensor([1, 1, -1]))
    assert loss.item() == 0 and grad.abs().sum() == 0
    # One positive at 0, negatives at 0.5 and 4: FP = 0.75 + 1, rank = 2.75.
    loss, grad = _run(torch.tensor([0.5, 0.0, 4.0], dtype=torch.float64), torch.tensor([0, 1, 0]))
    assert loss.item() == pytest.approx(1.75 / 2.75, abs=1e-15)
    expected = torch.tensor([0.75, -1.75, 1.0], dtype=torch.float64) / 2.75
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-15)


def test_huge_logits() -> None:
    logits, labels, _ = make_ranking_batch(400, 20, 20, seed=2051)
    loss, grad = _run(logits * 1e4, labels)  # every pair saturates
    ref = ap_loss_reference(logits * 1e4, labels)
    torch.testing.assert_close((loss, grad), (ref.loss, ref.grad_logits), **TOL)
    loss, grad = _run(logits + 1e4, labels)  # large offset, O(1) differences
    ref = ap_loss_reference(logits + 1e4, labels)
    torch.testing.assert_close((loss, grad), (ref.loss, ref.grad_logits), **TOL)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="1-D"):
        ap_loss(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels may only hold"):
        ap_loss(torch.zeros(2), torch.tensor([1, 5]))
    with pytest.raises(ValueError, match="floating-point"):
        ap_loss(torch.zeros(2, dtype=torch.long), torch.tensor([1, 0]))
