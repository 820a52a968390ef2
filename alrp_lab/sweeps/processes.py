"""Process hygiene for sweeps: one process per run folder, and workers that die with the
sweep that started them.

- :func:`run_lock` takes an exclusive, non-blocking ``flock`` on ``RUN_DIR/.lock`` for as
  long as a run is being trained there, so a second sweep (or a rerun started while the
  first still runs) cannot write into the same folder at the same time. The kernel drops
  the lock when the holder dies, however it dies, so a stale lock never blocks a rerun.
- :func:`die_with_parent` (a process-pool initializer) asks Linux to SIGKILL a worker when
  the sweep's process dies, kill -9 included, so no orphaned worker goes on training.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".lock"
_PR_SET_PDEATHSIG = 1

__all__ = ["LOCK_FILE", "RunLocked", "die_with_parent", "run_lock"]


class RunLocked(RuntimeError):
    """Another process is training in this run folder."""


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` exclusively; raises :class:`RunLocked` when another process
    holds it. A no-op where ``fcntl`` does not exist (not POSIX)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunLocked(
                f"{run_dir} is being trained by another process (pid {holder}): wait for it "
                "or stop it before rerunning this job"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def die_with_parent() -> None:
    """Make the calling process receive SIGKILL when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died between fork and prctl: then nobody would signal us.
    if os.getppid() == 1:
        os._exit(1)
