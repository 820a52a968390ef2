"""The lines a sweep prints as it goes: one when it starts training, one per finished run.

A sweep's log outside a terminal (``nohup``, a SLURM job's output file) gets each run's
progress bars only when that run ends, so a sweep of runs that take half an hour each
said nothing for half an hour at a time, and nothing at all about which runs had ended.
With these lines the log reads as a list: which run finished, how long its last attempt
took and its headline metrics, or why it failed.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from alrp_lab.sweeps.run_state import duration_text
from alrp_lab.tracking.results import read_results

__all__ = ["run_line", "start_line"]

PathLike = str | os.PathLike[str]

# Shown in percent, as the tables show them; oLRP is an error, AP and AP90 precisions.
_HEADLINE = ("AP", "AP90", "oLRP")


def start_line(root: PathLike, to_train: int, at_a_time: int, kept: int, copied: int) -> str:
    """``results/regime: training 11 run(s), 2 at a time (136 completed before, kept)``.

    Args:
        root: the sweep folder.
        to_train: runs the sweep will train now (resumed ones included).
        at_a_time: runs at a time (``--jobs``; 1 for a serial sweep).
        kept: completed runs it skips.
        copied: runs it copied from other folders instead of training.
    """
    text = f"{root}: training {to_train} run(s)"
    if at_a_time > 1 and to_train > 1:
        text += f", {at_a_time} at a time"
    before = []
    if kept:
        before.append(f"{kept} completed before, kept")
    if copied:
        before.append(f"{copied} copied")
    return text + (f" ({'; '.join(before)})" if before else "")


def run_line(run_dir: PathLike, run_id: str, error: str | None, done: int, total: int) -> str:
    """``[3/11] 256px--sb/seed1 completed in about 27 min: AP 45.8, AP90 11.7, oLRP 61.0``,
    or ``[4/11] ... failed: <the error's first line>``.

    ``done`` of ``total`` counts the runs this sweep trains, in the order they finished.
    The time is the last attempt's (a resumed run's earlier attempts are not in it), read
    with the metrics from ``run_dir/results.json``; what the file lacks is left out.
    """
    head = f"[{done}/{total}] {run_id}"
    if error is not None:
        first = (error.splitlines() or [""])[0]
        return f"{head} failed: {first}"
    try:
        results = read_results(Path(run_dir))
    except (FileNotFoundError, ValueError):
        results = {}
    text = f"{head} completed"
    seconds = _last_attempt_seconds(results)
    if seconds is not None:
        text += f" in {duration_text(seconds)}"
    metrics = results.get("metrics") or {}
    shown = [
        f"{name} {100 * metrics[name]:.1f}"
        for name in _HEADLINE
        if isinstance(metrics.get(name), int | float)
    ]
    return text + (f": {', '.join(shown)}" if shown else "")


def _last_attempt_seconds(results: dict[str, Any]) -> float | None:
    """Seconds from the last attempt's start to the run's finish; None without both."""
    attempts = results.get("attempts") or [{}]
    try:
        start = datetime.fromisoformat(str(attempts[-1].get("started_at")))
        end = datetime.fromisoformat(str(results["finished_at"]))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    seconds = (end - start).total_seconds()
    return seconds if seconds >= 0 else None
