"""The runs behind one table job: one folder per seed, read from results files alone.

A sweep writes job ``JOB_ID`` at seed N into ``ROOT/JOB_ID/seedN``. A job folder that holds
a ``results.json`` itself is one run (a folder of runs made by hand, or a sweep from before
seeds). ``seeds`` (from ``sweep.json``) says which seeds a job should have, so a seed that
never finished is reported as missing rather than silently dropped.

Metrics are returned in the paper's units: AP-like and oLRP-like metrics are pycocotools'
0-1 fractions in results.json and % in the paper. ``grad_ratio_min``, ``grad_ratio_max``,
``grad_ratio_spread`` (max / min) and ``grad_ratio_log_spread`` (log10 of the spread: the
orders of magnitude the ratio crosses, the scale on which seeds' spreads of 1e4 and 5e4 are
averaged and compared) come from the run's ``grad_balance.csv`` (Figure 4), or
where a copy kept only results.json, from the range the trainer recorded there
(``extra.grad_balance``), and
``loss_rebound`` (how far the classification loss came back up by the end, Figure A.7) and
``loss_relapse`` (how far it came back up at any point) from its ``metrics.jsonl``
(:mod:`alrp_lab.report.curves`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from alrp_lab.report.curves import Logged, Rebound, measure_logged, read_logged, rebound, relapse
from alrp_lab.report.plots import read_grad_balance
from alrp_lab.report.stats import finite_number
from alrp_lab.tracking.results import RESULTS_FILE, read_results

GRAD_RATIOS = ("grad_ratio_min", "grad_ratio_max", "grad_ratio_spread", "grad_ratio_log_spread")
# The curve metrics: each a measure of the logged classification loss (report.curves).
CURVE_MEASURES = {"loss_rebound": rebound, "loss_relapse": relapse}
DERIVED = (*GRAD_RATIOS, *CURVE_MEASURES)
LOWER_IS_BETTER = ("oLRP",)
_BOUND_PREFIXES = ("upper_", "lower_")
_SEED_DIR = re.compile(r"^seed(\d+)$")
# The engine records a divergence as a failure whose error names this exception.
DIVERGED_ERROR = "NonFiniteLossError"

__all__ = [
    "DERIVED",
    "SeedRun",
    "is_percent",
    "job_runs",
    "lower_is_better",
    "metric_value",
]


def _base(metric: str) -> str:
    for prefix in _BOUND_PREFIXES:
        metric = metric.removeprefix(prefix)
    return metric


def is_percent(metric: str) -> bool:
    """AP-like and oLRP-like metrics are fractions in results.json and % in the paper."""
    return _base(metric).startswith(("AP", "oLRP"))


def lower_is_better(metric: str) -> bool:
    """oLRP and its components are errors: lower is better. Everything else: higher."""
    return _base(metric).startswith(LOWER_IS_BETTER)


@dataclass(frozen=True)
class SeedRun:
    """One run of a job: its ``seed`` (None for a job folder that is itself the run), its
    folder, its status (``completed``, ``failed``, ``running`` or ``missing``) and results."""

    seed: int | None
    run_dir: Path
    status: str
    results: dict[str, Any] | None

    @property
    def name(self) -> str:
        """``JOB/seedN`` as printed in notes, or the folder name of a single run."""
        if self.seed is None:
            return self.run_dir.name
        return f"{self.run_dir.parent.name}/seed{self.seed}"

    @property
    def error(self) -> str:
        return str((self.results or {}).get("error") or "no error recorded")

    @property
    def diverged(self) -> bool:
        """The run stopped because its loss (or weights) became non-finite."""
        return self.status == "failed" and DIVERGED_ERROR in self.error

    # Each file is read once per run however many columns and claims use it (a table
    # keeps one SeedRun per seed for all of them).
    @cached_property
    def logged(self) -> Logged:
        """The run's ``metrics.jsonl`` records (or why there are none)."""
        return read_logged(self.run_dir)

    @cached_property
    def grad_ratios(self) -> list[float] | None:
        """The positive ratios of the run's ``grad_balance.csv``; without the file, the
        smallest and largest the trainer recorded in results.json; else None."""
        try:
            return [r for r in read_grad_balance(self.run_dir).ratios if r > 0]
        except FileNotFoundError:
            pass
        extra = (self.results or {}).get("extra") or {}
        recorded = extra.get("grad_balance") or {}
        low, high = finite_number(recorded.get("min")), finite_number(recorded.get("max"))
        if low is None or high is None or not 0 < low <= high:
            return None
        return [low, high]

    def curve_measure(self, metric: str) -> Rebound:
        """``metric`` (a key of :data:`CURVE_MEASURES`) of a finished run's logged loss (no
        value, with the reason, for one that has not completed)."""
        if self.status != "completed":
            return Rebound(None, f"{self.status}, not completed")
        return measure_logged(self.logged, CURVE_MEASURES[metric])


def _read(run_dir: Path, seed: int | None) -> SeedRun:
    try:
        results = read_results(run_dir)
    except FileNotFoundError:
        return SeedRun(seed, run_dir, "missing", None)
    return SeedRun(seed, run_dir, str(results["status"]), results)


def job_runs(job_dir: Path, seeds: Sequence[int] | None = None) -> list[SeedRun]:
    """The runs of the job in ``job_dir``: the expected ``seeds`` (missing ones included)
    and any other ``seedN`` folder found there, in seed order."""
    job_dir = Path(job_dir)
    if (job_dir / RESULTS_FILE).is_file():
        return [_read(job_dir, None)]
    found = set()
    if job_dir.is_dir():
        for child in job_dir.iterdir():
            match = _SEED_DIR.match(child.name)
            if match and child.is_dir():
                found.add(int(match.group(1)))
    wanted = sorted(found | set(seeds or ()))
    if not wanted:
        return [SeedRun(None, job_dir, "missing", None)]
    return [_read(job_dir / f"seed{seed}", seed) for seed in wanted]


def metric_value(run: SeedRun, metric: str) -> float | None:
    """``metric`` of a completed run in the paper's units; None when the run did not
    complete or the metric is undefined (NaN is stored as null)."""
    if run.status != "completed" or run.results is None:
        return None
    if metric in CURVE_MEASURES:
        return run.curve_measure(metric).value
    if metric in GRAD_RATIOS:
        ratios = run.grad_ratios
        if not ratios:
            return None
        low, high = min(ratios), max(ratios)
        if metric == "grad_ratio_log_spread":
            return math.log10(high / low)
        return {"grad_ratio_min": low, "grad_ratio_max": high}.get(metric, high / low)
    value = finite_number((run.results.get("metrics") or {}).get(metric))
    if value is None:
        return None
    return value * (100.0 if is_percent(metric) else 1.0)
