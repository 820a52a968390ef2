"""Start a run's processes with torchrun (``train.nproc_per_node > 1``) and wait for them.

Used by ``alrp-lab run`` and by the sweep runner (so a sweep's run, on this machine or as
one SLURM job, gets its N processes the same way). Hydra stays in the calling process:
the resolved config goes to ``RUN_DIR/config.yaml`` and every rank reads it
(``alrp_lab.engine.worker``).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from alrp_lab.errors import ConfigError, RunError
from alrp_lab.tracking.results import read_results

__all__ = ["crash_dump_path", "launch_torchrun", "root_cause"]

log = logging.getLogger(__name__)


def launch_torchrun(cfg: Any, run_dir: Path) -> dict:
    """Run the validated ``cfg`` in ``train.nproc_per_node`` processes; returns the run's
    results dict. Raises :class:`RunError` with one line naming the cause when a rank fails
    (torchrun then stops the others), and :class:`ConfigError` for ``train.nnodes > 1``."""
    if cfg.train.get("nnodes", 1) != 1:
        raise ConfigError(
            f"train.nnodes={cfg.train.nnodes}: alrp-lab run starts one machine's processes; "
            "across machines start torchrun on every node with -m alrp_lab.engine.worker "
            "RUN_DIR and the overrides (README: Scale-out)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={cfg.train.nproc_per_node}",
        "-m",
        "alrp_lab.engine.worker",
        str(run_dir),
    ]
    # torchrun's and the workers' stderr (a dead rank's multi-page report, tracebacks) go to
    # a log in the run folder; the failure is then one line that names the rank.
    log_path = run_dir / "torchrun.log"
    results_path = run_dir / "results.json"
    for rank in range(cfg.train.nproc_per_node):  # an earlier attempt's crash dumps
        crash_dump_path(run_dir, rank).unlink(missing_ok=True)
    with open(log_path, "w") as log_file:
        # The file clock's time of the launch: results.json's mtime comes from the same clock,
        # which can trail time.time() by a tick.
        started = log_path.stat().st_mtime
        completed = subprocess.run(command, check=False, stderr=log_file)
    dumps = _take_crash_dumps(run_dir, cfg.train.nproc_per_node)
    # Only what this launch wrote: an earlier attempt's results.json (its error) is stale.
    fresh = results_path.is_file() and results_path.stat().st_mtime >= started
    results = read_results(run_dir) if fresh else {}
    if completed.returncode != 0:
        # Another rank's death is the cause of whatever rank 0 then recorded ("Connection
        # closed by peer"); rank 0's own error is the cause when it failed first.
        cause = root_cause(log_path.read_text(errors="replace"), dumps)
        exited = f"torchrun exited with status {completed.returncode}"
        if results.get("status") == "completed":
            # Rank 0 records a run complete only after every rank has passed the barrier
            # that ends the final evaluation, so checkpoint, metrics and results are whole
            # and the rank died tearing down (its process group, the interpreter): the run
            # stands, and a sweep does not train it again.
            log.warning(
                "the run completed, but a process failed on its way out (%s); see %s",
                cause or exited,
                log_path,
            )
            return results
        if cause is None or cause.startswith("rank 0 "):
            cause = results.get("error") or cause
        raise RunError(f"distributed run failed: {cause or exited}; torchrun's log: {log_path}")
    return results


def crash_dump_path(run_dir: Path, rank: int) -> Path:
    """Where the worker of global ``rank`` has faulthandler write its threads' Python stacks
    if a signal kills it (one file per rank: the ranks share torchrun.log, and a dump names
    no rank)."""
    return Path(run_dir) / f"faulthandler.rank{rank}.log"


def _take_crash_dumps(run_dir: Path, world_size: int) -> dict[int, str]:
    """The ranks' non-empty crash dumps by rank; the empty dump files (of every rank that did
    not crash) are removed, the others kept as the evidence beside torchrun.log."""
    dumps = {}
    for rank in range(world_size):
        path = crash_dump_path(run_dir, rank)
        text = path.read_text(errors="replace") if path.is_file() else ""
        if text.strip():
            dumps[rank] = text
        else:
            path.unlink(missing_ok=True)
    return dumps


def root_cause(log: str, crash_dumps: Mapping[int, str] | None = None) -> str | None:
    """What killed the run, from torchrun's failure report in ``log`` (torchrun.log): "rank R
    died (exit code X[, SIGNAME])", else None.

    For a rank killed by a signal the line goes on with what it left: the innermost Python
    frame of the crashing thread from its faulthandler dump (``crash_dumps[R]``; the main
    thread's, when the crash came from a thread without Python code) and the C++ exception
    that std::terminate reported (SIGABRT), if the log holds exactly one such report (the
    report names no rank). A Python exception's traceback is in the log; rank 0's is also
    in results.json, which the launcher reports.
    """
    section = log.split("Root Cause", 1)[-1] if "Root Cause" in log else ""
    rank = re.search(r"rank\s*:\s*(\d+)", section)
    code = re.search(r"exitcode\s*:\s*(-?\d+)(?:[^\n]*\((SIG\w+)\))?", section)
    if rank is None or code is None:
        return None
    how = f"exit code {code.group(1)}" + (f", {code.group(2)}" if code.group(2) else "")
    details = []
    if code.group(2):
        dump = (crash_dumps or {}).get(int(rank.group(1)), "")
        details = [_crash_frame(dump), _terminate_reason(log)]
    said = "; ".join(d for d in details if d)
    return f"rank {rank.group(1)} died ({how})" + (f": {said}" if said else "")


_FRAME = r"\s+File \"([^\"]+)\", line (\d+) in (\S+)"


def _crash_frame(dump: str) -> str | None:
    """``in FUNC (FILE:LINE)`` for the innermost frame of the thread that crashed in a
    faulthandler ``dump`` ("Current thread ..."); when that thread ran no Python (a C++
    thread: faulthandler then lists only the others), ``main thread in ...`` for the last
    thread listed, the oldest. None when the dump has no frame."""
    current = re.search(r"^Current thread [^\n]*\n" + _FRAME, dump, re.MULTILINE)
    if current is not None:
        path, line, func = current.groups()
        return f"in {func} ({Path(path).name}:{line})"
    threads = re.findall(r"^Thread [^\n]*\n" + _FRAME, dump, re.MULTILINE)
    if not threads:
        return None
    path, line, func = threads[-1]
    return f"main thread in {func} ({Path(path).name}:{line})"


def _terminate_reason(log: str) -> str | None:
    """``TYPE: what()`` of the C++ exception std::terminate reported, when the log holds
    exactly one such report."""
    found = re.findall(
        r"terminate called after throwing an instance of '([^']+)'\s*\n\s*what\(\):\s*(.+)", log
    )
    if len(found) != 1:
        return None
    kind, what = found[0]
    return f"{kind}: {what.strip()}"
