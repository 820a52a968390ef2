from __future__ import annotations

import json
from pathlib import Path

import pytest

from alrp_lab.cli import main
from alrp_lab.errors import SweepError
from alrp_lab.sweeps.export import export_runs


def _run(root: Path, rel: str, status: str = "completed", ap: float = 0.3, **files: str) -> Path:
    """A run folder as a sweep leaves it: its record, a log, and bulk that stays behind."""
    run = root / rel
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "loss_cls": 1.0}) + "\n")
    (run / "detections_val.json").write_text("[]")
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"weights")
    for name, text in files.items():
        (run / name.replace("_csv", ".csv").replace("_yaml", ".yaml")).write_text(text)
    (run / "results.json").write_text(json.dumps({"status": status, "metrics": {"AP": ap}}))
    return run


def test_completed_runs_go_as_their_record_files_alone(tmp_path):
    source, target = tmp_path / "work", tmp_path / "results"
    _run(source, "a/seed0")
    _run(source, "a/seed1", status="running")  # still training: not exported
    (source / "sweep.json").write_text('{"name": "toy"}')
    report = export_runs(source, target)
    assert report.copied == ["a/seed0"] and report.sweep_file
    assert sorted(p.name for p in (target / "a" / "seed0").iterdir()) == [
        "metrics.jsonl",
        "results.json",
    ]
    assert not (target / "a" / "seed1").exists()
    assert (target / "sweep.json").read_text() == '{"name": "toy"}'
    # Again: nothing to do.
    again = export_runs(source, target)
    assert again.unchanged == ["a/seed0"] and again.copied == [] and not again.sweep_file


def test_a_run_there_without_its_log_gets_it_and_another_run_is_kept(tmp_path):
    source, target = tmp_path / "work", tmp_path / "results"
    _run(source, "a/seed0")
    _run(source, "a/seed1", ap=0.4)
    export_runs(source, target)
    (target / "a" / "seed0" / "metrics.jsonl").unlink()
    (target / "a" / "seed1" / "results.json").write_text('{"status": "completed", "metrics": {}}')
    report = export_runs(source, target)
    assert report.updated == ["a/seed0"] and (target / "a" / "seed0" / "metrics.jsonl").is_file()
    # Another completed run is never overwritten unasked: nothing recorded is lost.
    assert report.conflicts == ["a/seed1"]
    assert json.loads((target / "a" / "seed1" / "results.json").read_text())["metrics"] == {}
    replaced = export_runs(source, target, replace=True)
    assert replaced.copied == ["a/seed1"]
    assert json.loads((target / "a" / "seed1" / "results.json").read_text())["metrics"] == {
        "AP": 0.4
    }


def test_an_unfinished_run_there_is_replaced_without_its_stale_files(tmp_path):
    source, target = tmp_path / "work", tmp_path / "results"
    run = _run(source, "a/seed0")
    (run / "metrics.jsonl").unlink()  # a run recorded without a log
    _run(target, "a/seed0", status="failed", ap=0.0, grad_balance_csv="old")
    report = export_runs(source, target, files=("results.json", "metrics.jsonl"))
    assert report.copied == ["a/seed0"]
    assert json.loads((target / "a" / "seed0" / "results.json").read_text())["status"] == (
        "completed"
    )
    assert not (target / "a" / "seed0" / "metrics.jsonl").exists(), "the failed run's log"


def test_more_files_on_request(tmp_path):
    source, target = tmp_path / "work", tmp_path / "results"
    _run(source, "a/seed0", config_yaml="seed: 0\n")
    export_runs(source, target, files=("results.json", "metrics.jsonl", "config.yaml"))
    assert (target / "a" / "seed0" / "config.yaml").read_text() == "seed: 0\n"


def test_figure_4s_ratios_go_with_the_record(tmp_path):
    source, target = tmp_path / "work", tmp_path / "results"
    _run(source, "ce/seed0", grad_balance_csv="iteration,epoch,ratio\n0,0,2.5\n")
    export_runs(source, target)
    assert (target / "ce" / "seed0" / "grad_balance.csv").read_text().endswith("0,0,2.5\n")
    # A run exported before it went with the record gets it on the next export.
    (target / "ce" / "seed0" / "grad_balance.csv").unlink()
    assert export_runs(source, target).updated == ["ce/seed0"]
    assert (target / "ce" / "seed0" / "grad_balance.csv").is_file()


def test_bad_folders_are_one_clear_error(tmp_path):
    with pytest.raises(SweepError, match="is not a folder"):
        export_runs(tmp_path / "missing", tmp_path / "results")
    (tmp_path / "work").mkdir()
    with pytest.raises(SweepError, match="lies inside"):
        export_runs(tmp_path / "work", tmp_path / "work" / "copy")
    with pytest.raises(SweepError, match="needs results.json"):
        export_runs(tmp_path / "work", tmp_path / "results", files=("metrics.jsonl",))


def test_the_command_line_says_what_it_copied_and_what_it_kept(tmp_path, capsys):
    source, target = tmp_path / "work", tmp_path / "results"
    _run(source, "a/seed0", grad_balance_csv="x")
    _run(target, "a/seed1")
    _run(source, "a/seed1", ap=0.5)
    args = ["export", str(source), str(target), "--file", "grad_balance.csv"]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 run(s) copied, 0 given the files they lacked, 0 unchanged" in out
    assert "1 left as they were" in out and "--replace overwrites it): a/seed1" in out
    assert (target / "a" / "seed0" / "grad_balance.csv").is_file()
    assert main(["export", str(tmp_path / "missing"), str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().err
