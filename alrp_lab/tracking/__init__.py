"""A run's records: results files (the record itself) and a W&B mirror (rank 0 only)."""

from alrp_lab.tracking.results import (
    RunRecorder,
    config_digest,
    find_runs,
    is_completed,
    read_metrics,
    read_results,
)
from alrp_lab.tracking.wandb_run import WandbRun

__all__ = [
    "RunRecorder",
    "WandbRun",
    "config_digest",
    "find_runs",
    "is_completed",
    "read_metrics",
    "read_results",
]
