"""A sweep job for process tests: records its pid, then sleeps (module level, so a spawned
worker can import it)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def sleepy(overrides, run_dir):
    Path(run_dir, "pid").write_text(str(os.getpid()))
    time.sleep(120)
