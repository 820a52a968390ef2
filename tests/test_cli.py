from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from alrp_lab.cli import main


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "train.lr2=1"], "train.lr2"),
        (["run", "loss=nope"], "loss"),
        (["run", "train.epochs=abc"], "train.epochs"),
        (["run", "-m", "loss.self_balance=false", "loss.wr=1,x"], "loss.wr"),
        (["run", "loss.wr=[1,2"], "bad override"),
    ],
)
def test_bad_overrides_give_one_error_line_and_exit_2(tmp_path, capsys, args, needle):
    code = main([*args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_a_slurm_multirun_without_srun_is_one_error_line(tmp_path, capsys, monkeypatch):
    from alrp_lab.cli import _check_overrides

    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no srun
    args = ["-m", "seed=0,1", "hydra/launcher=submitit_slurm", f"hydra.sweep.dir={tmp_path}/s"]
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "no srun on PATH" in err and "submitit_local" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()
    # With srun on the PATH the check lets the launcher start.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    assert _check_overrides(args) is None


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("loss.bogus=1", "loss (alrp) has no key 'bogus'; its keys: delta, global_rank, name,"),
        # A key of another choice of the group: the chosen one's keys are what count.
        ("loss.delta=1", "loss (focal) has no key 'delta'; its keys: alpha, gamma, name,"),
        ("train.lr2=1", "train has no key 'lr2'; its keys: amp, batch_size,"),
        ("bogus=1", "the config has no key 'bogus'; its keys: assigner, backbone,"),
    ],
)
def test_an_unknown_key_names_the_keys_its_node_has(tmp_path, capsys, override, needle):
    """Hydra's advice (append it with `+`) would only meet the schema's refusal."""
    extra = ["loss=focal"] if override.startswith("loss.delta") else []
    assert main(["run", *extra, override, f"hydra.run.dir={tmp_path}/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "+" not in err and len(err.splitlines()) == 1


def test_an_unknown_group_choice_lists_every_option(tmp_path, capsys):
    assert main(["run", "loss=nonexistent", f"hydra.run.dir={tmp_path}/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Available options in 'loss': alrp, ap, ce, focal" in err
    assert "search path" not in err and len(err.splitlines()) == 1


def test_a_run_folder_under_a_file_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["run", "debug=smoke", f"hydra.run.dir={tmp_path}/file/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "which is a file, not a folder" in err and len(err.splitlines()) == 1


def test_help_lists_the_verbs(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for verb in ("run", "data", "eval"):
        assert verb in out


def test_eval_of_missing_files(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "gt.json"), str(tmp_path / "dt.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _statuses(sweep_dir):
    return sorted(
        json.loads((d / "results.json").read_text())["status"]
        for d in sweep_dir.iterdir()
        if (d / "results.json").is_file()
    )


def test_multirun_sweeps_wr(tmp_path):
    code = main(
        [
            "run",
            "-m",
            "debug=smoke",
            "loss.self_balance=false",
            "loss.wr=1,5",
            f"hydra.sweep.dir={tmp_path}",
        ]
    )
    assert code == 0
    assert _statuses(tmp_path) == ["completed", "completed"]


@pytest.mark.slow
def test_multirun_in_parallel_with_the_joblib_launcher(tmp_path):
    code = main(
        [
            "run",
            "-m",
            "debug=smoke",
            "loss=alrp,focal",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={tmp_path}",
        ]
    )
    assert code == 0
    assert _statuses(tmp_path) == ["completed", "completed"]


def test_sweep_dry_run_takes_overrides_after_options(tmp_path, capsys):
    code = main(["sweep", "table3", "--dry-run", "--root", str(tmp_path), "train.epochs=1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "would run" in out and "train.epochs=1" in out
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"


def test_sweep_prints_each_line_the_runner_announces_as_written(tmp_path, capsys, monkeypatch):
    import alrp_lab.sweeps as sweeps
    from alrp_lab.sweeps.runner import SweepReport

    def fake_run_sweep(definition, **kwargs):
        # Brackets as in "[k/n]": printed as they are, not read as rich markup.
        kwargs["announce"](line)
        return SweepReport(definition.name, kwargs["scale"], Path(kwargs["root"]), [])

    # Longer than a terminal's 80 columns: one line in a log all the same.
    line = "[1/2] a/seed0 failed: [bold]x[/bold] = nan " + "at iteration 1234, " * 6 + "stopped"
    monkeypatch.setattr(sweeps, "run_sweep", fake_run_sweep)
    assert main(["sweep", "table3", "--root", str(tmp_path)]) == 0
    assert line in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sweep", "table99"], "unknown sweep"),
        (["table", "{tmp}"], "run the sweep first"),
        (["table", "{tmp}/missing"], "neither a folder nor a sweep name"),
        (["sweep", "table2", "--dry-run", "--reuse", "{tmp}/missing"], "no such folder of runs"),
    ],
)
def test_sweep_and_table_errors_are_one_line(tmp_path, capsys, args, needle):
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and len(err.splitlines()) == 1


def test_sweep_scale_can_be_given_as_an_override(tmp_path, capsys):
    code = main(["sweep", "table2", "--dry-run", "--root", str(tmp_path), "scale=paper"])
    assert code == 2  # the paper scale needs the COCO folder and the backbone weights
    assert "data.root" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/locks").is_file(), reason="Linux's /proc/locks")
def test_sweep_dry_run_shows_a_run_another_process_is_training(tmp_path, capsys):
    from alrp_lab.sweeps.processes import run_lock

    with run_lock(tmp_path / "giou__sb" / "seed0"):
        code = main(["sweep", "table3", "--seeds", "1", "--dry-run", "--root", str(tmp_path)])
    assert code == 0
    out = " ".join(capsys.readouterr().out.split())  # the table may wrap a status
    assert f"training now (pid {os.getpid()})" in out
    assert "16 runs: 15 would run, 1 training now in another process" in out


def test_sweep_with_seeds_lists_every_run(tmp_path, capsys):
    code = main(["sweep", "table3", "--seeds", "3", "--dry-run", "--root", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "48 runs: 48 would run, 0 completed before" in out
    assert out.count("would run") == 49
    assert "no completed run of the same length here to judge the time left by" in out
    assert "giou__sb/seed2" in out


def test_sweep_dry_run_estimates_the_time_left_by_the_completed_runs(tmp_path, capsys):
    from alrp_lab.sweeps import load_sweep
    from alrp_lab.sweeps.runner import _resolved, expand_jobs
    from alrp_lab.utils.io import atomic_write_json

    defn = load_sweep("table3")
    for job, minutes in zip(expand_jobs(defn, "cpu", seeds=1)[:2], (40, 50), strict=True):
        atomic_write_json(
            tmp_path / job.run_id / "results.json",
            {
                "status": "completed",
                "metrics": {"AP": 0.3},
                "config": _resolved(job, defn, "cpu"),
                "started_at": "2026-12-06T10:00:00+00:00",
                "finished_at": f"2026-12-06T10:{minutes}:00+00:00",
            },
        )
    args = ["sweep", "table3", "--seeds", "1", "--dry-run", "--root", str(tmp_path)]
    assert main([*args, "--jobs", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # 14 runs left at the median, 45 min, one after another; about half that two at a time.
    assert (
        "about 10.5 h of run time left in 14 run(s) one after another (about 5.2 h at 2 at a "
        "time), by the median time of 2 completed run(s) of the same length here"
    ) in out


def test_sweep_dry_run_names_the_runs_trained_by_other_code(tmp_path, capsys, monkeypatch):
    from rich.console import Console

    from alrp_lab import cli
    from alrp_lab.sweeps import load_sweep
    from alrp_lab.sweeps.runner import _resolved, expand_jobs
    from alrp_lab.tracking.code_digest import code_record
    from alrp_lab.utils.io import atomic_write_json

    defn = load_sweep("table3")
    now = code_record()
    code = {**now, "digests": {**now["digests"], "losses": "0", "models": "0"}}
    completed, stopped = expand_jobs(defn, "cpu", seeds=1)[:2]
    for job, status in ((completed, "completed"), (stopped, "running")):
        atomic_write_json(
            tmp_path / job.run_id / "results.json",
            {
                "status": status,
                "metrics": {"AP": 0.3},
                "config": _resolved(job, defn, "cpu"),
                "attempts": [{"from_step": 0, "code": code}],
            },
        )
    (tmp_path / stopped.run_id / "checkpoints").mkdir()
    (tmp_path / stopped.run_id / "checkpoints" / "last.pt").write_bytes(b"")
    monkeypatch.setattr(cli, "_out", Console(width=400))  # one line per run
    assert main(["sweep", "table3", "--seeds", "1", "--dry-run", "--root", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "skip (completed; trained by other code in losses, models)" in out
    assert "unreadable (EOFError); earlier attempts trained by other code in losses, models" in out
    assert (
        "2 run(s) kept here were trained by code that differs from this install's in losses, models"
    ) in out and "sweep into a new folder with --root DIR" in out


def test_sweep_reuse_lists_the_runs_it_would_copy(tmp_path, capsys):
    from alrp_lab.sweeps import load_sweep
    from alrp_lab.sweeps.runner import _resolved, expand_jobs
    from alrp_lab.utils.io import atomic_write_json

    defn = load_sweep("table2")
    job = expand_jobs(defn, "cpu", seeds=1)[0]
    atomic_write_json(
        tmp_path / "other" / "row" / "seed0" / "results.json",
        {"status": "completed", "metrics": {"AP": 0.3}, "config": _resolved(job, defn, "cpu")},
    )
    root = tmp_path / "table2"
    args = ["sweep", "table2", "--seeds", "1", "--dry-run", "--root", str(root)]
    assert main([*args, "--reuse", str(tmp_path / "other")]) == 0
    out = capsys.readouterr().out
    assert f"{job.run_id}" in out and "would copy from" in out
    assert "5 runs: 4 would run, 0 completed before, 1 would be copied" in out
    assert not root.exists()


def test_claims_prints_every_sweeps_claims_and_exits_0(tmp_path, capsys):
    _figure4_folder(tmp_path / "figure4")
    assert main(["claims", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| figure4 | cpu | alrp-grad-ratio-is-one |" in out
    assert out.count("**holds**") == 3 and "3 claims: 3 holds, 0 fails, 0 inconclusive." in out
    assert main(["claims", str(tmp_path / "nowhere")]) == 2


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_claims_brief_leaves_out_the_words_and_the_test(tmp_path, capsys, fmt):
    _figure4_folder(tmp_path / "figure4")
    assert main(["claims", "--format", fmt, str(tmp_path)]) == 0
    full = capsys.readouterr().out
    assert main(["claims", "--brief", "--format", fmt, str(tmp_path)]) == 0
    brief = capsys.readouterr().out
    sep = "|" if fmt == "md" else ","
    header = [c.strip() for c in brief.splitlines()[0].strip("|").split(sep)]
    assert header == ["sweep", "scale", "claim", "ours", "95% CI", "n", "paper", "verdict", "note"]
    assert "Theorem 2" in full and "Theorem 2" not in brief
    assert "grad_ratio_spread: aLRP Loss - 1 < 0.001" not in brief
    assert brief.count("holds") == full.count("holds") == (4 if fmt == "md" else 3)
    if fmt == "md":
        assert brief.splitlines()[1] == "|---|---|---|---:|---:|---:|---:|---|---|"
        assert "| figure4 | cpu | alrp-grad-ratio-is-one | +0.000 |" in brief


def test_multirun_over_seeds(tmp_path):
    code = main(["run", "-m", "debug=smoke", "seed=0,1", f"hydra.sweep.dir={tmp_path}"])
    assert code == 0
    seeds = sorted(
        json.loads((d / "results.json").read_text())["config"]["seed"]
        for d in tmp_path.iterdir()
        if (d / "results.json").is_file()
    )
    assert seeds == [0, 1]


@pytest.mark.parametrize("flags", [["--cfg", "job"], ["-c", "job"], ["--cfg=job"]])
def test_hydras_own_flags_work_as_hydra_documents_them(flags, capsys):
    assert main(["run", *flags, "loss=ap"]) == 0
    out = capsys.readouterr().out
    assert "loss:\n  name: ap" in out


def test_claims_without_folders_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["claims"]) == 2
    assert "run a sweep first" in capsys.readouterr().err


def test_pretrain_builds_into_the_cache_then_reuses_it(tmp_path, capsys):
    args = ["pretrain", "--base-width", "8", "--iterations", "2", "--num-classes", "2"]
    args += ["--root", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "built in" in first and str(tmp_path) in first
    assert main(args) == 0
    assert "cached" in capsys.readouterr().out
    assert len(list(tmp_path.glob("resnet18-w8-fractal2-*.pth"))) == 1


def test_pretrain_unknown_backbone(capsys):
    assert main(["pretrain", "--backbone", "resnet7"]) == 2
    assert "resnet18" in capsys.readouterr().err


def test_a_users_own_experiment_through_config_dir(tmp_path, capsys):
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /loss: ap\n"
        "  - override /box_error: smooth_l1\ntrain:\n  lr: 0.01\n"
    )
    run_dir = tmp_path / "run"
    args = ["run", "--config-dir", str(tmp_path / "mine"), "experiment=mine", "debug=smoke"]
    assert main([*args, f"hydra.run.dir={run_dir}"]) == 0
    config = (run_dir / "config.yaml").read_text()
    assert "name: ap" in config and "lr: 0.01" in config
    # A misspelt experiment name is one line that lists the choices, the user's among them.
    assert main([*args[:3], "experiment=mien", "debug=smoke"]) == 2
    assert "mine" in capsys.readouterr().err


def test_an_internal_error_keeps_its_traceback_and_says_it_is_a_bug(monkeypatch, capsys):
    import alrp_lab.cli as cli

    def broken(args):
        raise TypeError("an internal mistake")

    monkeypatch.setattr(cli, "_cmd_claims", broken)
    assert main(["claims"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "TypeError: an internal mistake" in err
    assert "bug in alrp-lab" in err


@pytest.mark.parametrize("name", ["shapes", "textures"])
def test_data_builds_into_the_folder_a_run_reads(tmp_path, monkeypatch, capsys, name):
    monkeypatch.setenv("ALRP_LAB_DATA", str(tmp_path))
    args = ["--num-train", "2", "--num-val", "2", "--image-size", "32"]
    assert main(["data", "--name", name, *args]) == 0
    # conf/data/NAME.yaml's cache folder, with its other defaults (seed 0, 6 classes).
    root = tmp_path / f"{name}-s0-n2-v2-32px-c6"
    printed = capsys.readouterr().out.replace("\n", "")  # rich wraps long paths
    assert f"train_ann: {root / 'annotations' / 'instances_train.json'}" in printed
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["generator"] == f"alrp-lab {name}" and manifest["params"]["num_classes"] == 6


def test_data_refuses_an_unknown_name(capsys):
    assert main(["data", "--name", "coco"]) == 2
    assert "shapes, textures" in capsys.readouterr().err


def _figure4_folder(root):
    """A figure4 sweep folder whose three claims hold (two seeds per loss)."""
    from alrp_lab.sweeps.definition import load_sweep
    from alrp_lab.utils.io import atomic_write_json

    defn = load_sweep("figure4")
    for job in ("ce", "focal", "alrp"):
        for seed in range(2):
            run = root / job / f"seed{seed}"
            atomic_write_json(
                run / "results.json", {"status": "completed", "metrics": {"AP": 0.1}, "config": {}}
            )
            ratios = ["1.0", "1.0"] if job == "alrp" else ["0.3", "8.0"]
            run.joinpath("grad_balance.csv").write_text(
                "iteration,epoch,ratio\n" + "".join(f"{i},0,{r}\n" for i, r in enumerate(ratios))
            )
    atomic_write_json(
        root / "sweep.json",
        {"name": "figure4", "scale": "cpu", "definition": dict(defn.raw), "seeds": [0, 1]},
    )


def test_readme_regenerates_its_blocks_from_the_files_beside_it(tmp_path, monkeypatch, capsys):
    _figure4_folder(tmp_path / "results" / "figure4")
    readme = tmp_path / "README.md"
    prose = "# Results\n\nWritten by hand.\n\n"
    readme.write_text(
        prose + '<!-- alrp-lab table results/figure4 --heading "#### Figure 4, cpu" -->\n'
        "stale numbers\n<!-- alrp-lab end -->\n\nMore prose.\n"
    )
    monkeypatch.chdir(tmp_path / "results")  # paths are the file's, not the shell's
    assert main(["readme", "--check", str(readme)]) == 1
    err = capsys.readouterr().err
    assert "README.md, line 5: alrp-lab table results/figure4" in err
    assert "run alrp-lab readme" in err
    assert "stale numbers" in readme.read_text(), "--check writes nothing"

    assert main(["readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(prose) and text.endswith("<!-- alrp-lab end -->\n\nMore prose.\n")
    assert "stale numbers" not in text
    assert "\n#### Figure 4, cpu\n" in text and "\n### Figure 4" not in text
    assert "| alrp-grad-ratio-is-one |" in text and text.count("**holds**") == 3
    assert main(["readme", "--check", str(readme)]) == 0
    assert "0 of 1 blocks differ" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        ("sweep table2", "only table and claims blocks are generated"),
        ("table results/missing", "neither a folder nor a sweep name"),
        ("table results/figure4 --heading 'no hash'", "start it with 1 to 6 #"),
        ("table results/figure4 --format csv --heading '# x'", "use it with --format md"),
        ("table results/figure4 --bogus", "is not a valid command (unrecognized arguments"),
        ("table results/figure4 --help", "--help prints, it makes no block"),
        ("table 'results/figure4", "cannot be read"),
    ],
)
def test_a_bad_block_is_one_error_naming_the_file_and_line(tmp_path, capsys, command, needle):
    _figure4_folder(tmp_path / "results" / "figure4")
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n\n<!-- alrp-lab {command} -->\n<!-- alrp-lab end -->\n")
    assert main(["readme", str(readme)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert f"{readme}, line 3: `alrp-lab {command}`" in err and needle in err
    assert captured.out == "", "no usage or help text around the one error line"


def test_readme_of_a_missing_file_rewrites_none_of_the_others(tmp_path, capsys):
    _figure4_folder(tmp_path / "results" / "figure4")
    first = tmp_path / "A.md"
    first.write_text("<!-- alrp-lab table results/figure4 -->\nold\n<!-- alrp-lab end -->\n")
    assert main(["readme", str(first), str(tmp_path / "NOPE.md")]) == 2
    assert "NOPE.md is not a file" in capsys.readouterr().err
    assert "old" in first.read_text()


def test_readme_names_the_fix_with_the_files_quoted(tmp_path, capsys):
    _figure4_folder(tmp_path / "my results" / "figure4")
    readme = tmp_path / "my results" / "R.md"
    readme.write_text("<!-- alrp-lab table figure4 -->\nold\n<!-- alrp-lab end -->\n")
    assert main(["readme", "--check", str(readme)]) == 1
    assert f"run alrp-lab readme '{readme}' to regenerate them" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["README.md", "docs/history.md"])
def test_the_projects_readme_shows_what_its_results_files_give(name):
    """Every table and claims block of the project's Markdown files equals `alrp-lab
    readme` run now: their numbers are the committed results files', never pasted by
    hand."""
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / name
    assert "<!-- alrp-lab " in doc.read_text(), f"{name} has no generated block to check"
    assert main(["readme", "--check", str(doc)]) == 0, (
        f"{name} is out of date with results/: run alrp-lab readme {name}"
    )


def test_a_closed_pipe_ends_the_output_quietly(tmp_path):
    import os
    import subprocess
    import sys

    _figure4_folder(tmp_path / "figure4")
    # Block-buffered stdout, as a plain shell gives a pipe: the output is written at the
    # end, where a late failure would escape the command's own handling.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "alrp_lab.cli", "table", str(tmp_path / "figure4")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # as `| head` does once it has read enough; here before any output
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141
    assert b"Traceback" not in err and b"internal error" not in err


def test_a_closed_pipe_in_a_verb_that_does_not_print_is_a_bug(monkeypatch, capsys):
    import alrp_lab.cli as cli

    def broken(args):
        raise BrokenPipeError("a worker's pipe")

    monkeypatch.setattr(cli, "_cmd_data", broken)
    assert main(["data"]) == 1
    assert "bug in alrp-lab" in capsys.readouterr().err
