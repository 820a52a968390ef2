"""Export a sweep folder's finished runs as their record files alone, for a folder that is
committed (``results/``): ``alrp-lab export SOURCE TARGET``.

A sweep trains into a working folder (a separate clone, so that edits never reach a run
that starts later) whose run folders hold checkpoints, detections and logs of megabytes.
The tables need only each run's ``results.json`` (and ``metrics.jsonl`` for the curve
columns and the rebound; ``grad_balance.csv``, where the run wrote one, for Figure 4's
plot); those, and the sweep's ``sweep.json``, are what is copied. A
table rebuilds from the copy alone, and a sweep into the copy resumes where it stopped.

Per completed run under SOURCE, at the same relative path under TARGET:

- the record files present in the source run are copied, each atomically and
  ``results.json`` last, so an interrupted export leaves no completed run that lacks a file;
- a target that holds the same ``results.json`` gets only the files it lacks or that
  differ (a ``metrics.jsonl`` missing before);
- a target that holds another completed run is left alone (a conflict, reported by name)
  unless ``replace``: nothing already recorded is lost by an export;
- a target whose run is not completed (stopped, failed) is replaced by the finished one.

Runs that are not completed in SOURCE are not exported. ``sweep.json`` is copied when the
target lacks it or holds another one (the source's sweep made the runs).
"""

from __future__ import annotations

import filecmp
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alrp_lab.errors import SweepError
from alrp_lab.sweeps.definition import SWEEP_FILE
from alrp_lab.tracking.grad_balance import GRAD_BALANCE_FILE
from alrp_lab.tracking.results import METRICS_FILE, RESULTS_FILE, find_runs, is_completed
from alrp_lab.utils.io import atomic_copy_file

PathLike = str | os.PathLike[str]

# What a committed run folder holds: the record, the log the curve columns read, and the
# ratio per iteration that Figure 4's plot draws (only runs with train.grad_balance have it).
RECORD_FILES = (RESULTS_FILE, METRICS_FILE, GRAD_BALANCE_FILE)

__all__ = ["RECORD_FILES", "ExportReport", "export_runs"]


@dataclass
class ExportReport:
    """What :func:`export_runs` did, by run folder relative to the roots (``a/seed0``):
    ``copied`` runs new to the target (or replacing an unfinished or, with ``replace``, a
    different one), ``updated`` the same run given files it lacked, ``unchanged`` runs the
    target already held whole, ``conflicts`` runs left alone because the target holds
    another completed run. ``sweep_file`` is true when ``sweep.json`` was copied."""

    copied: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    sweep_file: bool = False


def _same(a: Path, b: Path) -> bool:
    return b.is_file() and filecmp.cmp(a, b, shallow=False)


def _copy_record(source: Path, target: Path, files: Sequence[str]) -> bool:
    """Copy the record files of ``source`` that ``target`` lacks or holds otherwise,
    ``results.json`` last; whether any was copied."""
    ordered = [name for name in files if name != RESULTS_FILE] + [RESULTS_FILE]
    copied = False
    for name in ordered:
        if (source / name).is_file() and not _same(source / name, target / name):
            target.mkdir(parents=True, exist_ok=True)
            atomic_copy_file(source / name, target / name)
            copied = True
    return copied


def export_runs(
    source: PathLike,
    target: PathLike,
    *,
    files: Sequence[str] = RECORD_FILES,
    replace: bool = False,
) -> ExportReport:
    """Copy the record ``files`` of every completed run under ``source`` to the same
    relative folder under ``target`` (the module's rules), and ``sweep.json``.

    Raises :class:`SweepError` when ``source`` is not a folder, when ``target`` lies inside
    it (the copies would be found as runs), or when ``files`` leaves out ``results.json``.
    """
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise SweepError(f"{source} is not a folder: name the sweep folder to export from")
    if RESULTS_FILE not in files:
        raise SweepError(f"the export needs {RESULTS_FILE}: it is what makes a run a run")
    if target.resolve().is_relative_to(source.resolve()):
        raise SweepError(f"{target} lies inside {source}: export into another folder")
    report = ExportReport()
    for run in find_runs(source):
        if not is_completed(run):
            continue
        rel = run.relative_to(source)
        there = target / rel
        name = rel.as_posix()
        if _same(run / RESULTS_FILE, there / RESULTS_FILE):
            (report.updated if _copy_record(run, there, files) else report.unchanged).append(name)
            continue
        if is_completed(there) and not replace:
            report.conflicts.append(name)
            continue
        # The run there goes first, so that an interrupted copy leaves no completed run
        # that mixes two runs' files; then any of its files the source has none of.
        (there / RESULTS_FILE).unlink(missing_ok=True)
        for each in files:
            if not (run / each).is_file() and (there / each).is_file():
                (there / each).unlink()
        _copy_record(run, there, files)
        report.copied.append(name)
    if (source / SWEEP_FILE).is_file() and not _same(source / SWEEP_FILE, target / SWEEP_FILE):
        target.mkdir(parents=True, exist_ok=True)
        atomic_copy_file(source / SWEEP_FILE, target / SWEEP_FILE)
        report.sweep_file = True
    return report
