"""Training curves of a sweep's runs, side by side: what the logged values did over training.

Each run folder's ``metrics.jsonl`` gives one line per logged key (its mean over each epoch
against the epoch's mean iteration, :func:`~alrp_lab.report.curves.epoch_curve`), one panel
per key that any run logged: by default the classification loss, and aLRP's share of
positives with Eloc > 1 where the runs logged it; any logged key on request (``loc_weight``:
SB's value over training, or the constant wr). The runs of one job share a colour and a
legend entry, named by the sweep's row (and column) from ``sweep.json`` and listed in its job
order (the table's: wr 1, 2, ... 25, not 1, 10, 15); without one, by the job folder, in
folder order.
Reads files only; matplotlib is imported when a plot is drawn, with the Agg canvas.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from alrp_lab.errors import ResultsError
from alrp_lab.report.curves import CURVE_KEY, epoch_curve, read_logged
from alrp_lab.report.plots import run_dirs
from alrp_lab.sweeps.definition import read_manifest
from alrp_lab.tracking.results import METRICS_FILE

# The panels drawn by default, in order: those no run logged are left out.
CURVE_KEYS = (CURVE_KEY, "eloc_over_one")
_TITLES = {
    CURVE_KEY: "Classification loss",
    "eloc_over_one": "Share of positives with Eloc > 1",
    "loc_weight": "Localisation weight (SB, or the constant wr)",
    "grad_norm": "Gradient norm (before clipping)",
}

PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)

__all__ = ["CURVE_KEYS", "CurveSeries", "curve_series", "plot_curves"]


class CurveSeries(NamedTuple):
    """One run's curve of one key: its legend ``label``, run folder and (x, y) ``points``."""

    label: str
    run_dir: Path
    points: list[tuple[float, float]]


def _job_labels(source: PathLike | Iterable[PathLike]) -> dict[str, str]:
    """Job id -> "row" or "row / column", from the sweep folder's ``sweep.json``, in its
    job order."""
    if not isinstance(source, (str, os.PathLike)):
        return {}
    manifest = read_manifest(Path(source)) or {}
    labels = {}
    for job in manifest.get("jobs") or []:
        if isinstance(job, dict) and isinstance(job.get("id"), str):
            parts = [job.get("row"), job.get("column")]
            labels[job["id"]] = " / ".join(str(p) for p in parts if p) or job["id"]
    return labels


def _job(run: Path) -> str:
    """The job id of a run folder: ``JOB`` of ``JOB/seedN``, else the folder's name."""
    return run.parent.name if run.name.startswith("seed") else run.name


def curve_series(
    source: PathLike | Iterable[PathLike], keys: Sequence[str] = CURVE_KEYS
) -> dict[str, list[CurveSeries]]:
    """Per key, every run's per-epoch curve (runs without that key logged are left out; a
    damaged ``metrics.jsonl`` leaves its run out, said in the log).

    Args:
        source: a sweep folder (every run below it with a metrics.jsonl) or run folders.
        keys: the logged keys to read.

    Returns:
        ``{key: [CurveSeries, ...]}``, keys without any curve omitted. A run in
        ``JOB/seedN`` is labelled by the job's row (and column) in the sweep's
        ``sweep.json``, else by ``JOB``; a run folder given alone, by its name. Runs come in
        the sweep's job order (jobs it does not list last), then in folder order.
    """
    labels = _job_labels(source)
    order = {job: index for index, job in enumerate(labels)}
    runs = run_dirs(source, METRICS_FILE)
    # sorted() is stable: within a job (and without a sweep.json) folder order stays.
    runs = sorted(runs, key=lambda run: order.get(_job(run), len(order)))
    series: dict[str, list[CurveSeries]] = {key: [] for key in keys}
    for run in runs:
        logged = read_logged(run)
        if logged.damaged:
            log.warning("%s left out of the curves: %s", run, logged.reason)
        if logged.records is None:
            continue
        job = _job(run)
        label = labels.get(job, job)
        for key in keys:
            points = epoch_curve(logged.records, key)
            if points:
                series[key].append(CurveSeries(label, run, points))
    return {key: found for key, found in series.items() if found}


def plot_curves(
    source: PathLike | Iterable[PathLike],
    out_png: PathLike,
    keys: Sequence[str] = CURVE_KEYS,
    *,
    log_y: bool = False,
) -> Path:
    """Draw :func:`curve_series` into ``out_png`` (its folder is created), one panel per key
    with a curve, and return its path; ``log_y`` draws the values on a log scale (SB spans 1
    to hundreds) in each panel whose values are all positive, the others linear (said in
    their axis label). Raises :class:`ResultsError` when no run logged any of ``keys``."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, Agg canvas

    series = curve_series(source, keys)
    if not series:
        raise ResultsError(
            f"no {METRICS_FILE} under {source} logs {', '.join(keys)}: run the sweep first "
            "or pass its run folders"
        )
    figure = Figure(figsize=(6.0 * len(series), 4.2), layout="constrained")
    colours: dict[str, str] = {}
    for index, (key, found) in enumerate(series.items()):
        axes = figure.add_subplot(1, len(series), index + 1)
        named: set[str] = set()  # one legend entry per job and panel, not one per seed
        for label, _, points in found:
            (line,) = axes.plot(
                [x for x, _ in points],
                [y for _, y in points],
                linewidth=0.9,
                color=colours.get(label),  # a job keeps its colour across panels
                label=None if label in named else label,
            )
            named.add(label)
            colours.setdefault(label, line.get_color())
        label = f"{key} (mean over each epoch)"
        if log_y and all(y > 0 for s in found for _, y in s.points):
            axes.set_yscale("log")
        elif log_y:  # a log scale would drop the zeros (a share of positives often is 0)
            label += ", linear: some are <= 0"
        axes.set_xlabel("iteration")
        axes.set_ylabel(label)
        axes.set_title(_TITLES.get(key, key))
        axes.legend(fontsize="small")
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    return out
