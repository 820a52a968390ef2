"""A run's training curve, read from its ``metrics.jsonl``: did the loss come back up?

Appendix G.3 (Figure A.7, right) describes the zero-target ablation as training that
"continues properly, similar to that of the correct case, up to a point and then diverges":
the loss rises again, which need not end in a non-finite number. :func:`loss_rebound`
measures that rise on the logged classification loss ``loss_cls`` (aLRP's ranking part, about
1 for an untrained head and 0 for a perfect ranking; the total loss is not used because SB
rescales its localisation part during training). The logged records are cut into
:data:`WINDOWS` equal consecutive windows (each 2% of the run, so a breakdown early in a
long epoch, or within the first tenth of the run, is still seen) and each window's mean
smooths the batch-to-batch noise::

    rebound = (last - lowest) / (first - lowest)

over the window means: 0 for a run that ends at its lowest, 1 for one that ends where it
started. :data:`REBOUND_DIVERGED` (0.5: at least halfway back up) is the threshold at which
a finished run counts as diverged; the paper gives no number, so this is the project's
reading, fixed before any zero-target run at the cpu scale had finished. The window count
was not: it was 20 until the first zero-target run finished, whose loss fell from 1.00 to
0.77 and was back at 1.00 within the first tenth of its iterations, so that 20 windows
(each a twentieth) never saw it fall (docs/notes.md, "Figure A.7"). A run whose loss
never fell by :data:`MIN_DROP` has learnt nothing it could lose and gets no rebound.

:func:`loss_relapse` measures a breakdown that need not last to the end (one that an lr
step ends): the largest rise of a window mean above the lowest one before it, over
``first - lowest`` (0 to 1). It is a diagnostic column, not a claim test; being a maximum
over noisy windows, it reads a little above 0 (0.01-0.1 here) for a loss that only
wobbles.

:func:`epoch_curve` gives the per-epoch means that Figure A.7's loss panel draws.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from alrp_lab.errors import ResultsError
from alrp_lab.report.stats import finite_number
from alrp_lab.tracking.results import read_metrics

CURVE_KEY = "loss_cls"
REBOUND_DIVERGED = 0.5
WINDOWS = 50
MIN_DROP = 0.1
NO_METRICS = "no metrics.jsonl"
NOTHING_LEARNT = f"the loss never fell {MIN_DROP} below its start: nothing learnt"

__all__ = [
    "CURVE_KEY",
    "MIN_DROP",
    "NOTHING_LEARNT",
    "NO_METRICS",
    "REBOUND_DIVERGED",
    "WINDOWS",
    "Logged",
    "Rebound",
    "curve_values",
    "epoch_curve",
    "loss_rebound",
    "loss_relapse",
    "measure_logged",
    "read_logged",
    "rebound",
    "relapse",
]


class Rebound(NamedTuple):
    """A run's rebound or relapse: ``value`` (None when it cannot be measured) and, then,
    ``reason``."""

    value: float | None
    reason: str = ""


def curve_values(records: Iterable[Mapping[str, Any]], key: str = CURVE_KEY) -> list[float]:
    """The finite values of ``key`` in logged order (null and non-finite ones skipped)."""
    values = (finite_number(record.get(key)) for record in records)
    return [value for value in values if value is not None]


def epoch_curve(
    records: Iterable[Mapping[str, Any]], key: str = CURVE_KEY
) -> list[tuple[float, float]]:
    """``(mean step, mean of key)`` over each epoch's records, in epoch order.

    Records without an integer ``epoch`` or without a finite ``key`` are skipped; an epoch
    left with no value is left out. The step is averaged over the records that have one; an
    epoch whose records have none is placed at its epoch number.
    """
    epochs: dict[int, tuple[list[float], list[float]]] = {}
    for record in records:
        epoch, value = record.get("epoch"), finite_number(record.get(key))
        if isinstance(epoch, bool) or not isinstance(epoch, int) or value is None:
            continue
        steps, values = epochs.setdefault(epoch, ([], []))
        values.append(value)
        step = finite_number(record.get("step"))
        if step is not None:
            steps.append(step)
    return [
        (sum(steps) / len(steps) if steps else float(epoch), sum(values) / len(values))
        for epoch, (steps, values) in sorted(epochs.items())
    ]


def _window_means(values: Sequence[float], windows: int) -> list[float] | Rebound:
    """The means of ``windows`` equal consecutive windows of ``values`` (each value its own
    window when there are fewer), or a :class:`Rebound` without value saying why there is
    no curve to measure: fewer than two windows, or the lowest window not :data:`MIN_DROP`
    below the first."""
    count = min(windows, len(values))
    if count < 2:
        return Rebound(None, f"{len(values)} logged value(s): no curve")
    bounds = [round(i * len(values) / count) for i in range(count + 1)]
    means = [sum(values[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:], strict=False)]
    if means[0] - min(means) < MIN_DROP:
        return Rebound(None, NOTHING_LEARNT)
    return means


def rebound(values: Sequence[float], windows: int = WINDOWS) -> Rebound:
    """``(last - lowest) / (first - lowest)`` over the window means of ``values``
    (:func:`_window_means`; no value, with the reason, where it has none)."""
    means = _window_means(values, windows)
    if isinstance(means, Rebound):
        return means
    first, lowest, last = means[0], min(means), means[-1]
    return Rebound((last - lowest) / (first - lowest))


def relapse(values: Sequence[float], windows: int = WINDOWS) -> Rebound:
    """How far the loss came back up at any point, as a share of its whole fall: the largest
    rise of a window mean (counted up to the first window's level) above the lowest window
    mean before it, over ``first - lowest``. 0 for a loss that never rose again, 1 for one
    that fell all the way to its lowest and then came back to where it started, even if it
    fell again later (a breakdown that an lr step ended, which :func:`rebound`, read at the
    end, does not see); a rise before any fall is not a relapse. Between 0 and 1. No value
    where :func:`_window_means` has none."""
    means = _window_means(values, windows)
    if isinstance(means, Rebound):
        return means
    first = means[0]
    low_so_far, rise = first, 0.0
    for mean in means[1:]:
        low_so_far = min(low_so_far, mean)
        rise = max(rise, min(mean, first) - low_so_far)
    return Rebound(rise / (first - min(means)))


class Logged(NamedTuple):
    """A run's ``metrics.jsonl`` records, or ``records`` None and the ``reason`` they
    cannot be read (:data:`NO_METRICS`, or the damaged line)."""

    records: list[dict[str, Any]] | None
    reason: str = ""

    @property
    def damaged(self) -> bool:
        """The file is there but cannot be read (rather than missing)."""
        return self.records is None and self.reason != NO_METRICS


def read_logged(run_dir: str | os.PathLike[str]) -> Logged:
    """The one reader of a run's ``metrics.jsonl`` for the report: its records, or why
    there are none (a missing or damaged file is a reason, not an exception)."""
    try:
        return Logged(read_metrics(run_dir))
    except FileNotFoundError:
        return Logged(None, NO_METRICS)
    except ResultsError as err:
        return Logged(None, str(err))


def measure_logged(logged: Logged, measure: Callable[[Sequence[float]], Rebound]) -> Rebound:
    """``measure`` (:func:`rebound` or :func:`relapse`) of the logged ``loss_cls``; no value,
    with the reason, when the records could not be read."""
    if logged.records is None:
        return Rebound(None, logged.reason)
    return measure(curve_values(logged.records))


def loss_rebound(run_dir: str | os.PathLike[str]) -> Rebound:
    """:func:`rebound` of the run folder's ``metrics.jsonl``."""
    return measure_logged(read_logged(run_dir), rebound)


def loss_relapse(run_dir: str | os.PathLike[str]) -> Rebound:
    """:func:`relapse` of the run folder's ``metrics.jsonl``."""
    return measure_logged(read_logged(run_dir), relapse)
