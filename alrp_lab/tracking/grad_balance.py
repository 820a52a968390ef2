"""``grad_balance.csv``: Figure 4's ratio, one line per iteration; written, cut and read here.

Columns ``iteration,epoch,ratio`` (ratio = sum |dL/ds| over negatives / over positives,
SPEC section 3). A resumed run restarts at its checkpoint's iteration, so the lines written
after that checkpoint (by the run that was stopped) are cut first; otherwise they would
appear twice. On completion the trainer records the ratio's range in results.json
(:func:`summarize_grad_balance`), so a copy of a run that keeps only results.json still
gives Figure 4's columns. One parser (:func:`_records`) serves the cut, the summary and the
report's reader, so the three agree on which lines count.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import NamedTuple

from alrp_lab.errors import ResultsError, ResultsNotFoundError
from alrp_lab.utils.io import atomic_write_text

GRAD_BALANCE_FILE = "grad_balance.csv"
HEADER = "iteration,epoch,ratio\n"

__all__ = [
    "GRAD_BALANCE_FILE",
    "HEADER",
    "GradBalance",
    "append_grad_balance",
    "read_grad_balance",
    "start_grad_balance",
    "summarize_grad_balance",
]


class GradBalance(NamedTuple):
    """One run's ratios: ``iterations`` and ``ratios`` of equal length (finite ratios only)."""

    iterations: list[int]
    ratios: list[float]


class _Record(NamedTuple):
    iteration: int
    ratio: float
    line: str  # as written, so that a cut keeps the kept lines byte for byte


def _records(path: Path) -> list[_Record]:
    """Every line whose ``iteration`` is an integer and whose ``ratio`` is a number (columns
    found by the header's names). A malformed line, e.g. one cut by a crash, is skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    header = next(csv.reader([lines[0]]), [])
    try:
        at_iteration, at_ratio = header.index("iteration"), header.index("ratio")
    except ValueError:
        return []
    out = []
    for line in lines[1:]:
        fields = next(csv.reader([line]), [])
        try:
            out.append(_Record(int(fields[at_iteration]), float(fields[at_ratio]), line))
        except (IndexError, ValueError):
            continue
    return out


def start_grad_balance(path: Path, resume_iteration: int | None) -> None:
    """Start ``path`` afresh (``resume_iteration=None``) or keep only its lines for
    iterations before ``resume_iteration``, the first one the resumed run will write."""
    if resume_iteration is None or not path.is_file():
        atomic_write_text(path, HEADER)
        return
    kept = [r.line + "\n" for r in _records(path) if r.iteration < resume_iteration]
    atomic_write_text(path, HEADER + "".join(kept))


def append_grad_balance(path: Path, iteration: int, epoch: int, ratio: float) -> None:
    """Append one iteration's ratio."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{iteration},{epoch},{ratio:.6f}\n")


def read_grad_balance(run_dir: str | Path) -> GradBalance:
    """Read ``run_dir/grad_balance.csv``: the finite ratios of its well-formed lines.

    Raises:
        ResultsNotFoundError: the file is missing.
        ResultsError: its iterations do not increase (lines written twice).
    """
    path = Path(run_dir) / GRAD_BALANCE_FILE
    if not path.is_file():
        raise ResultsNotFoundError(
            f"no {GRAD_BALANCE_FILE} in {run_dir}: train with train.grad_balance=true"
        )
    iterations: list[int] = []
    ratios: list[float] = []
    for record in _records(path):
        if iterations and record.iteration <= iterations[-1]:
            raise ResultsError(
                f"{path}: iteration {record.iteration} follows {iterations[-1]}, so some "
                "iterations were written twice (a resume before this was fixed): "
                "rerun the job, or delete the repeated lines"
            )
        if math.isfinite(record.ratio):
            iterations.append(record.iteration)
            ratios.append(record.ratio)
    return GradBalance(iterations, ratios)


def summarize_grad_balance(run_dir: str | Path) -> dict[str, float | int] | None:
    """The range of ``run_dir/grad_balance.csv``'s positive ratios as written (6 decimals):
    ``{"min", "max", "count"}``, what Figure 4's legend reads. None when the file is
    missing, unreadable or holds no positive ratio: the summary is a convenience for
    copies, never a reason to fail a run that trained."""
    try:
        ratios = [r for r in read_grad_balance(run_dir).ratios if r > 0]
    except (OSError, ValueError):  # ResultsError is a ValueError; a decode error too
        return None
    if not ratios:
        return None
    return {"min": min(ratios), "max": max(ratios), "count": len(ratios)}
