"""aLRP Loss (Section 4 of the paper): classification and localisation ranked together.

For positive ``i`` (SPEC section 1): ``rank(i) = rank+(i) + FP(i)`` and
``cum(i) = Eloc(i) + sum_{k in P, k != i, s_k >= s_i} Eloc(k)`` (unit step), and

    L_cls = mean_i FP(i) / rank(i),        L_loc = mean_i cum(i) / rank(i).

Classification (error-driven, Eq. 13 with Eq. 5): the error of a positive is its LRP error
``(FP(i) + Eloc(i) + sum_{k != i} Eloc(k) H(x_ik)) / rank(i)`` with the smoothed ``H`` of the
authors' code, its target ``Eloc(i) / rank(i)`` (Eq. 12), ``Z = |P|`` and
``p(j|i) = H(x_ij) / FP(i)``. So the gradient on the logits carries the localisation errors too,
while ``L_cls`` reports only the ranking part; it flows only where ``FP(i) > 1e-5``.

Localisation: ``L_loc`` is differentiable in ``Eloc`` with ``rank`` detached; it reaches the
boxes through autograd of whatever produced ``Eloc``. Ties in score are all counted as "above"
in ``cum`` (``s_k >= s_i``), so the value does not depend on how a sort breaks ties.
"""

from __future__ import annotations

from typing import NamedTuple

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

__all__ = ["ALRPLossOutput", "alrp_definition", "alrp_loss", "localisation_loss", "ALRPLoss"]


class ALRPLossOutput(NamedTuple):
    """``cls`` () with the error-driven gradient on the logits; ``loc`` () with the localisation
    weights on ``loc_errors``. ``cls + loc`` is the aLRP Loss."""

    cls: Tensor
    loc: Tensor


def alrp_definition(loc_errors: Tensor, zero_target: bool = False) -> RankingLossDefinition:
    """aLRP Loss for the framework in :mod:`alrp_lab.losses.ranking`.

    Args:
        loc_errors: (P,) Eloc of the positives (detached), in the order the positives are given.
        zero_target: use the target ``l*(i) = 0`` instead of ``Eloc(i) / rank(i)`` (Eq. 12):
            the ablation of Appendix G.3 / Figure A.7, which makes training diverge.

    The framework's loss value, ``mean_i l(i)``, uses the smoothed ``H`` in the localisation
    sum; :func:`alrp_loss` reports ``L_cls`` and the unit-step ``L_loc`` instead.
    """
    e = loc_errors.detach()

    def error(stats: RankingStats) -> Tensor:
        return (stats.fp + e.to(stats.fp.dtype) + stats.weighted_pos) / stats.rank

    def target(stats: RankingStats) -> Tensor:
        if zero_target:
            return torch.zeros_like(stats.rank)
        return e.to(stats.fp.dtype) / stats.rank

    return RankingLossDefinition(
        error=error,
        target=target,
        normalizer=lambda stats: max(stats.num_positives, 1),
        positive_weights=e,
        # Appendix G.3: the wrong target keeps updating positives once no negative outranks
        # them (l(i) - 0 = Eloc(i) / rank(i) > 0 there), which breaks Theorem 2's balance.
        update_ranked=zero_target,
    )


def localisation_loss(pos_scores: Tensor, loc_errors: Tensor, rank: Tensor) -> Tensor:
    """``L_loc = mean_i cum(i) / rank(i)``, differentiable in ``loc_errors`` only.

    Args:
        pos_scores: (P,) scores of the positives.
        loc_errors: (P,) their Eloc, same order; gradients flow into it.
        rank: (P,) their rank (detached here).

    Returns:
        () in ``loc_errors``' dtype promoted to at least float32; 0 (still on the graph) when
        P = 0.
    """
    dtype = torch.promote_types(loc_errors.dtype, torch.float32)
    ascending, order = torch.sort(pos_scores)
    # Positive i's cum is the suffix sum from the first positive tied with it. NaN scores
    # search past the end: clamp, so a diverged model gets a NaN loss, not an IndexError.
    first = torch.searchsorted(ascending, ascending, side="left").clamp(
        max=max(pos_scores.numel() - 1, 0)
    )
    e = loc_errors.to(dtype)[order]
    cum = e.flip(0).cumsum(0).flip(0)[first]
    return (cum / rank.detach()[order].to(dtype)).sum() / max(pos_scores.numel(), 1)


def _check_loc_errors(loc_errors: Tensor, num_positives: int, logits: Tensor) -> None:
    if not isinstance(loc_errors, Tensor):
        raise ValueError(f"loc_errors must be a torch tensor, got {type(loc_errors).__name__}")
    if not loc_errors.is_floating_point():
        raise ValueError(f"loc_errors must be a floating-point tensor, got {loc_errors.dtype}")
    if loc_errors.dim() != 1 or loc_errors.numel() != num_positives:
        raise ValueError(
            f"loc_errors must have shape (P,) = ({num_positives},), one Eloc per positive label "
            f"in the order positives appear in logits, got {tuple(loc_errors.shape)}"
        )
    if loc_errors.device != logits.device:
        raise ValueError(
            f"loc_errors are on {loc_errors.device} but logits on {logits.device}; "
            "move both to one device"
        )


def alrp_loss(
    logits: Tensor,
    labels: Tensor,
    loc_errors: Tensor,
    delta: float = 1.0,
    zero_target: bool = False,
) -> ALRPLossOutput:
    """aLRP Loss of flattened (anchor, class) examples.

    Args:
        logits: (M,) float scores (float16/bfloat16 are computed in float32; the gradient comes
            back in the logits' dtype).
        labels: (M,) int, 1 positive, 0 negative, -1 ignored.
        loc_errors: (P,) Eloc of the positives in the order they appear in ``logits``.
        delta: ramp half-width of the smoothed step; 0 selects the unit step ``1[x > 0]``.
        zero_target: the Appendix G.3 ablation (target 0 instead of Eq. 12's); diverges.

    Returns:
        :class:`ALRPLossOutput`. ``cls.backward()`` puts the error-driven aLRP gradient on
        ``logits`` and nothing on ``loc_errors``; ``loc.backward()`` puts the localisation
        weights on ``loc_errors`` and nothing on ``logits``. No positives gives zeros.

    Raises:
        ValueError: for inputs that break this contract, naming the fix.
    """
    delta = check_delta(delta)
    inputs = split_ranking_inputs(logits, labels, delta)
    num_pos = inputs.pos_index.numel()
    _check_loc_errors(loc_errors, num_pos, logits)
    result = sorted_error_driven(
        inputs.pos_scores, inputs.neg_scores, alrp_definition(loc_errors, zero_target), delta
    )
    stats = result.stats
    cls_value = (stats.fp / stats.rank).sum() / max(num_pos, 1)
    cls = apply_error_driven(logits, inputs, result, cls_value)
    loc = localisation_loss(inputs.pos_scores, loc_errors, stats.rank)
    return ALRPLossOutput(cls, loc)


class ALRPLoss(nn.Module):
    """Module form of :func:`alrp_loss`:
    ``forward(logits (M,), labels (M,), loc_errors (P,)) -> ALRPLossOutput``."""

    def __init__(self, delta: float = 1.0, zero_target: bool = False) -> None:
        super().__init__()
        self.delta = check_delta(delta)
        self.zero_target = zero_target

    def forward(self, logits: Tensor, labels: Tensor, loc_errors: Tensor) -> ALRPLossOutput:
        return alrp_loss(logits, labels, loc_errors, self.delta, self.zero_target)

    def extra_repr(self) -> str:
        return f"delta={self.delta}, zero_target={self.zero_target}"
