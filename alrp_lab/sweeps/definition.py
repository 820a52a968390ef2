"""Sweep definitions: one YAML file per paper table or figure, loaded and checked here.

A definition names the jobs of a table (Hydra overrides), how their results fill the table,
and the numbers the paper prints in each cell. The format (``sweeps/README.md`` has a worked
example)::

    title: "Table 3: AP with a constant wr instead of self-balance"   # required
    description: "..."          # optional prose, shown under the table
    kind: grid                  # "metrics" or "grid" (below)
    metric: AP                  # grid only: the metric shown in every cell
    metrics: [AP, AP50, oLRP]   # metrics only: one column per metric
    corner: wr                  # optional header of the row-label column
    figure: grad_balance        # optional: also draw Figure 4's plot from the runs
    figure: grad_balance_loss   # or: Figure A.7's, that plot and the loss values beside it
    figure: claim_trend         # or: claims' differences against a factor (needs `trend`)
    figure: loss_curves         # or: each run's logged curves (loss_cls, eloc_over_one)
    trend:                      # claim_trend only
      x: [1, 2, 4, 8]           # one value per claim of every series (null: none at that x)
      xlabel: "schedule length (x 2100 iterations)"
      series:
        - {label: "aLRP - AP Loss (AP)", claims: [c1, c2, c3, c4]}
    base: [loss=alrp, assigner=max_iou]     # overrides of every job
    scales:                     # at least `cpu`; `extra_overrides` come after these
      cpu:
        overrides: [train.epochs=8]
      paper:
        overrides: [data=coco, backbone=resnet50, train.epochs=100]
        requires: [data.root, backbone.weights]   # keys the user must add on the command line
    rows:
      - label: IoU              # shown in the table; the job id is its slug unless `id` is set
        id: iou                 # optional: [a-z0-9][a-z0-9_.-]*
        overrides: [box_error=iou]
        scale_overrides:        # optional: added to the row's overrides at that scale only
          paper: [train.lr=0.002]
        paper: {"1": 36.9, SB: 38.7}   # grid: keyed by column label; metrics: by metric
        same_job_as: IoU        # metrics only: read another row's job (no job of its own)
        metric_prefix: upper_   # metrics only: read metric "upper_AP" for column "AP"
    columns:                    # grid only: one job per (row, column)
      - label: "1"
        id: wr1
        overrides: [loss.self_balance=false, loss.wr=1]
    seeds: 3                    # optional: seeds 0..k-1 per job (default 1; --seeds wins)
    claims:                     # optional: the paper's claims this table tests (below)
      - name: sb-matches-best-wr
        paper: "SB is as good as the best constant wr"
        metric: AP
        a: {row: IoU, column: SB}
        b: {row: IoU, columns: ["1", "2"]}   # several cells: the best of them
        expect: ">"             # a - b > margin ("<": a - b < margin)
        margin: -0.5

A claim's ``test`` is ``difference`` (default: ``a - b`` against ``margin``; ``b`` may be
``{value: 1.0}``, a constant), ``spread`` (``max - min`` of the means of ``a``'s cells
against ``margin``) or ``diverges`` (every seed of ``a``'s job ends in a non-finite loss
or with its classification loss at least halfway back up to its start;
:mod:`alrp_lab.report.curves`).
A side names cells by ``row``/``rows`` and, in a grid, ``column``/``columns``; in a metrics
table the column is the claim's ``metric``. ``paper_diff`` gives the paper's own number
where the rows' ``paper`` values do not imply it. :mod:`alrp_lab.report.claims` evaluates
them.

Kinds: ``metrics`` makes one job per row (rows with ``same_job_as`` share another row's
job) and shows the listed metrics; ``grid`` makes one job per (row, column) and shows one
metric. A job's overrides are, in order: ``base``, the scale's, the row's (then its
``scale_overrides`` for the scale), the column's, then the command line's: later ones win.
Paper numbers are in the paper's units (AP and oLRP in %, rho as is).

Job ids are stable and filesystem-safe: the row id for ``metrics``, ``ROW__COLUMN`` for
``grid``; a job's run folder is ``SWEEP_ROOT/JOB_ID``.

Nothing here imports torch or Hydra: the report reads definitions too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alrp_lab.errors import SweepError, SweepNotFoundError
from alrp_lab.resources import conf_dir, sweeps_dir
from alrp_lab.utils.overrides import override_key

SWEEPS_DIR = sweeps_dir()
CONF_DIR = conf_dir()

SWEEP_FILE = "sweep.json"
OUTPUT_ROOT = Path("outputs") / "sweeps"

KINDS = ("metrics", "grid")
FIGURES = ("grad_balance", "grad_balance_loss", "claim_trend", "loss_curves")

_TOP_KEYS = {
    "title",
    "description",
    "kind",
    "metric",
    "metrics",
    "corner",
    "figure",
    "trend",
    "base",
    "scales",
    "rows",
    "columns",
    "seeds",
    "claims",
}
_CLAIM_KEYS = {"name", "paper", "test", "metric", "a", "b", "expect", "margin", "paper_diff"}
_SIDE_KEYS = {"row", "rows", "column", "columns", "value"}
CLAIM_TESTS = ("difference", "spread", "diverges")
EXPECTS = (">", "<")
_SCALE_KEYS = {"overrides", "requires"}
_ROW_KEYS = {
    "label",
    "id",
    "overrides",
    "scale_overrides",
    "paper",
    "same_job_as",
    "metric_prefix",
}
_COLUMN_KEYS = {"label", "id", "overrides"}
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

__all__ = [
    "CLAIM_TESTS",
    "CONF_DIR",
    "CellRef",
    "Claim",
    "Side",
    "OUTPUT_ROOT",
    "SWEEPS_DIR",
    "SWEEP_FILE",
    "Column",
    "Row",
    "Scale",
    "SweepDefinition",
    "available_sweeps",
    "default_root",
    "load_sweep",
    "parse_sweep",
    "read_manifest",
    "recorded_seeds",
    "slugify",
]


def slugify(label: str) -> str:
    """A filesystem-safe id for ``label``: lower case, runs of other characters as ``-``.

    ``"aLRP (GIoU) + SB + ATSS"`` becomes ``"alrp-giou-sb-atss"``.
    """
    slug = re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-.")
    return slug


@dataclass(frozen=True)
class Scale:
    """One scale of a sweep: overrides added to every job, and keys the user must supply."""

    overrides: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class Column:
    """A job column of a ``grid`` table."""

    label: str
    id: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    """A table row: its job's overrides (or the row whose job it reads) and the paper's
    numbers, keyed by column label (grid) or metric (metrics)."""

    label: str
    id: str
    overrides: tuple[str, ...] = ()
    scale_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    paper: Mapping[str, float | None] = field(default_factory=dict)
    same_job_as: str | None = None
    metric_prefix: str = ""


@dataclass(frozen=True)
class CellRef:
    """A table cell a claim reads: a row label and, in a grid, a column label."""

    row: str
    column: str | None = None


@dataclass(frozen=True)
class Side:
    """One side of a claim: cells (one cell, or a set whose best or spread counts) or a
    constant ``value``."""

    cells: tuple[CellRef, ...] = ()
    value: float | None = None

    @property
    def is_constant(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class Claim:
    """A claim of the paper that a table tests, as data (format in the module docstring).

    ``test`` is ``difference`` (``a - b`` against ``margin`` in the direction ``expect``),
    ``spread`` (``max - min`` of ``a``'s cell means against ``margin``) or ``diverges``
    (every run of ``a`` ends in a non-finite loss or with its classification loss at least
    halfway back up to its start). ``words`` is the paper's claim in short;
    ``paper_diff`` the paper's own number when the rows' paper values do not give it.
    """

    name: str
    words: str
    test: str
    metric: str
    a: Side
    b: Side | None = None
    expect: str = ">"
    margin: float = 0.0
    paper_diff: float | None = None


@dataclass(frozen=True)
class TrendSeries:
    """One line of a claim-trend figure: ``claims`` (names), one per x value; None where the
    series has no claim at that x."""

    label: str
    claims: tuple[str | None, ...]


@dataclass(frozen=True)
class Trend:
    """The claim-trend figure: each series' claims plotted against ``x``."""

    x: tuple[float, ...]
    xlabel: str
    series: tuple[TrendSeries, ...]


@dataclass(frozen=True)
class SweepDefinition:
    """A loaded, checked sweep definition (see the module docstring for the format).

    ``raw`` is the mapping it was parsed from: a sweep folder keeps a copy, so its tables can
    be rebuilt even after the YAML file changes.
    """

    name: str
    title: str
    kind: str
    rows: tuple[Row, ...]
    scales: Mapping[str, Scale]
    columns: tuple[Column, ...] = ()
    metrics: tuple[str, ...] = ()
    base: tuple[str, ...] = ()
    description: str = ""
    corner: str = ""
    figure: str | None = None
    trend: Trend | None = None
    seeds: int = 1
    claims: tuple[Claim, ...] = ()
    source: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def table_columns(self) -> tuple[str, ...]:
        """The labels of the table's value columns: metrics, or the grid's columns."""
        if self.kind == "grid":
            return tuple(c.label for c in self.columns)
        return self.metrics

    def job_row(self, row: Row) -> Row:
        """The row whose job fills ``row`` (itself unless it has ``same_job_as``)."""
        if row.same_job_as is None:
            return row
        return next(r for r in self.rows if r.label == row.same_job_as)

    def job_id(self, row: Row, column: Column | None = None) -> str:
        """The id (and run-folder name) of the job behind ``row`` (and grid ``column``)."""
        row = self.job_row(row)
        return row.id if column is None else f"{row.id}__{column.id}"

    def cell_metric(self, row: Row, column_label: str) -> str:
        """The results.json metric key shown in (row, column)."""
        if self.kind == "grid":
            return self.metrics[0]
        return row.metric_prefix + column_label


def default_root(name: str, scale: str = "cpu") -> Path:
    """Where a sweep runs unless told otherwise: ``outputs/sweeps/NAME`` for the cpu scale,
    ``outputs/sweeps/NAME-SCALE`` for the others (relative to the working directory)."""
    return OUTPUT_ROOT / (name if scale == "cpu" else f"{name}-{scale}")


def read_manifest(root: Path) -> dict[str, Any] | None:
    """``root/sweep.json`` as a mapping, None when absent or unreadable."""
    import json

    try:
        saved = json.loads((Path(root) / SWEEP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def recorded_seeds(root: Path, scale: str | None = None) -> list[int] | None:
    """The seeds ``root/sweep.json`` says the sweep's jobs should have; None when it says
    none (or, given ``scale``, was written for another scale)."""
    saved = read_manifest(root)
    if saved is None or (scale is not None and saved.get("scale") != scale):
        return None
    seeds = saved.get("seeds")
    if not isinstance(seeds, list):
        return None
    return [s for s in seeds if isinstance(s, int) and not isinstance(s, bool) and s >= 0]


def available_sweeps(folder: Path = SWEEPS_DIR) -> list[str]:
    """Names of the definitions in ``folder`` (``NAME.yaml``), sorted."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def load_sweep(name_or_path: str | Path) -> SweepDefinition:
    """Load a definition by name (``sweeps/NAME.yaml`` in the repository) or path.

    Raises :class:`ValueError` for an unknown name (listing the available ones) or a bad
    definition (naming the file and the key), :class:`FileNotFoundError` for a missing path.
    """
    text = str(name_or_path)
    looks_like_path = text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise SweepNotFoundError(f"sweep definition {path} does not exist: check the path")
    else:
        path = SWEEPS_DIR / f"{text}.yaml"
        if not path.is_file():
            names = ", ".join(available_sweeps()) or "none"
            raise SweepError(f"unknown sweep {text!r}: choose one of {names}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SweepError(f"{path} is not valid YAML: {err}") from None
    return parse_sweep(raw, name=path.stem, source=path)


class _Checker:
    """Raises one-line errors that name the file and the offending entry."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, message: str) -> None:
        raise SweepError(f"{self.where}: {message}")

    def mapping(self, value: Any, what: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(f"{what} must be a mapping, got {type(value).__name__}")
        unknown = sorted(set(map(str, value)) - allowed)
        if unknown:
            keys = ", ".join(sorted(allowed))
            self.fail(f"unknown key {unknown[0]!r} in {what}; allowed: {keys}")
        return value

    def text(self, value: Any, what: str, *, required: bool = True) -> str:
        if value in (None, "") and not required:
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
            self.fail(f"{what} must be a non-empty string")
        return str(value)

    def strings(self, value: Any, what: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(f"{what} must be a list of strings")
        return tuple(value)

    def overrides(self, value: Any, what: str) -> tuple[str, ...]:
        items = self.strings(value, what)
        for item in items:
            if "=" not in item or item.startswith("-"):
                self.fail(f"{what}: {item!r} is not a Hydra override (key=value)")
            key = override_key(item)
            # A sweep file travels between people: it may choose experiments, never make
            # Hydra run code (callbacks, launchers, _target_ of any kind).
            if key == "hydra" or key.startswith(("hydra.", "hydra/")) or "_target_" in key:
                self.fail(
                    f"{what}: {item!r} sets {key}; a sweep file may not set hydra.* or "
                    "_target_ keys (give launcher settings on the command line)"
                )
        return items

    def keys(self, value: Any, what: str) -> tuple[str, ...]:
        items = self.strings(value, what)
        for item in items:
            if not _KEY.match(item):
                self.fail(f"{what}: {item!r} is not a dotted config key such as data.root")
        return items

    def ident(self, value: Any, label: str, what: str) -> str:
        ident = slugify(label) if value is None else self.text(value, f"{what}.id")
        if not _ID.match(ident):
            self.fail(f"{what}: id {ident!r} is not filesystem-safe; set id: [a-z0-9_.-]")
        return ident


def _paper_numbers(check: _Checker, value: Any, what: str, allowed: tuple[str, ...]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        check.fail(f"{what}.paper must be a mapping of column to number")
    out: dict[str, float | None] = {}
    for key, number in value.items():
        key = str(key)
        if key not in allowed:
            check.fail(f"{what}.paper has {key!r}, which is not a column ({', '.join(allowed)})")
        if number is not None and (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or not math.isfinite(number)
        ):
            check.fail(f"{what}.paper[{key!r}] must be a number or null, got {number!r}")
        out[key] = None if number is None else float(number)
    return out


def _scale_overrides(check: _Checker, value: Any, what: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        check.fail(f"{what}.scale_overrides must map a scale name to a list of overrides")
    return {str(k): check.overrides(v, f"{what}.scale_overrides.{k}") for k, v in value.items()}


def parse_sweep(raw: Any, *, name: str, source: Path | None = None) -> SweepDefinition:
    """Check a definition's mapping (as read from YAML) and build a :class:`SweepDefinition`.

    Raises :class:`ValueError` naming ``source`` (or ``name``) and the offending key.
    """
    check = _Checker(str(source) if source is not None else f"sweep {name}")
    top = check.mapping(raw, "the definition", _TOP_KEYS)
    title = check.text(top.get("title"), "title")
    kind = top.get("kind")
    if kind not in KINDS:
        check.fail(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    figure = top.get("figure")
    if figure is not None and figure not in FIGURES:
        check.fail(f"figure must be one of {', '.join(FIGURES)}, got {figure!r}")

    if kind == "grid":
        if "metrics" in top:
            check.fail("a grid shows one metric: use `metric: AP`, not `metrics`")
        metrics = (check.text(top.get("metric"), "metric"),)
        raw_columns = top.get("columns")
        if not isinstance(raw_columns, list) or not raw_columns:
            check.fail("a grid needs a non-empty list `columns`")
        columns = []
        for i, col in enumerate(raw_columns):
            what = f"columns[{i}]"
            col = check.mapping(col, what, _COLUMN_KEYS)
            label = check.text(col.get("label"), f"{what}.label")
            columns.append(
                Column(
                    label=label,
                    id=check.ident(col.get("id"), label, what),
                    overrides=check.overrides(col.get("overrides"), f"{what}.overrides"),
                )
            )
        _unique(check, [c.label for c in columns], "column label")
        _unique(check, [c.id for c in columns], "column id")
        table_columns = tuple(c.label for c in columns)
    else:
        if "columns" in top or "metric" in top:
            check.fail("a metrics table lists `metrics`; `columns`/`metric` are for kind: grid")
        metrics = check.strings(top.get("metrics"), "metrics")
        if not metrics:
            check.fail("a metrics table needs a non-empty list `metrics`")
        _unique(check, list(metrics), "metric")
        columns = []
        table_columns = metrics

    raw_rows = top.get("rows")
    if not isinstance(raw_rows, list) or not raw_rows:
        check.fail("`rows` must be a non-empty list")
    rows: list[Row] = []
    for i, row in enumerate(raw_rows):
        what = f"rows[{i}]"
        row = check.mapping(row, what, _ROW_KEYS)
        label = check.text(row.get("label"), f"{what}.label")
        same = row.get("same_job_as")
        if same is not None:
            if kind == "grid":
                check.fail(f"{what}: same_job_as is only for kind: metrics")
            if row.get("overrides") or row.get("scale_overrides"):
                check.fail(f"{what}: a row with same_job_as runs no job: drop its overrides")
            target = next((r for r in rows if r.label == str(same)), None)
            if target is None or target.same_job_as is not None:
                check.fail(f"{what}: same_job_as must name an earlier row with its own job")
        prefix = row.get("metric_prefix") or ""
        if prefix and kind == "grid":
            check.fail(f"{what}: metric_prefix is only for kind: metrics")
        rows.append(
            Row(
                label=label,
                id=check.ident(row.get("id"), label, what),
                overrides=check.overrides(row.get("overrides"), f"{what}.overrides"),
                scale_overrides=_scale_overrides(check, row.get("scale_overrides"), what),
                paper=_paper_numbers(check, row.get("paper"), what, table_columns),
                same_job_as=None if same is None else str(same),
                metric_prefix=check.text(prefix, f"{what}.metric_prefix", required=False),
            )
        )
    _unique(check, [r.label for r in rows], "row label")
    _unique(check, [r.id for r in rows], "row id")

    for row in rows:
        for scale_name in row.scale_overrides:
            if scale_name not in (top.get("scales") or {}):
                check.fail(f"row {row.label!r}: scale_overrides names unknown scale {scale_name!r}")
    raw_scales = top.get("scales")
    if not isinstance(raw_scales, Mapping) or "cpu" not in raw_scales:
        check.fail("`scales` must be a mapping with at least `cpu` (and usually `paper`)")
    scales: dict[str, Scale] = {}
    for scale_name, scale in raw_scales.items():
        what = f"scales.{scale_name}"
        if not _ID.match(str(scale_name)):
            check.fail(f"scale name {scale_name!r} must match [a-z0-9_.-]")
        scale = check.mapping(scale or {}, what, _SCALE_KEYS)
        scales[str(scale_name)] = Scale(
            overrides=check.overrides(scale.get("overrides"), f"{what}.overrides"),
            requires=check.keys(scale.get("requires"), f"{what}.requires"),
        )

    seeds = top.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        check.fail(f"seeds must be a whole number >= 1, got {seeds!r}")
    claims = _claims(check, top.get("claims"), kind, rows, columns)
    trend = _trend(check, top.get("trend"), figure, claims)

    return SweepDefinition(
        name=name,
        title=title,
        kind=kind,
        rows=tuple(rows),
        scales=scales,
        columns=tuple(columns),
        metrics=metrics,
        base=check.overrides(top.get("base"), "base"),
        description=check.text(top.get("description"), "description", required=False).strip(),
        corner=check.text(top.get("corner"), "corner", required=False),
        figure=figure,
        trend=trend,
        seeds=seeds,
        claims=claims,
        source=source,
        raw=dict(top),
    )


def _trend(
    check: _Checker, raw: Any, figure: str | None, claims: tuple[Claim, ...]
) -> Trend | None:
    if figure != "claim_trend":
        if raw is not None:
            check.fail("`trend` is for figure: claim_trend")
        return None
    if raw is None:
        check.fail("figure: claim_trend needs a `trend` (x, xlabel, series)")
    top = check.mapping(raw, "trend", {"x", "xlabel", "series"})
    xs = top.get("x")
    if (
        not isinstance(xs, list)
        or not xs
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in xs)
    ):
        check.fail("trend.x must be a non-empty list of numbers")
    names = {c.name for c in claims}
    series = []
    raw_series = top.get("series")
    if not isinstance(raw_series, list) or not raw_series:
        check.fail("trend.series must be a non-empty list")
    for i, item in enumerate(raw_series):
        entry = check.mapping(item, f"trend.series[{i}]", {"label", "claims"})
        label = check.text(entry.get("label"), f"trend.series[{i}].label")
        listed = entry.get("claims")
        if not isinstance(listed, list) or len(listed) != len(xs):
            check.fail(f"trend.series[{i}].claims must list one claim per x value ({len(xs)})")
        unknown = [str(n) for n in listed if n is not None and n not in names]
        if unknown:
            check.fail(f"trend.series[{i}] names unknown claims: {', '.join(unknown)}")
        if all(n is None for n in listed):
            check.fail(f"trend.series[{i}].claims must name at least one claim")
        series.append(TrendSeries(label, tuple(None if n is None else str(n) for n in listed)))
    xlabel = check.text(top.get("xlabel"), "trend.xlabel", required=False)
    return Trend(tuple(float(v) for v in xs), xlabel, tuple(series))


def _unique(check: _Checker, values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            check.fail(f"duplicate {what} {value!r}: each must be unique")
        seen.add(value)


def _number(check: _Checker, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        check.fail(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _labels(check: _Checker, side: Mapping[str, Any], one: str, many: str, what: str) -> list:
    if one in side and many in side:
        check.fail(f"{what}: give {one} or {many}, not both")
    if many in side:
        values = side[many]
        if not isinstance(values, list) or not values:
            check.fail(f"{what}.{many} must be a non-empty list of labels")
        return [check.text(v, f"{what}.{many}[]") for v in values]
    if one in side:
        return [check.text(side[one], f"{what}.{one}")]
    return []


def _known(check: _Checker, labels: list[str], known: set[str], what: str, noun: str) -> None:
    for label in labels:
        if label not in known:
            check.fail(f"{what}: no {noun} {label!r} ({noun}s: {', '.join(sorted(known))})")


def _side(
    check: _Checker, value: Any, what: str, kind: str, rows: list[Row], columns: list[Column]
) -> Side:
    side = check.mapping(value, what, _SIDE_KEYS)
    if "value" in side:
        if len(side) > 1:
            check.fail(f"{what}: a constant side has `value` alone")
        return Side(value=_number(check, side["value"], f"{what}.value"))
    row_labels = _labels(check, side, "row", "rows", what)
    if not row_labels:
        check.fail(f"{what} needs row (or rows), or value for a constant")
    _known(check, row_labels, {r.label for r in rows}, what, "row")
    column_labels = _labels(check, side, "column", "columns", what)
    if kind == "grid":
        if not column_labels:
            check.fail(f"{what}: a grid cell needs column (or columns)")
        _known(check, column_labels, {c.label for c in columns}, what, "column")
    elif column_labels:
        check.fail(f"{what}: a metrics table's column is the claim's metric: drop column(s)")
    cells = tuple(CellRef(r, c) for r in row_labels for c in (column_labels or [None]))
    return Side(cells=cells)


def _claims(
    check: _Checker, value: Any, kind: str, rows: list[Row], columns: list[Column]
) -> tuple[Claim, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        check.fail("claims must be a list of mappings")
    claims = []
    for i, raw in enumerate(value):
        what = f"claims[{i}]"
        raw = check.mapping(raw, what, _CLAIM_KEYS)
        name = check.text(raw.get("name"), f"{what}.name")
        if not _ID.match(name):
            check.fail(f"{what}: name {name!r} must match [a-z0-9][a-z0-9_.-]*")
        what = f"claim {name}"
        test = raw.get("test", "difference")
        if test not in CLAIM_TESTS:
            check.fail(f"{what}: test must be one of {', '.join(CLAIM_TESTS)}, got {test!r}")
        expect = raw.get("expect", ">")
        if expect not in EXPECTS:
            check.fail(f"{what}: expect must be '>' or '<', got {expect!r}")
        if "a" not in raw:
            check.fail(f"{what} needs side a")
        a = _side(check, raw["a"], f"{what}.a", kind, rows, columns)
        b = None
        if test == "difference":
            if "b" not in raw:
                check.fail(f"{what}: a difference needs side b (cells or {{value: N}})")
            b = _side(check, raw["b"], f"{what}.b", kind, rows, columns)
            if a.is_constant:
                check.fail(f"{what}: side a must name cells; put the constant in b")
        elif "b" in raw:
            check.fail(f"{what}: a {test} claim has side a only")
        if test == "spread" and len(a.cells) < 2:
            check.fail(f"{what}: a spread needs at least two cells in a")
        if test == "diverges" and (a.is_constant or len(a.cells) != 1):
            check.fail(f"{what}: diverges names one cell (one job) in a")
        claims.append(
            Claim(
                name=name,
                words=check.text(raw.get("paper"), f"{what}.paper"),
                test=test,
                metric=check.text(raw.get("metric", "AP"), f"{what}.metric"),
                a=a,
                b=b,
                expect=expect,
                margin=_number(check, raw.get("margin", 0.0), f"{what}.margin"),
                paper_diff=(
                    None
                    if raw.get("paper_diff") is None
                    else _number(check, raw["paper_diff"], f"{what}.paper_diff")
                ),
            )
        )
    _unique(check, [c.name for c in claims], "claim name")
    return tuple(claims)
