"""Reuse finished runs of other sweep folders: a job that computes what a completed run
elsewhere already computed is copied, not trained again.

The paper's tables share cells: Table 2's "aLRP (GIoU) + SB" is Table 3's GIoU/SB cell and
Table 4's first value 50, and a study that sets a scale (``sweeps/regime.yaml``) has run
some of them before. ``alrp-lab sweep NAME --reuse DIR`` looks under DIR for completed
runs whose recorded config computes the same thing as a pending job at the same seed (the
comparison of :mod:`alrp_lab.tracking.staleness`, which is also how a sweep decides that a
run of its own folder is done) and copies that run's files into the job's folder.

What is copied: every file of the run folder except its checkpoints and lock, each file
atomically, ``results.json`` last, so an interrupted copy leaves a run that is not
completed and is copied (or trained) again next time. The copy's ``results.json`` names its
source (``copied_from``); its provenance (commit, times, versions) stays the source's, as
the run was made there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from alrp_lab.errors import SweepError
from alrp_lab.sweeps.processes import LOCK_FILE, run_lock
from alrp_lab.tracking.results import RESULTS_FILE, find_runs, read_results
from alrp_lab.tracking.staleness import run_digest
from alrp_lab.utils.io import atomic_copy_file, atomic_write_json

log = logging.getLogger(__name__)

# Training state, not results: a copied run is complete and never resumes.
SKIPPED_DIRS = ("checkpoints",)
COPIED_FROM = "copied_from"

__all__ = ["COPIED_FROM", "copy_run", "index_completed_runs"]


def index_completed_runs(
    roots: Iterable[str | os.PathLike[str]], *, exclude: str | os.PathLike[str] | None = None
) -> dict[str, Path]:
    """The completed runs under ``roots``, by the digest of what they compute.

    Args:
        roots: folders searched recursively for ``results.json`` files.
        exclude: a folder whose runs are left out (the sweep's own).

    Returns ``{run_digest(config): run_folder}``; where two runs compute the same thing the
    first found (sorted paths) is kept. Raises :class:`SweepError` when a root is not a
    folder.
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    index: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise SweepError(f"--reuse {root}: no such folder of runs")
        for run_dir in find_runs(root):
            if excluded is not None and run_dir.resolve().is_relative_to(excluded):
                continue
            try:
                results = read_results(run_dir)
            except ValueError:  # a damaged results file is nothing to reuse
                continue
            config = results.get("config")
            if results.get("status") == "completed" and isinstance(config, Mapping):
                index.setdefault(run_digest(config), run_dir)
    return index


def copy_run(source: Path, target: Path) -> None:
    """Copy the completed run in ``source`` into the run folder ``target``.

    ``target`` holds no run or a failed attempt (the sweep reuses nothing into a folder
    with a checkpoint: that run resumes); the attempt's files are removed first, so its
    logs cannot mix with the copy's. Holds ``target``'s lock, so a sweep training there
    makes this raise :class:`~alrp_lab.sweeps.processes.RunLocked`.
    """
    results = read_results(source)
    with run_lock(target):
        for path in _run_files(target):
            path.unlink()
        for path in _run_files(source):
            atomic_copy_file(path, target / path.relative_to(source))
        # Last: until it is there the folder holds no completed run.
        atomic_write_json(target / RESULTS_FILE, {**results, COPIED_FROM: str(source)})
    log.info("copied %s from %s", target, source)


def _run_files(run_dir: Path) -> list[Path]:
    """A run folder's files other than its checkpoints, lock and ``results.json``."""
    return [
        path
        for path in sorted(run_dir.rglob("*"))
        if path.is_file()
        and path.relative_to(run_dir).parts[0] not in SKIPPED_DIRS
        and path.name not in (LOCK_FILE, RESULTS_FILE)
    ]
