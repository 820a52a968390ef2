"""Where a sweep's unfinished run stands, read from its folder alone: being trained now by
another process, stopped after a checkpoint it would resume from, failed before, or not
started. ``alrp-lab sweep NAME --dry-run`` shows it, so a sweep run across sessions can be
looked at without starting anything.

Nothing here takes the run's lock or loads its weights: the lock's holder comes from the
kernel's table (:func:`~alrp_lab.sweeps.processes.lock_holder`; this machine's processes
only), the checkpoint's epoch from a load that maps every tensor to the meta device, the
epoch being trained from the last record of ``metrics.jsonl``. A run whose logged
classification loss has come at least halfway back up so far (the rebound of
:mod:`alrp_lab.report.curves`, as the tables judge a finished run) is said to have broken
down, so that an hour-long run that collapsed early can be stopped rather than waited for.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alrp_lab.report.curves import (
    REBOUND_DIVERGED,
    WINDOWS,
    Logged,
    measure_logged,
    read_logged,
    rebound,
)
from alrp_lab.sweeps.error_line import error_line
from alrp_lab.sweeps.processes import lock_holder
from alrp_lab.tracking.run_files import checkpoint_path, read_results

PathLike = str | os.PathLike[str]

__all__ = ["RunState", "duration_text", "run_state"]


@dataclass(frozen=True)
class RunState:
    """An unfinished run folder's state.

    Attributes:
        training_pid: the process on this machine training the run now, else None.
        epoch: while training, the epoch being trained (1-based, from the log); else the
            epochs its checkpoint holds (the resume starts after them); None when unknown.
        epochs: the run's ``train.epochs``, None when its config was never recorded.
        failed: the first line of the error a previous attempt recorded, None unless failed.
        unreadable: why the checkpoint could not be read, None when it could (or is unused).
        resumes: the next attempt continues from the folder's checkpoint.
        replaced: the folder holds a run of another config, which ``--rerun`` deletes first.
        rebound: the rebound of the classification loss logged so far, None when it has
            none (no log, or the loss has not fallen yet).
        left_s: while training, the seconds of training left, estimated from the log (the
            iterations an epoch takes, the recent ``sec_per_iter``); evaluation not
            counted. None when the log cannot tell.
    """

    training_pid: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    failed: str | None = None
    unreadable: str | None = None
    resumes: bool = False
    replaced: bool = False
    rebound: float | None = None
    left_s: float | None = None

    @property
    def training(self) -> bool:
        """Another process is training the run now: a sweep started now skips it."""
        return self.training_pid is not None

    @property
    def broke_down(self) -> bool:
        """The loss logged so far has come at least halfway back to where it started."""
        return self.rebound is not None and self.rebound >= REBOUND_DIVERGED

    def describe(self) -> str:
        """One line for a dry run's status column."""
        broke = f"; broke down (rebound {self.rebound:.2f})" if self.broke_down else ""
        of = f" of {self.epochs}" if self.epochs is not None else ""
        if self.training:
            where = f": epoch {self.epoch}{of}" if self.epoch is not None else ""
            left = f", {duration_text(self.left_s)} left" if self.left_s is not None else ""
            return f"training now (pid {self.training_pid}){where}{left}{broke}"
        if self.replaced:
            return "would run again from scratch (its folder holds another config's run)"
        if not self.resumes:
            text = "would run"
        elif self.unreadable is not None:
            text = f"would resume, but its checkpoint is unreadable ({self.unreadable})"
        elif self.epoch is not None:
            text = f"would resume after epoch {self.epoch}{of}{broke}"
        else:
            text = f"would resume{broke}"
        if self.failed is not None:
            text += f" (failed before: {self.failed})"
        return text


def _config_epochs(results: Mapping[str, Any]) -> int | None:
    config = results.get("config")
    train = config.get("train") if isinstance(config, Mapping) else None
    epochs = train.get("epochs") if isinstance(train, Mapping) else None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def _checkpoint_epoch(path: Path) -> int:
    """The epochs a checkpoint holds. Its tensors go to the meta device, so none is read;
    the file is opened once, so an atomic replace meanwhile cannot mix two files."""
    import torch

    with path.open("rb") as handle:
        state = torch.load(handle, map_location="meta", weights_only=True)
    return int(state["epoch"])


def _logged_epoch(logged: Logged) -> int | None:
    """The 1-based epoch being trained, from the last logged record with an integer
    ``epoch``: a training record's is 0-based, an evaluation's counts the epochs done, so
    either is one less than the epoch under way. None without such a record."""
    for record in reversed(logged.records or ()):
        epoch = record.get("epoch")
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            return epoch + 1
    return None


# The recent records whose ``sec_per_iter`` set the pace (their median: one slow
# iteration, an evaluation's or a checkpoint's, does not).
_PACE_RECORDS = 20


def _training_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training iterations' records (step, epoch, pace and loss), in log order."""
    return [
        r
        for r in records
        if isinstance(r.get("step"), int)
        and isinstance(r.get("epoch"), int)
        and isinstance(r.get("sec_per_iter"), int | float)
        and "loss" in r
    ]


def _per_epoch(train: Sequence[dict[str, Any]]) -> float | None:
    """The iterations an epoch takes: the steps between the first records of the last two
    epochs that began in the log (exact when the log interval divides them); None before
    two epochs have begun."""
    first_step: dict[int, int] = {}
    for record in train:
        first_step.setdefault(record["epoch"], record["step"])
    starts = sorted(first_step.items())
    if len(starts) < 2:
        return None
    (e0, s0), (e1, s1) = starts[-2], starts[-1]
    return (s1 - s0) / (e1 - e0)


def _training_left(records: list[dict[str, Any]], epochs: int) -> float | None:
    """Seconds of training left: the iterations to the end of epoch ``epochs`` (at
    :func:`_per_epoch`'s count) times the median ``sec_per_iter`` of the last training
    records; None before two epochs have begun."""
    train = _training_records(records)
    per_epoch = _per_epoch(train)
    if per_epoch is None:
        return None
    pace = sorted(float(r["sec_per_iter"]) for r in train[-_PACE_RECORDS:])
    left_iters = max(0.0, epochs * per_epoch - (train[-1]["step"] + 1))
    return left_iters * pace[len(pace) // 2]


def _rebound_so_far(logged: Logged, epochs: int | None) -> float | None:
    """The rebound of the classification loss logged so far, over windows as long as those
    the finished run will be judged by (each :data:`~alrp_lab.report.curves.WINDOWS`-th of
    the whole run): a part of the run gets that part of the windows. Fifty windows over the
    first third of a run hold two or three logged values each, and their noise alone read
    as a breakdown (rebound 0.50 at epoch 7 of 14 in a run that ended at 0.09). Where the
    run's length is unknown (its config or two epochs' records missing), all
    :data:`~alrp_lab.report.curves.WINDOWS` windows, as for a finished run."""
    windows = WINDOWS
    if logged.records and epochs:
        train = _training_records(logged.records)
        per_epoch = _per_epoch(train)
        if per_epoch:
            done = (train[-1]["step"] + 1) / (epochs * per_epoch)
            windows = max(2, min(WINDOWS, round(WINDOWS * done)))
    return measure_logged(logged, functools.partial(rebound, windows=windows)).value


def duration_text(seconds: float) -> str:
    """``about 42 min``, ``about 2.5 h``, ``under a minute``."""
    if seconds < 60:
        return "under a minute"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def run_state(run_dir: PathLike, *, resumes: bool = True, replaced: bool = False) -> RunState:
    """The state of the run folder ``run_dir`` (which need not exist) for a dry run's
    listing; a completed run is not its business (the sweep skips it before asking).

    Args:
        resumes: the sweep would continue this run from a checkpoint if there is one
            (False when the job's overrides set ``train.resume`` otherwise).
        replaced: the sweep would delete the folder first (``--rerun`` of a stale run).
    """
    run_dir = Path(run_dir)
    try:
        results = read_results(run_dir)
    except (FileNotFoundError, ValueError):
        results = {}
    epochs = _config_epochs(results)
    pid = lock_holder(run_dir)
    if pid is not None:
        logged = read_logged(run_dir)  # one read gives the epoch and the rebound
        epoch = _logged_epoch(logged)
        if epoch is not None and epochs is not None:
            epoch = min(epoch, epochs)  # evaluated after its last epoch, not yet marked done
        back = _rebound_so_far(logged, epochs)
        left = (
            _training_left(logged.records, epochs)
            if logged.records and epochs is not None
            else None
        )
        return RunState(training_pid=pid, epoch=epoch, epochs=epochs, rebound=back, left_s=left)
    if replaced:
        return RunState(epochs=epochs, replaced=True)
    failed = None
    if results.get("status") == "failed":
        failed = error_line(str(results.get("error") or ""), 160) or "no error recorded"
    ckpt = checkpoint_path(run_dir)
    if not (resumes and ckpt.is_file()):
        return RunState(epochs=epochs, failed=failed)
    epoch, unreadable = None, None
    try:
        epoch = _checkpoint_epoch(ckpt)
    except Exception as err:  # any damage: say so, the listing goes on
        unreadable = f"{type(err).__name__}: {error_line(str(err), 120)}".rstrip(": ")
    return RunState(
        epoch=epoch,
        epochs=epochs,
        failed=failed,
        unreadable=unreadable,
        resumes=True,
        rebound=_rebound_so_far(read_logged(run_dir), epochs),
    )
