"""Paper tables rebuilt from results files: ours beside the paper's, and the difference.

A sweep folder (see :mod:`alrp_lab.sweeps.runner`) holds one run folder per job and
``sweep.json`` (definition, scale, jobs); a table is read from those files alone, never from
W&B. Every table row shows three lines: ours, the paper's number, and ours minus the
paper's. A job run with several seeds (``JOB_ID/seedN``) shows mean ± standard deviation
(sample, ddof 1) over its completed seeds, with ``(n=K)`` where a cell's count differs from
the table's usual one; a failed or missing seed is listed under the table, never counted as
a number. The claims of the definition follow the table with their verdicts
(:mod:`alrp_lab.report.claims`). Units follow the paper: AP and oLRP in % (pycocotools' 0-1
fractions times 100, so the comparison is like for like), rho as is. Four metrics come from
``grad_balance.csv`` (or, in a copy without it, the range the trainer recorded in
results.json): ``grad_ratio_min``, ``grad_ratio_max`` (Figure 4's legend),
``grad_ratio_spread`` (max / min) and ``grad_ratio_log_spread`` (its log10); ``loss_rebound``
(Figure A.7)
and ``loss_relapse`` come from ``metrics.jsonl``. A completed run whose logged
classification loss ended at least halfway back to where it started (rebound of
:data:`~alrp_lab.report.curves.REBOUND_DIVERGED` or more: it broke down and never
recovered) is named under the table, since its number sits in a mean beside runs that
trained; so is one whose window means never came :data:`~alrp_lab.report.curves.MIN_DROP`
below the first (it learnt nothing, and has no rebound to show). A run without
``metrics.jsonl`` cannot be judged, and is not named.

Formats: ``md`` (Markdown), ``csv`` (one line per cell with mean, std and n columns, then one
line per claim, told apart by the ``record`` column; for scripts) and ``tex`` (booktabs
``tabular``s).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alrp_lab.errors import ResultsError, ResultsNotFoundError
from alrp_lab.report.claims import ClaimResult, describe, evaluate_claims
from alrp_lab.report.curves import MIN_DROP, NOTHING_LEARNT, REBOUND_DIVERGED, WINDOWS
from alrp_lab.report.runs import SeedRun, is_percent, job_runs, metric_value
from alrp_lab.report.stats import summarize
from alrp_lab.sweeps.definition import (
    SWEEP_FILE,
    Column,
    Row,
    SweepDefinition,
    available_sweeps,
    default_root,
    load_sweep,
    parse_sweep,
    read_manifest,
    recorded_seeds,
    slugify,
)
from alrp_lab.tracking.results import RESULTS_FILE, find_runs
from alrp_lab.utils.io import atomic_write_text

FORMATS = ("md", "csv", "tex")
GENERIC_METRICS = ("AP", "AP50", "AP75", "AP90", "oLRP", "rho")

PathLike = str | os.PathLike[str]

__all__ = [
    "FORMATS",
    "Cell",
    "TableData",
    "build_table",
    "collect_table",
    "load_sweep_table",
    "recorded_seeds",
    "render_table",
    "sweep_folders",
    "write_tables",
]


def _decimals(metric: str) -> int:
    if is_percent(metric):
        return 1
    return 2 if metric.endswith("rho") else 3


@dataclass
class Cell:
    """One table cell. ``ours`` is the mean over the job's completed seeds in the paper's
    units, ``std`` their sample standard deviation (None below 2), ``n`` how many there are;
    ``status`` is ``completed`` when at least one seed completed, else the runs' (failed,
    running) or ``missing`` when the job has not run."""

    row: str
    column: str
    metric: str
    ours: float | None
    paper: float | None
    status: str
    job: str
    std: float | None = None
    n: int = 0
    seeds: tuple[int, ...] = ()

    @property
    def unit(self) -> str:
        return "%" if is_percent(self.metric) else ""

    @property
    def diff(self) -> float | None:
        if self.ours is None or self.paper is None:
            return None
        return self.ours - self.paper


@dataclass
class TableData:
    """A table before rendering: cells keyed by (row label, column label)."""

    title: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Cell]
    corner: str = ""
    description: str = ""
    scale: str | None = None
    failed: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    broke_down: dict[str, float] = field(default_factory=dict)
    never_learnt: list[str] = field(default_factory=list)
    claims: list[ClaimResult] = field(default_factory=list)
    expected_n: int = 0

    def has_paper(self, row: str) -> bool:
        return any(self.cells[row, c].paper is not None for c in self.columns)

    @property
    def usual_n(self) -> int:
        """The seeds every cell should have: those the sweep ran (``expected_n``), else the
        most common count among cells with a number (0 when none has one)."""
        if self.expected_n:
            return self.expected_n
        counts = Counter(c.n for c in self.cells.values() if c.n)
        return counts.most_common(1)[0][0] if counts else 0


def _status(runs: Sequence[SeedRun]) -> str:
    statuses = {run.status for run in runs}
    for status in ("completed", "running", "failed"):
        if status in statuses:
            return status
    return "missing"


def _fill(
    defn: SweepDefinition,
    job_dir_of: Callable[[Row, Column | None], Path],
    scale: str | None,
    seeds: Sequence[int] | None = None,
) -> TableData:
    columns = {c.label: c for c in defn.columns}
    table = TableData(
        title=defn.title,
        rows=[r.label for r in defn.rows],
        columns=list(defn.table_columns),
        cells={},
        corner=defn.corner,
        description=defn.description,
        scale=scale,
    )
    table.expected_n = len(set(seeds or ()))
    cache: dict[Path, list[SeedRun]] = {}

    def runs_of(row: Row, column: Column | None) -> list[SeedRun]:
        job_dir = job_dir_of(defn.job_row(row), column)
        if job_dir not in cache:
            cache[job_dir] = job_runs(job_dir, seeds)
        return cache[job_dir]

    for row in defn.rows:
        for label in table.columns:
            column = columns.get(label)  # None in a metrics table
            job = defn.job_id(row, column)
            runs = runs_of(row, column)
            metric = defn.cell_metric(row, label)
            done = [(r, metric_value(r, metric)) for r in runs]
            values = [v for _, v in done if v is not None]
            summary = summarize(values)
            for run in runs:
                name = job if run.seed is None else f"{job}/seed{run.seed}"
                if run.status == "failed":
                    table.failed[name] = run.error
                elif run.status != "completed":
                    if name not in table.missing:
                        table.missing.append(name)
                else:  # completed
                    back = run.curve_measure("loss_rebound")
                    if back.value is not None and back.value >= REBOUND_DIVERGED:
                        table.broke_down[name] = back.value
                    elif back.reason == NOTHING_LEARNT and name not in table.never_learnt:
                        table.never_learnt.append(name)
            table.cells[row.label, label] = Cell(
                row.label,
                label,
                metric,
                summary.mean,
                row.paper.get(label),
                _status(runs),
                job,
                std=summary.std,
                n=summary.n,
                seeds=tuple(r.seed for r, v in done if v is not None and r.seed is not None),
            )
    if defn.claims:
        rows = {r.label: r for r in defn.rows}
        table.claims = evaluate_claims(
            defn, lambda cell: runs_of(rows[cell.row], columns.get(cell.column))
        )
    return table


def collect_table(
    defn: SweepDefinition,
    root: PathLike,
    *,
    scale: str | None = None,
    seeds: Sequence[int] | None = None,
) -> TableData:
    """Read the cells of ``defn``'s table from the job folders ``root/JOB_ID`` (one
    ``seedN`` folder per seed; ``seeds`` are the ones expected, so a missing one is
    reported) and evaluate its claims."""
    root = Path(root)
    return _fill(defn, lambda row, column: root / defn.job_id(row, column), scale, seeds)


def _generic(root: Path, runs: list[Path]) -> TableData:
    """A table for any folder of runs (no sweep.json): one row per run, the main metrics."""
    labels = [str(run.relative_to(root)) if run != root else run.name for run in runs]
    raw = {
        "title": f"Runs under {root}",
        "kind": "metrics",
        "metrics": list(GENERIC_METRICS),
        "scales": {"cpu": {}},
        "rows": [
            {"label": label, "id": slugify(label) or f"run{i}"} for i, label in enumerate(labels)
        ],
    }
    defn = parse_sweep(raw, name=root.name)
    by_label = dict(zip(labels, runs, strict=True))
    return _fill(defn, lambda row, column: by_label[row.label], None)


def _fmt(value: float | None, metric: str, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    decimals = _decimals(metric)
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _fmt_mean(cell: Cell, usual_n: int) -> str:
    """``38.7``, ``38.7 ± 0.4`` over seeds, with ``(n=2)`` when the count is unusual."""
    text = _fmt(cell.ours, cell.metric)
    if cell.std is not None:
        text += f" ± {_fmt(cell.std, cell.metric)}"
    if cell.n and usual_n and cell.n != usual_n:
        text += f" (n={cell.n})"
    return text


def _shown_diff(cell: Cell) -> str:
    """The difference of the numbers as printed, so ours 38.75 -> "38.8" against 38.7
    reads +0.1, not the +0.0 that rounding 0.05 - epsilon would print."""
    if cell.diff is None:
        return "-"
    decimals = _decimals(cell.metric)
    return _fmt(round(cell.ours, decimals) - cell.paper, cell.metric, signed=True)


def _ours_text(cell: Cell, usual_n: int) -> str:
    if cell.status == "completed":
        return _fmt_mean(cell, usual_n)
    return {"failed": "failed", "running": "running"}.get(cell.status, "-")


def _lines(table: TableData) -> list[tuple[str, str, list[str]]]:
    """(row label or "", which line, cell texts) for every printed line."""
    out = []
    usual_n = table.usual_n
    for row in table.rows:
        cells = [table.cells[row, c] for c in table.columns]
        out.append((row, "ours", [_ours_text(c, usual_n) for c in cells]))
        if table.has_paper(row):
            out.append(
                (
                    "",
                    "paper",
                    [_fmt(c.paper, c.metric) if c.paper is not None else "-" for c in cells],
                )
            )
            out.append(("", "diff", [_shown_diff(c) for c in cells]))
    return out


def _notes(table: TableData) -> list[str]:
    metrics = {cell.metric for cell in table.cells.values()}
    notes = []
    if any(is_percent(m) for m in metrics):
        notes.append(
            "AP and oLRP in % (ours: pycocotools' fractions x 100); diff = ours - paper; "
            "for oLRP lower is better."
        )
    if table.scale is not None and table.scale != "paper":
        notes.append(
            f"Scale: {table.scale} (built-in data, short schedule): compare trends with the "
            "paper's COCO numbers, not absolute values."
        )
    usual_n = table.usual_n
    if usual_n > 1:
        notes.append(
            f"Ours: mean ± standard deviation over {usual_n} seeds"
            " (n=K where a cell has another count)."
        )
    for job, error in table.failed.items():
        notes.append(f"Failed: {job} ({error})")
    if table.missing:
        notes.append(f"Not finished: {', '.join(table.missing)}")
    if table.broke_down:
        runs = ", ".join(f"{name} ({back:.2f})" for name, back in table.broke_down.items())
        notes.append(
            "Broke down (completed, but the logged classification loss ended at least halfway "
            f"back to its start; rebound in brackets): {runs}"
        )
    if table.never_learnt:
        notes.append(
            "Never learnt (completed, but the logged classification loss, cut into "
            f"{WINDOWS} equal windows, never came {MIN_DROP} below the first window's mean): "
            f"{', '.join(table.never_learnt)}"
        )
    return notes


CLAIM_HEADER = ("claim", "paper says", "test", "ours", "95% CI", "n", "paper", "verdict", "note")
# The claim columns right-aligned in Markdown.
_NUMERIC_CLAIM_COLUMNS = frozenset({"ours", "95% CI", "n", "paper"})


def claim_markdown_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table of claim lines: numbers right-aligned, ``|`` escaped, the verdict
    (each row's last field but one) in bold."""
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if n in _NUMERIC_CLAIM_COLUMNS else "---" for n in header) + "|",
    ]
    for row in rows:
        texts = [t.replace("|", "\\|") for t in row]
        texts[-2] = f"**{texts[-2]}**"
        out.append("| " + " | ".join(texts) + " |")
    return out


def claim_texts(result: ClaimResult) -> list[str]:
    """The printed fields of a claim's line, in :data:`CLAIM_HEADER` order."""
    claim = result.claim
    if claim.test == "diverges":
        ours = interval = "-"
        paper = "diverges"
    else:
        ours = _fmt(result.value, claim.metric, signed=True) if result.value is not None else "-"
        interval = (
            "-"
            if result.low is None
            else f"[{_fmt(result.low, claim.metric, signed=True)}, "
            f"{_fmt(result.high, claim.metric, signed=True)}]"
        )
        paper = _fmt(result.paper, claim.metric, signed=True) if result.paper is not None else "-"
    return [
        claim.name,
        claim.words,
        describe(claim),
        ours,
        interval,
        result.n,
        paper,
        result.verdict,
        result.note or "-",
    ]


def _claims_markdown(table: TableData) -> list[str]:
    if not table.claims:
        return []
    out = [
        "",
        "Claims (Welch t 95% interval over seeds; a spread by bootstrap; "
        "`alrp-lab claims` lists them all):",
        "",
    ]
    return out + claim_markdown_lines(CLAIM_HEADER, [claim_texts(r) for r in table.claims])


def _markdown(table: TableData, heading: str | None = None) -> str:
    header = [table.corner, "", *table.columns]
    out = [heading or f"### {table.title}", ""]
    if table.description:
        out += [table.description, ""]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(["---", "---", *["---:"] * len(table.columns)]) + "|")
    for label, which, texts in _lines(table):
        which = {"diff": "Δ"}.get(which, which)
        out.append("| " + " | ".join([label, which, *texts]) + " |")
    notes = _notes(table)
    if notes:
        out += ["", *notes]
    out += _claims_markdown(table)
    return "\n".join(out) + "\n"


CSV_HEADER = (
    "record",
    "row",
    "column",
    "metric",
    "unit",
    "mean",
    "std",
    "n",
    "paper",
    "diff",
    "status",
    "job",
    "seeds",
    "claim",
    "test",
    "low",
    "high",
    "verdict",
    "note",
)


def _csv(table: TableData) -> str:
    """One ``cell`` record per cell, then one ``claim`` record per claim (its difference in
    ``mean``, interval in ``low``/``high``, the paper's number in ``paper``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.6g}"

    for row in table.rows:
        for column in table.columns:
            c = table.cells[row, column]
            record = {
                "record": "cell",
                "row": c.row,
                "column": c.column,
                "metric": c.metric,
                "unit": c.unit,
                "mean": number(c.ours),
                "std": number(c.std),
                "n": c.n,
                "paper": number(c.paper),
                "diff": number(c.diff),
                "status": c.status,
                "job": c.job,
                "seeds": " ".join(map(str, c.seeds)),
            }
            writer.writerow([record.get(key, "") for key in CSV_HEADER])
    for result in table.claims:
        claim = result.claim
        record = {
            "record": "claim",
            "metric": claim.metric,
            "mean": number(result.value),
            "n": result.n,
            "paper": number(result.paper),
            "claim": claim.name,
            "test": describe(claim),
            "low": number(result.low),
            "high": number(result.high),
            "verdict": result.verdict,
            "note": result.note,
        }
        writer.writerow([record.get(key, "") for key in CSV_HEADER])
    return buffer.getvalue()


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": "$<$",
    ">": "$>$",
}


def _tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def _tex_number(text: str) -> str:
    # A typographic minus; "+" kept so improvements read at a glance.
    return text.replace("-", "$-$", 1) if text.startswith("-") and text != "-" else text


def _latex(table: TableData) -> str:
    spec = "ll" + "r" * len(table.columns)
    header = [_tex_escape(table.corner), "", *map(_tex_escape, table.columns)]
    out = [
        "% Generated by alrp-lab from results files; needs \\usepackage{booktabs}.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_tex_escape(table.title)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for i, (label, which, texts) in enumerate(_lines(table)):
        if label and i > 0:
            out.append(r"\midrule")
        which = {"diff": r"$\Delta$"}.get(which, which)
        cells = [_tex_number(_tex_escape(t)) for t in texts]
        out.append(" & ".join([_tex_escape(label), which, *cells]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if table.claims:
        columns = ("claim", "test", "ours", "95\\% CI", "n", "paper", "verdict")
        out += [
            "",
            r"\medskip",
            r"\begin{tabular}{llrrrrl}",
            r"\toprule",
            " & ".join(columns) + r" \\",
            r"\midrule",
        ]
        for result in table.claims:
            name, _, test, ours, interval, n, paper, verdict, _ = claim_texts(result)
            cells = [
                _tex_escape(name),
                _tex_escape(test),
                _tex_number(_tex_escape(ours)),
                _tex_escape(interval),
                _tex_escape(n),
                _tex_number(_tex_escape(paper)),
                _tex_escape(verdict),
            ]
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
    out.append(r"\end{table}")
    notes = _notes(table)
    out += [f"% {note}" for note in notes]
    out += [f"% claim {r.claim.name}: {r.claim.words} ({r.note})" for r in table.claims if r.note]
    return "\n".join(out) + "\n"


def render_table(table: TableData, fmt: str = "md", *, heading: str | None = None) -> str:
    """``table`` as Markdown, CSV or LaTeX text.

    ``heading`` replaces the Markdown table's own heading line (``### TITLE``), to fit the
    table into a document's outline; it must be a Markdown heading, and only ``md`` has one.
    """
    if fmt not in FORMATS:
        raise ResultsError(f"unknown table format {fmt!r}: use one of {', '.join(FORMATS)}")
    if heading is None:
        return {"md": _markdown, "csv": _csv, "tex": _latex}[fmt](table)
    if fmt != "md" or not re.match(r"#{1,6} \S", heading):
        raise ResultsError(
            f"--heading {heading!r} replaces a Markdown table's heading: use it with "
            "--format md and start it with 1 to 6 # and a space"
        )
    return _markdown(table, heading)


def write_tables(
    defn: SweepDefinition,
    root: PathLike,
    *,
    scale: str | None = None,
    seeds: Sequence[int] | None = None,
) -> dict[str, Path]:
    """Write ``root/NAME.md``, ``.csv`` and ``.tex`` (atomically); returns fmt -> path."""
    root = Path(root)
    if seeds is None:
        seeds = recorded_seeds(root)
    table = collect_table(defn, root, scale=scale, seeds=seeds)
    paths = {}
    for fmt in FORMATS:
        paths[fmt] = root / f"{defn.name}.{fmt}"
        atomic_write_text(paths[fmt], render_table(table, fmt))
    return paths


def load_sweep_table(root: PathLike) -> TableData:
    """The table (and claims) of the sweep folder ``root`` from its ``sweep.json``.

    Raises :class:`ValueError` naming the file when it is missing or damaged."""
    root = Path(root)
    manifest = root / SWEEP_FILE
    saved = read_manifest(root)
    try:
        if saved is None:
            raise ResultsError("not readable JSON")
        defn = parse_sweep(saved["definition"], name=str(saved["name"]), source=manifest)
    except (ValueError, KeyError, TypeError) as err:
        raise ResultsError(
            f"{manifest} is damaged ({err}): delete it and rebuild with "
            "alrp-lab table NAME, or rerun the sweep"
        ) from None
    return collect_table(defn, root, scale=saved.get("scale"), seeds=recorded_seeds(root))


def sweep_folders(paths: Sequence[PathLike]) -> list[Path]:
    """Every sweep folder (one holding ``sweep.json``) at or below ``paths``, sorted.

    Raises :class:`FileNotFoundError` for a path that is not a folder."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise ResultsNotFoundError(f"{path} is not a folder: pass sweep folders or outputs/")
        found.update(p.parent for p in path.rglob(SWEEP_FILE) if p.is_file())
    return sorted(found)


def _load_table(name_or_dir: PathLike, scale: str) -> TableData:
    text = str(name_or_dir)
    path = Path(text).expanduser()
    name: str | None = None
    if path.is_dir():
        root = path
    elif text in available_sweeps():
        name, root = text, default_root(text, scale)
        if not root.is_dir():
            raise ResultsError(
                f"{root} does not exist: run the sweep first (alrp-lab sweep {text}"
                f"{'' if scale == 'cpu' else f' --scale {scale}'})"
            )
    else:
        names = ", ".join(available_sweeps()) or "none"
        raise ResultsError(f"{text} is neither a folder nor a sweep name (one of {names})")
    runs = find_runs(root)
    if not runs:
        raise ResultsError(
            f"{root} holds no {RESULTS_FILE}: run the sweep first (alrp-lab sweep NAME) "
            "or pass the folder that holds its run folders"
        )
    if (root / SWEEP_FILE).is_file():
        return load_sweep_table(root)
    if name is not None:
        return collect_table(load_sweep(name), root, scale=scale)
    return _generic(root, runs)


def build_table(
    name_or_dir: PathLike, fmt: str = "md", *, scale: str = "cpu", heading: str | None = None
) -> str:
    """Rebuild a table from results files alone.

    Args:
        name_or_dir: a sweep folder (its ``sweep.json`` says which table it is), any folder
            of run folders (one row per run, the main metrics), or a sweep name, meaning
            its default folder at ``scale``.
        fmt: ``md``, ``csv`` or ``tex``.
        scale: the scale whose default folder a sweep name means.
        heading: the Markdown heading line to print instead of ``### TITLE``.

    Raises :class:`ValueError` with one line naming the folder and the fix when there is
    nothing to build from.
    """
    if fmt not in FORMATS:
        raise ResultsError(f"unknown table format {fmt!r}: use one of {', '.join(FORMATS)}")
    return render_table(_load_table(name_or_dir, scale), fmt, heading=heading)
