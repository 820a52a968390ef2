"""AP Loss (Chen et al.; Section 2.1 and 3 of the paper) with its error-driven gradient.

``L_AP = 1 - mean_i precision(i) = mean_i FP(i) / rank(i)`` over the positives; the error of a
positive is ``FP(i) / rank(i)``, its target 0, ``Z = |P|`` and ``p(j|i) = H(x_ij) / FP(i)``, so
``dL/ds_i = -FP(i) / rank(i) / |P|`` and ``dL/ds_j = sum_i H(x_ij) / rank(i) / |P|``.

``interpolated=True`` is the form of the authors' code (``mmdet/models/losses/ap_loss.py`` of
the aLRP Loss release): a positive's precision is the interpolated one, the largest precision
of any positive scored at or below it, so its error is ``1 - max_{k: s_k <= s_i} prec(k)``.
The error is still spread over the negatives above it by ``H(x_ij) / FP(i)``, which is the
authors' ``H(x_ij) / rank(i) * (1 - max_prec) / (1 - prec(i))``.
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

__all__ = ["ap_definition", "ap_loss", "APLoss", "interpolated_precision"]


def interpolated_precision(stats: RankingStats) -> Tensor:
    """(P,) the largest precision ``rank+(k) / rank(k)`` over positives with ``s_k <= s_i``.

    Positives are visited from the lowest score up, as the authors' loop does; tied scores
    take the order a stable sort gives them.
    """
    precision = stats.rank_pos / stats.rank
    order = torch.sort(stats.scores, stable=True).indices
    out = torch.empty_like(precision)
    out[order] = torch.cummax(precision[order], dim=0).values
    return out


def ap_definition(interpolated: bool = False) -> RankingLossDefinition:
    """AP Loss for the framework in :mod:`alrp_lab.losses.ranking`.

    ``interpolated``: the error of a positive is one minus its interpolated precision
    (:func:`interpolated_precision`, the authors' code) instead of ``FP(i) / rank(i)``.
    """

    def error(stats: RankingStats) -> Tensor:
        if interpolated:
            return 1.0 - interpolated_precision(stats)
        return stats.fp / stats.rank

    return RankingLossDefinition(
        error=error,
        target=lambda stats: torch.zeros_like(stats.fp),
        # max(., 1): no positives gives an empty sum over 1, a zero loss rather than NaN.
        normalizer=lambda stats: max(stats.num_positives, 1),
    )


def ap_loss(
    logits: Tensor, labels: Tensor, delta: float = 1.0, interpolated: bool = False
) -> Tensor:
    """AP Loss of flattened (anchor, class) examples, with the error-driven gradient.

    Args:
        logits: (M,) float scores (float16/bfloat16 are computed in float32; the gradient comes
            back in the logits' dtype).
        labels: (M,) int, 1 positive, 0 negative, -1 ignored.
        delta: ramp half-width of the smoothed step; 0 selects the unit step ``1[x > 0]``.
        interpolated: use the interpolated precision of the authors' code (see the module).

    Returns:
        () the loss (float64 for float64 logits, else float32); backward puts the error-driven
        gradient on ``logits``. No positives gives 0 with zero gradients.
    """
    delta = check_delta(delta)
    inputs = split_ranking_inputs(logits, labels, delta)
    definition = ap_definition(interpolated)
    result = sorted_error_driven(inputs.pos_scores, inputs.neg_scores, definition, delta)
    return apply_error_driven(logits, inputs, result)


class APLoss(nn.Module):
    """Module form of :func:`ap_loss`: ``forward(logits (M,), labels (M,)) -> ()``."""

    def __init__(self, delta: float = 1.0, interpolated: bool = False) -> None:
        super().__init__()
        self.delta = check_delta(delta)
        self.interpolated = bool(interpolated)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return ap_loss(logits, labels, self.delta, self.interpolated)

    def extra_repr(self) -> str:
        return f"delta={self.delta}, interpolated={self.interpolated}"
