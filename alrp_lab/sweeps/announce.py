"""The lines a sweep prints as it goes: one when it starts training, one per finished run.

A sweep's log outside a terminal (``nohup``, a SLURM job's output file) gets each run's
progress bars only when that run ends, so a sweep of runs that take half an hour each
said nothing for half an hour at a time, and nothing at all about which runs had ended.
With these lines the log reads as a list: which run finished, how long its last attempt
took and its headline metrics, or why it failed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from alrp_lab.sweeps.error_line import error_line
from alrp_lab.sweeps.run_state import duration_text
from alrp_lab.tracking.results import read_results

__all__ = ["not_started_line", "run_line", "start_line"]

PathLike = str | os.PathLike[str]

# Shown in percent, as the tables show them; oLRP is an error, AP and AP90 precisions.
_HEADLINE = ("AP", "AP90", "oLRP")


def start_line(root: PathLike, to_train: int, at_a_time: int, skipped: int, copied: int) -> str:
    """``results/regime: training 11 run(s), 2 at a time (136 completed before, skipped)``.

    Args:
        root: the sweep folder.
        to_train: runs the sweep trains now (resumed and replaced ones included); the
            ``n`` of each :func:`run_line`.
        at_a_time: how many of them run at once (1: one after another).
        skipped: completed runs the sweep keeps as they are.
        copied: runs copied from other folders instead of trained.
    """
    text = f"{root}: training {to_train} run(s)"
    if min(at_a_time, to_train) > 1:
        text += f", {min(at_a_time, to_train)} at a time"
    before = []
    if skipped:
        before.append(f"{skipped} completed before, skipped")
    if copied:
        before.append(f"{copied} copied")
    return text + (f" ({'; '.join(before)})" if before else "")


def run_line(run_dir: PathLike, run_id: str, error: str | None, done: int, total: int) -> str:
    """``[3/11] 256px--sb/seed1 completed in about 27 min: AP 45.8, AP90 11.7, oLRP 61.0``,
    or ``[4/11] 256px--sb/seed2 failed: <the error on one line>``.

    ``done`` of ``total`` counts the runs this sweep trains now, in the order they end. The
    time is the last attempt's (a resumed run's earlier attempts are not in it), read with
    the metrics from ``run_dir/results.json``; what the file lacks or holds in another
    form is left out, so that a line never stops a sweep.
    """
    head = f"[{done}/{total}] {run_id}"
    if error is not None:
        return f"{head} failed: {error_line(error)}"
    try:
        results = read_results(Path(run_dir))
    except (FileNotFoundError, ValueError):
        results = {}
    text = f"{head} completed"
    seconds = _last_attempt_seconds(results)
    if seconds is not None:
        text += f" in {duration_text(seconds)}"
    metrics = results.get("metrics")
    metrics = metrics if isinstance(metrics, Mapping) else {}
    shown = [
        f"{name} {100 * metrics[name]:.1f}"
        for name in _HEADLINE
        if isinstance(metrics.get(name), int | float) and not isinstance(metrics[name], bool)
    ]
    return text + (f": {', '.join(shown)}" if shown else "")


def not_started_line(run_id: str, error: str) -> str:
    """``256px--sb/seed1 not started: <why>``: a run the sweep could not start or copy (its
    folder held by another process, a copy that failed), outside the ``[k/n]`` count."""
    return f"{run_id} not started: {error_line(error)}"


def _last_attempt_seconds(results: Mapping[str, Any]) -> float | None:
    """Seconds from the last attempt's start to the run's finish; None without both."""
    attempts = results.get("attempts")
    last = attempts[-1] if isinstance(attempts, list) and attempts else None
    if not isinstance(last, Mapping):
        return None
    try:
        start = datetime.fromisoformat(str(last["started_at"]))
        end = datetime.fromisoformat(str(results["finished_at"]))
        seconds = (end - start).total_seconds()
    except (KeyError, TypeError, ValueError):  # no attempt, no time, naive against aware
        return None
    return seconds if seconds >= 0 else None
