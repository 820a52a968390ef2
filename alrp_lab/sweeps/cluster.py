"""A sweep's runs as submitit jobs: ``alrp-lab sweep NAME hydra/launcher=submitit_slurm``.

The sweep takes the launcher the way ``alrp-lab run -m`` does, with Hydra's submitit
launcher plugin's names and defaults (``hydra.launcher.partition=...``,
``hydra.launcher.gpus_per_node=4``, ``hydra.launcher.timeout_min=...``), and submits one
job per run through submitit, the engine behind that plugin: ``submitit_local`` runs them
as local processes, ``submitit_slurm`` as a SLURM job array. A run that asks for
``train.nproc_per_node=N`` starts torchrun with N processes inside its job, as on one
machine; give the job N GPUs (``hydra.launcher.gpus_per_node=N``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from alrp_lab.errors import SweepError

log = logging.getLogger(__name__)

__all__ = ["LAUNCHERS", "POLL_SECONDS", "Launcher", "slurm_missing", "split_launcher_overrides"]

# How often run_all asks whether a job has ended. A job that returned (its run completed
# or failed) has written its result file, which is what submitit checks first; one the
# cluster killed is seen when submitit next reads sacct, which it rate-limits itself
# (minutes apart in a long sweep), so polling faster would not see it sooner.
POLL_SECONDS = 2.0

# hydra/launcher=NAME -> submitit's cluster name.
LAUNCHERS = {"submitit_local": "local", "submitit_slurm": "slurm"}


def slurm_missing(launcher: str) -> str | None:
    """Why the SLURM launcher ``launcher`` (its ``hydra/launcher`` name) cannot submit from
    this machine, or None. Submitit's own test is ``srun`` on the PATH; without it the
    executor raises a bare RuntimeError from deep inside Hydra's launcher."""
    if shutil.which("srun") is not None:
        return None
    return (
        f"hydra/launcher={launcher} cannot start here (no srun on PATH: not a SLURM node): "
        "run it on the cluster's login node, or use hydra/launcher=submitit_local"
    )


class Launcher:
    """A submitit executor configured like Hydra's ``hydra/launcher=NAME``."""

    def __init__(self, name: str, params: dict[str, Any], folder: Path, job_name: str) -> None:
        if name not in LAUNCHERS:
            raise SweepError(
                f"hydra/launcher={name} cannot run a sweep: use one of {', '.join(LAUNCHERS)} "
                "(or --jobs N for processes on this machine)"
            )
        self.name, self.cluster = name, LAUNCHERS[name]
        self.params = _queue_params(name, params, folder, job_name)

    def executor(self) -> Any:
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        # Before submitit, whose only refusal here is the same test, as a bare RuntimeError.
        if self.cluster == "slurm" and (problem := slurm_missing(self.name)) is not None:
            raise SweepError(problem)
        params = dict(self.params)
        # The plugin's mapping: max_num_timeout is an executor argument, the base keys go as
        # they are, the others with the cluster's prefix (slurm_partition ...).
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self.cluster}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self.cluster, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"{self.cluster}_{k}": v for k, v in params.items()}
        )
        return executor

    def run_all(
        self,
        fn: Callable[..., Any],
        calls: Sequence[tuple[Any, ...]],
        on_done: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """``fn(*call)`` for each call, one submitit job each; their return values in order.

        A job that raised or that the cluster killed (time limit, memory, scancel) gives its
        exception in its place, so that one lost job does not cost the others' results.
        ``on_done(index, outcome)`` is called as each job ends, in the order they end
        (checked every ``POLL_SECONDS``), so that a sweep can say so while others run; an
        error in it is a warning, so that the other jobs' outcomes are still collected.
        """
        if not calls:
            return []
        from submitit.helpers import as_completed

        jobs = self.executor().map_array(fn, *zip(*calls, strict=True))
        index = {id(job): i for i, job in enumerate(jobs)}
        outcomes: list[Any] = [None] * len(jobs)
        for job in as_completed(jobs, poll_frequency=POLL_SECONDS):
            try:
                outcome = job.result()
            except Exception as err:  # submitit's FailedJobState, UncompletedJobError, ...
                outcome = err
            outcomes[index[id(job)]] = outcome
            if on_done is not None:
                try:
                    on_done(index[id(job)], outcome)
                except Exception as err:
                    log.warning("after job %d: %s: %s", index[id(job)], type(err).__name__, err)
        return outcomes


def _queue_params(name: str, params: dict[str, Any], folder: Path, job_name: str) -> dict:
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    from omegaconf import OmegaConf

    node = OmegaConf.structured(SlurmQueueConf if name == "submitit_slurm" else LocalQueueConf)
    unknown = sorted(set(params) - set(node.keys()))
    if unknown:
        raise SweepError(
            f"hydra.launcher.{unknown[0]} is not a setting of hydra/launcher={name}; its "
            f"settings: {', '.join(k for k in node.keys() if k != '_target_')}"
        )
    # The plugin's defaults name the Hydra sweep folder and job: here, the sweep's.
    node.submitit_folder = str(folder / ".submitit" / "%j")
    node.name = job_name
    merged = OmegaConf.to_container(OmegaConf.merge(node, params), resolve=True)
    merged.pop("_target_", None)
    return {k: v for k, v in merged.items() if v is not None}


def split_launcher_overrides(
    overrides: Sequence[str],
) -> tuple[list[str], str | None, dict[str, Any]]:
    """(the jobs' overrides, the launcher's name or None, its settings): takes
    ``hydra/launcher=NAME`` and ``hydra.launcher.KEY=VALUE`` out of a sweep's command line."""
    rest: list[str] = []
    name: str | None = None
    params: dict[str, Any] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key == "hydra/launcher":
            name = value
        elif key.startswith("hydra.launcher."):
            params[key.removeprefix("hydra.launcher.")] = yaml.safe_load(value)
        else:
            rest.append(item)
    if params and name is None:
        raise SweepError(
            f"hydra.launcher.{next(iter(params))} needs a launcher: add "
            "hydra/launcher=submitit_slurm (or submitit_local)"
        )
    return rest, name, params
