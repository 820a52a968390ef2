"""AP Loss (Chen et al.; Section 2.1 and 3 of the paper) with its error-driven gradient.

``L_AP = 1 - mean_i precision(i) = mean_i FP(i) / rank(i)`` over the positives; the error of a
positive is ``FP(i) / rank(i)``, its target 0, ``Z = |P|`` and ``p(j|i) = H(x_ij) / FP(i)``, so
``dL/ds_i = -FP(i) / rank(i) / |P|`` and ``dL/ds_j = sum_i H(x_ij) / rank(i) / |P|``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from alrp_lab.losses.ranking import (
    RankingLossDefinition,
    RankingStats,
    apply_error_driven,
    check_delta,
    sorted_error_driven,
    split_ranking_inputs,
)

__all__ = ["ap_definition", "ap_loss", "APLoss"]


def ap_definition() -> RankingLossDefinition:
    """AP Loss for the framework in :mod:`alrp_lab.losses.ranking`."""

    def error(stats: RankingStats) -> Tensor:
        return stats.fp / stats.rank

    return RankingLossDefinition(
        error=error,
        target=lambda stats: torch.zeros_like(stats.fp),
        # max(., 1): no positives gives an empty sum over 1, a zero loss rather than NaN.
        normalizer=lambda stats: max(stats.num_positives, 1),
    )


def ap_loss(logits: Tensor, labels: Tensor, delta: float = 1.0) -> Tensor:
    """AP Loss of flattened (anchor, class) examples, with the error-driven gradient.

    Args:
        logits: (M,) float scores (float16/bfloat16 are computed in float32; the gradient comes
            back in the logits' dtype).
        labels: (M,) int, 1 positive, 0 negative, -1 ignored.
        delta: ramp half-width of the smoothed step; 0 selects the unit step ``1[x > 0]``.

    Returns:
        () the loss (float64 for float64 logits, else float32); backward puts the error-driven
        gradient on ``logits``. No positives gives 0 with zero gradients.
    """
    delta = check_delta(delta)
    inputs = split_ranking_inputs(logits, labels)
    result = sorted_error_driven(inputs.pos_scores, inputs.neg_scores, ap_definition(), delta)
    return apply_error_driven(logits, inputs, result)


class APLoss(nn.Module):
    """Module form of :func:`ap_loss`: ``forward(logits (M,), labels (M,)) -> ()``."""

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        self.delta = check_delta(delta)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return ap_loss(logits, labels, self.delta)

    def extra_repr(self) -> str:
        return f"delta={self.delta}"
