"""Sweeps and multiruns through submitit: the launcher's settings, a SLURM batch script (with
a stand-in srun), and local submitit jobs end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from alrp_lab.cli import main
from alrp_lab.errors import SweepError
from alrp_lab.sweeps import cluster
from alrp_lab.sweeps.cluster import Launcher, split_launcher_overrides

TINY_SWEEP = """
title: Tiny
kind: metrics
metrics: [AP]
scales:
  cpu:
    overrides: [debug=smoke]
rows:
  - {label: aLRP, id: alrp, overrides: [loss=alrp]}
  - {label: Focal, id: focal, overrides: [loss=focal, box_error=l1]}
"""


def test_the_launcher_overrides_leave_the_jobs_overrides():
    rest, name, params = split_launcher_overrides(
        ["loss=ap", "hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=4",
         "hydra.launcher.partition=gpu", "train.epochs=2"]
    )  # fmt: skip
    assert rest == ["loss=ap", "train.epochs=2"]
    assert name == "submitit_slurm" and params == {"gpus_per_node": 4, "partition": "gpu"}
    with pytest.raises(SweepError, match="needs a launcher: add hydra/launcher=submitit_slurm"):
        split_launcher_overrides(["hydra.launcher.partition=gpu"])


def test_bad_launchers_and_settings_name_the_fix(tmp_path):
    with pytest.raises(SweepError, match="hydra/launcher=joblib cannot run a sweep.*--jobs"):
        Launcher("joblib", {}, tmp_path, "x")
    with pytest.raises(SweepError, match="hydra.launcher.partition is not a setting of .*local"):
        Launcher("submitit_local", {"partition": "gpu"}, tmp_path, "x")


def test_slurm_without_a_cluster_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    launcher = Launcher("submitit_slurm", {}, tmp_path, "x")
    with pytest.raises(SweepError, match="cannot start here.*submitit_local"):
        launcher.executor()


def test_slurm_batch_script_carries_the_settings(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    params = {"partition": "gpu", "gpus_per_node": 4, "timeout_min": 600, "setup": ["ml cuda"]}
    launcher = Launcher("submitit_slurm", params, tmp_path / "sweep", "alrp-lab-table3")
    script = launcher.executor()._executor._make_submission_file_text("python -c 1", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=600",
        "#SBATCH --job-name=alrp-lab-table3",
        "ml cuda",
    ):
        assert line in script
    assert str(tmp_path / "sweep" / ".submitit") in script


@pytest.mark.slow
def test_a_sweep_runs_its_jobs_as_local_submitit_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    definition = tmp_path / "tiny.yaml"
    definition.write_text(TINY_SWEEP)
    root = tmp_path / "sweep"
    code = main(
        ["sweep", str(definition), "--root", str(root), "logger=none",
         "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20"]
    )  # fmt: skip
    assert code == 0
    for job in ("alrp", "focal"):
        results = json.loads((root / job / "seed0" / "results.json").read_text())
        assert results["status"] == "completed"
    # submitit's own folder, under the sweep's.
    assert (root / ".submitit").is_dir()
    assert (root / "tiny.md").is_file()


@pytest.mark.slow
def test_run_multirun_with_the_submitit_local_launcher(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = main(
        ["run", "-m", "debug=smoke", "loss=alrp,focal", "hydra/launcher=submitit_local",
         f"hydra.sweep.dir={tmp_path}"]
    )  # fmt: skip
    assert code == 0
    folders = sorted(p for p in Path(tmp_path).iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(folders) == 2
    for folder in folders:
        assert json.loads((folder / "results.json").read_text())["status"] == "completed"


class _Job:
    """A stand-in submitit job: its result() runs the call, or raises as a killed job does."""

    def __init__(self, call, killed: bool) -> None:
        self.call, self.killed = call, killed

    def done(self) -> bool:
        return True

    def result(self):
        if self.killed:
            raise RuntimeError("Job 1234 (task: 0) with path ... has state TIMEOUT")
        return self.call()


class _Executor:
    def map_array(self, fn, *columns):
        calls = list(zip(*columns, strict=True))
        # The second job is killed by the cluster before it writes anything.
        return [_Job(lambda c=c: fn(*c), killed=i == 1) for i, c in enumerate(calls)]


@pytest.mark.slow
def test_a_job_the_cluster_kills_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(Launcher, "executor", lambda self: _Executor())
    definition = tmp_path / "tiny.yaml"
    definition.write_text(TINY_SWEEP)
    root = tmp_path / "sweep"
    code = main(
        ["sweep", str(definition), "--root", str(root), "logger=none",
         "hydra/launcher=submitit_local"]
    )  # fmt: skip
    assert code != 0
    assert json.loads((root / "alrp" / "seed0" / "results.json").read_text())["status"] == (
        "completed"
    )
    killed = json.loads((root / "focal" / "seed0" / "results.json").read_text())
    assert killed["status"] == "failed" and "TIMEOUT" in killed["error"]
    assert (root / "tiny.md").is_file()  # the table of what finished is still written


class _SlowJob:
    """Ends after ``polls`` calls of done(); its result is its index, or a cluster's kill."""

    def __init__(self, index: int, polls: int, killed: bool) -> None:
        self.index, self.polls, self.killed = index, polls, killed

    def done(self) -> bool:
        self.polls -= 1
        return self.polls <= 0

    def result(self):
        if self.killed:
            raise RuntimeError("has state TIMEOUT")
        return self.index


def test_run_all_reports_each_job_as_it_ends_and_returns_them_in_order(tmp_path, monkeypatch):
    class Executor:
        def map_array(self, fn, *columns):
            n = len(columns[0])
            return [_SlowJob(i, polls=n - i, killed=i == 1) for i in range(n)]

    monkeypatch.setattr(cluster, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(Launcher, "executor", lambda self: Executor())
    ended: list[tuple[int, object]] = []
    outcomes = Launcher("submitit_local", {}, tmp_path, "x").run_all(
        print, [(0,), (1,), (2,)], on_done=lambda i, out: ended.append((i, out))
    )
    assert [i for i, _ in ended] == [2, 1, 0]  # the last submitted ended first
    assert outcomes[0] == 0 and outcomes[2] == 2
    assert isinstance(outcomes[1], RuntimeError) and ended[1][1] is outcomes[1]


def test_an_error_after_one_job_still_collects_the_others(tmp_path, monkeypatch, caplog):
    class Executor:
        def map_array(self, fn, *columns):
            return [_SlowJob(i, polls=1, killed=False) for i in range(len(columns[0]))]

    def broken(index, outcome):
        raise OSError("results folder gone")

    monkeypatch.setattr(cluster, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(Launcher, "executor", lambda self: Executor())
    launcher = Launcher("submitit_local", {}, tmp_path, "x")
    assert launcher.run_all(print, [(0,), (1,)], on_done=broken) == [0, 1]
    assert "after job 1: OSError: results folder gone" in caplog.text
