"""Where a sweep's unfinished run stands, read from its folder alone: being trained now by
another process, stopped after a checkpoint it would resume from, failed before, or not
started. ``alrp-lab sweep NAME --dry-run`` shows it, so a sweep spread over days and
machines can be looked at without starting anything.

Nothing here takes the run's lock or loads its weights: the lock's holder comes from the
kernel's table (:func:`~alrp_lab.sweeps.processes.lock_holder`), the checkpoint's epoch from
a memory-mapped load that reads the small entries only, the epoch being trained from the
last lines of ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alrp_lab.sweeps.processes import lock_holder
from alrp_lab.tracking.run_files import METRICS_FILE, checkpoint_path, read_results

PathLike = str | os.PathLike[str]

# How much of metrics.jsonl's end is read for its last training record (a record is about
# 400 bytes; the interim evaluations' records come between them once an epoch).
_TAIL_BYTES = 16_384

__all__ = ["RunState", "run_state"]


@dataclass(frozen=True)
class RunState:
    """An unfinished run folder's state.

    Attributes:
        training_pid: the process training the run now (0: one whose pid is not known),
            None when none is (or, off Linux, when that cannot be told).
        epoch: while training, the epoch being trained (1-based, from the log); else the
            epochs its checkpoint holds (a resume starts after them); None when unknown.
        epochs: the run's ``train.epochs``, None when its config was never recorded.
        failed: the error a previous attempt recorded, None unless it failed.
        unreadable: why the checkpoint could not be read, None when it could (or is absent).
        has_checkpoint: a checkpoint exists, so the next attempt resumes from it.
    """

    training_pid: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    failed: str | None = None
    unreadable: str | None = None
    has_checkpoint: bool = False

    @property
    def training(self) -> bool:
        return self.training_pid is not None

    def describe(self) -> str:
        """One line for a dry run's status column."""
        of = f" of {self.epochs}" if self.epochs is not None else ""
        if self.training:
            pid = f"pid {self.training_pid}" if self.training_pid else "pid unknown"
            where = f": epoch {self.epoch}{of}" if self.epoch is not None else ""
            return f"training now ({pid}){where}"
        if self.has_checkpoint:
            if self.unreadable is not None:
                text = f"would resume, but its checkpoint is unreadable ({self.unreadable})"
            elif self.epoch is not None:
                text = f"would resume after epoch {self.epoch}{of}"
            else:
                text = "would resume"
        else:
            text = "would run"
        if self.failed is not None:
            text += f" (failed before: {self.failed})"
        return text


def _config_epochs(results: dict[str, Any]) -> int | None:
    train = (results.get("config") or {}).get("train")
    epochs = train.get("epochs") if isinstance(train, dict) else None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def _checkpoint_epoch(path: Path) -> int:
    """The epochs a checkpoint holds, without reading its tensors (``mmap``)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(state["epoch"])


def _logged_epoch(run_dir: Path) -> int | None:
    """The 1-based epoch of the last training record in ``metrics.jsonl`` (records with a
    ``loss`` and a 0-based ``epoch``), None without one in the file's last part."""
    path = run_dir / METRICS_FILE
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:  # the first, cut line, or one being written
            continue
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if "loss" in record and isinstance(epoch, int):
            return epoch + 1
    return None


def run_state(run_dir: PathLike) -> RunState:
    """The state of the run folder ``run_dir`` (which need not exist) for a dry run's
    listing; a completed run is not its business (the sweep skips it before asking)."""
    run_dir = Path(run_dir)
    try:
        results = read_results(run_dir)
    except (FileNotFoundError, ValueError):
        results = {}
    epochs = _config_epochs(results)
    pid = lock_holder(run_dir)
    if pid is not None:
        return RunState(training_pid=pid, epoch=_logged_epoch(run_dir), epochs=epochs)
    failed = None
    if results.get("status") == "failed":
        failed = (str(results.get("error") or "").splitlines() or ["no error recorded"])[0]
    ckpt = checkpoint_path(run_dir)
    if not ckpt.is_file():
        return RunState(epochs=epochs, failed=failed)
    try:
        epoch, unreadable = _checkpoint_epoch(ckpt), None
    except Exception as err:  # any damage: say so, the listing goes on
        first = (str(err).splitlines() or [""])[0][:120]
        epoch, unreadable = None, f"{type(err).__name__}: {first}".rstrip(": ")
    return RunState(
        epoch=epoch, epochs=epochs, failed=failed, unreadable=unreadable, has_checkpoint=True
    )
