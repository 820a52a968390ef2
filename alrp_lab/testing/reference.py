"""Plain loop references for the ranking losses, written from Algorithm A.2 of the paper.

One iteration per positive, each vectorised over the examples: O(P x N) time. They exist to
test the sorted path in :mod:`alrp_lab.losses.ranking` and to time it against; do not train
with them. Inputs are taken as given (no validation) and computed in the logits' dtype.
:func:`make_ranking_batch` draws the random batches both use.

Where Algorithm A.2 and SPEC section 1 differ, SPEC wins: the false-positive test is
``FP(i) > eps`` (A.2 writes ``>=``), line 29's localisation sum is ``sum_{k != i} Eloc(k)
H(x_ik)`` (A.2 prints the cumulative errors there), and ``cum(i)`` counts every positive with
``s_k >= s_i`` (A.2's cumsum over a sort breaks ties by position).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from alrp_lab.losses.ranking import FP_EPS, step

__all__ = [
    "ALRPReference",
    "RankingBatch",
    "RankingReference",
    "alrp_loss_reference",
    "make_ranking_batch",
    "ap_loss_reference",
    "ndcg_loss_reference",
]


class ALRPReference(NamedTuple):
    """``cls`` (), ``loc`` (), ``grad_logits`` (M,) = dL_aLRP/dlogits (error-driven),
    ``grad_loc`` (P,) = dL_loc/dEloc (rank detached)."""

    cls: Tensor
    loc: Tensor
    grad_logits: Tensor
    grad_loc: Tensor


class RankingReference(NamedTuple):
    """``loss`` () and ``grad_logits`` (M,), the error-driven gradient."""

    loss: Tensor
    grad_logits: Tensor


def _relevant(logits: Tensor, labels: Tensor, delta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Lines 2-10: positives' indices, and negatives' indices and scores with s_j >= min(s+) - d.

    Negatives below that threshold have H(x_ij) = 0 for every positive.
    """
    pos_idx = torch.nonzero(labels == 1).squeeze(1)
    threshold = logits[pos_idx].min() - delta
    neg_idx = torch.nonzero((labels == 0) & (logits >= threshold)).squeeze(1)
    return pos_idx, neg_idx, logits[neg_idx]


def alrp_loss_reference(
    logits: Tensor, labels: Tensor, loc_errors: Tensor, delta: float = 1.0, eps: float = FP_EPS
) -> ALRPReference:
    """aLRP Loss and its gradients by Algorithm A.2.

    Args:
        logits: (M,), labels: (M,) 1 / 0 / -1, loc_errors: (P,) in the positives' order.
        delta: ramp half-width of H; 0 for the unit step.
        eps: the smallest FP(i) that spreads error.
    """
    logits = logits.detach()
    e = loc_errors.detach().to(logits.dtype)
    grad_logits = torch.zeros_like(logits)
    num_pos = int((labels == 1).sum())
    if num_pos == 0:
        zero = logits.new_zeros(())
        return ALRPReference(zero, zero, grad_logits, torch.zeros_like(e))
    pos_idx, neg_idx, s_neg = _relevant(logits, labels, delta)
    s_pos = logits[pos_idx]
    l_cls = logits.new_zeros(num_pos)
    l_loc = logits.new_zeros(num_pos)
    g_pos = logits.new_zeros(num_pos)
    g_neg = torch.zeros_like(s_neg)
    grad_loc = torch.zeros_like(e)
    for i in range(num_pos):
        r_pos = step(s_pos - s_pos[i], delta)
        r_pos[i] = 0
        r_neg = step(s_neg - s_pos[i], delta)
        rank_pos = 1 + r_pos.sum()
        fp = r_neg.sum()
        rank = rank_pos + fp
        above = s_pos >= s_pos[i]  # includes i itself
        l_cls[i] = fp / rank
        l_loc[i] = (e * above).sum() / rank
        grad_loc += above / rank
        if fp > eps:
            g_pos[i] = -(fp + (r_pos * e).sum()) / rank
            g_neg += -g_pos[i] * r_neg / fp
    grad_logits[pos_idx] = g_pos / num_pos
    grad_logits[neg_idx] = g_neg / num_pos
    return ALRPReference(l_cls.mean(), l_loc.mean(), grad_logits, grad_loc / num_pos)


def ap_loss_reference(
    logits: Tensor, labels: Tensor, delta: float = 1.0, eps: float = FP_EPS
) -> RankingReference:
    """AP Loss and its gradient by the loop of Algorithm A.2 without the localisation terms.

    Args:
        logits: (M,), labels: (M,) 1 / 0 / -1.
        delta: ramp half-width of H; 0 for the unit step.
        eps: the smallest FP(i) that spreads error.
    """
    logits = logits.detach()
    grad_logits = torch.zeros_like(logits)
    num_pos = int((labels == 1).sum())
    if num_pos == 0:
        return RankingReference(logits.new_zeros(()), grad_logits)
    pos_idx, neg_idx, s_neg = _relevant(logits, labels, delta)
    s_pos = logits[pos_idx]
    loss = logits.new_zeros(num_pos)
    g_pos = logits.new_zeros(num_pos)
    g_neg = torch.zeros_like(s_neg)
    for i in range(num_pos):
        r_pos = step(s_pos - s_pos[i], delta)
        r_pos[i] = 0
        r_neg = step(s_neg - s_pos[i], delta)
        fp = r_neg.sum()
        rank = 1 + r_pos.sum() + fp
        loss[i] = fp / rank
        if fp > eps:
            g_pos[i] = -fp / rank
            g_neg += r_neg / rank
    grad_logits[pos_idx] = g_pos / num_pos
    grad_logits[neg_idx] = g_neg / num_pos
    return RankingReference(loss.mean(), grad_logits)


def ndcg_loss_reference(
    logits: Tensor, labels: Tensor, delta: float = 1.0, eps: float = FP_EPS
) -> RankingReference:
    """NDCG Loss (Appendix D) and its gradient, one loop over the positives per pass.

    Args:
        logits: (M,), labels: (M,) 1 / 0 / -1.
        delta: ramp half-width of H; 0 for the unit step.
        eps: the smallest FP(i) that spreads error.
    """
    logits = logits.detach()
    grad_logits = torch.zeros_like(logits)
    num_pos = int((labels == 1).sum())
    if num_pos == 0:
        return RankingReference(logits.new_zeros(()), grad_logits)
    pos_idx, neg_idx, s_neg = _relevant(logits, labels, delta)
    s_pos = logits[pos_idx]
    g_max = sum(1.0 / math.log2(1 + r) for r in range(1, num_pos + 1))
    gain = logits.new_zeros(num_pos)
    fps = logits.new_zeros(num_pos)
    for i in range(num_pos):
        r_pos = step(s_pos - s_pos[i], delta)
        r_pos[i] = 0
        fps[i] = step(s_neg - s_pos[i], delta).sum()
        gain[i] = 1 / torch.log2(2 + r_pos.sum() + fps[i])
    g_pos = logits.new_zeros(num_pos)
    g_neg = torch.zeros_like(s_neg)
    for i in range(num_pos):
        if fps[i] > eps:
            update = (1 - gain[i]) / g_max
            g_pos[i] = -update
            g_neg += update * step(s_neg - s_pos[i], delta) / fps[i]
    grad_logits[pos_idx] = g_pos
    grad_logits[neg_idx] = g_neg
    return RankingReference(1 - gain.sum() / g_max, grad_logits)


class RankingBatch(NamedTuple):
    """A random batch: ``logits`` (M,), ``labels`` (M,) long, ``loc_errors`` (P,)."""

    logits: Tensor
    labels: Tensor
    loc_errors: Tensor


def make_ranking_batch(
    num_negatives: int,
    num_positives: int,
    num_ignored: int = 0,
    *,
    seed: int = 0,
    scale: float = 2.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> RankingBatch:
    """Random flattened examples for tests and benchmarks, in a shuffled order.

    Positives score one unit higher on average, so rankings are neither perfect nor hopeless;
    Eloc is uniform on [0, 1.2) (it may exceed 1, as with ATSS).
    """
    gen = torch.Generator().manual_seed(seed)
    labels = torch.cat(
        [
            torch.ones(num_positives, dtype=torch.long),
            torch.zeros(num_negatives, dtype=torch.long),
            torch.full((num_ignored,), -1, dtype=torch.long),
        ]
    )
    labels = labels[torch.randperm(labels.numel(), generator=gen)]
    logits = torch.randn(labels.numel(), generator=gen, dtype=torch.float64) * scale
    logits = logits + (labels == 1).double()
    loc_errors = torch.rand(num_positives, generator=gen, dtype=torch.float64) * 1.2
    return RankingBatch(
        logits.to(device=device, dtype=dtype),
        labels.to(device),
        loc_errors.to(device=device, dtype=dtype),
    )
