"""Sigmoid focal loss (Lin et al., RetinaNet), the score-based baseline of Tables 2 and 7."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alrp_lab.losses.cross_entropy import (
    check_logits_labels,
    check_reduction,
    reduce_loss,
    signed_logits,
)

__all__ = ["sigmoid_focal_loss", "FocalLoss"]


def _check_hyperparameters(alpha: float, gamma: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"focal loss alpha must lie in [0, 1], got {alpha}")
    if not (gamma >= 0.0 and math.isfinite(gamma)):
        raise ValueError(f"focal loss gamma must be a finite number >= 0, got {gamma}")


def sigmoid_focal_loss(
    logits: Tensor,
    labels: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "sum",
) -> Tensor:
    """Alpha-balanced focal loss of sigmoid scores.

    Positive: -alpha (1 - p)^gamma log p; negative: -(1 - alpha) p^gamma log(1 - p), with
    p = sigmoid(logit). Both read w * (1 - q)^gamma * (-log q) with q = sigmoid(z) the
    probability of the correct label (z the signed logit); (1 - q)^gamma is taken as
    exp(gamma * logsigmoid(-z)) so that neither the value nor the gradient overflows for huge
    logits (and gamma < 1 has no infinite slope at q = 1).

    Args:
        logits: (M,) raw scores.
        labels: (M,) int, 1 positive, 0 negative, -1 ignored (contributes 0 and no gradient).
        alpha: weight of positives in [0, 1]; negatives get 1 - alpha.
        gamma: focusing parameter >= 0; 0 gives alpha-balanced cross entropy.
        reduction: "sum", "mean" (over non-ignored entries) or "none" (returns (M,)).

    Returns:
        A scalar, or (M,) for "none".
    """
    check_reduction(reduction)
    _check_hyperparameters(alpha, gamma)
    check_logits_labels(logits, labels)
    z, valid = signed_logits(logits, labels)
    weight = torch.where(labels > 0, z.new_tensor(alpha), z.new_tensor(1.0 - alpha))
    loss = weight * -F.logsigmoid(z)
    if gamma != 0.0:
        # Skipped at gamma = 0, where 0 * logsigmoid(-inf) would be NaN for an infinite logit.
        loss = loss * torch.exp(gamma * F.logsigmoid(-z))
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return reduce_loss(loss, valid, reduction)


class FocalLoss(nn.Module):
    """Focal loss summed over non-ignored examples and divided by max(1, number of positives)
    (or by the ``avg_factor`` given to ``forward``)."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        _check_hyperparameters(alpha, gamma)
        self.alpha = alpha
        self.gamma = gamma

    def forward(
        self, logits: Tensor, labels: Tensor, avg_factor: Tensor | float | None = None
    ) -> Tensor:
        """logits (M,), labels (M,) -> scalar loss.

        ``avg_factor`` replaces the divisor max(1, number of positives) when given
        (mmdetection's name: FoveaBox divides by positives + images).
        """
        total = sigmoid_focal_loss(logits, labels, self.alpha, self.gamma, reduction="sum")
        if avg_factor is not None:
            return total / avg_factor
        # A tensor clamp, not max(1, int): no host sync per iteration.
        return total / (labels == 1).sum().clamp(min=1)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}"
