"""Figures 4 and A.7 of the paper: the gradient balance of a run, iteration by iteration.

Each run folder's ``grad_balance.csv`` (``iteration,epoch,ratio``; ratio = sum |dL/ds| over
negatives / over positives, SPEC section 3) becomes one line, labelled by the run's loss.
aLRP Loss stays on 1.000 (Theorem 2); cross entropy and Focal Loss drift. A second panel
(Figure 4's right, and Figure A.7's) gives the loss values: each run's classification loss
from ``metrics.jsonl``, one point per epoch (its mean). With ``mean`` each loss is one line
instead, its runs averaged iteration by iteration, as the paper averages Figure 4 over 10
runs (so the legend's min and max are comparable to the paper's). Reads files only;
matplotlib is imported when a plot is drawn, with the Agg canvas (no display needed).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from alrp_lab.errors import ResultsError, ResultsNotFoundError
from alrp_lab.report.curves import CURVE_KEY, epoch_curve, read_logged
from alrp_lab.tracking.grad_balance import GRAD_BALANCE_FILE, GradBalance, read_grad_balance
from alrp_lab.tracking.results import read_results

LOSS_NAMES = {
    "alrp": "aLRP Loss",
    "ap": "AP Loss",
    "focal": "Focal Loss",
    "ce": "Cross Entropy",
}

PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)

__all__ = [
    "GRAD_BALANCE_FILE",
    "GradBalance",
    "mean_grad_balance",
    "plot_grad_balance",
    "read_grad_balance",
    "run_dirs",
]


def run_dirs(
    dirs_or_sweep_dir: PathLike | Iterable[PathLike], filename: str = GRAD_BALANCE_FILE
) -> list[Path]:
    """Run folders holding ``filename``: each given folder that holds it, else the folders
    below it that do (sorted). Raises :class:`ResultsNotFoundError` for a path that is not a
    folder."""
    if isinstance(dirs_or_sweep_dir, (str, os.PathLike)):
        candidates = [Path(dirs_or_sweep_dir)]
    else:
        candidates = [Path(d) for d in dirs_or_sweep_dir]
    runs: list[Path] = []
    for folder in candidates:
        if not folder.is_dir():
            raise ResultsNotFoundError(f"{folder} is not a folder: pass run or sweep folders")
        if (folder / filename).is_file():
            runs.append(folder)
        else:
            runs.extend(sorted(p.parent for p in folder.rglob(filename)))
    return runs


def _label(run_dir: Path) -> str:
    """The run's loss in the paper's words (from results.json), else the folder's name; the
    zero-target ablation (Figure A.7) says so."""
    try:
        loss = read_results(run_dir)["config"]["loss"]
        name = str(loss["name"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return run_dir.name
    label = LOSS_NAMES.get(name, name)
    return f"{label}, zero target" if loss.get("zero_target") is True else label


def _shared_mean(by_run: Sequence[dict[float, float]]) -> list[tuple[float, float]]:
    """``(x, mean)`` at each x every mapping has, in x order: every point a mean of the
    same runs (an x some run lacks is left out rather than averaged over fewer)."""
    shared = sorted(set(by_run[0]).intersection(*by_run[1:]))
    return [(x, math.fsum(run[x] for run in by_run) / len(by_run)) for x in shared]


def _positive(data: GradBalance) -> GradBalance:
    """The iterations with a positive ratio (the log axis cannot draw the others)."""
    kept = [(i, r) for i, r in zip(data.iterations, data.ratios, strict=True) if r > 0]
    return GradBalance([i for i, _ in kept], [r for _, r in kept])


def mean_grad_balance(series: Sequence[GradBalance]) -> GradBalance:
    """The runs' mean ratio at each iteration every one of them recorded a positive ratio:
    ``ratios[k]`` is the arithmetic mean of ``series``' ratios at ``iterations[k]``.

    An iteration that some run lacks (no positive got a gradient there, or its line was
    damaged) is left out rather than averaged over fewer runs, so that every point is a mean
    of the same runs. Raises :class:`ValueError` for no runs.
    """
    if not series:
        raise ValueError("mean_grad_balance needs at least one run")
    points = _shared_mean([dict(zip(*_positive(run), strict=True)) for run in series])
    return GradBalance([int(i) for i, _ in points], [r for _, r in points])


def _mean_curve(curves: Sequence[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Mean of per-epoch curves ``(mean step, value)`` at the steps every one of them has
    (runs of one schedule log the same steps, so an epoch's mean step is the same in each);
    nothing for no curves."""
    return _shared_mean([dict(curve) for curve in curves]) if curves else []


def _runs_text(label: str, count: int) -> str:
    return f"{label} (mean of {count} runs)" if count > 1 else label


def _lines(
    runs: Sequence[tuple[Path, GradBalance]], *, mean: bool, loss_panel: bool
) -> list[tuple[str, GradBalance, str, list[tuple[float, float]]]]:
    """What is drawn: ``(label, positive ratios, loss label, loss curve)`` per run, or with
    ``mean`` per loss (runs grouped by label, in the order first seen). A mean's labels
    give its run count; its loss curve averages the runs that logged one (a run without
    ``metrics.jsonl`` is left out of that panel only, said in the log)."""
    labels = [_label(run) for run, _ in runs]
    if not mean:
        out = []
        for (run, data), label in zip(runs, labels, strict=True):
            if labels.count(label) > 1:
                label = f"{label} ({run.name})"
            curve = _loss_curve(run) if loss_panel else []
            out.append((label, _positive(data), label, curve))
        return out
    groups: dict[str, list[tuple[Path, GradBalance]]] = {}
    for pair, label in zip(runs, labels, strict=True):
        groups.setdefault(label, []).append(pair)
    out = []
    for label, members in groups.items():
        data = mean_grad_balance([d for _, d in members])
        if not data.ratios:
            log.warning("%s left out: its %d runs share no iteration", label, len(members))
            continue
        curves = []
        if loss_panel:
            for run, _ in members:
                curve = _loss_curve(run)
                if curve:
                    curves.append(curve)
                else:
                    log.warning("%s left out of %s's mean loss: no loss_cls logged", run, label)
        out.append(
            (
                _runs_text(label, len(members)),
                data,
                _runs_text(label, len(curves)),
                _mean_curve(curves),
            )
        )
    return out


def _loss_curve(run_dir: Path) -> list[tuple[float, float]]:
    """The run's per-epoch classification loss; nothing when it has no metrics.jsonl or a
    damaged one (said in the log: the ratio panel still draws)."""
    logged = read_logged(run_dir)
    if logged.damaged:
        log.warning("%s left out of the loss panel: %s", run_dir, logged.reason)
    return epoch_curve(logged.records) if logged.records is not None else []


def plot_grad_balance(
    dirs_or_sweep_dir: PathLike | Iterable[PathLike],
    out_png: PathLike,
    *,
    loss_panel: bool = False,
    mean: bool = False,
) -> Path:
    """Draw Figure 4's left panel, or with ``loss_panel`` both of its panels (as Figure A.7
    has them), into ``out_png`` and return its path.

    Args:
        dirs_or_sweep_dir: a sweep folder (every run below it with a grad_balance.csv) or a
            list of run folders.
        out_png: the image to write (its folder is created).
        loss_panel: add Figure A.7's right panel: each run's classification loss
            (``loss_cls``), its mean over each epoch against the epoch's mean iteration. A run
            without ``metrics.jsonl`` (or without ``loss_cls`` in it) is left out of that
            panel only; one without ``grad_balance.csv`` is in neither.
        mean: one line per loss instead of per run: the runs' mean ratio at each iteration
            they all recorded (:func:`mean_grad_balance`), and in the loss panel their mean
            per-epoch loss, as the paper averages its 10 runs.

    One line per run (or loss), labelled by its loss (two runs with the same label also
    show their folder names) with its min and max ratio as the paper's legend gives them;
    log-scale y and a dashed line at 1.000. Raises :class:`ValueError` when no run has any
    ratio.
    """
    from matplotlib.figure import Figure  # the object API: no pyplot state, Agg canvas

    runs = [(run, read_grad_balance(run)) for run in run_dirs(dirs_or_sweep_dir)]
    runs = [(run, data) for run, data in runs if any(r > 0 for r in data.ratios)]
    if not runs:
        raise ResultsError(
            f"no {GRAD_BALANCE_FILE} with positive ratios under {dirs_or_sweep_dir}: run the "
            "figure4 sweep first (alrp-lab sweep figure4) or pass its run folders"
        )
    lines = _lines(runs, mean=mean, loss_panel=loss_panel)
    if not lines:
        raise ResultsError(
            f"no loss under {dirs_or_sweep_dir} has iterations that all its runs recorded: "
            "draw it without --mean"
        )
    figure = Figure(figsize=(12.0 if loss_panel else 7.0, 4.2), layout="constrained")
    axes = figure.add_subplot(1, 2, 1) if loss_panel else figure.add_subplot()
    loss_axes = figure.add_subplot(1, 2, 2) if loss_panel else None
    for label, data, loss_label, curve in lines:
        low, high = min(data.ratios), max(data.ratios)
        legend = f"{label}: min 1/{1 / low:.3f}, max {high:.3f}"
        (line,) = axes.plot(data.iterations, data.ratios, linewidth=0.9, label=legend)
        if curve and loss_axes is not None:
            loss_axes.plot(
                [x for x, _ in curve],
                [y for _, y in curve],
                linewidth=0.9,
                color=line.get_color(),
                label=loss_label,
            )
    axes.axhline(
        1.0, color="black", linestyle="--", linewidth=0.8, label="1.000 (Theorem 2)", zorder=1
    )  # under the runs: aLRP Loss lies on it
    axes.set_yscale("log")
    axes.set_xlabel("iteration")
    axes.set_ylabel(r"$\sum_{N} |\partial L/\partial s|$ / $\sum_{P} |\partial L/\partial s|$")
    if loss_axes is None:
        axes.set_title("Gradient magnitude of negatives over positives (Figure 4)")
    else:
        axes.set_title("Gradient magnitude of negatives over positives")
        loss_axes.set_xlabel("iteration")
        loss_axes.set_ylabel(f"{CURVE_KEY} (mean over each epoch)")
        loss_axes.set_title("Classification loss")
        if loss_axes.lines:
            loss_axes.legend(fontsize="small")
        else:
            loss_axes.text(
                0.5, 0.5, "no loss_cls logged", ha="center", transform=loss_axes.transAxes
            )
    axes.legend(fontsize="small")
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    return out


def _log2_axis(xs: Sequence[float]) -> bool:
    """Whether the x values ``xs`` are drawn on a log2 axis: every one a positive power of
    two (schedule multiples 1, 2, 8), or a geometric grid of three or more (learning rates
    0.005, 0.01, 0.02, 0.04), so that each doubling is one step on the page."""
    values = sorted(xs)
    if not values or values[0] <= 0:
        return False
    if all(math.log2(x).is_integer() for x in values):
        return True
    ratios = [b / a for a, b in zip(values, values[1:], strict=False)]
    # Two points make a grid of any ratio: a geometric one needs three or more.
    return len(ratios) > 1 and ratios[0] > 1 and all(math.isclose(r, ratios[0]) for r in ratios)


def plot_claim_trend(sweep_dir: PathLike, out_png: PathLike) -> Path:
    """Draw the ``trend`` of a sweep folder's definition (``figure: claim_trend``).

    One line per series: each claim's difference (ours, the claim's metric) at its x value
    with its 95% interval as an error bar (hollow, without one, where a side has a single
    seed); claims without a value yet are left out. The x
    axis is log2 when every x is a positive power of two (schedule multiples) or the x
    values form a geometric grid (learning rates). Raises
    :class:`ResultsError` when the definition has no trend or no claim has a value yet.
    """
    from matplotlib.figure import Figure

    # Here: the tables read grad_balance.csv through this module (tables -> runs -> plots).
    from alrp_lab.report.tables import load_sweep_table
    from alrp_lab.sweeps.definition import parse_sweep, read_manifest

    root = Path(sweep_dir)
    saved = read_manifest(root)
    defn = parse_sweep(saved["definition"], name=str(saved["name"])) if saved else None
    if defn is None or defn.trend is None:
        raise ResultsError(f"{root} holds no sweep with `figure: claim_trend` (sweep.json)")
    results = {r.claim.name: r for r in load_sweep_table(root).claims}
    figure = Figure(figsize=(7.0, 4.2), layout="constrained")
    axes = figure.add_subplot()
    drawn = 0
    hollow = False
    values: list[float] = []
    reach: list[float] = []
    for offset, series in enumerate(defn.trend.series):
        points = [
            (x, results[name])
            for x, name in zip(defn.trend.x, series.claims, strict=True)
            if name is not None
            and results.get(name) is not None
            and results[name].value is not None
        ]
        if not points:
            continue
        # A small sideways shift keeps the error bars of two series apart.
        xs = [x * (1 + 0.04 * offset) for x, _ in points]
        ys = [r.value for _, r in points]
        below = [r.value - r.low if r.low is not None else 0.0 for _, r in points]
        above = [r.high - r.value if r.high is not None else 0.0 for _, r in points]
        line = axes.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, label=series.label)
        # A gap with one seed on either side has no interval: a hollow marker says so,
        # so that a missing bar is never read as a tight one.
        lone = [i for i, (_, r) in enumerate(points) if r.low is None]
        if lone:
            color = line.lines[0].get_color()
            lone_x, lone_y = [xs[i] for i in lone], [ys[i] for i in lone]
            axes.plot(lone_x, lone_y, "o", color=color, markerfacecolor="white", zorder=3)
            hollow = True
        values += ys
        reach += [y - b for y, b in zip(ys, below, strict=True)]
        reach += [y + a for y, a in zip(ys, above, strict=True)]
        drawn += 1
    if not drawn:
        raise ResultsError(f"no claim of {root}'s trend has a value yet: run the sweep first")
    # Two seeds with one collapse give an interval ten times the gaps: keep the means
    # readable and say where a bar runs off the axes.
    pad = max(10.0, max(values) - min(values))
    low, high = min(0.0, *values) - pad, max(0.0, *values) + pad
    if min(reach) < low or max(reach) > high:
        axes.set_ylim(low, high)
        axes.text(
            0.01, 0.01, "bars clipped at the axes", transform=axes.transAxes, fontsize="small"
        )
    axes.axhline(0.0, color="black", linestyle="--", linewidth=0.8, zorder=1)
    if _log2_axis(defn.trend.x):
        axes.set_xscale("log", base=2)
        axes.set_xticks(list(defn.trend.x), [f"{x:g}" for x in defn.trend.x])
        axes.set_xlim(min(defn.trend.x) / 1.3, max(defn.trend.x) * 1.3)
    if hollow:  # a legend entry of its own, without data
        axes.plot(
            [],
            [],
            "o",
            color="gray",
            markerfacecolor="white",
            label="no interval: one seed on a side",
        )
    axes.set_xlabel(defn.trend.xlabel or "x")
    axes.set_ylabel("difference (mean, 95% interval over seeds)")
    axes.set_title(defn.title)
    axes.legend(fontsize="small")
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    return out
