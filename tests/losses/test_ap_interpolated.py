"""AP Loss with interpolated precision against a line-by-line copy of the authors' loop."""

from __future__ import annotations

import pytest
import torch

from alrp_lab.losses import APLoss, ap_loss
from alrp_lab.testing.reference import make_ranking_batch

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _authors_loop(logits: torch.Tensor, targets: torch.Tensor, delta: float = 1.0):
    """``APLoss.forward`` of the authors' ``mmdet/models/losses/ap_loss.py``, on the CPU.

    Returns (loss (), gradient (M,)). Kept as written there (the loop over positives from
    the lowest score up, the running maximum of precision) so a reader can compare.
    """
    classification_grads = torch.zeros(logits.shape, dtype=logits.dtype)
    fg_labels = targets == 1
    fg_logits = logits[fg_labels]
    fg_num = len(fg_logits)
    threshold_logit = torch.min(fg_logits) - delta
    relevant_bg_labels = (targets == 0) & (logits >= threshold_logit)
    relevant_bg_logits = logits[relevant_bg_labels]
    relevant_bg_grad = torch.zeros(len(relevant_bg_logits), dtype=logits.dtype)
    rank = torch.zeros(fg_num, dtype=logits.dtype)
    prec = torch.zeros(fg_num, dtype=logits.dtype)
    fg_grad = torch.zeros(fg_num, dtype=logits.dtype)
    max_prec = 0
    order = torch.sort(fg_logits, stable=True).indices
    for ii in order:
        fg_relations = fg_logits - fg_logits[ii]
        fg_relations = torch.clamp(fg_relations / (2 * delta) + 0.5, min=0, max=1)
        fg_relations[ii] = 0
        bg_relations = relevant_bg_logits - fg_logits[ii]
        bg_relations = torch.clamp(bg_relations / (2 * delta) + 0.5, min=0, max=1)
        rank_pos = 1 + torch.sum(fg_relations)
        fp_num = torch.sum(bg_relations)
        rank[ii] = rank_pos + fp_num
        current_prec = rank_pos / rank[ii]
        if max_prec <= current_prec:
            max_prec = current_prec
            relevant_bg_grad += bg_relations / rank[ii]
        else:
            relevant_bg_grad += (bg_relations / rank[ii]) * ((1 - max_prec) / (1 - current_prec))
        fg_grad[ii] = -(1 - max_prec)
        prec[ii] = max_prec
    classification_grads[fg_labels] = fg_grad
    classification_grads[relevant_bg_labels] = relevant_bg_grad
    classification_grads /= fg_num
    return 1 - prec.mean(), classification_grads


def _ours(logits: torch.Tensor, labels: torch.Tensor, delta: float = 1.0):
    x = logits.detach().clone().requires_grad_()
    loss = ap_loss(x, labels, delta, interpolated=True)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("delta", [1.0, 0.5])
@pytest.mark.parametrize("seed", [3101, 3102, 3103, 3104])
def test_matches_the_authors_loop(delta: float, seed: int) -> None:
    logits, labels, _ = make_ranking_batch(700, 40, 120, seed=seed)
    labels = labels.clone()
    labels[labels < 0] = 0  # the authors' loop has no ignored label
    loss, grad = _ours(logits, labels, delta)
    ref_loss, ref_grad = _authors_loop(logits, labels, delta)
    torch.testing.assert_close(loss, ref_loss, **TOL)
    torch.testing.assert_close(grad, ref_grad, **TOL)


def test_interpolation_lowers_the_loss_where_precision_rises_down_the_ranking() -> None:
    # Scores 3 (pos), 2 (neg), 1 (pos), 0.5 (pos) with the unit step: precisions 1, 2/3, 3/4.
    # Interpolated, the positive at 1 takes 3/4 from the one below it.
    logits = torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    labels = torch.tensor([1, 0, 1, 1])
    plain = ap_loss(logits, labels, delta=0.0)
    interp = ap_loss(logits, labels, delta=0.0, interpolated=True)
    assert plain.item() == pytest.approx((0 + 1 / 3 + 1 / 4) / 3, abs=1e-15)
    assert interp.item() == pytest.approx((0 + 1 / 4 + 1 / 4) / 3, abs=1e-15)


def test_equal_to_the_plain_form_when_precision_falls_down_the_ranking() -> None:
    # Precision non-increasing from top to bottom: interpolation changes nothing.
    logits = torch.tensor([3.0, 2.5, 2.0, 1.0, 0.0], dtype=torch.float64)
    labels = torch.tensor([1, 1, 0, 1, 0])
    for delta in (0.0, 0.2):
        torch.testing.assert_close(
            ap_loss(logits, labels, delta=delta, interpolated=True),
            ap_loss(logits, labels, delta=delta),
        )


def test_module_form() -> None:
    logits, labels, _ = make_ranking_batch(200, 10, 30, seed=3105)
    module = APLoss(delta=1.0, interpolated=True)
    assert "interpolated=True" in repr(module)
    torch.testing.assert_close(module(logits, labels), ap_loss(logits, labels, 1.0, True))
