"""The lines a sweep prints as it goes."""

from __future__ import annotations

from alrp_lab.sweeps.announce import not_started_line, run_line, start_line
from alrp_lab.sweeps.error_line import ERROR_CHARS
from alrp_lab.utils.io import atomic_write_json


def test_the_start_line_names_what_runs_and_what_is_kept():
    line = "r: training 11 run(s), 2 at a time (136 completed before, skipped; 1 copied)"
    assert start_line("r", 11, 2, 136, 1) == line
    assert start_line("r", 1, 2, 0, 3) == "r: training 1 run(s) (3 copied)"
    assert start_line("r", 2, 4, 0, 0) == "r: training 2 run(s), 2 at a time"  # --jobs 4
    assert start_line("r", 4, 1, 0, 0) == "r: training 4 run(s)"


def test_a_completed_run_shows_its_last_attempts_time_and_metrics(tmp_path):
    atomic_write_json(
        tmp_path / "results.json",
        {
            "status": "completed",
            "finished_at": "2026-12-07T16:26:18+00:00",
            # Resumed once: the time is the last attempt's, not the span with the pause.
            "attempts": [
                {"started_at": "2026-12-07T10:00:00+00:00"},
                {"started_at": "2026-12-07T16:00:00+00:00"},
            ],
            "metrics": {"AP": 0.458, "AP90": 0.117, "oLRP": 0.6104, "rho": 0.64},
        },
    )
    line = run_line(tmp_path, "256px--sb/seed1", None, 3, 11)
    assert line == "[3/11] 256px--sb/seed1 completed in about 26 min: AP 45.8, AP90 11.7, oLRP 61.0"


def test_what_the_results_file_lacks_is_left_out(tmp_path):
    assert run_line(tmp_path, "a/seed0", None, 1, 2) == "[1/2] a/seed0 completed"
    atomic_write_json(
        tmp_path / "results.json", {"status": "completed", "metrics": {"AP": 0.5, "oLRP": None}}
    )
    assert run_line(tmp_path, "a/seed0", None, 1, 2) == "[1/2] a/seed0 completed: AP 50.0"


def test_an_odd_results_file_gives_a_line_without_what_it_cannot_read(tmp_path):
    atomic_write_json(
        tmp_path / "results.json",
        {
            "status": "completed",
            "finished_at": "2026-12-07T16:26:18",  # naive, against an aware start
            "attempts": [{"started_at": "2026-12-07T16:00:00+00:00"}],
            "metrics": [0.5],
        },
    )
    assert run_line(tmp_path, "a/seed0", None, 1, 1) == "[1/1] a/seed0 completed"
    atomic_write_json(
        tmp_path / "results.json",
        {"status": "completed", "attempts": ["x"], "metrics": {"AP": "0.5", "AP90": True}},
    )
    assert run_line(tmp_path, "a/seed0", None, 1, 1) == "[1/1] a/seed0 completed"


def test_an_error_is_shown_on_one_line_cut_to_its_length():
    long = run_line("unused", "a/seed0", "E: " + "x" * 1000, 1, 1)
    assert long.endswith("x...") and len(long.split("failed: ")[1]) == ERROR_CHARS
    assert not_started_line("a/seed0", "held by pid 9\n") == "a/seed0 not started: held by pid 9"


# What submitit 1.5's errors say (submitit/core/core.py), as RunRecorder.fail records them.
KILLED = (
    "UncompletedJobError: Job 7_1 (task: 0) with path /r/.submitit/7_1/7_1_0_result.pkl\n"
    "has not produced any output (state: TIMEOUT)\n"
    "Error stream produced:\n"
    "----------------------------------------\n"
    "slurmstepd: error: *** JOB 7 ON n1 CANCELLED DUE TO TIME LIMIT ***\n"
)
RAISED = (
    "FailedJobError: Job (task=0) failed during processing with trace:\n"
    "----------------------\n"
    "Traceback (most recent call last):\n"
    '  File "/v/submitit/core/submission.py", line 55, in process_job\n'
    "    result = delayed.result()\n"
    "ModuleNotFoundError: No module named 'alrp_lab'\n"
    "\n"
    "----------------------\n"
    "You can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n"
    "  - /r/.submitit/7_0/7_0_0_log.err\n"
)


def test_a_cluster_error_shows_the_jobs_state_or_what_it_raised():
    assert run_line("unused", "a/seed1", KILLED, 2, 2) == (
        "[2/2] a/seed1 failed: UncompletedJobError: Job 7_1 (task: 0) with path "
        "/r/.submitit/7_1/7_1_0_result.pkl has not produced any output (state: TIMEOUT)"
    )
    assert run_line("unused", "a/seed0", RAISED, 1, 2) == (
        "[1/2] a/seed0 failed: ModuleNotFoundError: No module named 'alrp_lab'"
    )
    message_over_lines = "Traceback (most recent call last):\n  x\nValueError: boom\nat step 3\n"
    assert run_line("unused", "a", message_over_lines, 1, 1) == "[1/1] a failed: ValueError: boom"
    bare = "Traceback (most recent call last):\n  x\nKeyboardInterrupt\n"
    assert run_line("unused", "a", bare, 1, 1) == "[1/1] a failed: KeyboardInterrupt"
