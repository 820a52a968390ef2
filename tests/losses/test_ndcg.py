"""NDCG Loss (Appendix D): the sorted path against a loop and the pairwise framework path."""

from __future__ import annotations

import math

import pytest
import torch

from alrp_lab.losses import NDCGLoss, ndcg_loss
from alrp_lab.losses.ndcg import ideal_gain, ndcg_definition
from alrp_lab.losses.ranking import pairwise_error_driven, split_ranking_inputs
from alrp_lab.testing.reference import make_ranking_batch, ndcg_loss_reference

TOL = {"rtol": 1e-9, "atol": 1e-9}


def _run(logits: torch.Tensor, labels: torch.Tensor, delta: float = 1.0):
    x = logits.detach().clone().requires_grad_()
    loss = ndcg_loss(x, labels, delta)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("delta", [1.0, 0.0])
@pytest.mark.parametrize("seed", [3001, 3002])
def test_matches_loop_and_pairwise_references(delta: float, seed: int) -> None:
    logits, labels, _ = make_ranking_batch(700, 35, 100, seed=seed)
    loss, grad = _run(logits, labels, delta)
    ref = ndcg_loss_reference(logits, labels, delta)
    torch.testing.assert_close((loss, grad), (ref.loss, ref.grad_logits), **TOL)
    inputs = split_ranking_inputs(logits, labels)
    generic = pairwise_error_driven(inputs.pos_scores, inputs.neg_scores, ndcg_definition(), delta)
    torch.testing.assert_close(generic.loss, loss, **TOL)
    torch.testing.assert_close(generic.grad_pos, grad[inputs.pos_index], **TOL)
    torch.testing.assert_close(generic.grad_neg, grad[inputs.neg_index], **TOL)


def test_hand_computed_case() -> None:
    # Positives at 0 and 1, a negative at 0.5, delta 1: rank = (2.75, 1.25).
    loss, grad = _run(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), torch.tensor([1, 0, 1]))
    g_max = 1 + 1 / math.log2(3)
    gains = [1 / math.log2(3.75), 1 / math.log2(2.25)]
    assert loss.item() == pytest.approx(1 - sum(gains) / g_max, abs=1e-15)
    pos = [-(1 - g) / g_max for g in gains]
    # The negative receives every positive's update in full (it is each one's only FP).
    expected = torch.tensor([pos[0], -pos[0] - pos[1], pos[1]], dtype=torch.float64)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-15)


def test_ideal_gain() -> None:
    like = torch.zeros(0, dtype=torch.float64)
    assert ideal_gain(0, like).item() == 0
    assert ideal_gain(3, like).item() == pytest.approx(1 + 1 / math.log2(3) + 0.5)


def test_perfect_ranking_and_theorem2() -> None:
    loss, grad = _run(torch.tensor([5.0, 1.0, 3.0, 0.9]), torch.tensor([1, 0, 1, 0]), delta=0.5)
    # Positives apart by more than 2 delta: ranks are exactly 1 and 2, the ideal order.
    assert loss.item() == pytest.approx(0, abs=1e-7) and grad.abs().sum() == 0
    logits, labels, _ = make_ranking_batch(1000, 50, seed=3011)
    _, grad = _run(logits, labels)
    torch.testing.assert_close(
        grad[labels == 1].abs().sum(), grad[labels == 0].abs().sum(), rtol=1e-12, atol=0
    )


def test_module_and_edge_cases() -> None:
    logits, labels, _ = make_ranking_batch(100, 10, seed=3021)
    torch.testing.assert_close(NDCGLoss()(logits, labels), ndcg_loss(logits, labels))
    x = torch.randn(4, requires_grad=True)
    loss = ndcg_loss(x, torch.tensor([0, -1, 0, 0]))
    loss.backward()
    assert loss.item() == 0 and x.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="same length"):
        ndcg_loss(torch.zeros(3), torch.zeros(2, dtype=torch.long))
