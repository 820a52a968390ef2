"""``grad_balance.csv``: Figure 4's ratio, one line per iteration, cut back on resume.

Columns ``iteration,epoch,ratio`` (ratio = sum |dL/ds| over negatives / over positives).
A resumed run restarts at its checkpoint's iteration, so the lines written after that
checkpoint (by the run that was stopped) are cut first; otherwise they would appear twice.
On completion the trainer also records the ratio's range in results.json
(:func:`summarize_grad_balance`), so a copy of a run that keeps only results.json still
gives Figure 4's columns.
"""

from __future__ import annotations

import math
from pathlib import Path

from alrp_lab.utils.io import atomic_write_text

HEADER = "iteration,epoch,ratio\n"

__all__ = ["HEADER", "append_grad_balance", "start_grad_balance", "summarize_grad_balance"]


def _records(path: Path) -> list[tuple[int, str]]:
    """``(iteration, line)`` of each well-formed line (a line cut by a crash is skipped)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        first = line.split(",", 1)[0]
        if first.isdigit() and line.count(",") == 2:
            out.append((int(first), line))
    return out


def start_grad_balance(path: Path, resume_iteration: int | None) -> None:
    """Start ``path`` afresh (``resume_iteration=None``) or keep only its lines for
    iterations before ``resume_iteration``, the first one the resumed run will write."""
    if resume_iteration is None or not path.is_file():
        atomic_write_text(path, HEADER)
        return
    kept = [line + "\n" for iteration, line in _records(path) if iteration < resume_iteration]
    atomic_write_text(path, HEADER + "".join(kept))


def append_grad_balance(path: Path, iteration: int, epoch: int, ratio: float) -> None:
    """Append one iteration's ratio."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{iteration},{epoch},{ratio:.6f}\n")


def summarize_grad_balance(path: Path) -> dict[str, float | int] | None:
    """The range of the file's positive, finite ratios as written (6 decimals):
    ``{"min", "max", "count"}``, the numbers Figure 4's legend reads; None when the file
    is missing or holds none."""
    if not path.is_file():
        return None
    ratios = []
    for _, line in _records(path):
        try:
            ratio = float(line.rsplit(",", 1)[1])
        except ValueError:
            continue
        if math.isfinite(ratio) and ratio > 0:
            ratios.append(ratio)
    if not ratios:
        return None
    return {"min": min(ratios), "max": max(ratios), "count": len(ratios)}
