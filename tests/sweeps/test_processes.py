from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alrp_lab.sweeps.definition import parse_sweep
from alrp_lab.sweeps.processes import (
    LOCK_FILE,
    RunLocked,
    lock_holder,
    locks_visible,
    run_lock,
)
from alrp_lab.sweeps.runner import run_sweep
from tests.sweeps.test_runner import RAW

REPO = Path(__file__).resolve().parents[2]


def test_a_locked_run_folder_is_left_alone(tmp_path):
    defn = parse_sweep(RAW, name="toy")
    calls = []

    def job(overrides, run_dir):
        calls.append(Path(run_dir).parent.name)
        Path(run_dir, "results.json").write_text(json.dumps({"status": "completed"}))

    held = tmp_path / "iou__wr1" / "seed0"
    with run_lock(held):
        with pytest.raises(RunLocked, match="another process"):
            with run_lock(held):
                pass
        report = run_sweep(defn, root=tmp_path, run_job=job, write_tables=False)
    assert "being trained by another process" in report.failed["iou__wr1/seed0"]
    assert not (held / "results.json").exists(), "nothing was written into the locked folder"
    assert "iou__wr1" not in calls and len(calls) == 3
    # The lock goes with its holder: a rerun now runs the job.
    again = run_sweep(defn, root=tmp_path, run_job=job, write_tables=False)
    assert again.completed == ["iou__wr1/seed0"]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_parallel_workers_die_with_a_killed_sweep(tmp_path):
    script = (
        "from alrp_lab.sweeps.definition import parse_sweep\n"
        "from alrp_lab.sweeps.runner import run_sweep\n"
        "from tests.sweeps.sleepy_job import sleepy\n"
        "from tests.sweeps.test_runner import RAW\n"
        f"run_sweep(parse_sweep(RAW, name='toy'), root={str(tmp_path)!r}, run_job=sleepy,\n"
        "          n_jobs=2, write_tables=False)\n"
    )
    sweep = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 90
        while len(list(tmp_path.glob("*/seed0/pid"))) < 2:
            assert time.monotonic() < deadline, "the workers never started"
            assert sweep.poll() is None, "the sweep ended early"
            time.sleep(0.2)
        time.sleep(0.5)
        pids = [int(p.read_text()) for p in tmp_path.glob("*/seed0/pid")]
        assert all(_alive(pid) for pid in pids)
        sweep.kill()  # kill -9: no cleanup code of the parent runs
        sweep.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids), "a worker outlived the sweep"
    finally:
        if sweep.poll() is None:
            sweep.kill()


def _entry(run_dir: Path, pid: int, kind: str = "FLOCK", waiting: bool = False, dev=None) -> str:
    """A line of /proc/locks for a lock on ``run_dir``'s lock file."""
    stat = (run_dir / LOCK_FILE).stat()
    major, minor = dev or (os.major(stat.st_dev), os.minor(stat.st_dev))
    arrow = "-> " if waiting else ""
    return f"1: {arrow}{kind}  ADVISORY  WRITE {pid} {major:02x}:{minor:02x}:{stat.st_ino} 0 EOF\n"


def test_lock_holder_reads_the_kernels_table_for_this_folder_only(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    for folder in (run, other):
        folder.mkdir()
        (folder / LOCK_FILE).write_text("4242")
    table = tmp_path / "locks"
    assert not locks_visible(table) and lock_holder(run, table) is None, "no table"
    table.write_text(_entry(other, 17) + _entry(run, 23, waiting=True) + _entry(run, 9, "POSIX"))
    assert locks_visible(table)
    assert lock_holder(run, table) is None, "another folder, a waiter and a POSIX lock"
    table.write_text(table.read_text() + _entry(run, 31))
    assert lock_holder(run, table) == 31
    table.write_text(_entry(run, 0) + _entry(run, -1))
    assert lock_holder(run, table) is None, "no pid to name"
    assert lock_holder(tmp_path / "never-run", table) is None


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="Linux's /proc/PID/fd")
def test_a_lock_listed_under_another_device_number_is_confirmed_by_the_process(tmp_path):
    # btrfs: /proc/locks names the file system's device, stat the subvolume's.
    (tmp_path / LOCK_FILE).write_text("")
    table = tmp_path / "locks"
    table.write_text(_entry(tmp_path, os.getpid(), dev=(0x99, 0x7)))
    assert lock_holder(tmp_path, table) is None, "the process does not have the file open"
    with open(tmp_path / LOCK_FILE):
        assert lock_holder(tmp_path, table) == os.getpid()


@pytest.mark.skipif(not Path("/proc/locks").is_file(), reason="Linux's /proc/locks")
def test_lock_holder_sees_a_held_lock_without_taking_it(tmp_path):
    assert lock_holder(tmp_path) is None
    with run_lock(tmp_path):
        assert lock_holder(tmp_path) == os.getpid()
        with pytest.raises(RunLocked):  # asking did not take or drop it
            with run_lock(tmp_path):
                pass
    assert lock_holder(tmp_path) is None
