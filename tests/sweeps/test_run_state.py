from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from alrp_lab.engine.checkpoint import save_checkpoint
from alrp_lab.sweeps import run_state as run_state_module
from alrp_lab.sweeps.processes import run_lock
from alrp_lab.sweeps.run_state import RunState, run_state
from alrp_lab.tracking.run_files import checkpoint_path

linux_only = pytest.mark.skipif(
    not Path("/proc/locks").is_file(), reason="the lock's holder is read from /proc/locks"
)


def _results(run_dir: Path, status: str, epochs: int = 10, **more) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "config": {"train": {"epochs": epochs}}, **more}
    (run_dir / "results.json").write_text(json.dumps(record))


def _checkpoint(run_dir: Path, epoch: int) -> None:
    model = nn.Linear(3, 2)
    save_checkpoint(
        checkpoint_path(run_dir),
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epoch=epoch,
        iteration=epoch * 7,
        model_signature={"detector": "toy"},
    )


def test_a_folder_never_started_would_run(tmp_path):
    assert run_state(tmp_path / "missing").describe() == "would run"
    assert run_state(tmp_path).describe() == "would run"


def test_a_stopped_run_would_resume_after_its_checkpoints_epoch(tmp_path):
    _results(tmp_path, "running", epochs=112)
    _checkpoint(tmp_path, epoch=24)
    state = run_state(tmp_path)
    assert state == RunState(epoch=24, epochs=112, resumes=True)
    assert state.describe() == "would resume after epoch 24 of 112"
    # What the sweep will do decides: no resume asked, or a stale run --rerun deletes.
    assert run_state(tmp_path, resumes=False).describe() == "would run"
    assert run_state(tmp_path, replaced=True).describe() == (
        "would run again from scratch (its folder holds another config's run)"
    )


def test_a_failed_run_says_its_error_and_whether_it_resumes(tmp_path):
    _results(tmp_path, "failed", error="FloatingPointError: the loss became nan\n\nmore lines")
    assert run_state(tmp_path).describe() == (
        "would run (failed before: FloatingPointError: the loss became nan)"
    )
    _checkpoint(tmp_path, epoch=3)
    assert run_state(tmp_path).describe() == (
        "would resume after epoch 3 of 10 (failed before: FloatingPointError: the loss became nan)"
    )


def test_a_failed_cluster_job_says_what_it_raised(tmp_path):
    # submitit's FailedJobError: a header, then the job's traceback.
    error = (
        "FailedJobError: Job (task=0) failed during processing with trace:\n"
        "----------------------\nTraceback (most recent call last):\n  File x\n"
        "ModuleNotFoundError: No module named 'alrp_lab'\n\n----------------------\n"
    )
    _results(tmp_path, "failed", error=error)
    assert run_state(tmp_path).describe() == (
        "would run (failed before: ModuleNotFoundError: No module named 'alrp_lab')"
    )


def test_a_damaged_checkpoint_is_named_not_raised(tmp_path):
    _results(tmp_path, "running")
    checkpoint_path(tmp_path).parent.mkdir(parents=True)
    checkpoint_path(tmp_path).write_bytes(b"not a checkpoint")
    text = run_state(tmp_path).describe()
    assert text.startswith("would resume, but its checkpoint is unreadable (")


def test_without_a_recorded_config_the_epoch_count_is_left_out(tmp_path):
    _checkpoint(tmp_path, epoch=2)
    assert run_state(tmp_path).describe() == "would resume after epoch 2"


@linux_only
def test_a_run_being_trained_names_its_process_and_the_epoch_in_the_log(tmp_path):
    _results(tmp_path, "running", epochs=112)
    _checkpoint(tmp_path, epoch=4)  # the log is ahead of the last checkpoint
    lines = [
        {"step": 740, "epoch": 4, "loss": 0.9},  # a training record: 0-based epoch
        {"step": 749, "epoch": 5, "val/AP": 0.1},  # an interim evaluation: epochs done
        {"step": 750, "epoch": 5, "loss": 0.8},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"step": 77'  # being written
    (tmp_path / "metrics.jsonl").write_text(text)
    with run_lock(tmp_path):
        state = run_state(tmp_path)
        assert state.training and state.training_pid == os.getpid()
        assert state.describe() == f"training now (pid {os.getpid()}): epoch 6 of 112"
        # Epoch 6 evaluated: the 7th is under way, before its first training record.
        evaluated = {"step": 899, "epoch": 6, "val/AP": 0.2}
        (tmp_path / "metrics.jsonl").write_text(
            text[: text.rindex("\n") + 1] + json.dumps(evaluated)
        )
        assert run_state(tmp_path).epoch == 7
    # Let go, it is a stopped run again.
    assert run_state(tmp_path).describe() == "would resume after epoch 4 of 112"


@linux_only
def test_a_long_logs_last_epoch_is_read_and_capped_at_the_runs_length(tmp_path):
    _results(tmp_path, "running", epochs=13)
    records = [{"step": s, "epoch": s // 150, "loss": 0.5, "pad": "x" * 300} for s in range(2000)]
    records.append({"step": 1999, "epoch": 14, "val/AP": 0.3})  # the last evaluation
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with run_lock(tmp_path):
        assert run_state(tmp_path).describe().endswith("epoch 13 of 13")


@linux_only
def test_a_run_being_trained_says_how_long_its_training_has_left(tmp_path):
    _results(tmp_path, "running", epochs=10)
    # 150 iterations an epoch, logged every 10th; 0.2 s an iteration but for one slow one
    # (a checkpoint's), which the median leaves out.
    records = [
        {"step": s, "epoch": s // 150, "loss": 0.5, "sec_per_iter": 0.2} for s in range(0, 460, 10)
    ]
    records[-3]["sec_per_iter"] = 30.0
    records.insert(15, {"step": 149, "epoch": 1, "val/AP": 0.1})  # an evaluation: no pace
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with run_lock(tmp_path):
        state = run_state(tmp_path)
        # 1500 iterations in all, the last logged is step 450: 1049 left at 0.2 s.
        assert state.left_s == pytest.approx(1049 * 0.2)
        assert (
            state.describe() == f"training now (pid {os.getpid()}): epoch 4 of 10, about 3 min left"
        )
        # Within the first epoch the log cannot tell an epoch's length: nothing is promised.
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:10]))
        assert run_state(tmp_path).left_s is None
        assert run_state(tmp_path).describe().endswith("epoch 1 of 10")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(20, "under a minute"), (61, "about 1 min"), (42 * 60, "about 42 min"), (9000, "about 2.5 h")],
)
def test_durations_read_in_minutes_then_hours(seconds, text):
    assert run_state_module.duration_text(seconds) == text


def test_a_run_whose_loss_came_back_up_is_said_to_have_broken_down(tmp_path):
    _results(tmp_path, "running", epochs=112)
    _checkpoint(tmp_path, epoch=9)
    losses = [1.0] * 10 + [0.0] * 20 + [1.0] * 20  # fell, then all the way back
    (tmp_path / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": i, "epoch": 0, "loss_cls": v}) + "\n" for i, v in enumerate(losses)
        )
    )
    assert run_state(tmp_path).describe() == (
        "would resume after epoch 9 of 112; broke down (rebound 1.00)"
    )
    # A loss that only fell, or never fell yet, says nothing.
    (tmp_path / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": i, "epoch": 0, "loss_cls": 1 - i / 50}) + "\n" for i in range(50)
        )
    )
    assert run_state(tmp_path).describe() == "would resume after epoch 9 of 112"


def _log(run_dir: Path, losses: list[float], per_epoch: int = 10) -> None:
    """One training record per iteration, ``per_epoch`` iterations an epoch."""
    (run_dir / "metrics.jsonl").write_text(
        "".join(
            json.dumps(
                {"step": i, "epoch": i // per_epoch, "loss": v, "loss_cls": v, "sec_per_iter": 0.1}
            )
            + "\n"
            for i, v in enumerate(losses)
        )
    )


def test_part_of_a_run_is_judged_by_windows_as_long_as_the_whole_runs(tmp_path):
    _results(tmp_path, "running", epochs=14)
    _checkpoint(tmp_path, epoch=7)
    # Seven of 14 epochs of a loss that falls steadily, with batch-to-batch noise and one
    # high last value: 50 windows of one or two values each read that noise as a breakdown.
    noisy = [1 - 0.4 * i / 69 + (0.15 if i % 2 else -0.15) for i in range(70)]
    noisy[-1] += 0.3
    _log(tmp_path, noisy)
    from alrp_lab.report.curves import rebound

    assert rebound(noisy).value >= 0.5, "the old reading: all 50 windows over half a run"
    state = run_state(tmp_path)
    assert state.rebound < 0.5 and state.describe() == "would resume after epoch 7 of 14"
    # A loss that really came back up still reads as broken down.
    back = [1 - i / 40 * 0.5 for i in range(40)] + [0.5 + i / 30 * 0.5 for i in range(30)]
    _log(tmp_path, back)
    assert (
        run_state(tmp_path)
        .describe()
        .startswith("would resume after epoch 7 of 14; broke down (rebound")
    )
