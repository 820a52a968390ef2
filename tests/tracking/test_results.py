import hashlib
import json
import shutil
import subprocess

import pytest
import torch
from omegaconf import OmegaConf

from alrp_lab.tracking import results as results_module
from alrp_lab.tracking.code_digest import code_record
from alrp_lab.tracking.results import (
    RunRecorder,
    config_digest,
    find_runs,
    git_state,
    is_completed,
    read_metrics,
    read_results,
)

CONFIG = {"loss": {"name": "alrp", "delta": 1.0}, "train": {"epochs": 2, "lr_steps": [1]}}


@pytest.fixture(autouse=True)
def no_git(monkeypatch):
    # Provenance has its own tests below; elsewhere skip the subprocess calls.
    monkeypatch.setattr(results_module, "git_state", lambda: results_module.GitState(None, None))


def test_config_digest_is_sha256_of_canonical_json():
    expected = hashlib.sha256(
        b'{"loss":{"delta":1.0,"name":"alrp"},"train":{"epochs":2,"lr_steps":[1]}}'
    ).hexdigest()
    assert config_digest(CONFIG) == expected
    reordered = {"train": {"lr_steps": (1,), "epochs": 2}, "loss": {"delta": 1.0, "name": "alrp"}}
    assert config_digest(reordered) == expected
    assert config_digest({**CONFIG, "seed": 1}) != expected
    assert config_digest(OmegaConf.create(CONFIG)) == expected


def test_status_transitions_running_completed(tmp_path):
    recorder = RunRecorder(tmp_path / "run", CONFIG)
    assert recorder.status is None
    recorder.start()
    first = read_results(tmp_path / "run")
    assert first["status"] == "running"
    assert first["finished_at"] is None and first["error"] is None
    assert first["config"] == CONFIG
    assert first["config_digest"] == config_digest(CONFIG)
    assert first["versions"]["torch"] == torch.__version__
    assert not is_completed(tmp_path / "run")

    recorder.log(10, {"loss": torch.tensor(0.5), "lr": 0.01}, epoch=0)
    recorder.log(20, {"epoch": 0, "loss": float("nan")})
    recorder.update_metrics({"AP": 0.25})
    assert read_results(tmp_path / "run")["metrics"] == {"AP": 0.25}
    returned = recorder.complete({"AP": 0.3, "oLRP": 0.7}, extra={"iterations": 20})

    final = read_results(tmp_path / "run")
    assert returned == final
    assert final["extra"] == {"iterations": 20}
    assert final["status"] == "completed"
    assert final["metrics"] == {"AP": 0.3, "oLRP": 0.7}
    assert final["started_at"] == first["started_at"] and final["finished_at"] is not None
    assert final["history"] == {"records": 2, "last_step": 20, "last_epoch": 0}
    assert read_metrics(tmp_path / "run") == [
        {"step": 10, "epoch": 0, "loss": 0.5, "lr": 0.01},
        {"step": 20, "epoch": 0, "loss": None},
    ]
    assert is_completed(tmp_path / "run")
    with pytest.raises(RuntimeError, match="'completed'"):
        recorder.complete()
    recorder.fail("late")  # error paths never raise, and a completed run stays completed
    assert read_results(tmp_path / "run")["status"] == "completed"


def test_context_manager_records_failure_and_reraises(tmp_path):
    with pytest.raises(KeyError):
        with RunRecorder(tmp_path, CONFIG) as recorder:
            recorder.log(1, {"loss": 1.0})
            raise KeyError("boxes")
    results = read_results(tmp_path)
    assert results["status"] == "failed"
    assert results["error"] == "KeyError: 'boxes'"
    assert results["finished_at"] is not None
    assert not is_completed(tmp_path)


def test_context_manager_completes_on_normal_exit(tmp_path):
    with RunRecorder(tmp_path, CONFIG) as recorder:
        recorder.update_metrics({"AP": 0.1})
    assert read_results(tmp_path)["status"] == "completed"
    assert read_results(tmp_path)["metrics"] == {"AP": 0.1}


def test_calls_before_start_and_reserved_names_are_refused(tmp_path):
    recorder = RunRecorder(tmp_path, CONFIG)
    with pytest.raises(RuntimeError, match="start"):
        recorder.log(1, {"loss": 1.0})
    recorder.start()
    with pytest.raises(ValueError, match="reserved"):
        recorder.log(1, {"step": 3})
    with pytest.raises(ValueError, match="epoch given twice"):
        recorder.log(1, {"epoch": 3}, epoch=3)


def test_disabled_recorder_writes_nothing(tmp_path):
    recorder = RunRecorder(tmp_path / "rank1", CONFIG, enabled=False)
    with recorder:
        recorder.log(1, {"loss": 1.0})
        recorder.update_metrics({"AP": 1.0})
    assert recorder.fail("ignored") == {}
    assert not (tmp_path / "rank1").exists()


def test_resume_drops_records_after_checkpoint_and_keeps_start_time(tmp_path):
    first = RunRecorder(tmp_path, CONFIG)
    first.start()
    for step in (10, 20, 30):
        first.log(step, {"loss": step / 100}, epoch=step // 20)
    first.update_metrics({"AP_epoch0": 0.1})
    first.fail(RuntimeError("killed"))
    before = read_results(tmp_path)

    second = RunRecorder(tmp_path, CONFIG)
    second.start(resume_step=21)  # checkpoint after 21 iterations: step 30 is logged again
    resumed = read_results(tmp_path)
    assert resumed["status"] == "running" and resumed["error"] is None
    assert resumed["started_at"] == before["started_at"]
    assert resumed["metrics"] == {"AP_epoch0": 0.1}
    assert resumed["resumes"] == 1
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20]
    second.log(30, {"loss": 0.3}, epoch=1)
    second.complete()
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20, 30]
    assert read_results(tmp_path)["history"]["records"] == 3


def test_each_start_and_resume_is_an_attempt_with_its_commit_and_changes(tmp_path, monkeypatch):
    commits = iter(["a" * 40, "b" * 40, "c" * 40])
    monkeypatch.setattr(
        results_module, "git_state", lambda: results_module.GitState(next(commits), False)
    )
    first = RunRecorder(tmp_path, CONFIG)
    first.start()
    first.fail("killed")
    RunRecorder(tmp_path, CONFIG).start(resume_step=40)
    changed = ["train.lr: recorded 0.1, now 0.01"]
    RunRecorder(tmp_path, CONFIG).start(resume_step=80, changed=changed)
    results = read_results(tmp_path)
    attempts = results["attempts"]
    assert [(a["from_step"], a["git_revision"][0], a["changed"]) for a in attempts] == [
        (0, "a", []),
        (40, "b", []),
        (80, "c", changed),
    ]
    assert attempts[0]["started_at"] == results["started_at"]
    assert attempts[0]["started_at"] <= attempts[1]["started_at"] <= attempts[2]["started_at"]
    # The top-level provenance is the last attempt's.
    assert results["git_revision"] == "c" * 40 and results["resumes"] == 2
    # Each attempt names the code that computed it, whatever the commit says.
    assert [a["code"] for a in attempts] == [code_record()] * 3


def test_a_resume_of_a_run_recorded_before_attempts_existed_starts_the_list(tmp_path):
    recorder = RunRecorder(tmp_path, CONFIG)
    recorder.start()
    recorder.fail("killed")
    old = read_results(tmp_path)
    del old["attempts"]
    (tmp_path / "results.json").write_text(json.dumps(old))
    RunRecorder(tmp_path, CONFIG).start(resume_step=7)
    resumed = read_results(tmp_path)
    assert [a["from_step"] for a in resumed["attempts"]] == [7] and resumed["resumes"] == 1


def test_a_fresh_start_and_a_failure_before_start_keep_the_attempts_right(tmp_path):
    recorder = RunRecorder(tmp_path, CONFIG)
    recorder.start()
    recorder.fail("killed")
    RunRecorder(tmp_path, CONFIG).start(resume_step=5)
    # A failure before start() (a refused checkpoint) is no attempt: the list is kept.
    failed = RunRecorder(tmp_path, CONFIG).fail(ValueError("bad checkpoint"))
    assert [a["from_step"] for a in failed["attempts"]] == [0, 5]
    # Starting over discards the earlier run, its attempts included.
    RunRecorder(tmp_path, CONFIG).start()
    assert [a["from_step"] for a in read_results(tmp_path)["attempts"]] == [0]


def test_fresh_start_discards_old_metrics(tmp_path):
    old = RunRecorder(tmp_path, CONFIG)
    old.start()
    old.log(5, {"loss": 1.0})
    RunRecorder(tmp_path, CONFIG).start()
    assert read_metrics(tmp_path) == []


def test_failure_before_start_is_recorded_and_keeps_old_metrics(tmp_path):
    earlier = RunRecorder(tmp_path, CONFIG)
    earlier.start()
    earlier.log(1, {"loss": 1.0})
    earlier.log(2, {"loss": 0.5})
    earlier.fail("killed")
    started = read_results(tmp_path)["started_at"]

    results = RunRecorder(tmp_path, CONFIG).fail(ValueError("checkpoint of another model"))
    assert results["status"] == "failed"
    assert results["error"] == "ValueError: checkpoint of another model"
    assert results["started_at"] == started and results["resumes"] == 0
    assert results["history"]["records"] == 2
    assert read_results(tmp_path) == results
    assert len(read_metrics(tmp_path)) == 2


def test_fail_never_raises_over_the_error_being_handled(tmp_path, monkeypatch, caplog):
    recorder = RunRecorder(tmp_path, CONFIG)
    recorder.start()

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(results_module, "atomic_write_json", full_disk)
    recorder.fail(RuntimeError("loss is NaN"))
    assert "could not record the failure" in caplog.text


def test_read_results_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.json"):
        read_results(tmp_path)
    (tmp_path / "results.json").write_text('{"status": "runn')
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        read_results(tmp_path)
    assert not is_completed(tmp_path)
    (tmp_path / "results.json").write_text('{"status": "done"}')
    with pytest.raises(ValueError, match="not an alrp-lab results file"):
        read_results(tmp_path / "results.json")


def test_find_runs_is_recursive_and_sorted(tmp_path):
    for name in ("b/run1", "a", "b/run0/nested"):
        RunRecorder(tmp_path / name, CONFIG).start()
    (tmp_path / "c").mkdir()
    assert find_runs(tmp_path) == [tmp_path / "a", tmp_path / "b/run0/nested", tmp_path / "b/run1"]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        find_runs(tmp_path / "missing")


def test_results_json_is_never_half_written(tmp_path, monkeypatch):
    recorder = RunRecorder(tmp_path, CONFIG)
    recorder.start()

    def broken_replace(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(results_module.os, "replace", broken_replace)
    with pytest.raises(OSError):
        recorder.complete({"AP": 0.5})
    monkeypatch.undo()
    assert read_results(tmp_path)["status"] == "running"


# git provenance --------------------------------------------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd, *args) -> str:
    """stdout of ``git args`` in ``cwd``, stripped."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@needs_git
def test_git_state_reports_revision_and_dirty_tree(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    assert git_state(package) == (None, None)  # untracked, no commit yet
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "init")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert git_state(package) == (head, False)
    (package / "mod.py").write_text("x = 2\n")
    assert git_state(package) == (head, True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "untracked.py").write_text("")
    assert git_state(tmp_path / "other") == (None, None)


@needs_git
def test_git_state_ignores_the_committed_results_folder(tmp_path, monkeypatch):
    """A sweep rewrites its tracked sweep.json under results/ before training: not code."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("x = 1\n")
    records = tmp_path / "results" / "table2"
    records.mkdir(parents=True)
    (records / "sweep.json").write_text("{}\n")
    (tmp_path / "README.md").write_text("a\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "init")
    head = _git(tmp_path, "rev-parse", "HEAD")
    (records / "sweep.json").write_text('{"jobs": []}\n')
    assert git_state(package) == (head, False)
    # Anything else tracked still counts, at the top level and in a folder named like it.
    (package / "results").mkdir()
    (package / "results" / "x.py").write_text("")
    _git(tmp_path, "add", "pkg/results/x.py")
    assert git_state(package) == (head, True)
    _git(tmp_path, "reset", "-q", "pkg/results/x.py")
    assert git_state(package) == (head, False)
    # GIT_LITERAL_PATHSPECS=1 would read the magic pathspecs as file names: nothing dirty.
    monkeypatch.setenv("GIT_LITERAL_PATHSPECS", "1")
    (package / "mod.py").write_text("x = 3\n")
    assert git_state(package) == (head, True)
    (package / "mod.py").write_text("x = 1\n")
    monkeypatch.delenv("GIT_LITERAL_PATHSPECS")
    (tmp_path / "README.md").write_text("b\n")
    assert git_state(package) == (head, True)


def test_git_state_without_git_or_repo(tmp_path, monkeypatch):
    assert git_state(tmp_path) == (None, None)

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    from alrp_lab.tracking import provenance

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    assert git_state() == (None, None)


def test_results_record_git_state(tmp_path, monkeypatch):
    monkeypatch.setattr(
        results_module, "git_state", lambda: results_module.GitState("ab" * 20, True)
    )
    RunRecorder(tmp_path, CONFIG).start()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["git_revision"] == "ab" * 20 and saved["git_dirty"] is True
