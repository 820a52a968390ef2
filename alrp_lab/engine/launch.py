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
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from alrp_lab.errors import ConfigError, RunError
from alrp_lab.tracking.results import read_results

__all__ = ["launch_torchrun"]

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
    started = time.time()
    with open(log_path, "w") as log_file:
        completed = subprocess.run(command, check=False, stderr=log_file)
    # Only what this launch wrote: an earlier attempt's results.json (its error) is stale.
    fresh = results_path.is_file() and results_path.stat().st_mtime >= started
    results = read_results(run_dir) if fresh else {}
    if completed.returncode != 0:
        # Another rank's death is the cause of whatever rank 0 then recorded ("Connection
        # closed by peer"); rank 0's own error is the cause when it failed first.
        cause = root_cause(log_path.read_text(errors="replace"))
        if results.get("status") == "completed":
            # Rank 0 records a run complete only after every rank has passed the barrier
            # that ends the final evaluation, so checkpoint, metrics and results are whole
            # and the rank died tearing down (its process group, the interpreter): the run
            # stands, and a sweep does not train it again.
            log.warning(
                "the run completed, but a process failed on its way out (%s); see %s",
                cause or f"torchrun exited with status {completed.returncode}",
                log_path,
            )
            return results
        if cause is None or cause.startswith("rank 0 "):
            cause = results.get("error") or cause
        reason = cause or f"torchrun exited with status {completed.returncode}"
        raise RunError(f"distributed run failed: {reason}; torchrun's log: {log_path}")
    return results


def root_cause(log: str) -> str | None:
    """What killed the run, from torchrun's failure report in ``log`` (torchrun.log): "rank R
    died (exit code X[, SIGNAME])", else None.

    For a rank killed by a signal, the line goes on with the rank's own words when the log
    holds them: the innermost Python frame that faulthandler dumped for the crashing thread
    and a C++ exception's ``what()`` (std::terminate aborts with SIGABRT), so that a crash
    inside torch names where it happened. A Python exception's traceback is in the log; rank
    0's is also in results.json, which the launcher reports.
    """
    section = log.split("Root Cause", 1)[-1] if "Root Cause" in log else ""
    rank = re.search(r"rank\s*:\s*(\d+)", section)
    code = re.search(r"exitcode\s*:\s*(-?\d+)(?:[^\n]*\((SIG\w+)\))?", section)
    if rank is None or code is None:
        return None
    how = f"exit code {code.group(1)}" + (f", {code.group(2)}" if code.group(2) else "")
    details = [_crash_frame(log), _terminate_reason(log)] if code.group(2) else []
    said = "; ".join(d for d in details if d)
    return f"rank {rank.group(1)} died ({how})" + (f": {said}" if said else "")


def _crash_frame(log: str) -> str | None:
    """``in FUNC (FILE:LINE)``: the innermost Python frame faulthandler dumped for the thread
    that crashed ("Current thread ..."), None when it dumped none."""
    found = re.search(
        r"^Current thread [^\n]*\n\s+File \"([^\"]+)\", line (\d+) in (\S+)", log, re.MULTILINE
    )
    if found is None:
        return None
    path, line, func = found.groups()
    return f"in {func} ({Path(path).name}:{line})"


def _terminate_reason(log: str) -> str | None:
    """``TYPE: what()`` of the C++ exception std::terminate reported, if the log has one."""
    found = re.search(
        r"terminate called after throwing an instance of '([^']+)'\s*\n\s*what\(\):\s*(.+)", log
    )
    return f"{found.group(1)}: {found.group(2).strip()}" if found else None
