"""How long a sweep's unfinished runs will take, judged by the runs it has finished.

``alrp-lab sweep NAME --dry-run`` adds the estimate to its summary, so that a sweep run
across sessions can be planned (which runs fit before the machine goes back). The estimate
is the median wall time of the completed runs of the same length and model in the same
folder (every completed run there, whichever jobs the dry run lists), each pending run
counted once:

- a run not started counts the whole median;
- a run stopped after epoch ``e`` of ``E`` counts ``(E - e) / E`` of it;
- a run another process is training counts its own estimate from its log
  (:attr:`~alrp_lab.sweeps.run_state.RunState.left_s`), when it has one.

A completed run counts only when it ran in one go (``resumes == 0``: a resumed run's
``started_at`` to ``finished_at`` spans the pause) and recorded both times. Runs with no such
run of their kind to go by are counted apart, not guessed. The times are wall times as the
runs had them (how many ran beside each other, and with how many threads, is not recorded):
the total is for the runs one after another at that pace, divided by ``--jobs`` for a
sweep that runs several at a time. A run training now counts its log's estimate, which
leaves out its final evaluation.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alrp_lab.sweeps.run_state import RunState, duration_text
from alrp_lab.tracking.staleness import comparable

__all__ = ["TimeLeft", "length_key", "run_seconds", "time_left"]

# What sets a run's wall time: its iterations (epochs, batches and the data they come
# from), its interim evaluations, and the model each iteration runs. The loss and its
# options change the time by a few percent at most; they are left out so that the runs of
# one table (one model, many losses) share their evidence.
_TRAIN_KEYS = ("epochs", "batch_size", "max_iters_per_epoch", "eval_every", "eval_bounds")
_MODEL_SECTIONS = ("detector", "backbone")


def length_key(config: Mapping[str, Any]) -> str:
    """A key equal for two resolved configs whose runs take the same time: the same
    iterations on the same data with the same model, compared as the staleness check
    compares configs (:func:`~alrp_lab.tracking.staleness.comparable`: keys the model does
    not read, nulls and the built-in data's cache folder left out), so that a run recorded
    by older code counts too."""
    config = comparable(config)
    train = config.get("train") or {}
    data = config.get("data") or {}
    key = {
        "train": {k: train.get(k) for k in _TRAIN_KEYS},
        "data": data,
        **{section: config.get(section) for section in _MODEL_SECTIONS},
    }
    return json.dumps(key, sort_keys=True, default=str)


def run_seconds(results: Mapping[str, Any]) -> float | None:
    """The wall seconds a completed run took, from its ``results.json``; None when it was
    resumed (the span holds the pause), is not completed, or lacks a time."""
    if results.get("status") != "completed" or results.get("resumes"):
        return None
    try:
        start = datetime.fromisoformat(str(results["started_at"]))
        end = datetime.fromisoformat(str(results["finished_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    seconds = (end - start).total_seconds()
    return seconds if seconds > 0 else None


@dataclass(frozen=True)
class TimeLeft:
    """The estimate of :func:`time_left`.

    Attributes:
        seconds: wall seconds of the runs it could judge, one after another.
        judged: how many pending runs ``seconds`` covers.
        unjudged: pending runs with no completed run of their kind (or, training now, no
            estimate from their log) to go by.
        basis: how many completed runs the medians came from.
    """

    seconds: float
    judged: int
    unjudged: int
    basis: int

    def describe(self, jobs: int = 1) -> str:
        """One line for the dry run's summary; ``jobs`` runs at a time (``--jobs``) divide
        the total, as if each ran at the pace of the finished runs."""
        if not self.judged:
            return "no completed run of the same length here to judge the time left by"
        text = (
            f"{duration_text(self.seconds)} of run time left in {self.judged} run(s) one "
            "after another"
        )
        if jobs > 1:
            text += f" ({duration_text(self.seconds / jobs)} at {jobs} at a time)"
        if self.basis:
            text += f", by the median time of {self.basis} completed run(s) of the same length here"
        else:
            text += ", by the logs of the runs training now"
        if self.unjudged:
            text += f"; {self.unjudged} more with none to go by"
        return text


def time_left(
    pending: Iterable[tuple[Mapping[str, Any], RunState | None]],
    completed: Iterable[Mapping[str, Any]],
) -> TimeLeft:
    """Estimate the wall time of ``pending`` runs from ``completed`` ones.

    Args:
        pending: each unfinished run's resolved config and its state (None: not started).
        completed: the ``results.json`` contents of the folder's completed runs.
    """
    seconds: dict[str, list[float]] = {}
    for results in completed:
        took = run_seconds(results)
        config = results.get("config")
        if took is not None and isinstance(config, Mapping):
            seconds.setdefault(length_key(config), []).append(took)
    medians = {key: statistics.median(values) for key, values in seconds.items()}
    total, judged, unjudged, used = 0.0, 0, 0, set()
    for config, state in pending:
        if state is not None and state.training:
            if state.left_s is None:
                unjudged += 1
            else:
                total, judged = total + state.left_s, judged + 1
            continue
        key = length_key(config)
        if key not in medians:
            unjudged += 1
            continue
        share = 1.0
        if state is not None and state.resumes and state.epoch and state.epochs:
            share = max(0.0, state.epochs - state.epoch) / state.epochs
        total, judged = total + share * medians[key], judged + 1
        used.add(key)
    return TimeLeft(total, judged, unjudged, sum(len(seconds[key]) for key in used))
