"""The torchrun worker's own exit: flushed output and status, no interpreter teardown."""

from __future__ import annotations

import subprocess
import sys


def test_leave_flushes_and_keeps_the_status_but_skips_teardown():
    code = (
        "import atexit, sys\n"
        "atexit.register(print, 'teardown ran')\n"
        "from alrp_lab.engine.worker import leave\n"
        "print('out', end='')\n"
        "print('err', end='', file=sys.stderr)\n"
        "leave(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert done.stdout == "out" and done.stderr == "err"  # unflushed text would be lost


def test_the_worker_without_a_run_folder_prints_its_usage_and_exits_2():
    command = [sys.executable, "-m", "alrp_lab.engine.worker"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: python -m alrp_lab.engine.worker RUN_DIR")
