"""Rank correlation between classification and localisation (rho) and the Table 5 bounds.

rho (SPEC section 3): for each class, take its TPs at IoU 0.5 (pooled over images) and
compute Spearman's rho between their scores and their IoUs, i.e. the Pearson correlation
of their average ranks (ties share the mean of the ranks they span). A class whose scores or
IoUs are all equal has constant ranks, so the correlation is 0/0: it is NaN and left out of
the mean, as are classes with fewer than two TPs. The mean over no class is NaN.

The bounds (Table 5) keep the model's match tables and at every threshold t move its n_t
TP labels to the n_t highest-scored (upper bound) or lowest-scored (lower bound) of the TPs
at IoU 0.5; the other TPs at 0.5 become FPs at t. AP is then the same COCO accumulation
(``matching.accumulate_precision``) on these modified tables, so AP50 is unchanged.
The bound's IoUs are the model's TP IoUs sorted and handed out in score order (upper) or
reverse score order (lower), the ranking the bound stands for: its rho is computed
from them like the model's, and is +1 (-1) whenever the scores and the IoUs have no ties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from alrp_lab.eval.matching import ClassMatches, accumulate_precision


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N, ties sharing the mean of the ranks they span.

    Args:
        values: (N,) float.

    Returns:
        (N,) float64.
    """
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts_run = np.append(True, sorted_values[1:] != sorted_values[:-1])
    run = np.cumsum(starts_run) - 1
    first = np.flatnonzero(starts_run)
    last = np.append(first[1:], len(values)) - 1
    ranks = np.empty(len(values))
    ranks[order] = (first + last)[run] / 2.0 + 1.0
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks of ``x`` and ``y``.

    Args:
        x: (N,) float.
        y: (N,) float.

    Returns:
        rho in [-1, 1]; NaN when N < 2 or either side has constant ranks.
    """
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return math.nan
    rx = average_ranks(x)
    ry = average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if denom == 0.0:
        return math.nan
    # Rounding can push a perfect correlation a hair past 1.
    return float(np.clip(float(rx @ ry) / denom, -1.0, 1.0))


def class_rho(matches: ClassMatches) -> float:
    """rho of one class: Spearman between score and IoU over its TPs at IoU 0.5 (NaN if < 2)."""
    tp = matches.tp[0]
    return spearman(matches.scores[tp], matches.iou[tp])


def mean_rho(per_class: Sequence[float]) -> float:
    """Mean of the defined (non-NaN) per-class rhos; NaN when none is defined."""
    defined = [r for r in per_class if not math.isnan(r)]
    return float(np.mean(defined)) if defined else math.nan


def bound_matches(matches: ClassMatches, upper: bool) -> ClassMatches:
    """The Table 5 bound of one class as modified match tables.

    At each threshold t, the detections eligible for a TP label are the TPs at IoU 0.5 that
    the model does not ignore at t; the model's TP count at t (capped at the number eligible:
    greedy matching can, in contrived cases, find a TP at t that is not one at 0.5) goes to
    the highest-scored (upper) or lowest-scored (lower) eligible ones, every other
    non-ignored detection is an FP. Only the TP labels move: scores, ignored detections and
    the number of ground truths stay the model's, and at t = 0.5 nothing changes.

    Args:
        matches: the model's tables (threshold 0 must be IoU 0.5).
        upper: True for the upper bound, False for the lower bound.

    Returns:
        ``ClassMatches`` with the moved ``tp`` labels and, as ``iou``, the model's IoUs at 0.5
        sorted and handed out in score order (upper) or reverse score order (lower).
    """
    tp50 = matches.tp[0]
    positions = np.flatnonzero(tp50)  # TPs at 0.5, highest score first
    if not upper:
        positions = positions[::-1]
    tp = np.zeros_like(matches.tp)
    for t in range(tp.shape[0]):
        eligible = positions[~matches.ignored[t, positions]]
        tp[t, eligible[: min(int(matches.tp[t].sum()), len(eligible))]] = True
    iou = np.full_like(matches.iou, np.nan)
    iou[positions] = np.sort(matches.iou[tp50])[::-1]
    return replace(matches, tp=tp, iou=iou)


def bound_precision(per_class: Sequence[ClassMatches], upper: bool) -> np.ndarray:
    """COCO precision array of the upper or lower bound.

    Args:
        per_class: the model's tables, one per class.
        upper: which bound.

    Returns:
        (T, R, K) float64, K = len(per_class), as ``accumulate_precision`` stacked.
    """
    return np.stack(
        [
            accumulate_precision(b.tp, b.ignored, b.num_gt)
            for b in (bound_matches(m, upper) for m in per_class)
        ],
        axis=-1,
    )


def toy_ap(
    scores: np.ndarray,
    ious: np.ndarray,
    num_gt: int,
    iou_thrs: Sequence[float] = (0.5, 0.65, 0.8, 0.95),
    num_recall_points: int = 10,
) -> float:
    """AP of the paper's toy example (Appendix A, Table A.9).

    The mean over ``iou_thrs`` of the interpolated precision at recalls 1/P, 2/P, ..., 1
    (P = ``num_recall_points``), the same accumulation as COCO's with another recall grid.

    Args:
        scores: (N,) detection scores.
        ious: (N,) IoU of each detection with its ground truth; NaN (or < every threshold)
            for a detection that matches none.
        num_gt: number of ground truths.
        iou_thrs: the IoU thresholds averaged over.
        num_recall_points: the recall grid size.

    Returns:
        AP in [0, 1].
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    ious = np.nan_to_num(np.asarray(ious, dtype=np.float64)[order], nan=-1.0)
    tp = ious[None, :] >= np.asarray(iou_thrs, dtype=np.float64)[:, None]
    rec_thrs = np.arange(1, num_recall_points + 1) / num_recall_points
    precision = accumulate_precision(tp, np.zeros_like(tp), num_gt, rec_thrs)
    return float(precision.mean())
