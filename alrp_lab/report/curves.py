"""A run's training curve, read from its ``metrics.jsonl``: did the loss come back up?

Appendix G.3 (Figure A.7, right) describes the zero-target ablation as training that
"continues properly, similar to that of the correct case, up to a point and then diverges":
the loss rises again, which need not end in a non-finite number. :func:`loss_rebound`
measures that rise on the logged classification loss ``loss_cls`` (aLRP's ranking part, 1 for
an untrained head and 0 for a perfect ranking; the total loss is not used because SB rescales
its localisation part during training), from its per-epoch means (an epoch's mean smooths
the batch-to-batch noise)::

    rebound = (last - lowest) / (first - lowest)

0 for a run that ends at its lowest epoch, 1 for one that ends where it started.
:data:`REBOUND_DIVERGED` is the threshold at which a finished run counts as diverged: it
ended at least halfway back to its untrained loss.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from alrp_lab.tracking.run_files import read_metrics

CURVE_KEY = "loss_cls"
REBOUND_DIVERGED = 0.5

__all__ = ["CURVE_KEY", "REBOUND_DIVERGED", "epoch_curve", "epoch_means", "loss_rebound", "rebound"]


def epoch_curve(
    records: Iterable[Mapping[str, Any]], key: str = CURVE_KEY
) -> list[tuple[float, float]]:
    """``(mean step, mean of key)`` over each epoch's records, in epoch order.

    Records without ``epoch`` or with a missing or non-finite ``key`` (null in the file) are
    skipped; an epoch left with no value is left out. A record without ``step`` counts at
    step 0.
    """
    sums: dict[int, list[float]] = {}
    for record in records:
        epoch, value = record.get("epoch"), record.get(key)
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue
        step = record.get("step")
        step = float(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else 0.0
        total = sums.setdefault(epoch, [0.0, 0.0, 0.0])
        total[0] += step
        total[1] += float(value)
        total[2] += 1.0
    return [(steps / n, values / n) for _, (steps, values, n) in sorted(sums.items())]


def epoch_means(records: Iterable[Mapping[str, Any]], key: str = CURVE_KEY) -> list[float]:
    """The mean of ``key`` over each epoch's records, in epoch order (see :func:`epoch_curve`)."""
    return [value for _, value in epoch_curve(records, key)]


def rebound(means: list[float]) -> float | None:
    """``(last - lowest) / (first - lowest)`` of a curve; None when it has fewer than two
    points or never went below its first (nothing was learnt, so there is no rise to
    measure)."""
    if len(means) < 2:
        return None
    first, lowest, last = means[0], min(means), means[-1]
    if first <= lowest:
        return None
    return (last - lowest) / (first - lowest)


def loss_rebound(run_dir: str | os.PathLike[str]) -> float | None:
    """:func:`rebound` of the run's per-epoch ``loss_cls``. Raises
    :class:`FileNotFoundError` when the run folder has no ``metrics.jsonl``."""
    return rebound(epoch_means(read_metrics(run_dir)))
