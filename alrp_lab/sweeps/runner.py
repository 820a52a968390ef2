"""Run a sweep: expand its jobs, skip the completed ones, run the rest, collect failures.

Every job runs once per seed (``seed=N``, seeds 0..k-1 from ``--seeds`` or the definition's
``seeds``), each run in its own folder ``ROOT/JOB_ID/seedN``. A run whose ``results.json``
says ``completed`` is skipped (so ``--seeds 5`` after ``--seeds 3`` runs two more per job)
when the config it recorded computes what the job asks for now (:mod:`alrp_lab.tracking.staleness`);
otherwise the sweep stops before any work, unless ``rerun`` replaces such runs. So an
interrupted sweep continues where it stopped (a job with a
checkpoint but no result resumes from it); a failing job is recorded as ``failed`` in its
``results.json`` and the others go on. Afterwards the tables (md, csv, tex) are written into
``ROOT`` from the results files, and Figure 4's plot when the definition asks for it.

With ``reuse``, a pending run that a completed run of another folder already computed (same
config, same seed) is copied from it instead (:mod:`alrp_lab.sweeps.reuse`).

``ROOT/sweep.json`` keeps the definition, the scale and the job list, so ``alrp-lab table
ROOT`` rebuilds the tables later from the folder alone.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alrp_lab.errors import ConfigError, SweepError
from alrp_lab.report.curve_plot import plot_curves
from alrp_lab.report.plots import plot_claim_trend, plot_grad_balance
from alrp_lab.report.tables import collect_table
from alrp_lab.report.tables import write_tables as write_tables_of
from alrp_lab.sweeps.announce import not_started_line, run_line, start_line
from alrp_lab.sweeps.cluster import Launcher
from alrp_lab.sweeps.definition import (
    CONF_DIR,
    SWEEP_FILE,
    SweepDefinition,
    default_root,
    recorded_seeds,
)
from alrp_lab.sweeps.processes import RunLocked, die_with_parent, run_lock
from alrp_lab.sweeps.reuse import copy_run, index_completed_runs
from alrp_lab.sweeps.run_state import RunState, run_state
from alrp_lab.sweeps.time_left import TimeLeft, time_left
from alrp_lab.tracking.code_digest import changed_packages
from alrp_lab.tracking.results import (
    RESULTS_FILE,
    RunRecorder,
    checkpoint_path,
    find_runs,
    is_completed,
    read_results,
)
from alrp_lab.tracking.run_files import is_run_config
from alrp_lab.tracking.staleness import first_difference, run_digest
from alrp_lab.utils.io import atomic_write_json
from alrp_lab.utils.overrides import override_key

log = logging.getLogger(__name__)

RunJob = Callable[[Sequence[str], Path], Any]

__all__ = [
    "SWEEP_FILE",
    "Job",
    "SweepReport",
    "check_jobs",
    "compose_job_config",
    "default_root",
    "expand_jobs",
    "run_job_default",
    "run_sweep",
    "seed_list",
]


@dataclass
class Job:
    """One training run of a sweep: one table job at one seed.

    ``id`` is the table job (its folder ``ROOT/JOB_ID`` holds one folder per seed);
    ``run_id`` (``JOB_ID/seedN``) names this run's folder; ``row``/``column`` are the table
    labels it fills (``column`` is None in a metrics table, whose columns are metrics).
    ``overrides`` end with ``seed=N``.
    """

    id: str
    overrides: list[str]
    row: str
    column: str | None = None
    seed: int = 0

    @property
    def run_id(self) -> str:
        return f"{self.id}/seed{self.seed}"


@dataclass
class SweepReport:
    """What :func:`run_sweep` did. ``failed`` maps a run id to its error message;
    ``pending`` lists the runs a dry run would have run, ``states`` where each of them
    stands (training elsewhere now, resumable, failed before) and ``time_left`` how long
    they would take by the runs finished here; ``copied`` maps a run id to the folder of
    the finished run it was copied from (or, in a dry run, would be); ``code_changed``
    maps a run id kept as it is (completed, resumed from its checkpoint, or copied) to the
    subpackages whose code differs from the code that trained it (only runs that recorded
    their code, and only where some differs: :mod:`alrp_lab.tracking.code_digest`)."""

    name: str
    scale: str
    root: Path
    jobs: list[Job]
    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    copied: dict[str, str] = field(default_factory=dict)
    states: dict[str, RunState] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)
    plot: Path | None = None
    dry_run: bool = False
    time_left: TimeLeft | None = None
    code_changed: dict[str, list[str]] = field(default_factory=dict)


def _flat_keys(node: Any, prefix: str) -> set[str]:
    if not isinstance(node, Mapping):
        return {prefix}
    keys: set[str] = set()
    for key, value in node.items():
        if key == "defaults" and not prefix:
            continue
        keys |= _flat_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def _group_keys(override: str) -> set[str]:
    """The dotted keys that the group option ``override`` (``debug=smoke``) sets, or an
    empty set when it is no group choice of ``conf/``."""
    import yaml

    key, value = override_key(override), override.partition("=")[2]
    path = CONF_DIR / key / f"{value}.yaml"
    if "." in key or "/" in key or not value or not path.is_file():
        return set()
    text = path.read_text(encoding="utf-8")
    content = yaml.safe_load(text) or {}
    package = "" if "@package _global_" in text else key
    return _flat_keys(content, package)


def seed_list(seeds: int | Sequence[int] | None, default: int = 1) -> list[int]:
    """Seeds 0..k-1 for a count ``k`` (``default`` when None), or the given seeds in order.

    Raises :class:`ValueError` for a count below 1, a negative or repeated seed."""
    if seeds is None:
        seeds = default
    if isinstance(seeds, bool):
        raise SweepError(f"seeds must be a count or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise SweepError(f"--seeds must be at least 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
        raise SweepError(f"seeds must be distinct non-negative integers, got {list(seeds)}")
    return out


def expand_jobs(
    defn: SweepDefinition,
    scale: str = "cpu",
    extra_overrides: Sequence[str] = (),
    seeds: int | Sequence[int] | None = None,
) -> list[Job]:
    """The runs of ``defn`` at ``scale``, in table order, each job once per seed.

    Overrides are ``base + scale + row + row's scale_overrides + column + extra_overrides``
    (later ones win), then ``seed=N``. ``seeds`` is a count (seeds 0..k-1) or a list; by
    default the definition's ``seeds``.
    Raises :class:`ValueError` for an unknown scale, a ``seed=`` among the overrides (the
    sweep sets it: use ``seeds``), or when the scale ``requires`` a key (such as
    ``data.root``) that no override sets.
    """
    seeds = seed_list(seeds, defn.seeds)
    if scale not in defn.scales:
        raise SweepError(
            f"sweep {defn.name} has no scale {scale!r}: choose one of {', '.join(defn.scales)}"
        )
    extra = [str(o) for o in extra_overrides]
    bad = [o for o in extra if "=" not in o or o.startswith("-")]
    if bad:
        raise SweepError(f"{bad[0]!r} is not an override: write key=value (e.g. train.epochs=2)")
    if any(override_key(o) == "seed" for o in extra):
        raise SweepError(
            "a sweep sets seed= itself, one run folder per seed: use --seeds K (seeds 0..K-1) "
            "instead of a seed= override"
        )
    scale_def = defn.scales[scale]
    # A config group chosen on the command line (debug=smoke) sets keys that the scale's
    # overrides would set again after it (Hydra applies key=value after groups): the
    # command line wins, so those scale overrides are dropped. Rows and columns keep theirs.
    shadowed = set().union(*(_group_keys(o) for o in extra))
    scale_overrides = [o for o in scale_def.overrides if override_key(o) not in shadowed]
    common = [*defn.base, *scale_overrides]
    given = {override_key(o) for o in [*common, *extra]}
    missing = [key for key in scale_def.requires if key not in given]
    if missing:
        hint = " ".join(f"{key}=..." for key in missing)
        raise SweepError(
            f"sweep {defn.name} at scale {scale} needs {', '.join(missing)}: add {hint}"
        )
    jobs: list[Job] = []
    for row in defn.rows:
        if row.same_job_as is not None:
            continue
        own = [*common, *row.overrides, *row.scale_overrides.get(scale, ())]
        cells = (
            [(defn.job_id(row, col), col.overrides, col.label) for col in defn.columns]
            if defn.kind == "grid"
            else [(defn.job_id(row), (), None)]
        )
        for job_id, column_overrides, column in cells:
            for seed in seeds:
                overrides = [*own, *column_overrides, *extra, f"seed={seed}"]
                jobs.append(Job(job_id, overrides, row.label, column, seed))
    return jobs


def compose_job_config(
    overrides: Sequence[str], *, group: str | None = None, tags: Sequence[str] = ()
) -> Any:
    """Compose ``conf/`` with ``overrides`` (Hydra's compose API, no Hydra app) and validate.

    ``group`` and ``tags`` set ``logger.group`` and extend ``logger.tags`` (W&B). Returns the
    validated DictConfig; raises ``alrp_lab.config.ConfigError`` (a ValueError) for a bad
    value and ValueError for an override Hydra cannot apply.
    """
    from omegaconf import OmegaConf, open_dict

    from alrp_lab.config import validate_config
    from alrp_lab.config.compose import compose_config

    try:
        cfg = compose_config(overrides, validate=False)
    except ConfigError as err:  # a bad override: the sweep's own error
        raise SweepError(str(err)) from None
    with open_dict(cfg):
        if group is not None:
            cfg.logger.group = group
        if tags:
            cfg.logger.tags = [*OmegaConf.to_container(cfg.logger.tags), *tags]
    return validate_config(cfg)


def run_job_default(
    overrides: Sequence[str],
    run_dir: Path,
    *,
    group: str | None = None,
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    """Compose, validate and train one job in this process, or in ``train.nproc_per_node``
    torchrun processes started from here; returns its results dict."""
    # Here, not at the top: torch and the engine load only in the processes that train.
    from alrp_lab.engine.launch import launch_torchrun
    from alrp_lab.engine.train import train

    cfg = compose_job_config(overrides, group=group, tags=tags)
    if cfg.train.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        return launch_torchrun(cfg, Path(run_dir))
    return train(cfg, Path(run_dir))


def check_jobs(defn: SweepDefinition, jobs: Sequence[Job]) -> dict[str, Any]:
    """Compose and validate every job before any runs, so a typo fails in seconds, not
    hours into a sweep. Returns each job's validated DictConfig by ``run_id``; raises
    :class:`ValueError` listing the first problems."""
    problems, configs = [], {}
    for job in jobs:
        try:
            configs[job.run_id] = compose_job_config(job.overrides)
        except ValueError as err:
            problems.append(f"{job.id}: {err}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise SweepError(f"sweep {defn.name} cannot run: {'; '.join(problems[:3])}{more}")
    return configs


def _recorded_config(run_dir: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """The config a failure record keeps: the one an earlier attempt recorded, when there is
    one (the folder's checkpoint was trained with it: replacing it with the overrides would
    make the next sweep take the run for stale and offer to delete it), else the overrides."""
    try:
        recorded = read_results(run_dir).get("config")
    except (FileNotFoundError, ValueError):
        recorded = None
    return recorded if is_run_config(recorded) else {"overrides": list(overrides)}


def _record_failure(
    run_dir: Path, overrides: Sequence[str], err: BaseException, started: float
) -> str:
    """Make sure ``run_dir/results.json`` says failed and returns the message.

    The engine records its own failures once training has started; a config error comes
    before that, and a results file older than this attempt (``started``, a time.time()) is
    an earlier attempt's, whose error would mislead."""
    path = run_dir / RESULTS_FILE
    try:
        results = read_results(run_dir) if path.stat().st_mtime >= started else None
    except (FileNotFoundError, ValueError):
        results = None
    if results is None or results.get("status") != "failed":
        results = RunRecorder(run_dir, _recorded_config(run_dir, overrides)).fail(err)
    message = results.get("error") or f"{type(err).__name__}: {err}"
    return str(message)


def _execute(run_job: RunJob, job: Job, run_dir: Path, threads: int | None) -> str | None:
    """Run one job; returns None on success or its error message. Runs in a worker process
    when the sweep is parallel, so it must stay a module-level function."""
    if threads is not None:
        # Set before torch is imported (it reads the variable once) and on torch if it is.
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        with run_lock(run_dir):
            try:
                run_job(list(job.overrides), run_dir)
            except Exception as err:  # one failing job must not stop the sweep
                log.warning("job %s failed: %s", job.run_id, err)
                return _record_failure(run_dir, job.overrides, err, started)
            if not is_completed(run_dir):
                error = RuntimeError("the job returned without a completed results.json")
                return _record_failure(run_dir, job.overrides, error, started)
    except RunLocked as err:  # another process owns the folder: leave its files alone
        return str(err)
    return None


def _with_resume(job: Job, run_dir: Path) -> Job:
    """Continue a job that stopped after a checkpoint instead of starting it over."""
    if checkpoint_path(run_dir).is_file() and not any(
        override_key(o) == "train.resume" for o in job.overrides
    ):
        return Job(job.id, [*job.overrides, "train.resume=true"], job.row, job.column, job.seed)
    return job


def _resumes(job: Job, run_dir: Path) -> bool:
    """Whether the sweep would continue ``job`` from a checkpoint (``train.resume`` true
    after :func:`_with_resume`, which adds it unless the job sets it)."""
    values = [
        o.split("=", 1)[1]
        for o in _with_resume(job, run_dir).overrides
        if "=" in o and override_key(o) == "train.resume"
    ]
    return bool(values) and values[-1].strip().lower() == "true"


def _other_code(run_dir: Path) -> list[str]:
    """The subpackages whose code differs between the code that trained the run in
    ``run_dir`` and the installed code; empty when none does or nothing can be told (no
    record, or none of its code: :func:`~alrp_lab.tracking.code_digest.changed_packages`)."""
    try:
        results = read_results(run_dir)
    except (FileNotFoundError, ValueError):
        return []
    return changed_packages(results) or []


def _group_and_tags(defn: SweepDefinition, job: Job, scale: str) -> tuple[str, tuple[str, ...]]:
    """The W&B group (one per table job, so the UI averages its seeds) and tags of a run."""
    return f"{defn.name}/{job.id}", (f"sweep:{defn.name}", f"scale:{scale}", f"seed:{job.seed}")


def _resolved(job: Job, defn: SweepDefinition, scale: str) -> dict[str, Any]:
    """The resolved config ``job`` trains with, as the engine records it."""
    from omegaconf import OmegaConf

    group, tags = _group_and_tags(defn, job, scale)
    cfg = compose_job_config(job.overrides, group=group, tags=tags)
    return OmegaConf.to_container(cfg, resolve=True)


def _time_left(report: SweepReport, configs: Mapping[str, Any], root: Path) -> TimeLeft:
    """A dry run's estimate for its pending runs, by every completed run in ``root`` (not
    only the jobs ``--only`` picks: a run's length comes from its own recorded config)."""
    from omegaconf import OmegaConf

    pending = [
        (OmegaConf.to_container(configs[run_id], resolve=True), report.states.get(run_id))
        for run_id in report.pending
    ]
    completed = []
    for run_dir in find_runs(root) if root.is_dir() else ():
        try:
            completed.append(read_results(run_dir))
        except ValueError:  # a damaged file is no evidence; the sweep itself reports it
            continue
    return time_left(pending, completed)


def _stale_runs(defn: SweepDefinition, root: Path, runs: Sequence[Job], scale: str) -> list[Job]:
    """The runs (completed, or stopped with a checkpoint) whose recorded config computes
    something else than the job now asks for (a changed definition, other command-line
    overrides)."""
    stale = []
    for job in runs:
        recorded = read_results(root / job.run_id).get("config")
        if not isinstance(recorded, Mapping) or run_digest(recorded) != run_digest(
            _resolved(job, defn, scale)
        ):
            stale.append(job)
    return stale


def _reusable(
    defn: SweepDefinition,
    root: Path,
    todo: Sequence[Job],
    stale_ids: set[str],
    scale: str,
    reuse: Sequence[str | os.PathLike[str]],
) -> dict[str, Path]:
    """``{run_id: source}`` for the pending runs that a completed run under ``reuse``
    already computed (same digest, so same seed). Runs that resume are left out; stale
    ones (``--rerun``) are deleted before the copy, their checkpoints with them."""
    index = index_completed_runs(reuse, exclude=root)
    sources = {}
    for job in todo:
        if job.run_id not in stale_ids and checkpoint_path(root / job.run_id).is_file():
            continue
        source = index.get(run_digest(_resolved(job, defn, scale)))
        if source is not None:
            sources[job.run_id] = source
    return sources


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every OS
        return os.cpu_count() or 1


def _picked_by(job: Job, pattern: str) -> bool:
    # A pattern with a slash names runs (JOB_ID/seedN), so one seed of a job can be run
    # alone (e.g. the seed still missing where another seed fails the same way each time).
    return fnmatch.fnmatchcase(job.run_id if "/" in pattern else job.id, pattern)


def select_jobs(jobs: Sequence[Job], only: Sequence[str]) -> list[Job]:
    """The runs picked by one of the shell patterns ``only`` (all when empty): a pattern
    matches job ids (``2x--*``), or with a slash run ids (``2x--*/seed2``).

    Raises :class:`SweepError` listing the job ids when a pattern matches none."""
    if not only:
        return list(jobs)
    for pattern in only:
        if not any(_picked_by(job, pattern) for job in jobs):
            ids = sorted({job.id for job in jobs})
            seeds = sorted({job.seed for job in jobs})
            raise SweepError(
                f"--only {pattern!r} matches no job of this sweep (a pattern with a slash "
                f"matches JOB_ID/seedN, seeds {', '.join(map(str, seeds))} here); its jobs: "
                f"{', '.join(ids)}"
            )
    return [job for job in jobs if any(_picked_by(job, p) for p in only)]


def run_sweep(
    defn: SweepDefinition,
    *,
    scale: str = "cpu",
    extra_overrides: Sequence[str] = (),
    root: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    run_job: RunJob | None = None,
    n_jobs: int = 1,
    write_tables: bool = True,
    seeds: int | Sequence[int] | None = None,
    rerun: bool = False,
    only: Sequence[str] = (),
    launcher: Launcher | None = None,
    reuse: Sequence[str | os.PathLike[str]] = (),
    announce: Callable[[str], None] | None = None,
) -> SweepReport:
    """Run the jobs of ``defn`` at ``scale`` into ``root`` (default :func:`default_root`).

    Args:
        defn: the loaded definition.
        scale: a key of ``defn.scales`` (``cpu`` or ``paper``).
        extra_overrides: command-line overrides, applied to every job last.
        root: the sweep folder; each job runs in ``root/JOB_ID``.
        dry_run: list what would run (and check that every job's config composes when
            ``run_job`` is the default) without running or writing anything.
        run_job: ``run_job(overrides, run_dir)`` runs one job; by default the config is
            composed (``logger.group`` = the sweep's name, tags naming sweep, scale and job),
            validated and trained in-process. It must be picklable when ``n_jobs > 1``.
        n_jobs: jobs at a time; above 1 each job runs in its own process with
            ``max(1, cores // n_jobs)`` torch threads.
        write_tables: write the md/csv/tex tables (and the plot) into ``root`` afterwards.
        seeds: a count k (seeds 0..k-1) or a list of seeds; default the definition's
            ``seeds``. Each job runs once per seed into ``root/JOB_ID/seedN``.
        rerun: replace completed runs, and stopped runs it would resume, whose recorded
            config differs from the one the sweep composes now (by default such runs stop
            the sweep before any work).
        only: shell patterns of job ids (``2x--*``), or with a slash of run ids
            (``2x--sb/seed2``): run only the jobs or runs they match. The
            tables still show every job (``sweep.json`` lists them all), with the others'
            results as they are on disk.
        launcher: submit each run as a submitit job (``sweeps.cluster.Launcher``: SLURM or
            local processes) instead of running them here; ``n_jobs`` is then unused.
        reuse: folders of finished runs (other sweeps' roots): a pending run that computes
            what a completed run there computed, at the same seed, is copied from it
            instead of trained (:mod:`alrp_lab.sweeps.reuse`). A run with a checkpoint of
            its own resumes instead, unless it is stale and ``rerun`` replaces it.
        announce: called with a line when training starts and one as each run ends
            (:mod:`alrp_lab.sweeps.announce`), in the order they end; the CLI prints them.

    Returns a :class:`SweepReport` listing completed, skipped and failed runs (by
    ``run_id``) and the table files. Raises :class:`ValueError` before running anything
    when a job cannot compose.
    """
    if n_jobs < 1:
        raise SweepError(f"n_jobs must be at least 1, got {n_jobs}")
    all_jobs = expand_jobs(defn, scale, extra_overrides, seeds)
    jobs = select_jobs(all_jobs, only)
    root = Path(root) if root is not None else default_root(defn.name, scale)
    report = SweepReport(defn.name, scale, root, jobs, dry_run=dry_run)
    todo, done = [], []
    for job in jobs:
        (done if is_completed(root / job.run_id) else todo).append(job)
    stale: list[Job] = []
    configs: dict[str, Any] = {}
    if run_job is None:
        configs = check_jobs(defn, todo)
        # A stopped run with a checkpoint is resumed below: it must be the same run too, or
        # its results would mix two configs.
        resumable = [job for job in todo if checkpoint_path(root / job.run_id).is_file()]
        stale = _stale_runs(defn, root, [*done, *resumable], scale)
        if stale and not rerun:
            job = stale[0]
            wanted = _resolved(job, defn, scale)
            recorded = read_results(root / job.run_id).get("config") or {}
            more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
            raise SweepError(
                f"{len(stale)} completed or resumable run(s) in {root} were made with another "
                f"config ({job.run_id}{more}; {first_difference(recorded, wanted)}): sweep "
                "into a new folder with --root DIR, or replace them with --rerun"
            )
    stale_ids = {job.run_id for job in stale}
    for job in done:
        if job.run_id in stale_ids:
            todo.append(job)
        else:
            report.skipped.append(job.run_id)
    order = {job.run_id: i for i, job in enumerate(jobs)}
    todo.sort(key=lambda job: order[job.run_id])
    # Kept as they are: the completed runs skipped and the stopped runs resumed.
    resumed = [
        job.run_id
        for job in todo
        if job.run_id not in stale_ids and _resumes(job, root / job.run_id)
    ]
    kept = {run_id: _other_code(root / run_id) for run_id in [*report.skipped, *resumed]}
    report.code_changed = {run_id: names for run_id, names in kept.items() if names}

    def runner_for(job: Job) -> RunJob:
        if run_job is not None:
            return run_job
        group, tags = _group_and_tags(defn, job, scale)
        return functools.partial(run_job_default, group=group, tags=tags)

    sources = _reusable(defn, root, todo, stale_ids, scale, reuse) if reuse else {}
    for run_id, source in sources.items():  # a copy keeps its source's record, code too
        if names := _other_code(Path(source)):
            report.code_changed[run_id] = names
    if dry_run:
        report.copied = {run_id: str(source) for run_id, source in sources.items()}
        report.pending = [job.run_id for job in todo if job.run_id not in sources]
        report.states = {
            job.run_id: run_state(
                root / job.run_id,
                resumes=_resumes(job, root / job.run_id),
                replaced=job.run_id in stale_ids,
            )
            for job in todo
            if job.run_id not in sources
        }
        if run_job is None:
            for job in todo:  # the stale completed runs --rerun would replace
                if job.run_id not in configs:
                    configs[job.run_id] = compose_job_config(job.overrides)
            report.time_left = _time_left(report, configs, root)
        return report

    root.mkdir(parents=True, exist_ok=True)
    # Every seed ever run into this folder, so the tables count a missing one; the job list
    # covers them all too, so a later call with fewer seeds does not shrink it.
    folder_seeds = sorted({*(recorded_seeds(root, scale) or ()), *(job.seed for job in jobs)})
    atomic_write_json(
        root / SWEEP_FILE,
        {
            "name": defn.name,
            "scale": scale,
            "extra_overrides": list(extra_overrides),
            "definition": dict(defn.raw),
            "seeds": folder_seeds,
            "jobs": [vars(job) for job in expand_jobs(defn, scale, extra_overrides, folder_seeds)],
        },
    )
    busy: set[str] = set()  # stale runs another process is training: left alone
    for job in stale:
        # --rerun: the user chose to replace these; start them from nothing. Under the run's
        # lock: a folder another process is training in is left alone, as that run only fails.
        try:
            with run_lock(root / job.run_id):
                shutil.rmtree(root / job.run_id)
        except RunLocked as err:
            report.failed[job.run_id] = str(err)
            busy.add(job.run_id)
    sources = {run_id: source for run_id, source in sources.items() if run_id not in busy}
    for run_id, source in sources.items():
        try:
            copy_run(source, root / run_id)
        except (RunLocked, SweepError, OSError) as err:  # that run only, as a failed job
            report.failed[run_id] = str(err)
            report.code_changed.pop(run_id, None)  # nothing was copied
            continue
        report.copied[run_id] = str(source)
    todo = [
        _with_resume(job, root / job.run_id)
        for job in todo
        if job.run_id not in sources and job.run_id not in busy
    ]
    if announce is not None:
        for run_id, error in report.failed.items():  # held by another process, or not copied
            _say(announce, not_started_line, run_id, error)
        if todo:
            local = launcher is not None and launcher.cluster == "local"
            at_a_time = len(todo) if local else (1 if launcher is not None else n_jobs)
            skipped, copied = len(report.skipped), len(report.copied)
            _say(announce, start_line, root, len(todo), at_a_time, skipped, copied)
    if launcher is not None:
        # Local submitit jobs all run at once on this machine: each gets its share of the
        # cores. A cluster's jobs use what their allocation gives them.
        threads = max(1, _cpu_count() // max(1, len(todo))) if launcher.cluster == "local" else None
        calls = [(runner_for(job), job, root / job.run_id, threads) for job in todo]
        started = time.time()
        ended = 0

        def record(index: int, outcome: Any) -> None:
            nonlocal ended
            job = todo[index]
            # A job the cluster killed never reached _execute's own handler: record it here.
            if isinstance(outcome, BaseException):
                try:
                    outcome = _record_failure(root / job.run_id, job.overrides, outcome, started)
                except OSError as err:  # the folder went away: still a failed run here
                    outcome = f"{type(outcome).__name__}: {outcome} (not recorded: {err})"
            ended += 1
            _record(report, job, outcome, ended, len(todo), announce)

        launcher.run_all(_execute, calls, on_done=record)
    elif n_jobs == 1 or len(todo) <= 1:
        outcomes = ((job, _execute(runner_for(job), job, root / job.run_id, None)) for job in todo)
        _collect(report, outcomes, len(todo), announce)
    else:
        threads = max(1, _cpu_count() // n_jobs)
        import multiprocessing

        # spawn, not fork: a forked child of a process that has started torch's thread
        # pools can deadlock.
        context = multiprocessing.get_context("spawn")
        started = time.time()
        with ProcessPoolExecutor(
            max_workers=n_jobs, mp_context=context, initializer=die_with_parent
        ) as pool:
            futures = {
                pool.submit(_execute, runner_for(job), job, root / job.run_id, threads): job
                for job in todo
            }
            _collect(
                report,
                (
                    (futures[f], _result(f, root / futures[f].run_id, futures[f], started))
                    for f in as_completed(futures)
                ),
                len(todo),
                announce,
            )
    report.completed.sort(key=order.__getitem__)  # in the order they ended until here

    if write_tables:
        report.tables = write_tables_of(defn, root, scale=scale)  # seeds: sweep.json's
        if defn.figure is not None:
            report.plot = _try_plot(root, defn.figure)
        if run_job is None and jobs:
            _mirror_to_wandb(defn, report, compose_job_config(jobs[0].overrides).logger)
    return report


def _mirror_to_wandb(defn: SweepDefinition, report: SweepReport, logger_cfg: Any) -> None:
    """Log the table (and plot) to W&B as one run of the sweep's group, with the jobs'
    logger settings; the files in the sweep folder stay the record."""
    from alrp_lab.tracking.wandb_run import WandbRun

    table = collect_table(defn, report.root, scale=report.scale)
    with WandbRun(
        mode=logger_cfg.mode,
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        group=defn.name,
        job_type="sweep-table",
        tags=[f"sweep:{defn.name}", f"scale:{report.scale}"],
        dir=report.root,
        name=f"{defn.name}-{report.scale}-table",
    ) as run:
        columns = ["row", "column", "metric", "mean", "std", "n", "paper", "diff", "status", "job"]
        rows = [
            [c.row, c.column, c.metric, c.ours, c.std, c.n, c.paper, c.diff, c.status, c.job]
            for c in table.cells.values()
        ]
        run.log_table(defn.name, columns, rows)
        if report.plot is not None:
            run.log_image("grad_balance", report.plot)


def _result(future, run_dir: Path, job: Job, started: float) -> str | None:
    """A worker's outcome; a worker that died (killed, out of memory) is a failed job."""
    try:
        return future.result()
    except Exception as err:
        return _record_failure(run_dir, job.overrides, err, started)


def _collect(
    report: SweepReport,
    outcomes: Iterable[tuple[Job, str | None]],
    total: int,
    announce: Callable[[str], None] | None,
) -> None:
    """Record each of the ``total`` outcomes as it comes (:func:`_record`)."""
    for ended, (job, error) in enumerate(outcomes, start=1):
        _record(report, job, error, ended, total, announce)


def _record(
    report: SweepReport,
    job: Job,
    error: str | None,
    ended: int,
    total: int,
    announce: Callable[[str], None] | None,
) -> None:
    """Record one run's outcome, the ``ended``-th of ``total``, and announce it
    (``[ended/total] run_id ...``)."""
    if error is None:
        report.completed.append(job.run_id)
    else:
        report.failed[job.run_id] = error
    if announce is not None:
        _say(announce, run_line, report.root / job.run_id, job.run_id, error, ended, total)


def _say(announce: Callable[[str], None], line: Callable[..., str], *args: Any) -> None:
    """``announce(line(*args))``; the lines are a courtesy, so a failure to make or print
    one is a warning, never the end of a sweep whose other runs are still training."""
    try:
        announce(line(*args))
    except Exception as err:
        log.warning("could not announce a run: %s: %s", type(err).__name__, err)


def _try_plot(root: Path, figure: str) -> Path | None:
    try:
        if figure == "claim_trend":
            return plot_claim_trend(root, root / "claim_trend.png")
        if figure == "loss_curves":
            return plot_curves(root, root / "loss_curves.png")
        loss_panel = figure == "grad_balance_loss"
        return plot_grad_balance(root, root / f"{figure}.png", loss_panel=loss_panel)
    except ValueError as err:  # no run got far enough to log a ratio or make a claim
        log.warning("no %s plot: %s", figure, err)
        return None
