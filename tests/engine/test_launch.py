"""alrp_lab.engine.launch: reading torchrun's failure report, and what a failed exit means."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest
from omegaconf import OmegaConf

from alrp_lab.engine import launch
from alrp_lab.engine.launch import root_cause
from alrp_lab.errors import ConfigError, RunError

# The shape of torchrun 2.13's report for a rank whose Python code raised (here under
# @record, which alrp_lab's worker does not use, so that the report's traceback is there).
PYTHON_ERROR_LOG = """\
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
alrp_lab.engine.worker FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-07_01:41:50
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 13389)
  error_file: /tmp/torchelastic_x/attempt_0/1/error.json
  traceback : Traceback (most recent call last):
    File "/venv/lib/python3.11/site-packages/torch/distributed/elastic/multiprocessing/errors/__init__.py", line 367, in wrapper
      return f(*args, **kwargs)
             ^^^^^^^^^^^^^^^^^^
    File "/src/alrp_lab/engine/train.py", line 7, in main
      raise RuntimeError("boom in rank 1\\nsecond line")
  RuntimeError: boom in rank 1
  second line
============================================================
"""  # noqa: E501

# torchrun.log of a run whose rank 1 std::terminate aborted: the C++ exception's report
# (which names no rank), then torchrun's.
ABORT_LOG = """\
terminate called after throwing an instance of 'gloo::IoException'
  what():  [gloo/transport/tcp/pair.cc:598] Connection closed by peer [127.0.0.1]:41077
E1207 01:42:04.232000 13414 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: -6) local_rank: 1 (pid: 13430)
Root Cause (first observed failure):
[0]:
  time      : 2026-12-07_01:42:04
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -6 (pid: 13430)  (SIGABRT)
  error_file: <N/A>
  traceback : Signal 6 (SIGABRT) received by PID 13430
=======================================================
"""  # noqa: E501

# Rank 1's faulthandler dump (its own file) when its main thread aborted.
MAIN_THREAD_DUMP = """\
Fatal Python error: Aborted

Thread 0x00007f6c0d7fe640 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 331 in wait

Current thread 0x00007f6c13620b80 (most recent call first):
  File "/venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py", line 2210 in destroy_process_group
  File "/src/alrp_lab/engine/distributed.py", line 210 in cleanup
  File "/src/alrp_lab/engine/worker.py", line 66 in main
"""  # noqa: E501

# The dump when a thread without Python code aborted: faulthandler lists only the other
# threads, the main (oldest) one last.
CPP_THREAD_DUMP = """\
Fatal Python error: Aborted

Thread 0x00007f7779e4b6c0 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 331 in wait
  File "/usr/lib/python3.11/threading.py", line 1002 in _bootstrap

Thread 0x00007f777abdeb80 (most recent call first):
  File "/src/alrp_lab/engine/evaluate.py", line 117 in predict
  File "/src/alrp_lab/engine/train.py", line 557 in train
"""


def test_root_cause_of_an_exit_code_is_the_rank_and_code():
    """A Python exception's words come from results.json (rank 0) or the log, not from here."""
    assert root_cause(PYTHON_ERROR_LOG) == "rank 1 died (exit code 1)"


def test_root_cause_names_where_a_signal_killed_a_rank_and_the_cpp_exception():
    assert root_cause(ABORT_LOG, {1: MAIN_THREAD_DUMP}) == (
        "rank 1 died (exit code -6, SIGABRT): in destroy_process_group "
        "(distributed_c10d.py:2210); gloo::IoException: [gloo/transport/tcp/pair.cc:598] "
        "Connection closed by peer [127.0.0.1]:41077"
    )


def test_root_cause_of_a_crash_outside_python_names_the_main_threads_frame():
    assert root_cause(ABORT_LOG, {1: CPP_THREAD_DUMP}).startswith(
        "rank 1 died (exit code -6, SIGABRT): main thread in predict (evaluate.py:117); gloo::"
    )


def test_root_cause_reads_the_dead_ranks_dump_only():
    assert root_cause(ABORT_LOG, {0: MAIN_THREAD_DUMP}) == (
        "rank 1 died (exit code -6, SIGABRT): gloo::IoException: "
        "[gloo/transport/tcp/pair.cc:598] Connection closed by peer [127.0.0.1]:41077"
    )


def test_root_cause_leaves_out_a_cpp_exception_it_cannot_attribute():
    """Two terminate reports in the log: neither names its rank."""
    report = ABORT_LOG.split("E1207", 1)
    twice = report[0] * 2 + "E1207" + report[1]
    assert root_cause(twice, {1: MAIN_THREAD_DUMP}) == (
        "rank 1 died (exit code -6, SIGABRT): in destroy_process_group (distributed_c10d.py:2210)"
    )


def test_root_cause_of_a_killed_rank_without_its_words_is_the_signal_alone():
    report = ABORT_LOG[ABORT_LOG.index("E1207") :]
    assert root_cause(report) == "rank 1 died (exit code -6, SIGABRT)"


def test_root_cause_is_none_without_torchruns_report():
    assert root_cause("Traceback (most recent call last):\nValueError: x\n") is None


def _torchrun_that_exits(status: str | None, code: int, log_text: str = ""):
    """A stand-in for subprocess.run that writes the run's results.json (unless ``status`` is
    None), the ranks' crash dumps (rank 1's when ``code`` is not 0) and ``log_text`` to
    torchrun.log, then exits with ``code``."""

    def run(command, check, stderr):
        run_dir = launch.Path(command[-1])
        if status is not None:
            results = {"status": status, "error": None, "metrics": {"AP": 0.4}}
            (run_dir / "results.json").write_text(json.dumps(results))
        launch.crash_dump_path(run_dir, 0).write_text("")
        launch.crash_dump_path(run_dir, 1).write_text(MAIN_THREAD_DUMP if code else "")
        stderr.write(log_text)
        return subprocess.CompletedProcess(command, code)

    return run


def test_a_run_that_completed_before_a_rank_died_on_its_way_out_stands(
    tmp_path, monkeypatch, caplog
):
    """Rank 0 writes "completed" only after every rank passed the final barrier: a crash
    after that is in teardown, and the run's results are returned with a warning."""
    monkeypatch.setattr(launch.subprocess, "run", _torchrun_that_exits("completed", 1, ABORT_LOG))
    cfg = OmegaConf.create({"train": {"nproc_per_node": 2}})
    with caplog.at_level(logging.WARNING, logger="alrp_lab.engine.launch"):
        results = launch.launch_torchrun(cfg, tmp_path / "run")
    assert results["status"] == "completed" and results["metrics"] == {"AP": 0.4}
    (warning,) = caplog.messages
    assert "on its way out" in warning and "rank 1 died" in warning
    assert "destroy_process_group" in warning and "torchrun.log" in warning
    # The crash's dump stays as evidence beside torchrun.log; an empty one does not.
    assert launch.crash_dump_path(tmp_path / "run", 1).is_file()
    assert not launch.crash_dump_path(tmp_path / "run", 0).exists()


def test_alrp_lab_run_does_not_start_several_nodes(tmp_path):
    cfg = OmegaConf.create({"train": {"nproc_per_node": 2, "nnodes": 2}})
    with pytest.raises(ConfigError, match="every node"):
        launch.launch_torchrun(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "stale_status, log_text, expected",
    [
        ("failed", "", "torchrun exited with status 1"),
        # Nor does an earlier "completed" make a failed launch stand.
        ("completed", ABORT_LOG, r"rank 1 died .*SIGABRT\): in destroy_process_group"),
    ],
)
def test_a_failed_launch_does_not_report_an_earlier_attempts_results(
    tmp_path, monkeypatch, stale_status, log_text, expected
):
    """results.json left by an earlier attempt is not this launch's cause or outcome."""
    import os
    import time

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = {"status": stale_status, "error": "an earlier attempt's error", "metrics": {}}
    (run_dir / "results.json").write_text(json.dumps(stale))
    past = time.time() - 60
    os.utime(run_dir / "results.json", (past, past))
    monkeypatch.setattr(launch.subprocess, "run", _torchrun_that_exits(None, 1, log_text))
    cfg = OmegaConf.create({"train": {"nproc_per_node": 2}})
    with pytest.raises(RunError, match=expected) as raised:
        launch.launch_torchrun(cfg, run_dir)
    assert "earlier attempt" not in str(raised.value)


def test_a_successful_launch_leaves_no_crash_dumps(tmp_path, monkeypatch):
    monkeypatch.setattr(launch.subprocess, "run", _torchrun_that_exits("completed", 0))
    cfg = OmegaConf.create({"train": {"nproc_per_node": 2}})
    assert launch.launch_torchrun(cfg, tmp_path / "run")["status"] == "completed"
    assert not list((tmp_path / "run").glob("faulthandler.*"))


@pytest.mark.parametrize("status", ["failed", "running", None])
def test_a_run_that_did_not_complete_fails_with_the_dead_ranks_words(tmp_path, monkeypatch, status):
    monkeypatch.setattr(launch.subprocess, "run", _torchrun_that_exits(status, 1, ABORT_LOG))
    cfg = OmegaConf.create({"train": {"nproc_per_node": 2}})
    with pytest.raises(RunError, match=r"rank 1 died .*SIGABRT\): in destroy_process_group"):
        launch.launch_torchrun(cfg, tmp_path / "run")


@pytest.mark.slow
def test_a_rank_that_aborts_tearing_down_leaves_a_completed_run(tmp_path):
    """A real two-process run whose rank 1 aborts as it leaves its process group while rank
    0 takes two seconds to record the run (a sitecustomize on PYTHONPATH swaps
    destroy_process_group for os.abort in rank 1 and slows RunRecorder.complete in rank 0):
    `alrp-lab run` exits 0 with the run complete, as no rank tears down before rank 0 has
    recorded it (torchrun stops the other ranks as soon as one dies), and the warning names
    the frame where rank 1 died."""
    import os
    import sys

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import torch.distributed\n"
        "    def abort_in_destroy_process_group(*args, **kwargs):\n"
        "        os.abort()\n"
        "    torch.distributed.destroy_process_group = abort_in_destroy_process_group\n"
        "if os.environ.get('RANK') == '0':\n"
        "    import time\n"
        "    from alrp_lab.tracking.results import RunRecorder\n"
        "    complete = RunRecorder.complete\n"
        "    def slow_complete(self, *args, **kwargs):\n"
        "        time.sleep(2)\n"
        "        return complete(self, *args, **kwargs)\n"
        "    RunRecorder.complete = slow_complete\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "alrp_lab.cli", "run", "debug=smoke"]
    command += [f"hydra.run.dir={run_dir}", "train.nproc_per_node=2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
    said = done.stdout + done.stderr
    assert "failed on its way out" in said
    assert "rank 1 died (exit code -6, SIGABRT): in abort_in_destroy_process_group" in said
    assert [p.name for p in run_dir.glob("faulthandler.*")] == ["faulthandler.rank1.log"]
