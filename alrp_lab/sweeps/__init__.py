"""Sweeps: one definition file per paper table or figure, expanded into jobs and run.

``load_sweep("table3")`` reads ``sweeps/table3.yaml``; ``expand_jobs`` turns it into run
folders' overrides; ``run_sweep`` runs them (skipping completed ones) and writes the tables.

The definitions (:mod:`alrp_lab.sweeps.definition`) are a leaf that the report reads too;
the runner, which trains and then writes tables through the report, is imported only when
one of its names is asked for, so that importing a definition never pulls in the runner
(and the report never imports itself through it).
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

_RUNNER_NAMES = (
    "Job",
    "SweepReport",
    "check_jobs",
    "compose_job_config",
    "expand_jobs",
    "run_job_default",
    "run_sweep",
)

__all__ = [
    "Column",
    "Row",
    "Scale",
    "SweepDefinition",
    "available_sweeps",
    "default_root",
    "load_sweep",
    "parse_sweep",
    *_RUNNER_NAMES,
]


def __getattr__(name: str):
    if name in _RUNNER_NAMES:
        from alrp_lab.sweeps import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'alrp_lab.sweeps' has no attribute {name!r}")
