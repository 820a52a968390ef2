"""Reusing finished runs of other sweep folders (``alrp-lab sweep NAME --reuse DIR``)."""

from __future__ import annotations

import pytest

from alrp_lab.errors import SweepError
from alrp_lab.sweeps import reuse as reuse_module
from alrp_lab.sweeps import runner as runner_module
from alrp_lab.sweeps.processes import run_lock
from alrp_lab.sweeps.reuse import COPIED_FROM, copy_run, index_completed_runs
from alrp_lab.sweeps.runner import expand_jobs, run_sweep
from alrp_lab.tracking.results import is_completed, read_results
from alrp_lab.tracking.staleness import run_digest
from alrp_lab.utils.io import atomic_write_json
from tests.sweeps.test_runner import fake_job

# The toy sweep is conftest.py's ``defn``.
pytestmark = pytest.mark.usefixtures("no_git")


def _finished(run_dir, config, status="completed", files=("metrics.jsonl",), checkpoint=True):
    """A run folder as training leaves it: results, logs and a checkpoint."""
    for name in files:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(f"{name} of {run_dir.name}\n")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    if checkpoint:
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"weights")
    atomic_write_json(
        run_dir / "results.json", {"status": status, "metrics": {"AP": 0.7}, "config": config}
    )


def _config(defn, job, **changes):
    config = runner_module._resolved(job, defn, "cpu")
    for key, value in changes.items():
        section, leaf = key.split(".")
        config[section][leaf] = value
    return config


def test_the_index_holds_completed_runs_by_what_they_compute(defn, tmp_path):
    jobs = expand_jobs(defn, seeds=2)
    other = tmp_path / "other"
    _finished(other / "a" / "seed0", _config(defn, jobs[0]))
    _finished(other / "b" / "seed0", _config(defn, jobs[1]), status="failed")
    (other / "c" / "seed0").mkdir(parents=True)
    (other / "c" / "seed0" / "results.json").write_text("{not json")
    index = index_completed_runs([other])
    assert index == {run_digest(_config(defn, jobs[0])): other / "a" / "seed0"}
    # The sweep's own folder is not a source of copies.
    assert index_completed_runs([tmp_path], exclude=other) == {}
    with pytest.raises(SweepError, match="--reuse .*nowhere: no such folder of runs"):
        index_completed_runs([tmp_path / "nowhere"])


def test_a_copy_takes_the_runs_files_but_not_its_checkpoints(tmp_path):
    source, target = tmp_path / "src" / "seed0", tmp_path / "dst" / "seed0"
    _finished(source, {"seed": 0}, files=("metrics.jsonl", "plots/grad_balance.csv"))
    # A failed attempt in the target: its files go, so its logs cannot mix with the copy.
    _finished(target, {"seed": 0}, status="failed", files=("detections_val.json",))
    (target / "checkpoints" / "last.pt").unlink()  # it stopped before its first checkpoint
    (target / "checkpoints" / ".last.pt.x.tmp").write_bytes(b"a killed write")
    copy_run(source, target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        ".lock",
        "metrics.jsonl",
        "plots/grad_balance.csv",
        "results.json",
    ]
    assert (target / "metrics.jsonl").read_text() == "metrics.jsonl of seed0\n"
    copied = read_results(target)
    # The source relative to the copy: valid wherever the two folders move together.
    assert copied[COPIED_FROM] == "../../src/seed0"
    assert {k: v for k, v in copied.items() if k != COPIED_FROM} == read_results(source)
    # A copy of the copy names the run that was trained.
    copy_run(target, tmp_path / "third" / "x" / "seed0")
    assert read_results(tmp_path / "third" / "x" / "seed0")[COPIED_FROM] == "../../../src/seed0"


def test_a_copy_never_replaces_a_run_that_can_resume(tmp_path):
    source, target = tmp_path / "src", tmp_path / "dst"
    _finished(source, {"seed": 0})
    _finished(target, {"seed": 0}, status="running")
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    with pytest.raises(SweepError, match="holds a checkpoint: resume it"):
        copy_run(source, target)
    after = {p: p.read_bytes() for p in target.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == {p: b for p, b in before.items() if p.name != ".lock"}


def test_an_interrupted_copy_leaves_no_completed_run(tmp_path, monkeypatch):
    source, target = tmp_path / "src", tmp_path / "dst"
    _finished(source, {"seed": 0})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reuse_module, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        copy_run(source, target)
    assert (target / "metrics.jsonl").is_file() and not is_completed(target)


def test_a_sweep_copies_the_runs_another_folder_computed(defn, tmp_path):
    jobs = expand_jobs(defn, seeds=2)  # iou__wr1/seed0, iou__wr1/seed1, iou__wr5/seed0, ...
    other, root = tmp_path / "other", tmp_path / "toy"
    _finished(other / "same" / "seed0", _config(defn, jobs[0]))
    # The same job at a seed this sweep does not run, and at another lr: not this sweep's.
    _finished(other / "seed" / "seed9", _config(defn, jobs[0]) | {"seed": 9})
    _finished(other / "lr" / "seed0", _config(defn, jobs[4], **{"train.lr": 0.5}))
    dry = run_sweep(defn, root=root, run_job=fake_job, seeds=2, reuse=[other], dry_run=True)
    assert dry.copied == {jobs[0].run_id: str(other / "same" / "seed0")}
    assert dry.pending == [job.run_id for job in jobs[1:]]
    assert not root.exists(), "a dry run copies nothing"

    report = run_sweep(defn, root=root, run_job=fake_job, seeds=2, reuse=[other])
    assert report.copied == dry.copied
    # Trained: iou__wr1 at seed 1 and giou__wr1 at both seeds (the wr 5 jobs fail).
    assert (root / "calls.log").read_text().split() == ["iou__wr1", "giou__wr1", "giou__wr1"]
    assert read_results(root / jobs[0].run_id)["metrics"] == {"AP": 0.7}
    # Next time the copy is one of the sweep's own completed runs.
    again = run_sweep(defn, root=root, run_job=fake_job, seeds=2, reuse=[other], dry_run=True)
    assert jobs[0].run_id in again.skipped and again.copied == {}


def test_a_run_with_its_own_checkpoint_resumes_rather_than_copies(defn, tmp_path):
    job = expand_jobs(defn)[0]
    other, root = tmp_path / "other", tmp_path / "toy"
    _finished(other / "same" / "seed0", _config(defn, job))
    _finished(root / job.run_id, _config(defn, job), status="running")
    report = run_sweep(defn, root=root, run_job=fake_job, reuse=[other], dry_run=True)
    assert report.copied == {} and job.run_id in report.pending


def test_rerun_copies_over_stale_runs_checkpoints_and_all(defn, tmp_path):
    job = expand_jobs(defn)[0]
    other, root = tmp_path / "other", tmp_path / "toy"
    _finished(other / "same" / "seed0", _config(defn, job))
    _finished(root / job.run_id, _config(defn, job, **{"train.lr": 0.5}))  # stale, with last.pt
    # The default runner (staleness is checked for it only); the one job is copied, so
    # nothing trains.
    kwargs = {"root": root, "reuse": [other], "only": [job.id], "write_tables": False}
    with pytest.raises(SweepError, match="another config"):
        run_sweep(defn, **kwargs)
    report = run_sweep(defn, rerun=True, **kwargs)
    assert report.copied == {job.run_id: str(other / "same" / "seed0")}
    assert not (root / job.run_id / "checkpoints").exists()
    assert read_results(root / job.run_id)["config"]["train"]["lr"] == 0.02


@pytest.mark.parametrize("copied", [True, False], ids=["copy", "train"])
def test_rerun_leaves_a_stale_run_that_another_process_trains_alone(
    defn, tmp_path, monkeypatch, copied
):
    job = expand_jobs(defn)[0]
    other, root = tmp_path / "other", tmp_path / "toy"
    if copied:
        _finished(other / "same" / "seed0", _config(defn, job))
    stale = root / job.run_id
    _finished(stale, _config(defn, job, **{"train.lr": 0.5}), status="running")
    trained = []
    monkeypatch.setattr(runner_module, "run_job_default", lambda *a, **k: trained.append(a))
    kwargs = {"root": root, "reuse": [other] if copied else (), "only": [job.id]}
    with run_lock(stale):  # the run another process is training, with its old config
        report = run_sweep(defn, rerun=True, write_tables=False, **kwargs)
    assert "being trained by another process" in report.failed[job.run_id]
    assert report.copied == {} and trained == []
    # Nothing of it was deleted or overwritten.
    assert (stale / "checkpoints" / "last.pt").read_bytes() == b"weights"
    assert read_results(stale)["config"]["train"]["lr"] == 0.5


def test_a_copy_that_fails_fails_that_run_only(defn, tmp_path, monkeypatch):
    jobs = expand_jobs(defn)
    other, root = tmp_path / "other", tmp_path / "toy"
    _finished(other / "a" / "seed0", _config(defn, jobs[0]))
    _finished(other / "b" / "seed0", _config(defn, jobs[2]))

    def locked(source, target):
        if target.parent.name == jobs[0].id:
            raise runner_module.RunLocked(f"{target} is being trained by another process")
        return copy_run(source, target)

    monkeypatch.setattr(runner_module, "copy_run", locked)
    lines: list[str] = []
    report = run_sweep(defn, root=root, run_job=fake_job, reuse=[other], announce=lines.append)
    assert "being trained by another process" in report.failed[jobs[0].run_id]
    assert list(report.copied) == [jobs[2].run_id]
    assert not (root / "calls.log").exists(), "neither the copied nor the locked run trained"
    assert not (root / jobs[0].run_id / "results.json").exists()
    # Named before the count of the runs it trains begins, and not counted in it.
    target = root / jobs[0].run_id
    assert lines[:2] == [
        f"{jobs[0].run_id} not started: {target} is being trained by another process",
        f"{root}: training 2 run(s) (1 copied)",
    ]
    assert [line.split("] ")[0] for line in lines[2:]] == ["[1/2", "[2/2"]


def test_a_reuse_folder_must_be_another_sweeps(defn, tmp_path, caplog):
    root = tmp_path / "toy"
    (root / "inside").mkdir(parents=True)
    with pytest.raises(SweepError, match="inside the sweep's own folder"):
        run_sweep(defn, root=root, run_job=fake_job, reuse=[root / "inside"], dry_run=True)
    (tmp_path / "empty").mkdir()
    run_sweep(defn, root=root, run_job=fake_job, reuse=[tmp_path / "empty"], dry_run=True)
    assert "no completed run there, nothing to copy" in caplog.text
