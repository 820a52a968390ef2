"""Reading a run folder's files: ``results.json`` and ``metrics.jsonl`` (the typed schema
:mod:`alrp_lab.tracking.results` documents), where its checkpoint lives, and finding run
folders below a root."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from alrp_lab.errors import ResultsError, ResultsNotFoundError
from alrp_lab.utils.io import read_jsonl

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
# The run's training state: CHECKPOINT_DIR/last.pt, the one file a resume reads.
CHECKPOINT_DIR = "checkpoints"
STATUSES = ("running", "completed", "failed")

PathLike = str | os.PathLike[str]

__all__ = [
    "CHECKPOINT_DIR",
    "METRICS_FILE",
    "RESULTS_FILE",
    "STATUSES",
    "checkpoint_path",
    "find_runs",
    "is_completed",
    "is_run_config",
    "read_metrics",
    "read_results",
]


def checkpoint_path(run_dir: PathLike) -> Path:
    """``run_dir/checkpoints/last.pt``: where a run keeps the state it resumes from."""
    return Path(run_dir) / CHECKPOINT_DIR / "last.pt"


def _results_path(run_dir: PathLike) -> Path:
    path = Path(run_dir)
    return path if path.name == RESULTS_FILE and not path.is_dir() else path / RESULTS_FILE


def read_results(run_dir: PathLike) -> dict[str, Any]:
    """Load a run's ``results.json`` (``run_dir`` may also be the file itself).

    Raises :class:`FileNotFoundError` when it is missing and :class:`ValueError` naming the
    file when it is not a results file (unparsable, or without a valid ``status``).
    """
    path = _results_path(run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsNotFoundError(
            f"no {RESULTS_FILE} in {path.parent}: the run never started there, or the path is "
            "not a run folder"
        ) from None
    try:
        results = json.loads(text)
    except ValueError as err:
        raise ResultsError(
            f"{path} is not valid JSON ({err}); it was edited or damaged: delete the run "
            "folder and run it again"
        ) from None
    if not isinstance(results, dict) or results.get("status") not in STATUSES:
        raise ResultsError(
            f"{path} is not an alrp-lab results file (no status among {', '.join(STATUSES)}): "
            "delete the run folder and run it again"
        )
    return results


def read_metrics(run_dir: PathLike) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl``, in the order they were logged."""
    return read_jsonl(Path(run_dir) / METRICS_FILE)


def is_completed(run_dir: PathLike) -> bool:
    """True when the run's results say ``completed``; False when missing, running or failed."""
    try:
        return read_results(run_dir)["status"] == "completed"
    except (FileNotFoundError, ValueError):
        return False


def is_run_config(config: Any) -> bool:
    """Whether a results.json's ``config`` is a run's resolved config, and not the stand-in
    (``{"overrides": [...]}``) a sweep records for a job that failed before training."""
    return isinstance(config, dict) and isinstance(config.get("train"), dict)


def find_runs(root: PathLike) -> list[Path]:
    """Every folder at or below ``root`` that holds a ``results.json``, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise ResultsNotFoundError(f"{root} is not a folder: pass the sweep or outputs folder")
    return sorted(path.parent for path in root.rglob(RESULTS_FILE) if path.is_file())
