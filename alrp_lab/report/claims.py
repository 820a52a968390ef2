"""Claim verdicts: does a paper's claim hold on our runs, fail, or can we not tell?

A sweep definition lists its claims as data (:class:`alrp_lab.sweeps.definition.Claim`).
Each is evaluated from the results files of the runs behind its cells, over seeds:

- ``difference``: ``a - b`` of the means (a side of several cells counts as its best cell:
  the highest mean, or the lowest for oLRP), with Welch's t 95% interval; a constant side
  adds no variance. The best is chosen among the cells with :data:`MIN_SEEDS` or more
  seeds; a cell with fewer (or none yet) could still turn out better, which can move the
  difference one way only (a better ``b`` lowers ``a - b``, a better ``a`` raises it; the
  reverse where lower is better), so
  while such cells remain the verdict stands only where it points that way ("SB trails
  the best constant" stays true when a better constant is added; "SB matches it" need
  not), else it is inconclusive; the note names the cells left out. A finished cell with
  one seed stays left out for good (its mean alone gives no interval): add seeds to it.
- ``spread``: ``max - min`` of the means of ``a``'s cells, with a percentile-bootstrap 95%
  interval (each cell's seeds resampled; fixed generator seed).
- ``diverges``: every run of ``a``'s job diverges: it stopped on a non-finite loss, or it
  finished with its classification loss at least halfway back up to where it started
  (:func:`alrp_lab.report.curves.loss_rebound` >= :data:`~alrp_lab.report.curves.REBOUND_DIVERGED`:
  Appendix G.3's "continues properly ... up to a point and then diverges" need not end in a
  NaN). A finished run whose rebound cannot be measured (no ``metrics.jsonl``, or a loss
  that never fell) leaves the claim inconclusive; one that ended below the threshold makes
  it fail; seeds not finished are named in the note.

Verdicts: **holds** when the whole interval lies on the claimed side of ``margin``
(``a - b > margin`` for ``expect: ">"``, ``< margin`` for ``"<"``), **fails** when it lies
wholly on the other side, **inconclusive** when it straddles the margin, when a side has
fewer than 2 completed seeds (no interval can be formed), or when cells left out of a
best-of side could overturn it. Failed runs are reported and never
counted as numbers. Picking the best of a set by its mean favours that set a little (the
winner's curse): with few seeds, read "SB >= best constant" claims with that in mind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from alrp_lab.report.curves import REBOUND_DIVERGED
from alrp_lab.report.runs import SeedRun, lower_is_better, metric_value
from alrp_lab.report.stats import Summary, bootstrap_interval, summarize, welch_interval
from alrp_lab.sweeps.definition import CellRef, Claim, Side, SweepDefinition

MIN_SEEDS = 2
VERDICTS = ("holds", "fails", "inconclusive")

RunsOf = Callable[[CellRef], Sequence[SeedRun]]

__all__ = ["MIN_SEEDS", "VERDICTS", "ClaimResult", "describe", "evaluate_claim", "evaluate_claims"]


@dataclass(frozen=True)
class ClaimResult:
    """A claim's verdict. ``value`` is ours (the difference, the spread, or the fraction of
    runs that diverged), ``low``/``high`` its 95% interval, ``n`` the completed seeds per
    side (e.g. ``"3 vs 3"``), ``paper`` the paper's own number, ``note`` what else to know
    (the best cell chosen, failed runs, why inconclusive)."""

    claim: Claim
    verdict: str
    value: float | None
    low: float | None
    high: float | None
    n: str
    paper: float | None
    note: str = ""


def _cell_text(cell: CellRef) -> str:
    return cell.row if cell.column is None else f"{cell.row}/{cell.column}"


def _side_text(side: Side) -> str:
    if side.is_constant:
        return f"{side.value:g}"
    if len(side.cells) == 1:
        return _cell_text(side.cells[0])
    rows = sorted({c.row for c in side.cells}, key=[c.row for c in side.cells].index)
    columns = [c.column for c in side.cells if c.column is not None]
    if len(rows) == 1 and columns:
        return f"{rows[0]}/{{{','.join(dict.fromkeys(columns))}}}"
    return "{" + ", ".join(_cell_text(c) for c in side.cells) + "}"


def describe(claim: Claim) -> str:
    """The claim's test in one line, e.g. ``AP: IoU/SB - best IoU/{1,2} > -0.5``."""
    if claim.test == "diverges":
        return f"{_side_text(claim.a)} diverges"
    if claim.test == "spread":
        return f"{claim.metric}: spread of {_side_text(claim.a)} {claim.expect} {claim.margin:g}"
    b = claim.b
    b_text = _side_text(b) if b.is_constant or len(b.cells) == 1 else f"best {_side_text(b)}"
    return f"{claim.metric}: {_side_text(claim.a)} - {b_text} {claim.expect} {claim.margin:g}"


def _verdict(claim: Claim, low: float, high: float) -> str:
    above, below = low > claim.margin, high < claim.margin
    if claim.expect == ">":
        return "holds" if above else "fails" if below else "inconclusive"
    return "holds" if below else "fails" if above else "inconclusive"


def _cell_metric(defn: SweepDefinition, cell: CellRef, metric: str) -> str:
    """The results key a cell shows for ``metric``: a row's ``metric_prefix`` applies
    (Table 5's bounds read ``upper_AP`` for AP)."""
    if cell.column is not None:
        return metric
    row = next(r for r in defn.rows if r.label == cell.row)
    return row.metric_prefix + metric


def _summary(runs: Sequence[SeedRun], metric: str) -> tuple[Summary, list[str]]:
    """Values of completed runs, and notes on the runs that gave none."""
    values, notes = [], []
    for run in runs:
        value = metric_value(run, metric)
        if value is not None:
            values.append(value)
        elif run.status == "failed":
            notes.append(f"{run.name} failed")
        elif run.status == "completed":
            notes.append(f"{run.name} has no {metric}")
    return summarize(values), notes


def _paper_value(defn: SweepDefinition, cell: CellRef, metric: str) -> float | None:
    row = next(r for r in defn.rows if r.label == cell.row)
    return row.paper.get(cell.column if cell.column is not None else metric)


def _best(values: dict[CellRef, float], metric: str) -> CellRef:
    pick = min if lower_is_better(metric) else max
    return pick(values, key=values.__getitem__)


class _Side:
    """A side evaluated: its summary (None for a constant), value, paper value and notes."""

    def __init__(self, defn: SweepDefinition, side: Side, metric: str, runs_of: RunsOf):
        self.constant = side.value
        self.notes: list[str] = []
        self.summary: Summary | None = None
        # Cells of a best-of side with too few seeds to be chosen, which could be better.
        self.left_out: list[str] = []
        if side.is_constant:
            self.paper = side.value
            return
        summaries, open_cells = {}, set()
        for cell in side.cells:
            runs = runs_of(cell)
            summary, notes = _summary(runs, _cell_metric(defn, cell, metric))
            summaries[cell] = summary
            self.notes += notes
            if any(run.status in ("missing", "running") for run in runs):
                open_cells.add(cell)
        means = {cell: s.mean for cell, s in summaries.items() if s.n}
        papers = {c: p for c in side.cells if (p := _paper_value(defn, c, metric)) is not None}
        self.paper = (
            papers[_best(papers, metric)] if papers and len(papers) == len(side.cells) else None
        )
        if not means:
            self.summary = summarize([])
            return
        seeded = {cell: mean for cell, mean in means.items() if summaries[cell].n >= MIN_SEEDS}
        chosen = _best(seeded or means, metric)
        self.summary = summaries[chosen]
        if len(side.cells) > 1:
            self.notes.insert(0, f"best: {_cell_text(chosen)}")
            if seeded:
                # A cell whose every run failed has no number and never will: not left out.
                self.left_out = [
                    f"{_cell_text(c)} (n={summaries[c].n})"
                    for c in side.cells
                    if summaries[c].n < MIN_SEEDS and (summaries[c].n or c in open_cells)
                ]

    @property
    def n(self) -> str:
        return "const" if self.summary is None else str(self.summary.n)

    @property
    def mean(self) -> float | None:
        return self.constant if self.summary is None else self.summary.mean


def _difference(defn: SweepDefinition, claim: Claim, runs_of: RunsOf) -> ClaimResult:
    a = _Side(defn, claim.a, claim.metric, runs_of)
    b = _Side(defn, claim.b, claim.metric, runs_of)
    n = f"{a.n} vs {b.n}"
    paper = claim.paper_diff
    if paper is None and a.paper is not None and b.paper is not None:
        paper = a.paper - b.paper
    notes = a.notes + b.notes
    value = None if a.mean is None or b.mean is None else a.mean - b.mean
    sides = [s.summary for s in (a, b) if s.summary is not None]
    if any(s.n < MIN_SEEDS for s in sides):
        notes.append(f"too few seeds (need {MIN_SEEDS} per side)")
        return ClaimResult(claim, "inconclusive", value, None, None, n, paper, "; ".join(notes))
    b_value = b.summary if b.summary is not None else b.constant
    value, low, high = welch_interval(a.summary, b_value)
    verdict = _verdict(claim, low, high)
    if a.left_out or b.left_out:
        verdict = _robust(claim, verdict, a, b)
        notes.append(f"not counted, too few seeds: {', '.join(a.left_out + b.left_out)}")
    return ClaimResult(claim, verdict, value, low, high, n, paper, "; ".join(notes))


def _robust(claim: Claim, verdict: str, a: _Side, b: _Side) -> str:
    """``verdict`` where the cells left out of a best-of side cannot overturn it, else
    inconclusive. A better cell on side ``b`` can only lower ``a - b`` (raise it where lower
    is better), one on side ``a`` only raise it; with both, either."""
    better = -1 if lower_is_better(claim.metric) else 1  # how a better cell moves its mean
    moves = set()
    if a.left_out:
        moves.add(better)
    if b.left_out:
        moves.add(-better)
    if len(moves) != 1:
        return "inconclusive"
    if moves == {-1}:  # the difference can only fall: an interval below the margin stays
        kept = "fails" if claim.expect == ">" else "holds"
    else:  # it can only rise: an interval above the margin stays
        kept = "holds" if claim.expect == ">" else "fails"
    return verdict if verdict == kept else "inconclusive"


def _spread(defn: SweepDefinition, claim: Claim, runs_of: RunsOf) -> ClaimResult:
    summaries, notes = [], []
    for cell in claim.a.cells:
        summary, cell_notes = _summary(runs_of(cell), _cell_metric(defn, cell, claim.metric))
        summaries.append(summary)
        notes += cell_notes
    papers = [_paper_value(defn, c, claim.metric) for c in claim.a.cells]
    paper = claim.paper_diff
    if paper is None and all(p is not None for p in papers):
        paper = max(papers) - min(papers)
    n = ",".join(str(s.n) for s in summaries)
    means = [s.mean for s in summaries if s.n]
    value = max(means) - min(means) if len(means) == len(summaries) else None
    if any(s.n < MIN_SEEDS for s in summaries):
        notes.append(f"too few seeds (need {MIN_SEEDS} per cell)")
        return ClaimResult(claim, "inconclusive", value, None, None, n, paper, "; ".join(notes))
    value, low, high = bootstrap_interval(summaries, lambda m: max(m) - min(m))
    return ClaimResult(
        claim, _verdict(claim, low, high), value, low, high, n, paper, "; ".join(notes)
    )


def _diverges(claim: Claim, runs_of: RunsOf) -> ClaimResult:
    every = list(runs_of(claim.a.cells[0]))
    runs = [r for r in every if r.status in ("completed", "failed")]
    unfinished = [r for r in every if r.status not in ("completed", "failed")]
    diverged, kept, unknown, other, notes = [], [], [], [], []
    for run in runs:  # in seed order, so the notes read seed by seed
        if run.diverged:
            diverged.append(run)
            continue
        if run.status == "failed":
            other.append(run)
            notes.append(f"{run.name} failed otherwise: {run.error}")
            continue
        value, reason = run.curve_measure("loss_rebound")
        if value is None:
            unknown.append(run)
            notes.append(f"{run.name}: no loss rebound ({reason})")
        else:
            (diverged if value >= REBOUND_DIVERGED else kept).append(run)
            notes.append(f"{run.name}: loss rebound {value:.2f}")
    notes += [f"{r.name}: {r.status}" for r in unfinished]
    n = f"{len(diverged)}/{len(runs)} diverged"
    if unfinished:
        n += f", {len(unfinished)} not finished"
    value = len(diverged) / len(runs) if runs else None
    if kept:
        verdict = "fails"
    elif len(diverged) >= MIN_SEEDS and not other and not unknown:
        verdict = "holds"
    else:
        verdict = "inconclusive"
        if len(runs) < MIN_SEEDS:
            notes.append(f"too few seeds (need {MIN_SEEDS})")
    return ClaimResult(claim, verdict, value, None, None, n, claim.paper_diff, "; ".join(notes))


def evaluate_claim(defn: SweepDefinition, claim: Claim, runs_of: RunsOf) -> ClaimResult:
    """The verdict on ``claim`` of ``defn``; ``runs_of(cell)`` gives the runs behind a cell."""
    if claim.test == "difference":
        return _difference(defn, claim, runs_of)
    if claim.test == "spread":
        return _spread(defn, claim, runs_of)
    return _diverges(claim, runs_of)


def evaluate_claims(defn: SweepDefinition, runs_of: RunsOf) -> list[ClaimResult]:
    """Every claim of ``defn``, in definition order."""
    return [evaluate_claim(defn, claim, runs_of) for claim in defn.claims]
