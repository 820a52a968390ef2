"""NDCG Loss (Appendix D of the paper) with its error-driven gradient.

``L_NDCG = 1 - sum_i G(i) / G_max`` with ``G(i) = 1 / log2(1 + rank(i))`` and
``G_max = sum_{r=1}^{|P|} 1 / log2(1 + r)``, the gain when every positive leads the ranking.
The error of a positive is ``(G_max/|P| - G(i)) / G_max``, its target (``G = 1``)
``(G_max/|P| - 1) / G_max``, ``Z = 1`` and ``p(j|i) = H(x_ij) / FP(i)``, so
``dL/ds_i = -(1 - G(i)) / G_max`` and ``dL/ds_j = sum_i (1 - G(i)) / G_max H(x_ij) / FP(i)``.

Appendix D prints ``G_max = sum log2(1 + i)``; that cannot be the maximum of a sum of
``1 / log2(1 + rank)``, so the reciprocal is used here (the standard ideal DCG).
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

__all__ = ["ideal_gain", "ndcg_definition", "ndcg_loss", "NDCGLoss"]


def ideal_gain(num_positives: int, like: Tensor) -> Tensor:
    """``G_max = sum_{r=1}^{P} 1 / log2(1 + r)`` () in ``like``'s dtype and device; 0 for P = 0."""
    ranks = torch.arange(1, num_positives + 1, dtype=like.dtype, device=like.device)
    return (1.0 / torch.log2(1.0 + ranks)).sum()


def _gain(stats: RankingStats) -> Tensor:
    return 1.0 / torch.log2(1.0 + stats.rank)


def ndcg_definition() -> RankingLossDefinition:
    """NDCG Loss for the framework in :mod:`alrp_lab.losses.ranking`."""

    def share(stats: RankingStats) -> tuple[Tensor, Tensor]:
        # G_max / |P| and G_max; clamps only matter for P = 0, where every sum is empty.
        g_max = ideal_gain(stats.num_positives, stats.fp).clamp(min=1e-12)
        return g_max / max(stats.num_positives, 1), g_max

    def error(stats: RankingStats) -> Tensor:
        mean_gain, g_max = share(stats)
        return (mean_gain - _gain(stats)) / g_max

    def target(stats: RankingStats) -> Tensor:
        mean_gain, g_max = share(stats)
        return ((mean_gain - 1.0) / g_max).expand_as(stats.fp)

    return RankingLossDefinition(error=error, target=target, normalizer=lambda stats: 1.0)


def ndcg_loss(logits: Tensor, labels: Tensor, delta: float = 1.0) -> Tensor:
    """NDCG Loss of flattened (anchor, class) examples, with the error-driven gradient.

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
    inputs = split_ranking_inputs(logits, labels, delta)
    result = sorted_error_driven(inputs.pos_scores, inputs.neg_scores, ndcg_definition(), delta)
    return apply_error_driven(logits, inputs, result)


class NDCGLoss(nn.Module):
    """Module form of :func:`ndcg_loss`: ``forward(logits (M,), labels (M,)) -> ()``."""

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        self.delta = check_delta(delta)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return ndcg_loss(logits, labels, self.delta)

    def extra_repr(self) -> str:
        return f"delta={self.delta}"
