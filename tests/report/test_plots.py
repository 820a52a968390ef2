from __future__ import annotations

import pytest
from PIL import Image

from alrp_lab.report import plots
from alrp_lab.report.plots import plot_grad_balance, read_grad_balance
from alrp_lab.utils.io import atomic_write_json


def _run(folder, loss, rows):
    folder.mkdir(parents=True)
    atomic_write_json(
        folder / "results.json",
        {"status": "completed", "metrics": {}, "config": {"loss": {"name": loss}}},
    )
    lines = ["iteration,epoch,ratio"] + [f"{i},0,{r}" for i, r in enumerate(rows)]
    (folder / "grad_balance.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "figure4"
    _run(root / "ce", "ce", [0.3, 20.0, 1083.7, 5.0])
    _run(root / "focal", "focal", [0.2, 4.7, 1.5, 0.9])
    _run(root / "alrp", "alrp", [1.0, 1.0, 1.0, 1.0])
    return root


def test_read_skips_broken_and_non_finite_lines(tmp_path):
    (tmp_path / "grad_balance.csv").write_text(
        "iteration,epoch,ratio\n0,0,1.5\n1,0,nan\n2,0,inf\nbad,0,2\n3,0,0.5\n4,0"
    )
    data = read_grad_balance(tmp_path)
    assert data.iterations == [0, 3] and data.ratios == [1.5, 0.5]
    with pytest.raises(FileNotFoundError, match="train.grad_balance=true"):
        read_grad_balance(tmp_path / "none")


def test_plot_of_a_sweep_folder_writes_a_png(sweep, tmp_path):
    out = plot_grad_balance(sweep, tmp_path / "plots" / "figure4.png")
    assert out == tmp_path / "plots" / "figure4.png"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (840, 504)


def test_plot_of_listed_runs_labels_lines_by_loss(sweep, tmp_path, monkeypatch):
    drawn = []
    original = plots._label
    monkeypatch.setattr(plots, "_label", lambda run: drawn.append(original(run)) or drawn[-1])
    out = plot_grad_balance([sweep / "ce", sweep / "alrp"], tmp_path / "two.png")
    assert out.is_file() and drawn == ["Cross Entropy", "aLRP Loss"]


def test_runs_without_results_are_labelled_by_folder(tmp_path):
    folder = tmp_path / "run-7"
    folder.mkdir()
    assert plots._label(folder) == "run-7"


def test_no_ratios_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="run the figure4 sweep first"):
        plot_grad_balance(tmp_path / "empty", tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        plot_grad_balance([tmp_path / "missing"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_repeated_iterations_are_refused(tmp_path):
    from alrp_lab.report.plots import read_grad_balance

    (tmp_path / "grad_balance.csv").write_text("iteration,epoch,ratio\n0,0,1.0\n1,0,1.0\n1,0,2.0\n")
    with pytest.raises(ValueError, match="iteration 1 follows 1"):
        read_grad_balance(tmp_path)


def test_figure_a7_adds_the_loss_panel(tmp_path, monkeypatch):
    from alrp_lab.utils.io import append_jsonl

    root = tmp_path / "figureA7"
    right = _run(root / "alrp", "alrp", [1.0, 1.0, 1.0])
    zero = _run(root / "alrp-zero-target", "alrp", [1.0, 0.9, 1.2])
    atomic_write_json(
        zero / "results.json",
        {
            "status": "completed",
            "metrics": {},
            "config": {"loss": {"name": "alrp", "zero_target": True}},
        },
    )
    for step, (good, bad) in enumerate([(1.0, 1.0), (0.5, 0.6), (0.2, 1.0)]):
        append_jsonl(right / "metrics.jsonl", {"step": step, "epoch": step, "loss_cls": good})
        append_jsonl(zero / "metrics.jsonl", {"step": step, "epoch": step, "loss_cls": bad})
    assert plots._label(zero) == "aLRP Loss, zero target" and plots._label(right) == "aLRP Loss"
    curves = []
    original = plots._loss_curve
    monkeypatch.setattr(
        plots, "_loss_curve", lambda run: curves.append(original(run)) or curves[-1]
    )
    out = plot_grad_balance(root, tmp_path / "a7.png", loss_panel=True)
    with Image.open(out) as image:
        assert image.size == (1440, 504)  # two panels
    assert curves == [[(0.0, 1.0), (1.0, 0.5), (2.0, 0.2)], [(0.0, 1.0), (1.0, 0.6), (2.0, 1.0)]]
    # Figure 4 reads no loss curve.
    curves.clear()
    plot_grad_balance(root, tmp_path / "f4.png")
    assert curves == []


def test_the_loss_panel_leaves_out_runs_without_metrics(sweep, tmp_path):
    out = plot_grad_balance(sweep, tmp_path / "a7.png", loss_panel=True)
    assert out.is_file()


@pytest.mark.parametrize(
    ("figure", "png", "width"),
    [
        ("grad-balance", "grad_balance.png", 840),
        ("grad-balance-loss", "grad_balance_loss.png", 1440),
    ],
)
def test_the_plot_command_draws_either_figure(sweep, figure, png, width):
    from alrp_lab.cli import main

    assert main(["plot", figure, str(sweep)]) == 0
    with Image.open(sweep / png) as image:
        assert image.size[0] == width


@pytest.mark.parametrize(("figure", "width"), [("grad_balance", 840), ("grad_balance_loss", 1440)])
def test_a_sweep_draws_the_figure_its_definition_names(sweep, figure, width):
    from alrp_lab.sweeps.runner import _try_plot

    assert _try_plot(sweep, figure) == sweep / f"{figure}.png"
    with Image.open(sweep / f"{figure}.png") as image:
        assert image.size[0] == width


def test_a_damaged_metrics_file_leaves_its_run_out_of_the_loss_panel(sweep, tmp_path, caplog):
    (sweep / "ce" / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    assert plots._loss_curve(sweep / "ce") == []
    assert "left out of the loss panel" in caplog.text and "line 2" in caplog.text
    assert plot_grad_balance(sweep, tmp_path / "a7.png", loss_panel=True).is_file()


def test_the_mean_averages_runs_at_the_iterations_all_recorded():
    from alrp_lab.report.plots import GradBalance, mean_grad_balance

    one = GradBalance([0, 1, 2, 3], [1.0, 4.0, 0.5, 0.0])  # a zero ratio is not a ratio
    two = GradBalance([0, 2, 3], [3.0, 1.5, 2.0])  # no line for iteration 1
    mean = mean_grad_balance([one, two])
    assert mean.iterations == [0, 2] and mean.ratios == [2.0, 1.0]
    assert mean_grad_balance([one]) == GradBalance([0, 1, 2], [1.0, 4.0, 0.5])
    with pytest.raises(ValueError, match="at least one run"):
        mean_grad_balance([])


def test_the_mean_draws_one_line_per_loss(sweep):
    from alrp_lab.utils.io import append_jsonl

    _run(sweep / "ce2", "ce", [0.1, 40.0, 2.0, 1.0])
    _run(sweep / "ce3", "ce", [0.2, 30.0, 1.0, 2.0])  # no metrics.jsonl
    for step, (a, b) in enumerate([(2.0, 4.0), (1.0, 3.0), (0.5, 1.0)]):
        append_jsonl(sweep / "ce" / "metrics.jsonl", {"step": step, "epoch": step, "loss_cls": a})
        append_jsonl(sweep / "ce2" / "metrics.jsonl", {"step": step, "epoch": step, "loss_cls": b})
    runs = [(run, read_grad_balance(run)) for run in plots.run_dirs(sweep)]
    lines = {label: rest for label, *rest in plots._lines(runs, mean=True, loss_panel=True)}
    assert set(lines) == {"aLRP Loss", "Cross Entropy (mean of 3 runs)", "Focal Loss"}
    data, loss_label, curve = lines["Cross Entropy (mean of 3 runs)"]
    assert data.ratios == pytest.approx([0.2, 30.0, 1086.7 / 3, 8.0 / 3])
    # The loss panel averages the two runs that logged a loss, and says so.
    assert loss_label == "Cross Entropy (mean of 2 runs)"
    assert curve == [(0.0, 3.0), (1.0, 2.0), (2.0, 0.75)]
    assert lines["Focal Loss"][2] == []  # no metrics.jsonl: no loss line
    # Without the mean, each run is its own line, named by folder where the loss repeats.
    per_run = [label for label, *_ in plots._lines(runs, mean=False, loss_panel=False)]
    assert per_run == [
        "aLRP Loss",
        "Cross Entropy (ce)",
        "Cross Entropy (ce2)",
        "Cross Entropy (ce3)",
        "Focal Loss",
    ]


def test_a_mean_over_runs_that_share_no_iteration_is_a_clear_error(tmp_path):
    root = tmp_path / "figure4"
    _run(root / "a", "ce", [1.0, 0.0])
    _run(root / "b", "ce", [0.0, 2.0])
    with pytest.raises(ValueError, match="draw it without --mean"):
        plot_grad_balance(root, tmp_path / "x.png", mean=True)
    assert not (tmp_path / "x.png").exists()
    assert plot_grad_balance(root, tmp_path / "x.png").is_file()


def test_the_plot_command_takes_the_mean_for_the_gradient_figures_only(sweep, capsys, monkeypatch):
    from alrp_lab.cli import main

    drawn = []
    original = plots.plot_grad_balance
    monkeypatch.setattr(
        plots, "plot_grad_balance", lambda *a, **k: drawn.append(k) or original(*a, **k)
    )
    assert main(["plot", "grad-balance", str(sweep), "--mean"]) == 0
    assert drawn == [{"loss_panel": False, "mean": True}]
    assert (sweep / "grad_balance_mean.png").is_file()  # beside the sweep's own plot
    assert main(["plot", "loss-curves", str(sweep), "--mean"]) == 2
    assert "--mean is grad-balance's" in capsys.readouterr().err
