"""Sweeps: one definition file per paper table or figure, expanded into jobs and run.

``load_sweep("table3")`` reads ``sweeps/table3.yaml``; ``expand_jobs`` turns it into run
folders' overrides; ``run_sweep`` runs them (skipping completed ones) and writes the tables.
"""

from alrp_lab.sweeps.definition import (
    Column,
    Row,
    Scale,
    SweepDefinition,
    available_sweeps,
    default_root,
    load_sweep,
    parse_sweep,
)
from alrp_lab.sweeps.runner import (
    Job,
    SweepReport,
    check_jobs,
    compose_job_config,
    expand_jobs,
    run_job_default,
    run_sweep,
)

__all__ = [
    "Column",
    "Job",
    "Row",
    "Scale",
    "SweepDefinition",
    "SweepReport",
    "available_sweeps",
    "check_jobs",
    "compose_job_config",
    "default_root",
    "expand_jobs",
    "load_sweep",
    "parse_sweep",
    "run_job_default",
    "run_sweep",
]
