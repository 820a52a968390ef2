"""Process hygiene for sweeps: one process per run folder, and workers that die with the
sweep that started them.

- :func:`run_lock` takes an exclusive, non-blocking ``flock`` on ``RUN_DIR/.lock`` for as
  long as a run is being trained there, so a second sweep (or a rerun started while the
  first still runs) cannot write into the same folder at the same time. The kernel drops
  the lock when the holder dies, however it dies, so a stale lock never blocks a rerun.
- :func:`lock_holder` says which process holds a run's lock, read from ``/proc/locks``
  without touching the lock, so asking never makes a starting sweep see a held folder;
  :func:`locks_visible` says whether this system can tell at all.
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

PROC_LOCKS = Path("/proc/locks")

__all__ = [
    "LOCK_FILE",
    "RunLocked",
    "die_with_parent",
    "lock_holder",
    "locks_visible",
    "run_lock",
]


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


def locks_visible(proc_locks: Path = PROC_LOCKS) -> bool:
    """Whether :func:`lock_holder` can tell anything here: the kernel's table of held locks
    is readable (Linux). Elsewhere a held lock cannot be seen without taking it."""
    try:
        with proc_locks.open("rb"):
            return True
    except OSError:
        return False


def _holds(pid: int, lock: os.stat_result) -> bool:
    """Whether process ``pid`` has the file ``lock`` open (its /proc/PID/fd links)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # gone, or not ours to look at
        return False
    for fd in fds:
        try:
            target = fd.stat()
        except OSError:
            continue
        if (target.st_dev, target.st_ino) == (lock.st_dev, lock.st_ino):
            return True
    return False


def lock_holder(run_dir: Path, proc_locks: Path = PROC_LOCKS) -> int | None:
    """The pid of the process holding ``run_dir``'s lock (training there now), or None when
    this machine's kernel lists no holder: nobody holds it, the folder has no lock file, or
    the holder is out of sight (a process on another machine sharing the folder over a
    network file system, or in another pid namespace, which the kernel leaves out of the
    table). Without a table to read (not Linux, see :func:`locks_visible`) None says nothing.

    Reads the kernel's table of held locks instead of trying the lock, since a try that
    succeeded would hold it for a moment, and a sweep starting then would skip the run.
    """
    lock = Path(run_dir) / LOCK_FILE
    try:
        stat = lock.stat()
        table = proc_locks.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # A holder's line: "1: FLOCK  ADVISORY  WRITE 28170 fe:00:6433146 0 EOF" (pid, then the
    # device's major and minor in hex and the inode). A process waiting for the lock has
    # "->" after the number, which shifts its fields, so it never matches "FLOCK" below.
    device = (os.major(stat.st_dev), os.minor(stat.st_dev))
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE":
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            listed = (int(major, 16), int(minor, 16))
            if int(inode) != stat.st_ino or pid <= 0:
                continue
        except ValueError:
            continue
        # The same inode on another device number is the same file when the table names a
        # file system's device and stat another (btrfs subvolumes): ask the process.
        if listed == device or _holds(pid, stat):
            return pid
    return None


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
