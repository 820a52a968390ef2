"""kill -9 soak: a seeded sweep of tiny real jobs, killed at random points 20 times and
rerun each time, ends with the same table as an uninterrupted sweep, and leaves no process
behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alrp_lab.tracking.results import read_results

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "debug=smoke",
    "data.num_train=8",
    "data.num_val=4",
    "train.epochs=3",
    "train.max_iters_per_epoch=3",
    "train.warmup_iters=1",
]
KILLS = 20


def _sweep(root: Path, env: dict[str, str]) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "alrp_lab.cli",
        "sweep",
        "figure4",
        "--root",
        str(root),
        "--seeds",
        "3",
        "--jobs",
        "2",
        *TINY,
    ]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_sweep_killed_twenty_times_ends_with_the_uninterrupted_table(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "ALRP_LAB_DATA": str(tmp_path / "data")}
    started = time.monotonic()
    straight = _sweep(tmp_path / "straight", env)
    assert straight.wait(timeout=600) == 0
    expected = (tmp_path / "straight" / "figure4.md").read_text()
    # Kill points scaled by how long the whole sweep takes on this machine, so that 20
    # attempts together do less than the whole work and most are killed midway.
    longest = max(1.0, (time.monotonic() - started) / 6)

    rng = random.Random(20201020)
    killed = 0
    for _ in range(KILLS):
        sweep = _sweep(tmp_path / "soak", env)
        time.sleep(rng.uniform(0.5, longest))
        workers = _children(sweep.pid)
        if sweep.poll() is not None:  # it finished before the kill: start another
            continue
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=30)
        killed += 1
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "a worker outlived its killed sweep"
    assert killed >= KILLS // 2, "most attempts must have been killed midway"

    final = _sweep(tmp_path / "soak", env)
    assert final.wait(timeout=600) == 0
    assert (tmp_path / "soak" / "figure4.md").read_text() == expected
    # Every run of the soak folder completed once, whatever the kills interrupted (resume
    # itself is checked bitwise in tests/engine/test_train.py).
    statuses = [read_results(p.parent)["status"] for p in (tmp_path / "soak").rglob("results.json")]
    assert statuses == ["completed"] * 9
