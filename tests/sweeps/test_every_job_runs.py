"""One training step of every job of every sweep, through the real engine (slow)."""

from __future__ import annotations

import pytest

from alrp_lab.sweeps import available_sweeps, load_sweep, run_sweep

# Last on the command line, so they win over each sweep's cpu-scale overrides.
ONE_STEP = [
    "debug=smoke",
    "data.num_train=16",
    "data.num_val=8",
    "train.epochs=1",
    "train.max_iters_per_epoch=1",
    "train.warmup_iters=1",
    "logger=none",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", available_sweeps())
def test_every_job_of_the_sweep_trains_one_step(name, tmp_path):
    report = run_sweep(load_sweep(name), root=tmp_path, extra_overrides=ONE_STEP, seeds=1)
    assert not report.failed, report.failed
    assert sorted(report.completed) == sorted(job.run_id for job in report.jobs)
    assert report.tables, "a finished sweep writes its tables"
