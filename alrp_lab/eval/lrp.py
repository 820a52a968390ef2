"""Optimal LRP (oLRP), SPEC section 3: the exact minimum of LRP over score thresholds.

For the detections of one class pooled over images and sorted by score, keeping those with
score >= s gives, with tau = 0.5,

    LRP(s) = (N_FP + N_FN + sum over TP of (1 - IoU) / (1 - tau)) / (N_TP + N_FP + N_FN)

Since N_TP + N_FN = N_GT, every threshold is one prefix of the sorted list and all of them
come from cumulative sums: O(N log N) for the sort, O(N) after it. A threshold cannot split
detections of equal score, so only prefixes that end a run of equal scores are candidates
(with distinct scores that is every prefix).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassLRP:
    """oLRP of one class and its components at the optimal threshold.

    Attributes:
        olrp: the minimum LRP, in [0, 1]; 1 when the class has no TP at all.
        loc: mean (1 - IoU) of the TPs (not divided by 1 - tau); NaN without TPs.
        fp: N_FP / (N_TP + N_FP); NaN without TPs.
        fn: N_FN / N_GT; 1 without TPs.
        threshold: the lowest score kept at the optimum; NaN without TPs.
    """

    olrp: float
    loc: float
    fp: float
    fn: float
    threshold: float


_NO_TP = ClassLRP(olrp=1.0, loc=math.nan, fp=math.nan, fn=1.0, threshold=math.nan)


def optimal_lrp(
    scores: np.ndarray, tp: np.ndarray, iou: np.ndarray, num_gt: int, tau: float = 0.5
) -> ClassLRP:
    """Exact oLRP of one class.

    Args:
        scores: (N,) detection scores (any order; sorted here, stably, highest first). Leave
            out detections that are neither TP nor FP (matched to crowd regions).
        tp: (N,) bool, True for a TP at IoU ``tau``.
        iou: (N,) float, IoU of each TP with its ground truth (ignored where ``tp`` is False).
        num_gt: number of (non-ignored) ground truths; must be positive, since oLRP skips
            classes without ground truth.
        tau: the TP threshold.

    Returns:
        The class's ``ClassLRP``. Among thresholds with equal LRP the highest one is taken.
        Thresholds that keep no TP are not candidates when some threshold keeps one: their
        LRP is 1, which no TP with IoU >= tau can exceed, and their components are undefined.
    """
    if num_gt <= 0:
        raise ValueError("optimal_lrp needs num_gt > 0: classes without ground truth are skipped")
    scores = np.asarray(scores, dtype=np.float64)
    tp = np.asarray(tp, dtype=bool)
    if not tp.any():
        return _NO_TP
    order = np.argsort(-scores, kind="mergesort")
    scores, tp = scores[order], tp[order]
    # pycocotools' IoU of identical float boxes can round to 1 + 4e-16; clip so that a
    # perfect detection has error 0, not a negative one.
    loc_error = np.where(tp, np.clip(1.0 - np.asarray(iou, dtype=np.float64)[order], 0, 1), 0.0)

    num_tp = np.cumsum(tp)
    num_fp = np.cumsum(~tp)
    loc_sum = np.cumsum(loc_error)  # sum of (1 - IoU) over the TPs of each prefix
    lrp = (num_fp + (num_gt - num_tp) + loc_sum / (1.0 - tau)) / (num_fp + num_gt)

    ends_tie_run = np.append(scores[1:] != scores[:-1], True)
    candidate = ends_tie_run & (num_tp > 0)
    k = int(np.argmin(np.where(candidate, lrp, np.inf)))  # argmin: first = highest score
    return ClassLRP(
        olrp=float(lrp[k]),
        loc=float(loc_sum[k] / num_tp[k]),
        fp=float(num_fp[k] / (num_tp[k] + num_fp[k])),
        fn=float((num_gt - num_tp[k]) / num_gt),
        threshold=float(scores[k]),
    )


def _nanmean(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def mean_lrp(per_class: Sequence[ClassLRP]) -> dict[str, float]:
    """moLRP and its components averaged over classes.

    Args:
        per_class: one ``ClassLRP`` per class with ground truth.

    Returns:
        ``oLRP``, ``oLRP_loc``, ``oLRP_FP``, ``oLRP_FN``; undefined (NaN) components are left
        out of their means; every value is NaN when ``per_class`` is empty.
    """
    return {
        "oLRP": _nanmean([c.olrp for c in per_class]),
        "oLRP_loc": _nanmean([c.loc for c in per_class]),
        "oLRP_FP": _nanmean([c.fp for c in per_class]),
        "oLRP_FN": _nanmean([c.fn for c in per_class]),
    }
