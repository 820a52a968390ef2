"""A run folder's results files: ``metrics.jsonl`` (one line per logged step) and
``results.json`` (status, final metrics, config and provenance, always written atomically).

These files are the record of a run; W&B only mirrors them. This module writes them
(:class:`RunRecorder`); :mod:`alrp_lab.tracking.run_files` reads them back
(``read_results``, ``read_metrics``, ``find_runs``) and :mod:`alrp_lab.tracking.provenance`
says where a run came from; both are re-exported here. Nothing imports torch at module
level (readers should stay fast).

``results.json`` holds::

    status          "running" | "completed" | "failed"
    metrics         final (or latest evaluated) metrics, name -> number or null
    config          the resolved config, as plain JSON
    config_digest   sha256 of the config's canonical JSON (see config_digest)
    git_revision    commit of the package's repository, or null outside one
    git_dirty       true when tracked files outside results/ differ from that commit, null
                    when unknown (see provenance.git_state)
    started_at      UTC ISO-8601; kept across resumes
    finished_at     UTC ISO-8601 when completed or failed, else null
    error           "ExceptionType: message" when failed, else null
    resumes         how many times the run was resumed
    attempts        one entry per start and resume, oldest first: {"started_at", "from_step"
                    (0, or the checkpoint's iteration it resumed at), "git_revision",
                    "git_dirty", "changed" (each "key: recorded X, now Y" whose value
                    differs from the config the run had before this attempt; empty when
                    none, or when no run's config was recorded before), "code" ({"python":
                    "3.11", "digests": {subpackage: digest}} of the code that computes,
                    see tracking.code_digest)}. The top-level git
                    fields are those of the last process that wrote the file (a failure
                    before training included). A run recorded before this key existed
                    keeps only the attempts made since.
    extra           JSON-able facts the trainer adds on completion (epochs, iterations ...)
    history         {"records", "last_step", "last_epoch"} of metrics.jsonl
    versions        python, torch, CUDA, numpy and alrp-lab versions

Non-finite numbers are written as ``null`` (see :mod:`alrp_lab.utils.io`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from alrp_lab.errors import ResultsError
from alrp_lab.tracking.code_digest import code_record
from alrp_lab.tracking.provenance import (
    GitState,
    config_digest,
    environment_versions,
    git_state,
)
from alrp_lab.tracking.run_files import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    RESULTS_FILE,
    checkpoint_path,
    find_runs,
    is_completed,
    read_metrics,
    read_results,
)
from alrp_lab.utils.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    to_jsonable,
)

PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_DIR",
    "METRICS_FILE",
    "RESULTS_FILE",
    "GitState",
    "RunRecorder",
    "checkpoint_path",
    "config_digest",
    "environment_versions",
    "find_runs",
    "git_state",
    "is_completed",
    "read_metrics",
    "read_results",
]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunRecorder:
    """Writes one run folder's ``metrics.jsonl`` and ``results.json``.

    Lifecycle: :meth:`start` (status ``running``), any number of :meth:`log` and
    :meth:`update_metrics`, then :meth:`complete` or :meth:`fail`. As a context manager it
    starts on entry (unless already started) and, on exit, fails with the exception that
    escaped the block or completes when the block ended normally. With ``enabled=False``
    (every rank but the first) every method does nothing, so the training loop needs no rank
    checks.

    Args:
        run_dir: the run folder; created if missing.
        config: the resolved config as a plain mapping (e.g. ``OmegaConf.to_container``).
        enabled: whether this process writes anything.
    """

    def __init__(self, run_dir: PathLike, config: Mapping[str, Any], *, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._config = to_jsonable(config, "config")
        self._results: dict[str, Any] = {}
        self._history: dict[str, Any] = {"records": 0, "last_step": None, "last_epoch": None}

    @property
    def results_path(self) -> Path:
        return self.run_dir / RESULTS_FILE

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

    @property
    def status(self) -> str | None:
        """The status last written, or None before :meth:`start`."""
        return self._results.get("status")

    def start(self, *, resume_step: int | None = None, changed: Sequence[str] = ()) -> None:
        """Mark the run ``running`` and record this attempt in ``attempts``.

        A fresh start (``resume_step=None``) discards any earlier ``metrics.jsonl`` in the
        folder: training restarts from step 0 and will log those steps again. A resume passes
        the first step the resumed run will log (the checkpoint's iteration count); it keeps
        the earlier results' ``started_at``, metrics and extra, and drops the records with
        ``step >= resume_step``: they were logged after the checkpoint was written, and the
        resumed run logs them again. ``changed`` names the keys a resume changes (as
        :func:`alrp_lab.tracking.staleness.differences` words them), so that the record of
        a run trained under two configs says so.
        """
        if not self.enabled:
            return
        code = code_record()  # before anything is written: it reads the package's files
        self.run_dir.mkdir(parents=True, exist_ok=True)
        results = self._new_results()
        now = results["started_at"]  # a resume keeps the run's first start time below
        if resume_step is None:
            records: list[dict[str, Any]] = []
            atomic_write_text(self.metrics_path, "")  # empty, so readers find the file at once
        else:
            records = self._truncate_metrics(resume_step)
            self._carry_over(results, count_resume=True)
        results["attempts"].append(
            {
                "started_at": now,
                "from_step": 0 if resume_step is None else int(resume_step),
                "git_revision": results["git_revision"],
                "git_dirty": results["git_dirty"],
                "changed": [str(each) for each in changed],
                "code": code,
            }
        )
        self._reset_history(records)
        self._results = results
        self._write()

    def _new_results(self) -> dict[str, Any]:
        git = git_state()
        return {
            "status": "running",
            "metrics": {},
            "config": self._config,
            "config_digest": config_digest(self._config),
            "git_revision": git.revision,
            "git_dirty": git.dirty,
            "started_at": _now(),
            "finished_at": None,
            "error": None,
            "resumes": 0,
            "attempts": [],
            "extra": {},
            "history": None,
            "versions": environment_versions(),
        }

    def _carry_over(self, results: dict[str, Any], *, count_resume: bool) -> None:
        """Keep what an earlier attempt in this folder recorded: start time, metrics, extra,
        attempts."""
        try:
            previous = read_results(self.run_dir)
        except (FileNotFoundError, ValueError):  # provenance only: not worth blocking a resume
            return
        results["started_at"] = previous.get("started_at") or results["started_at"]
        results["metrics"] = dict(previous.get("metrics") or {})
        results["extra"] = dict(previous.get("extra") or {})
        results["resumes"] = int(previous.get("resumes") or 0) + int(count_resume)
        attempts = previous.get("attempts")
        if isinstance(attempts, list):
            results["attempts"] = [dict(a) for a in attempts if isinstance(a, Mapping)]

    def _truncate_metrics(self, resume_step: int) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            atomic_write_text(self.metrics_path, "")
            return []
        records = read_metrics(self.run_dir)
        kept = [r for r in records if isinstance(r.get("step"), int) and r["step"] < resume_step]
        if len(kept) != len(records):
            lines = [json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n" for r in kept]
            atomic_write_text(self.metrics_path, "".join(lines))
        return kept

    def _reset_history(self, records: list[dict[str, Any]]) -> None:
        self._history = {"records": 0, "last_step": None, "last_epoch": None}
        for record in records:
            self._note(record.get("step"), record.get("epoch"))

    def _note(self, step: int | None, epoch: int | None) -> None:
        self._history["records"] += 1
        self._history["last_step"] = step
        self._history["last_epoch"] = epoch

    def _require(self, action: str, *allowed: str) -> None:
        if self.status not in allowed:
            raise RuntimeError(
                f"cannot {action} a run whose status is {self.status!r}: call start() first"
                if self.status is None
                else f"cannot {action} a run whose status is {self.status!r}"
            )

    def _write(self) -> None:
        self._results["history"] = dict(self._history)
        atomic_write_json(self.results_path, self._results)

    def log(self, step: int, values: Mapping[str, Any], *, epoch: int | None = None) -> None:
        """Append ``{"step": step, "epoch": epoch, **values}`` to ``metrics.jsonl`` (fsynced).

        ``epoch`` may come as the keyword or as ``values["epoch"]``. ``values`` are numbers
        (floats, ints, 0-d tensors, NumPy scalars); NaN/inf become null. ``results.json`` is
        not rewritten here: that would cost an fsync and a rename per step.
        """
        if not self.enabled:
            return
        self._require("log to", "running")
        if "step" in values:
            raise ResultsError("the metric name 'step' is reserved: pass the step as `step`")
        if epoch is not None and "epoch" in values:
            raise ResultsError("epoch given twice: as the keyword and in the values")
        record = {"step": int(step), "epoch": epoch, **values}
        append_jsonl(self.metrics_path, record)
        self._note(int(step), record["epoch"])

    def update_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Merge ``metrics`` into ``results.json``'s ``metrics`` and rewrite it atomically."""
        if not self.enabled:
            return
        self._require("update", "running")
        self._results["metrics"].update(to_jsonable(metrics, "metrics"))
        self._write()

    def complete(
        self, metrics: Mapping[str, Any] | None = None, *, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Mark the run ``completed``, merging in the final ``metrics`` and ``extra`` (any
        JSON-able facts about the run, e.g. the iteration count). Returns the results written
        (an empty dict when disabled)."""
        if not self.enabled:
            return {}
        self._require("complete", "running")
        if metrics:
            self._results["metrics"].update(to_jsonable(metrics, "metrics"))
        if extra:
            self._results["extra"].update(to_jsonable(extra, "extra"))
        self._results.update(status="completed", finished_at=_now(), error=None)
        self._write()
        return copy.deepcopy(self._results)

    def fail(self, error: BaseException | str) -> dict[str, Any]:
        """Mark the run ``failed`` with ``error`` ("Type: message" for an exception).

        Meant for error paths, so it never raises over the error being handled: a run that
        failed before :meth:`start` still gets a ``failed`` results file (so a sweep sees it),
        and a run already completed or failed is left as it is. Returns the results written
        (empty when disabled).
        """
        if not self.enabled:
            return {}
        if isinstance(error, BaseException):
            text = str(error)
            message = f"{type(error).__name__}: {text}" if text else type(error).__name__
        else:
            message = str(error)
        try:
            if self.status is None:
                # Failed before start(): record it without touching metrics.jsonl, which may
                # hold an earlier attempt's history that a later resume still needs.
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._results = self._new_results()
                self._carry_over(self._results, count_resume=False)
                if self.metrics_path.exists():
                    self._reset_history(read_metrics(self.run_dir))
            if self.status != "running":
                log.warning("run already %s; not marking it failed (%s)", self.status, message)
                return copy.deepcopy(self._results)
            self._results.update(status="failed", finished_at=_now(), error=message)
            self._write()
        except Exception as err:  # e.g. a full disk: the original error matters more
            log.error("could not record the failure in %s: %s", self.results_path, err)
        return copy.deepcopy(self._results)

    def __enter__(self) -> RunRecorder:
        if self.status is None:  # a caller resuming has called start(resume_step=...) already
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Only a run still marked running is closed here; raising from __exit__ would hide
        # the exception that is on its way out.
        if not self.enabled or self.status != "running":
            return
        if exc is not None:
            self.fail(exc)
        else:
            self.complete()
