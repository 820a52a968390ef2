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
source (``copied_from``, relative to the copy's folder); its provenance (commit, times,
versions) stays the source's, as the run was made there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from alrp_lab.errors import SweepError
from alrp_lab.sweeps.processes import LOCK_FILE, run_lock
from alrp_lab.tracking.results import (
    CHECKPOINT_DIR,
    RESULTS_FILE,
    checkpoint_path,
    find_runs,
    read_results,
)
from alrp_lab.tracking.staleness import run_digest
from alrp_lab.utils.io import atomic_copy_file, atomic_write_json

log = logging.getLogger(__name__)

# Training state, not results: a copied run is complete and never resumes.
SKIPPED_DIRS = (CHECKPOINT_DIR,)
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
    folder or lies inside ``exclude`` (all its runs would be left out); logs a warning for
    a root without a completed run.
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    index: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise SweepError(f"--reuse {root}: no such folder of runs")
        if excluded is not None and root.resolve().is_relative_to(excluded):
            raise SweepError(
                f"--reuse {root} is inside the sweep's own folder {exclude}, whose runs are "
                "never copied: name another sweep's folder"
            )
        found = 0
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
                found += 1
        if not found:
            log.warning("--reuse %s: no completed run there, nothing to copy", root)
    return index


def copy_run(source: Path, target: Path) -> None:
    """Copy the completed run in ``source`` into the run folder ``target``.

    ``target`` holds no run or a failed attempt without a checkpoint; the attempt's files
    are removed first, so its logs cannot mix with the copy's. Raises :class:`SweepError`
    when ``target`` holds a checkpoint (that run resumes: nothing of it is deleted) and
    :class:`~alrp_lab.sweeps.processes.RunLocked` when a sweep is training there.

    ``copied_from`` is the source's path relative to ``target`` (valid in any clone of a
    repository that holds both), the first source's where ``source`` is itself a copy.
    """
    results = read_results(source)
    origin = source
    if results.get(COPIED_FROM):
        origin = Path(os.path.normpath(source / results[COPIED_FROM]))
    with run_lock(target):
        if checkpoint_path(target).is_file():
            raise SweepError(f"{target} holds a checkpoint: resume it instead of copying over it")
        for path in _run_files(target, keep_checkpoints=False):
            path.unlink()
        for path in _run_files(source):
            atomic_copy_file(path, target / path.relative_to(source))
        # Last: until it is there the folder holds no completed run.
        relative = os.path.relpath(origin.resolve(), target.resolve())
        atomic_write_json(target / RESULTS_FILE, {**results, COPIED_FROM: relative})
    log.info("copied %s from %s", target, origin)


def _run_files(run_dir: Path, *, keep_checkpoints: bool = True) -> list[Path]:
    """A run folder's files other than its lock, ``results.json`` and (unless
    ``keep_checkpoints`` is false) its checkpoints."""
    skipped = SKIPPED_DIRS if keep_checkpoints else ()
    return [
        path
        for path in sorted(run_dir.rglob("*"))
        if path.is_file()
        and path.relative_to(run_dir).parts[0] not in skipped
        and path.name not in (LOCK_FILE, RESULTS_FILE)
    ]
