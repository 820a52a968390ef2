"""The ``alrp-lab`` command line.

``alrp-lab run [overrides]`` composes ``conf/`` with Hydra (``-m`` for a multirun sweep),
trains, evaluates and writes a run folder; ``alrp-lab sweep NAME`` runs a paper table's
definition from ``sweeps/``; ``alrp-lab table NAME|DIR`` rebuilds a table from results files;
``alrp-lab claims [DIR ...]`` prints the verdicts on the paper's claims;
``alrp-lab readme [FILE]`` regenerates a Markdown file's table and claims blocks;
``alrp-lab plot grad-balance DIR`` draws Figure 4; ``alrp-lab data`` builds the built-in data
set; ``alrp-lab eval GT DT`` scores a COCO results file. Errors a user can cause end in one line
naming the fix and exit status 2 (set ``ALRP_LAB_TRACEBACK=1`` for the full traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alrp_lab.errors import AlrpLabError, ConfigError, ReadmeError, ResultsNotFoundError
from alrp_lab.resources import conf_dir

if TYPE_CHECKING:
    from alrp_lab.report.readme import Block

CONF_DIR = conf_dir()
_err = Console(stderr=True)
_out = Console()

# Exceptions that mean "the user asked for something that cannot run", not a bug.
# Errors a user caused and can fix: one line. Anything else is a bug and keeps its traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (AlrpLabError,)
_BUG = "this is a bug in alrp-lab, not in your input: please report it with the traceback above"


def _fail(message: str) -> int:
    # Escaped: messages quote paths, overrides and library errors ("[/path/pair.cc:537]")
    # that rich would otherwise read as markup.
    _err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    return 2


def _show_traceback() -> bool:
    return os.environ.get("ALRP_LAB_TRACEBACK", "") not in ("", "0")


def _metrics_table(title: str, metrics: dict) -> Table:
    """One row per metric, so no column is cut in a narrow terminal."""
    table = Table(title=title, title_justify="left", min_width=len(title) + 4)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("AP", "AP50", "AP75", "AP90", "oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN", "rho"):
        value = metrics.get(key)
        table.add_row(key, f"{value:.4f}" if isinstance(value, int | float) else "-")
    return table


def _one_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("full_key:", "object_type=", "See https"))]
    for i, line in enumerate(lines):
        # Hydra lists a group's options one per line: keep them all, on the one line.
        if line.startswith("Available options in") and line.endswith(":"):
            options = []
            for option in lines[i + 1 :]:
                if option.startswith("Config search path"):
                    break
                options.append(option)
            return "; ".join([*lines[:i], f"{line} {', '.join(options)}"])
    return "; ".join(lines[:3]) or type(err).__name__


# Hydra's flags that take a value as the next word (`--cfg job`, `-cn NAME`); `--info`'s
# value is optional and always one of these words.
_VALUE_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}
_INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _overrides_only(words: Sequence[str]) -> list[str]:
    """The overrides among ``alrp-lab run``'s words: Hydra's flags and their values left out."""
    out, skip = [], False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word.startswith("-"):
            skip = word in _VALUE_FLAGS or (
                word in ("--info", "-i") and i + 1 < len(words) and words[i + 1] in _INFO_TOPICS
            )
            continue
        out.append(word)
    return out


def _config_dirs(words: Sequence[str]) -> list[str]:
    """The folders given with Hydra's ``--config-dir``/``-cd`` (a user's own configs)."""
    dirs = []
    for i, word in enumerate(words):
        if word in ("--config-dir", "-cd") and i + 1 < len(words):
            dirs.append(words[i + 1])
        elif word.startswith("--config-dir="):
            dirs.append(word.split("=", 1)[1])
    return [str(Path(d).expanduser().resolve()) for d in dirs]


def _check_overrides(overrides: Sequence[str]) -> str | None:
    """Compose and validate the run(s) ``overrides`` ask for, before Hydra starts any job.

    Returns an error message, or None when every job would start. A sweep override
    (``loss.wr=1,2,5``) is checked value by value, the other overrides at their first value.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from alrp_lab.config import ConfigError, validate_config
    from alrp_lab.config.compose import unknown_key_error

    args = _overrides_only(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        return f"bad override: {_one_line(err)}"
    first = [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else o.input_line
        for o in parsed
    ]
    candidates = [first]
    for i, o in enumerate(parsed):
        if o.is_sweep_override():
            for value in list(o.sweep_string_iterator())[1:]:
                candidates.append([*first[:i], f"{o.get_key_element()}={value}", *first[i + 1 :]])
    multirun = any(flag in overrides for flag in ("-m", "--multirun"))
    extra_dirs = _config_dirs(overrides)
    if extra_dirs and not any(o.startswith("hydra.searchpath=") for o in first):
        # What --config-dir does for the run itself: the folder joins the search path.
        paths = ",".join(f"file://{d}" for d in extra_dirs)
        candidates = [[*c, f"hydra.searchpath=[{paths}]"] for c in candidates]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for candidate in candidates:
            try:
                composed = compose("config", overrides=candidate, return_hydra_config=True)
                cfg = validate_config(composed)
            except ConfigError as err:
                return str(err)
            except (HydraException, OmegaConfBaseException) as err:
                return unknown_key_error(err, candidate) or f"bad override: {_one_line(err)}"
            if multirun and (problem := _launcher_problem(composed)) is not None:
                return problem
            given_dir = [o for o in candidate if o.startswith("hydra.run.dir=")]
            if given_dir:
                folder = Path(given_dir[-1].split("=", 1)[1]).expanduser()
                blocker = next((p for p in [folder, *folder.parents] if p.is_file()), None)
                if blocker is not None:
                    return (
                        f"hydra.run.dir={folder} lies under {blocker}, which is a file, not a "
                        "folder: choose another hydra.run.dir"
                    )
            if given_dir and not multirun:
                # Before Hydra writes .hydra/ into it: a completed run stays as it was.
                from alrp_lab.engine.train import RunFolderError, check_run_folder

                try:
                    check_run_folder(Path(given_dir[-1].split("=", 1)[1]), cfg.train.resume)
                except RunFolderError as err:
                    return str(err)
    return None


def _launcher_problem(composed) -> str | None:
    """Why the multirun's Hydra launcher cannot start here, or None (the sweep's launcher
    gives the same one line: :func:`alrp_lab.sweeps.cluster.slurm_missing`)."""
    from alrp_lab.sweeps.cluster import slurm_missing

    if not str(composed.hydra.launcher.get("_target_", "")).endswith(".SlurmLauncher"):
        return None
    return slurm_missing(composed.hydra.runtime.choices.get("hydra/launcher", "submitit_slurm"))


def _share_cores(hydra_cfg) -> None:
    """Give each of the joblib launcher's parallel jobs its share of the cores.

    Parallel jobs that each spin every core's worth of OpenMP threads slow each other down
    many times over; one job alone keeps torch's default.
    """
    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    if "joblib" not in launcher.lower():
        return
    import torch

    cores = os.cpu_count() or 1
    n_jobs = int(hydra_cfg.launcher.get("n_jobs", -1) or -1)
    parallel = cores if n_jobs < 1 else min(n_jobs, cores)
    torch.set_num_threads(max(1, cores // parallel))


class _Task:
    """Hydra's task: validate, train, print the metrics. Hydra returns nothing from a run,
    so the task keeps the exit status of its latest job (``code``; a multirun's jobs each
    set it). A module-level class, so that launchers running jobs in other processes
    (hydra/launcher=joblib) can pickle it."""

    def __init__(self) -> None:
        self.code = 0

    def __call__(self, cfg) -> float | None:
        self.code, value = _run_task(cfg)
        return value


def _run_task(cfg) -> tuple[int, float | None]:
    """One job: (exit status, its AP)."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    from alrp_lab.config import validate_config
    from alrp_lab.engine.launch import launch_torchrun
    from alrp_lab.engine.train import train

    try:
        run_cfg = validate_config(cfg)
    except ConfigError as err:
        return _fail(str(err)), None
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    _share_cores(hydra_cfg)
    try:
        if run_cfg.train.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
            results = launch_torchrun(run_cfg, run_dir)
        else:
            results = train(run_cfg, run_dir)
    except _USER_ERRORS as err:
        if _show_traceback():
            raise
        return _fail(f"{err} (run folder: {run_dir})"), None
    except torch.cuda.OutOfMemoryError:
        return _fail(
            f"out of GPU memory: lower train.batch_size or data.train_size (run folder: {run_dir})"
        ), None
    except Exception:
        _err.print(f"[bold red]internal error:[/bold red] {_BUG}", highlight=False)
        raise
    metrics = results.get("metrics", {})
    _out.print(_metrics_table(run_cfg.name, metrics))
    _out.print(f"run folder: {escape(str(run_dir))}", highlight=False, soft_wrap=True)
    return 0, metrics.get("AP")


def _run_hydra(overrides: Sequence[str]) -> int:
    """Hand the overrides to Hydra, which owns ``-m``, ``--cfg``, ``--help`` and the rest."""
    import hydra

    if not CONF_DIR.is_dir():
        return _fail(
            f"config folder {CONF_DIR} is missing: reinstall alrp-lab (`pip install .` ships it)"
        )

    # Flags that print rather than run (help, info, --cfg/-c) compose whatever they are given.
    prints = ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c")
    if not any(item in prints or item.startswith(("--cfg=", "--info=")) for item in overrides):
        problem = _check_overrides(overrides)
        if problem is not None:
            return _fail(problem)

    task = _Task()
    main_fn = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(task)
    sys.argv = ["alrp-lab run", *overrides]
    kept = _FolderSnapshot.of(overrides)
    try:
        main_fn()
    except SystemExit as done:  # Hydra exits on its own errors; report, don't vanish
        return done.code if isinstance(done.code, int) else 1
    finally:
        kept.restore_if_untouched()
    return task.code


class _FolderSnapshot:
    """``.hydra/`` of an existing run folder, put back when the run never started there.

    Hydra writes ``.hydra/`` before the task runs, so a refused resume (a checkpoint of
    another model) would otherwise leave the other model's config behind. "Never started"
    means ``results.json`` is byte for byte what it was.
    """

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.results: bytes | None = None
        self.hydra: dict[str, bytes] = {}
        if folder is None:
            return
        results = folder / "results.json"
        self.results = results.read_bytes() if results.is_file() else None
        hydra_dir = folder / ".hydra"
        if hydra_dir.is_dir():
            self.hydra = {p.name: p.read_bytes() for p in hydra_dir.iterdir() if p.is_file()}

    @classmethod
    def of(cls, overrides: Sequence[str]) -> _FolderSnapshot:
        if any(flag in overrides for flag in ("-m", "--multirun")):
            return cls(None)
        given = [o for o in overrides if o.startswith("hydra.run.dir=")]
        folder = Path(given[-1].split("=", 1)[1]).expanduser() if given else None
        return cls(folder if folder is not None and folder.is_dir() else None)

    def restore_if_untouched(self) -> None:
        if self.folder is None or not self.hydra or self.results is None:
            return
        results = self.folder / "results.json"
        if not results.is_file() or results.read_bytes() != self.results:
            return  # the run started: its .hydra/ is the record now
        from alrp_lab.utils.io import atomic_write_text

        for name, content in self.hydra.items():
            atomic_write_text(self.folder / ".hydra" / name, content.decode("utf-8"))


def _cmd_data(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from alrp_lab.data import BUILTIN_DATASETS

    if args.name not in BUILTIN_DATASETS:
        raise ConfigError(
            f"unknown built-in data set {args.name!r}: choose one of {', '.join(BUILTIN_DATASETS)}"
        )
    # The run's own defaults and cache folder (conf/data/NAME.yaml), so that a set built
    # here is the one `alrp-lab run data=NAME` with the same values reads.
    node = OmegaConf.load(CONF_DIR / "data" / f"{args.name}.yaml")
    keys = ("seed", "num_train", "num_val", "image_size", "num_classes")
    for key in keys:
        if getattr(args, key) is not None:
            node[key] = getattr(args, key)
    if args.root is not None:
        node.root = args.root
    splits = BUILTIN_DATASETS[args.name](
        Path(node.root).expanduser(), **{key: int(node[key]) for key in keys}
    )
    for name, path in splits._asdict().items():
        _out.print(f"{name}: {escape(str(path))}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from alrp_lab.pretrain import builtin_weights, spec_from_config, weights_path
    from alrp_lab.pretrain.cache import read_manifest

    choices = sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))
    if args.backbone not in choices:
        raise ConfigError(
            f"unknown backbone {args.backbone!r}: choose one of {', '.join(choices)} "
            "(conf/backbone)"
        )
    node = OmegaConf.load(CONF_DIR / "backbone" / f"{args.backbone}.yaml")
    if args.base_width is not None:
        node.base_width = args.base_width
    # The same defaults as backbone.weights=builtin: conf/pretrain/fractal.yaml.
    task = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "pretrain" / "fractal.yaml"))
    for key in ("iterations", "num_classes", "seed"):
        if getattr(args, key) is not None:
            task[key] = getattr(args, key)
    spec = spec_from_config(node, task)
    root = Path(args.root).expanduser() if args.root else None
    existed = weights_path(spec, root).is_file()
    path = builtin_weights(spec, root=root)
    manifest = read_manifest(path)
    state = "cached" if existed else f"built in {manifest['seconds']:.0f} s"
    _out.print(f"{escape(str(path))} ({state}; held-out accuracy {manifest['val_accuracy']:.3f})")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from alrp_lab.eval import evaluate_detections

    for path in (args.gt, args.dt):
        if not Path(path).is_file():
            return _fail(f"{path} does not exist: give a COCO annotation file and a results file")
    metrics = evaluate_detections(args.gt, args.dt, bounds=args.bounds)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _out.print(_metrics_table(str(args.dt), metrics))
    return 0


def _say(line: str) -> None:
    """Print one plain line at once (a sweep's progress, read from a log file too)."""
    _out.print(escape(line), highlight=False, soft_wrap=True)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from alrp_lab.sweeps import load_sweep, run_sweep
    from alrp_lab.sweeps.cluster import Launcher, split_launcher_overrides
    from alrp_lab.sweeps.processes import locks_visible
    from alrp_lab.sweeps.runner import default_root

    definition = load_sweep(args.name)
    # `alrp-lab sweep table2 scale=paper` reads like the other overrides; same as --scale.
    scales = [o.split("=", 1)[1] for o in args.overrides if o.startswith("scale=")]
    args.overrides = [o for o in args.overrides if not o.startswith("scale=")]
    if scales:
        args.scale = scales[-1]
    # hydra/launcher=submitit_slurm and its hydra.launcher.* settings, as for run -m.
    args.overrides, launcher_name, launcher_params = split_launcher_overrides(args.overrides)
    root = Path(args.root) if args.root else default_root(definition.name, args.scale)
    launcher = None
    if launcher_name is not None:
        launcher = Launcher(launcher_name, launcher_params, root, f"alrp-lab-{definition.name}")
    report = run_sweep(
        definition,
        scale=args.scale,
        extra_overrides=args.overrides,
        root=root,
        dry_run=args.dry_run,
        n_jobs=args.jobs,
        launcher=launcher,
        seeds=args.seeds,
        rerun=args.rerun,
        only=args.only or (),
        reuse=args.reuse or (),
        announce=_say,
    )
    table = Table(title=escape(f"{definition.name} ({report.scale}): {report.root}"))
    # A run id is one word: keep it on one line, and let the others wrap around it.
    table.add_column("run", no_wrap=True)
    table.add_column("status", overflow="fold")
    table.add_column("overrides", overflow="fold")
    failed = report.failed
    for job in report.jobs:
        other = report.code_changed.get(job.run_id)
        other_code = f"trained by other code in {', '.join(other)}" if other else ""
        if job.run_id in report.copied:
            verb = "would copy" if report.dry_run else "copied"
            status = f"{verb} from {escape(report.copied[job.run_id])}"
            status += f" ({other_code})" if other else ""
        elif report.dry_run and job.run_id in report.skipped:
            status = f"skip (completed; {other_code})" if other else "skip (completed)"
        elif report.dry_run:
            state = report.states.get(job.run_id)
            status = escape(state.describe()) if state is not None else "would run"
        elif job.run_id in failed:
            status = f"[red]failed[/red]: {escape(str(failed[job.run_id]))}"
        elif job.run_id in report.skipped:
            status = f"skipped (completed; {other_code})" if other else "skipped (completed)"
        else:
            status = "completed"
        if other and job.run_id not in report.skipped and job.run_id not in report.copied:
            status += f"; earlier attempts {other_code}"  # a resumed run
        table.add_row(job.run_id, status, escape(" ".join(job.overrides)))
    _out.print(table)
    if report.dry_run:
        states = [report.states[r] for r in report.pending if r in report.states]
        training = sum(state.training for state in states)
        resuming = sum(state.resumes for state in states)
        detail = f" ({resuming} resuming)" if resuming else ""
        summary = f"{len(report.pending) - training} would run{detail}, "
        if training:
            summary += f"{training} training now in another process (a sweep skips them), "
        summary += f"{len(report.skipped)} completed before"
    else:
        summary = (
            f"{len(report.completed)} completed, {len(report.skipped)} skipped (completed "
            f"before), {len(failed)} failed"
        )
    if report.copied:
        summary += f", {len(report.copied)} {'would be ' if report.dry_run else ''}copied"
    _out.print(f"{len(report.jobs)} runs: {summary}", highlight=False, soft_wrap=True)
    if report.time_left is not None and report.pending:
        _out.print(report.time_left.describe(args.jobs), highlight=False, soft_wrap=True)
    if report.code_changed:
        packages = sorted({name for names in report.code_changed.values() for name in names})
        _out.print(
            f"{len(report.code_changed)} run(s) kept here were trained by code that differs "
            f"from this install's in {', '.join(packages)} (syntax, not docstrings or "
            "comments); the sweep keeps them: to train them with this code, sweep into a "
            "new folder with --root DIR",
            highlight=False,
            soft_wrap=True,
        )
    if report.dry_run and report.pending and not locks_visible():
        _out.print(
            "(no /proc/locks here: a run another process is training shows as would run or resume)",
            highlight=False,
            soft_wrap=True,
        )
    for fmt, path in report.tables.items():
        _out.print(f"table ({fmt}): {escape(str(path))}")
    if report.plot is not None:
        _out.print(f"plot: {escape(str(report.plot))}")
    if failed:
        return _fail(f"{len(failed)} of {len(report.jobs)} jobs failed: {', '.join(failed)}")
    return 0


def _table_text(args: argparse.Namespace) -> str:
    """What ``alrp-lab table`` prints."""
    from alrp_lab.report import build_table

    return build_table(args.source, args.format, scale=args.scale, heading=args.heading) + "\n"


def _cmd_export(args: argparse.Namespace) -> int:
    from alrp_lab.sweeps.export import RECORD_FILES, export_runs

    files = tuple(dict.fromkeys([*RECORD_FILES, *(args.file or ())]))
    report = export_runs(args.source, args.target, files=files, replace=args.replace)
    _out.print(
        f"{args.source} -> {args.target}: {len(report.copied)} run(s) copied, "
        f"{len(report.updated)} given the files they lacked, {len(report.unchanged)} "
        f"unchanged{'; sweep.json copied' if report.sweep_file else ''}",
        highlight=False,
        soft_wrap=True,
    )
    if report.conflicts:
        _out.print(
            f"{len(report.conflicts)} left as they were, since {args.target} holds another "
            f"completed run there (--replace overwrites it): {', '.join(report.conflicts)}",
            highlight=False,
            soft_wrap=True,
        )
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    print(_table_text(args), end="")
    return 0


def _claims_text(args: argparse.Namespace) -> str:
    """What ``alrp-lab claims`` prints."""
    from alrp_lab.report.claims_table import render_claims

    dirs = args.dirs or [d for d in _DEFAULT_CLAIM_DIRS if Path(d).is_dir()]
    if not dirs:
        raise ResultsNotFoundError(
            f"no sweep folders here ({' or '.join(_DEFAULT_CLAIM_DIRS)}): run a sweep first "
            "(alrp-lab sweep NAME) or name the folders"
        )
    return render_claims(dirs, args.format, brief=args.brief)


def _cmd_claims(args: argparse.Namespace) -> int:
    """One table of every claim of every sweep folder found; exits 0 whatever the verdicts."""
    print(_claims_text(args), end="")
    return 0


# The verbs a generated block of a Markdown file may hold, each with what it prints.
_BLOCK_TEXTS: dict[str, Callable[[argparse.Namespace], str]] = {
    "table": _table_text,
    "claims": _claims_text,
}


class _BlockParser(argparse.ArgumentParser):
    """The command line's parser, raising where argparse would print usage and exit."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)

    def print_help(self, file: Any = None) -> NoReturn:  # -h / --help, before it exits
        raise ConfigError("--help prints, it makes no block")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise ConfigError(message or f"it asked to exit ({status})")


def _block_text(block: Block, *, base: Path, source: str) -> str:
    """What ``alrp-lab BLOCK.COMMAND`` prints, run in ``base`` (the Markdown file's folder)."""
    import shlex

    where = f"{source}, line {block.line}: `alrp-lab {block.command}`"
    try:
        argv = shlex.split(block.command)
    except ValueError as err:
        raise ReadmeError(f"{where} cannot be read ({err}): fix its quotes") from None
    if not argv or argv[0] not in _BLOCK_TEXTS:
        raise ReadmeError(
            f"{where}: only {' and '.join(_BLOCK_TEXTS)} blocks are generated: change the "
            "command or remove the block's comment lines"
        )
    try:
        args = build_parser(_BlockParser).parse_args(argv)
    except ConfigError as err:
        raise ReadmeError(f"{where} is not a valid command ({err}): fix its options") from None
    previous = Path.cwd()
    os.chdir(base)  # the block's paths are the file's, as a reader runs them beside it
    try:
        return _BLOCK_TEXTS[argv[0]](args)
    except AlrpLabError as err:
        raise ReadmeError(f"{where}: {err}") from None
    finally:
        os.chdir(previous)


def _cmd_readme(args: argparse.Namespace) -> int:
    """Regenerate (or with --check, compare) the command blocks of Markdown files."""
    import functools
    import shlex

    from alrp_lab.report.readme import refresh
    from alrp_lab.utils.io import atomic_write_text

    paths = [Path(name) for name in args.files]
    for path in paths:  # all of them before any is rewritten
        if not path.is_file():
            return _fail(f"{path} is not a file: name a Markdown file (default README.md)")
    stale: list[str] = []
    for path in paths:
        # newline="": line endings as they are, so the prose keeps its own.
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        render = functools.partial(_block_text, base=path.parent.resolve(), source=str(path))
        result = refresh(text, render, source=str(path))
        stale += [f"{path}, line {b.line}: alrp-lab {b.command}" for b in result.changed]
        if result.changed and not args.check:
            atomic_write_text(path, result.text)  # bytes as given: no newline translation
        verb = "differ from" if args.check else "rewritten from"
        _out.print(
            f"{path}: {len(result.changed)} of {len(result.blocks)} blocks {verb} the results "
            "files",
            highlight=False,
            soft_wrap=True,
        )
    if args.check and stale:
        fix = shlex.join(["alrp-lab", "readme", *args.files])
        _err.print(
            escape("out of date:\n  " + "\n  ".join(stale) + f"\nrun {fix} to regenerate them"),
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


# Verbs whose work is printing to stdout: a closed pipe ends them quietly.
_PRINTING_VERBS = frozenset({"table", "claims", "readme", "eval"})

# Where `alrp-lab claims` looks by default: this machine's sweeps and the committed results.
_DEFAULT_CLAIM_DIRS = ("outputs/sweeps", "results")


def _cmd_plot(args: argparse.Namespace) -> int:
    from alrp_lab.report.curve_plot import CURVE_KEYS, plot_curves
    from alrp_lab.report.plots import plot_claim_trend, plot_grad_balance

    sources = [Path(s) for s in args.source]
    if len(sources) > 1 and args.figure == "claim-trend":
        return _fail("claim-trend draws one sweep folder; pass one")
    if len(sources) > 1 and args.out is None:
        return _fail("several folders make one plot: say where it goes with --out PNG")
    # The file is named after the figure, as a sweep names it (figure: grad_balance_loss).
    stem = args.figure.replace("-", "_") + ("_mean" if args.mean else "")
    out = Path(args.out) if args.out else sources[0] / f"{stem}.png"
    source = sources[0] if len(sources) == 1 else sources
    if args.figure != "loss-curves" and (args.key or args.log_y):
        return _fail("--key and --log-y are loss-curves' options: leave them out here")
    if args.mean and not args.figure.startswith("grad-balance"):
        return _fail("--mean is grad-balance's and grad-balance-loss' option: leave it out here")
    if args.figure == "claim-trend":
        _out.print(f"wrote {plot_claim_trend(source, out)}")
        return 0
    if args.figure == "loss-curves":
        keys = args.key or CURVE_KEYS
        _out.print(f"wrote {plot_curves(source, out, keys, log_y=args.log_y)}")
        return 0
    loss_panel = args.figure == "grad-balance-loss"
    _out.print(f"wrote {plot_grad_balance(source, out, loss_panel=loss_panel, mean=args.mean)}")
    return 0


def build_parser(
    parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """The ``alrp-lab`` parser; its verbs' parsers are of ``parser_class`` too."""
    parser = parser_class(
        prog="alrp-lab",
        description="Experiments and ablations for ranking-based detection losses (aLRP Loss).",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.add_parser(
        "run",
        help="train and evaluate one experiment (Hydra overrides; -m for a multirun sweep)",
        add_help=False,
    )
    data = verbs.add_parser(
        "data", help="build a built-in synthetic data set (defaults: conf/data/NAME.yaml)"
    )
    data.add_argument("--name", default="shapes", help="shapes or textures (data.name)")
    data.add_argument("--root", default=None, help="cache folder (default: the run's)")
    data.add_argument("--seed", type=int, default=None)
    data.add_argument("--num-train", type=int, default=None)
    data.add_argument("--num-val", type=int, default=None)
    data.add_argument("--image-size", type=int, default=None)
    data.add_argument("--num-classes", type=int, default=None)
    pre = verbs.add_parser(
        "pretrain",
        help="pretrain a backbone on fractals into the cache (what backbone.weights=builtin uses)",
    )
    pre.add_argument("--backbone", default="resnet18", help="a conf/backbone choice")
    pre.add_argument("--base-width", type=int, default=None, help="stem width (default: YAML's)")
    pre.add_argument(
        "--iterations", type=int, default=None, help="SGD steps (default: conf/pretrain)"
    )
    pre.add_argument("--num-classes", type=int, default=None, help="fractal categories")
    pre.add_argument("--seed", type=int, default=None, help="categories, images and init")
    pre.add_argument(
        "--root", default=None, help="cache folder (default ~/.cache/alrp-lab/backbones)"
    )
    sweep = verbs.add_parser(
        "sweep", help="run a paper table's sweep from sweeps/ (completed jobs are skipped)"
    )
    sweep.add_argument("name", help="table2, table3, table4, table5, table7, table8, ...")
    sweep.add_argument("overrides", nargs="*", help="Hydra overrides added to every job")
    sweep.add_argument("--scale", default="cpu", help="cpu (built-in data) or paper (COCO)")
    sweep.add_argument("--dry-run", action="store_true", help="list the jobs, run nothing")
    sweep.add_argument("--root", default=None, help="sweep folder (default outputs/sweeps/NAME)")
    sweep.add_argument("--jobs", type=int, default=1, help="jobs run in parallel processes")
    sweep.add_argument(
        "--rerun",
        action="store_true",
        help="replace completed runs whose recorded config differs from the sweep's now",
    )
    sweep.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="K",
        help="run every job with seeds 0..K-1 (default: the definition's `seeds`, else 1)",
    )
    sweep.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="run only the jobs whose id matches this shell pattern (repeatable), e.g. "
        "'2x--*'; with a slash it matches runs, e.g. '2x--sb/seed2'",
    )
    sweep.add_argument(
        "--reuse",
        action="append",
        metavar="DIR",
        help="copy, instead of training, a run that a completed run under DIR (another "
        "sweep's folder; repeatable) already computed with the same config and seed",
    )
    export = verbs.add_parser(
        "export",
        help="copy a sweep folder's completed runs' record files (results.json, "
        "metrics.jsonl, grad_balance.csv) and sweep.json into another folder, such as results/",
    )
    export.add_argument("source", help="the sweep folder the runs trained in")
    export.add_argument("target", help="the folder to copy them into (same relative paths)")
    export.add_argument(
        "--file",
        action="append",
        metavar="NAME",
        help="another file of each run folder to copy too (repeatable), e.g. config.yaml",
    )
    export.add_argument(
        "--replace",
        action="store_true",
        help="overwrite a different completed run in the target (by default it is kept)",
    )
    table = verbs.add_parser("table", help="rebuild a table from results files alone")
    table.add_argument("source", help="a sweep name or a folder of runs")
    table.add_argument("--format", default="md", choices=["md", "csv", "tex"])
    table.add_argument("--scale", default="cpu")
    table.add_argument(
        "--heading",
        default=None,
        metavar="TEXT",
        help='the Markdown heading line instead of the table\'s own ("#### Table 2, cpu scale")',
    )
    claims = verbs.add_parser(
        "claims", help="verdicts on the paper's claims from sweep folders' results files"
    )
    claims.add_argument(
        "dirs",
        nargs="*",
        help="sweep folders or folders above them (default: outputs/sweeps and results)",
    )
    claims.add_argument("--format", default="md", choices=["md", "csv"])
    claims.add_argument(
        "--brief",
        action="store_true",
        help='leave out the columns "paper says" and "test" (the claim\'s name stays)',
    )
    readme = verbs.add_parser(
        "readme",
        help="regenerate the table and claims blocks of Markdown files from results files",
        description="Rerun the command of every block between <!-- alrp-lab COMMAND --> and "
        "<!-- alrp-lab end --> (table or claims, paths relative to the file) and write what "
        "it prints in between; the text outside the blocks is left as it is.",
    )
    readme.add_argument("files", nargs="*", default=["README.md"], help="default README.md")
    readme.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming each block that differs from a fresh one",
    )
    plot = verbs.add_parser("plot", help="draw a figure from a run or sweep folder")
    plot.add_argument(
        "figure",
        choices=["grad-balance", "grad-balance-loss", "claim-trend", "loss-curves"],
        help="grad-balance: Figure 4; grad-balance-loss: Figure A.7 (Figure 4 and the loss "
        "values); claim-trend: a sweep's claims against its trend's x; loss-curves: each "
        "run's logged classification loss (and share of positives with Eloc > 1), or the "
        "keys given with --key",
    )
    plot.add_argument(
        "source",
        nargs="+",
        help="a run folder or a sweep folder (several run folders, with --out, in one plot)",
    )
    plot.add_argument(
        "--out",
        default=None,
        help="PNG path (default SOURCE/FIGURE.png, dashes as underscores; FIGURE_mean.png "
        "with --mean)",
    )
    plot.add_argument(
        "--key",
        action="append",
        metavar="KEY",
        help="loss-curves: a key of metrics.jsonl to draw, one panel each (repeatable), e.g. "
        "loc_weight (SB's value or wr), grad_norm; default loss_cls and eloc_over_one",
    )
    plot.add_argument(
        "--mean",
        action="store_true",
        help="grad-balance(-loss): one line per loss, its runs' mean ratio at each iteration "
        "(the paper averages Figure 4 over 10 runs), instead of one line per run",
    )
    plot.add_argument(
        "--log-y", action="store_true", help="loss-curves: a log scale for the values"
    )
    ev = verbs.add_parser("eval", help="score a COCO results file: AP, oLRP, rho")
    ev.add_argument("gt", help="COCO annotation file (instances_*.json)")
    ev.add_argument("dt", help="COCO results file (list of detections)")
    ev.add_argument("--bounds", action="store_true", help="add the Table 5 bounds")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        return _run_hydra(argv[1:])
    parser = build_parser()
    # Overrides may follow options (`sweep table3 --jobs 2 train.epochs=1`): argparse stops
    # collecting a positional list at the first option, so gather the rest here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.verb != "sweep" or any(item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if args.verb is None:
        parser.print_help()
        return 0
    handlers = {
        "data": _cmd_data,
        "pretrain": _cmd_pretrain,
        "eval": _cmd_eval,
        "sweep": _cmd_sweep,
        "export": _cmd_export,
        "table": _cmd_table,
        "claims": _cmd_claims,
        "readme": _cmd_readme,
        "plot": _cmd_plot,
    }
    # A closed pipe is the reader's choice only for a verb whose work is printing; in a run
    # or its workers it is a bug like any other (no class: nothing is caught here).
    closed_pipe = BrokenPipeError if args.verb in _PRINTING_VERBS else ()
    try:
        code = handlers[args.verb](args)
        if args.verb in _PRINTING_VERBS:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except closed_pipe:
        # The reader went away (`alrp-lab table ... | head`): not an error of ours. Point
        # stdout at /dev/null so that the interpreter's final flush cannot raise again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # a stdout without a file descriptor (captured)
            pass
        return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe stopped
    except _USER_ERRORS as err:
        if _show_traceback():
            raise
        return _fail(str(err))
    except Exception:
        traceback.print_exc()
        _err.print(f"[bold red]internal error:[/bold red] {_BUG}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
