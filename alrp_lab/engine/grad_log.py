"""``grad_balance.csv``: Figure 4's ratio, one line per iteration, cut back on resume.

Columns ``iteration,epoch,ratio`` (ratio = sum |dL/ds| over negatives / over positives).
A resumed run restarts at its checkpoint's iteration, so the lines written after that
checkpoint (by the run that was stopped) are cut first; otherwise they would appear twice.
"""

from __future__ import annotations

from pathlib import Path

from alrp_lab.utils.io import atomic_write_text

HEADER = "iteration,epoch,ratio\n"

__all__ = ["HEADER", "append_grad_balance", "start_grad_balance"]


def start_grad_balance(path: Path, resume_iteration: int | None) -> None:
    """Start ``path`` afresh (``resume_iteration=None``) or keep only its lines for
    iterations before ``resume_iteration``, the first one the resumed run will write."""
    if resume_iteration is None or not path.is_file():
        atomic_write_text(path, HEADER)
        return
    kept = [HEADER]
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        first = line.split(",", 1)[0]
        if first.isdigit() and int(first) < resume_iteration and line.count(",") == 2:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def append_grad_balance(path: Path, iteration: int, epoch: int, ratio: float) -> None:
    """Append one iteration's ratio."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{iteration},{epoch},{ratio:.6f}\n")
