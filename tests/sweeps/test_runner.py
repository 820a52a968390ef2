from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from alrp_lab.errors import SweepError
from alrp_lab.sweeps import runner as runner_module
from alrp_lab.sweeps.definition import load_sweep, parse_sweep
from alrp_lab.sweeps.runner import (
    compose_job_config,
    expand_jobs,
    run_sweep,
)
from alrp_lab.sweeps.time_left import TimeLeft
from alrp_lab.tracking.code_digest import code_record
from alrp_lab.tracking.results import RunRecorder, read_results
from alrp_lab.utils.io import atomic_write_json

RAW = {
    "title": "Toy grid",
    "kind": "grid",
    "metric": "AP",
    "base": ["loss=alrp"],
    "scales": {
        # A fixed lr and SB from the first iteration: the staleness tests below change them.
        "cpu": {"overrides": ["train.epochs=1", "train.lr=0.02", "loss.sb_start=null"]},
        "paper": {"overrides": ["data=coco"], "requires": ["data.root", "backbone.weights"]},
    },
    "rows": [
        {
            "label": "IoU",
            "overrides": ["box_error=iou"],
            "paper": {"1": 30.0},
            "scale_overrides": {"paper": ["train.lr=0.002"]},
        },
        {"label": "GIoU", "overrides": ["box_error=giou"]},
    ],
    "columns": [
        {"label": "1", "id": "wr1", "overrides": ["loss.self_balance=false", "loss.wr=1"]},
        {"label": "5", "id": "wr5", "overrides": ["loss.self_balance=false", "loss.wr=5"]},
    ],
}


pytestmark = pytest.mark.usefixtures("no_git")  # tests/sweeps/conftest.py


def fake_job(overrides, run_dir):
    """Stands in for training: AP = wr / 10; wr=5 with GIoU diverges as the engine would
    report it (results.json failed), wr=5 with IoU fails before writing anything."""
    wr = float(next(o for o in overrides if o.startswith("loss.wr=")).split("=")[1])
    if wr == 5 and "box_error=iou" in overrides:
        raise ValueError("bad config before any run started")
    recorder = RunRecorder(run_dir, {"overrides": list(overrides)})
    recorder.start()
    if wr == 5:
        error = FloatingPointError("the loss became nan")
        recorder.fail(error)
        raise error
    log = Path(run_dir).parents[1] / "calls.log"
    with log.open("a") as fh:
        fh.write(Path(run_dir).parent.name + "\n")
    return recorder.complete({"AP": wr / 10})


def light_job(overrides, run_dir):
    """fake_job without RunRecorder (whose provenance imports torch: seconds per worker)."""
    wr = float(next(o for o in overrides if o.startswith("loss.wr=")).split("=")[1])
    status = "failed" if wr == 5 else "completed"
    atomic_write_json(
        Path(run_dir) / "results.json",
        {"status": status, "metrics": {"AP": wr / 10}, "error": "Boom: wr=5"},
    )
    if wr == 5:
        raise RuntimeError("wr=5")


def test_expand_jobs_orders_overrides_and_names_jobs(defn):
    jobs = expand_jobs(defn, "cpu", ["train.lr=0.1"])
    assert [j.id for j in jobs] == ["iou__wr1", "iou__wr5", "giou__wr1", "giou__wr5"]
    assert jobs[0].overrides == [
        "loss=alrp",
        "train.epochs=1",
        "train.lr=0.02",
        "loss.sb_start=null",
        "box_error=iou",
        "loss.self_balance=false",
        "loss.wr=1",
        "train.lr=0.1",
        "seed=0",
    ]
    assert [j.run_id for j in jobs][:1] == ["iou__wr1/seed0"]
    assert (jobs[0].row, jobs[0].column) == ("IoU", "1")
    paper = expand_jobs(defn, "paper", ["data.root=/c", "+backbone.weights=/w"])
    assert paper[0].overrides[:4] == ["loss=alrp", "data=coco", "box_error=iou", "train.lr=0.002"]
    assert "train.lr=0.002" not in paper[2].overrides


def test_expand_jobs_refuses_unknown_scales_and_missing_required_keys(defn):
    with pytest.raises(ValueError, match="no scale 'gpu': choose one of cpu, paper"):
        expand_jobs(defn, "gpu")
    with pytest.raises(ValueError, match=r"needs backbone.weights: add backbone.weights=\.\.\."):
        expand_jobs(defn, "paper", ["data.root=/c"])
    with pytest.raises(ValueError, match="not an override"):
        expand_jobs(defn, "cpu", ["--dry-run"])


def test_rows_sharing_a_job_make_no_job_of_their_own():
    defn = load_sweep("table5")
    jobs = expand_jobs(defn, seeds=1)
    assert [j.id for j in jobs] == ["alrp-iou-sb"] and jobs[0].column is None


def test_sweep_runs_jobs_records_failures_and_writes_tables(defn, tmp_path):
    root = tmp_path / "toy"
    report = run_sweep(defn, root=root, run_job=fake_job)
    assert report.completed == ["iou__wr1/seed0", "giou__wr1/seed0"]
    assert set(report.failed) == {"iou__wr5/seed0", "giou__wr5/seed0"}
    assert "FloatingPointError: the loss became nan" in report.failed["giou__wr5/seed0"]
    assert "ValueError: bad config" in report.failed["iou__wr5/seed0"]
    # The runner wrote the failure the job could not record itself.
    assert read_results(root / "iou__wr5" / "seed0")["status"] == "failed"
    assert read_results(root / "giou__wr1" / "seed0")["metrics"]["AP"] == pytest.approx(0.1)
    saved = json.loads((root / "sweep.json").read_text())
    assert saved["name"] == "toy" and saved["scale"] == "cpu"
    assert [j["id"] for j in saved["jobs"]] == [j.id for j in report.jobs]
    assert set(report.tables) == {"md", "csv", "tex"}
    md = report.tables["md"].read_text()
    assert report.tables["md"] == root / "toy.md"
    assert "| IoU | ours | 10.0 | failed |" in md and "|  | paper | 30.0 | - |" in md


def test_a_second_run_skips_completed_jobs_and_retries_failed_ones(defn, tmp_path):
    root = tmp_path / "toy"
    run_sweep(defn, root=root, run_job=fake_job, write_tables=False)
    again = run_sweep(defn, root=root, run_job=fake_job, write_tables=False)
    assert again.skipped == ["iou__wr1/seed0", "giou__wr1/seed0"] and again.completed == []
    assert set(again.failed) == {"iou__wr5/seed0", "giou__wr5/seed0"}
    assert (root / "calls.log").read_text().split() == ["iou__wr1", "giou__wr1"]


def test_dry_run_lists_pending_jobs_and_writes_nothing(defn, tmp_path):
    root = tmp_path / "toy"
    report = run_sweep(defn, root=root, run_job=fake_job, dry_run=True)
    assert report.dry_run and report.pending == [j.run_id for j in report.jobs]
    assert not root.exists()


def test_dry_run_says_where_each_pending_run_stands(defn, tmp_path):
    root = tmp_path / "toy"
    failed = root / "iou__wr5" / "seed0"
    failed.mkdir(parents=True)
    (failed / "results.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    stopped = root / "giou__wr1" / "seed0" / "checkpoints"
    stopped.mkdir(parents=True)
    (stopped / "last.pt").write_bytes(b"")  # unreadable, yet a resume would try it
    report = run_sweep(defn, root=root, run_job=fake_job, dry_run=True)
    assert set(report.states) == set(report.pending)
    assert report.states["iou__wr1/seed0"].describe() == "would run"
    assert report.states["iou__wr5/seed0"].describe() == "would run (failed before: boom)"
    assert (
        report.states["giou__wr1/seed0"]
        .describe()
        .startswith("would resume, but its checkpoint is unreadable (EOFError")
    )
    assert report.states["giou__wr1/seed0"].resumes


def test_a_stopped_job_resumes_from_its_checkpoint(defn, tmp_path):
    root = tmp_path / "toy"
    (root / "giou__wr1" / "seed0" / "checkpoints").mkdir(parents=True)
    (root / "giou__wr1" / "seed0" / "checkpoints" / "last.pt").write_bytes(b"")
    seen = {}

    def record(overrides, run_dir):
        seen[Path(run_dir).parent.name] = list(overrides)
        RunRecorder(run_dir, {}).start()

    run_sweep(defn, root=root, run_job=record, write_tables=False)
    assert seen["giou__wr1"][-1] == "train.resume=true"
    assert "train.resume=true" not in seen["iou__wr1"]


def test_a_job_that_returns_without_completing_counts_as_failed(defn, tmp_path):
    report = run_sweep(defn, root=tmp_path, run_job=lambda o, d: None, write_tables=False)
    assert set(report.failed) == {j.run_id for j in report.jobs}
    assert "without a completed results.json" in report.failed["iou__wr1/seed0"]


def test_parallel_jobs_run_in_worker_processes(defn, tmp_path):
    report = run_sweep(defn, root=tmp_path, run_job=light_job, n_jobs=2, write_tables=False)
    assert report.completed == ["iou__wr1/seed0", "giou__wr1/seed0"]
    assert report.failed == {"iou__wr5/seed0": "Boom: wr=5", "giou__wr5/seed0": "Boom: wr=5"}
    with pytest.raises(ValueError, match="n_jobs"):
        run_sweep(defn, root=tmp_path, run_job=fake_job, n_jobs=0)


def test_default_runner_checks_every_config_before_running(tmp_path):
    bad = dict(RAW, base=["loss=alrp", "train.batch_size=abc"])
    with pytest.raises(ValueError, match=r"sweep bad cannot run: iou__wr1: .*train\.batch_size"):
        run_sweep(parse_sweep(bad, name="bad"), root=tmp_path, dry_run=True)
    typo = dict(RAW, base=["loss=alrpp"])
    with pytest.raises(ValueError, match="bad override"):
        run_sweep(parse_sweep(typo, name="typo"), root=tmp_path, dry_run=True)


def test_composed_job_config_carries_the_sweep_group_and_tags():
    cfg = compose_job_config(["loss=ap"], group="table2", tags=("sweep:table2",))
    assert cfg.loss.name == "ap"
    assert cfg.logger.group == "table2" and "sweep:table2" in cfg.logger.tags


@pytest.mark.slow
def test_one_real_table2_job_runs_through_the_engine(tmp_path):
    defn = load_sweep("table2")
    # The ATSS row alone (the fastest), and so none of the claims that name other rows.
    defn = dataclasses.replace(defn, rows=defn.rows[-1:], claims=())
    smoke = [
        "debug=smoke",
        "train.epochs=1",
        "train.max_iters_per_epoch=2",
        "train.warmup_iters=2",
        "logger=none",
    ]
    report = run_sweep(defn, root=tmp_path, extra_overrides=smoke, seeds=1)
    assert report.completed == ["alrp-giou-sb-atss/seed0"] and not report.failed
    results = read_results(tmp_path / "alrp-giou-sb-atss" / "seed0")
    # One W&B group per table job, so the UI averages its seeds.
    assert results["config"]["logger"]["group"] == "table2/alrp-giou-sb-atss"
    assert "seed:0" in results["config"]["logger"]["tags"]
    assert "| aLRP (GIoU) + SB + ATSS | ours |" in report.tables["md"].read_text()
    # Other overrides stop the sweep; --rerun replaces the run with one of the new config.
    with pytest.raises(ValueError, match="another config"):
        run_sweep(defn, root=tmp_path, extra_overrides=[*smoke, "train.lr=0.001"], seeds=1)
    again = run_sweep(
        defn, root=tmp_path, extra_overrides=[*smoke, "train.lr=0.001"], rerun=True, seeds=1
    )
    assert again.completed == ["alrp-giou-sb-atss/seed0"] and again.skipped == []
    results = read_results(tmp_path / "alrp-giou-sb-atss" / "seed0")
    assert results["config"]["train"]["lr"] == 0.001 and results["status"] == "completed"


def test_a_figure_sweep_also_draws_its_plot(tmp_path):
    raw = dict(
        RAW,
        kind="metrics",
        metrics=["grad_ratio_max"],
        figure="grad_balance",
        rows=[{"label": "CE", "overrides": ["loss.wr=1"]}],
    )
    raw.pop("columns")
    raw.pop("metric")

    def job(overrides, run_dir):
        light_job(overrides, run_dir)
        (Path(run_dir) / "grad_balance.csv").write_text("iteration,epoch,ratio\n0,0,2.0\n")

    report = run_sweep(parse_sweep(raw, name="fig"), root=tmp_path, run_job=job)
    assert report.plot == tmp_path / "grad_balance.png" and report.plot.is_file()
    assert "| CE | ours | 2.000 |" in report.tables["md"].read_text()


def test_a_retried_failure_reports_its_own_error_not_the_last_attempts(defn, tmp_path):
    def fail_with(message):
        def job(overrides, run_dir):
            raise RuntimeError(message)

        return job

    run_sweep(defn, root=tmp_path, run_job=fail_with("first"), write_tables=False)
    again = run_sweep(defn, root=tmp_path, run_job=fail_with("second"), write_tables=False)
    assert again.failed["iou__wr1/seed0"] == "RuntimeError: second"
    assert read_results(tmp_path / "iou__wr1" / "seed0")["error"] == "RuntimeError: second"


def test_every_job_runs_once_per_seed_and_more_seeds_run_only_the_new_ones(defn, tmp_path):
    root = tmp_path / "toy"
    calls = []

    def job(overrides, run_dir):
        calls.append(Path(run_dir).relative_to(root).as_posix())
        assert overrides[-1] == f"seed={Path(run_dir).name.removeprefix('seed')}"
        atomic_write_json(
            Path(run_dir) / "results.json",
            {"status": "completed", "metrics": {"AP": 0.1}, "error": None},
        )

    first = run_sweep(defn, root=root, run_job=job, seeds=3, write_tables=False)
    assert len(first.completed) == 12 and "giou__wr5/seed2" in first.completed
    more = run_sweep(defn, root=root, run_job=job, seeds=5, write_tables=False)
    assert len(more.skipped) == 12 and len(more.completed) == 8
    assert sorted(c for c in calls if c.startswith("iou__wr1/")) == [
        f"iou__wr1/seed{s}" for s in range(5)
    ]
    # sweep.json keeps every seed run into the folder, so a later, smaller call still
    # reports the seeds a table should have.
    run_sweep(defn, root=root, run_job=job, seeds=2, write_tables=False)
    manifest = json.loads((root / "sweep.json").read_text())
    assert manifest["seeds"] == [0, 1, 2, 3, 4]
    assert len(manifest["jobs"]) == 20 and {j["seed"] for j in manifest["jobs"]} == set(range(5))


def test_dry_run_lists_every_seed_and_seed_overrides_are_refused(defn, tmp_path):
    report = run_sweep(defn, root=tmp_path, run_job=fake_job, dry_run=True, seeds=3)
    assert len(report.pending) == 12 and report.pending[:3] == [
        "iou__wr1/seed0",
        "iou__wr1/seed1",
        "iou__wr1/seed2",
    ]
    with pytest.raises(ValueError, match="use --seeds"):
        expand_jobs(defn, "cpu", ["seed=4"])
    with pytest.raises(ValueError, match="at least 1"):
        expand_jobs(defn, "cpu", seeds=0)
    assert [j.seed for j in expand_jobs(defn, "cpu", seeds=[3, 7])][:2] == [3, 7]


def test_a_definition_sets_its_default_seed_count(tmp_path):
    defn = parse_sweep(dict(RAW, seeds=2), name="toy")
    assert len(expand_jobs(defn)) == 8
    assert len(expand_jobs(defn, seeds=1)) == 4
    with pytest.raises(ValueError, match="seeds must be a whole number"):
        parse_sweep(dict(RAW, seeds=0), name="toy")


def _complete_as_composed(root, defn, job, **changes):
    """A completed results.json holding the config ``job`` composes (with ``changes``)."""
    config = runner_module._resolved(job, defn, "cpu")
    for key, value in changes.items():
        section, leaf = key.split(".")
        config[section][leaf] = value
    atomic_write_json(
        root / job.run_id / "results.json",
        {"status": "completed", "metrics": {"AP": 0.3}, "config": config},
    )


def test_a_completed_run_is_skipped_only_when_its_config_matches(defn, tmp_path):
    jobs = expand_jobs(defn)
    _complete_as_composed(tmp_path, defn, jobs[0])
    # Where it logs and whether it resumed do not change what a run computes.
    _complete_as_composed(tmp_path, defn, jobs[1], **{"train.resume": True, "logger.mode": "x"})
    report = run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=["logger=none"])
    assert report.skipped == [jobs[0].run_id, jobs[1].run_id]
    # Other overrides on the command line: the old runs are not this sweep's.
    with pytest.raises(
        ValueError,
        match=r"2 completed or resumable run\(s\) .* another config "
        r"\(iou__wr1/seed0 and 1 more; train.lr: recorded 0.02, now 0.5\).*"
        r"--root DIR, or replace them with --rerun",
    ):
        run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=["train.lr=0.5"])
    again = run_sweep(
        defn, root=tmp_path, dry_run=True, rerun=True, extra_overrides=["train.lr=0.5"]
    )
    assert again.skipped == [] and again.pending[:2] == [jobs[0].run_id, jobs[1].run_id]
    assert (tmp_path / jobs[0].run_id / "results.json").is_file(), "a dry run deletes nothing"


def _stopped_run(root, defn):
    """The toy sweep's first job stopped after a checkpoint: its results.json (running, with
    the config the job composes) and a stand-in checkpoint. Returns the job and config."""
    job = expand_jobs(defn)[0]
    config = runner_module._resolved(job, defn, "cpu")
    atomic_write_json(root / job.run_id / "results.json", {"status": "running", "config": config})
    (root / job.run_id / "checkpoints").mkdir()
    (root / job.run_id / "checkpoints" / "last.pt").write_bytes(b"stand-in")
    return job, config


def test_a_stopped_run_is_resumed_only_when_its_config_matches(defn, tmp_path):
    job, config = _stopped_run(tmp_path, defn)
    report = run_sweep(defn, root=tmp_path, dry_run=True)
    assert job.run_id in report.pending and report.states[job.run_id].resumes
    # Resumed under other overrides it would finish as a mix of two configs: refused.
    with pytest.raises(
        ValueError, match=r"1 completed or resumable run\(s\) .*train.lr: recorded 0.02, now 0.5"
    ):
        run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=["train.lr=0.5"])
    again = run_sweep(
        defn, root=tmp_path, dry_run=True, rerun=True, extra_overrides=["train.lr=0.5"]
    )
    assert job.run_id in again.pending
    # --rerun deletes it first: the dry run must not promise a resume.
    assert again.states[job.run_id].replaced and not again.states[job.run_id].resumes
    fresh = run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=["train.resume=false"])
    assert not fresh.states[job.run_id].resumes, "the job's own train.resume decides"


def _recorded_by(root, job, code, status="completed"):
    """Give the completed run of ``job`` in ``root`` one attempt, made by ``code``."""
    results = read_results(root / job.run_id)
    attempts = [] if code is None else [{"from_step": 0, "code": code}]
    atomic_write_json(
        root / job.run_id / "results.json", {**results, "status": status, "attempts": attempts}
    )


def test_runs_kept_as_they_are_name_the_code_that_differs_from_the_code_now(defn, tmp_path):
    jobs = expand_jobs(defn)
    now = code_record()
    old = {**now, "digests": {**now["digests"], "losses": "0"}}
    # Completed under other losses code, completed under this code, completed before any
    # code was recorded, and stopped after a checkpoint under other losses code.
    for job, code in zip(jobs[:3], (old, now, None), strict=True):
        _complete_as_composed(tmp_path, defn, job)
        _recorded_by(tmp_path, job, code)
    stopped = jobs[3]
    _complete_as_composed(tmp_path, defn, stopped)
    _recorded_by(tmp_path, stopped, old, status="running")
    (tmp_path / stopped.run_id / "checkpoints").mkdir()
    (tmp_path / stopped.run_id / "checkpoints" / "last.pt").write_bytes(b"stand-in")
    report = run_sweep(defn, root=tmp_path, dry_run=True)
    assert report.skipped == [job.run_id for job in jobs[:3]]
    # The code does not make a run stale: it is kept, and named.
    assert report.code_changed == {jobs[0].run_id: ["losses"], stopped.run_id: ["losses"]}
    # A stopped run the job starts over (its own train.resume=false) keeps nothing.
    fresh = run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=["train.resume=false"])
    assert fresh.code_changed == {jobs[0].run_id: ["losses"]}
    # Nor does a run the sweep replaces (--rerun of another config).
    again = run_sweep(
        defn, root=tmp_path, dry_run=True, rerun=True, extra_overrides=["train.lr=0.5"]
    )
    assert again.code_changed == {}


def test_a_run_copied_from_another_sweep_names_the_code_that_trained_it(defn, tmp_path):
    job = expand_jobs(defn)[0]
    now = code_record()
    _complete_as_composed(tmp_path / "other", defn, job)
    _recorded_by(tmp_path / "other", job, {**now, "digests": {**now["digests"], "ops": "0"}})
    reuse = [tmp_path / "other"]
    planned = run_sweep(defn, root=tmp_path / "here", dry_run=True, reuse=reuse)
    assert job.run_id in planned.copied and planned.code_changed == {job.run_id: ["ops"]}
    done = run_sweep(
        defn, root=tmp_path / "here", run_job=fake_job, reuse=reuse, write_tables=False
    )
    assert job.run_id in done.copied and done.code_changed == {job.run_id: ["ops"]}


def test_a_run_recorded_with_another_definition_is_stale(defn, tmp_path):
    job = expand_jobs(defn)[0]
    _complete_as_composed(tmp_path, defn, job, **{"train.epochs": 7})
    with pytest.raises(ValueError, match="train.epochs: recorded 7, now 1"):
        run_sweep(defn, root=tmp_path, dry_run=True)


def test_a_group_chosen_on_the_command_line_wins_over_the_scale():
    defn = load_sweep("table2")
    job = expand_jobs(defn, "cpu", ["debug=smoke"], seeds=1)[0]
    cfg = compose_job_config(job.overrides)
    assert (cfg.train.epochs, cfg.data.num_train, cfg.loss.name) == (1, 16, "ap")
    assert cfg.train.lr == 0.02, "keys of the scale that the group does not set stay"
    # The regime study's own epochs at the cpu scale are a key=value, dropped under
    # debug=smoke too.
    job = expand_jobs(load_sweep("regime"), "cpu", ["debug=smoke"], seeds=1)[0]
    assert "train.epochs=14" not in job.overrides
    assert compose_job_config(job.overrides).train.epochs == 1
    # A plain key=value on the command line already comes last and wins.
    job = expand_jobs(defn, "cpu", ["train.epochs=2"], seeds=1)[0]
    assert compose_job_config(job.overrides).train.epochs == 2


def test_an_option_added_later_with_a_null_default_keeps_old_runs_valid(defn, tmp_path):
    sb = ["loss.self_balance=true", "loss.wr=null"]  # an SB run, which reads loss.sb_period
    job = expand_jobs(defn, "cpu", sb)[0]
    config = runner_module._resolved(job, defn, "cpu")
    assert config["loss"].pop("sb_period") is None  # as recorded before the option existed
    atomic_write_json(
        tmp_path / job.run_id / "results.json",
        {"status": "completed", "metrics": {"AP": 0.3}, "config": config},
    )
    assert run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=sb).skipped == [job.run_id]
    with pytest.raises(ValueError, match="loss.sb_period: recorded '<unset>', now 100"):
        run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=[*sb, "loss.sb_period=100"])


def test_runs_recorded_under_an_older_schema_stay_valid(defn, tmp_path):
    job = expand_jobs(defn)[0]
    config = runner_module._resolved(job, defn, "cpu")
    # Recorded when every section carried every choice's keys (Focal Loss's alpha on an
    # aLRP run, smooth L1's options on an IoU run) ...
    config["loss"]["alpha"] = 0.25
    config["box_error"].update(beta=1.0, coord_reduction="sum")
    # ... and before train.eval_bounds existed: its legacy value is what the code did.
    assert config["train"].pop("eval_bounds") is False
    atomic_write_json(
        tmp_path / job.run_id / "results.json",
        {"status": "completed", "metrics": {"AP": 0.3}, "config": config},
    )
    assert run_sweep(defn, root=tmp_path, dry_run=True).skipped == [job.run_id]
    # Set to another value (here on the command line, as a YAML file could): stale.
    with pytest.raises(ValueError, match="train.eval_bounds: recorded '<unset>', now True"):
        run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=["train.eval_bounds=true"])
    with pytest.raises(ValueError, match="train.warmup_ratio: recorded 0.001, now 0.5"):
        run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=["train.warmup_ratio=0.5"])
    # The lr rule's inputs are not compared: the lr they give is.
    assert run_sweep(
        defn, root=tmp_path, dry_run=True, extra_overrides=["train.lr_scale=2"]
    ).skipped == [job.run_id]


def test_sb_options_count_only_for_sb_runs_and_wr_only_for_constant_ones(defn, tmp_path):
    job = expand_jobs(defn)[0]  # IoU, wr 1: SB off
    _complete_as_composed(tmp_path, defn, job)
    sb_cadence = ["loss.sb_start=300", "loss.sb_period=150", "loss.sb_init=7"]
    report = run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=sb_cadence)
    assert job.run_id in report.skipped, "a constant-weight run reads none of SB's options"
    with pytest.raises(ValueError, match="loss.wr: recorded 1.0, now 2.0"):
        run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=["loss.wr=2"])
    # The same run with SB on: its options count, the wr it does not read does not.
    sb = ["loss.self_balance=true", "loss.wr=null"]
    _complete_as_composed(tmp_path, defn, job, **{"loss.self_balance": True, "loss.wr": 3})
    assert run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=sb).skipped == [job.run_id]
    with pytest.raises(ValueError, match="loss.sb_start: recorded '<unset>', now 300"):
        run_sweep(defn, root=tmp_path, dry_run=True, extra_overrides=[*sb, "loss.sb_start=300"])


def test_only_runs_the_matching_jobs_and_keeps_the_others_in_the_tables(defn, tmp_path):
    report = run_sweep(defn, root=tmp_path, run_job=fake_job, only=["*__wr1"])
    assert report.completed == ["iou__wr1/seed0", "giou__wr1/seed0"] and not report.failed
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert len(saved["jobs"]) == 4  # every job, for the tables
    with pytest.raises(SweepError, match=r"--only 'nope\*' matches no job.*iou__wr1"):
        run_sweep(defn, root=tmp_path, run_job=fake_job, only=["nope*"])


def test_only_with_a_slash_picks_runs_so_one_seed_can_run_alone(defn, tmp_path):
    report = run_sweep(defn, root=tmp_path, run_job=fake_job, seeds=3, only=["*__wr1/seed2"])
    assert report.completed == ["iou__wr1/seed2", "giou__wr1/seed2"]
    assert not (tmp_path / "iou__wr1" / "seed0").exists()
    # Job and run patterns mix; a seed the sweep does not run matches nothing.
    mixed = run_sweep(defn, root=tmp_path, dry_run=True, seeds=3, only=["iou__wr5", "*/seed1"])
    assert sorted(mixed.pending) == [
        "giou__wr1/seed1",
        "giou__wr5/seed1",
        "iou__wr1/seed1",
        "iou__wr5/seed0",
        "iou__wr5/seed1",
        "iou__wr5/seed2",
    ]
    with pytest.raises(SweepError, match=r"--only 'iou__wr5/seed3' matches no job.*seeds 0, 1, 2"):
        run_sweep(defn, root=tmp_path, dry_run=True, seeds=3, only=["iou__wr5/seed3"])


def test_a_dry_run_says_how_long_its_pending_runs_take_by_the_finished_ones(defn, tmp_path):
    jobs = expand_jobs(defn, seeds=2)
    for job, minutes in zip(jobs[:3], (20, 30, 60), strict=True):
        _complete_as_composed(tmp_path, defn, job)
        results = json.loads((tmp_path / job.run_id / "results.json").read_text())
        results.update(
            started_at="2026-12-06T10:00:00+00:00",
            finished_at=f"2026-12-06T{10 + minutes // 60}:{minutes % 60:02d}:00+00:00",
        )
        atomic_write_json(tmp_path / job.run_id / "results.json", results)
    report = run_sweep(defn, root=tmp_path, dry_run=True, seeds=2)
    left = report.time_left
    # Every job of the toy grid has the same length: 5 runs left at the median, 30 min.
    assert left is not None and (left.judged, left.unjudged, left.basis) == (5, 0, 3)
    assert left.seconds == 5 * 30 * 60
    # --only lists fewer jobs, but every completed run in the folder is evidence.
    only = run_sweep(defn, root=tmp_path, dry_run=True, seeds=2, only=["giou__*"])
    assert only.time_left == TimeLeft(4 * 30 * 60, judged=4, unjudged=0, basis=3)


def test_a_failure_before_training_keeps_the_config_the_folders_checkpoint_was_trained_with(
    defn, tmp_path
):
    job, config = _stopped_run(tmp_path, defn)

    def crash(overrides, run_dir):
        raise MemoryError("before the engine wrote anything")

    report = run_sweep(defn, root=tmp_path, run_job=crash, only=[job.id], write_tables=False)
    assert report.failed[job.run_id] == "MemoryError: before the engine wrote anything"
    recorded = read_results(tmp_path / job.run_id)
    assert recorded["status"] == "failed" and recorded["config"] == config
    # So the next sweep still resumes the run, instead of taking it for stale.
    again = run_sweep(defn, root=tmp_path, dry_run=True, only=[job.id])
    assert again.pending == [job.run_id] and again.states[job.run_id].resumes
    # A folder with no run recorded before keeps the overrides, as before.
    other = expand_jobs(defn)[1]
    run_sweep(defn, root=tmp_path, run_job=crash, only=[other.id], write_tables=False)
    assert read_results(tmp_path / other.run_id)["config"] == {"overrides": other.overrides}


def waits_for_giou_wr5_job(overrides, run_dir):
    """light_job, but iou__wr5 ends only after giou__wr5 has written its results: with two
    workers, the runs end in another order than they were submitted."""
    if "box_error=iou" in overrides and "loss.wr=5" in overrides:
        other = Path(run_dir).parents[1] / "giou__wr5" / "seed0" / "results.json"
        deadline = time.monotonic() + 60
        while not other.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
    light_job(overrides, run_dir)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_sweep_announces_its_start_and_each_run_as_it_ends(defn, tmp_path, n_jobs):
    job = fake_job if n_jobs == 1 else waits_for_giou_wr5_job
    run_sweep(defn, root=tmp_path, run_job=job, write_tables=False, only=["iou__wr1"])
    lines: list[str] = []
    run_sweep(
        defn, root=tmp_path, run_job=job, n_jobs=n_jobs, write_tables=False, announce=lines.append
    )
    at_a_time = ", 2 at a time" if n_jobs == 2 else ""
    assert lines[0] == f"{tmp_path}: training 3 run(s){at_a_time} (1 completed before, skipped)"
    if n_jobs == 1:  # in the job order; fake_job's RunRecorder records the times
        assert lines[1:] == [
            "[1/3] iou__wr5/seed0 failed: ValueError: bad config before any run started",
            "[2/3] giou__wr1/seed0 completed in under a minute: AP 10.0",
            "[3/3] giou__wr5/seed0 failed: FloatingPointError: the loss became nan",
        ]
    else:  # in the order they ended: iou__wr5 waited for giou__wr5
        assert [line.split("] ")[0] for line in lines[1:]] == ["[1/3", "[2/3", "[3/3"]
        assert lines[3:] == ["[3/3] iou__wr5/seed0 failed: Boom: wr=5"]
        assert sorted(line.split("] ")[1] for line in lines[1:3]) == [
            "giou__wr1/seed0 completed: AP 10.0",  # light_job records no times
            "giou__wr5/seed0 failed: Boom: wr=5",
        ]
    # A sweep with nothing left to train, and a dry run, say nothing.
    lines.clear()
    run_sweep(defn, root=tmp_path, run_job=job, only=["*wr1"], announce=lines.append)
    run_sweep(defn, root=tmp_path, run_job=job, dry_run=True, announce=lines.append)
    assert lines == []


class _EndsBackwards:
    """A local launcher whose jobs end last first; the second one is killed by the cluster."""

    cluster = "local"

    def run_all(self, fn, calls, on_done=None):
        outcomes = [None] * len(calls)
        for index in reversed(range(len(calls))):
            killed = index == 1
            outcomes[index] = (
                RuntimeError("job 7_1 state: TIMEOUT") if killed else fn(*calls[index])
            )
            on_done(index, outcomes[index])
        return outcomes


def test_a_launched_sweep_announces_each_run_as_the_cluster_ends_it(defn, tmp_path):
    lines: list[str] = []
    report = run_sweep(
        defn,
        root=tmp_path,
        run_job=light_job,
        write_tables=False,
        launcher=_EndsBackwards(),
        announce=lines.append,
    )
    assert lines == [
        f"{tmp_path}: training 4 run(s), 4 at a time",
        "[1/4] giou__wr5/seed0 failed: Boom: wr=5",
        "[2/4] giou__wr1/seed0 completed: AP 10.0",
        "[3/4] iou__wr5/seed0 failed: RuntimeError: job 7_1 state: TIMEOUT",
        "[4/4] iou__wr1/seed0 completed: AP 10.0",
    ]
    assert report.completed == ["iou__wr1/seed0", "giou__wr1/seed0"]  # in the job order


def test_an_announcement_that_fails_does_not_stop_the_sweep(defn, tmp_path, caplog):
    def broken(line: str) -> None:
        raise BrokenPipeError("stdout is gone")

    report = run_sweep(defn, root=tmp_path, run_job=fake_job, write_tables=False, announce=broken)
    assert report.completed == ["iou__wr1/seed0", "giou__wr1/seed0"] and len(report.failed) == 2
    assert "could not announce a run: BrokenPipeError: stdout is gone" in caplog.text
