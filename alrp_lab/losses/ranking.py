"""The error-driven framework for ranking-based losses (Section 3, Algorithm 1 of the paper).

A ranking loss is ``L = (1/Z) sum_{i in P} l(i)`` over the positives. Its error on positive ``i``
is spread over the negatives by a probability mass function ``p(j|i)`` into primary terms
``L_ij = l(i) p(j|i)``; with the target ``l*(i)`` (the error of ``i`` once ranked properly) the
error-driven update is ``dx_ij = (l*(i) - l(i)) p(j|i)`` and Eq. 5 gives the gradients:

    dL/ds_i = (1/Z) sum_j dx_ij        (positive i)
    dL/ds_j = -(1/Z) sum_i dx_ij       (negative j)

A :class:`RankingLossDefinition` names ``l``, ``l*``, ``Z`` and optionally ``p(j|i)``, and two
paths turn it into a loss value and gradients:

- :func:`sorted_error_driven`: the uniform ``p(j|i) = H(x_ij) / FP(i)`` of AP, aLRP and NDCG
  Loss. ``H`` is piecewise linear, so every sum over pairs becomes a prefix sum over the sorted
  positives: the positives are sorted (P log P), every negative is searched into them
  (N log P), and nothing of size P x N is ever formed.
- :func:`pairwise_error_driven`: any ``p(j|i)``, computed pair by pair in chunks of positives
  so that memory stays at about ``chunk_elements`` pairs. Slow, general, and the reference the
  sorted path is tested against.

The step function: ``H(x) = clamp(x / (2 delta) + 1/2, 0, 1)`` with ``x_ij = s_j - s_i``;
``delta = 0`` selects the unit step ``H(x) = 1[x > 0]`` (the hard step of the paper's toy
example, Figure 1). Following the authors' code, a positive gets gradient (and spreads error
over negatives) only where ``FP(i) > eps``, ``eps = 1e-5``; the wrong-target ablation of
Appendix G.3 (``RankingLossDefinition.update_ranked``) updates the other positives too.

The negatives, millions of them, are never converted: each is searched once, in its own dtype,
into the ``2P`` window edges of the positives (:func:`bin_sources`), which cut the line into
bins where every ``H(v - t_i)`` is linear in ``v``. Per bin the path keeps the count and the sum
of the negatives' offsets from the bin's start (accumulated in float64), and every sum over
negatives is then a sum over bins; each negative's gradient is its bin's value plus slope times
its offset. Bin and positive sums are taken in float64 on scores centred at the median positive,
so that sums over ten million scores keep their precision whatever the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from alrp_lab.ops.search import searchsorted_right

__all__ = [
    "FP_EPS",
    "BinnedSources",
    "ErrorDrivenResult",
    "RankingInputs",
    "RankingLossDefinition",
    "RankingStats",
    "StepWindows",
    "apply_error_driven",
    "attach_error_driven_gradient",
    "bin_sources",
    "binned_step_sums",
    "binned_step_transpose_sums",
    "check_delta",
    "compute_dtype",
    "error_driven",
    "pairwise_error_driven",
    "scatter_gradient",
    "sorted_error_driven",
    "split_ranking_inputs",
    "step",
    "step_sums",
    "step_transpose_sums",
    "step_windows",
]

# A positive whose false-positive count is at most this spreads no error (Algorithm A.2, l. 28).
FP_EPS = 1e-5

# Pairs held at once by the pairwise path: 2**22 float64 values = 32 MiB per (C, N) block.
_CHUNK_ELEMENTS = 1 << 22

# Sums over pairs are accumulated in this dtype (see the module docstring).
_ACC = torch.float64


# ----------------------------------------------------------------------------------------------
# The step function and its sorted primitives
# ----------------------------------------------------------------------------------------------


def check_delta(delta: float) -> float:
    """Return ``delta`` as a float, or raise a ValueError when it is not a finite number >= 0."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        raise ValueError(f"delta must be a number >= 0 (0 selects the unit step), got {delta!r}")
    delta = float(delta)
    if not math.isfinite(delta) or delta < 0:
        raise ValueError(
            f"delta must be a finite number >= 0 (0 selects the unit step), got {delta}"
        )
    return delta


def step(x: Tensor, delta: float) -> Tensor:
    """The smoothed step ``H(x)`` elementwise, any shape; ``delta = 0`` is ``1[x > 0]``."""
    if delta == 0:
        return (x > 0).to(x.dtype)
    return (x / (2 * delta) + 0.5).clamp(0, 1)


class StepWindows(NamedTuple):
    """Where each source score falls among ascending targets ``t`` (T,), for ``H(v - t)``.

    ``lo`` (S,) long: the number of targets with ``t <= v - delta`` (there ``H = 1``).
    ``hi`` (S,) long: the number of targets with ``t <= v + delta``; targets ``lo..hi-1`` lie on
    the ramp of ``H``, targets from ``hi`` on have ``H = 0``. For the unit step ``hi == lo``.
    ``centre`` () float64: the score all ramp sums are taken relative to.
    ``sources`` (S,) float64: the source scores minus ``centre``.
    ``targets`` (T,) float64: the ascending target scores minus ``centre``.
    """

    lo: Tensor
    hi: Tensor
    centre: Tensor
    sources: Tensor
    targets: Tensor


def step_windows(sources: Tensor, targets_sorted: Tensor, delta: float) -> StepWindows:
    """Search every source score into the ascending targets: O(S log T + T log T), no sync.

    Args:
        sources: (S,) scores ``v_j``.
        targets_sorted: (T,) scores ``t_i`` in ascending order.
        delta: half-width of the ramp of ``H``; 0 for the unit step.
    """
    targets = targets_sorted.to(_ACC)
    # The median target: it keeps the ramp sums small where the scores are large (1e4 logits).
    if targets.numel():
        centre = targets[targets.numel() // 2]
    else:
        centre = targets.new_zeros(())
    targets = targets - centre
    src = sources.to(_ACC) - centre
    if delta == 0:
        lo = torch.searchsorted(targets, src, side="left")
        return StepWindows(lo, lo, centre, src, targets)
    # One search per source instead of two (the search is most of the cost): merge every
    # target's upper edge t + delta (a source above it has H = 1) with its lower edge t - delta
    # (above it, H > 0); the numbers of each kind of edge below v are lo and hi. Whether a
    # source exactly on an edge counts as inside is immaterial: H is continuous there.
    num_targets = targets.numel()
    edges, kind = torch.sort(torch.cat([targets + delta, targets - delta]))
    upper = (kind < num_targets).long()
    position = torch.searchsorted(edges, src, side="right")
    # index_select rather than [] for the large gathers: several times faster on CPU.
    lo = _prefix_sum(upper).index_select(0, position)
    hi = _prefix_sum(1 - upper).index_select(0, position)
    return StepWindows(lo, hi, centre, src, targets)


def _suffix_sum(x: Tensor) -> Tensor:
    """(K,) -> (K,) with ``out[k] = sum(x[k:])``."""
    return x.flip(0).cumsum(0).flip(0)


def _prefix_sum(x: Tensor) -> Tensor:
    """(K,) -> (K + 1,) with ``out[k] = sum(x[:k])``."""
    return torch.cat([x.new_zeros(1), x.cumsum(0)])


def step_sums(windows: StepWindows, delta: float, weights: Tensor | None = None) -> Tensor:
    """``out[i] = sum_j w_j H(v_j - t_i)`` for every target: O(S + T) given the windows.

    Every source adds ``w_j`` to the targets below its window and ``w_j`` times the ramp to the
    targets inside it; both are scattered as differences at ``lo`` / ``hi`` and summed up once.

    Args:
        windows: from :func:`step_windows` for sources (S,) and targets (T,).
        delta: the same ``delta``.
        weights: (S,) source weights ``w_j``; None for all ones.

    Returns:
        (T,) float64, in the order of the sorted targets.
    """
    num_targets = windows.targets.numel()
    w = windows.sources.new_ones(()) if weights is None else weights.to(_ACC)
    w = w.expand_as(windows.sources)
    # Full steps: source j counts for every target i < lo_j.
    full = windows.targets.new_zeros(num_targets + 1).index_add_(0, windows.lo, w)
    out = _suffix_sum(full)[1:]
    if delta == 0:
        return out
    # Ramp: source j adds w_j ((v_j - t_i) / (2 delta) + 1/2) to targets lo_j <= i < hi_j. An
    # empty window gets weight exactly 0, so sources far from all targets leave no rounding.
    w_ramp = w * (windows.hi > windows.lo)
    wv = w_ramp * windows.sources
    count = windows.targets.new_zeros(num_targets + 1)
    count.index_add_(0, windows.lo, w_ramp).index_add_(0, windows.hi, -w_ramp)
    total = windows.targets.new_zeros(num_targets + 1)
    total.index_add_(0, windows.lo, wv).index_add_(0, windows.hi, -wv)
    count = count.cumsum(0)[:-1]
    total = total.cumsum(0)[:-1]
    return out + (total - count * windows.targets) / (2 * delta) + 0.5 * count


def step_transpose_sums(windows: StepWindows, delta: float, target_weights: Tensor) -> Tensor:
    """``out[j] = sum_i u_i H(v_j - t_i)`` for every source: the transpose of :func:`step_sums`.

    Args:
        windows: from :func:`step_windows` for sources (S,) and targets (T,).
        delta: the same ``delta``.
        target_weights: (T,) weights ``u_i`` in the order of the sorted targets.

    Returns:
        (S,) float64, in the order of the sources.
    """
    u = target_weights.to(_ACC)
    cum_u = _prefix_sum(u)
    out = cum_u.index_select(0, windows.lo)
    if delta == 0:
        return out
    cum_ut = _prefix_sum(u * windows.targets)
    ramp_u = cum_u.index_select(0, windows.hi) - out
    ramp_ut = cum_ut.index_select(0, windows.hi) - cum_ut.index_select(0, windows.lo)
    return out + (windows.sources * ramp_u - ramp_ut) / (2 * delta) + 0.5 * ramp_u


class BinnedSources(NamedTuple):
    """Sources grouped by the bins the targets' window edges cut the line into.

    Within a bin every source has the same window (``lo``, ``hi``), so ``H(v - t_i)`` is linear
    in ``v`` there and sums over sources need only each bin's count and offset sum.

    ``windows``: one entry per bin (B,), with ``sources`` each bin's mean score (its start
    where it holds no source or lies on no ramp), so that :func:`step_sums` with the bins'
    counts as weights sums over the sources exactly.
    ``starts`` (B,) float64: where each bin starts, minus the centre.
    ``counts`` (B,) float64: the sources in each bin.
    ``bins`` (S,) int32: the bin of each source.
    ``dtype``: the sources' dtype, that of the per-source sums.
    ``offsets`` (S,) in the sources' dtype: each source minus its bin's start, clamped to
    ``[0, 2 delta]`` (exact on a ramp, where bins are at most ``2 delta`` wide; elsewhere no
    sum reads it). None for the unit step, which has no ramp.
    """

    windows: StepWindows
    starts: Tensor
    counts: Tensor
    bins: Tensor
    dtype: torch.dtype
    offsets: Tensor | None


def bin_totals(bins: Tensor, num_bins: int, weights: Tensor | None = None) -> Tensor:
    """(num_bins,) float64: how many of ``bins`` (S,) int fall in each bin, or the sum of their
    ``weights`` (S,).

    ``torch.bincount`` on CPU; elsewhere an ``index_add_`` into a tensor of the known size,
    because CUDA's bincount reads the indices' minimum and maximum back to the host.
    """
    if not reads_without_sync(bins.device):
        totals = torch.bincount(
            bins, weights=None if weights is None else weights.to(_ACC), minlength=num_bins
        )
        return totals.to(_ACC)
    values = torch.ones_like(bins, dtype=_ACC) if weights is None else weights.to(_ACC)
    return torch.zeros(num_bins, dtype=_ACC, device=bins.device).index_add_(0, bins, values)


def bin_sources(sources: Tensor, targets_sorted: Tensor, delta: float) -> BinnedSources:
    """Search every source into the targets' window edges, in the sources' dtype: O(S + T log T).

    Args:
        sources: (S,) scores ``v_j``, any float dtype (not converted).
        targets_sorted: (T,) scores ``t_i`` in ascending order, float64.
        delta: half-width of the ramp of ``H``; 0 for the unit step.
    """
    targets = targets_sorted.to(_ACC)
    num_targets = targets.numel()
    centre = targets[num_targets // 2] if num_targets else targets.new_zeros(())
    targets = targets - centre
    if delta == 0:
        # Bin b holds the sources above exactly b targets: lo = hi = b, no ramp.
        edges = targets
        lo = hi = torch.arange(num_targets + 1, device=targets.device)
    else:
        # Upper edges t + delta (above them H = 1) and lower edges t - delta (above them H > 0):
        # a bin's lo and hi count the edges of each kind below it. A source exactly on an edge
        # may fall on either side: H is continuous there.
        edges, kind = torch.sort(torch.cat([targets + delta, targets - delta]))
        upper = (kind < num_targets).long()
        lo, hi = _prefix_sum(upper), _prefix_sum(1 - upper)
    # The edges in the sources' dtype (rounding keeps them ascending); unit step: a source on
    # a target is not above it, so it goes below (side="left", which needs the binary search).
    edges_native = (edges + centre).to(sources.dtype)
    if delta == 0:
        bins = torch.searchsorted(edges_native, sources, side="left", out_int32=True)
    else:
        bins = searchsorted_right(edges_native, sources)
    num_bins = edges.numel() + 1
    counts = bin_totals(bins, num_bins)
    # Bin b >= 1 starts at edge b - 1; bin 0 (below every edge, never on a ramp) at edge 0.
    # Without targets there is one bin, holding everything; it starts anywhere (at 0).
    first_start = edges_native[:1] if num_targets else sources.new_zeros(1)
    starts_native = torch.cat([first_start, edges_native])[:num_bins]
    starts = starts_native.to(_ACC) - centre
    if delta == 0 or num_targets == 0:
        windows = StepWindows(lo, hi, centre, starts, targets)
        return BinnedSources(windows, starts, counts, bins, sources.dtype, None)
    offsets = sources - starts_native.index_select(0, bins)
    offsets.clamp_(0, 2 * delta)
    offset_sums = bin_totals(bins, num_bins, offsets)
    on_ramp = (hi > lo) & (counts > 0)
    means = torch.where(on_ramp, starts + offset_sums / counts.clamp(min=1), starts)
    windows = StepWindows(lo, hi, centre, means, targets)
    return BinnedSources(windows, starts, counts, bins, sources.dtype, offsets)


def binned_step_sums(binned: BinnedSources, delta: float) -> Tensor:
    """``out[i] = sum_j H(v_j - t_i)`` for every target, from the bins: O(B + T).

    Returns:
        (T,) float64, in the order of the sorted targets.
    """
    return step_sums(binned.windows, delta, binned.counts)


def binned_step_transpose_sums(
    binned: BinnedSources, delta: float, target_weights: Tensor
) -> Tensor:
    """``out[j] = sum_i u_i H(v_j - t_i)`` for every source: each bin's value at its start plus
    its slope times the source's offset. O(S + T).

    Args:
        binned: from :func:`bin_sources`.
        delta: the same ``delta``.
        target_weights: (T,) weights ``u_i`` in the order of the sorted targets.

    Returns:
        (S,) in the sources' dtype, in the order of the sources.
    """
    windows = binned.windows._replace(sources=binned.starts)
    at_start = step_transpose_sums(windows, delta, target_weights)
    out = at_start.to(binned.dtype).index_select(0, binned.bins)
    if binned.offsets is None:  # no ramp: H is constant within a bin
        return out
    cum_u = _prefix_sum(target_weights.to(_ACC))
    slope = (cum_u.index_select(0, windows.hi) - cum_u.index_select(0, windows.lo)) / (2 * delta)
    return out.addcmul_(slope.to(binned.dtype).index_select(0, binned.bins), binned.offsets)


# ----------------------------------------------------------------------------------------------
# Loss definitions and the two paths
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankingStats:
    """Per-positive ranking statistics, all (P,), in the order the positives were given.

    ``scores``: the positives' scores ``s_i``.
    ``fp``: ``FP(i) = sum_{j in N} H(x_ij)``.
    ``rank_pos``: ``rank+(i) = 1 + sum_{k in P, k != i} H(x_ik)``.
    ``weighted_pos``: ``sum_{k in P, k != i} u_k H(x_ik)`` for the definition's
    ``positive_weights`` ``u`` (P,); None when the definition has none.
    """

    scores: Tensor
    fp: Tensor
    rank_pos: Tensor
    weighted_pos: Tensor | None = None

    @property
    def rank(self) -> Tensor:
        """``rank(i) = rank+(i) + FP(i)`` (P,)."""
        return self.rank_pos + self.fp

    @property
    def num_positives(self) -> int:
        """P."""
        return self.fp.numel()


# p(j|i) for a chunk of positives: (x (C, N), h = H(x) (C, N), stats, rows (C,) long) -> (C, N).
PMF = Callable[[Tensor, Tensor, RankingStats, Tensor], Tensor]


@dataclass(frozen=True)
class RankingLossDefinition:
    """A ranking loss as Algorithm 1 takes it.

    Attributes:
        error: stats -> ``l(i)`` (P,), the primary error of every positive.
        target: stats -> ``l*(i)`` (P,), its error once ranked properly.
        normalizer: stats -> ``Z`` (a float or a scalar tensor); the loss is ``sum l / Z``.
        pmf: ``p(j|i)`` for a chunk of positives (see :data:`PMF`); None for the uniform
            ``H(x_ij) / FP(i)``, which is the only one the sorted path supports.
        positive_weights: (P,) weights ``u`` for ``RankingStats.weighted_pos``; None if unused.
        update_ranked: also update a positive that no negative outranks (``FP(i) <= eps``) by
            ``-(l(i) - l*(i)) / Z``. Algorithm 1 skips such positives, which keeps Theorem 2
            (the totals over positives and negatives equal) for any target; their update
            has no negative to go to. True only for the wrong-target ablation of Appendix
            G.3, whose divergence comes from exactly these updates.
    """

    error: Callable[[RankingStats], Tensor]
    target: Callable[[RankingStats], Tensor]
    normalizer: Callable[[RankingStats], Tensor | float]
    pmf: PMF | None = None
    positive_weights: Tensor | None = None
    update_ranked: bool = False


class ErrorDrivenResult(NamedTuple):
    """Output of the framework: ``loss`` () = sum l / Z, ``grad_pos`` (P,), ``grad_neg`` (N,)
    (both dL/ds, in the order given), and the ``stats`` the errors were computed from."""

    loss: Tensor
    grad_pos: Tensor
    grad_neg: Tensor
    stats: RankingStats


def _update_coefficients(
    definition: RankingLossDefinition, stats: RankingStats
) -> tuple[Tensor, Tensor]:
    """``(spread, ranked)``, both (P,): ``spread = (l(i) - l*(i)) / Z``, zero where
    ``FP(i) <= eps``, is what positive ``i`` passes on to the negatives; ``ranked`` is the
    same difference where ``FP(i) <= eps`` under ``update_ranked`` and zero otherwise, an
    update with no negative to go to. ``-dL/ds_i = spread_i + ranked_i``."""
    diff = definition.error(stats) - definition.target(stats)
    diff = diff / definition.normalizer(stats)
    outranked = stats.fp > FP_EPS
    zero = torch.zeros_like(diff)
    spread = torch.where(outranked, diff, zero)
    ranked = torch.where(outranked, zero, diff) if definition.update_ranked else zero
    return spread, ranked


def _loss_value(definition: RankingLossDefinition, stats: RankingStats) -> Tensor:
    return definition.error(stats).sum() / definition.normalizer(stats)


def sorted_error_driven(
    pos_scores: Tensor, neg_scores: Tensor, definition: RankingLossDefinition, delta: float = 1.0
) -> ErrorDrivenResult:
    """The framework for the uniform ``p(j|i) = H(x_ij) / FP(i)`` over sorted scores.

    O(N + P log P) time, O(N + P) memory. The negatives stay in their dtype (one search,
    a few passes, sums over them in float64); the positives are handled in float64. One host
    read on CPU (the search's grid), none elsewhere (no bincount there: see
    :func:`bin_totals`).

    Args:
        pos_scores: (P,) scores of the positives.
        neg_scores: (N,) scores of the negatives.
        definition: the loss; its ``pmf`` must be None (uniform).
        delta: ramp half-width of ``H``; 0 for the unit step.

    Returns:
        :class:`ErrorDrivenResult`: ``grad_neg`` in ``neg_scores``' dtype, the rest float64.
    """
    if definition.pmf is not None:
        raise ValueError(
            "the sorted path supports only the uniform p(j|i) = H(x_ij)/FP(i); "
            "use pairwise_error_driven for a custom pmf"
        )
    delta = check_delta(delta)
    pos = pos_scores.to(_ACC)
    sorted_pos, order = torch.sort(pos)
    neg_bins = bin_sources(neg_scores, sorted_pos, delta)
    pos_windows = step_windows(sorted_pos, sorted_pos, delta)
    # Each positive finds itself at x = 0; take out its own H(0) (1/2 on the ramp, 0 for 1[x>0]).
    self_step = 0.0 if delta == 0 else 0.5
    fp = binned_step_sums(neg_bins, delta)
    rank_pos = 1.0 + step_sums(pos_windows, delta) - self_step
    weighted = None
    if definition.positive_weights is not None:
        u = definition.positive_weights.to(_ACC)[order]
        weighted = step_sums(pos_windows, delta, u) - self_step * u

    # Back to the caller's order for the definition, which sees positives as it gave them.
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    stats = RankingStats(
        scores=pos,
        fp=fp[inverse],
        rank_pos=rank_pos[inverse],
        weighted_pos=None if weighted is None else weighted[inverse],
    )
    coef, ranked = _update_coefficients(definition, stats)
    # dL/ds_j = sum_i coef_i H(x_ij) / FP(i); coef is 0 wherever FP(i) <= eps.
    per_fp = coef / stats.fp.clamp(min=FP_EPS)
    grad_neg = binned_step_transpose_sums(neg_bins, delta, per_fp[order])
    return ErrorDrivenResult(_loss_value(definition, stats), -(coef + ranked), grad_neg, stats)


def _chunk_rows(row_length: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(1, row_length))


def pairwise_error_driven(
    pos_scores: Tensor,
    neg_scores: Tensor,
    definition: RankingLossDefinition,
    delta: float = 1.0,
    chunk_elements: int = _CHUNK_ELEMENTS,
) -> ErrorDrivenResult:
    """The framework pair by pair, for any ``p(j|i)``: O(P x (P + N)) time.

    Positives are processed in chunks of C rows so that at most about ``chunk_elements`` pairs
    (C x max(N, P)) are held at once. Computed in the dtype of the scores.

    Args:
        pos_scores: (P,) scores of the positives.
        neg_scores: (N,) scores of the negatives.
        definition: the loss.
        delta: ramp half-width of ``H``; 0 for the unit step.
        chunk_elements: memory bound, in pairs.

    Returns:
        :class:`ErrorDrivenResult`.
    """
    delta = check_delta(delta)
    if chunk_elements < 1:
        raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")
    pos, neg = pos_scores, neg_scores.to(pos_scores.dtype)
    num_pos = pos.numel()
    rows = _chunk_rows(max(neg.numel(), num_pos), chunk_elements)
    u = definition.positive_weights
    fp = pos.new_zeros(num_pos)
    rank_pos = pos.new_zeros(num_pos)
    weighted = None if u is None else pos.new_zeros(num_pos)
    for start in range(0, num_pos, rows):
        idx = torch.arange(start, min(start + rows, num_pos), device=pos.device)
        h_pos = step(pos[None, :] - pos[idx, None], delta)  # (C, P)
        h_pos[torch.arange(idx.numel(), device=pos.device), idx] = 0  # k != i
        fp[idx] = step(neg[None, :] - pos[idx, None], delta).sum(1)
        rank_pos[idx] = 1 + h_pos.sum(1)
        if weighted is not None:
            weighted[idx] = h_pos @ u.to(pos.dtype)
    stats = RankingStats(scores=pos, fp=fp, rank_pos=rank_pos, weighted_pos=weighted)

    coef, ranked = _update_coefficients(definition, stats)
    grad_pos = -ranked
    grad_neg = neg.new_zeros(neg.numel())
    for start in range(0, num_pos, rows):
        idx = torch.arange(start, min(start + rows, num_pos), device=pos.device)
        x = neg[None, :] - pos[idx, None]  # (C, N)
        h = step(x, delta)
        if definition.pmf is None:
            p = h / stats.fp[idx, None].clamp(min=FP_EPS)
        else:
            p = definition.pmf(x, h, stats, idx)
        # Eq. 5 with -dx_ij / Z = coef_i p(j|i): dL/ds_i = (1/Z) sum_j dx_ij for a positive,
        # dL/ds_j = -(1/Z) sum_i dx_ij for a negative.
        update = coef[idx, None] * p
        grad_pos[idx] -= update.sum(1)
        grad_neg += update.sum(0)
    return ErrorDrivenResult(_loss_value(definition, stats), grad_pos, grad_neg, stats)


def error_driven(
    pos_scores: Tensor,
    neg_scores: Tensor,
    definition: RankingLossDefinition,
    delta: float = 1.0,
) -> ErrorDrivenResult:
    """Loss and error-driven gradients: the sorted path for the uniform ``p(j|i)``, else pairwise.

    Args:
        pos_scores: (P,) scores of the positives.
        neg_scores: (N,) scores of the negatives.
        definition: the loss (see :class:`RankingLossDefinition`).
        delta: ramp half-width of ``H``; 0 for the unit step.
    """
    if definition.pmf is None:
        return sorted_error_driven(pos_scores, neg_scores, definition, delta)
    return pairwise_error_driven(pos_scores, neg_scores, definition, delta)


# ----------------------------------------------------------------------------------------------
# Flattened (anchor, class) inputs and the autograd hook
# ----------------------------------------------------------------------------------------------


class RankingInputs(NamedTuple):
    """Flattened examples split by label.

    ``pos_index`` (P,) long and ``neg_index`` (N,) long: positions in ``logits`` (ascending, so
    positives keep their order of appearance); ``pos_scores`` (P,) and ``neg_scores`` (N,):
    the detached logits there, in the compute dtype (float64 for float64 logits, else float32).
    """

    pos_index: Tensor
    neg_index: Tensor
    pos_scores: Tensor
    neg_scores: Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32, float16 and bfloat16 are computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def reads_without_sync(device: torch.device) -> bool:
    """Whether the split avoids host syncs on ``device``: yes on GPUs, where a sync stalls
    the queue; no on CPU, where nothing waits and ``torch.nonzero`` with a small gather is
    faster (split of 2e6 examples: 18 against 30 ms)."""
    return device.type != "cpu"


def split_ranking_inputs(
    logits: Tensor, labels: Tensor, delta: float | None = None
) -> RankingInputs:
    """Validate ``logits`` (M,) and ``labels`` (M,) and split them into positives and negatives.

    With ``delta`` (the ramp half-width of ``H``), negatives scored below the lowest positive
    minus ``delta`` are left out (the authors' shortcut): ``H(x_ij) = 0`` for every positive
    ``i``, so they add nothing to any sum and their gradient is zero. Exact, and after the
    first iterations most negatives are there. Without positives every negative is kept.

    Raises:
        ValueError: naming the fix, for a wrong type, shape, dtype, device or label value. The
            label-value check needs one host read. On a GPU that read (label bounds and
            both counts together) is the only one; on CPU, where nothing waits, the split
            reads the counts from ``torch.nonzero`` instead.
    """
    if not isinstance(logits, Tensor) or not isinstance(labels, Tensor):
        raise ValueError(
            f"logits and labels must be torch tensors, got {type(logits).__name__} and "
            f"{type(labels).__name__}"
        )
    if logits.dim() != 1 or labels.shape != logits.shape:
        raise ValueError(
            f"logits and labels must both be 1-D of the same length (M,), got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}; flatten the (anchor, class) "
            "pairs of both with .reshape(-1)"
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor with 1 (positive), 0 (negative), -1 (ignored), "
            f"got {labels.dtype}; convert them with .long()"
        )
    if labels.device != logits.device:
        raise ValueError(
            f"logits are on {logits.device} but labels on {labels.device}; move both to one device"
        )
    scores = logits.detach().to(compute_dtype(logits.dtype))
    if reads_without_sync(logits.device):
        return _split_with_one_read(scores, labels, delta)
    # Both bounds in one pass and one read.
    bounds = torch.stack(torch.aminmax(labels)).tolist() if labels.numel() else [0, 0]
    _check_label_values(*bounds, labels)
    pos_index = torch.nonzero(labels == 1).squeeze(1)
    pos_scores = scores.index_select(0, pos_index)
    negative = labels == 0
    if delta is not None and pos_index.numel():
        # >= rather than >: a negative on the edge has H = 0 either way; keep it to be safe.
        negative &= scores >= pos_scores.min() - delta
    neg_index = torch.nonzero(negative).squeeze(1)
    return RankingInputs(pos_index, neg_index, pos_scores, scores.index_select(0, neg_index))


def _check_label_values(low: int, high: int, labels: Tensor) -> None:
    if low < -1 or high > 1:
        bad = sorted(set(labels.unique().tolist()) - {-1, 0, 1})
        raise ValueError(
            f"labels may only hold 1 (positive), 0 (negative) or -1 (ignored); found {bad}"
        )


def _split_with_one_read(scores: Tensor, labels: Tensor, delta: float | None) -> RankingInputs:
    """:func:`split_ranking_inputs`' split with one host read: the label bounds and both
    counts together, then ``torch.nonzero_static`` of the known sizes."""
    positive = labels == 1
    negative = labels == 0
    if delta is not None and scores.numel():
        # The lowest positive's score, left on the device; without positives every negative
        # is kept.
        lowest = scores.masked_fill(~positive, float("inf")).amin()
        negative &= (scores >= lowest - delta) | ~positive.any()
    sizes = [0, 0, 0, 0]
    if labels.numel():
        low, high = torch.aminmax(labels)
        sizes = torch.stack([low, high, positive.sum(), negative.sum()]).tolist()
    _check_label_values(sizes[0], sizes[1], labels)
    pos_index = torch.nonzero_static(positive, size=sizes[2]).squeeze(1)
    neg_index = torch.nonzero_static(negative, size=sizes[3]).squeeze(1)
    return RankingInputs(
        pos_index,
        neg_index,
        scores.index_select(0, pos_index),
        scores.index_select(0, neg_index),
    )


def scatter_gradient(
    inputs: RankingInputs, grad_pos: Tensor, grad_neg: Tensor, like: Tensor
) -> Tensor:
    """The (M,) gradient in ``like``'s dtype: positives' and negatives' entries, 0 if ignored."""
    grad = torch.zeros_like(like)
    grad.index_copy_(0, inputs.pos_index, grad_pos.to(like.dtype))
    grad.index_copy_(0, inputs.neg_index, grad_neg.to(like.dtype))
    return grad


class _ErrorDrivenFunction(torch.autograd.Function):
    """Forward: the precomputed loss value; backward: the precomputed gradient x grad_output."""

    @staticmethod
    def forward(ctx, logits: Tensor, value: Tensor, grad: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_output.to(grad.dtype), None, None


def attach_error_driven_gradient(logits: Tensor, value: Tensor, grad: Tensor) -> Tensor:
    """A scalar equal to ``value`` whose backward puts ``grad * grad_output`` on ``logits``.

    Args:
        logits: (M,) the tensor the gradient belongs to.
        value: () the loss value (no graph).
        grad: (M,) the error-driven dL/dlogits, in ``logits``' dtype.
    """
    return _ErrorDrivenFunction.apply(logits, value.detach(), grad.detach())


def apply_error_driven(
    logits: Tensor, inputs: RankingInputs, result: ErrorDrivenResult, value: Tensor | None = None
) -> Tensor:
    """The loss tensor of a ranking loss: ``value`` (default ``result.loss``) in the compute dtype,
    with the framework's gradient scattered onto ``logits`` (M,) for the backward pass."""
    grad = scatter_gradient(inputs, result.grad_pos, result.grad_neg, logits)
    value = result.loss if value is None else value
    return attach_error_driven_gradient(logits, value.to(compute_dtype(logits.dtype)), grad)
