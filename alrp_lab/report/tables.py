"""Paper tables rebuilt from results files: ours beside the paper's, and the difference.

A sweep folder (see :mod:`alrp_lab.sweeps.runner`) holds one run folder per job and
``sweep.json`` (definition, scale, jobs); a table is read from those files alone, never from
W&B. Every table row shows three lines: ours, the paper's number, and ours minus the
paper's. Units follow the paper: AP and oLRP in % (pycocotools' 0-1 fractions times 100, so
the comparison is like for like), rho as is. Two metrics come from ``grad_balance.csv``
rather than results.json: ``grad_ratio_min`` and ``grad_ratio_max`` (Figure 4's legend).

Formats: ``md`` (Markdown), ``csv`` (one line per cell, for scripts) and ``tex`` (a
booktabs ``tabular``).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alrp_lab.report.plots import read_grad_balance
from alrp_lab.sweeps.definition import (
    SWEEP_FILE,
    Column,
    Row,
    SweepDefinition,
    available_sweeps,
    default_root,
    load_sweep,
    parse_sweep,
    slugify,
)
from alrp_lab.tracking.results import RESULTS_FILE, find_runs, read_results
from alrp_lab.utils.io import atomic_write_text

FORMATS = ("md", "csv", "tex")
GENERIC_METRICS = ("AP", "AP50", "AP75", "AP90", "oLRP", "rho")
DERIVED = ("grad_ratio_min", "grad_ratio_max")
_BOUND_PREFIXES = ("upper_", "lower_")

PathLike = str | os.PathLike[str]

__all__ = [
    "FORMATS",
    "Cell",
    "TableData",
    "build_table",
    "collect_table",
    "render_table",
    "write_tables",
]


def is_percent(metric: str) -> bool:
    """AP-like and oLRP-like metrics are fractions in results.json and % in the paper."""
    for prefix in _BOUND_PREFIXES:
        metric = metric.removeprefix(prefix)
    return metric.startswith(("AP", "oLRP"))


def _decimals(metric: str) -> int:
    if is_percent(metric):
        return 1
    return 2 if metric.endswith("rho") else 3


@dataclass
class Cell:
    """One table cell. ``ours`` is in the paper's units; ``status`` is the run's
    (completed, failed, running) or ``missing`` when the job has not run."""

    row: str
    column: str
    metric: str
    ours: float | None
    paper: float | None
    status: str
    job: str

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

    def has_paper(self, row: str) -> bool:
        return any(self.cells[row, c].paper is not None for c in self.columns)


def _metric(results: dict[str, Any], metric: str, run_dir: Path) -> float | None:
    """``metric`` of a run in the paper's units; None when undefined (NaN is stored null)."""
    if metric in DERIVED:
        try:
            ratios = read_grad_balance(run_dir).ratios
        except FileNotFoundError:
            return None
        if not ratios:
            return None
        return min(ratios) if metric == "grad_ratio_min" else max(ratios)
    value = (results.get("metrics") or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) * (100.0 if is_percent(metric) else 1.0)


def _read(run_dir: Path) -> dict[str, Any] | None:
    try:
        return read_results(run_dir)
    except FileNotFoundError:
        return None


def _fill(
    defn: SweepDefinition, run_dir_of: Callable[[Row, Column | None], Path], scale: str | None
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
    for row in defn.rows:
        for label in table.columns:
            column = columns.get(label)  # None in a metrics table
            job = defn.job_id(row, column)
            run_dir = run_dir_of(defn.job_row(row), column)
            results = _read(run_dir)
            status = "missing" if results is None else str(results["status"])
            metric = defn.cell_metric(row, label)
            ours = _metric(results, metric, run_dir) if status == "completed" else None
            if status == "failed":
                table.failed[job] = str(results.get("error") or "no error recorded")
            elif status != "completed" and job not in table.missing:
                table.missing.append(job)
            table.cells[row.label, label] = Cell(
                row.label, label, metric, ours, row.paper.get(label), status, job
            )
    return table


def collect_table(defn: SweepDefinition, root: PathLike, *, scale: str | None = None) -> TableData:
    """Read the cells of ``defn``'s table from the run folders ``root/JOB_ID``."""
    root = Path(root)
    return _fill(defn, lambda row, column: root / defn.job_id(row, column), scale)


def _generic(root: Path, runs: list[Path]) -> TableData:
    """A table for any folder of runs (no sweep.json): one row per run, the main metrics."""
    labels = [str(run.relative_to(root)) if run != root else run.name for run in runs]
    raw = {
        "title": f"Runs under {root}",
        "kind": "metrics",
        "metrics": list(GENERIC_METRICS),
        "scales": {"cpu": {}},
        "rows": [
            {"label": label, "id": slugify(label) or f"run{i}"}
            for i, label in enumerate(labels)
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


def _shown_diff(cell: Cell) -> str:
    """The difference of the numbers as printed, so ours 38.75 -> "38.8" against 38.7
    reads +0.1, not the +0.0 that rounding 0.05 - epsilon would print."""
    if cell.diff is None:
        return "-"
    decimals = _decimals(cell.metric)
    return _fmt(round(cell.ours, decimals) - cell.paper, cell.metric, signed=True)


def _ours_text(cell: Cell) -> str:
    if cell.status == "completed":
        return _fmt(cell.ours, cell.metric)
    return {"failed": "failed", "running": "running"}.get(cell.status, "-")


def _lines(table: TableData) -> list[tuple[str, str, list[str]]]:
    """(row label or "", which line, cell texts) for every printed line."""
    out = []
    for row in table.rows:
        cells = [table.cells[row, c] for c in table.columns]
        out.append((row, "ours", [_ours_text(c) for c in cells]))
        if table.has_paper(row):
            out.append(("", "paper", [_fmt(c.paper, c.metric) if c.paper is not None else "-"
                                      for c in cells]))
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
    for job, error in table.failed.items():
        notes.append(f"Failed: {job} ({error})")
    if table.missing:
        notes.append(f"Not finished: {', '.join(table.missing)}")
    return notes


def _markdown(table: TableData) -> str:
    header = [table.corner, "", *table.columns]
    out = [f"### {table.title}", ""]
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
    return "\n".join(out) + "\n"


def _csv(table: TableData) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "column", "metric", "unit", "ours", "paper", "diff", "status", "job"])

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.6g}"

    for row in table.rows:
        for column in table.columns:
            c = table.cells[row, column]
            writer.writerow([c.row, c.column, c.metric, c.unit, number(c.ours), number(c.paper),
                             number(c.diff), c.status, c.job])
    return buffer.getvalue()


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
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
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    notes = _notes(table)
    out += [f"% {note}" for note in notes]
    return "\n".join(out) + "\n"


def render_table(table: TableData, fmt: str = "md") -> str:
    """``table`` as Markdown, CSV or LaTeX text."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}: use one of {', '.join(FORMATS)}")
    return {"md": _markdown, "csv": _csv, "tex": _latex}[fmt](table)


def write_tables(
    defn: SweepDefinition, root: PathLike, *, scale: str | None = None
) -> dict[str, Path]:
    """Write ``root/NAME.md``, ``.csv`` and ``.tex`` (atomically); returns fmt -> path."""
    root = Path(root)
    table = collect_table(defn, root, scale=scale)
    paths = {}
    for fmt in FORMATS:
        paths[fmt] = root / f"{defn.name}.{fmt}"
        atomic_write_text(paths[fmt], render_table(table, fmt))
    return paths


def _load_table(name_or_dir: PathLike, scale: str) -> TableData:
    text = str(name_or_dir)
    path = Path(text).expanduser()
    name: str | None = None
    if path.is_dir():
        root = path
    elif text in available_sweeps():
        name, root = text, default_root(text, scale)
        if not root.is_dir():
            raise ValueError(
                f"{root} does not exist: run the sweep first (alrp-lab sweep {text}"
                f"{'' if scale == 'cpu' else f' --scale {scale}'})"
            )
    else:
        names = ", ".join(available_sweeps()) or "none"
        raise ValueError(f"{text} is neither a folder nor a sweep name (one of {names})")
    runs = find_runs(root)
    if not runs:
        raise ValueError(
            f"{root} holds no {RESULTS_FILE}: run the sweep first (alrp-lab sweep NAME) "
            "or pass the folder that holds its run folders"
        )
    manifest = root / SWEEP_FILE
    if manifest.is_file():
        import json

        try:
            saved = json.loads(manifest.read_text(encoding="utf-8"))
            defn = parse_sweep(saved["definition"], name=str(saved["name"]), source=manifest)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{manifest} is damaged ({err}): delete it and rebuild with "
                "alrp-lab table NAME, or rerun the sweep"
            ) from None
        return collect_table(defn, root, scale=saved.get("scale"))
    if name is not None:
        return collect_table(load_sweep(name), root, scale=scale)
    return _generic(root, runs)


def build_table(name_or_dir: PathLike, fmt: str = "md", *, scale: str = "cpu") -> str:
    """Rebuild a table from results files alone.

    Args:
        name_or_dir: a sweep folder (its ``sweep.json`` says which table it is), any folder
            of run folders (one row per run, the main metrics), or a sweep name, meaning
            its default folder at ``scale``.
        fmt: ``md``, ``csv`` or ``tex``.
        scale: the scale whose default folder a sweep name means.

    Raises :class:`ValueError` with one line naming the folder and the fix when there is
    nothing to build from.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}: use one of {', '.join(FORMATS)}")
    return render_table(_load_table(name_or_dir, scale), fmt)
